//! `sandbox`: the whole stack on one machine, for people evaluating the proxy and for
//! benchmarks, started by one command:
//!
//! ```text
//! cargo run --release --bin sandbox -- [--dir DIR] [--ready-file PATH] [--instances N]
//! ```
//!
//! It runs, as child processes it owns: a real PostgreSQL server, the AWS emulator (IAM
//! Roles Anywhere and the Redshift credential APIs, with the README's IAM policy on its
//! roles) with its two Redshift stand-ins in front of PostgreSQL (a provisioned cluster and
//! a serverless workgroup: TLS with their own CA, md5 logins with the temporary passwords,
//! Redshift's startup rules), and `redshift-iam-proxy` with a generated, commented
//! configuration: its admin listener serves metrics and health, and it writes its audit
//! records to `audit.jsonl`. With `--instances N`, N proxies run behind HAProxy as in
//! production (see `sandbox/proxies.rs`). The emulator appends a CloudTrail-style record
//! per call to `cloudtrail.jsonl`. It writes a libpq service file with one entry per way
//! in, prints the commands to try, and stays in the foreground with every child's log lines
//! prefixed by its name until Ctrl-C or SIGTERM. A child that dies ends the sandbox with a
//! non-zero exit.
//!
//! `cargo run --bin sandbox` only builds this binary; the proxy and the emulator are other
//! binaries, so when run through cargo (which sets `$CARGO`) the sandbox first runs
//! `$CARGO build` for them with its own profile and target directory. `--bin-dir` points at
//! already built binaries instead (the tests use it).

#[path = "sandbox/proxies.rs"]
mod proxies;

use anyhow::{bail, Context as _};
use clap::Parser;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use proxy_testkit::pg::{PgOptions, PgServer};
use proxy_testkit::ports::free_port;
use proxy_testkit::process;
use proxy_testkit::stack::{self, ListenerPorts, PgEndpoint, StackLayout, DATABASE};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Proves that a directory was made by the sandbox, so wiping it on start is safe.
const MARKER: &str = ".redshift-iam-proxy-sandbox";
/// Held (flock) for the sandbox's lifetime: one sandbox per directory.
const LOCK_FILE: &str = "sandbox.lock";
/// The previous run's PostgreSQL directory (it lives under the system temp dir, which the
/// `postgres` OS user can reach even when this directory is under `/root`).
const PG_DIR_RECORD: &str = "postgres.dir";
/// Database user of the `sandbox-direct` service (a plain password login, for comparison).
const STATIC_USER: &str = "static_user";
const PROXY_BIN: &str = "redshift-iam-proxy";
/// The emulator's CloudTrail-style records, one JSON object per line.
const CLOUDTRAIL_FILE: &str = "cloudtrail.jsonl";
const EMULATOR_BIN: &str = "aws-emulator";

#[derive(Debug, Parser)]
#[command(
    name = "sandbox",
    about = "Runs PostgreSQL (as Redshift), the AWS emulator and redshift-iam-proxy locally, \
             with fresh certificates and a libpq service file, until Ctrl-C."
)]
struct Args {
    /// Directory for certificates, configuration files and the service file; wiped on
    /// every start. Default: `sandbox` in the target directory of this binary
    /// (`target/sandbox`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Written (JSON: pids, ports, paths) once the proxy accepts connections; removed on
    /// exit.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Directory holding already built `redshift-iam-proxy` and `aws-emulator` binaries.
    /// Default: next to this binary, built first with `$CARGO build` when run through cargo.
    #[arg(long, env = "SANDBOX_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Never run `cargo build` (use the binaries next to this one as they are).
    #[arg(long)]
    no_build: bool,
    /// Run this many proxies behind HAProxy (which must be installed), as production runs
    /// them: HAProxy takes the ports the service file names.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=9))]
    instances: u8,
}

