//! Client matrix: psycopg 3 (on libpq) through the proxy with a client certificate.

mod clients_common;

use clients_common::{
    client_args, client_source, expected_big, isolate_libpq_env, python, run_report,
};
use proxy_testkit::harness::ProxyHarness;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_runs_the_client_matrix_through_the_proxy() {
    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;
    let big = expected_big(h.pg).await;
    let alice = &h.clients.alice;

    let mut command = tokio::process::Command::new(python());
    command
        .arg(client_source("python/psycopg_matrix.py"))
        .args(client_args(
            &h,
            alice,
            &alice.key_pem,
            "alice",
            "matrix-psycopg",
        ));
    isolate_libpq_env(&mut command);
    let report = run_report(command, Duration::from_secs(60), "psycopg").await;

    report.assert_common(&pg_user, &big, "matrix-psycopg");
    assert_eq!(report.error_sqlstate.as_deref(), Some("22012"));
    let cancel = report
        .cancel
        .as_ref()
        .expect("psycopg offers conn.cancel()");
    assert_eq!(cancel.sqlstate.as_deref(), Some("57014"), "{cancel:?}");
}
