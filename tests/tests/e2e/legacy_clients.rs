//! Legacy applications (issue 6) and Unix-socket listeners: clients without certificates
//! authenticate to the proxy with a password (SCRAM-SHA-256 against a verifier in the
//! configuration) or, on a Unix socket, are trusted as a configured local user. Real
//! clients (psql, tokio-postgres) and a hand-written SASL client, through the in-process
//! proxy and the real credential chain, to the Redshift stand-in.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proxy_testkit::adversary::{
    cancel_request, message, read_byte, read_reply, request, startup, tls, Reply, TlsStart,
    PROTOCOL_3_0, SSL_REQUEST_CODE,
};
use proxy_testkit::client::{client_tls, current_user, sqlstate};
use proxy_testkit::config::{Listener, ProxyConfig, Rule};
use proxy_testkit::observe::{captured_logs, wait_for_query};
use proxy_testkit::pg::{quote_ident, quote_literal, PgServer};
use proxy_testkit::pki::ClientCert;
use proxy_testkit::proxy::proxy_command;
use proxy_testkit::psql::Psql;
use proxy_testkit::world::{TestProxy, World};
use rustls_pki_types::ServerName;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::NoTls;

const ETL_PASSWORD: &str = "correct horse battery staple";

/// The world's certificate listener `main`, plus `legacy` (password over TLS),
/// `legacy-plain` (password, plaintext allowed, loopback) and `sidecar` (trust on a Unix
/// socket in `socket_dir`). Local and database user names are unique to the world.
struct Legacy {
    world: World,
    h: TestProxy,
    socket_dir: tempfile::TempDir,
    verifier: String,
    /// The local user of the password listeners, logging in as itself.
    etl: String,
    /// A local user name no listener knows (it still matches the `etl*` rule).
    ghost: String,
    /// The database user the trust listener's `sidecar` gets.
    reporting: String,
    alice: ClientCert,
}

impl Legacy {
    async fn start() -> Legacy {
        Self::start_with(|c| c).await
    }

    /// Starts with the configuration `adjust` makes of the usual one.
    async fn start_with(adjust: impl FnOnce(ProxyConfig) -> ProxyConfig) -> Legacy {
        let world = World::start().await;
        let socket_dir = tempfile::tempdir().unwrap();
        let verifier = proxy_auth::password::scram::hash_password(ETL_PASSWORD, 4096).to_text();
        let etl = world.name("etl");
        let reporting = world.name("reporting");
        let h = world
            .proxy(adjust(legacy_config(
                &world,
                &socket_dir,
                &verifier,
                &etl,
                &reporting,
            )))
            .await;
        Legacy {
            ghost: world.name("etlghost"),
            alice: world.client("alice"),
            world,
            h,
            socket_dir,
            verifier,
            etl,
            reporting,
        }
    }

    fn legacy(&self) -> SocketAddr {
        self.h.listener("legacy")
    }

    fn socket_path(&self) -> PathBuf {
        self.socket_dir.path().join(".s.PGSQL.5439")
    }

    /// `IAMA:<name>`: what `current_user` says for database user `name`.
    fn iam(name: &str) -> String {
        format!("IAMA:{name}")
    }

    /// psql to the `legacy` listener over verify-full TLS, without a client certificate.
    fn psql(&self, user: &str, password: &str) -> Psql {
        Psql::new("localhost", self.legacy().port())
            .hostaddr("127.0.0.1")
            .root_cert(&self.h.ca)
            .user(user)
            .password(password)
            .dbname("dev")
    }

    /// tokio-postgres to the `legacy` listener over TLS with a password.
    async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = proxy_testkit::client::connect_config(self.legacy().port(), user, "dev");
        config.password(password);
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&self.h.ca, None));
        let (client, connection) = config.connect(tls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// tokio-postgres over the trust listener's Unix socket.
    async fn connect_unix(&self, user: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir.path())
            .port(5439)
            .user(user)
            .dbname("dev")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(NoTls).await.expect("login over the socket");
        tokio::spawn(connection);
        client
    }

    /// A TLS connection to the `legacy` listener (SSLRequest, then the handshake; no
    /// client certificate).
    async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(self.legacy()).await.unwrap();
        tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
        assert_eq!(read_byte(&mut tcp).await, Some(b'S'));
        let config = client_tls(&self.h.ca, None);
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Audit records written so far, waiting until there are at least `n`.
    async fn audit(&self, n: usize) -> Vec<Value> {
        self.h.audit(n).await
    }
}

