//! The whole credential chain end to end: a client certificate → the proxy → IAM Roles
//! Anywhere (CreateSession, signed with the proxy's certificate) → Redshift
//! GetClusterCredentials / GetClusterCredentialsWithIAM / serverless GetCredentials (SigV4
//! with the issued session, authorized by the README's IAM policy) → a temporary password →
//! a verify-full login as that temporary user at the Redshift stand-in, which checks it the
//! way Redshift does and runs the session as that user in PostgreSQL. The emulator checks
//! every signature for real. The real binary where the process matters (its log, its
//! command line), the in-process proxy otherwise.

use proxy_testkit::adversary::{raw_login_outcome, startup};
use proxy_testkit::config::{path, ProxyConfig, Rule};
use proxy_testkit::emulator::{Api, Faults};
use proxy_testkit::observe::{eventually, wait_for_query};
use proxy_testkit::pg::quote_ident;
use proxy_testkit::pki::{ClientCert, ClientCertSpec, TestPki};
use proxy_testkit::proxy::proxy_command;
use proxy_testkit::stack::{bi_role_arn, DATABASE};
use proxy_testkit::standin::JDBC_DRIVER_PARAMETERS;
use proxy_testkit::world::{current_user, sqlstate, TestProxy, World};
use std::time::{Duration, Instant};

/// alice (any CN of the world's CA) as herself in group `analysts`; bob, a BI service
/// with a SPIFFE ID, as the last segment of his path (or `iam`), with the BI role; both on
/// every target, database `dev`. Listeners `main` (cluster), `iam` (cluster-iam) and
/// `serverless`.
fn chain_config(world: &World) -> ProxyConfig {
    world
        .config()
        .listener(world.listener("iam", "cluster-iam"))
        .listener(world.listener("serverless", "serverless"))
        .without_rules()
        .rule(
            Rule::new("bi")
                .matching("san_uri", "spiffe://corp.example/ns/bi/*")
                .users(["{san_uri_path}"])
                .default_user("{san_uri_path}")
                .databases([DATABASE])
                .set("role_arn", bi_role_arn()),
        )
        .rule(
            Rule::new("analysts")
                .matching("cn", "*")
                .users(["{cn}"])
                .default_user("{cn}")
                .databases([DATABASE])
                .groups(["analysts"]),
        )
}

/// bob: a certificate with a SPIFFE ID whose last segment is unique to the world.
fn bob(world: &World) -> (ClientCert, String) {
    let name = world.name("bob");
    let cert = world.client_with(
        ClientCertSpec::new("bob").uri(format!("spiffe://corp.example/ns/bi/sa/{name}")),
    );
    (cert, name)
}

