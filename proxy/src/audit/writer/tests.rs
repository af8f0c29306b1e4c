use super::*;
use crate::audit::{rfc3339, AuditRecord, Outcome};
use std::time::SystemTime;

fn record(id: &str) -> AuditRecord {
    let mut r = AuditRecord::new(id.into(), "main", "127.0.0.1:5000".into());
    r.outcome = Outcome::Closed;
    r.time = rfc3339(SystemTime::now());
    r
}

#[test]
fn records_are_json_lines_in_order_and_reopen_switches_files() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    let log = AuditLog::start(Destination::File(first.clone()), 16).unwrap();
    log.record(&record("one"));
    log.record(&record("two"));
    log.reopen(&proxy_config::AuditConfig {
        path: Some(second.clone()),
        ..Default::default()
    })
    .unwrap();
    log.record(&record("three"));
    log.close();
    let a = std::fs::read_to_string(&first).unwrap();
    let ids: Vec<String> = a
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"].to_string())
        .collect();
    assert_eq!(ids, ["\"one\"", "\"two\""]);
    let b = std::fs::read_to_string(&second).unwrap();
    assert_eq!(b.lines().count(), 1);
    assert!(b.contains("\"three\""));
    assert_eq!(log.written(), 3);
    assert_eq!(log.dropped(), 0);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    // A queue of one record cannot keep up with a tight loop: some records are
    // dropped, none is lost silently, and `record` returned each time.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let log = AuditLog::start(Destination::File(path.clone()), 1).unwrap();
    for i in 0..2000 {
        log.record(&record(&i.to_string()));
    }
    log.close();
    let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    assert_eq!(lines, log.written());
    assert_eq!(log.written() + log.dropped(), 2000);
}

#[test]
fn an_unwritable_path_fails_at_start() {
    let err = AuditLog::start(
        Destination::File(PathBuf::from("/nonexistent-dir/audit.jsonl")),
        4,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/audit.jsonl"),
        "{err}"
    );
}

fn ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"].to_string())
        .collect()
}

fn rotating(path: &Path, max_size: u64, max_files: usize) -> proxy_config::AuditConfig {
    proxy_config::AuditConfig {
        path: Some(path.to_path_buf()),
        max_file_size: Some(proxy_config::ByteSize(max_size)),
        max_files,
        ..Default::default()
    }
}

#[test]
fn size_rotation_keeps_every_record_in_order_across_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // A record is ~400 bytes: a rotation every few records.
    let log = AuditLog::from_config(&rotating(&path, 2000, 100)).unwrap();
    for i in 0..60 {
        log.record(&record(&format!("r{i:02}")));
    }
    log.close();
    let mut all = Vec::new();
    for n in (1..=100).rev() {
        all.extend(ids(&path.with_extension(format!("jsonl.{n}"))));
    }
    all.extend(ids(&path));
    let expected: Vec<String> = (0..60).map(|i| format!("\"r{i:02}\"")).collect();
    assert_eq!(all, expected);
    assert!(
        path.with_extension("jsonl.2").exists(),
        "rotated more than once"
    );
    for n in 1..=100 {
        let rotated = path.with_extension(format!("jsonl.{n}"));
        if let Ok(meta) = std::fs::metadata(&rotated) {
            assert!(meta.len() >= 2000, "{} rotated early", rotated.display());
        }
    }
}

#[test]
fn only_max_files_rotated_files_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::from_config(&rotating(&path, 500, 2)).unwrap();
    for i in 0..40 {
        log.record(&record(&i.to_string()));
    }
    log.close();
    assert!(path.with_extension("jsonl.1").exists());
    assert!(path.with_extension("jsonl.2").exists());
    assert!(!path.with_extension("jsonl.3").exists());
    // The newest records are in the current file, the ones before in .1.
    let current = ids(&path);
    assert_eq!(current.last().map(String::as_str), Some("\"39\""));
}

#[test]
fn a_rename_then_reopen_loses_no_record() {
    // logrotate's `create` mode: rename the file, then SIGHUP (a reload reopens).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = proxy_config::AuditConfig {
        path: Some(path.clone()),
        ..Default::default()
    };
    let log = AuditLog::from_config(&config).unwrap();
    for i in 0..50 {
        log.record(&record(&format!("a{i}")));
    }
    let rotated = dir.path().join("audit.jsonl-20261206");
    std::fs::rename(&path, &rotated).unwrap();
    for i in 0..50 {
        log.record(&record(&format!("b{i}")));
    }
    log.reopen(&config).unwrap();
    for i in 0..50 {
        log.record(&record(&format!("c{i}")));
    }
    log.close();
    let mut all = ids(&rotated);
    all.extend(ids(&path));
    assert_eq!(all.len(), 150);
    assert_eq!(all.first().map(String::as_str), Some("\"a0\""));
    assert_eq!(all.last().map(String::as_str), Some("\"c49\""));
    // Everything after the reopen is in the new file.
    assert!(ids(&path).iter().all(|id| id.starts_with("\"c")));
}

#[test]
fn statements_have_their_own_share_of_the_queue_and_drops_are_counted() {
    // A writer that is stuck: nothing drains the queue.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let log = AuditLog {
        writer: Mutex::new(None),
        tx: Some(tx),
        counts: Arc::default(),
        dropped: AtomicU64::new(0),
        statement_capacity: 1,
        statements_dropped: AtomicU64::new(0),
    };
    log.statement("{}".into());
    log.statement("{}".into());
    log.statement("{}".into());
    assert_eq!(log.statements_dropped(), 2);
    // The connection record still finds room.
    log.record(&record("after"));
    assert_eq!(log.dropped(), 0);
    assert!(matches!(rx.try_recv(), Ok(Message::Statement(_))));
    assert!(matches!(rx.try_recv(), Ok(Message::Line(_))));
}
