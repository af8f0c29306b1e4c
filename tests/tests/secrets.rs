//! Secrets stay out of logs and error messages: a full session scenario runs with debug
//! logging captured in-process, then every captured byte and every client-visible error
//! is searched for the issued passwords and the private-key material in use.
//!
//! Audit records and metrics (issue 5) are to be added to the searched text here.

use futures::{SinkExt, StreamExt};
use proxy_auth::db_credentials::CredentialError;
use proxy_testkit::harness::{CredentialFault, HarnessOptions, ProxyHarness};
use proxy_testkit::pg::PgServer;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything the test's tracing subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The base64 lines of a PEM file's body: any one of them in a log would leak key bytes.
fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_or_private_key_reaches_logs_or_errors() {
    let captured = Captured::default();
    // Everything at debug, except the test's own database client (tokio-postgres logs
    // the test kit's `CREATE ROLE ... PASSWORD` statements, which are not the proxy's).
    tracing_subscriber::fmt()
        .with_env_filter("debug,tokio_postgres=off")
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let h = ProxyHarness::start().await;
    let password = format!("{}-Secret!", PgServer::unique_name("pw"));
    let stale = format!("{}-Stale!", PgServer::unique_name("pw"));
    let wrong = format!("{}-Wrong!", PgServer::unique_name("pw"));
    let pg_user = PgServer::unique_name("alice");
    h.pg.create_scram_user(&pg_user, &password).await.unwrap();
    h.credentials.set("alice", &pg_user, &password);
    let md5_password = format!("{}-Md5!", PgServer::unique_name("pw"));
    let md5_user = PgServer::unique_name("md5");
    h.pg.create_md5_user(&md5_user, &md5_password)
        .await
        .unwrap();
    h.credentials.set("bob", &md5_user, &md5_password);

    let mut client_errors = Vec::new();

    // A normal session: queries, COPY both ways, a query error, a cancel.
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    client
        .batch_execute("create temp table t (v text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy t from stdin").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"row\n"))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    let out = client.copy_out("copy t to stdout").await.unwrap();
    futures::pin_mut!(out);
    while out.next().await.is_some() {}
    client_errors.push(
        client
            .query("select 1/0", &[])
            .await
            .unwrap_err()
            .to_string(),
    );
    let token = client.cancel_token();
    let tls = h.tls_connector(None);
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tls).await
    });
    client_errors.push(
        client
            .query("select pg_sleep(10)", &[])
            .await
            .unwrap_err()
            .to_string(),
    );
    canceller.await.unwrap().unwrap();
    drop(client);

    // md5 upstream login.
    h.connect(Some(&h.clients.bob), "bob", "analytics")
        .await
        .map(drop)
        .unwrap_or_else(|e| client_errors.push(e.to_string()));

    // A stale cached password, evicted and retried; then two wrong ones.
    h.credentials.serve_stale_once("alice", &stale);
    h.connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    h.credentials.serve_stale_once("alice", &wrong);
    h.credentials.serve_stale_once("alice", &stale);
    client_errors.push(
        h.connect(Some(&h.clients.alice), "alice", "postgres")
            .await
            .unwrap_err()
            .to_string(),
    );
    // Credential service failures and certificate refusals.
    h.credentials.inject(
        "alice",
        CredentialFault::Fail(CredentialError::Unavailable("throttled".into())),
    );
    client_errors.push(
        h.connect(Some(&h.clients.alice), "alice", "postgres")
            .await
            .unwrap_err()
            .to_string(),
    );
    client_errors.push(
        h.connect(Some(&h.clients.expired), "alice", "postgres")
            .await
            .unwrap_err()
            .to_string(),
    );
    // Let the sessions' closing log lines arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("session opened") && logs.contains("DEBUG"),
        "debug logging was captured"
    );
    let mut haystack = logs.clone();
    for e in &client_errors {
        haystack.push('\n');
        haystack.push_str(e);
    }
    for secret in [&password, &stale, &wrong, &md5_password] {
        if let Some(line) = haystack.lines().find(|l| l.contains(secret.as_str())) {
            // Show where, with the secret itself masked.
            panic!(
                "a password leaked: {}",
                line.replace(secret.as_str(), "<PASSWORD>")
            );
        }
        // Not even the distinctive part (passwords may be logged truncated).
        assert!(
            !haystack.contains(&secret[..secret.len() - 4]),
            "a password prefix leaked"
        );
    }
    let key_files = [
        h.server_cert.key_pem.as_path(),
        h.clients.alice.key_pem.as_path(),
        h.clients.bob.key_pem.as_path(),
        h.pki.root().key_pem.as_path(),
    ];
    for key in key_files {
        for line in pem_body_lines(key) {
            assert!(
                !haystack.contains(&line),
                "bytes of {} appear in logs or errors",
                key.display()
            );
        }
    }
}

/// `[security] strict_key_permissions`: a key that becomes readable by others is refused
/// on reload, by file and mode, and the proxy keeps serving with what it loaded before.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn strict_key_permissions_refuse_a_readable_key_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let h = ProxyHarness::start_with(HarnessOptions {
        extra_config: "[security]\nstrict_key_permissions = true\n".into(),
        ..HarnessOptions::default()
    })
    .await;
    h.provision("alice").await;
    let key = h.server_cert.key_pem.as_path();
    let chmod = |mode| std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode));

    chmod(0o640).unwrap();
    let err = h.running.reload().await.unwrap_err().to_string();
    for part in [
        "listener[0].tls_key",
        &key.display().to_string(),
        "mode 0640",
        "strict_key_permissions",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    for line in pem_body_lines(key) {
        assert!(!err.contains(&line), "key material in: {err}");
    }
    h.connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .expect("the running configuration still serves");

    chmod(0o600).unwrap();
    h.running.reload().await.expect("an owner-only key reloads");
    h.connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
}
