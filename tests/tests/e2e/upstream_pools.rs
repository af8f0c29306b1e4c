//! What the proxy keeps upstream between logins (issue 15): warm connections (TCP and
//! verify-full TLS to the Redshift stand-in done ahead), through the real chain.

use proxy_testkit::stack::CLUSTER;
use proxy_testkit::world::{current_user, TestProxy, World};
use std::time::{Duration, Instant};

/// The value of the metric sample `series` (name with labels), 0 when absent.
pub(crate) fn metric(p: &TestProxy, series: &str) -> f64 {
    let text = p.running.shared().metrics.encode();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub(crate) async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const READY: &str = "redshift_iam_proxy_warm_connections_ready{target=\"cluster\"}";
const HITS: &str = "redshift_iam_proxy_warm_connection_hits_total{target=\"cluster\"}";

/// With the default configuration each target keeps two connections ready; a login runs
/// on one of them, and the audit record and the metrics say so.
#[tokio::test(flavor = "multi_thread")]
async fn logins_run_on_warm_connections_by_default() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    until("two warm connections", || metric(&proxy, READY) == 2.0).await;
    let alice = world.client("alice");
    let client = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap();
    assert_eq!(
        current_user(&client).await,
        format!("IAMA:{}", alice.common_name)
    );
    drop(client);
    assert_eq!(metric(&proxy, HITS), 1.0);
    let records = proxy.audit(1).await;
    let session = records
        .iter()
        .find(|r| r["outcome"] == "closed")
        .expect("the session's record");
    assert_eq!(session["upstream_connection"], "warm", "{session}");
    until("refilled", || metric(&proxy, READY) == 2.0).await;
}

/// The stand-in closes connections that have not logged in within 1 s (PostgreSQL's
/// `authentication_timeout`, shortened), while the proxy would keep them 30 s: every warm
/// connection dies before it is used. Each is discarded as the server closes it, and
/// logins still succeed.
#[tokio::test(flavor = "multi_thread")]
async fn warm_connections_the_server_closed_are_discarded_and_logins_succeed() {
    let world = World::start().await;
    let standin = world.emulator.standin(CLUSTER).expect("cluster stand-in");
    standin.set_authentication_timeout(Duration::from_secs(1));
    let proxy = world.proxy(world.config()).await;
    let closed =
        "redshift_iam_proxy_warm_connection_discards_total{target=\"cluster\",reason=\"closed\"}";
    until("warm connections closed by the server", || {
        metric(&proxy, closed) >= 2.0
    })
    .await;
    let alice = world.client("alice");
    for _ in 0..3 {
        let client = proxy
            .connect(Some(&alice), &alice.common_name, "dev")
            .await
            .expect("the login succeeds on a live warm connection or a new one");
        client.simple_query("select 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let failed = metric(
        &proxy,
        "redshift_iam_proxy_warm_connection_discards_total{target=\"cluster\",reason=\"failed_login\"}",
    );
    let logins = "redshift_iam_proxy_logins_total{target=\"cluster\",outcome=\"success\"}";
    assert_eq!(
        metric(&proxy, logins),
        3.0,
        "failed_login discards: {failed}"
    );
}
