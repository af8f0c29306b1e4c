//! Launches the `redshift-iam-proxy` binary as a child process:
//! `redshift-iam-proxy run --config FILE`, with stdout/stderr captured to files.
//!
//! The binary is `$REDSHIFT_IAM_PROXY_BIN`, else `target/<profile>/redshift-iam-proxy` next
//! to the running test executable (which lives in `target/<profile>/deps/`). A test package
//! cannot depend on another package's binary, and `cargo test` builds a package's binaries
//! only for that package's own integration tests (the proxy package has none): so when the
//! tests run under cargo (`$CARGO` is set), the first lookup runs `$CARGO build -p
//! redshift-iam-proxy` for the test's own target directory and profile, which is a no-op
//! when the binary is up to date and otherwise makes sure no test runs a stale one. Run
//! directly, a test binary uses what `cargo build -p redshift-iam-proxy` left there.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::process;

pub use crate::ports::free_port;

/// Name of the proxy binary.
pub const BINARY_NAME: &str = "redshift-iam-proxy";

/// Errors launching or controlling the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the proxy exited during startup ({status}); logs:\n{logs}")]
    Exited { status: ExitStatus, logs: String },
    #[error("the proxy did not accept connections on port(s) {ports:?} within {timeout:?}; logs:\n{logs}")]
    StartTimeout {
        ports: Vec<u16>,
        timeout: Duration,
        logs: String,
    },
    #[error("cannot signal the proxy: {0}")]
    Signal(nix::Error),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProxyError {
    let context = context.into();
    move |source| ProxyError::Io { context, source }
}

/// Path of the proxy binary. Panics with build instructions when it does not exist.
pub fn proxy_binary() -> PathBuf {
    match locate_proxy_binary() {
        Ok(path) => path,
        Err(looked_at) => panic!(
            "{BINARY_NAME} binary not found (looked at {looked_at:?}): run \
             `cargo build -p redshift-iam-proxy` first, or set REDSHIFT_IAM_PROXY_BIN"
        ),
    }
}

/// Path of the proxy binary if it has been built (for tests that skip without it).
pub fn find_proxy_binary() -> Option<PathBuf> {
    locate_proxy_binary().ok()
}

/// The binary's path, or the candidate paths that do not exist.
fn locate_proxy_binary() -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(path) = std::env::var_os("REDSHIFT_IAM_PROXY_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(vec![path])
        };
    }
    let exe = std::env::current_exe().map_err(|_| Vec::new())?;
    if let Err(e) = build_once(&exe) {
        panic!("{e}");
    }
    // target/<profile>/deps/<test> -> target/<profile>/redshift-iam-proxy (the parent of
    // the executable too, for binaries run from target/<profile>/ directly).
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(BINARY_NAME))
        .collect();
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(candidates)
}

/// Under cargo (`$CARGO` set), builds the proxy binary once per test process into the
/// target directory and profile `exe` (a test executable in `<target>/<profile>/deps/`)
/// belongs to. See the module documentation.
fn build_once(exe: &Path) -> Result<(), String> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let Some(cargo) = std::env::var_os("CARGO") else {
                return Ok(());
            };
            let (Some(profile_dir), Some(mut target_dir)) = (
                exe.parent().and_then(Path::parent),
                exe.ancestors().nth(3).map(Path::to_path_buf),
            ) else {
                return Ok(());
            };
            let dir_name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let profile = match dir_name(profile_dir).as_str() {
                "debug" => "dev".to_owned(),
                other => other.to_owned(),
            };
            let mut command = Command::new(cargo);
            command.args([
                "build",
                "--quiet",
                "-p",
                "redshift-iam-proxy",
                "--bin",
                BINARY_NAME,
                "--profile",
                &profile,
            ]);
            // `<target>/<triple>/<profile>/deps` when cross-compiling.
            if !target_dir.join("CACHEDIR.TAG").is_file() {
                if let Some(root) = target_dir.parent() {
                    command.args(["--target", &dir_name(&target_dir)]);
                    target_dir = root.to_path_buf();
                }
            }
            let out = command
                .env("CARGO_TARGET_DIR", &target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run cargo to build {BINARY_NAME}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`cargo build -p redshift-iam-proxy` failed ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
}

/// A `Command` for the proxy binary with a hermetic environment (no `AWS_*` variables from
/// the developer's shell), for one-shot subcommands.
pub fn proxy_command() -> Command {
    let mut command = Command::new(proxy_binary());
    remove_aws_env(&mut command);
    command
}

fn remove_aws_env(command: &mut Command) {
    // Real credentials or profiles of the developer must never reach a test proxy.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
}

/// How to start a proxy; see [`ProxyProcess::builder`].
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    config_toml: String,
    dir: PathBuf,
    wait_ports: Vec<u16>,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    startup_timeout: Duration,
    stop_grace: Duration,
}

impl ProxyBuilder {
    /// Wait until 127.0.0.1:`port` accepts before [`ProxyBuilder::start`] returns (may be
    /// given several times).
    pub fn wait_for_port(mut self, port: u16) -> Self {
        self.wait_ports.push(port);
        self
    }

