//! Operating the proxy (issue 5): the audit trail, metrics and health over HTTP, reload
//! under load, graceful shutdown, and connection limits, end to end with real clients and
//! the real credential chain, in process; plus one test of the real binary's signal
//! handling.

use proxy_testkit::adversary::{refused_at_ssl_request, stall_after_client_hello};
use proxy_testkit::client::sqlstate;
use proxy_testkit::config::{path, ProxyConfig, Rule};
use proxy_testkit::emulator::Api;
use proxy_testkit::observe::{captured_logs, eventually, http, http_with, sample, wait_for_query};
use proxy_testkit::pki::{ClientCert, ClientCertSpec, TestPki};
use proxy_testkit::stack::{access_role_arn, bi_role_arn};
use proxy_testkit::world::{current_user, World};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const METRICS: &str = "redshift_iam_proxy_";

/// The policy most tests here use: alice (her certificate carries a SPIFFE ID and an
/// e-mail address) may be herself on `dev` and `analytics`, in group `analysts`; bob only
/// himself on `analytics`. (The IAM policy lets the proxy fetch credentials for `dev`
/// only.)
struct People {
    alice: ClientCert,
    bob: ClientCert,
}

impl People {
    fn new(world: &World) -> People {
        People {
            alice: world.client_with(
                ClientCertSpec::new("alice")
                    .uri("spiffe://corp.example/ns/bi/sa/alice")
                    .email("alice@corp.example"),
            ),
            bob: world.client("bob"),
        }
    }

    fn config(&self, world: &World) -> ProxyConfig {
        world
            .config()
            .without_rules()
            .rule(
                Rule::new("analysts")
                    .matching("cn", self.alice.common_name.as_str())
                    .targets(["cluster"])
                    .users(["{cn}"])
                    .default_user("{cn}")
                    .databases(["dev", "analytics"])
                    .groups(["analysts"]),
            )
            .rule(
                Rule::new("bob")
                    .matching("cn", self.bob.common_name.as_str())
                    .targets(["cluster"])
                    .users(["{cn}"])
                    .databases(["analytics"]),
            )
    }
}

