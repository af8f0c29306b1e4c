//! Client matrix: pgjdbc (Debian `libpostgresql-jdbc-java`) through the proxy with a client
//! certificate and a PKCS#8 DER key. `tests/clients/java/ClientMatrix.java` is compiled
//! with `javac` at test time and run once for every step (JVM start-up dominates).

use crate::common::{client_args, expected_big, run_report};
use proxy_testkit::programs::{javac, pgjdbc_jar, require_program};
use proxy_testkit::world::World;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc_runs_the_client_matrix_through_the_proxy() {
    let java = require_program("java");
    let jar = pgjdbc_jar();
    let classes = javac("java/ClientMatrix.java", &[&jar]).await;

    let world = World::start().await;
    // A JVM's handshake can take seconds on a busy machine: not what this test is about.
    let h = world
        .proxy(
            world
                .config()
                .set("limits", "handshake_timeout", "30s")
                .edit_listener("main", |l| l.set("login_timeout", "30s")),
        )
        .await;
    let alice = &world.client("alice");
    let db_user = world.iam_user(alice);
    let big = expected_big(world.pg).await;

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
            &alice.common_name,
            "matrix-pgjdbc",
        ));
    let report = run_report(command, Duration::from_secs(60), "pgjdbc").await;

    report.assert_common(&db_user, &big, "matrix-pgjdbc");
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
