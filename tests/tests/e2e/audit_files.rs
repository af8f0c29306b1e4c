//! Audit files operators can ship (issue 17): the proxy rotates its audit file by size and
//! reopens it on every reload (logrotate renames, then SIGHUP), and neither loses a record.

use proxy_testkit::world::World;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Every audit record in the files of `dir` whose name starts with `prefix`.
fn records_in(dir: &Path, prefix: &str) -> Vec<Value> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        records.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    records
}

/// The closed-session records in the audit files of `dir`, once there are `n` of them (or
/// after 10 s). A session's record is written when the proxy has seen it close, a moment
/// after the client left.
async fn closed_sessions(dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: Vec<Value> = records_in(dir, "audit.jsonl")
            .into_iter()
            .filter(|r| r["kind"] == "session" && r["outcome"] == "closed")
            .collect();
        if sessions.len() >= n || Instant::now() > deadline {
            return sessions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_by_size_and_by_logrotate_loses_no_record() {
    let world = World::start().await;
    let config =
        world
            .config()
            .set("audit", "max_file_size", "64KiB")
            .set("audit", "max_files", 100);
    let mut proxy = world.proxy(config.clone()).await;
    let alice = world.client("alice");
    let session = |proxy: &proxy_testkit::world::TestProxy| {
        let proxy_ca = proxy.ca.clone();
        let port = proxy.addr().port();
        let alice = alice.clone();
        async move {
            let client = proxy_testkit::client::connect(
                port,
                &proxy_ca,
                Some(&alice),
                &alice.common_name,
                "dev",
            )
            .await
            .expect("login");
            client.simple_query("select 1").await.unwrap();
        }
    };
    const BEFORE: usize = 40;
    const AFTER: usize = 80;
    const AFTER_BAD_RELOAD: usize = 5;
    for _ in 0..BEFORE {
        session(&proxy).await;
    }
    // logrotate (create mode): rename, then SIGHUP.
    let audit = proxy.audit_path.clone();
    let dir = audit.parent().unwrap().to_path_buf();
    std::fs::rename(&audit, dir.join("audit.jsonl-20261206")).unwrap();
    proxy.reload(config).await.expect("reload");
    for _ in 0..AFTER {
        session(&proxy).await;
    }
    // Rotated again, and this time the configuration has a mistake: the reload is refused,
    // the audit file is reopened all the same. (Only once every earlier session's record is
    // written, so the new file holds exactly the later ones.)
    assert_eq!(
        closed_sessions(&dir, BEFORE + AFTER).await.len(),
        BEFORE + AFTER
    );
    std::fs::rename(&audit, dir.join("audit.jsonl-20261207")).unwrap();
    std::fs::write(&proxy.file, "[[listener]]\nbind = ").unwrap();
    assert!(proxy.running.reload().await.is_err());
    for _ in 0..AFTER_BAD_RELOAD {
        session(&proxy).await;
    }

    const TOTAL: usize = BEFORE + AFTER + AFTER_BAD_RELOAD;
    let sessions = closed_sessions(&dir, TOTAL).await;
    assert_eq!(sessions.len(), TOTAL);
    let ids: HashSet<&str> = sessions
        .iter()
        .map(|r| r["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), TOTAL, "no record twice");
    let after_bad_reload = records_in(&dir, "audit.jsonl").len().saturating_sub(
        records_in(&dir, "audit.jsonl.").len() + records_in(&dir, "audit.jsonl-").len(),
    );
    assert_eq!(
        after_bad_reload, AFTER_BAD_RELOAD,
        "the refused reload reopened the file"
    );
    // The proxy rotated the new file by size at least once.
    assert!(dir.join("audit.jsonl.1").exists());
    let metrics = proxy.running.shared().metrics.encode();
    assert!(
        metrics.contains("redshift_iam_proxy_audit_records_dropped_total 0"),
        "{metrics}"
    );
}
