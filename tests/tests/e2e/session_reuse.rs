//! Session reuse (issue 15, `session_reuse = true`): the logged-in upstream session of a
//! client that left cleanly goes to the next client of the same identity and grant, reset,
//! through the real chain (the Redshift stand-in relays each session to its own PostgreSQL
//! backend, so `pg_backend_pid()` names the upstream session).

use crate::upstream_pools::{metric, until};
use proxy_testkit::config::{strings, ProxyConfig, Rule};
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{TestProxy, World};
use std::time::Duration;

const KEPT: &str = "redshift_iam_proxy_sessions_kept{target=\"cluster\"}";
const HITS: &str = "redshift_iam_proxy_session_reuse_hits_total{target=\"cluster\"}";

fn closes(reason: &str) -> String {
    format!(
        "redshift_iam_proxy_session_reuse_closes_total{{target=\"cluster\",reason=\"{reason}\"}}"
    )
}

/// The world's configuration with session reuse on target `cluster`, and every
/// certificate logging in as the one database user `shared_user`: only the certificate
/// tells two clients apart.
fn reusing(world: &World) -> ProxyConfig {
    world
        .config()
        .edit_target("cluster", |t| t.set("session_reuse", true))
        .without_rules()
        .rule(
            Rule::new("shared")
                .matching("cn", "*")
                .targets(["cluster"])
                .users(["shared_user"])
                .default_user("shared_user")
                .databases(["dev"]),
        )
}

