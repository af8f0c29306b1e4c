//! The session path end to end: real clients (psql, tokio-postgres) with client
//! certificates → the proxy → the credential chain (Roles Anywhere and Redshift in the AWS
//! emulator) → verify-full TLS → the Redshift stand-in → PostgreSQL.

use futures::{SinkExt, StreamExt};
use proxy_testkit::config::{path, Rule};
use proxy_testkit::emulator::Api;
use proxy_testkit::observe::wait_for_query;
use proxy_testkit::pki::TestPki;
use proxy_testkit::standin::{AuthMethod, LoginOutcome};
use proxy_testkit::world::{current_user, sqlstate, World, WorldOptions};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn psql_session_runs_as_the_granted_user() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");

    let out = proxy
        .psql(&alice)
        .user(&alice.common_name)
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.value(), world.iam_user(&alice));

    // NOTICEs reach the client, and errors arrive as errors without ending the proxy.
    let out = proxy
        .psql(&alice)
        .user(&alice.common_name)
        .run("do $$ begin raise notice 'hello from upstream'; end $$")
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr.contains("NOTICE:  hello from upstream"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn placeholder_user_takes_the_rules_default_user() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let client = proxy.connect(Some(&alice), "iam", "dev").await.unwrap();
    assert_eq!(current_user(&client).await, world.iam_user(&alice));
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_transactions_and_errors_through_tokio_postgres() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let client = proxy.login(&world.client("alice")).await.unwrap();

    // Extended protocol with parameters.
    let row = client
        .query_one(
            "select $1::int + $2::int, $3::text",
            &[
                &40i32 as &(dyn tokio_postgres::types::ToSql + Sync),
                &2i32,
                &"x&user=y",
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "x&user=y");

    // Transaction with rollback.
    client
        .batch_execute("create temp table t (v int)")
        .await
        .unwrap();
    client
        .batch_execute("begin; insert into t values (1); rollback;")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // An error is an error, and the session carries on.
    let err = client.query_one("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_in_and_out_are_byte_exact() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let client = proxy.login(&world.client("alice")).await.unwrap();
    client
        .batch_execute("create temp table blobs (line text)")
        .await
        .unwrap();

    // 8 MiB of lines in 64 KiB chunks, all bytes COPY text format passes unchanged.
    let mut sent = Sha256::new();
    let sink = client.copy_in("copy blobs from stdin").await.unwrap();
    futures::pin_mut!(sink);
    let mut total = 0usize;
    for chunk in 0..128u32 {
        let mut data = Vec::with_capacity(65536);
        let mut i = 0u32;
        while data.len() < 65536 - 80 {
            let line = format!(
                "{chunk:04}-{i:06}-{}\n",
                "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)
            );
            data.extend_from_slice(line.as_bytes());
            i += 1;
        }
        sent.update(&data);
        total += data.len();
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert!(rows > 90_000, "{rows} rows");

    let stream = client
        .copy_out("copy (select line from blobs) to stdout")
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let mut received = Sha256::new();
    let mut received_len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received_len += chunk.len();
        received.update(&chunk);
    }
    assert_eq!(received_len, total);
    assert_eq!(received.finalize(), sent.finalize());
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_ctrl_c_cancels_a_running_query() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let mut command = tokio::process::Command::from(
        proxy
            .psql(&alice)
            .user(&alice.common_name)
            .command("select pg_sleep(30)"),
    );
    command.kill_on_drop(true);
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap() as i32;
    // Ctrl-C once PostgreSQL runs the query.
    wait_for_query(world.pg, &world.role(&alice), "pg_sleep(30)").await;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("psql ends soon after Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        world.standin().cancel_requests(),
        1,
        "relayed to the stand-in"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_cancel_token_cancels_through_the_proxy() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let client = proxy.login(&alice).await.unwrap();
    let token = client.cancel_token();
    let tls = proxy.tls_connector(None);
    let (pg, role) = (world.pg, world.role(&alice));
    let canceller = tokio::spawn(async move {
        wait_for_query(pg, &role, "pg_sleep(30)").await;
        token.cancel_query(tls).await
    });
    let err = client.query("select pg_sleep(30)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    canceller.await.unwrap().unwrap();
    assert_eq!(world.standin().cancel_requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_certificates_are_refused_with_28000() {
    let world = World::start().await;
    let alice = world.client("alice");
    let refused = world.refused_client_certs();
    let proxy = world.proxy(world.config()).await;
    for (cert, words) in &refused {
        let user = cert.as_ref().map_or("nobody", |c| c.common_name.as_str());
        let err = proxy.connect(cert.as_ref(), user, "dev").await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{words}: {err}");
        let text = err.as_db_error().unwrap().message().to_lowercase();
        assert!(text.contains(words), "{words}: {text}");
    }
    assert!(
        world.emulator.cloudtrail().is_empty(),
        "no refused certificate reaches AWS"
    );
    // The proxy keeps serving good clients.
    proxy.login(&alice).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_refusals_say_what_was_denied_but_not_what_is_allowed() {
    let world = World::start().await;
    let alice = world.client("alice");
    let bob = world.client("bob");
    // alice's rule is named `analysts`; bob may only be himself, on `analytics`.
    let config = world
        .config()
        .without_rules()
        .rule(
            Rule::new("analysts")
                .matching("cn", alice.common_name.as_str())
                .users(["{cn}"])
                .databases(["*"]),
        )
        .rule(
            Rule::new("bob")
                .matching("cn", bob.common_name.as_str())
                .targets(["cluster"])
                .users([bob.common_name.as_str()])
                .databases(["analytics"]),
        );
    let proxy = world.proxy(config).await;
    for (user, db) in [
        (alice.common_name.as_str(), "analytics"), // user not granted
        (bob.common_name.as_str(), "dev"),         // database not granted
        ("iam", "analytics"),                      // placeholder, but no default user
    ] {
        let err = proxy.connect(Some(&bob), user, db).await.unwrap_err();
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some("28000"),
            "{user}@{db}: {err}"
        );
        let message = err.as_db_error().unwrap().message().to_string();
        assert!(
            !message.contains("analytics") || db == "analytics",
            "{message}"
        );
        assert!(
            !message.contains("analysts"),
            "rule names stay private: {message}"
        );
    }
    // No rule matches a certificate from the right CA with an unknown CN.
    let stranger = world.client("mallory");
    let err = proxy
        .connect(Some(&stranger), &stranger.common_name, "dev")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    assert!(
        world.emulator.cloudtrail().is_empty(),
        "refusals never ask AWS for credentials"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_clients_are_told_to_use_tls() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .user("alice")
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = match config.connect(tokio_postgres::NoTls).await {
        Ok(_) => panic!("a plaintext login must fail"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let db = err.as_db_error().unwrap();
    assert!(db.message().contains("TLS"), "{db:?}");
    assert!(db.hint().unwrap_or_default().contains("sslmode"), "{db:?}");
}

/// A cached password the upstream no longer accepts (it expired early, as after a clock
/// step or a rotation) is evicted, and the login retried once with a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_credential_is_evicted_and_the_login_retried_once() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let user = world.iam_user(&alice);
    let client = proxy.login(&alice).await.unwrap();
    assert_eq!(current_user(&client).await, user);
    drop(client);
    assert_eq!(world.emulator.calls(Api::GetClusterCredentials), 1);

    // Every password issued so far expires at the stand-in; the proxy's cache still holds
    // alice's as valid for most of an hour.
    world.emulator.expire_db_credentials().await.unwrap();
    let client = proxy.login(&alice).await.unwrap();
    assert_eq!(current_user(&client).await, user);
    assert_eq!(
        world.emulator.calls(Api::GetClusterCredentials),
        2,
        "one fresh credential for the retry"
    );
    let outcomes: Vec<LoginOutcome> = world
        .standin()
        .logins()
        .into_iter()
        .filter(|l| l.user == user)
        .map(|l| l.outcome)
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(outcomes[0], LoginOutcome::Ok);
    assert!(
        matches!(&outcomes[1], LoginOutcome::Refused { sqlstate, message }
            if sqlstate == "28000" && message.contains("expired")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], LoginOutcome::Ok);
}

/// When the retry's fresh password is refused too, the client gets the upstream's SQLSTATE
/// (Redshift refuses a user that does not exist as a wrong password, 28000) and no password
/// appears in the error.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_with_the_upstreams_sqlstate() {
    let world = World::start().await;
    // Without AutoCreate, GetClusterCredentials hands out passwords for a user that does not
    // exist: every login with them fails as a wrong password.
    let config = world
        .config()
        .edit_target("cluster", |t| t.set("auto_create", false));
    let proxy = world.proxy(config).await;
    let carol = world.client("carol");
    let err = proxy.login(&carol).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        format!(
            "password authentication failed for user \"IAM:{}\"",
            carol.common_name
        )
    );
    assert_eq!(
        world.emulator.calls(Api::GetClusterCredentials),
        2,
        "the first password refused, one retry with a fresh one"
    );
    let issued = world.emulator.issued_credentials().all();
    assert_eq!(issued.len(), 2);
    for credential in issued {
        use secrecy::ExposeSecret;
        let password = credential.password.expose_secret();
        assert!(!err.to_string().contains(password), "no password in errors");
    }
}

/// The stand-in challenges with md5 by default and with Redshift's SHA-256 digest for the
/// users configured so: the proxy logs in with either.
#[tokio::test(flavor = "multi_thread")]
async fn md5_and_sha256_digest_upstream_logins_work() {
    let world = World::start_with(WorldOptions {
        sha256_users: vec!["IAMA:digest-*".into()],
        ..WorldOptions::default()
    })
    .await;
    let proxy = world.proxy(world.config()).await;
    for (name, method) in [
        ("md5", AuthMethod::Md5),
        ("digest", AuthMethod::Sha256Digest),
    ] {
        let cert = world.client(name);
        let client = proxy.login(&cert).await.unwrap();
        assert_eq!(current_user(&client).await, world.iam_user(&cert));
        let logins = world.standin().logins();
        let login = logins
            .iter()
            .find(|l| l.user == world.iam_user(&cert))
            .unwrap();
        assert_eq!(login.auth_method, Some(method), "{login:?}");
        assert_eq!(login.outcome, LoginOutcome::Ok);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_always_verify_full() {
    let world = World::start().await;
    let alice = world.client("alice");
    // An upstream CA the stand-in's certificate does not chain to.
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(other_dir.path()).unwrap();
    let config = world.config().edit_target("cluster", |t| {
        t.set("ca_bundle", path(other.ca_cert_path()))
    });
    let proxy = world.proxy(config).await;
    let err = proxy.login(&alice).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");

    // The right CA but a name the certificate does not carry.
    let config = world
        .config()
        .edit_target("cluster", |t| t.set("host", "db.not-this-server.example"));
    let proxy = world.proxy(config).await;
    let err = proxy.login(&alice).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    assert!(
        world
            .standin()
            .logins()
            .iter()
            .all(|l| l.outcome == LoginOutcome::Abandoned),
        "no password was ever sent over an unverified connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_cut_off_by_the_login_timeout() {
    let world = World::start().await;
    let config = world
        .config()
        .edit_listener("main", |l| l.set("login_timeout", "500ms"));
    let proxy = world.proxy(config).await;
    let mut silent = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the proxy closes a silent connection")
    .unwrap_or(0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Either a plaintext ErrorResponse or a plain close.
    assert!(n == 0 || buf[0] == b'E', "{:?}", &buf[..n]);
}
