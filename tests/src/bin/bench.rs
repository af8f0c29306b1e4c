//! `cargo run --release --bin bench -- [--quick] [--json PATH]`: measures
//! redshift-iam-proxy side by side with a direct TLS connection to PostgreSQL and with
//! PgBouncer (session mode, TLS on both sides), on a stack it starts itself, and prints
//! medians and ratios as a Markdown table. See docs/benchmarks.md.
//!
//! Not a test: there are no pass/fail assertions on timings. `--quick` is the CI smoke
//! check that the harness works.

#[path = "../bench/mod.rs"]
mod bench;

use anyhow::Context as _;
use bench::endpoint::Target;
use bench::procfs::Machine;
use bench::report::Report;
use bench::stack::{BenchStack, StackOptions};
use bench::workloads::{Plan, Runner};
use clap::{Parser, ValueEnum};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// COPY (SELECT ...) TO STDOUT through psql.
    Copy,
    /// A wide SELECT through psql.
    Wide,
    /// pgbench -S with 1 and 8 clients.
    Select,
    /// pgbench -C -S and sequential logins.
    Connect,
    /// Logins by 10 identities: AWS calls, and login time under AWS latency.
    Credentials,
    /// Proxy RSS with idle sessions.
    Memory,
    /// Direct and proxy across a delay link: logins, `select 1`, COPY per round-trip time.
    Latency,
}

#[derive(Debug, Parser)]
#[command(
    about = "Benchmarks redshift-iam-proxy against a direct TLS connection and PgBouncer",
    long_about = None
)]
struct Args {
    /// Small sizes and one round: a smoke check that finishes in well under 2 minutes.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Also write the Markdown tables to this file.
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,
    /// Interleaved rounds per workload (default: 5, quick: 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Run only these workloads (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Idle-session counts for the memory workload (default: 1000,5000; quick: 100).
    #[arg(long, value_delimiter = ',')]
    sessions: Option<Vec<usize>>,
    /// Seconds per pgbench run (default: 10, quick: 2).
    #[arg(long)]
    pgbench_seconds: Option<u64>,
    /// Round-trip times of the latency mode's delay link, in ms (default: 0,10,30; quick: 30).
    #[arg(long, value_delimiter = ',')]
    rtts: Option<Vec<u64>>,
    /// Leave out the latency mode's session-reuse path (for proxy binaries that predate
    /// `session_reuse`).
    #[arg(long)]
    without_session_reuse: bool,
    /// The proxy binary to measure (default: build and use target/release/redshift-iam-proxy).
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
    /// How the proxy's temporary credentials authenticate to the Redshift stand-in: md5, as
    /// Redshift's IAM users (default), or sha256, Redshift's SHA-256 digest (auth code 13).
    /// The direct and PgBouncer paths use md5 to PostgreSQL either way.
    #[arg(long, value_enum, default_value_t = UpstreamAuth::Md5)]
    upstream_auth: UpstreamAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UpstreamAuth {
    Md5,
    Sha256,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match setup_and_run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn setup_and_run(args: Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "[bench] warning: this is a debug build of the harness; its own clients are slow. \
             Use `cargo run --release --bin bench`."
        );
    }
    raise_fd_limit()?;
    let proxy = proxy_binary(args.proxy_bin.as_deref())?;
    eprintln!("[bench] proxy binary: {}", proxy.display());
    // Before any thread exists: the test kit's launcher reads it.
    std::env::set_var("REDSHIFT_IAM_PROXY_BIN", &proxy);

    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds.max(1);
    }
    if let Some(sessions) = args.sessions.clone() {
        plan.session_levels = sessions.into_iter().filter(|n| *n > 0).collect();
    }
    if let Some(seconds) = args.pgbench_seconds {
        plan.pgbench_seconds = seconds.max(1);
    }
    if let Some(rtts) = args.rtts.clone() {
        plan.link_rtts_ms = rtts;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run(&args, plan, &proxy) => report,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        }
    })?;
    // Leave nothing running: the stack was dropped inside `run`.
    runtime.shutdown_timeout(Duration::from_secs(5));

    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[bench] JSON written to {}", path.display());
    }
    Ok(())
}

