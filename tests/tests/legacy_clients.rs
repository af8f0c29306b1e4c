//! Legacy applications (issue 6) and Unix-socket listeners: clients without certificates
//! authenticate to the proxy with a password (SCRAM-SHA-256 against a verifier in the
//! configuration) or, on a Unix socket, are trusted as a configured local user. Real
//! clients (psql, tokio-postgres) and a hand-written SASL client, through the in-process
//! proxy, to a real PostgreSQL server.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proxy_testkit::adversary::{
    cancel_request, message, read_byte, read_reply, request, startup, tls, Reply, TlsStart,
    PROTOCOL_3_0, SSL_REQUEST_CODE,
};
use proxy_testkit::harness::{client_tls, sqlstate, HarnessOptions, ProxyHarness, DEFAULT_RULES};
use proxy_testkit::pg::{quote_ident, quote_literal, PgServer};
use proxy_testkit::proxy::proxy_command;
use proxy_testkit::psql::Psql;
use rustls_pki_types::ServerName;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::NoTls;

const ETL_PASSWORD: &str = "correct horse battery staple";

/// Local users: `etl*` (password listeners) log in as themselves; `sidecar` (the trust
/// listener's user) as `reporting`. With both kinds of local listener, each rule is scoped
/// to its method (the configuration refuses unscoped `local_user` rules then).
const LOCAL_RULES: &str = r#"
[[policy.rule]]
name = "etl"
match = { local_user = "etl*", auth = ["password"] }
targets = ["*"]
users = ["{local_user}"]
databases = ["*"]

[[policy.rule]]
name = "sidecar"
match = { local_user = "sidecar", auth = ["trust"] }
targets = ["*"]
users = ["reporting"]
default_user = "reporting"
databases = ["*"]
"#;

/// The harness's certificate listener `test`, plus `legacy` (password over TLS),
/// `legacy-plain` (password, plaintext allowed, loopback) and `sidecar` (trust on a Unix
/// socket in `socket_dir`).
struct Legacy {
    h: ProxyHarness,
    socket_dir: tempfile::TempDir,
    verifier: String,
}

impl Legacy {
    async fn start() -> Legacy {
        Self::start_with(String::new()).await
    }

    async fn start_with(extra_config: String) -> Legacy {
        let socket_dir = tempfile::tempdir().unwrap();
        let verifier = proxy_auth::password::scram::hash_password(ETL_PASSWORD, 4096).to_text();
        let users =
            format!("[[listener.users]]\nname = \"etl\"\nscram_verifier = \"{verifier}\"\n");
        let h = ProxyHarness::start_with(HarnessOptions {
            rules: format!("{DEFAULT_RULES}\n{LOCAL_RULES}"),
            extra_config,
            extra_listeners: format!(
                r#"
[[listener]]
name = "legacy"
bind = "127.0.0.1:0"
client_auth = "password"
tls_cert = {{tls_cert}}
tls_key = {{tls_key}}
login_timeout = "5s"
{users}

[[listener]]
name = "legacy-plain"
bind = "127.0.0.1:0"
client_auth = "password"
allow_plaintext = true
{users}

[[listener]]
name = "sidecar"
bind = "unix:{dir}/.s.PGSQL.5439"
client_auth = "trust"
trust_user = "sidecar"
unix_socket_mode = 0o600
"#,
                dir = socket_dir.path().display(),
            ),
            ..HarnessOptions::default()
        })
        .await;
        Legacy {
            h,
            socket_dir,
            verifier,
        }
    }

    fn legacy(&self) -> SocketAddr {
        self.h.listener_addr("legacy")
    }

    fn socket_path(&self) -> PathBuf {
        self.socket_dir.path().join(".s.PGSQL.5439")
    }

    /// psql to the `legacy` listener over verify-full TLS, without a client certificate.
    fn psql(&self, user: &str, password: &str) -> Psql {
        Psql::new("localhost", self.legacy().port())
            .hostaddr("127.0.0.1")
            .root_cert(self.h.pki.ca_cert_path())
            .user(user)
            .password(password)
            .dbname("postgres")
    }

