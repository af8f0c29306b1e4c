//! Client matrix: psycopg 3 (on libpq) through the proxy with a client certificate.

use crate::common::{client_args, expected_big, run_report};
use proxy_testkit::programs::{client_source, isolate_libpq_env, python};
use proxy_testkit::world::World;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_runs_the_client_matrix_through_the_proxy() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = &world.client("alice");
    let db_user = world.iam_user(alice);
    let big = expected_big(world.pg).await;

    let mut command = tokio::process::Command::new(python());
    command
        .arg(client_source("python/psycopg_matrix.py"))
        .args(client_args(
            &h,
            alice,
            &alice.key_pem,
            &alice.common_name,
            "matrix-psycopg",
        ));
    isolate_libpq_env(&mut command);
    let report = run_report(command, Duration::from_secs(60), "psycopg").await;

    report.assert_common(&db_user, &big, "matrix-psycopg");
    assert_eq!(report.error_sqlstate.as_deref(), Some("22012"));
    let cancel = report
        .cancel
        .as_ref()
        .expect("psycopg offers conn.cancel()");
    assert_eq!(cancel.sqlstate.as_deref(), Some("57014"), "{cancel:?}");
}
