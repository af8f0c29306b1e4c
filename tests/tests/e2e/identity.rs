//! A certificate names only its own user (issue 11): every attack on identity, with what
//! the client sees, what is audited and what is counted.

use proxy_testkit::config::Rule;
use proxy_testkit::pki::ClientCertSpec;
use proxy_testkit::world::{current_user, error_response, World};
use serde_json::Value;

/// The `refused` counter of `reason` on the proxy's metrics.
fn refusals(p: &proxy_testkit::world::TestProxy, reason: &str) -> f64 {
    let text = p.running.shared().metrics.encode();
    let prefix = format!(
        "redshift_iam_proxy_connections_refused_total{{listener=\"main\",reason=\"{reason}\"}}"
    );
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn refusal(record: &Value) -> (&str, &str, &str) {
    let r = &record["refusal"];
    (
        r["reason"].as_str().unwrap_or_default(),
        r["sqlstate"].as_str().unwrap_or_default(),
        r["detail"].as_str().unwrap_or_default(),
    )
}

/// The attack of issue 11: a trusted certificate with two URI SANs, a foreign one first,
/// matched the `bi` rule by its second SAN while `{san_uri_path}` read the first, so
/// `user=postgres` logged in as `IAMA:postgres`. Real psql, certificates from the test kit.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_san_cannot_choose_another_database_user() {
    let world = World::start().await;
    let bi = Rule::new("bi")
        .matching("san_uri", "spiffe://corp.example/ns/bi/*")
        .targets(["cluster"])
        .users(["{san_uri_path}"])
        .databases(["dev"]);
    let proxy = world.proxy(world.config().without_rules().rule(bi)).await;
    let evil = world.client_with(
        ClientCertSpec::new("mallory")
            .uri("spiffe://evil.example/ns/x/postgres")
            .uri("spiffe://corp.example/ns/bi/sa/svc"),
    );
    for user in ["postgres", "svc"] {
        let out = proxy
            .psql(&evil)
            .user(user)
            .run("select current_user")
            .await
            .unwrap();
        assert!(!out.success(), "{user}: {out:?}");
        assert!(
            out.stderr
                .contains("this certificate is not permitted to connect to this target"),
            "{user}: {}",
            out.stderr
        );
    }
    let records = proxy.audit(2).await;
    for record in &records {
        let (reason, sqlstate, detail) = refusal(record);
        assert_eq!((reason, sqlstate), ("policy", "28000"), "{record}");
        assert!(detail.contains("certificate has 2 of them"), "{detail}");
        assert_eq!(record["client_certificate"]["verified"], true);
    }
    assert_eq!(refusals(&proxy, "policy"), 2.0);
    // The upstream never saw a login.
    assert!(world
        .emulator
        .standin(proxy_testkit::stack::CLUSTER)
        .unwrap()
        .logins()
        .is_empty());

    // A certificate with only the corp SAN still works, as its own user.
    let svc =
        world.client_with(ClientCertSpec::new("svc").uri("spiffe://corp.example/ns/bi/sa/svc"));
    let client = proxy.connect(Some(&svc), "svc", "dev").await.unwrap();
    assert_eq!(current_user(&client).await, "IAMA:svc");
}

/// Reserved users are refused whatever the policy says: a single-SAN certificate for
/// `.../sa/rdsdb` was granted `IAMA:rdsdb`.
#[tokio::test(flavor = "multi_thread")]
async fn reserved_database_users_are_never_granted() {
    let world = World::start().await;
    let bi = Rule::new("bi")
        .matching("san_uri", "spiffe://corp.example/ns/bi/sa/{name}")
        .targets(["cluster"])
        .users(["{name}"])
        .databases(["dev"]);
    let proxy = world.proxy(world.config().without_rules().rule(bi)).await;
    for name in ["rdsdb", "pg_monitor", "padb_fsck", "awsuser", "AWSUSER"] {
        let cert = world.client_with(
            ClientCertSpec::new("svc").uri(format!("spiffe://corp.example/ns/bi/sa/{name}")),
        );
        let err = proxy.connect(Some(&cert), name, "dev").await.unwrap_err();
        let message = format!("database user {name:?} is not permitted for this certificate");
        assert_eq!(error_response(&err), ("28000", message.as_str()), "{name}");
    }
    let records = proxy.audit(5).await;
    assert!(records
        .iter()
        .all(|r| refusal(r).2.starts_with("reserved_user")));
    assert_eq!(
        world
            .emulator
            .calls(proxy_testkit::emulator::Api::GetClusterCredentials),
        0
    );
}

/// `Alice` and `alice` are one database user to Redshift (unquoted names fold to lower
/// case), so the proxy grants and asks AWS for the folded name.
#[tokio::test(flavor = "multi_thread")]
async fn user_names_are_folded_as_redshift_folds_them() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("Alice");
    let upper = alice.common_name.to_uppercase();
    let client = proxy.connect(Some(&alice), &upper, "dev").await.unwrap();
    assert_eq!(
        current_user(&client).await,
        format!("IAMA:{}", alice.common_name.to_lowercase())
    );
}

/// `{email_local}` drops the domain: only a rule whose match pins the domain may use it,
/// so `alice@partner.example` never becomes corp's `alice`.
#[tokio::test(flavor = "multi_thread")]
async fn email_local_is_only_valid_where_the_domain_is_pinned() {
    let world = World::start().await;
    let loose = Rule::new("people")
        .matching("san_email", "*@*")
        .users(["{email_local}"]);
    let err = world
        .try_proxy(world.config().without_rules().rule(loose))
        .await
        .err()
        .expect("refused at load");
    assert!(err.contains("must pin it"), "{err}");

    let pinned = Rule::new("people")
        .matching("san_email", "*@corp.example")
        .targets(["cluster"])
        .users(["{email_local}"])
        .databases(["dev"]);
    let proxy = world
        .proxy(world.config().without_rules().rule(pinned))
        .await;
    let local = format!("carol{}", world.tag.replace('-', ""));
    let partner =
        world.client_with(ClientCertSpec::new("carol").email(format!("{local}@partner.example")));
    let err = proxy
        .connect(Some(&partner), &local, "dev")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000");
    let corp =
        world.client_with(ClientCertSpec::new("carol").email(format!("{local}@corp.example")));
    let client = proxy.connect(Some(&corp), &local, "dev").await.unwrap();
    assert_eq!(current_user(&client).await, format!("IAMA:{local}"));
}