/// How the sandbox ended.
enum Outcome {
    /// Ctrl-C or SIGTERM: everything stopped cleanly.
    Stopped,
    /// A child died on its own.
    ChildFailed,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(
                "sandbox",
                &format!("error: cannot start the tokio runtime: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::ChildFailed) => ExitCode::FAILURE,
        Err(e) => {
            say("sandbox", &format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Outcome> {
    // Installed before anything starts, so a signal during startup still stops what has
    // been started instead of killing this process outright.
    let mut signals = ShutdownSignals::new()?;
    let exe_dir = exe_dir()?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => exe_dir
            .parent()
            .context("the sandbox binary has no target directory above it; pass --dir")?
            .join("sandbox"),
    };
    let (dir, _lock) = prepare_dir(&dir)?;
    if let Some(path) = &args.ready_file {
        remove_if_exists(path)?;
    }

    let started = tokio::select! {
        started = start(&args, &dir, &exe_dir) => started?,
        name = signals.recv() => {
            say("sandbox", &format!("{name} during startup: stopping what was started"));
            return Ok(Outcome::Stopped);
        }
    };
    let mut sandbox = started;
    if let Some(path) = &args.ready_file {
        write_atomically(path, &sandbox.ready_json())?;
    }
    print_banner(&sandbox);

    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            name = signals.recv() => {
                say("sandbox", &format!("{name} received: stopping"));
                break Outcome::Stopped;
            }
            _ = tick.tick() => {
                if let Some(failure) = sandbox.failed_child() {
                    say("sandbox", &format!("error: {failure}; stopping the sandbox"));
                    break Outcome::ChildFailed;
                }
            }
        }
    };
    if let Some(path) = &args.ready_file {
        let _ = fs::remove_file(path);
    }
    sandbox.shutdown();
    say("sandbox", "stopped; every child process has exited");
    Ok(outcome)
}

/// Everything the sandbox runs, stopped in reverse start order on drop.
struct Sandbox {
    dir: PathBuf,
    bin_dir: PathBuf,
    layout: StackLayout,
    emulator_url: String,
    // Field order is drop order: the balancer and proxies first (clients), PostgreSQL last.
    balancer: Option<(proxy_testkit::balancer::BalancerSpec, Supervised)>,
    proxies: Vec<(proxies::Instance, Supervised)>,
    emulator: Supervised,
    pg_log: LogTail,
    pg: PgServer,
    pg_pid: u32,
}

async fn start(args: &Args, dir: &Path, exe_dir: &Path) -> anyhow::Result<Sandbox> {
    let bin_dir = binaries(args, exe_dir).await?;

    say("sandbox", "starting PostgreSQL (the Redshift stand-in)");
    // `PgServer::start` blocks (initdb, readiness polling): keep it off the runtime threads.
    let pg =
        tokio::task::spawn_blocking(|| PgServer::start_in_own_process_group(PgOptions::default()))
            .await
            .context("PostgreSQL startup task failed")?
            .context("cannot start PostgreSQL")?;
    let pg_pid = pg.pid().context("PostgreSQL is not running")?;
    fs::write(
        dir.join(PG_DIR_RECORD),
        pg.socket_dir().to_string_lossy().as_bytes(),
    )
    .context("cannot record the PostgreSQL directory")?;
    let link = dir.join("postgres");
    std::os::unix::fs::symlink(pg.socket_dir(), &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    let pg_log = LogTail::start("postgres", pg.log_path().to_path_buf());
    let static_password = prepare_databases(&pg).await?;

    let emulator_port = free_port();
    let emulator_url = format!("http://127.0.0.1:{emulator_port}");
    let mut layout = StackLayout::generate(
        dir,
        &PgEndpoint::of(&pg),
        &emulator_url,
        ListenerPorts::free(),
    )
    .context("cannot generate certificates and configuration")?;
    layout.emulator.cloudtrail_file = Some(dir.join(CLOUDTRAIL_FILE));

    let emulator_config = dir.join("aws-emulator.toml");
    let emulator_ready = dir.join("aws-emulator.ready");
    let emulator_toml =
        toml::to_string(&layout.emulator).context("cannot serialize the emulator config")?;
    fs::write(
        &emulator_config,
        format!("{EMULATOR_HEADER}\n{emulator_toml}"),
    )
    .with_context(|| format!("cannot write {}", emulator_config.display()))?;
    say(
        "sandbox",
        &format!("starting the AWS emulator on {emulator_url}"),
    );
    let mut command = Command::new(bin_dir.join(EMULATOR_BIN));
    command
        .arg("--config")
        .arg(&emulator_config)
        .arg("--ready-file")
        .arg(&emulator_ready)
        .arg("--listen")
        .arg(format!("127.0.0.1:{emulator_port}"))
        .current_dir(dir);
    let mut emulator = Supervised::spawn("aws-emulator", command)?;
    wait_until(&mut emulator, Duration::from_secs(30), || {
        emulator_ready.is_file()
    })
    .await?;

    let plan = proxies::plan(
        dir,
        &layout,
        &proxy_header(&emulator_url, &layout.ports),
        args.instances,
    )?;
    let mut running = Vec::new();
    for instance in plan.instances {
        running.push(proxies::start_proxy(&bin_dir, dir, instance).await?);
    }
    let balancer = match plan.balancer {
        Some(spec) => Some(proxies::start_balancer(dir, spec).await?),
        None => None,
    };

    write_client_files(dir, &layout, pg.port(), pg.ca_cert_path(), &static_password)?;
    Ok(Sandbox {
        dir: dir.to_path_buf(),
        bin_dir,
        layout,
        emulator_url,
        balancer,
        proxies: running,
        emulator,
        pg_log,
        pg,
        pg_pid,
    })
}

impl Sandbox {
    /// A description of the first child that exited on its own, if any.
    fn failed_child(&mut self) -> Option<String> {
        match self.pg.try_wait() {
            Ok(Some(status)) => {
                return Some(format!(
                    "PostgreSQL (pid {}) exited unexpectedly: {status}",
                    self.pg_pid
                ))
            }
            Ok(None) => {}
            Err(e) => return Some(format!("cannot poll PostgreSQL: {e}")),
        }
        for child in self.children() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    return Some(format!(
                        "{} (pid {}) exited unexpectedly: {status}",
                        child.name, child.pid
                    ))
                }
                Ok(None) => {}
                Err(e) => return Some(format!("cannot poll {}: {e}", child.name)),
            }
        }
        None
    }

