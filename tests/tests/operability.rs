//! Operating the proxy (issue 5): the audit trail, metrics and health over HTTP, reload
//! under load, graceful shutdown, and connection limits, end to end with real clients,
//! a real PostgreSQL upstream and the in-process proxy; plus one test of the real binary's
//! signal handling.

use proxy_testkit::adversary::{refused_at_ssl_request, stall_after_client_hello};
use proxy_testkit::harness::{client_tls, sqlstate, HarnessOptions, ProxyHarness};
use proxy_testkit::pg::PgServer;
use proxy_testkit::pki::{ClientCert, ClientCertSpec};
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// Everything the proxy logs in this test process (debug level), for the secrets check.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let _ = tracing_subscriber::fmt()
            // The test's own PostgreSQL setup (CREATE ROLE ... PASSWORD) is logged by
            // tokio-postgres at debug; the proxy does not use tokio-postgres.
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

/// Audit records written so far, waiting until there are at least `n`.
async fn audit_records(h: &ProxyHarness, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&h.audit_path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect();
        if records.len() >= n || Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tokio-postgres session whose connection task's result the test can inspect (to see
/// a FATAL the proxy sends outside any query).
async fn connect_watched(
    h: &ProxyHarness,
    cert: &ClientCert,
    user: &str,
) -> Result<
    (
        tokio_postgres::Client,
        JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(h.addr().port())
        .user(user)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(h.pki.ca_cert_path(), Some(cert)));
    let (client, connection) = config.connect(tls).await?;
    Ok((client, tokio::spawn(connection)))
}

/// Minimal HTTP/1.0 request to the admin listener: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[]).await
}

/// The reload token the tests' admin listeners are configured with (`[admin]
/// reload_token_env`).
const RELOAD_TOKEN_ENV: &str = "OPERABILITY_TEST_RELOAD_TOKEN";

fn admin_config() -> String {
    std::env::set_var(RELOAD_TOKEN_ENV, "reload-token-for-tests");
    format!("[admin]\nbind = \"127.0.0.1:0\"\nreload_token_env = \"{RELOAD_TOKEN_ENV}\"\n")
}

