//! `sandbox --instances 2` (issue 16): two proxies behind HAProxy, each serving metrics
//! and health and writing its audit file; psql through the service file reaches them.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proxy_testkit::balancer::http_get;
use proxy_testkit::process::{spawn_tied_to_test, wait_timeout};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn psql(service_file: &Path, sql: &str) -> String {
    let out = Command::new("psql")
        .env("PGSERVICEFILE", service_file)
        .env("PGCONNECT_TIMEOUT", "20")
        .args(["service=sandbox", "-Atc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_runs_instances_behind_haproxy_with_metrics_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("ready.json");
    let log = dir.path().join("sandbox.log");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_aws-emulator"))
        .parent()
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sandbox"));
    command
        .arg("--dir")
        .arg(dir.path().join("sandbox"))
        .arg("--ready-file")
        .arg(&ready_file)
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(["--instances", "2"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    let mut child = spawn_tied_to_test(command, Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready_file.is_file() {
        let output = || fs::read_to_string(&log).unwrap_or_default();
        assert!(
            child.try_wait().unwrap().is_none(),
            "sandbox exited:\n{}",
            output()
        );
        assert!(
            Instant::now() < deadline,
            "sandbox not ready:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready: Value = serde_json::from_str(&fs::read_to_string(&ready_file).unwrap()).unwrap();
    let instances = ready["instances"].as_array().expect("instances").clone();
    assert_eq!(instances.len(), 2, "{ready}");
    assert!(ready["haproxy_stats"].is_string(), "{ready}");
    let banner = fs::read_to_string(&log).unwrap();
    for instance in &instances {
        let admin = instance["admin"].as_str().unwrap();
        assert!(
            banner.contains(&format!("metrics {admin}/metrics")),
            "{banner}"
        );
        assert!(
            banner.contains(instance["audit_file"].as_str().unwrap()),
            "{banner}"
        );
    }

    let service_file = PathBuf::from(ready["service_file"].as_str().unwrap());
    let service = service_file.clone();
    let users = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|_| psql(&service, "select current_user"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(users.iter().all(|u| u == "IAMA:alice"), "{users:?}");

    for instance in &instances {
        let admin = instance["admin"].as_str().unwrap();
        let port: u16 = admin.rsplit(':').next().unwrap().parse().unwrap();
        let metrics = http_get(port, "/metrics").unwrap();
        assert!(
            metrics.contains("redshift_iam_proxy_logins_total"),
            "{metrics}"
        );
    }
    // Records are written as sessions end, by a writer thread: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records: Vec<Value> = instances
            .iter()
            .flat_map(|i| {
                let audit = fs::read_to_string(i["audit_file"].as_str().unwrap());
                audit
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        if records.len() >= 4 || Instant::now() >= deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 4, "one record per psql session: {records:?}");
    assert!(
        records.iter().all(|r| r["via"].is_string()),
        "through HAProxy: {records:?}"
    );

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
