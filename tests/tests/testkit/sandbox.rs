//! The `sandbox` binary as a newcomer meets it: it starts the whole stack, writes a libpq
//! service file whose every entry works with the real `psql`, and stops without leaving a
//! process behind, whether it is asked to stop, one of its children crashes, or it is killed
//! itself and started again in the same directory.
//!
//! The sandbox runs the proxy and emulator binaries of this test's build profile
//! (`--bin-dir`): `cargo test` builds the emulator (a binary of this package), the test kit
//! the proxy (`proxy_testkit::proxy::proxy_binary`).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use proxy_testkit::process::{spawn_tied_to_test, wait_timeout};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A sandbox process started by a test, with its output captured to a file.
struct Running {
    child: Child,
    log: PathBuf,
    ready_file: PathBuf,
    ready: serde_json::Value,
}

impl Running {
    fn start(dir: &Path, log: &Path) -> Running {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_aws-emulator"))
            .parent()
            .expect("binary directory")
            .to_path_buf();
        // Panics with build instructions when the proxy binary is missing.
        let proxy = proxy_testkit::proxy::proxy_binary();
        assert_eq!(
            proxy.parent(),
            Some(bin_dir.as_path()),
            "the proxy binary must sit next to aws-emulator"
        );
        let ready_file = log.with_extension("ready.json");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sandbox"));
        command
            .arg("--dir")
            .arg(dir)
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--bin-dir")
            .arg(&bin_dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(log).expect("sandbox log"))
            .stderr(fs::File::create(log.with_extension("stderr")).expect("sandbox stderr"));
        // SIGKILL if this test dies: the sandbox's own PDEATHSIG then stops its children.
        let mut child = spawn_tied_to_test(command, Signal::SIGKILL).expect("run sandbox");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready_file.is_file() {
            if let Some(status) = child.try_wait().expect("poll sandbox") {
                panic!("sandbox exited during startup ({status}):\n{}", output(log));
            }
            assert!(
                Instant::now() < deadline,
                "sandbox not ready within 120 s:\n{}",
                output(log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let ready = serde_json::from_str(&fs::read_to_string(&ready_file).expect("ready file"))
            .expect("ready file is JSON");
        Running {
            child,
            log: log.to_path_buf(),
            ready_file,
            ready,
        }
    }

    fn pid(&self, name: &str) -> u32 {
        let pid = self.ready["pids"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no pid of {name} in {}", self.ready));
        u32::try_from(pid).expect("pid fits u32")
    }

    fn service_file(&self) -> PathBuf {
        PathBuf::from(self.ready["service_file"].as_str().expect("service_file"))
    }

    /// `select current_user` through `service` of the generated service file.
    fn current_user(&self, service: &str) -> String {
        let out = psql(&self.service_file(), service, "select current_user");
        assert!(
            out.status.success(),
            "psql service={service} failed: {}\nsandbox output:\n{}",
            String::from_utf8_lossy(&out.stderr),
            output(&self.log)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Every process below the sandbox right now (PostgreSQL's backends included).
    fn descendants(&self) -> BTreeSet<u32> {
        descendants_of(self.child.id())
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal sandbox");
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match wait_timeout(&mut self.child, timeout).expect("wait for sandbox") {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                panic!(
                    "sandbox still running after {timeout:?}:\n{}",
                    output(&self.log)
                )
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave the stack running for the other tests.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let _ = wait_timeout(&mut self.child, Duration::from_secs(30));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn psql(service_file: &Path, service: &str, sql: &str) -> std::process::Output {
    let program = proxy_testkit::pg::find_bindir()
        .map(|dir| dir.join("psql"))
        .ok()
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
        .env("PGSERVICEFILE", service_file)
        .env("PGCONNECT_TIMEOUT", "20")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .arg(format!("service={service}"))
        .stdin(Stdio::null())
        .output()
        .expect("run psql")
}

fn output(log: &Path) -> String {
    let stdout = fs::read_to_string(log).unwrap_or_default();
    let stderr = fs::read_to_string(log.with_extension("stderr")).unwrap_or_default();
    format!("{stdout}{stderr}")
}

/// Parent pid and state of every process, from `/proc`.
fn process_table() -> HashMap<u32, (u32, char)> {
    let mut table = HashMap::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        table.insert(pid, (ppid, state));
    }
    table
}

fn descendants_of(root: u32) -> BTreeSet<u32> {
    let table = process_table();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, &(ppid, _)) in &table {
            if ppid == parent && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

/// The pids of `pids` that still run (zombies count as gone: they run nothing).
fn survivors(pids: &BTreeSet<u32>) -> Vec<u32> {
    let table = process_table();
    pids.iter()
        .copied()
        .filter(|pid| table.get(pid).is_some_and(|&(_, state)| state != 'Z'))
        .collect()
}

/// Waits until none of `pids` runs; returns the survivors after `timeout`.
fn wait_gone(pids: &BTreeSet<u32>, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive = survivors(pids);
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_service_logs_in_as_expected_and_sigterm_leaves_no_process_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sandbox");
    let mut sandbox = Running::start(&dir, &tmp.path().join("sandbox.log"));

    for (service, expected) in [
        ("sandbox", "IAMA:alice"),
        ("sandbox-serverless", "IAMR:RedshiftAccess"),
        ("sandbox-iam", "IAMR:RedshiftAccess"),
        ("sandbox-bob", "IAMA:bob"),
        ("sandbox-direct", "static_user"),
    ] {
        assert_eq!(sandbox.current_user(service), expected, "service {service}");
    }
    // The newcomer's first table through the proxy, in Redshift's `dev` database.
    let out = psql(
        &sandbox.service_file(),
        "sandbox",
        "create table first_steps(x int); insert into first_steps values (42); \
         select current_database() || ':' || sum(x) from first_steps",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dev:42");

    // The generated files a reader learns from.
    let config = fs::read_to_string(dir.join("proxy.toml")).unwrap();
    assert!(config.starts_with("# Sandbox:"), "{config}");
    let mode = |path: PathBuf| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(dir.join("pgpass")), 0o600);
    // The emulator's CloudTrail-style records of those logins: the proxy's role session,
    // no password.
    let trail = fs::read_to_string(
        sandbox.ready["cloudtrail_file"]
            .as_str()
            .expect("cloudtrail_file"),
    )
    .unwrap();
    let records: Vec<serde_json::Value> = trail
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let credential_call = records
        .iter()
        .find(|r| r["eventName"] == "GetClusterCredentials")
        .unwrap_or_else(|| panic!("no GetClusterCredentials record: {trail}"));
    assert!(credential_call["userIdentity"]["arn"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:sts::123456789012:assumed-role/RedshiftAccess/"));
    assert_eq!(
        credential_call["responseElements"]["dbPassword"],
        "HIDDEN_DUE_TO_SECURITY_REASONS"
    );
    for port in ["standin_cluster", "standin_serverless"] {
        assert!(sandbox.ready["ports"][port].is_u64(), "{}", sandbox.ready);
    }

    let children = sandbox.descendants();
    for name in ["postgres", "aws-emulator", "redshift-iam-proxy"] {
        assert!(
            children.contains(&sandbox.pid(name)),
            "{name} ({}) is not a child of the sandbox: {children:?}",
            sandbox.pid(name)
        );
    }
    sandbox.signal(Signal::SIGTERM);
    let status = sandbox.wait(Duration::from_secs(60));
    let log = output(&sandbox.log);
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains("stopped; every child process has exited"),
        "{log}"
    );
    assert!(
        !sandbox.ready_file.exists(),
        "the ready file outlived the sandbox"
    );
    assert_eq!(
        survivors(&children),
        Vec::<u32>::new(),
        "processes left behind:\n{log}"
    );
}

#[test]
fn a_crashed_child_ends_the_sandbox_and_a_killed_sandbox_can_be_started_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sandbox");

    // A child that dies ends the sandbox with a failure, and the others are stopped.
    let mut sandbox = Running::start(&dir, &tmp.path().join("first.log"));
    let children = sandbox.descendants();
    kill(
        Pid::from_raw(sandbox.pid("aws-emulator") as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let status = sandbox.wait(Duration::from_secs(60));
    let log = output(&sandbox.log);
    assert!(!status.success(), "{log}");
    assert!(log.contains("aws-emulator"), "{log}");
    assert!(log.contains("exited unexpectedly"), "{log}");
    assert_eq!(survivors(&children), Vec::<u32>::new(), "{log}");
    drop(sandbox);

    // The sandbox itself killed outright: PDEATHSIG stops its children, and the next start
    // in the same directory cleans up what the killed one left.
    let mut sandbox = Running::start(&dir, &tmp.path().join("second.log"));
    let previous_pg_dir = fs::read_to_string(dir.join("postgres.dir")).unwrap();
    let children = sandbox.descendants();
    sandbox.signal(Signal::SIGKILL);
    sandbox.wait(Duration::from_secs(10));
    assert_eq!(
        wait_gone(&children, Duration::from_secs(30)),
        Vec::<u32>::new(),
        "children outlived a killed sandbox"
    );
    drop(sandbox);

    let mut sandbox = Running::start(&dir, &tmp.path().join("third.log"));
    assert_eq!(sandbox.current_user("sandbox"), "IAMA:alice");
    assert!(
        !Path::new(previous_pg_dir.trim()).exists(),
        "the killed run's PostgreSQL directory was not removed"
    );
    sandbox.signal(Signal::SIGTERM);
    let status = sandbox.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", output(&sandbox.log));
}

#[test]
fn a_directory_the_sandbox_did_not_create_is_never_wiped() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .arg("--dir")
        .arg(tmp.path())
        .arg("--no-build")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not created by the sandbox"), "{stdout}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("precious.txt")).unwrap(),
        "keep me"
    );
}