    /// tokio-postgres to the `legacy` listener over TLS with a password.
    async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("localhost")
            .hostaddr([127, 0, 0, 1].into())
            .port(self.legacy().port())
            .user(user)
            .password(password)
            .dbname("postgres")
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(10));
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(
            self.h.pki.ca_cert_path(),
            None,
        ));
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
            .dbname("postgres")
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
        let config = client_tls(self.h.pki.ca_cert_path(), None);
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Audit records written so far, waiting until there are at least `n`.
    async fn audit(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.h.audit_path).unwrap_or_default();
            let records: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON audit line"))
                .collect();
            if records.len() >= n || Instant::now() >= deadline {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Startup as `user`, then the server's first authentication request.
async fn start_login<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    user: &str,
) -> Reply {
    s.write_all(&startup(
        PROTOCOL_3_0,
        &[(b"user", user.as_bytes()), (b"database", b"postgres")],
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

#[tokio::test]
async fn the_right_password_logs_in_as_the_granted_database_user() {
    let l = Legacy::start().await;
    let pg_user = l.h.provision("etl").await;

    let out = l
        .psql("etl", ETL_PASSWORD)
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.value(), pg_user);

    let client = l.connect("etl", ETL_PASSWORD).await.unwrap();
    assert_eq!(current_user(&client).await, pg_user);
    drop(client);

    let records = l.audit(2).await;
    let opened = records
        .iter()
        .find(|r| r["outcome"] == "closed")
        .expect("a closed session");
    assert_eq!(opened["listener"], "legacy");
    assert_eq!(opened["auth_method"], "password");
    assert_eq!(opened["local_user"], "etl");
    assert_eq!(opened["rule"], "etl");
    assert_eq!(opened["db_user"], pg_user.as_str());
    assert!(opened.get("client_certificate").is_none(), "{opened}");
    assert_eq!(opened["client_tls"]["version"], "TLSv1.3");
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_fail_the_same_way() {
    let l = Legacy::start().await;
    l.h.provision("etl").await;

    let wrong = l.connect("etl", "not the password").await.unwrap_err();
    let unknown = l.connect("etl_nobody", ETL_PASSWORD).await.unwrap_err();
    for (e, user) in [(&wrong, "etl"), (&unknown, "etl_nobody")] {
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
    let out = l.psql("etl", "nope").run("select 1").await.unwrap();
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("password authentication failed for user \"etl\""),
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
}

#[tokio::test]
async fn only_scram_sha_256_is_offered_and_everything_else_is_refused_cleanly() {
    let l = Legacy::start().await;

    // The offer: SCRAM-SHA-256 alone, never -PLUS (no channel binding is implemented).
    let mut s = l.tls().await;
    assert_eq!(
        sasl_mechanisms(start_login(&mut s, "etl").await),
        ["SCRAM-SHA-256"]
    );

    // A mechanism that was not offered, PLUS included.
    for mechanism in ["SCRAM-SHA-256-PLUS", "PLAIN", "SCRAM-SHA-1"] {
        let mut s = l.tls().await;
        sasl_mechanisms(start_login(&mut s, "etl").await);
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
    sasl_mechanisms(start_login(&mut s, "etl").await);
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
    for user in ["etl", "etl_nobody"] {
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
    sasl_mechanisms(start_login(&mut s, "etl").await);
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
        sasl_mechanisms(start_login(&mut s, "etl").await);
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
            "password authentication failed for user \"etl\"",
        ),
    ];
    for (password, tamper, code, text) in cases {
        let e = exchange(&l, password, tamper).await.expect_error();
        assert_eq!((e.code.as_str(), e.message.as_str()), (code, text));
    }
}

/// Everything the proxy logs in this test process (debug level).
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,tokio_postgres=info")
            .with_ansi(false)
            .with_writer(move || CaptureWriter(sink.clone()))
            .try_init();
        buffer
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_operator_log_explains_refusals_and_never_holds_a_password_or_verifier() {
    let logs = captured_logs();
    let l = Legacy::start().await;
    l.h.provision("etl").await;
    l.connect("etl", ETL_PASSWORD).await.unwrap();
    l.connect("etl", "hunter2-wrong").await.unwrap_err();
    l.connect("etl_ghost", "hunter2-ghost").await.unwrap_err();
    l.audit(3).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        // Client-chosen strings are quoted in the log (`detail` is Debug-formatted).
        text.contains(
            r#"password authentication (scram-sha-256) of user \"etl\" failed: wrong password"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"password authentication (scram-sha-256) of user \"etl_ghost\" failed: no such local user"#
        ),
        "{text}"
    );
    assert!(
        text.contains("auth_method=\"password\"") || text.contains("auth_method=password"),
        "{text}"
    );
    for secret in [
        ETL_PASSWORD,
        "hunter2",
        &l.verifier[19..43],
        &l.verifier[l.verifier.len() - 30..],
    ] {
        assert!(!text.contains(secret), "{secret:?} was logged");
    }
}

#[tokio::test]
async fn a_plaintext_startup_on_a_tls_password_listener_is_refused() {
    let l = Legacy::start().await;
    let mut tcp = TcpStream::connect(l.legacy()).await.unwrap();
    let e = start_login(&mut tcp, "etl").await.expect_error();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("28000", "this proxy requires TLS")
    );

    let out = l
        .psql("etl", ETL_PASSWORD)
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

#[tokio::test]
async fn plaintext_password_logins_work_on_loopback_when_allowed() {
    let l = Legacy::start().await;
    let pg_user = l.h.provision("etl").await;
    let addr = l.h.listener_addr("legacy-plain");

    // No certificate to offer: SSLRequest is declined, and the client carries on in plaintext.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    assert_eq!(read_byte(&mut tcp).await, Some(b'N'));
    assert_eq!(
        sasl_mechanisms(start_login(&mut tcp, "etl").await),
        ["SCRAM-SHA-256"]
    );

    let out = Psql::new("127.0.0.1", addr.port())
        .sslmode("prefer")
        .user("etl")
        .password(ETL_PASSWORD)
        .dbname("postgres")
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.value(), pg_user);

    let e = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(addr.port())
        .user("etl")
        .password("wrong")
        .dbname("postgres")
        .connect(NoTls)
        .await
        .err()
        .expect("a wrong password fails");
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
}

#[tokio::test]
async fn trust_over_a_unix_socket_with_psql() {
    let l = Legacy::start().await;
    let pg_user = l.h.provision("reporting").await;
    let dir = l.socket_dir.path().display().to_string();

    // The socket exists with the configured mode.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(l.socket_path()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // psql "host=<dir> port=5439": libpq finds .s.PGSQL.5439 in the directory. `iam` is a
    // placeholder: the rule's default user.
    let out = Psql::new(dir.clone(), 5439)
        .sslmode("disable")
        .user("iam")
        .dbname("postgres")
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.value(), pg_user);

    // The startup user is still checked by the policy.
    let out = Psql::new(dir, 5439)
        .sslmode("disable")
        .user("admin")
        .dbname("postgres")
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

    let metrics = l.h.running.shared().metrics.encode();
    assert!(
        metrics.contains("connections_accepted_total{listener=\"sidecar\"} 2"),
        "{metrics}"
    );
}

/// Runs `select pg_sleep(30)` through `query`, cancels it with `cancel`, and checks the
/// query ended with 57014 (canceling statement due to user request).
async fn assert_cancelled<F>(query: tokio::task::JoinHandle<Result<(), String>>, cancel: F)
where
    F: std::future::Future<Output = ()>,
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.await;
    let result = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query was cancelled")
        .unwrap();
    assert_eq!(result, Err("57014".to_string()));
}