    /// Every supervised child: the balancer, the proxies, the emulator.
    fn children(&mut self) -> Vec<&mut Supervised> {
        let mut children: Vec<&mut Supervised> = Vec::new();
        children.extend(self.balancer.as_mut().map(|(_, child)| child));
        children.extend(self.proxies.iter_mut().map(|(_, child)| child));
        children.push(&mut self.emulator);
        children
    }

    /// Stops the balancer and the proxies (together: each drains for its
    /// `listener_close_delay`), then the emulator, then PostgreSQL, waiting for each.
    fn shutdown(mut self) {
        let mut children = self.children();
        let emulator = children.pop();
        std::thread::scope(|scope| {
            for child in children {
                scope.spawn(|| report_stop(child));
            }
        });
        emulator.into_iter().for_each(report_stop);
        // Fast shutdown (SIGINT), waiting for the postmaster and thus all its backends.
        self.pg.stop();
        self.pg_log.stop();
        say("sandbox", "postgres stopped");
    }

    fn service_file(&self) -> PathBuf {
        self.dir.join("pg_service.conf")
    }

    /// The ready file: what a script needs to use and to check the stack.
    fn ready_json(&self) -> String {
        let ports = self.layout.ports;
        let json = serde_json::json!({
            "dir": self.dir,
            "service_file": self.service_file(),
            "proxy_config": self.proxies[0].0.config,
            "aws_endpoint_url": self.emulator_url,
            "pids": {
                "sandbox": std::process::id(),
                "postgres": self.pg_pid,
                "aws-emulator": self.emulator.pid,
                "redshift-iam-proxy": self.proxies[0].1.pid,
                "haproxy": self.balancer.as_ref().map(|(_, child)| child.pid),
            },
            "instances": self.proxies.iter().map(|(i, child)| serde_json::json!({
                "name": i.name,
                "pid": child.pid,
                "config": i.config,
                "admin": format!("http://127.0.0.1:{}", i.admin_port),
                "audit_file": i.audit,
                "listeners": i.listeners,
            })).collect::<Vec<_>>(),
            "haproxy_stats": self.balancer.as_ref()
                .map(|(spec, _)| format!("http://127.0.0.1:{}/stats", spec.stats_port)),
            "cloudtrail_file": self.dir.join(CLOUDTRAIL_FILE),
            "ports": {
                "postgres": self.pg.port(),
                "cluster": ports.cluster,
                "cluster_iam": ports.cluster_iam,
                "serverless": ports.serverless,
                "standin_cluster": ports.standin_cluster,
                "standin_serverless": ports.standin_serverless,
            },
        });
        format!("{json:#}\n")
    }
}

fn report_stop(child: &mut Supervised) {
    match child.stop() {
        Some(Ok(status)) => say("sandbox", &format!("{} stopped ({status})", child.name)),
        Some(Err(e)) => say("sandbox", &format!("cannot stop {}: {e}", child.name)),
        None => {}
    }
}