async fn run(args: &Args, plan: Plan, proxy: &Path) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let wants = |w: Workload| args.only.is_empty() || args.only.contains(&w);

    eprintln!("[bench] starting PostgreSQL, the AWS emulator, the proxy and PgBouncer");
    let mut stack = BenchStack::start(&StackOptions {
        max_connections: if wants(Workload::Memory) {
            plan.max_connections()
        } else {
            300
        },
        upstream_sha256: args.upstream_auth == UpstreamAuth::Sha256,
        session_reuse_path: !args.without_session_reuse,
    })
    .await?;
    let bindir = stack.pg.bindir().to_path_buf();
    let versions = versions(&bindir, proxy).await;
    let mut report = Report {
        machine: Machine::describe(),
        versions,
        plan: plan.clone(),
        started_at,
        duration_seconds: 0.0,
        comparisons: Vec::new(),
        cpu: Vec::new(),
        credentials: Vec::new(),
        memory: Vec::new(),
        links: Vec::new(),
        targets: Vec::new(),
    };
    let mut runner = Runner {
        stack: &mut stack,
        plan: &plan,
        psql: bindir.join("psql"),
        pgbench: bindir.join("pgbench"),
    };
    // Every path logs in once before anything is timed (the proxy's credential cache, the
    // PgBouncer pool, the server's catalog caches).
    for target in Target::ALL {
        runner
            .stack
            .endpoint(target)
            .connector()?
            .connect()
            .await
            .with_context(|| format!("first login through {}", target.as_str()))?
            .simple_query("SELECT 1")
            .await?;
    }

    if wants(Workload::Copy) {
        let (comparison, cpu) = runner.copy_throughput().await?;
        report.comparisons.push(comparison);
        report.cpu.push(cpu);
    }
    if wants(Workload::Wide) {
        report.comparisons.push(runner.wide_select().await?);
    }
    if wants(Workload::Select) {
        for clients in [1, 8] {
            let (tps, latency, cpu) = runner.select_only(clients).await?;
            report.comparisons.extend([tps, latency]);
            report.cpu.push(cpu);
        }
    }
    if wants(Workload::Connect) {
        let (comparisons, cpu) = runner.new_connections().await?;
        report.comparisons.extend(comparisons);
        report.cpu.push(cpu);
    }
    if wants(Workload::Credentials) {
        let latency = Duration::from_millis(plan.aws_latency_ms);
        report
            .credentials
            .push(runner.credential_economy(Duration::ZERO).await?);
        report
            .credentials
            .push(runner.credential_economy(latency).await?);
    }
    if wants(Workload::Latency) {
        report.links = bench::latency::run(runner.stack, &plan, &runner.psql).await?;
    }
    if wants(Workload::Memory) {
        report.memory = runner.idle_memory().await?;
    }
    drop(runner);
    drop(stack);
    report.duration_seconds = started.elapsed().as_secs_f64();
    report.check_targets();
    Ok(report)
}

/// 5,000 idle sessions hold 5,000 sockets here and 10,000 in the proxy (which inherits the
/// limit): raise the soft limit to the hard one.
fn raise_fd_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    Ok(())
}

/// The proxy binary to measure: `--proxy-bin`, else the release build, built now when the
/// harness runs under cargo.
fn proxy_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(
            bench::procfs::is_executable(path),
            "--proxy-bin {} is not an executable file",
            path.display()
        );
        // The proxy runs in its own directory: a relative path would not find it there.
        return std::path::absolute(path)
            .with_context(|| format!("resolving --proxy-bin {}", path.display()));
    }
    let exe = std::env::current_exe().context("locating the bench executable")?;
    // target/<profile>/bench -> target/release/redshift-iam-proxy
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable is not inside a cargo target directory")?;
    let path = target_dir
        .join("release")
        .join(proxy_testkit::proxy::BINARY_NAME);
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("[bench] building the proxy (release)");
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "redshift-iam-proxy"])
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .context("running cargo build")?;
        anyhow::ensure!(
            status.success(),
            "cargo build of the proxy failed ({status})"
        );
    }
    anyhow::ensure!(
        bench::procfs::is_executable(&path),
        "{} not found: run `cargo build --release -p redshift-iam-proxy`, or pass --proxy-bin",
        path.display()
    );
    Ok(path)
}

/// Versions of everything measured, for the record.
async fn versions(bindir: &Path, proxy: &Path) -> BTreeMap<String, String> {
    async fn first_line(program: &Path, args: &[&str]) -> String {
        match tokio::process::Command::new(program)
            .args(args)
            .output()
            .await
        {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            Ok(out) => format!("unavailable ({})", out.status),
            Err(e) => format!("unavailable: {e}"),
        }
    }
    let mut versions = BTreeMap::new();
    for program in ["postgres", "psql", "pgbench"] {
        versions.insert(
            program.to_string(),
            first_line(&bindir.join(program), &["--version"]).await,
        );
    }
    if let Some(pgbouncer) = bench::pgbouncer::PgBouncer::binary() {
        versions.insert(
            "pgbouncer".into(),
            first_line(&pgbouncer, &["--version"]).await,
        );
    }
    versions.insert("proxy".into(), first_line(proxy, &["--version"]).await);
    versions.insert(
        "git".into(),
        first_line(Path::new("git"), &["rev-parse", "--short", "HEAD"]).await,
    );
    versions
}
