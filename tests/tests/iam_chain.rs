//! The whole credential chain end to end, through the real binary: a client certificate →
//! the proxy → IAM Roles Anywhere (CreateSession, signed with the proxy's certificate) →
//! Redshift GetClusterCredentials / GetClusterCredentialsWithIAM / serverless GetCredentials
//! (SigV4 with the issued session, authorized by the README's IAM policy) → a temporary
//! password → a verify-full login as that temporary user at the Redshift stand-in, which
//! checks it the way Redshift does and runs the session as that user in PostgreSQL. The
//! emulator checks every signature for real.

use proxy_testkit::emulator::Api;
use proxy_testkit::harness::{connect_through_proxy, sqlstate};
use proxy_testkit::pki::{ClientCert, ClientCertSpec};
use proxy_testkit::stack::{Stack, DATABASE};
use std::process::Command;
use std::time::{Duration, Instant};

async fn current_user(stack: &Stack, port: u16, cert: &ClientCert, user: &str) -> String {
    let out = stack
        .psql(port, cert)
        .user(user)
        .run("select current_user")
        .await
        .unwrap();
    assert!(
        out.success(),
        "{out:?}\nproxy logs:\n{}",
        stack.proxy.logs()
    );
    out.value().to_string()
}

/// Connects until it works: after a failure the proxy backs off its credential calls
/// (1 s, then doubling) and answers with that failure until the backoff has passed.
async fn connect_after_backoff(
    stack: &Stack,
    port: u16,
    cert: &ClientCert,
    user: &str,
) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(stack, port, cert, user).await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still refused after the backoff: {e}"),
        }
    }
}