    /// An environment variable for the proxy (e.g. `AWS_ACCESS_KEY_ID` for the emulator).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Extra arguments after `run --config FILE`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Default 20 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Time between SIGTERM and SIGKILL when stopping (default 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Writes the config, spawns the proxy and waits for its ports. Async so that an
    /// in-process AWS emulator on the same runtime keeps serving while the proxy starts.
    pub async fn start(self) -> Result<ProxyProcess, ProxyError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        fs::create_dir_all(&self.dir)
            .map_err(io_err(format!("cannot create {}", self.dir.display())))?;
        let stem = format!("proxy-{}-{n}", std::process::id());
        let config_path = self.dir.join(format!("{stem}.toml"));
        let stdout_path = self.dir.join(format!("{stem}.stdout.log"));
        let stderr_path = self.dir.join(format!("{stem}.stderr.log"));
        fs::write(&config_path, &self.config_toml)
            .map_err(io_err(format!("cannot write {}", config_path.display())))?;
        let stdout = File::create(&stdout_path)
            .map_err(io_err(format!("cannot create {}", stdout_path.display())))?;
        let stderr = File::create(&stderr_path)
            .map_err(io_err(format!("cannot create {}", stderr_path.display())))?;

        let mut command = Command::new(proxy_binary());
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        remove_aws_env(&mut command);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        // SIGKILL: a proxy orphaned by a crashed test run holds nothing worth a clean exit.
        let child = process::spawn_tied_to_test(command, Signal::SIGKILL)
            .map_err(io_err(format!("cannot run {}", proxy_binary().display())))?;
        let pid = child.id();
        let proxy = ProxyProcess {
            child: Mutex::new(Some(child)),
            pid,
            config_path,
            stdout_path,
            stderr_path,
            stop_grace: self.stop_grace,
        };

        let deadline = Instant::now() + self.startup_timeout;
        loop {
            if let Some(status) = proxy.try_wait()? {
                return Err(ProxyError::Exited {
                    status,
                    logs: proxy.logs(),
                });
            }
            if self
                .wait_ports
                .iter()
                .all(|port| crate::ports::port_accepts(*port))
            {
                return Ok(proxy);
            }
            if Instant::now() >= deadline {
                // `proxy` is dropped (killed) on return.
                return Err(ProxyError::StartTimeout {
                    ports: self.wait_ports.clone(),
                    timeout: self.startup_timeout,
                    logs: proxy.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A running proxy, stopped (SIGTERM, then SIGKILL after a grace period) on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Mutex<Option<Child>>,
    pid: u32,
    config_path: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    stop_grace: Duration,
}

impl ProxyProcess {
    /// A builder for a proxy run with `config_toml`, writing its files into `dir`.
    pub fn builder(config_toml: impl Into<String>, dir: impl AsRef<Path>) -> ProxyBuilder {
        ProxyBuilder {
            config_toml: config_toml.into(),
            dir: dir.as_ref().to_path_buf(),
            wait_ports: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            startup_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(5),
        }
    }

    /// Starts the proxy with `config_toml` (written into `dir`) and waits until
    /// 127.0.0.1:`port` accepts connections.
    pub async fn start(
        config_toml: &str,
        dir: impl AsRef<Path>,
        port: u16,
    ) -> Result<ProxyProcess, ProxyError> {
        Self::builder(config_toml, dir)
            .wait_for_port(port)
            .start()
            .await
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The config file the proxy was started with (rewrite it, then [`Self::signal`]
    /// SIGHUP, to test reloads).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// stdout followed by stderr, as captured so far.
    pub fn logs(&self) -> String {
        let stdout = read_lossy(&self.stdout_path);
        let stderr = read_lossy(&self.stderr_path);
        match (stdout.is_empty(), stderr.is_empty()) {
            (_, true) => stdout,
            (true, false) => stderr,
            (false, false) => format!("{stdout}{stderr}"),
        }
    }

    /// Waits (async) until the captured logs contain `needle`; returns whether they did.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends `sig` (e.g. SIGHUP) to the proxy.
    pub fn signal(&self, sig: Signal) -> Result<(), ProxyError> {
        let pid = i32::try_from(self.pid).map_err(|_| ProxyError::Signal(nix::Error::EINVAL))?;
        signal::kill(Pid::from_raw(pid), sig).map_err(ProxyError::Signal)
    }

    /// The exit status if the proxy has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, ProxyError> {
        let mut guard = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(child) => child.try_wait().map_err(io_err("cannot poll the proxy")),
            None => Ok(None),
        }
    }

    /// Waits (async) up to `timeout` for the proxy to exit on its own.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<Option<ExitStatus>, ProxyError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Returns the exit status, or
    /// `None` if it was already stopped by an earlier call.
    pub fn stop(&self) -> Result<Option<ExitStatus>, ProxyError> {
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match child {
            Some(mut child) => process::terminate(&mut child, Signal::SIGTERM, self.stop_grace)
                .map(Some)
                .map_err(io_err("cannot stop the proxy")),
            None => Ok(None),
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
