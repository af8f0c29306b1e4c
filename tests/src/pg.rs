//! A real PostgreSQL server for tests: the database behind the Redshift stand-ins
//! ([`crate::standin`]), and the upstream of the tests that exercise the proxy against
//! PostgreSQL directly.
//!
//! The server listens on 127.0.0.1 with TLS only (a certificate for `localhost` and
//! `127.0.0.1` from a per-run CA) and on a private unix socket where the superuser logs in
//! without a password. Over TCP, members of the role [`MD5_USERS_ROLE`] authenticate with
//! `md5` (like Redshift's temporary credentials) and everybody else with SCRAM-SHA-256;
//! plaintext TCP is refused, as by a Redshift cluster with `require_ssl`.
//!
//! Starting a server costs a second or two, so a test binary normally shares one through
//! [`PgServer::shared`] and isolates tests with unique role and database names
//! ([`PgServer::unique_name`]).

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::pki::{PkiError, TestPki};
use crate::ports;
use crate::process;
use crate::psql::Psql;

/// Role granted to users created by [`PgServer::create_md5_user`]; `pg_hba.conf` gives its
/// members `md5` authentication.
pub const MD5_USERS_ROLE: &str = "md5_users";

/// Host name the server certificate is issued for and clients should verify.
pub const HOST: &str = "localhost";

/// Errors of the PostgreSQL launcher.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL server binaries not found ({searched}); install them with \
         `apt-get install postgresql` or point PG_BINDIR at the directory holding `initdb` \
         and `postgres`"
    )]
    NotInstalled { searched: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}):\n{output}")]
    CommandFailed {
        program: String,
        status: ExitStatus,
        output: String,
    },
    #[error("cannot prepare the `postgres` OS user (PostgreSQL refuses to run as root): {0}")]
    OsUser(String),
    #[error("PostgreSQL exited during startup ({status}); log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("PostgreSQL did not become ready within {timeout:?}; log:\n{log}")]
    StartTimeout { timeout: Duration, log: String },
    #[error("test PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("{context}: {source}")]
    Db {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("TLS client configuration: {0}")]
    Tls(String),
    #[error("the shared PostgreSQL server failed to start earlier: {0}")]
    SharedFailed(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Io { context, source }
}

fn db_err(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let context = context.into();
    move |source| PgError::Db { context, source }
}

/// Startup options of a [`PgServer`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `max_connections` (load tests open hundreds of sessions).
    pub max_connections: u32,
    /// How long to wait for the server to accept connections.
    pub startup_timeout: Duration,
    /// Extra `postgresql.conf` lines, appended last (so they override the defaults).
    pub extra_config: Vec<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 300,
            startup_timeout: Duration::from_secs(60),
            extra_config: Vec::new(),
        }
    }
}

