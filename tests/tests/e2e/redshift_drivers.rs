//! Redshift's own drivers, unchanged (issue 14): a BI tool or ETL job keeps its
//! `<cluster endpoint>:5439` address, user and password and logs in through a password
//! listener with a method Redshift drivers speak (md5, SHA-256 digest); the startup
//! parameters Redshift refuses never reach it, the ones Redshift drivers rely on do; both
//! legs keep TCP keepalive; a resuming serverless workgroup is ridden out.
//!
//! The driver is AWS's `redshift_connector` from PyPI ([`proxy_testkit::redshift_python`]),
//! which cannot speak SCRAM: it is the legacy client this listener exists for.

use proxy_auth::password::{md5, redshift_digest};
use proxy_testkit::config::{strings, Listener, Rule};
use proxy_testkit::pki::ServerCert;
use proxy_testkit::redshift_python;
use proxy_testkit::stack::{CLUSTER, WORKGROUP};
use proxy_testkit::standin::LoginRecord;
use proxy_testkit::world::{TestProxy, World};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// The name DNS gives the cluster in production; the BI tool's URL names it.
const CLUSTER_ENDPOINT: &str = "examplecluster.abc123xyz789.us-east-1.redshift.amazonaws.com";
const PASSWORD: &str = "Etl-Passw0rd";

/// The local users of [`bi_listener`]: md5, then Redshift's SHA-256 digest (unique per
/// world: worlds share the PostgreSQL server).
fn etl_users(world: &World) -> [String; 2] {
    [
        format!("etl_md5_{}", world.tag),
        format!("etl_sha_{}", world.tag),
    ]
}

/// A password listener `bi` that presents a certificate for the cluster endpoint name to
/// clients asking for it (SNI), with the [`etl_users`], both granted `{local_user}` on
/// `dev` of `cluster`.
fn bi_listener(world: &World, endpoint_cert: &ServerCert) -> proxy_testkit::config::ProxyConfig {
    let [md5_user, sha_user] = etl_users(world);
    let md5 = md5::hash_password(&md5_user, PASSWORD).to_text();
    let sha = redshift_digest::hash_password(PASSWORD).to_text();
    let mut entry = proxy_testkit::config::Table::default();
    entry.set("server_names", strings([CLUSTER_ENDPOINT]));
    entry.set(
        "tls_cert",
        proxy_testkit::config::path(&endpoint_cert.chain_pem),
    );
    entry.set(
        "tls_key",
        proxy_testkit::config::path(&endpoint_cert.key_pem),
    );
    world
        .config()
        .listener(
            Listener::new("bi", "127.0.0.1:0")
                .client_auth("password")
                .target("cluster")
                .tls(&world.server.chain_pem, &world.server.key_pem)
                .certificate(entry)
                .set("strict_sni", true)
                .user(&md5_user, &md5)
                .user(&sha_user, &sha),
        )
        .rule(
            Rule::new("etl")
                .matching("local_user", "etl_*")
                .matching("auth", strings(["password"]))
                .targets(["cluster"])
                .users(["{local_user}"])
                .default_user("{local_user}")
                .databases(["dev"]),
        )
}