/// A session through the proxy as `cert` (user `shared_user`, database `dev`), with
/// `application_name` when given.
async fn connect(
    proxy: &TestProxy,
    cert: &ClientCert,
    application_name: Option<&str>,
) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(proxy.addr().port())
        .user("shared_user")
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    if let Some(name) = application_name {
        config.application_name(name);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::client::client_tls(
        &proxy.ca,
        Some(cert),
    ));
    let (client, connection) = config.connect(tls).await.expect("login through the proxy");
    tokio::spawn(connection);
    client
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("show {setting}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Uses a session as `cert`, changes a setting and leaves a statement prepared by name,
/// leaves cleanly and waits until the proxy keeps the session; its backend pid.
async fn leave_a_session(proxy: &TestProxy, cert: &ClientCert) -> i32 {
    let client = connect(proxy, cert, None).await;
    let pid = backend_pid(&client).await;
    client
        .batch_execute("set search_path = 'somewhere_else'")
        .await
        .unwrap();
    // tokio-postgres prepares by name ("s<n>") and closes the statement when it is dropped:
    // kept past the client, it stays prepared upstream.
    let statement = client.prepare("select 1").await.unwrap();
    let kept_before = metric(proxy, KEPT);
    drop(client);
    until("the session kept", || metric(proxy, KEPT) > kept_before).await;
    drop(statement);
    pid
}

/// `select count(*) from pg_prepared_statements` as a simple query (which prepares
/// nothing itself).
async fn prepared_statements(client: &tokio_postgres::Client) -> String {
    let rows = client
        .simple_query("select count(*) from pg_prepared_statements")
        .await
        .unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("one row")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_client_of_the_same_identity_gets_the_session_reset() {
    let world = World::start().await;
    let proxy = world.proxy(reusing(&world)).await;
    let alice = world.client("alice");
    let default_path = {
        let client = connect(&proxy, &alice, Some("fresh")).await;
        show(&client, "search_path").await
    };
    let pid = leave_a_session(&proxy, &alice).await;

    let client = connect(&proxy, &alice, None).await;
    assert_eq!(backend_pid(&client).await, pid, "the kept session");
    assert_eq!(metric(&proxy, HITS), 1.0);
    assert_eq!(
        show(&client, "search_path").await,
        default_path,
        "RESET ALL ran"
    );
    assert_eq!(
        prepared_statements(&client).await,
        "0",
        "the last client's prepared statement was closed"
    );
    drop(client);

    let records = proxy.audit(3).await;
    let sessions: Vec<_> = records
        .iter()
        .filter(|r| r["outcome"] == "closed")
        .collect();
    let reused = sessions
        .iter()
        .find(|r| r["upstream_connection"] == "reused")
        .expect("a reused session in the audit");
    assert_eq!(reused["upstream_session_uses"], 2, "{reused}");
    assert!(
        sessions.iter().any(|r| r["upstream_kept"] == true),
        "a session that left its upstream: {sessions:?}"
    );
}

/// Another certificate (of another person, or another certificate of the same name), or
/// other startup parameters, never get a kept session, although every one of them logs in
/// as the same database user to the same database.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_session_never_goes_to_another_identity_or_other_parameters() {
    let world = World::start().await;
    let proxy = world.proxy(reusing(&world)).await;
    let alice = world.client("alice");
    let alice_again = world.client("alice");
    assert_ne!(alice.chain_pem, alice_again.chain_pem);
    let bob = world.client("bob");
    let pid = leave_a_session(&proxy, &alice).await;

    for (who, cert, app) in [
        ("bob", &bob, None),
        ("another certificate of alice", &alice_again, None),
        ("alice with other parameters", &alice, Some("other")),
    ] {
        let client = connect(&proxy, cert, app).await;
        assert_ne!(backend_pid(&client).await, pid, "{who} got alice's session");
        drop(client);
    }
    assert_eq!(metric(&proxy, HITS), 0.0);
    let client = connect(&proxy, &alice, None).await;
    assert_eq!(backend_pid(&client).await, pid, "alice still finds her own");
}

/// A reset that fails closes the session instead of handing it on: a failing statement
/// in `session_reset`, and a session that created a temporary table.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_reset_fails_is_closed_not_reused() {
    let world = World::start().await;
    let failing = reusing(&world).edit_target("cluster", |t| {
        t.set(
            "session_reset",
            strings(["RESET ALL", "SELECT pg_catalog.no_such_function()"]),
        )
    });
    let proxy = world.proxy(failing).await;
    let alice = world.client("alice");
    let client = connect(&proxy, &alice, None).await;
    let pid = backend_pid(&client).await;
    drop(client);
    until("the failed reset", || {
        metric(&proxy, &closes("reset_failed")) == 1.0
    })
    .await;
    let client = connect(&proxy, &alice, None).await;
    assert_ne!(backend_pid(&client).await, pid);
    assert_eq!(metric(&proxy, HITS), 0.0);
    drop(client);

    let world = World::start().await;
    let proxy = world.proxy(reusing(&world)).await;
    let alice = world.client("alice");
    let client = connect(&proxy, &alice, None).await;
    let pid = backend_pid(&client).await;
    client
        .batch_execute("create temporary table scratch (x int)")
        .await
        .unwrap();
    drop(client);
    until("the temporary table seen", || {
        metric(&proxy, &closes("temporary_tables")) == 1.0
    })
    .await;
    let client = connect(&proxy, &alice, None).await;
    assert_ne!(backend_pid(&client).await, pid);
}

/// A cancel from the client of a reused session reaches that session's backend.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_reaches_a_reused_session() {
    let world = World::start().await;
    let proxy = world.proxy(reusing(&world)).await;
    let alice = world.client("alice");
    let pid = leave_a_session(&proxy, &alice).await;
    let client = connect(&proxy, &alice, None).await;
    assert_eq!(backend_pid(&client).await, pid);
    let token = client.cancel_token();
    let started = std::time::Instant::now();
    let query = tokio::spawn(async move { client.batch_execute("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::client::client_tls(
        &proxy.ca,
        Some(&alice),
    ));
    token.cancel_query(tls).await.expect("cancel request sent");
    let err = query.await.unwrap().expect_err("the query was cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// A kept session waits `session_reuse_idle_timeout` for its next client, then is closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_session_is_closed_after_its_idle_timeout() {
    let world = World::start().await;
    let config =
        reusing(&world).edit_target("cluster", |t| t.set("session_reuse_idle_timeout", "1s"));
    let proxy = world.proxy(config).await;
    let alice = world.client("alice");
    let pid = leave_a_session(&proxy, &alice).await;
    until("the idle timeout", || {
        metric(&proxy, &closes("idle_timeout")) == 1.0
    })
    .await;
    assert_eq!(metric(&proxy, KEPT), 0.0);
    let client = connect(&proxy, &alice, None).await;
    assert_ne!(backend_pid(&client).await, pid);
}
