//! Client matrix: pgjdbc (Debian `libpostgresql-jdbc-java`) through the proxy with a client
//! certificate and a PKCS#8 DER key. `tests/clients/java/ClientMatrix.java` is compiled
//! with `javac` at test time and run once for every step (JVM start-up dominates).

mod clients_common;

use clients_common::{
    client_args, client_source, expected_big, require_file, require_program, run_report,
};
use proxy_testkit::harness::ProxyHarness;
use std::path::PathBuf;
use std::time::Duration;

/// `$PGJDBC_JAR`, else Debian's `libpostgresql-jdbc-java` jar.
fn pgjdbc_jar() -> PathBuf {
    let jar = std::env::var_os("PGJDBC_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/postgresql.jar"));
    require_file(&jar, "the pgjdbc jar")
}

#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc_runs_the_client_matrix_through_the_proxy() {
    let javac = require_program("javac");
    let java = require_program("java");
    let jar = pgjdbc_jar();

    let classes = tempfile::tempdir().unwrap();
    let compiled = tokio::process::Command::new(&javac)
        .arg("-d")
        .arg(classes.path())
        .arg("-cp")
        .arg(&jar)
        .arg(client_source("java/ClientMatrix.java"))
        .output()
        .await
        .expect("run javac");
    assert!(
        compiled.status.success(),
        "javac failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );

    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;
    let big = expected_big(h.pg).await;
    let alice = &h.clients.alice;

    let classpath = std::env::join_paths([classes.path(), jar.as_path()]).unwrap();
    let mut command = tokio::process::Command::new(java);
    command
        // The JVM's default time zone becomes the TimeZone startup parameter.
        .env("TZ", "UTC")
        .arg("-cp")
        .arg(classpath)
        .arg("ClientMatrix")
        .args(client_args(
            &h,
            alice,
            &alice.key_pk8_der,
            "alice",
            "matrix-pgjdbc",
        ));
    let report = run_report(command, Duration::from_secs(60), "pgjdbc").await;

    report.assert_common(&pg_user, &big, "matrix-pgjdbc");
    assert_eq!(report.error_sqlstate.as_deref(), Some("22012"));
    let cancel = report
        .cancel
        .as_ref()
        .expect("pgjdbc offers Statement.cancel()");
    assert_eq!(cancel.sqlstate.as_deref(), Some("57014"), "{cancel:?}");
    // pgjdbc's own startup parameters, forwarded by the allow-list.
    let s = &report.settings;
    assert!(s["DateStyle"].starts_with("ISO"), "{s:?}");
    assert_eq!(s["TimeZone"], "UTC", "{s:?}");
    assert_eq!(s["client_encoding"], "UTF8", "{s:?}");
}