/// Runs the driver's session script as an application configured with `host:port`, user
/// and password; `host` resolves to the proxy.
async fn redshift_connector_session(
    proxy: &TestProxy,
    ca: &Path,
    host: &str,
    user: &str,
    password: &str,
) -> Value {
    let python = redshift_python::python().await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/redshift_connector_session.py");
    let args = json!({
        "host": host,
        "dial": "127.0.0.1",
        "port": proxy.listener("bi").port(),
        "database": "dev",
        "user": user,
        "password": password,
    });
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(python)
            .arg(script)
            .arg(args.to_string())
            // The driver trusts the default verify paths plus its bundled Redshift CAs.
            .env("SSL_CERT_FILE", ca)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the driver finishes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redshift_connector failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The stand-in's record of the last login of database user `IAMA:<user>` (what
/// GetClusterCredentials with AutoCreate names the user).
fn last_login_of(logins: &[LoginRecord], user: &str) -> LoginRecord {
    let db_user = format!("IAMA:{user}");
    logins
        .iter()
        .rev()
        .find(|l| l.user == db_user)
        .cloned()
        .unwrap_or_else(|| panic!("the stand-in saw no login of {user}: {logins:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bi_tool_keeps_its_cluster_url_user_and_password() {
    let world = World::start().await;
    let endpoint_cert = world.pki.server_cert(&[CLUSTER_ENDPOINT]).unwrap();
    let proxy = world.proxy(bi_listener(&world, &endpoint_cert)).await;
    let ca = world.pki.ca_cert_path();

    let [md5_user, sha_user] = etl_users(&world);
    for (user, method) in [(&sha_user, "sha256"), (&md5_user, "md5")] {
        let report = redshift_connector_session(&proxy, ca, CLUSTER_ENDPOINT, user, PASSWORD).await;
        assert_eq!(report["login_error"], Value::Null, "{user}: {report}");
        // Logged in upstream as its own database user, through the real credential chain.
        assert_eq!(report["current_user"], format!("IAMA:{user}"), "{report}");
        assert_eq!(report["database"], "dev");
        // Queries, errors and transactions behave as against Redshift.
        assert_eq!(report["error_sqlstate"], "22012", "{report}");
        assert_eq!(report["after_rollback"], 0, "{report}");
        assert_eq!(report["after_commit"], 3, "{report}");
        // It asked for protocol level 2; the stand-in answered 0 (min(requested, what it
        // supports), as Redshift does) and the answer reached the driver unchanged.
        assert_eq!(report["server_protocol_version"], 0, "{report}");

        let record = proxy
            .audit(1)
            .await
            .into_iter()
            .rev()
            .find(|r| r["local_user"] == **user)
            .expect("an audit record of the session");
        assert_eq!(record["password_method"], method, "{record}");
        assert_eq!(record["server_name"], CLUSTER_ENDPOINT, "{record}");
        assert_eq!(record["outcome"], "closed", "{record}");
    }

    // What the driver sent reached Redshift (the stand-in): its protocol level and
    // metadata, which spare it a catalog query per ResultSetMetaData call.
    let standin = world.emulator.standin(CLUSTER).expect("cluster stand-in");
    let login = last_login_of(&standin.logins(), &sha_user);
    assert_eq!(
        login.param("client_protocol_version"),
        Some("2"),
        "{login:?}"
    );
    assert!(login
        .param("driver_version")
        .is_some_and(|v| v.starts_with("Redshift Python Driver")));
    assert_eq!(
        login.param("application_name"),
        Some("redshift-connector-e2e")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_reads_as_redshift_says_it_and_names_nothing_else() {
    let world = World::start().await;
    let endpoint_cert = world.pki.server_cert(&[CLUSTER_ENDPOINT]).unwrap();
    let proxy = world.proxy(bi_listener(&world, &endpoint_cert)).await;
    let ca = world.pki.ca_cert_path();
    let [md5_user, sha_user] = etl_users(&world);
    for user in [&sha_user, &md5_user, &format!("etl_unknown_{}", world.tag)] {
        let report = redshift_connector_session(&proxy, ca, CLUSTER_ENDPOINT, user, "wrong").await;
        let error = &report["login_error"];
        let text = error["text"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{user}: {report}"
        );
        assert!(!text.contains(PASSWORD));
        // Redshift's 28000 for its digest; PostgreSQL's 28P01 for md5, and for the unknown
        // user, who gets the listener's most common method: a tie, so the first listed.
        let expected = if *user == sha_user { "28000" } else { "28P01" };
        assert_eq!(error["sqlstate"], expected, "{user}: {report}");
    }
    let records = proxy.audit(3).await;
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["refusal"]["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["password_authentication"; 3], "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_redshift_refuses_are_dropped_and_the_rest_arrive() {
    let world = World::start().await;
    let proxy = world
        .proxy(
            world
                .config()
                .edit_listener("main", |l| l.set("allow_options", true)),
        )
        .await;
    let alice = world.client("alice");
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr([127, 0, 0, 1].into())
        .port(proxy.addr().port())
        .user(&alice.common_name)
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .options("-c IntervalStyle=iso_8601 -c statement_timeout=0")
        .application_name("params-e2e");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::client::client_tls(
        &proxy.ca,
        Some(&alice),
    ));
    let (client, connection) = config.connect(tls).await.expect("login");
    tokio::spawn(connection);
    client.simple_query("select 1").await.unwrap();

    let standin = world.emulator.standin(CLUSTER).expect("cluster stand-in");
    let login = last_login_of(&standin.logins(), &alice.common_name);
    assert_eq!(
        login.param("options"),
        Some("-c statement_timeout=0"),
        "{login:?}"
    );
    assert_eq!(login.param("application_name"), Some("params-e2e"));
}

/// `(timer, expires in)` of the TCP socket from `local` to `remote` port, from
/// /proc/net/tcp (timer 2 is the keepalive timer; the time is in USER_HZ = 1/100 s).
fn tcp_timer(local_port: u16, remote_port: u16) -> Option<(u8, Duration)> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
        if port(fields[1])? != local_port || port(fields[2])? != remote_port {
            return None;
        }
        let (timer, when) = fields[5].split_once(':')?;
        let ticks = u64::from_str_radix(when, 16).ok()?;
        Some((timer.parse().ok()?, Duration::from_millis(ticks * 10)))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn both_legs_of_an_idle_session_keep_tcp_keepalive() {
    let world = World::start().await;
    let proxy = world
        .proxy(world.config().set("limits", "tcp_keepalive", "37s").set(
            "limits",
            "tcp_keepalive_interval",
            "5s",
        ))
        .await;
    let alice = world.client("alice");
    let client = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .expect("login");
    client.simple_query("select 1").await.unwrap();

    let proxy_port = proxy.addr().port();
    let standin_port = world.emulator.endpoint(CLUSTER).unwrap().port();
    // The proxy's two sockets of this session: to the client (local = the listener) and
    // to the stand-in (remote = the stand-in).
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let client_port = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
            (port(f[1]) == proxy_port && f[3] == "01").then(|| port(f[2]))
        })
        .next()
        .expect("the proxy's socket to the client");
    let upstream_port = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
            (port(f[2]) == standin_port && f[3] == "01").then(|| port(f[1]))
        })
        .next()
        .expect("the proxy's socket to the stand-in");
    for (what, local, remote) in [
        ("client leg", proxy_port, client_port),
        ("upstream leg", upstream_port, standin_port),
    ] {
        // Right after traffic the retransmission / loss-probe timer (1) may still be armed;
        // on an idle socket the keepalive timer (2) is the one that runs.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (timer, expires) = loop {
            let found = tcp_timer(local, remote).expect("socket listed");
            if found.0 == 2 || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(timer, 2, "{what}: the keepalive timer runs");
        assert!(
            expires <= Duration::from_secs(37) && expires > Duration::from_secs(20),
            "{what}: first probe after the configured 37 s idle, not the kernel's 2 h ({expires:?})"
        );
    }
    drop(client);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resuming_serverless_workgroup_is_waited_for_and_a_provisioned_cluster_is_not() {
    let world = World::start().await;
    let config = world
        .config()
        .edit_listener("main", |l| l.target("serverless"))
        .edit_target("serverless", |t| t.set("resume_wait", "20s"))
        .rule(Rule::everyone_on("serverless"));
    let proxy = world.proxy(config).await;
    let alice = world.client("alice");
    let workgroup = world
        .emulator
        .standin(WORKGROUP)
        .expect("workgroup stand-in");

    workgroup.set_unavailable(Duration::from_secs(3));
    let started = Instant::now();
    let client = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .expect("the login outlasts the resume");
    assert!(started.elapsed() >= Duration::from_secs(3));
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);

    let record = proxy
        .audit(1)
        .await
        .into_iter()
        .find(|r| r["target"] == "serverless")
        .expect("audit record");
    let attempts = record["upstream_attempts"].as_u64().unwrap_or(0);
    assert!(attempts >= 2, "{record}");
    let metrics = proxy.running.shared().metrics.encode();
    let retries = format!(
        "redshift_iam_proxy_upstream_resume_retries_total{{target=\"serverless\"}} {}",
        attempts - 1
    );
    assert!(metrics.contains(&retries), "{metrics}");

    // A provisioned cluster does not resume by itself: no waiting by default.
    let cluster = world.emulator.standin(CLUSTER).expect("cluster stand-in");
    cluster.set_unavailable(Duration::from_secs(30));
    let proxy = world.proxy(world.config()).await;
    let started = Instant::now();
    let err = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("08006"), "{err}");
}