async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// The value of a metric sample line that starts with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Provisions `db_user` with a password the test knows.
async fn provision_known(h: &ProxyHarness, db_user: &str) -> String {
    let pg_user = PgServer::unique_name(db_user);
    let password = format!("s3cret-{}", PgServer::unique_name("pw"));
    h.pg.create_scram_user(&pg_user, &password).await.unwrap();
    h.credentials.set(db_user, &pg_user, &password);
    password
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_leaves_one_audit_record_and_no_secret_anywhere() {
    let logs = captured_logs();
    let h = ProxyHarness::start().await;
    let password = provision_known(&h, "alice").await;
    let c = &h.clients;

    // 1. A session that runs and closes.
    let client = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    client.simple_query("select 1").await.unwrap();
    drop(client);
    // 2. Policy refusal: bob may not be alice.
    let err = h
        .connect(Some(&c.bob), "alice", "analytics")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    // 3. Certificate refusal.
    h.connect(Some(&c.expired), "alice", "postgres")
        .await
        .unwrap_err();
    // 4. Plaintext client.
    let mut plain = tokio_postgres::Config::new();
    plain
        .host("127.0.0.1")
        .port(h.addr().port())
        .user("alice")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    assert!(plain.connect(tokio_postgres::NoTls).await.is_err());
    // 5. Credential refusal: `reporting` is granted but has no login.
    let err = h
        .connect(Some(&c.alice), "reporting", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    // 6. A cancel request (for nothing in particular).
    let client = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    client
        .cancel_token()
        .cancel_query(h.tls_connector(None))
        .await
        .unwrap();
    drop(client);

    let records = audit_records(&h, 7).await;
    assert_eq!(records.len(), 7, "{records:#?}");
    let find = |pred: &dyn Fn(&Value) -> bool| {
        records
            .iter()
            .find(|r| pred(r))
            .unwrap_or_else(|| panic!("no such record in {records:#?}"))
            .clone()
    };

    let ok = find(&|r| r["outcome"] == "closed");
    assert_eq!(ok["kind"], "session");
    assert_eq!(ok["listener"], "test");
    assert!(ok["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(ok["session_id"].as_str().unwrap().len(), 32);
    let cert = &ok["client_certificate"];
    assert!(cert["subject"].as_str().unwrap().starts_with("CN=alice"));
    assert_eq!(cert["issuer"], h.pki.root().subject_dn());
    assert_eq!(cert["san_uri"][0], "spiffe://corp.example/ns/bi/sa/alice");
    assert_eq!(cert["san_email"][0], "alice@corp.example");
    assert_eq!(cert["fingerprint_sha256"].as_str().unwrap().len(), 64);
    assert!(!cert["serial"].as_str().unwrap().is_empty());
    assert_eq!(ok["rule"], "analysts");
    assert_eq!(ok["target"], "pg");
    assert_eq!(ok["requested_user"], "alice");
    assert_eq!(ok["database"], "postgres");
    assert!(ok["db_user"].as_str().unwrap().starts_with("alice"));
    assert_eq!(ok["groups"][0], "analysts");
    assert_eq!(ok["aws_request_ids"][0], "test-request");
    assert_eq!(ok["client_tls"]["version"], "TLSv1.3");
    assert!(ok["upstream_tls"]["cipher"]
        .as_str()
        .unwrap()
        .starts_with("TLS13_"));
    assert!(ok["bytes_from_client"].as_u64().unwrap() > 0);
    assert!(ok["bytes_to_client"].as_u64().unwrap() > 0);
    assert_eq!(ok["close_reason"], "client_closed");
    assert!(ok["duration_ms"].is_u64());
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert!(ok.get("refusal").is_none());

    let policy = find(&|r| r["refusal"]["reason"] == "policy");
    assert_eq!(policy["refusal"]["sqlstate"], "28000");
    assert!(policy["client_certificate"]["subject"]
        .as_str()
        .unwrap()
        .starts_with("CN=bob"));
    assert_eq!(policy["requested_user"], "alice");
    assert!(policy.get("rule").is_none());

    let cert = find(&|r| r["refusal"]["reason"] == "client_certificate");
    assert_eq!(cert["refusal"]["sqlstate"], "28000");
    assert!(cert["refusal"]["detail"]
        .as_str()
        .unwrap()
        .contains("expired"));

    let plain = find(&|r| r["refusal"]["reason"] == "tls_required");
    assert_eq!(plain["refusal"]["sqlstate"], "28000");
    assert!(plain.get("client_tls").is_none());

    let creds = find(&|r| r["refusal"]["reason"] == "credentials");
    assert_eq!(creds["rule"], "analysts");
    assert_eq!(creds["db_user"], "reporting");

    let cancel = find(&|r| r["kind"] == "cancel");
    assert_eq!(cancel["outcome"], "cancel");
    assert!(cancel["cancel_outcome"].is_string());

    // Nothing secret in the audit trail or the logs (debug level) of all of the above.
    let audit = std::fs::read_to_string(&h.audit_path).unwrap();
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("session opened"), "logs were captured");
    for (name, text) in [("audit", &audit), ("logs", &logs)] {
        let leak = text.lines().find(|l| l.contains(&password));
        assert!(leak.is_none(), "password in {name}: {leak:?}");
        assert!(!text.contains("BEGIN PRIVATE KEY"), "key in {name}");
    }
}

/// `[admin] bind = "unix:/path"`: the same endpoints on a socket only the proxy's user can
/// open, removed when the proxy stops.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_can_be_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: format!("[admin]\nbind = \"unix:{}\"\n", socket.display()),
        ..Default::default()
    })
    .await;
    assert_eq!(h.running.admin_addr(), None, "no TCP admin listener");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
    s.write_all(b"GET /livez HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.split(' ').nth(1), Some("200"), "{out}");
    drop(h);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_are_served_over_http() {
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: admin_config(),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let admin = h.running.admin_addr().expect("admin listener");

    assert_eq!(http(admin, "GET", "/livez").await.0, 200);
    assert_eq!(http(admin, "GET", "/startupz").await.0, 200);
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200);

    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    client
        .simple_query("select repeat('x', 100000)")
        .await
        .unwrap();
    h.connect(Some(&h.clients.bob), "alice", "analytics")
        .await
        .unwrap_err();

    let (status, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let p = "redshift_iam_proxy_";
    assert_eq!(
        sample(
            &m,
            &format!("{p}connections_accepted_total{{listener=\"test\"}}")
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}sessions_active{{listener=\"test\",target=\"pg\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}logins_total{{target=\"pg\",outcome=\"success\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}logins_total{{target=\"pg\",outcome=\"denied\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}connections_refused_total{{listener=\"test\",reason=\"policy\"}}")
        ),
        Some(1.0)
    );
    for histogram in [
        "client_handshake_seconds_count{listener=\"test\"}",
        "credential_fetch_seconds_count{target=\"pg\"}",
        "upstream_connect_seconds_count{target=\"pg\"}",
        "upstream_auth_seconds_count{target=\"pg\"}",
    ] {
        assert!(
            sample(&m, &format!("{p}{histogram}")).unwrap_or(0.0) >= 1.0,
            "{histogram}\n{m}"
        );
    }
    assert!(sample(&m, &format!("{p}client_bytes_sent_total")).unwrap() > 100_000.0);
    let server_expiry = sample(
        &m,
        &format!("{p}certificate_expiry_timestamp_seconds{{kind=\"server\",listener=\"test\""),
    )
    .unwrap();
    assert!(server_expiry > 1.7e9, "{server_expiry}");
    assert!(m.contains(&format!(
        "{p}certificate_expiry_timestamp_seconds{{kind=\"client_ca\""
    )));

    // Reloading needs the token; a request for another host name is refused outright.
    let (status, body) = http(admin, "POST", "/reload").await;
    assert_eq!(status, 403, "{body}");
    let bearer = "Bearer reload-token-for-tests";
    let (status, body) = http_with(admin, "POST", "/reload", &[("Authorization", bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: rebound.evil.example\r\n\r\n")
        .await
        .unwrap();
    let mut refused = String::new();
    s.read_to_string(&mut refused).await.unwrap();
    assert!(refused.starts_with("HTTP/1.0 403"), "{refused}");
    let (_, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(
        sample(&m, &format!("{p}reloads_total{{outcome=\"success\"}}")),
        Some(1.0)
    );
    drop(client);
}

/// Rewrites one `key = value` line of the harness configuration.
fn set_key(text: &str, key: &str, value: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with(&format!("{key} = ")) {
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A reload that changes restart-only settings is refused, naming them; one that changes
/// settings kept until restart goes ahead.
#[tokio::test(flavor = "multi_thread")]
async fn reload_refuses_restart_only_changes_naming_them() {
    let h = ProxyHarness::start().await;
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        set_key(&original, "region", "\"eu-west-1\""),
    )
    .unwrap();
    let err = h.running.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("restart-only settings changed: [[target]] \"pg\": region"),
        "{err}"
    );
    assert!(err.contains("restart the proxy"), "{err}");

    std::fs::write(&h.config_path, set_key(&original, "level", "\"info\"")).unwrap();
    assert_eq!(h.running.reload().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_keeps_sessions_and_applies_to_new_ones() {
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    h.provision("bob").await;

    // 20 sessions streaming result sets for the whole test.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streams = Vec::new();
    for _ in 0..20 {
        let client = h
            .connect(Some(&h.clients.alice), "alice", "postgres")
            .await
            .unwrap();
        let stop = stop.clone();
        streams.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let rows = client
                    .query("select repeat('x', 2000) from generate_series(1, 200)", &[])
                    .await?;
                assert_eq!(rows.len(), 200);
                rounds += 1;
            }
            Ok::<u32, tokio_postgres::Error>(rounds)
        }));
    }

    // Bob may not use `postgres` under the first policy.
    let err = h
        .connect(Some(&h.clients.bob), "bob", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));

    let original = std::fs::read_to_string(&h.config_path).unwrap();
    let new_ca = h
        .pki
        .new_root_ca("Reload Client CA", Default::default())
        .unwrap();
    let bundle = h
        .pki
        .bundle("reload-cas", &[h.pki.ca_cert_path(), &new_ca.cert_pem])
        .unwrap();
    let carol = new_ca
        .client_cert(ClientCertSpec::new("alice-carol"))
        .unwrap();
    for round in 0..5 {
        let server = h.pki.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        let mut text = set_key(&original, "tls_cert", &format!("{:?}", server.chain_pem));
        text = set_key(&text, "tls_key", &format!("{:?}", server.key_pem));
        text = set_key(&text, "client_ca", &format!("{bundle:?}"));
        // The new policy lets bob into any database.
        text = text.replace("databases = [\"analytics\"]", "databases = [\"*\"]");
        std::fs::write(&h.config_path, &text).unwrap();
        let generation = h.running.reload().await.unwrap();
        assert_eq!(generation, 2 + round);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New sessions see the new policy and the new client CA.
    h.connect(Some(&h.clients.bob), "bob", "postgres")
        .await
        .unwrap();
    h.connect(Some(&carol), "alice-carol", "postgres")
        .await
        .map(|_| ())
        .unwrap_or_else(|e| {
            // No login was provisioned for alice-carol: a credential refusal proves the
            // certificate was accepted and the policy matched.
            assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
            assert!(!e.to_string().contains("certificate"), "{e}");
        });

    // A broken certificate file is refused and the running state kept.
    let broken = h.pki.dir().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let current = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        set_key(&current, "tls_cert", &format!("{broken:?}")),
    )
    .unwrap();
    let err = h.running.reload().await.unwrap_err();
    assert!(err.to_string().contains("broken.pem"), "{err}");
    h.connect(Some(&h.clients.bob), "bob", "postgres")
        .await
        .unwrap();

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in streams {
        let rounds = s.await.unwrap().expect("no streaming session dropped");
        assert!(rounds > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_drains_then_ends_sessions_with_57p01() {
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: "[shutdown]\ndrain_timeout = \"1500ms\"\n[admin]\nbind = \"127.0.0.1:0\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let admin = h.running.admin_addr().unwrap();
    let addr = h.addr();

    // One session finishes its work inside the drain window; one outlives it.
    let (quick, _quick_conn) = connect_watched(&h, &h.clients.alice, "alice")
        .await
        .unwrap();
    let (slow, slow_conn) = connect_watched(&h, &h.clients.alice, "alice")
        .await
        .unwrap();
    let quick_work = tokio::spawn(async move {
        quick.simple_query("select pg_sleep(0.5)").await?;
        drop(quick);
        Ok::<(), tokio_postgres::Error>(())
    });
    let slow_work = tokio::spawn(async move { slow.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ProxyHarness { running, .. } = h;
    let started = Instant::now();
    let shutdown = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        http(admin, "GET", "/readyz").await.0,
        503,
        "unready at once"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listeners are closed"
    );

    quick_work
        .await
        .unwrap()
        .expect("the quick session completes");
    let err = slow_work.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    let _ = slow_conn.await;
    let report = shutdown.await.unwrap();
    assert_eq!(report.terminated, 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_limit_refuses_with_its_sqlstate() {
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: "[limits]\nmax_connections = 3\nmax_connections_per_identity = 2\n\
                       idle_timeout = \"700ms\"\n"
            .into(),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let c = &h.clients;

    let a1 = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    let a2 = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    let err = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("53300"),
        "per identity: {err}"
    );
    let other = h.pki.client_cert(ClientCertSpec::new("alice-two")).unwrap();
    h.provision("alice-two").await;
    let b1 = h
        .connect(Some(&other), "alice-two", "postgres")
        .await
        .unwrap();
    // Over the global limit the client is refused at its SSLRequest, before any
    // handshake (libpq reports an error response during the SSL exchange).
    let refusal = refused_at_ssl_request(h.addr()).await.expect("refused");
    assert_eq!(refusal.code, "53300", "global: {refusal:?}");
    assert_eq!(refusal.message, "sorry, too many clients already");
    drop((a1, a2, b1));

    // Idle sessions are ended with 57P05 (PostgreSQL's idle-session timeout code).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (client, conn) = connect_watched(&h, &c.alice, "alice").await.unwrap();
    client.simple_query("select 1").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle session is ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&ended).as_deref(), Some("57P05"), "{ended}");

    let records = audit_records(&h, 6).await;
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["refusal"]["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"max_connections_per_identity"),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"max_connections"), "{reasons:?}");
    assert!(records.iter().any(|r| r["close_reason"] == "idle_timeout"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_at_their_maximum_lifetime_and_handshakes_queue() {
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: "[limits]\nmax_session_lifetime = \"800ms\"\nmax_handshakes = 1\n\
                       handshake_timeout = \"700ms\"\n"
            .into(),
        login_timeout: Duration::from_millis(1500),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let (client, conn) = connect_watched(&h, &h.clients.alice, "alice")
        .await
        .unwrap();
    let err = client.simple_query("select pg_sleep(5)").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    let _ = conn.await;

    // A client that asked for TLS and then stalls holds no handshake slot (the slot is
    // taken once a ClientHello has arrived): the next client logs in at once.
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    silent
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    silent.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let started = Instant::now();
    h.connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    // One that sends its ClientHello and then stalls mid-handshake holds the only slot
    // until the handshake timeout; the next client waits for it instead of being refused.
    // (Waiting for the slot counts against the waiting client's own handshake timeout,
    // so it arrives once the stalled handshake is well under way.)
    let stalled = stall_after_client_hello(h.addr()).await;
    let stalled_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(350)).await;
    h.connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(650),
        "logged in {:?} after the stalled handshake began",
        stalled_at.elapsed()
    );
    drop((silent, stalled));
}

/// The real binary: SIGHUP reloads (a broken file is counted and kept out), SIGTERM drains
/// and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    use nix::sys::signal::Signal;
    use proxy_testkit::proxy::{free_port, ProxyProcess};
    let dir = tempfile::tempdir().unwrap();
    let pki = proxy_testkit::pki::TestPki::new(dir.path().join("pki")).unwrap();
    let server = pki.server_cert(&["localhost"]).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = format!(
        r#"
[audit]
path = "audit.jsonl"
[shutdown]
drain_timeout = "1s"

[[listener]]
bind = "127.0.0.1:{port}"
tls_cert = {cert:?}
tls_key = {key:?}
client_ca = {ca:?}

[[target]]
name = "rs"
kind = "provisioned"
host = "example.abc123xyz789.us-east-1.redshift.amazonaws.com"
aws_endpoint_url = "http://127.0.0.1:9"

[[policy.rule]]
name = "all"
match = {{ cn = "*" }}
targets = ["*"]
users = ["{{cn}}"]
databases = ["*"]
"#,
        cert = server.chain_pem,
        key = server.key_pem,
        ca = pki.ca_cert_path(),
    );
    let proxy = ProxyProcess::builder(&config, dir.path())
        .env(
            "REDSHIFT_IAM_PROXY_ADMIN_BIND",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
        .env("AWS_REGION", "us-east-1")
        .wait_for_port(port)
        .wait_for_port(admin_port)
        .start()
        .await
        .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200);

    // A good reload, then a broken one.
    proxy.signal(Signal::SIGHUP).unwrap();
    assert!(
        proxy
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    std::fs::write(
        proxy.config_path(),
        config.replace("[[target]]", "[[targett]]"),
    )
    .unwrap();
    proxy.signal(Signal::SIGHUP).unwrap();
    assert!(
        proxy
            .wait_for_log("reload failed", Duration::from_secs(5))
            .await
    );
    let (_, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(
        sample(&m, "redshift_iam_proxy_reloads_total{outcome=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "redshift_iam_proxy_reloads_total{outcome=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200, "still serving");

    proxy.signal(Signal::SIGTERM).unwrap();
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the proxy exits");
    assert_eq!(status.code(), Some(0), "{}", proxy.logs());
    assert!(!proxy.logs().contains("not-a-real-secret"));
}

/// The audit record of a refused certificate still says who tried: the presented
/// certificate's fields, as parsed from the certificate, next to the refusal reason.
#[tokio::test(flavor = "multi_thread")]
async fn refused_certificates_are_audited_with_the_presented_fields() {
    use sha2::{Digest, Sha256};
    let h = ProxyHarness::start().await;
    let c = &h.clients;
    for cert in [&c.expired, &c.revoked] {
        let err = h
            .connect(Some(cert), "alice", "postgres")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    }

    let records = audit_records(&h, 2).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for (cert, detail) in [(&c.expired, "expired"), (&c.revoked, "revoked")] {
        let record = records
            .iter()
            .find(|r| {
                r["client_certificate"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("CN={},", cert.common_name)))
            })
            .unwrap_or_else(|| panic!("no record for {}: {records:#?}", cert.common_name));
        assert_eq!(record["outcome"], "refused");
        assert_eq!(record["refusal"]["reason"], "client_certificate");
        assert_eq!(record["refusal"]["sqlstate"], "28000");
        assert!(
            record["refusal"]["detail"]
                .as_str()
                .unwrap()
                .contains(detail),
            "{record:#}"
        );
        let presented = &record["client_certificate"];
        assert_eq!(presented["issuer"], h.pki.root().subject_dn());
        assert_eq!(presented["serial"], cert.serial.to_hex());
        assert_eq!(
            presented["fingerprint_sha256"],
            hex::encode(Sha256::digest(&cert.cert_der))
        );
        let not_after = time::OffsetDateTime::parse(
            presented["not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            not_after.unix_timestamp(),
            cert.not_after.unix_timestamp(),
            "{record:#}"
        );
        assert_eq!(record["client_tls"]["version"], "TLSv1.3");
        assert!(record.get("rule").is_none() && record.get("db_user").is_none());
    }
    // No login was attempted for them.
    assert_eq!(h.credentials.calls(), 0);
}

/// `[[listener]] max_connections` replaces `[limits] max_connections_per_listener` for its
/// listener (here: allows more), and refuses beyond it with 53300 like the other limits.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_max_connections_overrides_the_shared_per_listener_limit() {
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config:
            "[limits]\nmax_connections_per_listener = 1\n[admin]\nbind = \"127.0.0.1:0\"\n".into(),
        listener_extra: "max_connections = 2\n".into(),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let c = &h.clients;
    let first = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    let second = h
        .connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
    let refusal = refused_at_ssl_request(h.addr()).await.expect("refused");
    assert_eq!(refusal.code, "53300", "{refusal:?}");
    second.simple_query("select 1").await.unwrap();
    drop(first);
    // The slot is free again once the first connection is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match h.connect(Some(&c.alice), "alice", "postgres").await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed slot was not reused: {e}"),
        }
    };
    third.simple_query("select 1").await.unwrap();

    let records = audit_records(&h, 3).await;
    let refusal = records
        .iter()
        .find(|r| r["refusal"]["reason"] == "max_connections_per_listener")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(refusal["refusal"]["sqlstate"], "53300");
    assert_eq!(refusal["listener"], "test");
    let (_, m) = http(h.running.admin_addr().unwrap(), "GET", "/metrics").await;
    assert!(
        sample(
            &m,
            "redshift_iam_proxy_connections_refused_total{listener=\"test\",reason=\"max_connections_per_listener\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

/// A stack (the proxy binary, the AWS emulator, PostgreSQL) with the admin listener on a
/// free port, and that port.
async fn stack_with_admin() -> (proxy_testkit::stack::Stack, std::net::SocketAddr) {
    let admin_port = proxy_testkit::proxy::free_port();
    let stack = proxy_testkit::stack::Stack::start_with(|c| {
        c.push_str(&format!("\n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n"));
    })
    .await
    .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    // The admin listener binds just after the client listeners the stack waited for.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(Instant::now() < deadline, "admin listener never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (stack, admin)
}

/// `aws_calls_total{api,outcome}` and the latency histogram count every request the proxy
/// sends to AWS, retries included: per API, exactly what the emulator received.
#[tokio::test(flavor = "multi_thread")]
async fn aws_calls_are_counted_by_api_and_outcome_as_the_emulator_saw_them() {
    use proxy_testkit::emulator::Api;
    use proxy_testkit::harness::connect_through_proxy;
    use proxy_testkit::stack::DATABASE;
    let (stack, admin) = stack_with_admin().await;
    let l = &stack.layout;
    let login = |port: u16, cert: &ClientCert, user: &str| {
        let (ca, cert, user) = (l.pki.ca_cert_path(), cert.clone(), user.to_string());
        async move {
            let client = connect_through_proxy(port, ca, Some(&cert), &user, DATABASE)
                .await
                .unwrap_or_else(|e| panic!("{user} on {port}: {e}"));
            client.simple_query("select 1").await.unwrap();
        }
    };
    let (alice, bob) = (&l.alice, &l.bob);

    // One call of each API (alice's role session is shared by the three targets).
    login(l.ports.cluster, alice, "alice").await;
    login(l.ports.cluster_iam, alice, "alice").await;
    login(l.ports.serverless, alice, "alice").await;
    // Failures the SDK retries: a throttled GetClusterCredentials and a GetCredentials
    // whose connection breaks without an answer.
    let faults = stack.emulator.faults();
    faults.throttle_next(Some(Api::GetClusterCredentials), 1);
    faults.drop_next(Some(Api::GetCredentials), 1);
    login(l.ports.cluster, bob, "bi_reader").await;
    login(l.ports.serverless, bob, "bi_reader").await;

    let (status, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let calls = |api: &str, outcome: &str| {
        sample(
            &m,
            &format!("redshift_iam_proxy_aws_calls_total{{api=\"{api}\",outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };
    let outcomes = [
        "success",
        "throttled",
        "client_error",
        "server_error",
        "timeout",
        "transport",
    ];
    for api in Api::ALL {
        let name = api.name();
        let counted: u64 = outcomes.iter().map(|o| calls(name, o)).sum();
        assert_eq!(
            counted,
            stack.emulator.calls(api),
            "{name}: the proxy counted {counted}, the emulator received {}\n{m}",
            stack.emulator.calls(api)
        );
        let timed = sample(
            &m,
            &format!("redshift_iam_proxy_aws_call_duration_seconds_count{{api=\"{name}\"}}"),
        )
        .unwrap_or(0.0) as u64;
        assert_eq!(timed, counted, "{name}: one latency sample per call\n{m}");
    }
    assert_eq!(calls("CreateSession", "success"), 2, "one session per role");
    assert_eq!(calls("GetClusterCredentials", "throttled"), 1, "{m}");
    assert_eq!(calls("GetClusterCredentials", "success"), 2, "{m}");
    assert_eq!(calls("GetClusterCredentialsWithIAM", "success"), 1, "{m}");
    assert_eq!(calls("GetCredentials", "transport"), 1, "{m}");
    assert_eq!(calls("GetCredentials", "success"), 2, "{m}");
}

/// `/readyz` reflects the proxy's own AWS credentials without calling AWS: once
/// CreateSession is refused and no credentials are held it turns 503 with the reason, and
/// 200 again when the cause is fixed; `/livez` stays 200 throughout.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_proxys_aws_credentials() {
    use proxy_testkit::harness::connect_through_proxy;
    use proxy_testkit::stack::{access_role_arn, DATABASE};
    let (stack, admin) = stack_with_admin().await;
    let l = &stack.layout;
    let login = || {
        connect_through_proxy(
            l.ports.cluster,
            l.pki.ca_cert_path(),
            Some(&l.alice),
            "alice",
            DATABASE,
        )
    };
    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(
        status, 200,
        "no credentials fetched yet is not a failure: {body}"
    );

    // The proxy's Roles Anywhere certificate is replaced by one from a CA the trust anchor
    // does not know (a renewal gone wrong): CreateSession is refused.
    let identity = &l.proxy_identity;
    let good_cert = std::fs::read(&identity.cert_pem).unwrap();
    let good_key = std::fs::read(&identity.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rogue = proxy_testkit::pki::TestPki::new(dir.path())
        .unwrap()
        .client_cert(ClientCertSpec::new("redshift-iam-proxy"))
        .unwrap();
    std::fs::copy(&rogue.cert_pem, &identity.cert_pem).unwrap();
    std::fs::copy(&rogue.key_pem, &identity.key_pem).unwrap();
    let err = login().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");

    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("AWS credentials")
            && body.contains(&access_role_arn())
            && body.contains("AccessDenied"),
        "{body}"
    );
    assert_eq!(http(admin, "GET", "/livez").await.0, 200);
    assert_eq!(http(admin, "GET", "/startupz").await.0, 200);
    let (_, m) = http(admin, "GET", "/metrics").await;
    assert!(
        sample(
            &m,
            "redshift_iam_proxy_aws_calls_total{api=\"CreateSession\",outcome=\"client_error\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );

    // The right certificate is back: the next CreateSession succeeds and so does readiness.
    std::fs::write(&identity.cert_pem, good_cert).unwrap();
    std::fs::write(&identity.key_pem, good_key).unwrap();
    // The failed credential call backs off (1 s, doubling): the login works once it passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match login().await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}\n{}", stack.proxy.logs()),
        }
    };
    client.simple_query("select 1").await.unwrap();
    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "ready\n");
}