/// Creates Redshift's `dev` database and the static user of `sandbox-direct`; returns its
/// (random, per run) password.
async fn prepare_databases(pg: &PgServer) -> anyhow::Result<String> {
    use rand::distr::{Alphanumeric, SampleString};
    stack::create_dev_database(pg)
        .await
        .context("cannot create the dev database")?;
    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    pg.create_scram_user(STATIC_USER, &password)
        .await
        .context("cannot create the static user")?;
    // PostgreSQL 15+ no longer lets everybody create tables in `public`; Redshift does, and a
    // newcomer's first `create table` through the proxy should work.
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(pg.socket_dir())
        .port(pg.port())
        .user(pg.superuser())
        .dbname(DATABASE);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to the dev database as superuser")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute("GRANT ALL ON SCHEMA public TO PUBLIC")
        .await
        .context("cannot open the public schema of dev")?;
    Ok(password)
}

/// Writes `pg_service.conf` and the `pgpass` file of the static user.
fn write_client_files(
    dir: &Path,
    layout: &StackLayout,
    pg_port: u16,
    pg_ca: &Path,
    static_password: &str,
) -> anyhow::Result<()> {
    let passfile = dir.join("pgpass");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&passfile)
        .with_context(|| format!("cannot create {}", passfile.display()))?;
    // host:port:database:user:password; the password is alphanumeric, nothing to escape.
    writeln!(
        file,
        "localhost:{pg_port}:*:{STATIC_USER}:{static_password}"
    )
    .with_context(|| format!("cannot write {}", passfile.display()))?;

    let ca = layout.pki.ca_cert_path();
    let ports = layout.ports;
    let mut conf = String::from(
        "# libpq service file written by the sandbox; regenerated on every start.\n\
         # Use: PGSERVICEFILE=<this file> psql service=sandbox\n\
         # libpq wants absolute paths here, and client keys readable only by their owner.\n",
    );
    let proxied = [
        (
            "sandbox",
            "Through the proxy to the provisioned cluster (GetClusterCredentials, AutoCreate,\n\
             # group analysts) as alice: current_user is IAMA:alice.",
            ports.cluster,
            &layout.alice,
            "alice",
        ),
        (
            "sandbox-serverless",
            "Through the proxy to the serverless workgroup (GetCredentials) as alice:\n\
             # current_user is IAMR:RedshiftAccess (the IAM role's database user).",
            ports.serverless,
            &layout.alice,
            "alice",
        ),
        (
            "sandbox-iam",
            "Through the proxy to the provisioned cluster with GetClusterCredentialsWithIAM\n\
             # as alice: current_user is IAMR:RedshiftAccess.",
            ports.cluster_iam,
            &layout.alice,
            "alice",
        ),
        (
            "sandbox-bob",
            "A second identity: bob's certificate carries a SPIFFE ID; his rule uses the role\n\
             # RedshiftBiReader: current_user is IAMA:bob.",
            ports.cluster,
            &layout.bob,
            "bob",
        ),
    ];
    for (name, comment, port, cert, user) in proxied {
        let _ = write!(
            conf,
            "\n# {comment}\n[{name}]\nhost=localhost\nhostaddr=127.0.0.1\nport={port}\n\
             dbname={DATABASE}\nuser={user}\nsslmode=verify-full\nsslrootcert={ca}\n\
             sslcert={cert_path}\nsslkey={key_path}\n",
            ca = ca.display(),
            cert_path = cert.chain_pem.display(),
            key_path = cert.key_pem.display(),
        );
    }
    let _ = write!(
        conf,
        "\n# Straight to PostgreSQL (not through a Redshift stand-in) over TLS with a static user\n\
         # and password (in the pgpass file), for side-by-side comparisons: current_user is\n\
         # {STATIC_USER}.\n\
         [sandbox-direct]\nhost=localhost\nhostaddr=127.0.0.1\nport={pg_port}\n\
         dbname={DATABASE}\nuser={STATIC_USER}\nsslmode=verify-full\nsslrootcert={pg_ca}\n\
         passfile={passfile}\n",
        pg_ca = pg_ca.display(),
        passfile = passfile.display(),
    );
    let path = dir.join("pg_service.conf");
    fs::write(&path, conf).with_context(|| format!("cannot write {}", path.display()))
}

