//! Client matrix: psqlODBC (Debian `odbc-postgresql` + `unixodbc`) driven through pyodbc,
//! through the proxy with a client certificate passed as libpq options (`pqopt`).

use crate::common::{client_args, expected_big, run_report};
use proxy_testkit::programs::{client_source, isolate_libpq_env, python, require_file};
use proxy_testkit::world::World;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `$PSQLODBC_DRIVER`, else the Unicode psqlODBC driver where Debian installs it.
fn psqlodbc_driver() -> PathBuf {
    if let Some(path) = std::env::var_os("PSQLODBC_DRIVER") {
        return require_file(Path::new(&path), "the psqlODBC driver");
    }
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so",
        "/usr/lib/aarch64-linux-gnu/odbc/psqlodbcw.so",
        "/usr/lib64/psqlodbcw.so",
    ];
    let found = candidates.iter().map(Path::new).find(|p| p.is_file());
    require_file(
        found.unwrap_or(Path::new(candidates[0])),
        "the psqlODBC driver",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn psqlodbc_runs_the_client_matrix_through_the_proxy() {
    let driver = psqlodbc_driver();
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = &world.client("alice");
    let db_user = world.iam_user(alice);
    let big = expected_big(world.pg).await;

    // A DSN for the second login, in a private odbc.ini (`$ODBCINI` is unixODBC's user
    // DSN file): the form docs/clients.md shows.
    let odbc_dir = tempfile::tempdir().unwrap();
    let odbc_ini = odbc_dir.path().join("odbc.ini");
    std::fs::write(
        &odbc_ini,
        format!(
            "[redshift-proxy]\n\
             Driver = {driver}\n\
             Servername = localhost\n\
             Port = {port}\n\
             Database = dev\n\
             Username = {user}\n\
             SSLmode = verify-full\n\
             pqopt = hostaddr=127.0.0.1 sslrootcert={ca} sslcert={cert} sslkey={key}\n\
             CommLog = 0\n",
            driver = driver.display(),
            port = h.addr().port(),
            user = alice.common_name,
            ca = h.ca.display(),
            cert = alice.chain_pem.display(),
            key = alice.key_pem.display(),
        ),
    )
    .unwrap();

    let mut command = tokio::process::Command::new(python());
    command
        .arg(client_source("python/odbc_matrix.py"))
        .arg(format!("driver={}", driver.display()))
        .args(client_args(
            &h,
            alice,
            &alice.key_pem,
            &alice.common_name,
            "matrix-odbc",
        ))
        .arg("dsn=redshift-proxy")
        .env("ODBCINI", &odbc_ini)
        // No system odbcinst.ini: Debian's turns on psqlODBC's CommLog, which would leave a
        // log file in /tmp for every run.
        .env("ODBCSYSINI", odbc_dir.path());
    isolate_libpq_env(&mut command);
    let report = run_report(command, Duration::from_secs(60), "psqlODBC").await;

    report.assert_common(&db_user, &big, "matrix-odbc");
    assert_eq!(report.error_sqlstate.as_deref(), Some("22012"));
    let cancel = report.cancel.as_ref().expect("ODBC offers SQLCancel");
    assert_eq!(cancel.sqlstate.as_deref(), Some("57014"), "{cancel:?}");
    assert_eq!(report.dsn_current_user.as_deref(), Some(db_user.as_str()));
}