/// [`Legacy`]'s configuration. With both kinds of local listener, each local rule is
/// scoped to its method (the configuration refuses unscoped `local_user` rules then):
/// `etl*` (password listeners) log in as themselves; `sidecar` (the trust listener's user)
/// as `reporting`. Certificates keep the world's `people` rule.
fn legacy_config(
    world: &World,
    socket_dir: &tempfile::TempDir,
    verifier: &str,
    etl: &str,
    reporting: &str,
) -> ProxyConfig {
    world
        .config()
        .listener(
            Listener::new("legacy", "127.0.0.1:0")
                .target("cluster")
                .client_auth("password")
                .tls(&world.server.chain_pem, &world.server.key_pem)
                .set("login_timeout", "5s")
                .user(etl, verifier),
        )
        .listener(
            Listener::new("legacy-plain", "127.0.0.1:0")
                .target("cluster")
                .client_auth("password")
                .set("allow_plaintext", true)
                .user(etl, verifier),
        )
        .listener(
            Listener::new(
                "sidecar",
                &format!("unix:{}/.s.PGSQL.5439", socket_dir.path().display()),
            )
            .target("cluster")
            .client_auth("trust")
            .set("trust_user", "sidecar")
            .set("unix_socket_mode", 0o600),
        )
        .rule(
            Rule::new("etl")
                .matching("local_user", "etl*")
                .matching("auth", proxy_testkit::config::strings(["password"]))
                .users(["{local_user}"]),
        )
        .rule(
            Rule::new("sidecar")
                .matching("local_user", "sidecar")
                .matching("auth", proxy_testkit::config::strings(["trust"]))
                .users([reporting])
                .default_user(reporting),
        )
}

/// Startup as `user`, then the server's first authentication request.
async fn start_login<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    user: &str,
) -> Reply {
    s.write_all(&startup(
        PROTOCOL_3_0,
        &[(b"user", user.as_bytes()), (b"database", b"dev")],
    ))
    .await
    .unwrap();
    read_reply(s).await
}

/// The mechanisms of an AuthenticationSASL message.
fn sasl_mechanisms(reply: Reply) -> Vec<String> {
    let Reply::Message { tag: b'R', body } = reply else {
        panic!("expected AuthenticationSASL, got {reply:?}");
    };
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    body[4..]
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8(m.to_vec()).unwrap())
        .collect()
}

fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = mechanism.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    message(b'p', &body)
}

