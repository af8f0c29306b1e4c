//! Revocation and expiry (issue 11): expired CRLs fail closed, a reload that revokes a
//! certificate ends its sessions, sessions end when their certificate expires, and a
//! session the proxy ends has its running query cancelled.

use proxy_testkit::emulator::Api;
use proxy_testkit::pki::ClientCertSpec;
use proxy_testkit::stack::CLUSTER;
use proxy_testkit::world::{current_user, error_response, World};
use std::time::Duration;
use time::OffsetDateTime;

/// Waits (up to 20 s) until the stand-in has forwarded `n` cancel requests.
async fn cancels_reach_the_standin(world: &World, n: u64) {
    let standin = world.emulator.standin(CLUSTER).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while standin.cancel_requests() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no cancel reached the stand-in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_crl_refuses_its_clients_and_turns_the_proxy_unready() {
    let world = World::start().await;
    // A CRL whose nextUpdate passed three days ago.
    let now = OffsetDateTime::now_utc();
    let stale = world
        .pki
        .root()
        .crl_pem_valid(
            now - time::Duration::days(10),
            now - time::Duration::days(3),
        )
        .unwrap();
    let config = world
        .config()
        .edit_listener("main", |l| l.client_ca(world.pki.ca_cert_path(), &[&stale]))
        .set("admin", "bind", "127.0.0.1:0");
    let proxy = world.proxy(config).await;
    let alice = world.client("alice");
    let err = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap_err();
    assert_eq!(
        error_response(&err),
        (
            "28000",
            "the certificate revocation list of the client certificate's issuer has expired"
        )
    );
    let shared = proxy.running.shared();
    let not_ready = shared.readiness().unwrap_err().to_string();
    assert!(
        not_ready.contains("expired certificate revocation list"),
        "{not_ready}"
    );
    let metrics = shared.metrics.encode();
    assert!(
        metrics.contains("redshift_iam_proxy_crl_next_update_timestamp_seconds{listener=\"main\"")
    );
    let records = proxy.audit(1).await;
    assert_eq!(records[0]["refusal"]["reason"], "client_certificate");
    // check-config says so too.
    let out = std::process::Command::new(proxy_testkit::proxy::proxy_binary())
        .args(["check-config", "--config"])
        .arg(&proxy.file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_revokes_a_certificate_ends_its_running_session() {
    let world = World::start().await;
    let mut proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let bob = world.client("bob");
    let (client, connection) = proxy
        .connect_watched(&alice, &alice.common_name, "dev")
        .await
        .unwrap();
    let other = proxy
        .connect(Some(&bob), &bob.common_name, "dev")
        .await
        .unwrap();
    assert_eq!(
        current_user(&client).await,
        format!("IAMA:{}", alice.common_name)
    );

    // The CA revokes alice; the CRL file is rewritten, then the proxy reloads.
    world.pki.root().revoke(&alice.serial).unwrap();
    let config = proxy.config.clone();
    proxy.reload(config).await.unwrap();
    let err = connection.await.unwrap().unwrap_err();
    let db = err.as_db_error().expect("told why");
    assert_eq!(db.code().code(), "57P01");
    assert_eq!(
        db.message(),
        "terminating connection: the client certificate has been revoked"
    );
    other
        .simple_query("select 1")
        .await
        .expect("bob is unaffected");
    let err = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "the client certificate has been revoked"
    );
    let records = proxy.audit(2).await;
    assert!(records
        .iter()
        .any(|r| r["close_reason"] == "certificate_revoked"));
}

/// By default a session ends when its certificate expires, and its running query is
/// cancelled upstream, then the upstream session gets a Terminate.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_with_its_certificate_and_its_query_is_cancelled() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let now = OffsetDateTime::now_utc();
    let short = world.client_with(ClientCertSpec::new("brief").validity(
        now - time::Duration::hours(1),
        now + time::Duration::seconds(4),
    ));
    let client = proxy
        .connect(Some(&short), &short.common_name, "dev")
        .await
        .unwrap();
    let err = client
        .simple_query("select pg_sleep(60)")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("told why");
    assert_eq!(db.code().code(), "57P01");
    assert_eq!(
        db.message(),
        "terminating connection: the client certificate has expired"
    );
    cancels_reach_the_standin(&world, 1).await;
    let records = proxy.audit(1).await;
    assert_eq!(records[0]["close_reason"], "certificate_expired");
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 1);
}

/// A client that stops reading while its query streams rows still has its session ended
/// by the idle timeout (the relay's write to it can no longer block forever), and the query
/// is cancelled upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_ended_by_the_idle_timeout() {
    let world = World::start().await;
    let proxy = world
        .proxy(world.config().set("limits", "idle_timeout", "1s"))
        .await;
    let alice = world.client("alice");
    let mut stream = raw_session(&proxy, &alice).await;
    // A query whose result is far larger than the socket buffers, then silence.
    let sql = b"select repeat('x', 1000) from generate_series(1, 1000000)\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
    query.extend_from_slice(sql);
    tokio::io::AsyncWriteExt::write_all(&mut stream, &query)
        .await
        .unwrap();
    let records = proxy.audit(1).await;
    assert_eq!(records[0]["close_reason"], "idle_timeout", "{records:?}");
    cancels_reach_the_standin(&world, 1).await;
}

/// A TLS session logged in as `cert`'s own user, read up to ReadyForQuery, for a client
/// that then behaves badly.
async fn raw_session(
    proxy: &proxy_testkit::world::TestProxy,
    cert: &proxy_testkit::pki::ClientCert,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use proxy_testkit::adversary::{
        read_reply, request, startup, Reply, PROTOCOL_3_0, SSL_REQUEST_CODE,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.unwrap();
    assert_eq!(&s, b"S");
    let config = proxy_testkit::client::client_tls(&proxy.ca, Some(cert));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(&startup(
        PROTOCOL_3_0,
        &[
            (b"user", cert.common_name.as_bytes()),
            (b"database", b"dev"),
        ],
    ))
    .await
    .unwrap();
    loop {
        match read_reply(&mut tls).await {
            Reply::Message { tag: b'Z', .. } => return tls,
            Reply::Message { .. } => {}
            other => panic!("login failed: {other:?}"),
        }
    }
}
