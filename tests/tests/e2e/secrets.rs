//! Secrets stay out of logs, audit records, metrics and error messages: a full session
//! scenario runs through the real chain with debug logging captured in-process, then
//! every captured byte of the proxy's log, its audit trail, its metrics and every
//! client-visible error is searched for the secrets the chain handled: the temporary AWS
//! keys the emulator issued to the proxy (secret access key, session token), every database
//! password it issued, and the private-key material in use.

use futures::{SinkExt, StreamExt};
use proxy_testkit::config::Rule;
use proxy_testkit::emulator::Api;
use proxy_testkit::observe::{captured_logs, wait_for_query};
use proxy_testkit::pki::ClientCertSpec;
use proxy_testkit::world::{World, WorldOptions};
use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;

/// The base64 lines of a PEM file's body: any one of them in a log would leak key bytes.
fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

/// Panics if `haystack` holds `secret`, or a run of 20 of its characters (secrets may be
/// logged truncated or split), showing where with the secret masked.
fn assert_absent(haystack: &str, what: &str, secret: &str) {
    assert!(secret.len() >= 20, "{what} is too short to search for");
    let windows = [&secret[..20], &secret[secret.len() - 20..]];
    for window in windows {
        if let Some(line) = haystack.lines().find(|l| l.contains(window)) {
            panic!(
                "{what} leaked: {}",
                line.replace(secret, "<SECRET>").replace(window, "<SECRET>")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_of_the_chain_reaches_logs_audit_metrics_or_errors() {
    let logs = captured_logs();
    let world = World::start_with(WorldOptions {
        sha256_users: vec!["IAMA:digest-*".into()],
        ..WorldOptions::default()
    })
    .await;
    // Every target: GetClusterCredentials (with and without AutoCreate), WithIAM and
    // serverless GetCredentials, each on a listener of its own.
    let config = world
        .config()
        .target(world.cluster_target("noauto").set("auto_create", false))
        .listener(world.listener("iam", "cluster-iam"))
        .listener(world.listener("serverless", "serverless"))
        .listener(world.listener("noauto", "noauto"))
        .without_rules()
        .rule(
            Rule::new("people")
                .matching("cn", "*")
                .users(["{cn}"])
                .default_user("{cn}")
                .databases(["dev"]),
        );
    let h = world.proxy(config).await;
    let alice = world.client("alice");
    let digest = world.client("digest");
    let expired = world.client_with(ClientCertSpec::new("expired").expired());
    let mut client_errors = Vec::new();
    // Connections made: each leaves exactly one audit record when it ends.
    let mut connections = 0;

    // A normal session: queries, COPY both ways, a query error, a cancel.
    let client = h.login(&alice).await.unwrap();
    connections += 1;
    client
        .batch_execute("create temp table t (v text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy t from stdin").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"row\n"))
        .await
        .unwrap();
    sink.finish().await.unwrap();
    let out = client.copy_out("copy t to stdout").await.unwrap();
    futures::pin_mut!(out);
    while out.next().await.is_some() {}
    client_errors.push(
        client
            .query("select 1/0", &[])
            .await
            .unwrap_err()
            .to_string(),
    );
    let token = client.cancel_token();
    let tls = h.tls_connector(None);
    let (pg, role) = (world.pg, world.role(&alice));
    let canceller = tokio::spawn(async move {
        wait_for_query(pg, &role, "pg_sleep(10)").await;
        token.cancel_query(tls).await
    });
    client_errors.push(
        client
            .query("select pg_sleep(10)", &[])
            .await
            .unwrap_err()
            .to_string(),
    );
    canceller.await.unwrap().unwrap();
    connections += 1;
    drop(client);

    // The stand-in's SHA-256 digest login (alice's was md5), WithIAM and serverless.
    drop(h.login(&digest).await.unwrap());
    for listener in ["iam", "serverless"] {
        drop(
            h.connect_to(
                h.listener(listener),
                Some(&alice),
                &alice.common_name,
                "dev",
            )
            .await
            .unwrap(),
        );
    }
    connections += 3;

    // A cached password expired early: evicted, and the login retried with a fresh one.
    world.emulator.expire_db_credentials().await.unwrap();
    drop(h.login(&alice).await.unwrap());
    connections += 1;
    // Fresh passwords refused twice (a user that does not exist, without AutoCreate).
    client_errors.push(
        h.connect_to(
            h.listener("noauto"),
            Some(&alice),
            &alice.common_name,
            "dev",
        )
        .await
        .unwrap_err()
        .to_string(),
    );
    connections += 1;
    // Credential service failures and certificate refusals.
    let carol = world.client("carol");
    world
        .emulator
        .faults()
        .throttle_next(Some(Api::GetClusterCredentials), 1000);
    client_errors.push(h.login(&carol).await.unwrap_err().to_string());
    world.emulator.faults().clear();
    client_errors.push(h.login(&expired).await.unwrap_err().to_string());
    connections += 2;

    // Every connection has ended and been audited (its log lines come before its record).
    let records = h.audit(connections).await;
    assert_eq!(records.len(), connections, "{records:#?}");
    logs.wait_for_line(&["DEBUG", "upstream login complete", &world.iam_user(&alice)])
        .await;

    let mut haystack = logs.proxy_text();
    haystack.push_str(&std::fs::read_to_string(&h.audit_path).unwrap());
    haystack.push_str(&h.metrics());
    for e in &client_errors {
        haystack.push('\n');
        haystack.push_str(e);
    }

    assert!(
        records
            .iter()
            .filter(|r| r["outcome"] == "closed")
            .all(|r| haystack.contains(&format!(
                "session opened session_id={}",
                r["session_id"].as_str().unwrap()
            ))),
        "the proxy's own lines are searched"
    );

    let sessions = world.emulator.issued_sessions();
    assert_eq!(sessions.len(), 1, "one Roles Anywhere session");
    for session in &sessions {
        assert_absent(
            &haystack,
            "the AWS secret access key",
            session.secret_access_key.expose_secret(),
        );
        assert_absent(
            &haystack,
            "the AWS session token",
            session.session_token.expose_secret(),
        );
    }
    let passwords = world.emulator.issued_credentials().all();
    // alice ×2 (cluster, then after the early expiry), digest, WithIAM, serverless, and two
    // for the user that does not exist.
    assert!(passwords.len() >= 7, "{passwords:?}");
    for credential in &passwords {
        assert_absent(
            &haystack,
            &format!("the password of {}", credential.user),
            credential.password.expose_secret(),
        );
    }
    let key_files = [
        world.server.key_pem.as_path(),
        alice.key_pem.as_path(),
        digest.key_pem.as_path(),
        world.pki.root().key_pem.as_path(),
        world.proxy_identity.key_pem.as_path(),
        world.trust_anchor.key_pem.as_path(),
    ];
    for key in key_files {
        for line in pem_body_lines(key) {
            assert!(
                !haystack.contains(&line),
                "bytes of {} appear in logs, audit, metrics or errors",
                key.display()
            );
        }
    }
}

/// `[security] strict_key_permissions`: a key that becomes readable by others is refused
/// on reload, by file and mode, and the proxy keeps serving with what it loaded before.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn strict_key_permissions_refuse_a_readable_key_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::start().await;
    let h = world
        .proxy(
            world
                .config()
                .set("security", "strict_key_permissions", true),
        )
        .await;
    let alice = world.client("alice");
    let key = world.server.key_pem.as_path();
    let chmod = |mode| std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode));

    chmod(0o640).unwrap();
    let err = h.running.reload().await.unwrap_err().to_string();
    for part in [
        "listener[0].tls_key",
        &key.display().to_string(),
        "mode 0640",
        "strict_key_permissions",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    for line in pem_body_lines(key) {
        assert!(!err.contains(&line), "key material in: {err}");
    }
    h.login(&alice)
        .await
        .expect("the running configuration still serves");

    chmod(0o600).unwrap();
    h.running.reload().await.expect("an owner-only key reloads");
    tokio::time::timeout(Duration::from_secs(20), h.login(&alice))
        .await
        .unwrap()
        .unwrap();
}
