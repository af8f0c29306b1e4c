//! PgBouncer (the Debian package, 1.18) in session mode with TLS on both sides, as the
//! established alternative the proxy is measured against.

use anyhow::Context as _;
use nix::sys::signal::Signal;
use proxy_testkit::{ports, process};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What PgBouncer needs to know.
pub struct PgBouncerSpec<'a> {
    /// Directory for its configuration, copies of its TLS files, and its log.
    pub dir: &'a Path,
    pub pg_port: u16,
    /// CA of the PostgreSQL server certificate (server side, verify-full).
    pub pg_ca: &'a Path,
    /// The certificate PgBouncer presents to clients, and its key.
    pub server_cert_chain: &'a Path,
    pub server_key: &'a Path,
    /// CA of the client certificates (client side, verify-full).
    pub client_ca: &'a Path,
    pub database: &'a str,
    pub user: &'a str,
    /// The user's md5 secret (`md5...`) as PostgreSQL stores it: PgBouncer authenticates
    /// clients with it and logs in upstream with it. md5 like the temporary credentials
    /// the proxy uses upstream, so all three paths pay the same authentication cost.
    pub md5_secret: &'a str,
    pub max_client_conn: u32,
    pub pool_size: u32,
}

/// A running PgBouncer, stopped on drop.
pub struct PgBouncer {
    child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
}

impl PgBouncer {
    pub fn binary() -> Option<PathBuf> {
        let candidates = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
        candidates
            .map(|dir| dir.join("pgbouncer"))
            .find(|p| crate::bench::procfs::is_executable(p))
    }

    pub fn start(spec: &PgBouncerSpec<'_>) -> anyhow::Result<PgBouncer> {
        let binary = Self::binary().context(
            "pgbouncer not found: install it with `apt-get install -y pgbouncer` (Debian 12 \
             ships 1.18)",
        )?;
        fs::create_dir_all(spec.dir)?;
        // PgBouncer refuses to run as root: as root, run it as `postgres`, which must be
        // able to read everything it is given, so it gets its own copies.
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")?
                .context("the `postgres` OS user is missing (PostgreSQL creates it)")?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
            let to = spec.dir.join(name);
            fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
            Ok(to)
        };
        let pg_ca = copy(spec.pg_ca, "server-ca.pem")?;
        let cert = copy(spec.server_cert_chain, "pgbouncer.pem")?;
        let key = copy(spec.server_key, "pgbouncer.key")?;
        let client_ca = copy(spec.client_ca, "client-ca.pem")?;
        let auth_file = spec.dir.join("userlist.txt");
        fs::write(
            &auth_file,
            format!("\"{}\" \"{}\"\n", spec.user, spec.md5_secret),
        )?;
        fs::set_permissions(&auth_file, fs::Permissions::from_mode(0o600))?;
        let log_path = spec.dir.join("pgbouncer.log");
        let port = ports::free_port();
        let ini = format!(
            "[databases]\n\
             {db} = host=127.0.0.1 port={pg_port} dbname={db}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             logfile = {log}\n\
             auth_type = md5\n\
             auth_file = {auth}\n\
             pool_mode = session\n\
             max_client_conn = {max_client}\n\
             default_pool_size = {pool}\n\
             ignore_startup_parameters = extra_float_digits\n\
             client_tls_sslmode = verify-full\n\
             client_tls_ca_file = {client_ca}\n\
             client_tls_cert_file = {cert}\n\
             client_tls_key_file = {key}\n\
             server_tls_sslmode = verify-full\n\
             server_tls_ca_file = {pg_ca}\n",
            db = spec.database,
            pg_port = spec.pg_port,
            log = log_path.display(),
            auth = auth_file.display(),
            max_client = spec.max_client_conn,
            pool = spec.pool_size,
            client_ca = client_ca.display(),
            cert = cert.display(),
            key = key.display(),
            pg_ca = pg_ca.display(),
        );
        let ini_path = spec.dir.join("pgbouncer.ini");
        fs::write(&ini_path, ini)?;
        if let Some((uid, gid)) = run_as {
            for entry in fs::read_dir(spec.dir)? {
                nix::unistd::chown(&entry?.path(), Some(uid), Some(gid))?;
            }
            nix::unistd::chown(spec.dir, Some(uid), Some(gid))?;
        }

        let mut command = Command::new(&binary);
        command
            .arg(&ini_path)
            .current_dir(spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = run_as {
            use std::os::unix::process::CommandExt as _;
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        // SIGTERM is PgBouncer 1.18's immediate shutdown.
        let child = process::spawn_tied_to_test(command, Signal::SIGTERM)
            .with_context(|| format!("running {}", binary.display()))?;
        let mut bouncer = PgBouncer {
            child: Some(child),
            port,
            log_path,
        };
        if !ports::wait_for_port(port, Duration::from_secs(10)) {
            let exited = bouncer
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            anyhow::bail!(
                "pgbouncer did not listen on {port} ({}); log:\n{}",
                exited.map_or("still running".into(), |s| s.to_string()),
                bouncer.logs()
            );
        }
        Ok(bouncer)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn logs(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = process::terminate(&mut child, Signal::SIGTERM, Duration::from_secs(5));
        }
    }
}