async fn connect(
    stack: &Stack,
    port: u16,
    cert: &ClientCert,
    user: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_through_proxy(
        port,
        stack.layout.pki.ca_cert_path(),
        Some(cert),
        user,
        DATABASE,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioned_login_runs_as_the_auto_created_iam_user_in_its_groups() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    assert_eq!(
        current_user(&stack, l.ports.cluster, &l.alice, "alice").await,
        "IAMA:alice"
    );
    let out = stack
        .psql(l.ports.cluster, &l.alice)
        .user("alice")
        .run("select pg_has_role(current_user, 'analysts', 'member')")
        .await
        .unwrap();
    assert_eq!(out.value(), "t", "{out:?}");
    assert_eq!(stack.emulator.calls(Api::CreateSession), 1);
    assert_eq!(stack.emulator.calls(Api::GetClusterCredentials), 1);

    // A second login is served from both caches.
    current_user(&stack, l.ports.cluster, &l.alice, "iam").await;
    assert_eq!(stack.emulator.calls(Api::CreateSession), 1);
    assert_eq!(stack.emulator.calls(Api::GetClusterCredentials), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_create_only_existing_users_can_log_in() {
    let stack = Stack::start_with(|c| *c = c.replace("auto_create = true", "auto_create = false"))
        .await
        .unwrap();
    let l = &stack.layout;
    let user = format!("carol{}", std::process::id());
    let carol = l
        .pki
        .client_cert(ClientCertSpec::new(format!("alice-{user}")))
        .unwrap();
    let db_user = format!("alice-{user}");
    // GetClusterCredentials succeeds, but the user does not exist: the login fails.
    // Redshift refuses it as a wrong password, with 28000 (python-driver#237); the proxy
    // relays the upstream's SQLSTATE.
    let err = connect(&stack, l.ports.cluster, &carol, &db_user)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert_eq!(
        err.as_db_error().map(|e| e.message().to_owned()),
        Some(format!(
            "password authentication failed for user \"IAM:{db_user}\""
        ))
    );

    // Once the user exists, the same login works as IAM:<user>.
    let admin = stack.pg.admin().await.unwrap();
    admin
        .batch_execute(&format!("create role \"IAM:{db_user}\" login"))
        .await
        .unwrap();
    // The refused fresh credential put the request in backoff; then it works.
    let client = connect_after_backoff(&stack, l.ports.cluster, &carol, &db_user).await;
    let who: String = client
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, format!("IAM:{db_user}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_iam_and_serverless_log_in_as_the_role_of_each_rule() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    assert_eq!(
        current_user(&stack, l.ports.cluster_iam, &l.alice, "alice").await,
        "IAMR:RedshiftAccess"
    );
    // bob's rule names its own role: a second Roles Anywhere session.
    assert_eq!(
        current_user(&stack, l.ports.cluster_iam, &l.bob, "bob").await,
        "IAMR:RedshiftBiReader"
    );
    assert_eq!(
        current_user(&stack, l.ports.serverless, &l.alice, "alice").await,
        "IAMR:RedshiftAccess"
    );
    assert_eq!(
        current_user(&stack, l.ports.serverless, &l.bob, "iam").await,
        "IAMR:RedshiftBiReader"
    );
    assert_eq!(
        stack.emulator.calls(Api::CreateSession),
        2,
        "one session per role"
    );
    assert!(stack.emulator.calls(Api::GetClusterCredentialsWithIam) >= 2);
    assert!(stack.emulator.calls(Api::GetCredentials) >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_logins_of_ten_identities_make_one_session_and_ten_credential_calls() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    let certs: Vec<ClientCert> = (0..10)
        .map(|i| {
            l.pki
                .client_cert(ClientCertSpec::new(format!("alice{i}")))
                .unwrap()
        })
        .collect();
    let stack = std::sync::Arc::new(stack);
    let certs = std::sync::Arc::new(certs);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200usize {
        let stack = stack.clone();
        let certs = certs.clone();
        tasks.spawn(async move {
            let cert = &certs[n % 10];
            let client = connect(&stack, stack.layout.ports.cluster, cert, "iam")
                .await
                .map_err(|e| format!("login {n}: {e}"))?;
            let who: String = client
                .query_one("select current_user", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            if who != format!("IAMA:{}", cert.common_name) {
                return Err(format!("login {n} ran as {who}"));
            }
            Ok::<_, String>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(stack.emulator.calls(Api::CreateSession), 1);
    let credential_calls = stack.emulator.calls(Api::GetClusterCredentials);
    assert!(
        (1..=10).contains(&credential_calls),
        "{credential_calls} credential calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_latency_and_throttling_do_not_delay_cached_logins() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    current_user(&stack, l.ports.cluster, &l.alice, "alice").await;
    let calls_before = stack.emulator.calls(Api::GetClusterCredentials);

    stack.emulator.faults().set_latency(Duration::from_secs(3));
    stack.emulator.faults().throttle_next(None, 1000);
    for _ in 0..5 {
        let started = Instant::now();
        let client = connect(&stack, l.ports.cluster, &l.alice, "alice")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.proxy.logs()));
        client.simple_query("select 1").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a cached login waited on AWS: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        stack.emulator.calls(Api::GetClusterCredentials),
        calls_before
    );
    stack.emulator.faults().clear();
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_failures_reach_the_client_as_clean_errors() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    // The credential API throttles every call (and the SDK's retries): the client is told
    // AWS is unavailable (08001), the proxy keeps serving.
    stack
        .emulator
        .faults()
        .throttle_next(Some(Api::GetClusterCredentials), 1000);
    let err = connect(&stack, l.ports.cluster, &l.alice, "alice")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    stack.emulator.faults().clear();
    // Within the backoff the failure stands in for a new call: AWS is not asked again.
    let calls = stack.emulator.calls(Api::GetClusterCredentials);
    let err = connect(&stack, l.ports.cluster, &l.alice, "alice")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    assert_eq!(stack.emulator.calls(Api::GetClusterCredentials), calls);
    connect_after_backoff(&stack, l.ports.cluster, &l.alice, "alice").await;

    // A user name Redshift refuses (InvalidParameterValue: 65 characters, one beyond the
    // documented 64) is a denied login (28000).
    let hostile = l
        .pki
        .client_cert(ClientCertSpec::new(format!("alice-{}", "9".repeat(59))))
        .unwrap();
    let err = connect(&stack, l.ports.cluster, &hostile, "iam")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_character_db_user_logs_in_end_to_end() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    let name = format!("alice-{}", "9".repeat(58));
    assert_eq!(name.len(), 64);
    let long = l
        .pki
        .client_cert(ClientCertSpec::new(name.clone()))
        .unwrap();
    let client = connect(&stack, l.ports.cluster, &long, "iam")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.proxy.logs()));
    let who: String = client
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0);
    // `IAMA:` + 64 characters is longer than PostgreSQL's 63-byte role names: the stand-in
    // runs the session as a mapped role.
    assert_eq!(
        who,
        proxy_testkit::standin::pg_role_name(&format!("IAMA:{name}"))
    );
    let standin = stack
        .emulator
        .standin(proxy_testkit::stack::CLUSTER)
        .unwrap();
    assert!(standin
        .logins()
        .iter()
        .any(|r| r.user == format!("IAMA:{name}") && r.pg_role.as_deref() == Some(who.as_str())));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_roles_anywhere_certificate_is_refused_by_the_emulator() {
    // The proxy's own certificate comes from a CA the trust anchor does not know.
    let dir = tempfile::tempdir().unwrap();
    let rogue_pki = proxy_testkit::pki::TestPki::new(dir.path()).unwrap();
    let rogue = rogue_pki
        .client_cert(ClientCertSpec::new("redshift-iam-proxy"))
        .unwrap();
    let stack = Stack::start_with(|c| {
        let start = c.find("certificate = ").unwrap();
        let end = c[start..].find("trust_anchor_arn").unwrap() + start;
        c.replace_range(
            start..end,
            &format!(
                "certificate = {:?}\nprivate_key = {:?}\n",
                rogue.cert_pem, rogue.key_pem
            ),
        );
    })
    .await
    .unwrap();
    let l = &stack.layout;
    let err = connect(&stack, l.ports.cluster, &l.alice, "alice")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert!(
        stack.proxy.logs().contains("AccessDenied"),
        "{}",
        stack.proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_command_proves_each_step_without_printing_secrets() {
    let stack = Stack::start().await.unwrap();
    for target in ["cluster", "cluster-iam", "serverless"] {
        let out = Command::new(proxy_testkit::proxy::proxy_binary())
            .args(["check", "--config"])
            .arg(stack.proxy.config_path())
            .args([
                "--target",
                target,
                "--user",
                "alice",
                "--database",
                DATABASE,
                "--connect",
            ])
            .env_remove("AWS_ACCESS_KEY_ID")
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
    let out = Command::new(proxy_testkit::proxy::proxy_binary())
        .args(["check", "--config"])
        .arg(stack.proxy.config_path())
        .args(["--target", "cluster", "--user", "not:valid", "--connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[FAIL] database credentials"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_through_the_proxy_reaches_the_session_behind_the_stand_in() {
    let stack = Stack::start().await.unwrap();
    let l = &stack.layout;
    let client = connect(&stack, l.ports.cluster, &l.alice, "alice")
        .await
        .unwrap();
    let token = client.cancel_token();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::harness::client_tls(
        l.pki.ca_cert_path(),
        Some(&l.alice),
    ));
    let query = "select pg_sleep(60) -- cancel through the proxy";
    let cancel = async {
        // Wait until PostgreSQL runs the query.
        let admin = stack.pg.admin().await.unwrap();
        loop {
            let running: i64 = admin
                .query_one(
                    "select count(*) from pg_stat_activity where query = $1 and state = 'active'",
                    &[&query],
                )
                .await
                .unwrap()
                .get(0);
            if running > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        token.cancel_query(tls).await.unwrap();
    };
    let (result, ()) = tokio::join!(client.simple_query(query), cancel);
    assert_eq!(
        sqlstate(&result.unwrap_err()).as_deref(),
        Some("57014"),
        "{}",
        stack.proxy.logs()
    );
    let standin = stack
        .emulator
        .standin(proxy_testkit::stack::CLUSTER)
        .unwrap();
    assert_eq!(standin.cancel_requests(), 1);
}

/// Logs in through the proxy by hand with extra startup parameters; returns the first
/// ErrorResponse's SQLSTATE and message, or `None` when the login reached ReadyForQuery.
async fn raw_proxy_login(
    stack: &Stack,
    cert: &ClientCert,
    params: &[(&str, &str)],
) -> Option<(String, String)> {
    use proxy_testkit::adversary::{read_reply, startup, Reply};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = &stack.layout;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", l.ports.cluster))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let config = proxy_testkit::harness::client_tls(l.pki.ca_cert_path(), Some(cert));
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut all: Vec<(&[u8], &[u8])> = vec![(b"user", b"alice"), (b"database", b"dev")];
    all.extend(params.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    tls.write_all(&startup(196_608, &all)).await.unwrap();
    loop {
        match read_reply(&mut tls).await {
            Reply::Message { tag: b'Z', .. } => return None,
            Reply::Error(e) => return Some((e.code, e.message)),
            Reply::Message { .. } => {}
            other => panic!("login ended without an answer: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redshift_driver_parameters_pass_the_proxy() {
    // What the Redshift JDBC driver sends (research redshift-server.md §4): the proxy drops
    // what it does not forward, the stand-in accepts the rest.
    let stack = Stack::start().await.unwrap();
    let outcome = raw_proxy_login(
        &stack,
        &stack.layout.alice,
        &[
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
            ("application_name", "[main]Job"),
            ("driver_version", "Redshift JDBC Driver 2.2.6"),
            ("client_protocol_version", "3"),
        ],
    )
    .await;
    assert_eq!(outcome, None, "{}", stack.proxy.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_intervalstyle_does_not_fail_the_login() {
    let stack = Stack::start().await.unwrap();
    let outcome = raw_proxy_login(
        &stack,
        &stack.layout.alice,
        &[("IntervalStyle", "iso_8601")],
    )
    .await;
    assert_eq!(outcome, None);
}