/// A running PostgreSQL server in a temporary directory, stopped and deleted on drop.
pub struct PgServer {
    bindir: PathBuf,
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    pki: TestPki,
    child: Mutex<Option<Child>>,
    tempdir: Mutex<Option<tempfile::TempDir>>,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgServer")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// OS account the server processes run as.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

impl PgServer {
    /// The server shared by all tests of this test binary, started on first use.
    ///
    /// It is stopped and its directory removed when the test process exits (an `atexit`
    /// hook; statics are never dropped), and in any case it gets SIGINT when the test
    /// process dies. Panics if the server cannot start, with the reason.
    pub fn shared() -> &'static PgServer {
        match Self::try_shared() {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`PgServer::shared`] but returns the startup error (the same one every time:
    /// a failed start is not retried by each test).
    pub fn try_shared() -> Result<&'static PgServer, PgError> {
        static SHARED: OnceLock<Result<PgServer, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(server)) = SHARED.get() {
                server.stop();
            }
        }
        SHARED
            .get_or_init(|| {
                let server = PgServer::start(PgOptions::default()).map_err(|e| e.to_string())?;
                // SAFETY: registering a plain `extern "C" fn` without captured state.
                unsafe { nix::libc::atexit(stop_shared) };
                Ok(server)
            })
            .as_ref()
            .map_err(|e| PgError::SharedFailed(e.clone()))
    }

    /// Starts a new private server (prefer [`PgServer::shared`]; this costs seconds).
    pub fn start(options: PgOptions) -> Result<PgServer, PgError> {
        Self::start_impl(options, false)
    }

    /// Like [`PgServer::start`], with the server in its own process group, so a terminal's
    /// Ctrl-C reaches only the supervising process (the sandbox), which then stops the
    /// server itself in order.
    pub fn start_in_own_process_group(options: PgOptions) -> Result<PgServer, PgError> {
        Self::start_impl(options, true)
    }

    fn start_impl(options: PgOptions, own_process_group: bool) -> Result<PgServer, PgError> {
        let bindir = find_bindir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(postgres_os_user()?)
        } else {
            None
        };
        let tempdir = tempfile::Builder::new()
            .prefix("testkit-pg-")
            .tempdir()
            .map_err(io_err("cannot create a temporary directory"))?;
        let root = tempdir.path().to_path_buf();
        let data_dir = root.join("data");

        let pki = TestPki::with_root(
            root.join("pki"),
            "Test PostgreSQL CA",
            crate::pki::KeyAlgorithm::EcdsaP256,
        )?;
        let server_cert = pki.server_cert(&[HOST, "127.0.0.1"])?;
        if let Some(run_as) = run_as {
            // The server reads its key and writes the data dir and socket as `postgres`.
            chown_tree(&root, run_as)?;
        }

        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("--pgdata")
            .arg(&data_dir)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&root)
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        run_checked(&mut initdb, run_as)?;

        let conf = server_config(&root, &server_cert, &options);
        append_file(&data_dir.join("postgresql.conf"), &conf)?;
        fs::write(data_dir.join("pg_hba.conf"), HBA_CONF)
            .map_err(io_err("cannot write pg_hba.conf"))?;

        let log_path = data_dir.join("postgres.log");
        let (child, port) = spawn_until_ready(
            &bindir,
            &data_dir,
            &log_path,
            run_as,
            &options,
            own_process_group,
        )?;
        let server = PgServer {
            bindir,
            root,
            data_dir,
            log_path,
            port,
            pki,
            child: Mutex::new(Some(child)),
            tempdir: Mutex::new(Some(tempdir)),
        };
        let socket_dir = server.root.clone();
        let setup = block_on_thread(async move {
            let client = admin_connect(&socket_dir, port).await?;
            client
                .batch_execute(&format!(
                    "CREATE ROLE {} NOLOGIN",
                    quote_ident(MD5_USERS_ROLE)
                ))
                .await
                .map_err(db_err("cannot create the md5 users role"))
        });
        // `server` is dropped (stopped) on error.
        setup?;
        Ok(server)
    }

    /// Stops the server (SIGINT = fast shutdown, then SIGKILL) and deletes its directory.
    /// Idempotent; also done on drop.
    pub fn stop(&self) {
        self.shutdown();
        if let Some(dir) = self
            .tempdir
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = dir.close();
        }
    }

    /// Stops the server process (fast shutdown: sessions are cut) but keeps its data
    /// directory, so [`PgServer::start_again`] brings it back with users and data intact.
    /// For "upstream restart" tests; use a dedicated server, never the shared one.
    pub fn shutdown(&self) {
        if let Some(mut child) = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = process::terminate(&mut child, Signal::SIGINT, Duration::from_secs(10));
        }
    }

    /// Starts the server again after [`PgServer::shutdown`], on the same port and data
    /// directory, and waits until it accepts logins. A no-op while it is running.
    pub fn start_again(&self) -> Result<(), PgError> {
        let mut slot = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return Ok(());
        }
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(postgres_os_user()?)
        } else {
            None
        };
        let log = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .map_err(io_err("cannot open the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("cannot duplicate the log handle"))?;
        let mut command = Command::new(self.bindir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .current_dir(&self.data_dir)
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        apply_run_as(&mut command, run_as);
        let mut child = process::spawn_tied_to_test(command, Signal::SIGINT).map_err(io_err(
            format!("cannot run {}", self.bindir.join("postgres").display()),
        ))?;
        let timeout = PgOptions::default().startup_timeout;
        match wait_ready(&mut child, &self.data_dir, self.port, timeout) {
            Ok(()) => {
                *slot = Some(child);
                Ok(())
            }
            Err(Readiness::Exited(status)) => Err(PgError::Exited {
                status,
                log: read_lossy(&self.log_path),
            }),
            Err(Readiness::TimedOut) => {
                let _ = process::terminate(&mut child, Signal::SIGQUIT, Duration::from_secs(5));
                Err(PgError::StartTimeout {
                    timeout,
                    log: read_lossy(&self.log_path),
                })
            }
            Err(Readiness::Io(source)) => {
                let _ = process::terminate(&mut child, Signal::SIGQUIT, Duration::from_secs(5));
                Err(PgError::Io {
                    context: "cannot poll the postgres process".into(),
                    source,
                })
            }
        }
    }

    /// Process id of the postmaster, while it runs (the sandbox reports it and its tests
    /// check that it is gone after shutdown).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Child::id)
    }

    /// The postmaster's exit status if it has exited on its own (a crash, or a signal from
    /// outside); `None` while it runs or after [`PgServer::stop`]. Lets a supervisor notice
    /// that the server is gone.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        match self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host name to connect to and verify the certificate for (`localhost`).
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// Address the server listens on (`127.0.0.1`); `localhost` may resolve to `::1` first.
    pub fn hostaddr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    /// Directory of the unix socket (trust authentication; superuser access).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// PEM of the CA that issued the server certificate (upstream `ca_bundle`).
    pub fn ca_cert_path(&self) -> &Path {
        self.pki.ca_cert_path()
    }

    /// The PKI of this server (its CA can issue more certificates if a test needs them).
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Name of the superuser (reachable only over the unix socket).
    pub fn superuser(&self) -> &'static str {
        "postgres"
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Server log file (`log_min_messages = warning`, plus connection failures).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Current contents of the server log.
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Directory of the server binaries in use (also has `psql`).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A unique, lowercase SQL identifier `prefix_<pid>_<n>` (at most 63 bytes).
    pub fn unique_name(prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        format!("{prefix}_{}_{n}", std::process::id())
    }

    /// A superuser session over the unix socket. The connection task is spawned on the
    /// current tokio runtime.
    pub async fn admin(&self) -> Result<Client, PgError> {
        admin_connect(&self.root, self.port).await
    }

    /// Creates a login role whose password is stored as SCRAM-SHA-256.
    pub async fn create_scram_user(&self, name: &str, password: &str) -> Result<(), PgError> {
        self.admin_execute(
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {}",
                quote_ident(name),
                quote_literal(password)
            ),
            format!("cannot create SCRAM role {name:?}"),
        )
        .await
    }

    /// Creates a login role whose password is stored as MD5 and that authenticates with
    /// `md5` over TCP (member of [`MD5_USERS_ROLE`]).
    pub async fn create_md5_user(&self, name: &str, password: &str) -> Result<(), PgError> {
        // One session: `SET` only affects the session that hashes the password.
        self.admin_execute(
            &format!(
                "SET password_encryption = 'md5'; \
                 CREATE ROLE {role} LOGIN PASSWORD {password}; \
                 GRANT {group} TO {role};",
                role = quote_ident(name),
                password = quote_literal(password),
                group = quote_ident(MD5_USERS_ROLE),
            ),
            format!("cannot create MD5 role {name:?}"),
        )
        .await
    }

    /// Runs `sql` as the superuser; `what` says what failed.
    async fn admin_execute(&self, sql: &str, what: String) -> Result<(), PgError> {
        self.admin()
            .await?
            .batch_execute(sql)
            .await
            .map_err(db_err(what))
    }

    /// Creates a database owned by the superuser (every role may connect).
    pub async fn create_database(&self, name: &str) -> Result<(), PgError> {
        self.admin_execute(
            &format!("CREATE DATABASE {}", quote_ident(name)),
            format!("cannot create database {name:?}"),
        )
        .await
    }

    /// Creates a database owned by `owner` (who may then create tables in `public`).
    pub async fn create_database_owned_by(&self, name: &str, owner: &str) -> Result<(), PgError> {
        self.admin_execute(
            &format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(name),
                quote_ident(owner)
            ),
            format!("cannot create database {name:?}"),
        )
        .await
    }

    /// rustls client configuration trusting only this server's CA.
    pub fn tls_client_config(&self) -> Result<rustls::ClientConfig, PgError> {
        tls_client_config(self.ca_cert_path())
    }

    /// Connects directly (no proxy) over TCP + TLS, verifying the certificate for
    /// `localhost`, and logs in with a password. The connection task is spawned on the
    /// current tokio runtime.
    pub async fn connect_tls(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(HOST)
            .hostaddr(self.hostaddr())
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .ssl_mode(SslMode::Require)
            .connect_timeout(Duration::from_secs(10));
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_client_config()?);
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(db_err(format!("cannot log in as {user:?} over TLS")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A [`Psql`] aimed at this server: host `localhost`/127.0.0.1, its port, and
    /// `sslmode=verify-full` against its CA.
    pub fn psql(&self) -> Psql {
        Psql::new(HOST, self.port)
            .hostaddr("127.0.0.1")
            .root_cert(self.ca_cert_path())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pg_hba.conf`: first match wins.
const HBA_CONF: &str = "\
# Written by proxy-testkit. The superuser logs in over the private unix socket only.
local   all  all                        trust
# Like Redshift temporary credentials: md5 for members of md5_users.
hostssl all  +md5_users   127.0.0.1/32  md5
hostssl all  all          127.0.0.1/32  scram-sha-256
# No host/hostnossl lines: plaintext TCP is refused.
";

fn server_config(root: &Path, server_cert: &crate::pki::ServerCert, options: &PgOptions) -> String {
    let mut conf = format!(
        "\n# Written by proxy-testkit.\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = {socket}\n\
         unix_socket_permissions = 0777\n\
         ssl = on\n\
         ssl_cert_file = {cert}\n\
         ssl_key_file = {key}\n\
         password_encryption = 'scram-sha-256'\n\
         max_connections = {max_connections}\n\
         shared_buffers = 32MB\n\
         huge_pages = off\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         log_min_messages = warning\n\
         log_timezone = 'UTC'\n\
         timezone = 'UTC'\n\
         # Failing statements such as CREATE ROLE ... PASSWORD must not be logged.\n\
         log_min_error_statement = panic\n\
         logging_collector = off\n",
        socket = quote_literal(&root.to_string_lossy()),
        cert = quote_literal(&server_cert.chain_pem.to_string_lossy()),
        key = quote_literal(&server_cert.key_pem.to_string_lossy()),
        max_connections = options.max_connections,
    );
    for line in &options.extra_config {
        conf.push_str(line);
        conf.push('\n');
    }
    conf
}

/// Spawns `postgres` on a free port and waits until it accepts connections, retrying with
/// another port if the one picked was taken in the meantime.
fn spawn_until_ready(
    bindir: &Path,
    data_dir: &Path,
    log_path: &Path,
    run_as: Option<RunAs>,
    options: &PgOptions,
    own_process_group: bool,
) -> Result<(Child, u16), PgError> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = ports::free_port();
        let log = File::create(log_path).map_err(io_err("cannot create the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("cannot duplicate the log handle"))?;
        let mut command = Command::new(bindir.join("postgres"));
        command
            .arg("-D")
            .arg(data_dir)
            .arg("-p")
            .arg(port.to_string())
            .current_dir(data_dir)
            .env_remove("PGDATA")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        apply_run_as(&mut command, run_as);
        if own_process_group {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        let mut child = process::spawn_tied_to_test(command, Signal::SIGINT).map_err(io_err(
            format!("cannot run {}", bindir.join("postgres").display()),
        ))?;

        match wait_ready(&mut child, data_dir, port, options.startup_timeout) {
            Ok(()) => return Ok((child, port)),
            Err(Readiness::Exited(status)) => {
                let log = read_lossy(log_path);
                let port_taken =
                    log.contains("could not bind") || log.contains("Address already in use");
                if port_taken && attempt < ATTEMPTS {
                    continue;
                }
                return Err(PgError::Exited { status, log });
            }
            Err(Readiness::TimedOut) => {
                let _ = process::terminate(&mut child, Signal::SIGQUIT, Duration::from_secs(5));
                return Err(PgError::StartTimeout {
                    timeout: options.startup_timeout,
                    log: read_lossy(log_path),
                });
            }
            Err(Readiness::Io(source)) => {
                let _ = process::terminate(&mut child, Signal::SIGQUIT, Duration::from_secs(5));
                return Err(PgError::Io {
                    context: "cannot poll the postgres process".into(),
                    source,
                });
            }
        }
    }
}

enum Readiness {
    Exited(ExitStatus),
    TimedOut,
    Io(io::Error),
}

/// Ready = `postmaster.pid` says `ready` (what `pg_ctl -w` checks: recovery is over and
/// logins are accepted) and the TCP port accepts.
fn wait_ready(
    child: &mut Child,
    data_dir: &Path,
    port: u16,
    timeout: Duration,
) -> Result<(), Readiness> {
    let deadline = Instant::now() + timeout;
    let pid_file = data_dir.join("postmaster.pid");
    loop {
        if let Some(status) = child.try_wait().map_err(Readiness::Io)? {
            return Err(Readiness::Exited(status));
        }
        let ready = fs::read_to_string(&pid_file)
            .map(|contents| contents.lines().nth(7).map(str::trim) == Some("ready"))
            .unwrap_or(false);
        if ready && ports::port_accepts(port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Readiness::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

async fn admin_connect(socket_dir: &Path, port: u16) -> Result<Client, PgError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(db_err("cannot connect as superuser over the unix socket"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// rustls client configuration (aws-lc-rs) trusting only the CAs in `ca_pem`.
pub fn tls_client_config(ca_pem: &Path) -> Result<rustls::ClientConfig, PgError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .map_err(|e| PgError::Tls(format!("cannot read {}: {e}", ca_pem.display())))?
    {
        let cert =
            cert.map_err(|e| PgError::Tls(format!("cannot parse {}: {e}", ca_pem.display())))?;
        roots
            .add(cert)
            .map_err(|e| PgError::Tls(format!("bad CA in {}: {e}", ca_pem.display())))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Runs a future to completion on a fresh runtime in a new thread, so that synchronous code
/// may use async clients even when called from inside another runtime.
fn block_on_thread<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime")
            .block_on(future)
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Finds the directory holding `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf, PgError> {
    let mut searched = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        searched.push(format!("PG_BINDIR={}", dir.display()));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        if output.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if has_server(&dir) {
                return Ok(dir);
            }
            searched.push(format!("pg_config --bindir = {}", dir.display()));
        }
    }
    // Debian layout: /usr/lib/postgresql/<major>/bin; take the highest major version.
    let mut candidates: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    candidates.sort();
    if let Some((_, dir)) = candidates.pop() {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".into());
    Err(PgError::NotInstalled {
        searched: searched.join(", "),
    })
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// The `postgres` OS account, created (as a system user) if missing.
fn postgres_os_user() -> Result<RunAs, PgError> {
    let lookup = || {
        nix::unistd::User::from_name("postgres")
            .map_err(|e| PgError::OsUser(format!("cannot look up user postgres: {e}")))
    };
    let user = match lookup()? {
        Some(user) => user,
        None => {
            let output = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home", "postgres"])
                .output()
                .map_err(|e| PgError::OsUser(format!("cannot run useradd: {e}")))?;
            if !output.status.success() {
                return Err(PgError::OsUser(format!(
                    "useradd failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            lookup()?.ok_or_else(|| PgError::OsUser("useradd did not create postgres".into()))?
        }
    };
    Ok(RunAs {
        uid: user.uid,
        gid: user.gid,
    })
}

fn apply_run_as(command: &mut Command, run_as: Option<RunAs>) {
    use std::os::unix::process::CommandExt;
    if let Some(run_as) = run_as {
        // std drops supplementary groups when root sets a uid without explicit groups.
        command.uid(run_as.uid.as_raw()).gid(run_as.gid.as_raw());
    }
}

fn run_checked(command: &mut Command, run_as: Option<RunAs>) -> Result<(), PgError> {
    apply_run_as(command, run_as);
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("cannot run {program}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(PgError::CommandFailed {
        program,
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

fn chown_tree(path: &Path, run_as: RunAs) -> Result<(), PgError> {
    nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| PgError::Io {
        context: format!("cannot chown {}", path.display()),
        source: e.into(),
    })?;
    let metadata =
        fs::symlink_metadata(path).map_err(io_err(format!("cannot stat {}", path.display())))?;
    if metadata.is_dir() {
        for entry in
            fs::read_dir(path).map_err(io_err(format!("cannot list {}", path.display())))?
        {
            let entry = entry.map_err(io_err(format!("cannot list {}", path.display())))?;
            chown_tree(&entry.path(), run_as)?;
        }
    }
    Ok(())
}

fn append_file(path: &Path, contents: &str) -> Result<(), PgError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(format!("cannot write {}", path.display())))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Quotes an SQL identifier: `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `'text'` with embedded quotes doubled
/// (`standard_conforming_strings` is on, so backslashes are literal).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
