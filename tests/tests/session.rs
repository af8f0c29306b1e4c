//! The session path end to end: real clients (psql, tokio-postgres) with client
//! certificates → the proxy → verify-full TLS → a real PostgreSQL server.

use futures::{SinkExt, StreamExt};
use proxy_testkit::harness::{sqlstate, HarnessOptions, ProxyHarness};
use proxy_testkit::pg::PgServer;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn psql_session_runs_as_the_granted_user() {
    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;

    let out = h
        .psql(&h.clients.alice)
        .user("alice")
        .dbname("postgres")
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.value(), pg_user);

    // NOTICEs reach the client, and errors arrive as errors without ending the proxy.
    let out = h
        .psql(&h.clients.alice)
        .user("alice")
        .dbname("postgres")
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
    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;
    let client = h
        .connect(Some(&h.clients.alice), "iam", "postgres")
        .await
        .unwrap();
    let row = client.query_one("select current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), pg_user);
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_transactions_and_errors_through_tokio_postgres() {
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();

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
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
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
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    let mut command = tokio::process::Command::from(
        h.psql(&h.clients.alice)
            .user("alice")
            .dbname("postgres")
            .command("select pg_sleep(30)"),
    );
    command.kill_on_drop(true);
    let child = command.spawn().unwrap();
    let pid = child.id().unwrap() as i32;
    // Give the query time to start, then press Ctrl-C.
    tokio::time::sleep(Duration::from_millis(1500)).await;
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
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_cancel_token_cancels_through_the_proxy() {
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    let token = client.cancel_token();
    let tls = h.tls_connector(None);
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tls).await
    });
    let err = client.query("select pg_sleep(30)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    canceller.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_client_certificates_are_refused_with_28000() {
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    let c = &h.clients;
    let cases = [
        (Some(&c.expired), "expired"),
        (Some(&c.not_yet_valid), "not yet valid"),
        (Some(&c.revoked), "revoked"),
        (Some(&c.other_ca), "trusted"),
        (Some(&c.server_auth_only), "client authentication"),
        (None, "certificate is required"),
    ];
    for (cert, words) in cases {
        let err = h.connect(cert, "alice", "postgres").await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{words}: {err}");
        let text = err.as_db_error().unwrap().message().to_lowercase();
        assert!(text.contains(words), "{words}: {text}");
    }
    // The proxy keeps serving good clients.
    h.connect(Some(&c.alice), "alice", "postgres")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_refusals_say_what_was_denied_but_not_what_is_allowed() {
    let h = ProxyHarness::start().await;
    h.provision("bob").await;
    let c = &h.clients;
    for (cert, user, db) in [
        (&c.bob, "alice", "analytics"), // user not granted
        (&c.bob, "bob", "postgres"),    // database not granted
        (&c.bob, "iam", "analytics"),   // placeholder, but no default user
    ] {
        let err = h.connect(Some(cert), user, db).await.unwrap_err();
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
    let stranger = h
        .pki
        .client_cert(proxy_testkit::pki::ClientCertSpec::new("mallory"))
        .unwrap();
    let err = h
        .connect(Some(&stranger), "mallory", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    assert_eq!(
        h.credentials.calls(),
        0,
        "refusals never ask for credentials"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_clients_are_told_to_use_tls() {
    let h = ProxyHarness::start().await;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(h.addr().port())
        .user("alice")
        .dbname("postgres")
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

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_credential_is_evicted_and_the_login_retried_once() {
    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;
    h.credentials.serve_stale_once("alice", "not-the-password");
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    let who: String = client
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, pg_user);
    assert_eq!(h.credentials.invalidations(), 1);
    assert_eq!(h.credentials.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_with_the_upstreams_sqlstate() {
    let h = ProxyHarness::start().await;
    h.provision("alice").await;
    // Stale twice: the single retry also fails.
    h.credentials.serve_stale_once("alice", "wrong-1");
    h.credentials.serve_stale_once("alice", "wrong-2");
    let err = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    assert!(
        !err.to_string().contains("wrong-"),
        "no password in errors: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn md5_upstream_users_log_in_too() {
    let h = ProxyHarness::start().await;
    let pg_user = PgServer::unique_name("md5");
    h.pg.create_md5_user(&pg_user, "md5-secret").await.unwrap();
    h.credentials.set("alice", &pg_user, "md5-secret");
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap();
    let who: String = client
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, pg_user);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_is_always_verify_full() {
    // An upstream CA the server's certificate does not chain to.
    let other_dir = tempfile::tempdir().unwrap();
    let other = proxy_testkit::pki::TestPki::new(other_dir.path()).unwrap();
    let h = ProxyHarness::start_with(HarnessOptions {
        upstream_ca: Some(other.ca_cert_path().to_path_buf()),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let err = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");

    // The right CA but a name the certificate does not carry.
    let h = ProxyHarness::start_with(HarnessOptions {
        upstream_host: "db.not-this-server.example".into(),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let err = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_cut_off_by_the_login_timeout() {
    let h = ProxyHarness::start_with(HarnessOptions {
        login_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
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