const EMULATOR_HEADER: &str = "\
# AWS emulator configuration written by the sandbox (regenerated on every start).
# It plays IAM Roles Anywhere (the trust anchor is the sandbox's own CA, pki/), and the
# Redshift / Redshift Serverless credential APIs for a cluster and a workgroup. Each has a
# Redshift stand-in in front of the local PostgreSQL server, where the issued temporary
# passwords log in. Both roles carry the README's IAM policy (role_policies); every call
# is recorded in cloudtrail.jsonl.
";

fn proxy_header(emulator_url: &str, ports: &ListenerPorts) -> String {
    format!(
        "# Sandbox: this file was written by `cargo run --bin sandbox` and is regenerated on\n\
         # every start. It is a complete, working configuration; differences from production:\n\
         #  - `host = \"localhost\"`, ports {} and {}: Redshift stand-ins (in front of a local\n\
         #    PostgreSQL) play the cluster and the serverless workgroup (production: the\n\
         #    Redshift endpoint, port 5439, no `ca_bundle`).\n\
         #  - `aws_endpoint_url` / `endpoint_url` = {emulator_url}: the AWS emulator plays\n\
         #    IAM Roles Anywhere and the Redshift APIs (production: omit both).\n\n",
        ports.standin_cluster, ports.standin_serverless
    )
}

fn print_banner(sandbox: &Sandbox) {
    let shown = |path: &Path| -> String {
        // Relative to the working directory when below it: shorter, and what the README shows.
        std::env::current_dir()
            .ok()
            .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| path.to_path_buf())
            .display()
            .to_string()
    };
    let service = shown(&sandbox.service_file());
    let ports = sandbox.layout.ports;
    let mut text = String::new();
    let _ = writeln!(text, "ready.");
    let _ = writeln!(
        text,
        "  PostgreSQL                          127.0.0.1:{} (TLS), data and log in {}",
        sandbox.pg.port(),
        shown(&sandbox.dir.join("postgres"))
    );
    let _ = writeln!(
        text,
        "  AWS emulator                        {}, CloudTrail records in {}",
        sandbox.emulator_url,
        shown(&sandbox.dir.join(CLOUDTRAIL_FILE))
    );
    let _ = writeln!(
        text,
        "  Redshift stand-ins                  cluster 127.0.0.1:{}, workgroup 127.0.0.1:{}",
        ports.standin_cluster, ports.standin_serverless
    );
    let entry = match &sandbox.balancer {
        Some((spec, _)) => format!(
            "  HAProxy (stats http://127.0.0.1:{}/stats): cluster 127.0.0.1:{}, cluster-iam 127.0.0.1:{}, serverless 127.0.0.1:{}",
            spec.stats_port, ports.cluster, ports.cluster_iam, ports.serverless
        ),
        None => format!(
            "  proxy: cluster 127.0.0.1:{}, cluster-iam 127.0.0.1:{}, serverless 127.0.0.1:{}",
            ports.cluster, ports.cluster_iam, ports.serverless
        ),
    };
    let _ = writeln!(text, "{entry}");
    for (instance, child) in &sandbox.proxies {
        let _ = writeln!(
            text,
            "  {} (pid {}): config {}, metrics http://127.0.0.1:{admin}/metrics, health \
             http://127.0.0.1:{admin}/readyz, audit log {}",
            instance.name,
            child.pid,
            shown(&instance.config),
            shown(&instance.audit),
            admin = instance.admin_port,
        );
    }
    let _ = writeln!(
        text,
        "  certificates in {}",
        shown(&sandbox.dir.join("pki"))
    );
    let _ = writeln!(text, "Try:");
    for (service_name, expect) in [
        ("sandbox", "IAMA:alice"),
        ("sandbox-serverless", "IAMR:RedshiftAccess"),
        ("sandbox-iam", "IAMR:RedshiftAccess"),
        ("sandbox-bob", "IAMA:bob"),
        ("sandbox-direct", STATIC_USER),
    ] {
        let _ = writeln!(
            text,
            "  PGSERVICEFILE={service} psql service={service_name} -c 'select current_user'   # {expect}"
        );
    }
    let _ = writeln!(
        text,
        "  {} check --config {} --target cluster --user alice --connect",
        shown(&sandbox.bin_dir.join(PROXY_BIN)),
        shown(&sandbox.proxies[0].0.config)
    );
    let first = &sandbox.proxies[0].0;
    let _ = writeln!(
        text,
        "  curl -s http://127.0.0.1:{}/metrics | grep sessions   # then: tail -f {}",
        first.admin_port,
        shown(&first.audit)
    );
    let _ = write!(text, "Ctrl-C stops everything.");
    say("sandbox", &text);
}