/// Connects until it works: after a failure the proxy backs off its credential calls
/// (1 s, then doubling) and answers with that failure until the backoff has passed.
async fn connect_after_backoff(h: &TestProxy, cert: &ClientCert) -> tokio_postgres::Client {
    eventually(Duration::from_secs(10), || async {
        h.login(cert).await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("{} still refused after the backoff", cert.common_name))
}

/// The binary: the first login runs as the auto-created `IAMA:<cn>` in the rule's group,
/// and a second is served from both caches (the AWS session and the database credential).
#[tokio::test(flavor = "multi_thread")]
async fn provisioned_login_runs_as_the_auto_created_iam_user_in_its_groups() {
    let world = World::start().await;
    let proxy = world.proxy_process(&chain_config(&world)).await;
    let alice = world.client("alice");
    let psql = || {
        proxy
            .psql_to(proxy.listener("main"), &alice)
            .user(&alice.common_name)
    };
    let out = psql().run("select current_user").await.unwrap();
    assert!(out.success(), "{out:?}\n{}", proxy.process.logs());
    assert_eq!(out.value(), world.iam_user(&alice));
    let out = psql()
        .run("select pg_has_role(current_user, 'analysts', 'member')")
        .await
        .unwrap();
    assert_eq!(out.value(), "t", "{out:?}");
    assert_eq!(world.emulator.calls(Api::CreateSession), 1);
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 1);

    // A second login is served from both caches.
    let out = psql().user("iam").run("select current_user").await.unwrap();
    assert_eq!(out.value(), world.iam_user(&alice), "{out:?}");
    assert_eq!(world.emulator.calls(Api::CreateSession), 1);
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_create_only_existing_users_can_log_in() {
    let world = World::start().await;
    let config = world
        .config()
        .edit_target("cluster", |t| t.set("auto_create", false));
    let h = world.proxy(config).await;
    let carol = world.client("carol");
    let db_user = carol.common_name.clone();
    // GetClusterCredentials succeeds, but the user does not exist: the login fails.
    // Redshift refuses it as a wrong password, with 28000 (python-driver#237); the proxy
    // relays the upstream's SQLSTATE.
    let err = h.login(&carol).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert_eq!(
        err.as_db_error().map(|e| e.message().to_owned()),
        Some(format!(
            "password authentication failed for user \"IAM:{db_user}\""
        ))
    );

    // Once the user exists, the same login works as IAM:<user>.
    let admin = world.pg.admin().await.unwrap();
    admin
        .batch_execute(&format!(
            "create role {} login",
            quote_ident(&format!("IAM:{db_user}"))
        ))
        .await
        .unwrap();
    // The refused fresh credential put the request in backoff; then it works.
    let client = connect_after_backoff(&h, &carol).await;
    assert_eq!(current_user(&client).await, format!("IAM:{db_user}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_iam_and_serverless_log_in_as_the_role_of_each_rule() {
    let world = World::start().await;
    let h = world.proxy(chain_config(&world)).await;
    let alice = world.client("alice");
    let (bob, bob_user) = bob(&world);
    let user_on = |listener: &'static str, cert: &ClientCert, user: String| {
        let (h, cert) = (&h, cert.clone());
        async move {
            let client = h
                .connect_to(h.listener(listener), Some(&cert), &user, DATABASE)
                .await
                .unwrap_or_else(|e| panic!("{user} on {listener}: {e}"));
            current_user(&client).await
        }
    };
    let cn = alice.common_name.clone();
    assert_eq!(
        user_on("iam", &alice, cn.clone()).await,
        "IAMR:RedshiftAccess"
    );
    // bob's rule names its own role: a second Roles Anywhere session.
    assert_eq!(
        user_on("iam", &bob, bob_user.clone()).await,
        "IAMR:RedshiftBiReader"
    );
    assert_eq!(
        user_on("serverless", &alice, cn).await,
        "IAMR:RedshiftAccess"
    );
    assert_eq!(
        user_on("serverless", &bob, "iam".into()).await,
        "IAMR:RedshiftBiReader"
    );
    assert_eq!(
        world.emulator.calls(Api::CreateSession),
        2,
        "one session per role"
    );
    assert!(world.emulator.calls(Api::GetClusterCredentialsWithIam) >= 2);
    assert!(world.emulator.calls(Api::GetCredentials) >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_logins_of_ten_identities_make_one_session_and_ten_credential_calls() {
    let _heavy = proxy_testkit::world::heavy().await;
    let world = World::start().await;
    let h = std::sync::Arc::new(world.proxy(world.config()).await);
    let certs: std::sync::Arc<Vec<ClientCert>> = std::sync::Arc::new(
        (0..10)
            .map(|i| world.client(&format!("alice{i}")))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200usize {
        let (h, certs) = (h.clone(), certs.clone());
        tasks.spawn(async move {
            let cert = &certs[n % 10];
            let client = h
                .connect(Some(cert), "iam", DATABASE)
                .await
                .map_err(|e| format!("login {n}: {e}"))?;
            let who = current_user(&client).await;
            if who != format!("IAMA:{}", cert.common_name) {
                return Err(format!("login {n} ran as {who}"));
            }
            Ok::<_, String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(world.emulator.calls(Api::CreateSession), 1);
    let credential_calls = world.emulator.calls(Api::GetClusterCredentials);
    assert!(
        (1..=10).contains(&credential_calls),
        "{credential_calls} credential calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_latency_and_throttling_do_not_delay_cached_logins() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    h.login(&alice).await.unwrap();
    let calls_before = world.emulator.calls(Api::GetClusterCredentials);

    world.emulator.faults().set_latency(Duration::from_secs(3));
    world.emulator.faults().throttle_next(None, 1000);
    for _ in 0..5 {
        let started = Instant::now();
        let client = h.login(&alice).await.unwrap();
        client.simple_query("select 1").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a cached login waited on AWS: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        world.emulator.calls(Api::GetClusterCredentials),
        calls_before
    );
    world.emulator.faults().clear();
}

/// A world whose GetClusterCredentials calls all meet `fault`, its proxy, `alice`, and
/// the error of alice's first login.
async fn first_login_under(
    fault: impl FnOnce(&Faults),
) -> (World, TestProxy, ClientCert, tokio_postgres::Error) {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    fault(world.emulator.faults());
    let err = h.login(&alice).await.unwrap_err();
    (world, h, alice, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_failures_reach_the_client_as_clean_errors() {
    // The credential API throttles every call (and the SDK's retries): the client is told
    // AWS is unavailable (08001), the proxy keeps serving.
    let (world, h, alice, err) =
        first_login_under(|f| f.throttle_next(Some(Api::GetClusterCredentials), 1000)).await;
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    world.emulator.faults().clear();
    // Within the backoff the failure stands in for a new call: AWS is not asked again.
    let calls = world.emulator.calls(Api::GetClusterCredentials);
    let err = h.login(&alice).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), calls);
    connect_after_backoff(&h, &alice).await;

    // A user name longer than Redshift's 64 characters is refused (28000) by the proxy's
    // own name check, before any AWS call.
    let hostile = world.client_with(ClientCertSpec::new(format!("alice-{}", "9".repeat(59))));
    assert!(hostile.common_name.len() > 64);
    let err = h
        .connect(Some(&hostile), "iam", DATABASE)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert!(!world
        .emulator
        .cloudtrail()
        .iter()
        .any(|r| r["requestParameters"]["dbUser"] == hostile.common_name.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_character_db_user_logs_in_end_to_end() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    // The world appends `-<tag>` to the CN: pad the prefix to 64 characters in all.
    let pad = 63 - world.tag.len();
    let long = world.client_with(ClientCertSpec::new(format!("a{}", "9".repeat(pad - 1))));
    assert_eq!(long.common_name.len(), 64);
    let client = h.connect(Some(&long), "iam", DATABASE).await.unwrap();
    let who = current_user(&client).await;
    // `IAMA:` + 64 characters is longer than PostgreSQL's 63-byte role names: the stand-in
    // runs the session as a mapped role.
    assert_eq!(who, world.role(&long));
    assert_ne!(who, world.iam_user(&long));
    assert!(world
        .standin()
        .logins()
        .iter()
        .any(|r| r.user == world.iam_user(&long) && r.pg_role.as_deref() == Some(who.as_str())));
}

/// The binary with a Roles Anywhere certificate from a CA the trust anchor does not know:
/// the emulator refuses CreateSession, the client gets 28000, the operator's log says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_roles_anywhere_certificate_is_refused_by_the_emulator() {
    let world = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rogue = TestPki::new(dir.path())
        .unwrap()
        .client_cert(ClientCertSpec::new("redshift-iam-proxy"))
        .unwrap();
    let config = world
        .config()
        .set("aws.roles_anywhere", "certificate", path(&rogue.cert_pem))
        .set("aws.roles_anywhere", "private_key", path(&rogue.key_pem));
    let proxy = world.proxy_process(&config).await;
    let alice = world.client("alice");
    let err = proxy
        .connect_to(proxy.addr(), Some(&alice), &alice.common_name, DATABASE)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert!(
        proxy.process.logs().contains("AccessDenied"),
        "{}",
        proxy.process.logs()
    );
    let trail = world.emulator.cloudtrail();
    assert!(
        trail
            .iter()
            .all(|r| r["eventName"] == "CreateSession" && r["errorCode"].is_string()),
        "{trail:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_command_proves_each_step_without_printing_secrets() {
    let world = World::start().await;
    let file = chain_config(&world).write(world.dir());
    let alice = world.client("alice");
    for target in ["cluster", "cluster-iam", "serverless"] {
        let out = proxy_command()
            .args(["check", "--config"])
            .arg(&file)
            .args([
                "--target",
                target,
                "--user",
                &alice.common_name,
                "--database",
                DATABASE,
                "--connect",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{target}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for step in [
            "AWS credentials",
            "database credentials",
            "upstream login",
            "select 1",
        ] {
            assert!(
                stdout.contains(&format!("[ OK ] {step}")),
                "{target}: {step}\n{stdout}"
            );
        }
        assert!(stdout.contains("request id"), "{stdout}");
        assert!(!stdout.to_lowercase().contains("password"), "{stdout}");
    }
    // A failing step fails the command.
    let out = proxy_command()
        .args(["check", "--config"])
        .arg(&file)
        .args(["--target", "cluster", "--user", "not:valid", "--connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] database credentials"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_through_the_proxy_reaches_the_session_behind_the_stand_in() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let client = h.login(&alice).await.unwrap();
    let token = client.cancel_token();
    let tls = h.tls_connector(Some(&alice));
    let query = "select pg_sleep(60) -- cancel through the proxy";
    let cancel = async {
        // Once PostgreSQL runs the query.
        wait_for_query(world.pg, &world.role(&alice), query).await;
        token.cancel_query(tls).await.unwrap();
    };
    let (result, ()) = tokio::join!(client.simple_query(query), cancel);
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    assert_eq!(world.standin().cancel_requests(), 1);
}

/// Logs in through the proxy by hand with extra startup parameters; returns the first
/// ErrorResponse's SQLSTATE and message, or `None` when the login reached ReadyForQuery.
async fn raw_proxy_login(
    h: &TestProxy,
    cert: &ClientCert,
    params: &[(&str, &str)],
) -> Option<(String, String)> {
    let mut all: Vec<(&[u8], &[u8])> = vec![
        (b"user", cert.common_name.as_bytes()),
        (b"database", DATABASE.as_bytes()),
    ];
    all.extend(params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    raw_login_outcome(h, cert, &startup(196_608, &all)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn redshift_driver_parameters_pass_the_proxy() {
    // What the Redshift JDBC driver sends (research redshift-server.md §4): the proxy drops
    // what it does not forward, the stand-in accepts the rest.
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let outcome = raw_proxy_login(&h, &world.client("alice"), JDBC_DRIVER_PARAMETERS).await;
    assert_eq!(outcome, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_intervalstyle_does_not_fail_the_login() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let outcome =
        raw_proxy_login(&h, &world.client("alice"), &[("IntervalStyle", "iso_8601")]).await;
    assert_eq!(outcome, None);
}

/// A response AWS could not have meant (HTTP 200 whose body is not Redshift's XML) is a
/// service failure: unavailable (08001), as throttling and 5xx are, not a refused request.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_aws_response_is_unavailable() {
    let (_world, _h, _alice, err) =
        first_login_under(|f| f.malformed_next(Some(Api::GetClusterCredentials), 1000)).await;
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(!message.contains("GetClusterCredentials"), "{message}");
}
