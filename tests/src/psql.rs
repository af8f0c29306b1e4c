//! Runs the system `psql` (libpq) as a real client: `sslmode=verify-full`, client
//! certificates, `-X -A -t -v ON_ERROR_STOP=1 -c SQL`, with a timeout.
//!
//! Connection parameters go through libpq environment variables (`PGHOST`, `PGSSLMODE`,
//! ...); every other `PG*` variable of the test environment is removed so the developer's
//! settings cannot leak into a test. libpq refuses client keys readable by group/others,
//! which is why the test PKI writes keys with mode 0600.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use crate::pki::ClientCert;

/// Errors running psql (a failing query is not an error: see [`PsqlOutput::status`]).
#[derive(Debug, thiserror::Error)]
pub enum PsqlError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("psql did not finish within {timeout:?} (killed)")]
    Timeout { timeout: Duration },
}

/// Result of one psql run.
#[derive(Debug, Clone)]
pub struct PsqlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PsqlOutput {
    /// psql exited with 0 (connected and every statement succeeded).
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Output rows (`-A -t`: one line per row, `|`-separated columns), without blank lines.
    pub fn rows(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| !line.is_empty())
            .collect()
    }

    /// stdout trimmed, for single-value queries.
    pub fn value(&self) -> &str {
        self.stdout.trim()
    }
}

/// Builder for a psql invocation. Defaults: `sslmode=verify-full`, timeout 20 s, no
/// password prompt (`-w`).
#[derive(Clone)]
pub struct Psql {
    program: PathBuf,
    host: String,
    hostaddr: Option<String>,
    port: u16,
    user: Option<String>,
    dbname: Option<String>,
    sslmode: String,
    sslrootcert: Option<PathBuf>,
    sslcert: Option<PathBuf>,
    sslkey: Option<PathBuf>,
    password: Option<String>,
    application_name: Option<String>,
    options: Option<String>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl fmt::Debug for Psql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psql")
            .field("program", &self.program)
            .field("host", &self.host)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Psql {
    /// psql against `host:port`. The program is `$PSQL`, else the `psql` next to the
    /// PostgreSQL server binaries, else `psql` from `PATH`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Psql {
            program: default_program(),
            host: host.into(),
            hostaddr: None,
            port,
            user: None,
            dbname: None,
            sslmode: "verify-full".into(),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            password: None,
            application_name: None,
            options: None,
            env: Vec::new(),
            timeout: Duration::from_secs(20),
        }
    }

    /// Numeric address to dial while still verifying the certificate for `host`.
    pub fn hostaddr(mut self, addr: impl Into<String>) -> Self {
        self.hostaddr = Some(addr.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn dbname(mut self, dbname: impl Into<String>) -> Self {
        self.dbname = Some(dbname.into());
        self
    }

    /// libpq `sslmode` (`disable`, `require`, `verify-ca`, `verify-full`, ...).
    pub fn sslmode(mut self, mode: impl Into<String>) -> Self {
        self.sslmode = mode.into();
        self
    }

    /// CA bundle used to verify the server.
    pub fn root_cert(mut self, path: impl AsRef<Path>) -> Self {
        self.sslrootcert = Some(path.as_ref().to_path_buf());
        self
    }

    /// Client certificate (file may hold the chain, leaf first) and its key.
    pub fn client_cert(mut self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.sslcert = Some(cert.as_ref().to_path_buf());
        self.sslkey = Some(key.as_ref().to_path_buf());
        self
    }

    /// Presents `cert` (its chain file, so intermediates are sent) with its key.
    pub fn client(self, cert: &ClientCert) -> Self {
        self.client_cert(&cert.chain_pem, &cert.key_pem)
    }

    /// Password sent if the server asks (`PGPASSWORD`; never logged by [`fmt::Debug`]).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// libpq `options` (`PGOPTIONS`), e.g. `-c search_path=x`.
    pub fn options(mut self, options: impl Into<String>) -> Self {
        self.options = Some(options.into());
        self
    }

    /// Any other environment variable for psql.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configured command for `-c sql`, for callers needing something custom.
    pub fn command(&self, sql: &str) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command.args(["-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        let port = self.port.to_string();
        let mut vars: Vec<(&str, Option<&std::ffi::OsStr>)> = vec![
            ("PGHOST", Some(self.host.as_ref())),
            ("PGPORT", Some(port.as_ref())),
            ("PGSSLMODE", Some(self.sslmode.as_ref())),
            ("PGCONNECT_TIMEOUT", Some("10".as_ref())),
        ];
        vars.push(("PGHOSTADDR", self.hostaddr.as_deref().map(AsRef::as_ref)));
        vars.push(("PGUSER", self.user.as_deref().map(AsRef::as_ref)));
        vars.push(("PGDATABASE", self.dbname.as_deref().map(AsRef::as_ref)));
        vars.push((
            "PGSSLROOTCERT",
            self.sslrootcert.as_deref().map(AsRef::as_ref),
        ));
        vars.push(("PGSSLCERT", self.sslcert.as_deref().map(AsRef::as_ref)));
        vars.push(("PGSSLKEY", self.sslkey.as_deref().map(AsRef::as_ref)));
        vars.push(("PGPASSWORD", self.password.as_deref().map(AsRef::as_ref)));
        vars.push((
            "PGAPPNAME",
            self.application_name.as_deref().map(AsRef::as_ref),
        ));
        vars.push(("PGOPTIONS", self.options.as_deref().map(AsRef::as_ref)));
        for (key, value) in vars {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        // No ~/.pgpass lookups: only what the test configured may be sent.
        command.env("PGPASSFILE", "/dev/null");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `sql` and waits (without blocking the async runtime) up to the timeout.
    /// The user this invocation logs in as (`select current_user`); psql must succeed.
    pub async fn current_user(&self) -> String {
        let out = self.run("select current_user").await.unwrap();
        assert!(out.success(), "{}", out.stderr);
        out.value().to_owned()
    }

    pub async fn run(&self, sql: &str) -> Result<PsqlOutput, PsqlError> {
        let mut command = tokio::process::Command::from(self.command(sql));
        // A timed-out (dropped) run must not leave psql behind.
        command.kill_on_drop(true);
        let child = command.spawn().map_err(|source| PsqlError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| PsqlError::Timeout {
                timeout: self.timeout,
            })?
            .map_err(|source| PsqlError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        Ok(PsqlOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// [`Psql::run`] for synchronous callers (must not be called from inside a runtime).
    pub fn run_blocking(&self, sql: &str) -> Result<PsqlOutput, PsqlError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| PsqlError::Spawn {
                program: "a tokio runtime for psql".into(),
                source,
            })?
            .block_on(self.run(sql))
    }
}

fn default_program() -> PathBuf {
    // Cached: finding the server binaries may run `pg_config`.
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            if let Some(program) = std::env::var_os("PSQL") {
                return PathBuf::from(program);
            }
            if let Ok(bindir) = crate::pg::find_bindir() {
                let psql = bindir.join("psql");
                if psql.is_file() {
                    return psql;
                }
            }
            PathBuf::from("psql")
        })
        .clone()
}