/// Makes `dir` (absolute), takes its lock and removes what a previous run left there.
fn prepare_dir(dir: &Path) -> anyhow::Result<(PathBuf, Flock<File>)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let ours = dir.join(MARKER).exists();
    let empty = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .next()
        .is_none();
    if !ours && !empty {
        bail!(
            "{} is not empty and was not created by the sandbox; it would be wiped, so \
             choose another --dir",
            dir.display()
        );
    }
    fs::write(dir.join(MARKER), "").context("cannot mark the sandbox directory")?;

    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = fs::read_to_string(dir.join("sandbox.pid")).unwrap_or_default();
            bail!(
                "another sandbox (pid {}) is running with {}; stop it or choose another --dir",
                pid.trim(),
                dir.display()
            );
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", lock_path.display()),
    };

    // A previous run that was killed: PDEATHSIG stopped its children, but its files remain.
    if let Ok(previous) = fs::read_to_string(dir.join(PG_DIR_RECORD)) {
        remove_stale_postgres(Path::new(previous.trim()))?;
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        if name == MARKER || name == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    fs::write(dir.join("sandbox.pid"), format!("{}\n", std::process::id()))
        .context("cannot write sandbox.pid")?;
    Ok((dir, lock))
}

/// Removes the PostgreSQL directory of a previous run, after its postmaster (signalled by
/// PDEATHSIG when that run died) has exited.
fn remove_stale_postgres(root: &Path) -> anyhow::Result<()> {
    let is_testkit_dir = root.is_absolute()
        && root
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("testkit-pg-"));
    if !is_testkit_dir || !root.exists() {
        // Not something the sandbox made (or already gone): leave it alone.
        return Ok(());
    }
    let pid_file = root.join("data").join("postmaster.pid");
    if let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while is_postmaster_of(pid, root) {
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL of a previous sandbox (pid {pid}, {}) is still running",
                    root.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    say(
        "sandbox",
        &format!("removing stale PostgreSQL directory {}", root.display()),
    );
    fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))
}

/// Whether `pid` is a live (not zombie) process started with a data directory under `root`
/// (guards against pid reuse).
fn is_postmaster_of(pid: i32, root: &Path) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !zombie && String::from_utf8_lossy(&cmdline).contains(root.to_string_lossy().as_ref())
}

/// The directory holding the proxy and emulator binaries, building them first when run
/// through cargo.
async fn binaries(args: &Args, exe_dir: &Path) -> anyhow::Result<PathBuf> {
    let (dir, may_build) = match &args.bin_dir {
        Some(dir) => (dir.clone(), false),
        None => (exe_dir.to_path_buf(), !args.no_build),
    };
    if may_build {
        if let Some(cargo) = std::env::var_os("CARGO") {
            build_binaries(Path::new(&cargo), exe_dir).await?;
        }
    }
    // Absolute: the children run in the sandbox directory, where a relative path would
    // resolve differently.
    let dir =
        fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    for name in [PROXY_BIN, EMULATOR_BIN] {
        if !dir.join(name).is_file() {
            bail!(
                "{} not found: run the sandbox through `cargo run --release --bin sandbox`, or \
                 build it with `cargo build --release -p redshift-iam-proxy -p proxy-testkit \
                 --bin redshift-iam-proxy --bin aws-emulator` and pass --bin-dir",
                dir.join(name).display()
            );
        }
    }
    Ok(dir)
}

/// `$CARGO build` of the proxy and the emulator with the profile and target directory this
/// binary was built with (read from where it lives: `<target>/<profile>/sandbox`), so a
/// `cargo run --release --bin sandbox` runs release binaries that are never stale.
async fn build_binaries(cargo: &Path, exe_dir: &Path) -> anyhow::Result<()> {
    let profile = exe_dir
        .file_name()
        .context("cannot tell the build profile")?
        .to_string_lossy()
        .into_owned();
    let target_dir = exe_dir
        .parent()
        .context("cannot tell the target directory")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("cannot tell the workspace directory")?
        .join("Cargo.toml");
    let mut command = tokio::process::Command::new(cargo);
    command.arg("build");
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    command
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "-p",
            "redshift-iam-proxy",
            "-p",
            "proxy-testkit",
            "--bin",
            PROXY_BIN,
            "--bin",
            EMULATOR_BIN,
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    say(
        "sandbox",
        &format!("building {PROXY_BIN} and {EMULATOR_BIN} ({profile} profile)"),
    );
    let status = command
        .status()
        .await
        .with_context(|| format!("cannot run {}", cargo.display()))?;
    if !status.success() {
        bail!("building {PROXY_BIN} and {EMULATOR_BIN} failed ({status})");
    }
    Ok(())
}