/// `[admin]` on an ephemeral loopback port, reloads allowed with the token
/// `reload-token-for-tests` (from a file in the world's directory).
fn with_admin(world: &World, config: ProxyConfig) -> ProxyConfig {
    let token = world.dir().join("reload-token");
    std::fs::write(&token, "reload-token-for-tests\n").unwrap();
    config
        .set("admin", "bind", "127.0.0.1:0")
        .set("admin", "reload_token_file", path(&token))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connection_leaves_one_audit_record_and_no_secret_anywhere() {
    let world = World::start().await;
    let people = People::new(&world);
    let expired = world.client_with(ClientCertSpec::new("expired").expired());
    let h = world.proxy(people.config(&world)).await;
    let (alice, bob) = (&people.alice, &people.bob);
    let cn = alice.common_name.as_str();

    // 1. A session that runs and closes.
    let client = h.login(alice).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    drop(client);
    // 2. Policy refusal: bob may not be alice.
    let err = h.connect(Some(bob), cn, "analytics").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    // 3. Certificate refusal.
    h.connect(Some(&expired), cn, "dev").await.unwrap_err();
    // 4. Plaintext client.
    let mut plain = tokio_postgres::Config::new();
    plain
        .host("127.0.0.1")
        .port(h.addr().port())
        .user(cn)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    assert!(plain.connect(tokio_postgres::NoTls).await.is_err());
    // 5. Credential refusal: the policy grants `analytics`, IAM does not.
    let err = h.connect(Some(alice), cn, "analytics").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    // 6. A cancel request (for nothing in particular).
    let client = h.login(alice).await.unwrap();
    client
        .cancel_token()
        .cancel_query(h.tls_connector(None))
        .await
        .unwrap();
    drop(client);

    let records = h.audit(7).await;
    assert_eq!(records.len(), 7, "{records:#?}");
    let find = |pred: &dyn Fn(&Value) -> bool| {
        records
            .iter()
            .find(|r| pred(r))
            .unwrap_or_else(|| panic!("no such record in {records:#?}"))
            .clone()
    };
    // The AWS calls as the emulator recorded them.
    let trail = world.emulator.cloudtrail();
    let call = |db: &str| {
        trail
            .iter()
            .find(|r| {
                r["eventName"] == "GetClusterCredentials"
                    && r["requestParameters"]["dbUser"] == cn
                    && r["requestParameters"]["dbName"] == db
            })
            .unwrap_or_else(|| panic!("no GetClusterCredentials for {db}: {trail:#?}"))
    };

    let ok = find(&|r| r["outcome"] == "closed");
    assert_eq!(ok["kind"], "session");
    assert_eq!(ok["listener"], "main");
    assert!(ok["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(ok["session_id"].as_str().unwrap().len(), 32);
    let cert = &ok["client_certificate"];
    assert!(cert["subject"]
        .as_str()
        .unwrap()
        .starts_with(&format!("CN={cn}")));
    assert_eq!(cert["issuer"], world.pki.root().subject_dn());
    assert_eq!(cert["san_uri"][0], "spiffe://corp.example/ns/bi/sa/alice");
    assert_eq!(cert["san_email"][0], "alice@corp.example");
    assert_eq!(cert["fingerprint_sha256"].as_str().unwrap().len(), 64);
    assert!(!cert["serial"].as_str().unwrap().is_empty());
    assert_eq!(ok["rule"], "analysts");
    assert_eq!(ok["target"], "cluster");
    assert_eq!(ok["requested_user"], cn);
    assert_eq!(ok["database"], "dev");
    assert_eq!(ok["db_user"], world.iam_user(alice));
    assert_eq!(ok["groups"][0], "analysts");
    let dev_call = call("dev");
    assert!(dev_call.get("errorCode").is_none(), "{dev_call}");
    assert_eq!(ok["aws_request_ids"][0], dev_call["requestID"]);
    assert_eq!(ok["client_tls"]["version"], "TLSv1.3");
    assert!(ok["upstream_tls"]["cipher"]
        .as_str()
        .unwrap()
        .starts_with("TLS13_"));
    assert!(ok["bytes_from_client"].as_u64().unwrap() > 0);
    assert!(ok["bytes_to_client"].as_u64().unwrap() > 0);
    assert_eq!(ok["close_reason"], "client_closed");
    assert!(ok["duration_ms"].is_u64());
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert!(ok.get("refusal").is_none());

    let policy = find(&|r| r["refusal"]["reason"] == "policy");
    assert_eq!(policy["refusal"]["sqlstate"], "28000");
    assert!(policy["client_certificate"]["subject"]
        .as_str()
        .unwrap()
        .starts_with(&format!("CN={}", bob.common_name)));
    assert_eq!(policy["requested_user"], cn);
    assert!(policy.get("rule").is_none());

    let cert = find(&|r| r["refusal"]["reason"] == "client_certificate");
    assert_eq!(cert["refusal"]["sqlstate"], "28000");
    assert!(cert["refusal"]["detail"]
        .as_str()
        .unwrap()
        .contains("expired"));

    let plain = find(&|r| r["refusal"]["reason"] == "tls_required");
    assert_eq!(plain["refusal"]["sqlstate"], "28000");
    assert!(plain.get("client_tls").is_none());

    let creds = find(&|r| r["refusal"]["reason"] == "credentials");
    assert_eq!(creds["rule"], "analysts");
    assert_eq!(creds["db_user"], cn);
    assert_eq!(creds["database"], "analytics");
    let denied_call = call("analytics");
    assert_eq!(denied_call["errorCode"], "AccessDenied", "{denied_call}");
    let detail = creds["refusal"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(denied_call["requestID"].as_str().unwrap()),
        "the operator can find the call in CloudTrail: {detail}"
    );

    let cancel = find(&|r| r["kind"] == "cancel");
    assert_eq!(cancel["outcome"], "cancel");
    assert!(cancel["cancel_outcome"].is_string());

    // Nothing secret in the audit trail or the logs (debug level) of all of the above.
    let audit = std::fs::read_to_string(&h.audit_path).unwrap();
    let logs = captured_logs().proxy_text();
    let opened = ok["session_id"].as_str().unwrap();
    assert!(
        logs.contains(&format!("session opened session_id={opened}")),
        "logs were captured"
    );
    for (name, text) in [("audit", &audit), ("logs", &logs)] {
        for credential in world.emulator.issued_credentials().all() {
            let password = credential.password.expose_secret();
            let leak = text.lines().find(|l| l.contains(password));
            assert!(leak.is_none(), "password in {name}: {leak:?}");
        }
        assert!(!text.contains("BEGIN PRIVATE KEY"), "key in {name}");
    }
}

/// `[admin] bind = "unix:/path"`: the same endpoints on a socket only the proxy's user can
/// open, removed when the proxy stops.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_listener_can_be_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::start().await;
    let socket = world.dir().join("admin.sock");
    let h = world
        .proxy(
            world
                .config()
                .set("admin", "bind", format!("unix:{}", socket.display())),
        )
        .await;
    assert_eq!(h.running.admin_addr(), None, "no TCP admin listener");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
    s.write_all(b"GET /livez HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert_eq!(out.split(' ').nth(1), Some("200"), "{out}");
    drop(h);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_are_served_over_http() {
    let world = World::start().await;
    let people = People::new(&world);
    let h = world.proxy(with_admin(&world, people.config(&world))).await;
    let admin = h.admin();

    assert_eq!(http(admin, "GET", "/livez").await.0, 200);
    assert_eq!(http(admin, "GET", "/startupz").await.0, 200);
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200);

    let client = h.login(&people.alice).await.unwrap();
    client
        .simple_query("select repeat('x', 100000)")
        .await
        .unwrap();
    h.connect(Some(&people.bob), &people.alice.common_name, "analytics")
        .await
        .unwrap_err();

    let (status, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let p = METRICS;
    assert_eq!(
        sample(
            &m,
            &format!("{p}connections_accepted_total{{listener=\"main\"}}")
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}sessions_active{{listener=\"main\",target=\"cluster\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}logins_total{{target=\"cluster\",outcome=\"success\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}logins_total{{target=\"cluster\",outcome=\"denied\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{p}connections_refused_total{{listener=\"main\",reason=\"policy\"}}")
        ),
        Some(1.0)
    );
    for histogram in [
        "client_handshake_seconds_count{listener=\"main\"}",
        "credential_fetch_seconds_count{target=\"cluster\"}",
        "upstream_connect_seconds_count{target=\"cluster\"}",
        "upstream_auth_seconds_count{target=\"cluster\"}",
    ] {
        assert!(
            sample(&m, &format!("{p}{histogram}")).unwrap_or(0.0) >= 1.0,
            "{histogram}\n{m}"
        );
    }
    assert!(sample(&m, &format!("{p}client_bytes_sent_total")).unwrap() > 100_000.0);
    let server_expiry = sample(
        &m,
        &format!("{p}certificate_expiry_timestamp_seconds{{kind=\"server\",listener=\"main\""),
    )
    .unwrap();
    assert!(server_expiry > 1.7e9, "{server_expiry}");
    assert!(m.contains(&format!(
        "{p}certificate_expiry_timestamp_seconds{{kind=\"client_ca\""
    )));

    // Reloading needs the token; a request for another host name is refused outright.
    let (status, body) = http(admin, "POST", "/reload").await;
    assert_eq!(status, 403, "{body}");
    let bearer = "Bearer reload-token-for-tests";
    let (status, body) = http_with(admin, "POST", "/reload", &[("Authorization", bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: rebound.evil.example\r\n\r\n")
        .await
        .unwrap();
    let mut refused = String::new();
    s.read_to_string(&mut refused).await.unwrap();
    assert!(refused.starts_with("HTTP/1.0 403"), "{refused}");
    let (_, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(
        sample(&m, &format!("{p}reloads_total{{outcome=\"success\"}}")),
        Some(1.0)
    );
    drop(client);
}

/// A reload that changes restart-only settings is refused, naming them; one that changes
/// settings kept until restart goes ahead.
#[tokio::test(flavor = "multi_thread")]
async fn reload_refuses_restart_only_changes_naming_them() {
    let world = World::start().await;
    let original = world.config();
    let mut h = world.proxy(original.clone()).await;
    let changed = original
        .clone()
        .edit_target("cluster", |t| t.set("region", "eu-west-1"));
    let err = h.reload(changed).await.unwrap_err().to_string();
    assert!(
        err.contains("restart-only settings changed: [[target]] \"cluster\": region"),
        "{err}"
    );
    assert!(err.contains("restart the proxy"), "{err}");

    assert_eq!(
        h.reload(original.set("log", "level", "info"))
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_keeps_sessions_and_applies_to_new_ones() {
    let _heavy = proxy_testkit::world::heavy().await;
    let world = World::start().await;
    let people = People::new(&world);
    let original = people.config(&world);
    let mut h = world.proxy(original.clone()).await;
    let (alice, bob) = (&people.alice, &people.bob);

    // 20 sessions streaming result sets for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streams = Vec::new();
    for _ in 0..20 {
        let client = h.login(alice).await.unwrap();
        let stop = stop.clone();
        streams.push(tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let rows = client
                    .query("select repeat('x', 2000) from generate_series(1, 200)", &[])
                    .await?;
                assert_eq!(rows.len(), 200);
                rounds += 1;
            }
            Ok::<u32, tokio_postgres::Error>(rounds)
        }));
    }

    // Bob may not use `dev` under the first policy.
    let err = h.login(bob).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));

    let new_ca = world
        .pki
        .new_root_ca("Reload Client CA", Default::default())
        .unwrap();
    let bundle = world
        .pki
        .bundle("reload-cas", &[world.pki.ca_cert_path(), &new_ca.cert_pem])
        .unwrap();
    // Every issuer needs its CRL (a certificate whose revocation status is unknown is
    // refused).
    let new_crl = new_ca.crl_pem().unwrap();
    let carol = new_ca
        .client_cert(ClientCertSpec::new(world.name("alice-carol")))
        .unwrap();
    let renewed = |server: &proxy_testkit::pki::ServerCert| {
        original
            .clone()
            .edit_listener("main", |l| {
                l.tls(&server.chain_pem, &server.key_pem)
                    .client_ca(&bundle, &[&world.crl, &new_crl])
            })
            // The new policy lets bob into `dev`, and anyone of the new CA in as themselves.
            .without_rules()
            .rule(
                Rule::new("analysts")
                    .matching("cn", alice.common_name.as_str())
                    .users(["{cn}"])
                    .databases(["dev", "analytics"])
                    .groups(["analysts"]),
            )
            .rule(
                Rule::new("bob")
                    .matching("cn", bob.common_name.as_str())
                    .users(["{cn}"])
                    .databases(["dev"]),
            )
            .rule(
                Rule::new("carol")
                    .matching("cn", carol.common_name.as_str())
                    .users(["{cn}"])
                    .default_user("{cn}")
                    .databases(["dev"]),
            )
    };
    let mut current = original.clone();
    for round in 0..5 {
        let server = world.pki.server_cert(&["localhost", "127.0.0.1"]).unwrap();
        current = renewed(&server);
        let generation = h.reload(current.clone()).await.unwrap();
        assert_eq!(generation, 2 + round);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New sessions see the new policy and the new client CA.
    let client = h.login(bob).await.unwrap();
    assert_eq!(current_user(&client).await, world.iam_user(bob));
    let client = h.login(&carol).await.unwrap();
    assert_eq!(current_user(&client).await, world.iam_user(&carol));

    // A broken certificate file is refused and the running state kept.
    let broken = world.pki.dir().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = h
        .reload(current.edit_listener("main", |l| l.set("tls_cert", path(&broken))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broken.pem"), "{err}");
    h.login(bob).await.unwrap();

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in streams {
        let rounds = s.await.unwrap().expect("no streaming session dropped");
        assert!(rounds > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_drains_then_ends_sessions_with_57p01() {
    let _heavy = proxy_testkit::world::heavy().await;
    let world = World::start().await;
    let config = world
        .config()
        .set("shutdown", "drain_timeout", "1500ms")
        .set("admin", "bind", "127.0.0.1:0");
    let h = world.proxy(config).await;
    let admin = h.admin();
    let addr = h.addr();
    let alice = world.client("alice");
    let cn = alice.common_name.as_str();

    // One session finishes its work inside the drain window; one outlives it.
    let (quick, _quick_conn) = h.connect_watched(&alice, cn, "dev").await.unwrap();
    let (slow, slow_conn) = h.connect_watched(&alice, cn, "dev").await.unwrap();
    let quick_work = tokio::spawn(async move {
        quick.simple_query("select pg_sleep(1.0)").await?;
        drop(quick);
        Ok::<(), tokio_postgres::Error>(())
    });
    let slow_work = tokio::spawn(async move { slow.simple_query("select pg_sleep(30)").await });
    // Both queries run before the shutdown begins.
    let role = world.role(&alice);
    tokio::join!(
        wait_for_query(world.pg, &role, "pg_sleep(1.0)"),
        wait_for_query(world.pg, &role, "pg_sleep(30)")
    );

    let proxy_testkit::world::TestProxy { running, .. } = h;
    let started = Instant::now();
    let shutdown = tokio::spawn(running.shutdown());
    let unready = eventually(Duration::from_millis(500), || async {
        (http(admin, "GET", "/readyz").await.0 == 503).then_some(())
    })
    .await;
    assert!(unready.is_some(), "unready at once");
    let closed = eventually(Duration::from_millis(500), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(closed.is_some(), "listeners are closed");

    quick_work
        .await
        .unwrap()
        .expect("the quick session completes");
    let err = slow_work.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    let _ = slow_conn.await;
    let report = shutdown.await.unwrap();
    assert_eq!(report.terminated, 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_limit_refuses_with_its_sqlstate() {
    let world = World::start().await;
    let config = world
        .config()
        .set("limits", "max_connections", 3)
        .set("limits", "max_connections_per_identity", 2)
        .set("limits", "idle_timeout", "700ms");
    let h = world.proxy(config).await;
    let alice = world.client("alice");
    let other = world.client("alice-two");
    let cn = alice.common_name.as_str();

    let a1 = h.login(&alice).await.unwrap();
    let a2 = h.login(&alice).await.unwrap();
    let err = h.login(&alice).await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("53300"),
        "per identity: {err}"
    );
    // The refused connection counts until the proxy has closed it (its client may read the
    // refusal first).
    let closed = eventually(Duration::from_secs(5), || async {
        (h.running.shared().open_connections() == 2).then_some(())
    })
    .await;
    assert!(closed.is_some(), "the refused connection is released");
    let b1 = h.login(&other).await.unwrap();
    // Over the global limit the client is refused at its SSLRequest, before any
    // handshake (libpq reports an error response during the SSL exchange).
    let refusal = refused_at_ssl_request(h.addr()).await.expect("refused");
    assert_eq!(refusal.code, "53300", "global: {refusal:?}");
    assert_eq!(refusal.message, "sorry, too many clients already");
    drop((a1, a2, b1));

    // Idle sessions are ended with 57P05 (PostgreSQL's idle-session timeout code). The
    // next login works once the proxy has seen the three sessions go.
    let (client, conn) = eventually(Duration::from_secs(5), || async {
        h.connect_watched(&alice, cn, "dev").await.ok()
    })
    .await
    .expect("the freed slots are reused");
    client.simple_query("select 1").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle session is ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&ended).as_deref(), Some("57P05"), "{ended}");

    // The idle session's record follows its FATAL.
    let records = eventually(Duration::from_secs(10), || async {
        let records = h.audit(0).await;
        records
            .iter()
            .any(|r| r["close_reason"] == "idle_timeout")
            .then_some(records)
    })
    .await
    .expect("the idle session's audit record");
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["refusal"]["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"max_connections_per_identity"),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"max_connections"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_end_at_their_maximum_lifetime_and_handshakes_queue() {
    let _heavy = proxy_testkit::world::heavy().await;
    let world = World::start().await;
    let config = world
        .config()
        .set("limits", "max_session_lifetime", "800ms")
        .set("limits", "max_handshakes", 1)
        .set("limits", "handshake_timeout", "700ms")
        .edit_listener("main", |l| l.set("login_timeout", "1500ms"));
    let h = world.proxy(config).await;
    let alice = world.client("alice");
    let (client, conn) = h
        .connect_watched(&alice, &alice.common_name, "dev")
        .await
        .unwrap();
    let err = client.simple_query("select pg_sleep(5)").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");
    let _ = conn.await;

    // A client that asked for TLS and then stalls holds no handshake slot (the slot is
    // taken once a ClientHello has arrived): the next client logs in at once.
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    silent
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    silent.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let started = Instant::now();
    h.login(&alice).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    // One that sends its ClientHello and then stalls mid-handshake holds the only slot
    // until the handshake timeout; the next client waits for it instead of being refused.
    // (Waiting for the slot counts against the waiting client's own handshake timeout,
    // so it arrives once the stalled handshake is well under way.)
    let stalled = stall_after_client_hello(h.addr()).await;
    let stalled_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(350)).await;
    h.login(&alice).await.unwrap();
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(650),
        "logged in {:?} after the stalled handshake began",
        stalled_at.elapsed()
    );
    drop((silent, stalled));
}

/// The real binary: SIGHUP reloads (a broken file is counted and kept out), SIGTERM drains
/// and exits 0; its log holds none of the secrets the chain handed it.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_reloads_on_sighup_and_exits_0_on_sigterm() {
    use nix::sys::signal::Signal;
    let world = World::start().await;
    let alice = world.client("alice");
    let config = world.config().set("shutdown", "drain_timeout", "1s");
    let proxy = world
        .proxy_process_with(&config, |b| {
            b.env("REDSHIFT_IAM_PROXY_ADMIN_BIND", "127.0.0.1:0")
        })
        .await;
    let admin = proxy
        .admin
        .expect("the admin listener from the environment");
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200);
    // A login through the binary: the chain issues it AWS keys and a database password.
    let client = proxy
        .connect_to(proxy.addr(), Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.process.logs()));
    assert_eq!(current_user(&client).await, world.iam_user(&alice));
    drop(client);

    // A good reload, then a broken one (a key the configuration does not have).
    let process = &proxy.process;
    process.signal(Signal::SIGHUP).unwrap();
    assert!(
        process
            .wait_for_log("configuration reloaded", Duration::from_secs(5))
            .await
    );
    let broken = config
        .set("log", "format", "json")
        .set("log", "no_such_key", true);
    std::fs::write(process.config_path(), broken.to_toml()).unwrap();
    process.signal(Signal::SIGHUP).unwrap();
    assert!(
        process
            .wait_for_log("reload failed", Duration::from_secs(5))
            .await
    );
    let (_, m) = http(admin, "GET", "/metrics").await;
    assert_eq!(
        sample(&m, "redshift_iam_proxy_reloads_total{outcome=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "redshift_iam_proxy_reloads_total{outcome=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(http(admin, "GET", "/readyz").await.0, 200, "still serving");

    process.signal(Signal::SIGTERM).unwrap();
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap()
        .expect("the proxy exits");
    assert_eq!(status.code(), Some(0), "{}", process.logs());
    let logs = process.logs();
    for session in world.emulator.issued_sessions() {
        assert!(!logs.contains(session.secret_access_key.expose_secret()));
        assert!(!logs.contains(session.session_token.expose_secret()));
    }
    for credential in world.emulator.issued_credentials().all() {
        assert!(!logs.contains(credential.password.expose_secret()));
    }
}

/// The audit record of a refused certificate still says who tried: the presented
/// certificate's fields, as parsed from the certificate, next to the refusal reason.
#[tokio::test(flavor = "multi_thread")]
async fn refused_certificates_are_audited_with_the_presented_fields() {
    use sha2::{Digest, Sha256};
    let world = World::start().await;
    let expired = world.client_with(ClientCertSpec::new("expired").expired());
    // Revoked before the proxy loads the world's CRL.
    let revoked = world.client_with(ClientCertSpec::new("revoked").revoked());
    let h = world.proxy(world.config()).await;
    for cert in [&expired, &revoked] {
        let err = h
            .connect(Some(cert), &cert.common_name, "dev")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    }

    let records = h.audit(2).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for (cert, detail) in [(&expired, "expired"), (&revoked, "revoked")] {
        let record = records
            .iter()
            .find(|r| {
                r["client_certificate"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("CN={},", cert.common_name)))
            })
            .unwrap_or_else(|| panic!("no record for {}: {records:#?}", cert.common_name));
        assert_eq!(record["outcome"], "refused");
        assert_eq!(record["refusal"]["reason"], "client_certificate");
        assert_eq!(record["refusal"]["sqlstate"], "28000");
        assert!(
            record["refusal"]["detail"]
                .as_str()
                .unwrap()
                .contains(detail),
            "{record:#}"
        );
        let presented = &record["client_certificate"];
        assert_eq!(presented["issuer"], world.pki.root().subject_dn());
        assert_eq!(presented["serial"], cert.serial.to_hex());
        assert_eq!(
            presented["fingerprint_sha256"],
            hex::encode(Sha256::digest(&cert.cert_der))
        );
        let not_after = time::OffsetDateTime::parse(
            presented["not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            not_after.unix_timestamp(),
            cert.not_after.unix_timestamp(),
            "{record:#}"
        );
        assert_eq!(record["client_tls"]["version"], "TLSv1.3");
        assert!(record.get("rule").is_none() && record.get("db_user").is_none());
    }
    // No login was attempted for them.
    assert!(world.emulator.cloudtrail().is_empty());
}

/// `[[listener]] max_connections` replaces `[limits] max_connections_per_listener` for its
/// listener (here: allows more), and refuses beyond it with 53300 like the other limits.
#[tokio::test(flavor = "multi_thread")]
async fn a_listener_max_connections_overrides_the_shared_per_listener_limit() {
    let world = World::start().await;
    let config = world
        .config()
        .set("limits", "max_connections_per_listener", 1)
        .set("admin", "bind", "127.0.0.1:0")
        .edit_listener("main", |l| l.set("max_connections", 2));
    let h = world.proxy(config).await;
    let alice = world.client("alice");
    let first = h.login(&alice).await.unwrap();
    let second = h.login(&alice).await.unwrap();
    let refusal = refused_at_ssl_request(h.addr()).await.expect("refused");
    assert_eq!(refusal.code, "53300", "{refusal:?}");
    second.simple_query("select 1").await.unwrap();
    drop(first);
    // The slot is free again once the first connection is gone.
    let third = eventually(Duration::from_secs(5), || async {
        h.login(&alice).await.ok()
    })
    .await
    .expect("the freed slot is reused");
    third.simple_query("select 1").await.unwrap();

    let records = h.audit(3).await;
    let refusal = records
        .iter()
        .find(|r| r["refusal"]["reason"] == "max_connections_per_listener")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(refusal["refusal"]["sqlstate"], "53300");
    assert_eq!(refusal["listener"], "main");
    let (_, m) = http(h.admin(), "GET", "/metrics").await;
    assert!(
        sample(
            &m,
            "redshift_iam_proxy_connections_refused_total{listener=\"main\",reason=\"max_connections_per_listener\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

/// `aws_calls_total{api,outcome}` and the latency histogram count every request the proxy
/// sends to AWS, retries included: per API, exactly what the emulator received.
#[tokio::test(flavor = "multi_thread")]
async fn aws_calls_are_counted_by_api_and_outcome_as_the_emulator_saw_them() {
    let world = World::start().await;
    let alice = world.client("alice");
    let bob = world.client_with(ClientCertSpec::new("bob").uri(format!(
        "spiffe://corp.example/ns/bi/sa/{}",
        world.name("bob")
    )));
    let bi_reader = world.name("bireader");
    // A listener per target; alice's rule uses the default role, the BI rule its own.
    let config = with_admin(&world, world.config())
        .listener(world.listener("iam", "cluster-iam"))
        .listener(world.listener("serverless", "serverless"))
        .without_rules()
        .rule(
            Rule::new("analysts")
                .matching("cn", alice.common_name.as_str())
                .users(["{cn}"])
                .databases(["dev"]),
        )
        .rule(
            Rule::new("bi")
                .matching("san_uri", "spiffe://corp.example/ns/bi/*")
                .users(["{san_uri_path}", bi_reader.as_str()])
                .databases(["dev"])
                .set("role_arn", bi_role_arn()),
        );
    let h = world.proxy(config).await;
    let login = |listener: &str, cert: &ClientCert, user: &str| {
        let (addr, cert, user) = (h.listener(listener), cert.clone(), user.to_string());
        let h = &h;
        async move {
            let client = h
                .connect_to(addr, Some(&cert), &user, "dev")
                .await
                .unwrap_or_else(|e| panic!("{user} on {addr}: {e}"));
            client.simple_query("select 1").await.unwrap();
        }
    };
    let cn = alice.common_name.as_str();

    // One call of each API (alice's role session is shared by the three targets).
    login("main", &alice, cn).await;
    login("iam", &alice, cn).await;
    login("serverless", &alice, cn).await;
    // Failures the SDK retries: a throttled GetClusterCredentials and a GetCredentials
    // whose connection breaks without an answer.
    let faults = world.emulator.faults();
    faults.throttle_next(Some(Api::GetClusterCredentials), 1);
    faults.drop_next(Some(Api::GetCredentials), 1);
    login("main", &bob, &bi_reader).await;
    login("serverless", &bob, &bi_reader).await;

    let (status, m) = http(h.admin(), "GET", "/metrics").await;
    assert_eq!(status, 200);
    let calls = |api: &str, outcome: &str| {
        sample(
            &m,
            &format!("redshift_iam_proxy_aws_calls_total{{api=\"{api}\",outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };
    let outcomes = [
        "success",
        "throttled",
        "client_error",
        "server_error",
        "timeout",
        "transport",
    ];
    for api in Api::ALL {
        let name = api.name();
        let counted: u64 = outcomes.iter().map(|o| calls(name, o)).sum();
        assert_eq!(
            counted,
            world.emulator.calls(api),
            "{name}: the proxy counted {counted}, the emulator received {}\n{m}",
            world.emulator.calls(api)
        );
        let timed = sample(
            &m,
            &format!("redshift_iam_proxy_aws_call_duration_seconds_count{{api=\"{name}\"}}"),
        )
        .unwrap_or(0.0) as u64;
        assert_eq!(timed, counted, "{name}: one latency sample per call\n{m}");
    }
    assert_eq!(calls("CreateSession", "success"), 2, "one session per role");
    assert_eq!(calls("GetClusterCredentials", "throttled"), 1, "{m}");
    assert_eq!(calls("GetClusterCredentials", "success"), 2, "{m}");
    assert_eq!(calls("GetClusterCredentialsWithIAM", "success"), 1, "{m}");
    assert_eq!(calls("GetCredentials", "transport"), 1, "{m}");
    assert_eq!(calls("GetCredentials", "success"), 2, "{m}");
}

/// `/readyz` reflects the proxy's own AWS credentials without calling AWS: once
/// CreateSession is refused and no credentials are held it turns 503 with the reason, and
/// 200 again when the cause is fixed; `/livez` stays 200 throughout.
#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_proxys_aws_credentials() {
    let world = World::start().await;
    let alice = world.client("alice");
    let h = world
        .proxy(world.config().set("admin", "bind", "127.0.0.1:0"))
        .await;
    let admin = h.admin();
    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(
        status, 200,
        "no credentials fetched yet is not a failure: {body}"
    );

    // The proxy's Roles Anywhere certificate is replaced by one from a CA the trust anchor
    // does not know (a renewal gone wrong): CreateSession is refused.
    let identity = &world.proxy_identity;
    let good_cert = std::fs::read(&identity.cert_pem).unwrap();
    let good_key = std::fs::read(&identity.key_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rogue = TestPki::new(dir.path())
        .unwrap()
        .client_cert(ClientCertSpec::new("redshift-iam-proxy"))
        .unwrap();
    std::fs::copy(&rogue.cert_pem, &identity.cert_pem).unwrap();
    std::fs::copy(&rogue.key_pem, &identity.key_pem).unwrap();
    let err = h.login(&alice).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");

    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("AWS credentials")
            && body.contains(&access_role_arn())
            && body.contains("AccessDenied"),
        "{body}"
    );
    assert_eq!(http(admin, "GET", "/livez").await.0, 200);
    assert_eq!(http(admin, "GET", "/startupz").await.0, 200);
    assert!(
        h.metric(
            "redshift_iam_proxy_aws_calls_total{api=\"CreateSession\",outcome=\"client_error\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{}",
        h.metrics()
    );

    // The right certificate is back: the next CreateSession succeeds and so does readiness.
    std::fs::write(&identity.cert_pem, good_cert).unwrap();
    std::fs::write(&identity.key_pem, good_key).unwrap();
    // The failed credential call backs off (1 s, doubling): the login works once it passed.
    let client = eventually(Duration::from_secs(10), || async {
        h.login(&alice).await.ok()
    })
    .await
    .expect("the login works once the backoff has passed");
    client.simple_query("select 1").await.unwrap();
    let (status, body) = http(admin, "GET", "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "ready\n");
}