/// The data of an AuthenticationSASLContinue/Final (`code` 11/12).
fn sasl_data(reply: Reply, code: i32) -> Vec<u8> {
    match reply {
        Reply::Message { tag: b'R', body } if body[..4] == code.to_be_bytes() => body[4..].to_vec(),
        other => panic!("expected authentication request {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_right_password_logs_in_as_the_granted_database_user() {
    let l = Legacy::start().await;
    let user = Legacy::iam(&l.etl);

    assert_eq!(l.psql(&l.etl, ETL_PASSWORD).current_user().await, user);

    let client = l.connect(&l.etl, ETL_PASSWORD).await.unwrap();
    assert_eq!(current_user(&client).await, user);
    drop(client);

    let records = l.audit(2).await;
    let opened = records
        .iter()
        .find(|r| r["outcome"] == "closed")
        .expect("a closed session");
    assert_eq!(opened["listener"], "legacy");
    assert_eq!(opened["auth_method"], "password");
    assert_eq!(opened["local_user"], l.etl.as_str());
    assert_eq!(opened["rule"], "etl");
    assert_eq!(opened["db_user"], user.as_str());
    assert!(opened.get("client_certificate").is_none(), "{opened}");
    assert_eq!(opened["client_tls"]["version"], "TLSv1.3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_and_an_unknown_user_fail_the_same_way() {
    let l = Legacy::start().await;

    let wrong = l.connect(&l.etl, "not the password").await.unwrap_err();
    let unknown = l.connect(&l.ghost, ETL_PASSWORD).await.unwrap_err();
    for (e, user) in [(&wrong, &l.etl), (&unknown, &l.ghost)] {
        assert_eq!(sqlstate(e).as_deref(), Some("28P01"), "{e}");
        let db = e.as_db_error().unwrap();
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
        assert_eq!(db.detail(), None);
        assert_eq!(db.hint(), None);
    }

    // psql says the same in its own words.
    let out = l.psql(&l.etl, "nope").run("select 1").await.unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains(&format!(
            "password authentication failed for user \"{}\"",
            l.etl
        )),
        "{}",
        out.stderr
    );

    // The operator's log tells them apart; the audit records the refusal without a secret.
    let records = l.audit(3).await;
    for r in &records {
        assert_eq!(r["refusal"]["reason"], "password_authentication", "{r}");
        assert_eq!(r["refusal"]["sqlstate"], "28P01");
        assert_eq!(r["auth_method"], "password");
    }
    let details: Vec<&str> = records
        .iter()
        .map(|r| r["refusal"]["detail"].as_str().unwrap())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("wrong password")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("no such local user")),
        "{details:?}"
    );
    let text = std::fs::read_to_string(&l.h.audit_path).unwrap();
    assert!(!text.contains(ETL_PASSWORD) && !text.contains("not the password"));
    assert!(!text.contains(&l.verifier[20..40]));
    assert!(
        l.world.emulator.cloudtrail().is_empty(),
        "no refused login reached AWS"
    );
}

#[tokio::test]
async fn only_scram_sha_256_is_offered_and_everything_else_is_refused_cleanly() {
    let l = Legacy::start().await;

    // The offer: SCRAM-SHA-256 alone, never -PLUS (no channel binding is implemented).
    let mut s = l.tls().await;
    assert_eq!(
        sasl_mechanisms(start_login(&mut s, &l.etl).await),
        ["SCRAM-SHA-256"]
    );

    // A mechanism that was not offered, PLUS included.
    for mechanism in ["SCRAM-SHA-256-PLUS", "PLAIN", "SCRAM-SHA-1"] {
        let mut s = l.tls().await;
        sasl_mechanisms(start_login(&mut s, &l.etl).await);
        s.write_all(&sasl_initial_response(mechanism, b"n,,n=,r=abc"))
            .await
            .unwrap();
        let e = read_reply(&mut s).await.expect_error();
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            (
                "08P01",
                "client selected an invalid SASL authentication mechanism"
            ),
            "{mechanism}"
        );
    }

    // Demanding channel binding (`p=`) that was not offered: refused, not downgraded.
    let mut s = l.tls().await;
    sasl_mechanisms(start_login(&mut s, &l.etl).await);
    let client = ScramSha256::new(
        ETL_PASSWORD.as_bytes(),
        ChannelBinding::tls_server_end_point(vec![0; 32]),
    );
    assert!(client.message().starts_with(b"p=tls-server-end-point,"));
    s.write_all(&sasl_initial_response("SCRAM-SHA-256", client.message()))
        .await
        .unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("08P01", "malformed SCRAM message")
    );

    // Malformed client-first-messages, for a known and an unknown user alike.
    for user in [l.etl.as_str(), l.ghost.as_str()] {
        for garbage in [
            &b"hello"[..],
            b"n,a=admin,n=,r=abc",
            b"n,,n=,r=",
            b"n,,n=,r=a\0b",
        ] {
            let mut s = l.tls().await;
            sasl_mechanisms(start_login(&mut s, user).await);
            s.write_all(&sasl_initial_response("SCRAM-SHA-256", garbage))
                .await
                .unwrap();
            let e = read_reply(&mut s).await.expect_error();
            assert!(
                ["08P01", "0A000"].contains(&e.code.as_str()),
                "{user} {garbage:?}: {e:?}"
            );
            assert!(
                !e.message.contains("password authentication failed"),
                "{e:?}"
            );
        }
    }

    // A SASL message that is not a SASL response.
    let mut s = l.tls().await;
    sasl_mechanisms(start_login(&mut s, &l.etl).await);
    s.write_all(&message(b'Q', b"select 1\0")).await.unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert_eq!(e.code, "08P01");
    assert!(e.message.starts_with("expected SASL response"), "{e:?}");
}