/// A child process whose output is relayed line by line with its name in front. Stopped
/// (SIGTERM, then SIGKILL) on drop; killed by PDEATHSIG if the sandbox dies.
struct Supervised {
    name: String,
    pid: u32,
    child: Option<Child>,
    pumps: Vec<JoinHandle<()>>,
}

impl Supervised {
    fn spawn(name: &str, mut command: Command) -> anyhow::Result<Supervised> {
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C in the terminal reaches only the sandbox, which
            // then stops the children in order (and does not mistake their exit for a crash).
            .process_group(0);
        if !io::stdout().is_terminal() {
            // Colour codes are noise in a file or a CI log.
            command.env("NO_COLOR", "1");
        }
        let mut child = process::spawn_tied_to_test(command, Signal::SIGTERM)
            .with_context(|| format!("cannot run {program}"))?;
        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.push(pump(name.to_owned(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.push(pump(name.to_owned(), stderr));
        }
        Ok(Supervised {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            pumps,
        })
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// SIGTERM; a second SIGTERM after 3 s (the proxy then skips the rest of its drain);
    /// SIGKILL after 10 s. `None` if already stopped.
    fn stop(&mut self) -> Option<io::Result<ExitStatus>> {
        let mut child = self.child.take()?;
        let result = (|| {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
            let _ = signal::kill(pid, Signal::SIGTERM);
            if let Some(status) = process::wait_timeout(&mut child, Duration::from_secs(3))? {
                return Ok(status);
            }
            process::terminate(&mut child, Signal::SIGTERM, Duration::from_secs(7))
        })();
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
        Some(result)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Waits until `ready()` holds, failing if `child` exits first or `timeout` passes.
async fn wait_until(
    child: &mut Supervised,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{} exited during startup: {status}", child.name);
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} was not ready within {timeout:?}", child.name);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// TCP ports in LISTEN state on 127.0.0.1 or 0.0.0.0, from `/proc/net/tcp`. Readiness is
/// read from the kernel instead of probed with a connection, which the proxy would log (and
/// audit) as a client that hung up during startup.
fn listening_ports() -> Vec<u16> {
    const LISTEN: &str = "0A";
    let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (addr, port) = local.split_once(':')?;
            let loopback_or_any = addr == "0100007F" || addr == "00000000";
            (state == LISTEN && loopback_or_any)
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

/// Relays `stream` line by line (lossy UTF-8) until end of file.
fn pump(name: String, stream: impl Read + Send + 'static) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => say(&name, String::from_utf8_lossy(&line).trim_end()),
            }
        }
    })
}

/// Follows PostgreSQL's log file (the server writes it itself), relaying new lines.
struct LogTail {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogTail {
    fn start(name: &'static str, path: PathBuf) -> LogTail {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut offset = 0u64;
            let mut pending = Vec::new();
            loop {
                // Read once more after the stop request, for the shutdown messages.
                let stopping = flag.load(Ordering::Relaxed);
                if let Ok(mut file) = File::open(&path) {
                    if file.seek(SeekFrom::Start(offset)).is_ok() {
                        if let Ok(read) = file.read_to_end(&mut pending) {
                            offset += read as u64;
                        }
                    }
                }
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    say(name, String::from_utf8_lossy(&line).trim_end());
                }
                if stopping {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
        });
        LogTail {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogTail {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// One line (or several) of output, each prefixed with `name`.
fn say(name: &str, text: &str) {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in text.lines() {
        let _ = writeln!(out, "{name:>12} | {line}");
    }
    let _ = out.flush();
}

fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the sandbox binary")?;
    Ok(exe
        .parent()
        .context("the sandbox binary has no directory")?
        .to_path_buf())
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove stale {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Writes `contents` to a temporary sibling, then renames it: readers never see half a file.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot chmod {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