#[tokio::test]
async fn cancel_requests_reach_sessions_over_either_kind_of_socket() {
    let l = Legacy::start().await;
    l.h.provision("reporting").await;
    l.h.provision("alice").await;
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
    let client = l.connect_unix("reporting").await;
    let token = client.cancel_token();
    assert_cancelled(sleep(client), async {
        token.cancel_query(NoTls).await.unwrap()
    })
    .await;

    // ...and over TCP, in plaintext, on the certificate listener: cancel keys are the
    // proxy's own, whatever listener a request arrives on.
    let client = l.connect_unix("reporting").await;
    let token = client.cancel_token();
    let addr = l.h.addr();
    assert_cancelled(sleep(client), async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        token.cancel_query_raw(tcp, NoTls).await.unwrap()
    })
    .await;

    // A certificate session over TCP and TLS, cancelled over the Unix socket with the key
    // from its BackendKeyData.
    let mut s = tls(&l.h, Some(&l.h.clients.alice), &[], TlsStart::SslRequest)
        .await
        .unwrap();
    let reply = start_login(&mut s, "alice").await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
}

#[tokio::test]
async fn per_identity_limits_count_local_users() {
    let l = Legacy::start_with("[limits]\nmax_connections_per_identity = 1\n".into()).await;
    l.h.provision("reporting").await;
    let first = l.connect_unix("reporting").await;
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(l.socket_dir.path())
        .port(5439)
        .user("reporting")
        .dbname("postgres");
    let e = config
        .connect(NoTls)
        .await
        .err()
        .expect("a second session is refused");
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    assert!(
        !current_user(&first).await.is_empty(),
        "the first session still works"
    );
}

#[tokio::test]
async fn shutdown_removes_the_unix_socket() {
    let l = Legacy::start().await;
    l.h.provision("reporting").await;
    let client = l.connect_unix("reporting").await;
    assert!(!current_user(&client).await.is_empty());
    drop(client);
    let path = l.socket_path();
    assert!(path.exists());
    let Legacy { h, socket_dir, .. } = l;
    h.running.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
    drop(socket_dir);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_refused() {
    let first = Legacy::start().await;
    // A second proxy on the same path while the first one serves: refused.
    let config = std::fs::read_to_string(&first.h.config_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let parsed = proxy_config::Config::load(&path).unwrap();
    let proxy =
        redshift_iam_proxy::server::Proxy::new(&parsed, first.h.credentials.clone()).unwrap();
    let err = proxy
        .bind()
        .await
        .err()
        .expect("the socket is in use")
        .to_string();
    assert!(
        err.contains("another process is accepting connections"),
        "{err}"
    );

    // Stale (nobody accepts on it any more): the new proxy replaces it.
    let socket = first.socket_path();
    let Legacy { h, socket_dir, .. } = first;
    h.running.stop_accepting().await;
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a stale socket file");
    let proxy = redshift_iam_proxy::server::Proxy::new(&parsed, h.credentials.clone()).unwrap();
    let running = proxy.bind().await.expect("a stale socket file is replaced");
    assert!(UnixStream::connect(&socket).await.is_ok());
    running.shutdown().await;
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

    let ok = pg
        .psql()
        .user(&role)
        .password(password)
        .dbname("postgres")
        .run("select current_user")
        .await
        .unwrap();
    assert!(ok.success(), "{}", ok.stderr);
    assert_eq!(ok.value(), role);
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
