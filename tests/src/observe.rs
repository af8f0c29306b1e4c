//! What a test observes of a running proxy besides its clients' view: the operator log
//! (one capturing subscriber per test process), audit records, metrics, the admin HTTP
//! listener, PostgreSQL's `pg_stat_activity`, and the process's sockets.
//!
//! Tests share one process (one binary per area), so everything here is filtered by what a
//! test owns: its unique names, its session ids, its ports. Nothing waits a fixed time:
//! helpers poll for the observable event, with a bound.

use crate::pg::PgServer;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- the operator log ----------------------------------------------------------------------

/// Everything logged in this test process at debug level (the level `[log] level =
/// "debug"` gives the proxy), by every proxy any test runs, as text lines with their
/// targets.
///
/// The first call installs the process's global `tracing` subscriber; [`crate::world::World`]
/// does so when it starts, so every proxy's log is captured from its first line. Tests
/// select their own lines (by session id, unique user or local name, ...) when asserting.
#[derive(Clone)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

/// The process's [`CapturedLogs`].
pub fn captured_logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs(Arc::new(Mutex::new(Vec::new())));
        let sink = logs.clone();
        // The test's own PostgreSQL clients (tokio-postgres logs statements such as the
        // kit's CREATE ROLE ... PASSWORD at debug) are not the proxy's: info for them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,tokio_postgres=info")
            .with_ansi(false)
            .with_writer(move || CaptureWriter(sink.0.clone()))
            .try_init();
        logs
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Module paths of the test kit's own servers (the AWS emulator, the Redshift stand-ins,
/// PostgreSQL helpers): their lines are not the proxy's log.
const KIT_TARGETS: &[&str] = &["proxy_testkit"];

impl CapturedLogs {
    /// Every captured line so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The captured lines of the proxy (and the AWS SDK and TLS libraries it runs), without
    /// the test kit's own servers.
    pub fn proxy_text(&self) -> String {
        self.text()
            .lines()
            .filter(|line| !is_kit_line(line))
            .flat_map(|line| [line, "\n"])
            .collect()
    }

    /// The lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits (up to 10 s) until a line contains every one of `needles`, and returns it.
    pub async fn wait_for_line(&self, needles: &[&str]) -> String {
        let found = eventually(Duration::from_secs(10), || async {
            self.text()
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
                .map(str::to_owned)
        })
        .await;
        found.unwrap_or_else(|| panic!("no log line with all of {needles:?}"))
    }
}

/// Whether a formatted line comes from the test kit: its target (after the level) is one of
/// [`KIT_TARGETS`].
fn is_kit_line(line: &str) -> bool {
    // `2024-01-02T03:04:05.678901Z DEBUG target::path: message` (spans may sit between).
    line.split_whitespace()
        .nth(2)
        .is_some_and(|field| KIT_TARGETS.iter().any(|t| field.starts_with(t)))
}

// ---- polling ---------------------------------------------------------------------------------

/// Polls `check` every 20 ms until it yields a value or `limit` has passed (then `None`).
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- audit -------------------------------------------------------------------------------------

/// The JSON records of an audit file, waiting (up to 10 s) until there are at least `n`.
pub async fn audit_records(file: &Path, n: usize) -> Vec<Value> {
    let read = || {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect::<Vec<Value>>()
    };
    eventually(Duration::from_secs(10), || async {
        let records = read();
        (records.len() >= n).then_some(records)
    })
    .await
    .unwrap_or_else(read)
}

// ---- metrics and the admin listener ---------------------------------------------------------

/// The value of the first metric sample line of `metrics` that starts with `prefix` (name
/// and labels, e.g. `foo_total{listener="main"}`).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A minimal HTTP/1.0 request to the admin listener: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[]).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the admin listener");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    s.write_all(
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// Backends of PostgreSQL role `role` (e.g. a stand-in session's role).
pub async fn backends(pg: &PgServer, role: &str) -> i64 {
    let admin = pg.admin().await.expect("PostgreSQL admin session");
    admin
        .query_one(
            "select count(*) from pg_stat_activity where usename = $1",
            &[&role],
        )
        .await
        .expect("count backends")
        .get(0)
}

/// Waits (up to 10 s) until PostgreSQL has exactly `n` backends of `role`.
pub async fn wait_for_backends(pg: &PgServer, role: &str, n: i64) {
    let reached = eventually(Duration::from_secs(10), || async {
        (backends(pg, role).await == n).then_some(())
    })
    .await;
    if reached.is_none() {
        let last = backends(pg, role).await;
        panic!("{last} backends of {role} remain, expected {n}");
    }
}

/// Waits (up to 10 s) until a backend of `role` is running a query that contains `text`,
/// and returns its pid: the moment a cancel or a kill has something to hit.
pub async fn wait_for_query(pg: &PgServer, role: &str, text: &str) -> i32 {
    let admin = pg.admin().await.expect("PostgreSQL admin session");
    let pattern = format!("%{}%", text.replace('%', "\\%").replace('_', "\\_"));
    let found = eventually(Duration::from_secs(10), || async {
        admin
            .query_opt(
                "select pid from pg_stat_activity where usename = $1 and state = 'active' \
                 and query like $2 limit 1",
                &[&role, &pattern],
            )
            .await
            .expect("query pg_stat_activity")
            .map(|row| row.get::<_, i32>(0))
    })
    .await;
    found.unwrap_or_else(|| panic!("{role} never ran a query containing {text:?}"))
}

// ---- sockets -------------------------------------------------------------------------------

/// Open TCP sockets of this process with a local or remote port in `ports` (listening
/// sockets excluded): what a proxy on those ports holds, whatever else runs in the process.
pub fn open_sockets_on(ports: &[u16]) -> usize {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (fields.get(1), fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            const LISTEN: &str = "0A";
            if *state == LISTEN || !inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if [port(local), port(remote)]
                .iter()
                .any(|p| p.is_some_and(|p| ports.contains(&p)))
            {
                count += 1;
            }
        }
    }
    count
}