#[tokio::test]
async fn a_tampered_or_wrong_client_final_message_is_refused() {
    let l = Legacy::start().await;
    // Runs the exchange by hand up to the client-final-message, then sends `tamper(it)`.
    async fn exchange(l: &Legacy, password: &str, tamper: impl Fn(&str) -> String) -> Reply {
        let mut s = l.tls().await;
        sasl_mechanisms(start_login(&mut s, &l.etl).await);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
        s.write_all(&sasl_initial_response("SCRAM-SHA-256", client.message()))
            .await
            .unwrap();
        let server_first = sasl_data(read_reply(&mut s).await, 11);
        client.update(&server_first).unwrap();
        let client_final = std::str::from_utf8(client.message()).unwrap().to_string();
        s.write_all(&message(b'p', tamper(&client_final).as_bytes()))
            .await
            .unwrap();
        read_reply(&mut s).await
    }

    // Untouched, with the right password: SASLFinal (the login then goes upstream).
    let ok = exchange(&l, ETL_PASSWORD, |m| m.to_string()).await;
    assert!(sasl_data(ok, 12).starts_with(b"v="));

    let wrong_password = format!("password authentication failed for user \"{}\"", l.etl);
    type Tamper = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Tamper, &str, &str)> = vec![
        (
            ETL_PASSWORD,
            Box::new(|m: &str| m.replacen("c=eSws", "c=biws", 1)),
            "08P01",
            "SCRAM channel binding check failed",
        ),
        (
            ETL_PASSWORD,
            Box::new(|m: &str| {
                let (head, rest) = m.split_once(",r=").unwrap();
                format!("{head},r=x{rest}")
            }),
            "08P01",
            "invalid SCRAM response",
        ),
        (
            ETL_PASSWORD,
            Box::new(|m: &str| m.rsplit_once(",p=").unwrap().0.to_string()),
            "08P01",
            "malformed SCRAM message",
        ),
        (
            "wrong",
            Box::new(|m: &str| m.to_string()),
            "28P01",
            wrong_password.as_str(),
        ),
    ];
    for (password, tamper, code, text) in cases {
        let e = exchange(&l, password, tamper).await.expect_error();
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, text));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_log_explains_refusals_and_never_holds_a_password_or_verifier() {
    let l = Legacy::start().await;
    l.connect(&l.etl, ETL_PASSWORD).await.unwrap();
    l.connect(&l.etl, "hunter2-wrong").await.unwrap_err();
    l.connect(&l.ghost, "hunter2-ghost").await.unwrap_err();
    l.audit(3).await;
    let logs = captured_logs();
    // This test's lines: those naming its own local users (client-chosen strings are
    // quoted, so the user's quotes are escaped).
    let wrong = logs
        .wait_for_line(&[&format!(
            r#"password authentication (scram-sha-256) of user \"{}\" failed: wrong password"#,
            l.etl
        )])
        .await;
    let ghost = logs
        .wait_for_line(&[&format!(
            r#"password authentication (scram-sha-256) of user \"{}\" failed: no such local user"#,
            l.ghost
        )])
        .await;
    for line in [&wrong, &ghost] {
        assert!(
            line.contains("reason=\"password_authentication\""),
            "{line}"
        );
    }
    // The session that logged in says how it authenticated.
    logs.wait_for_line(&[
        "session opened",
        &format!("identity=\"{}\"", l.etl),
        "auth_method=\"password\"",
    ])
    .await;
    // No line of the whole process's log holds a password or a piece of the verifier.
    let text = logs.text();
    for secret in [
        ETL_PASSWORD,
        "hunter2",
        &l.verifier[19..43],
        &l.verifier[l.verifier.len() - 30..],
    ] {
        assert!(!text.contains(secret), "{secret:?} was logged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_startup_on_a_tls_password_listener_is_refused() {
    let l = Legacy::start().await;
    let mut tcp = TcpStream::connect(l.legacy()).await.unwrap();
    let e = start_login(&mut tcp, &l.etl).await.expect_error();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("28000", "this proxy requires TLS")
    );

    let out = l
        .psql(&l.etl, ETL_PASSWORD)
        .sslmode("disable")
        .run("select 1")
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("this proxy requires TLS"),
        "{}",
        out.stderr
    );
    let records = l.audit(2).await;
    assert!(records
        .iter()
        .all(|r| r["refusal"]["reason"] == "tls_required"));
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_password_logins_work_on_loopback_when_allowed() {
    let l = Legacy::start().await;
    let addr = l.h.listener("legacy-plain");

    // No certificate to offer: SSLRequest is declined, and the client carries on in plaintext.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    assert_eq!(read_byte(&mut tcp).await, Some(b'N'));
    assert_eq!(
        sasl_mechanisms(start_login(&mut tcp, &l.etl).await),
        ["SCRAM-SHA-256"]
    );

    assert_eq!(
        Psql::new("127.0.0.1", addr.port())
            .sslmode("prefer")
            .user(&l.etl)
            .password(ETL_PASSWORD)
            .dbname("dev")
            .current_user()
            .await,
        Legacy::iam(&l.etl)
    );

    let e = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user(&l.etl)
        .password("wrong")
        .dbname("dev")
        .connect(NoTls)
        .await
        .err()
        .expect("a wrong password fails");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_over_a_unix_socket_with_psql() {
    let l = Legacy::start().await;
    let dir = l.socket_dir.path().display().to_string();

    // The socket exists with the configured mode.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(l.socket_path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // psql "host=<dir> port=5439": libpq finds .s.PGSQL.5439 in the directory. `iam` is a
    // placeholder: the rule's default user.
    assert_eq!(
        Psql::new(dir.clone(), 5439)
            .sslmode("disable")
            .user("iam")
            .dbname("dev")
            .current_user()
            .await,
        Legacy::iam(&l.reporting)
    );

    // The startup user is still checked by the policy.
    let out = Psql::new(dir, 5439)
        .sslmode("disable")
        .user("admin")
        .dbname("dev")
        .run("select 1")
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("database user \"admin\" is not permitted for this local user"),
        "{}",
        out.stderr
    );

    let records = l.audit(2).await;
    let closed = records.iter().find(|r| r["outcome"] == "closed").unwrap();
    assert_eq!(closed["listener"], "sidecar");
    assert_eq!(
        closed["client_addr"],
        format!("unix:{}", l.socket_path().display())
    );
    assert_eq!(closed["auth_method"], "trust");
    assert_eq!(closed["local_user"], "sidecar");
    assert_eq!(closed["client_uid"], nix::unistd::getuid().as_raw());
    assert!(closed["client_pid"].as_i64().is_some(), "{closed}");
    assert!(closed.get("client_tls").is_none(), "{closed}");
    let refused = records.iter().find(|r| r["outcome"] == "refused").unwrap();
    assert_eq!(refused["refusal"]["reason"], "policy");

    assert_eq!(
        l.h.metric("redshift_iam_proxy_connections_accepted_total{listener=\"sidecar\"}"),
        Some(2.0),
        "{}",
        l.h.metrics()
    );
}

/// Waits until PostgreSQL runs `pg_sleep(30)` as `role`, cancels it with `cancel`, and
/// checks the query ended with 57014 (canceling statement due to user request).
async fn assert_cancelled<F>(
    l: &Legacy,
    role: &str,
    query: tokio::task::JoinHandle<Result<(), String>>,
    cancel: F,
) where
    F: std::future::Future<Output = ()>,
{
    wait_for_query(l.world.pg, role, "pg_sleep(30)").await;
    cancel.await;
    let result = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query was cancelled")
        .unwrap();
    assert_eq!(result, Err("57014".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_requests_reach_sessions_over_either_kind_of_socket() {
    let l = Legacy::start().await;
    let reporting = Legacy::iam(&l.reporting);
    let sleep = |client: tokio_postgres::Client| {
        tokio::spawn(async move {
            match client.simple_query("select pg_sleep(30)").await {
                Ok(_) => Ok(()),
                Err(e) => Err(sqlstate(&e).unwrap_or_default()),
            }
        })
    };

    // A Unix-socket session, cancelled over the Unix socket (tokio-postgres dials the
    // same path)...
    let client = l.connect_unix("iam").await;
    let token = client.cancel_token();
    assert_cancelled(&l, &reporting, sleep(client), async {
        token.cancel_query(NoTls).await.unwrap()
    })
    .await;

    // ...and over TCP, in plaintext, on the certificate listener: cancel keys are the
    // proxy's own, whatever listener a request arrives on.
    let client = l.connect_unix("iam").await;
    let token = client.cancel_token();
    let addr = l.h.addr();
    assert_cancelled(&l, &reporting, sleep(client), async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        token.cancel_query_raw(tcp, NoTls).await.unwrap()
    })
    .await;

    // A certificate session over TCP and TLS, cancelled over the Unix socket with the key
    // from its BackendKeyData.
    let mut s = tls(&l.h, Some(&l.alice), &[], TlsStart::SslRequest)
        .await
        .unwrap();
    let reply = start_login(&mut s, &l.alice.common_name).await;
    let mut key = None;
    let mut reply = Some(reply);
    loop {
        let next = match reply.take() {
            Some(r) => r,
            None => read_reply(&mut s).await,
        };
        match next {
            Reply::Message { tag: b'K', body } => {
                key = Some((
                    i32::from_be_bytes(body[..4].try_into().unwrap()),
                    body[4..].to_vec(),
                ))
            }
            Reply::Message { tag: b'Z', .. } => break,
            Reply::Message { .. } => {}
            other => panic!("login failed: {other:?}"),
        }
    }
    let (pid, secret) = key.expect("BackendKeyData");
    s.write_all(&message(b'Q', b"select pg_sleep(30)\0"))
        .await
        .unwrap();
    wait_for_query(l.world.pg, &l.world.role(&l.alice), "pg_sleep(30)").await;
    let mut unix = UnixStream::connect(l.socket_path()).await.unwrap();
    unix.write_all(&cancel_request(pid, &secret)).await.unwrap();
    let e = loop {
        match read_reply(&mut s).await {
            Reply::Error(e) => break e,
            Reply::Message { .. } => {}
            Reply::Closed => panic!("the session closed instead"),
        }
    };
    assert_eq!(e.code, "57014", "{e:?}");

    let records = l.audit(6).await;
    let cancels: Vec<&Value> = records.iter().filter(|r| r["kind"] == "cancel").collect();
    assert_eq!(cancels.len(), 3, "{records:?}");
    assert!(
        cancels.iter().all(|r| r["cancel_outcome"] == "forwarded"),
        "{cancels:?}"
    );
    assert_eq!(l.world.standin().cancel_requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_identity_limits_count_local_users() {
    let l = Legacy::start_with(|c| c.set("limits", "max_connections_per_identity", 1)).await;
    let first = l.connect_unix("iam").await;
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(l.socket_dir.path())
        .port(5439)
        .user("iam")
        .dbname("dev");
    let e = config
        .connect(NoTls)
        .await
        .err()
        .expect("a second session is refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert_eq!(
        current_user(&first).await,
        Legacy::iam(&l.reporting),
        "the first session still works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_removes_the_unix_socket() {
    let l = Legacy::start().await;
    let client = l.connect_unix("iam").await;
    assert_eq!(current_user(&client).await, Legacy::iam(&l.reporting));
    drop(client);
    let path = l.socket_path();
    assert!(path.exists());
    let Legacy { h, socket_dir, .. } = l;
    h.running.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
    drop(socket_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_refused() {
    let first = Legacy::start().await;
    // A second proxy on the same path while the first one serves: refused.
    let config = first.h.config.clone();
    let err = first
        .world
        .try_proxy(config.clone())
        .await
        .err()
        .expect("the socket is in use");
    assert!(
        err.contains("another process is accepting connections"),
        "{err}"
    );

    // Stale (nobody accepts on it any more): the new proxy replaces it.
    let socket = first.socket_path();
    let Legacy {
        world,
        h,
        socket_dir,
        ..
    } = first;
    h.running.stop_accepting().await;
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a stale socket file");
    let second = world
        .try_proxy(config)
        .await
        .expect("a stale socket file is replaced");
    assert!(UnixStream::connect(&socket).await.is_ok());
    second.running.shutdown().await;
    drop(socket_dir);
}

/// `hash-password` output is PostgreSQL's own verifier format: PostgreSQL stores it as the
/// role's password and then accepts the password it was made from.
#[tokio::test]
async fn hash_password_output_is_a_verifier_postgresql_accepts() {
    let password = "Tr0ub4dor&3 ünïcode";
    let mut child = proxy_command()
        .args(["hash-password", "--stdin", "--iterations", "5000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verifier = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(verifier.starts_with("SCRAM-SHA-256$5000:"), "{verifier}");

    let pg = PgServer::shared();
    let role = PgServer::unique_name("hashed");
    pg.admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(&role),
            quote_literal(&verifier)
        ))
        .await
        .unwrap();
    // Stored as given, not hashed again.
    let stored: String = pg
        .admin()
        .await
        .unwrap()
        .query_one(
            "select rolpassword from pg_authid where rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, verifier);

    assert_eq!(
        pg.psql()
            .user(&role)
            .password(password)
            .dbname("postgres")
            .current_user()
            .await,
        role
    );
    let wrong = pg
        .psql()
        .user(&role)
        .password("Tr0ub4dor&3")
        .dbname("postgres")
        .run("select 1")
        .await
        .unwrap();
    assert!(!wrong.success());
    assert!(
        wrong.stderr.contains("password authentication failed"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn check_config_refuses_unsafe_listeners_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let rest = r#"
[[target]]
name = "pg"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"

[[policy.rule]]
name = "sidecar"
match = { local_user = "sidecar" }
targets = ["*"]
users = ["reporting"]
databases = ["*"]
"#;
    let cases = [
        (
            "name = \"open-trust\"\nbind = \"0.0.0.0:5439\"\nclient_auth = \"trust\"\ntrust_user = \"sidecar\"\nallow_plaintext = true",
            "listener[0].client_auth: client_auth = \"trust\" lets in anyone who can connect",
        ),
        (
            "name = \"open-plain\"\nbind = \"0.0.0.0:5439\"\nclient_auth = \"password\"\nallow_plaintext = true\n\
             [[listener.users]]\nname = \"etl\"\nscram_verifier = \"SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=\"",
            "listener[0].allow_plaintext: plaintext is only allowed on loopback addresses and Unix sockets",
        ),
        (
            "name = \"cert-socket\"\nbind = \"unix:/tmp/x/.s.PGSQL.5439\"\nclient_ca = \"ca.pem\"",
            "listener[0].client_auth: listener \"cert-socket\" is a Unix socket",
        ),
    ];
    for (listener, expected) in cases {
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, format!("[[listener]]\n{listener}\n{rest}")).unwrap();
        let out = proxy_command()
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{listener}");
        assert!(stderr.contains(expected), "{stderr}");
        let name = listener.split('"').nth(1).unwrap();
        assert!(stderr.contains(&format!("\"{name}\"")), "{stderr}");
    }
}
