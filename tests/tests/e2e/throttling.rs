//! What brute force and AWS-hungry logins cost (issue 11): password listeners throttle
//! failures per user and address; AWS calls are budgeted per identity and back off after
//! failures, also when the upstream refuses a fresh credential.

use proxy_testkit::client::client_tls;
use proxy_testkit::config::{Listener, Rule};
use proxy_testkit::emulator::{allow_all_redshift_policy, Api};
use proxy_testkit::world::{World, WorldOptions};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

/// A password login over TLS (no client certificate) to `port`.
async fn password_login(
    world: &World,
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr([127, 0, 0, 1].into())
        .port(port)
        .user(user)
        .password(password)
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(world.pki.ca_cert_path(), None));
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_guessing_slows_down_then_locks_the_user() {
    let world = World::start().await;
    let verifier = proxy_auth::password::scram::hash_password(PASSWORD, 4096).to_text();
    let config = world
        .config()
        .listener(
            Listener::new("legacy", "127.0.0.1:0")
                .client_auth("password")
                .target("cluster")
                .tls(&world.server.chain_pem, &world.server.key_pem)
                .user("etl", &verifier),
        )
        .rule(
            Rule::new("etl")
                .matching("local_user", "etl")
                .matching("auth", proxy_testkit::config::strings(["password"]))
                .targets(["cluster"])
                .users(["etl"])
                .default_user("etl"),
        )
        .set("security", "password_failure_delay", "100ms")
        .set("security", "password_failure_delay_max", "400ms")
        .set("security", "password_lockout_after", 4)
        .set("security", "password_lockout", "1h");
    let proxy = world.proxy(config).await;
    let port = proxy.listener("legacy").port();

    let mut waits = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let err = password_login(&world, port, "etl", "wrong")
            .await
            .unwrap_err();
        waits.push(started.elapsed());
        assert_eq!(code(&err), "28P01", "{err}");
        assert_eq!(
            err.as_db_error().unwrap().message(),
            "password authentication failed for user \"etl\""
        );
    }
    // 100, 200, 400, 400 ms before each refusal (plus the exchange itself).
    for (wait, least) in waits.iter().zip([100, 200, 400, 400]) {
        assert!(*wait >= Duration::from_millis(least), "{waits:?}");
    }
    // Locked now: even the right password gets exactly a wrong password's answer.
    let err = password_login(&world, port, "etl", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "28P01");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "password authentication failed for user \"etl\""
    );
    let records = proxy.audit(5).await;
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["refusal"]["reason"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "password_authentication",
            "password_authentication",
            "password_authentication",
            "password_authentication",
            "password_locked"
        ]
    );
    let metrics = proxy.running.shared().metrics.encode();
    assert!(
        metrics.contains("redshift_iam_proxy_password_lockouts_total{listener=\"legacy\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("redshift_iam_proxy_password_failures_total{listener=\"legacy\"} 5"));
}

/// An unknown user's challenge looks exactly like a known user's (salt and iterations of
/// the same shape, the same refusal), so guessing names learns nothing.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_known_users_fail_alike() {
    let world = World::start().await;
    let verifier = proxy_auth::password::scram::hash_password(PASSWORD, 4096).to_text();
    let proxy = world
        .proxy(
            world.config().listener(
                Listener::new("legacy", "127.0.0.1:0")
                    .client_auth("password")
                    .target("cluster")
                    .tls(&world.server.chain_pem, &world.server.key_pem)
                    .user("etl", &verifier),
            ),
        )
        .await;
    let port = proxy.listener("legacy").port();
    let known = password_login(&world, port, "etl", "wrong")
        .await
        .unwrap_err();
    let unknown = password_login(&world, port, "nobody", "wrong")
        .await
        .unwrap_err();
    assert_eq!(code(&known), code(&unknown));
    assert_eq!(
        known.as_db_error().unwrap().message().replace("etl", "X"),
        unknown
            .as_db_error()
            .unwrap()
            .message()
            .replace("nobody", "X")
    );
}

/// Each identity has a budget of AWS credential calls: distinct grants beyond it are
/// refused (53400) without calling AWS, while cached grants and other identities go on.
#[tokio::test(flavor = "multi_thread")]
async fn aws_calls_are_budgeted_per_identity() {
    let world = World::start_with(WorldOptions {
        policy: allow_all_redshift_policy(),
        ..WorldOptions::default()
    })
    .await;
    let users: Vec<String> = (0..5)
        .map(|i| format!("u{i}_{}", world.tag.replace('-', "_")))
        .collect();
    let rule = Rule::new("many")
        .matching("cn", "*")
        .targets(["cluster"])
        .users(users.iter().map(String::as_str).chain(["{cn}"]));
    let proxy = world
        .proxy(world.config().without_rules().rule(rule).set(
            "db_credentials",
            "fetches_per_identity_per_minute",
            3,
        ))
        .await;
    let mallory = world.client("mallory");
    for user in &users[..3] {
        proxy.connect(Some(&mallory), user, "dev").await.unwrap();
    }
    let err = proxy
        .connect(Some(&mallory), &users[3], "dev")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "53400", "{err}");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "too many credential requests for this client identity; try again later"
    );
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 3);
    // Cached grants cost nothing; another identity has its own budget.
    proxy
        .connect(Some(&mallory), &users[0], "dev")
        .await
        .unwrap();
    let alice = world.client("alice");
    proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap();
    let records = proxy.audit(6).await;
    assert!(records
        .iter()
        .any(|r| r["refusal"]["reason"] == "credential_budget"
            && r["refusal"]["sqlstate"] == "53400"));
}

/// A login AWS allows but Redshift refuses (AutoCreate off, the user does not exist) cost
/// one AWS call per attempt; now the refusal of a fresh credential backs the request off.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_that_would_repeat_does_not_cost_an_aws_call_per_attempt() {
    let world = World::start().await;
    let proxy = world
        .proxy(
            world
                .config()
                .edit_target("cluster", |t| t.set("auto_create", false)),
        )
        .await;
    let ghost = world.client("ghost");
    for _ in 0..10 {
        let err = proxy
            .connect(Some(&ghost), &ghost.common_name, "dev")
            .await
            .unwrap_err();
        assert_eq!(code(&err), "28000", "{err}");
    }
    // The first attempt: a cached-then-fresh pair of calls; the other nine backed off.
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 2);
}
