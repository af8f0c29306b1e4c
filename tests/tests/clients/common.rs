//! Shared by the client-matrix modules: the 10 MB result and its checksum as the server
//! computes it, the arguments the scripted clients take, and the JSON report the Python and
//! Java clients print. Locating the client programs is the test kit's
//! (`proxy_testkit::programs`).

use proxy_testkit::pg::PgServer;
use proxy_testkit::pki::ClientCert;
use proxy_testkit::programs::APT_INSTALL;
use proxy_testkit::world::TestProxy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Rows of the large result: 64 ASCII characters each, 10 MiB in all.
pub const BIG_ROWS: u64 = 163_840;
pub const BIG_ROW_BYTES: u64 = 64;

/// The large result, one text column, in a fixed order.
pub fn big_query() -> String {
    format!(
        "select md5(i::text) || md5((i + 1)::text) from generate_series(1, {BIG_ROWS}) as s(i) \
         order by i"
    )
}

/// Row count, total value bytes, and SHA-256 (hex) of the concatenated values.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Checksum {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The checksum of [`big_query`] computed by PostgreSQL itself, over the superuser's
/// Unix-socket connection (not through the proxy), as the oracle clients are compared with.
pub async fn expected_big(pg: &PgServer) -> Checksum {
    let admin = pg.admin().await.expect("superuser connection");
    let row = admin
        .query_one(
            &format!(
                "select count(*), sum(length(v))::bigint, \
                        encode(sha256(convert_to(string_agg(v, '' order by i), 'UTF8')), 'hex') \
                 from (select i, md5(i::text) || md5((i + 1)::text) as v \
                       from generate_series(1, {BIG_ROWS}) as s(i)) as big"
            ),
            &[],
        )
        .await
        .expect("server-side checksum");
    let expected = Checksum {
        rows: u64::try_from(row.get::<_, i64>(0)).expect("row count"),
        bytes: u64::try_from(row.get::<_, i64>(1)).expect("byte count"),
        sha256: row.get(2),
    };
    assert_eq!(expected.rows, BIG_ROWS);
    assert_eq!(expected.bytes, BIG_ROWS * BIG_ROW_BYTES);
    expected
}

/// What a scripted client (Python, Java) reports: one JSON object.
#[derive(Debug, Deserialize)]
pub struct ClientReport {
    pub client: String,
    pub version: String,
    pub current_user: String,
    /// `$1::int + $2::int` with 40 and 2, as an extended-protocol (bound) query.
    pub sum: i64,
    /// `$3::text` with `x&user=y`.
    pub echo: String,
    pub big: Checksum,
    /// Rows left in a table after `begin; insert; rollback`.
    pub rolled_back_count: i64,
    /// SQLSTATE of `select 1/0`.
    pub error_sqlstate: Option<String>,
    /// `select 1` on the same connection after the error.
    pub after_error: i64,
    pub cancel: Option<CancelReport>,
    /// `current_setting(name)` for session settings drivers send as startup parameters.
    pub settings: BTreeMap<String, String>,
    /// ODBC only: `current_user` of a second login through an odbc.ini DSN.
    #[serde(default)]
    pub dsn_current_user: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CancelReport {
    pub sqlstate: Option<String>,
    pub elapsed_ms: u64,
}

impl ClientReport {
    /// Asserts the steps every client runs the same way; the caller checks the SQLSTATEs
    /// (ODBC may map them) and driver-specific settings.
    pub fn assert_common(&self, db_user: &str, big: &Checksum, application_name: &str) {
        println!("client matrix: {} {}", self.client, self.version);
        assert_eq!(self.current_user, db_user, "{self:?}");
        assert_eq!((self.sum, self.echo.as_str()), (42, "x&user=y"), "{self:?}");
        assert_eq!(&self.big, big, "10 MiB result checksum");
        assert_eq!(self.rolled_back_count, 0, "rollback undid the insert");
        assert_eq!(self.after_error, 1, "the session carries on after an error");
        assert_eq!(
            self.settings.get("application_name").map(String::as_str),
            Some(application_name),
            "the client's application_name startup parameter reaches the server"
        );
        if let Some(cancel) = &self.cancel {
            assert!(
                cancel.elapsed_ms < 10_000,
                "the cancel ended pg_sleep(30) promptly: {cancel:?}"
            );
        }
    }
}

/// `key=value` arguments the scripted clients take: where the proxy is, who to log in as,
/// the TLS files (verify-full against the proxy's CA, `cert` as the client certificate),
/// and the large query.
pub fn client_args(
    h: &TestProxy,
    cert: &ClientCert,
    key: &Path,
    user: &str,
    application_name: &str,
) -> Vec<String> {
    vec![
        "host=localhost".into(),
        "hostaddr=127.0.0.1".into(),
        format!("port={}", h.addr().port()),
        format!("user={user}"),
        "dbname=dev".into(),
        format!("sslrootcert={}", h.ca.display()),
        format!("sslcert={}", cert.chain_pem.display()),
        format!("sslkey={}", key.display()),
        format!("application_name={application_name}"),
        format!("big_sql={}", big_query()),
    ]
}

/// Runs a client to completion (killed after `timeout`) and parses the JSON object on the
/// last line of its stdout. Exit status 3 means the client library is missing.
pub async fn run_report(
    mut command: tokio::process::Command,
    timeout: Duration,
    what: &str,
) -> ClientReport {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({command:?}): {e}"));
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!("{what}: client library missing ({stderr}); install with: {APT_INSTALL}");
    }
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let report: ClientReport = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{what} printed no report ({e}):\n{stdout}\n{stderr}"));
    println!("{what} ran in {:?}", started.elapsed());
    report
}
