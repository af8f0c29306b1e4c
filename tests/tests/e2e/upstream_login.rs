//! The proxy's upstream side against a real PostgreSQL 15+ (standing in for Redshift):
//! verify-full TLS, SCRAM-SHA-256-PLUS and MD5 logins, error mapping, and cancel. These call
//! the proxy's upstream login directly with passwords of roles the test creates: no client
//! logs in through the proxy, so no credential chain is involved (Redshift itself offers
//! md5 and its SHA-256 digest; what only PostgreSQL offers, SCRAM-PLUS, is tested here).

use std::time::Duration;

use bytes::BytesMut;
use proxy_testkit::observe::wait_for_query;
use proxy_testkit::pg::{PgServer, HOST};
use redshift_iam_proxy::backend::{
    connect_and_login, send_cancel, AuthMethod, LoginRequest, UpstreamEndpoint, UpstreamError,
    UpstreamSession,
};
use redshift_iam_proxy::net::framing::{encode_into, read_message};
use redshift_iam_proxy::net::messages::{Decode, ErrorResponse};
use redshift_iam_proxy::refusal::upstream_response;
use secrecy::SecretString;
use tokio::io::AsyncWriteExt;

const PASSWORD: &str = "Upstream-Login-Pw-9c1e";

fn endpoint(pg: &PgServer) -> UpstreamEndpoint {
    let target = proxy_config::TargetConfig {
        port: pg.port(),
        dial: Some(format!("127.0.0.1:{}", pg.port())),
        ca_bundle: Some(pg.ca_cert_path().to_path_buf()),
        connect_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(20),
        credential_duration: Duration::from_secs(900),
        ..proxy_config::TargetConfig::new("pg", proxy_config::TargetKind::Provisioned, HOST)
    };
    UpstreamEndpoint::from_config(&target).unwrap()
}

async fn login(
    pg: &PgServer,
    user: &str,
    password: &str,
    database: &str,
) -> Result<UpstreamSession, UpstreamError> {
    let password = SecretString::from(password);
    let params = vec![(
        "application_name".to_string(),
        "upstream-login-test".to_string(),
    )];
    let req = LoginRequest {
        user,
        password: &password,
        database,
        params: &params,
    };
    connect_and_login(&endpoint(pg), &req).await
}

/// Runs one simple query on the logged-in stream and returns the first column of the
/// first row, or the server's error.
async fn simple_query(
    session: &mut UpstreamSession,
    sql: &str,
) -> Result<Option<String>, ErrorResponse> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    let mut out = BytesMut::new();
    encode_into(&mut out, b'Q', &body);
    session.stream.write_all(&out).await.unwrap();
    session.stream.flush().await.unwrap();
    let mut value = None;
    let mut error = None;
    loop {
        let m = read_message(&mut session.stream, 1 << 20).await.unwrap();
        match m.tag {
            b'D' if value.is_none() => {
                // Int16 column count, Int32 length, bytes.
                let len = i32::from_be_bytes(m.body[2..6].try_into().unwrap());
                if len >= 0 {
                    let v = &m.body[6..6 + len as usize];
                    value = Some(String::from_utf8(v.to_vec()).unwrap());
                }
            }
            b'E' => error = ErrorResponse::decode(&m.body).ok(),
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

/// Tags of the messages in `after_auth`, checking the framing on the way.
fn tags(after_auth: &[u8]) -> Vec<u8> {
    let mut tags = Vec::new();
    let mut rest = after_auth;
    while !rest.is_empty() {
        let len = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        tags.push(rest[0]);
        rest = &rest[1 + len..];
    }
    tags
}

#[tokio::test]
async fn scram_user_logs_in_with_channel_binding_over_verified_tls() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("up_scram");
    pg.create_scram_user(&user, PASSWORD).await.unwrap();

    let mut session = login(pg, &user, PASSWORD, "postgres").await.unwrap();
    // PostgreSQL 11+ offers SCRAM-SHA-256-PLUS over TLS; the proxy takes it.
    assert_eq!(session.auth_method, AuthMethod::ScramSha256Plus);
    assert!(session.tls_version.starts_with("TLSv1."));
    assert!(session.backend_key.is_some());
    let tags = tags(&session.after_auth);
    assert_eq!(tags.last(), Some(&b'Z'));
    assert!(tags.contains(&b'S'), "ParameterStatus kept");
    assert!(!tags.contains(&b'K'), "BackendKeyData taken out");

    let who = simple_query(
        &mut session,
        "SELECT current_user || ',' || current_setting('application_name')",
    )
    .await
    .unwrap();
    assert_eq!(who, Some(format!("{user},upstream-login-test")));
}

#[tokio::test]
async fn md5_user_logs_in() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("up_md5");
    pg.create_md5_user(&user, PASSWORD).await.unwrap();

    let mut session = login(pg, &user, PASSWORD, "postgres").await.unwrap();
    assert_eq!(session.auth_method, AuthMethod::Md5);
    let who = simple_query(&mut session, "SELECT current_user")
        .await
        .unwrap();
    assert_eq!(who, Some(user));
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_failure_with_28p01() {
    let pg = PgServer::shared();
    for md5 in [false, true] {
        let user = PgServer::unique_name("up_wrong");
        if md5 {
            pg.create_md5_user(&user, PASSWORD).await.unwrap();
        } else {
            pg.create_scram_user(&user, PASSWORD).await.unwrap();
        }
        let err = login(pg, &user, "not-the-password", "postgres")
            .await
            .unwrap_err();
        assert!(err.is_auth_failure(), "{err:?}");
        assert_eq!(upstream_response(&err).code, "28P01");
        assert!(!format!("{err:?}").contains("not-the-password"));
    }
}

#[tokio::test]
async fn an_unknown_database_keeps_the_upstream_sqlstate() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("up_nodb");
    pg.create_scram_user(&user, PASSWORD).await.unwrap();
    let err = login(pg, &user, PASSWORD, "no_such_database_here")
        .await
        .unwrap_err();
    assert!(!err.is_auth_failure(), "{err:?}");
    assert_eq!(upstream_response(&err).code, "3D000");
}

#[tokio::test]
async fn send_cancel_cancels_the_running_query() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("up_cancel");
    pg.create_scram_user(&user, PASSWORD).await.unwrap();
    let mut session = login(pg, &user, PASSWORD, "postgres").await.unwrap();
    let key = session.backend_key.clone().unwrap();
    let ep = endpoint(pg);

    let cancelled_user = user.clone();
    let canceller = tokio::spawn(async move {
        // Once the query runs.
        wait_for_query(pg, &cancelled_user, "pg_sleep(30)").await;
        send_cancel(&ep, &key).await
    });
    let started = std::time::Instant::now();
    let err = simple_query(&mut session, "SELECT pg_sleep(30)::text")
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(err.code, "57014", "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}
