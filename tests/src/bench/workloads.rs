//! The workloads of issue 8, each run against direct, proxy and PgBouncer in turn.

use crate::bench::endpoint::{Endpoint, Target};
use crate::bench::procfs;
use crate::bench::report::{Comparison, CpuCost, CredentialRun, MemoryPoint, Metric};
use crate::bench::stack::BenchStack;
use crate::bench::stats;
use anyhow::Context as _;
use proxy_testkit::emulator::Api;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;

/// Sizes and repetitions: the full run, or the quick smoke check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Interleaved rounds (direct, proxy, pgbouncer per round).
    pub rounds: usize,
    /// Rows of `repeat('x', 4000)` in the COPY (4001 bytes each with the newline).
    pub copy_rows: u64,
    /// Rows of the wide SELECT.
    pub wide_rows: u64,
    pub pgbench_seconds: u64,
    /// Sequential logins per target and round for setup-time percentiles.
    pub connect_samples: usize,
    /// Logins of the credential-economy runs (spread over the identities).
    pub logins: usize,
    /// Latency the emulator adds to every AWS call in the second credential run.
    pub aws_latency_ms: u64,
    /// Idle-session counts at which the proxy's RSS is read (0 is always measured).
    pub session_levels: Vec<usize>,
    /// Latency mode: round-trip times of the delay link, in ms.
    pub link_rtts_ms: Vec<u64>,
    /// Sequential logins per path and round across the link.
    pub link_logins: usize,
    /// `select 1` round trips per path and round on an open session across the link.
    pub link_queries: usize,
    /// Rows of the COPY across the link (4001 bytes each).
    pub link_copy_rows: u64,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            quick: false,
            rounds: 5,
            // 270,000 x 4001 bytes = 1.08 GB > 1 GiB.
            copy_rows: 270_000,
            wide_rows: 1_000_000,
            pgbench_seconds: 10,
            connect_samples: 200,
            logins: 1000,
            aws_latency_ms: 200,
            session_levels: vec![1000, 5000],
            link_rtts_ms: vec![0, 10, 30],
            link_logins: 40,
            link_queries: 50,
            // 270 MB: at 30 ms the link is window-bound, not the relay.
            link_copy_rows: 67_500,
        }
    }

    pub fn quick() -> Plan {
        Plan {
            quick: true,
            rounds: 1,
            copy_rows: 8_000,
            wide_rows: 20_000,
            pgbench_seconds: 2,
            connect_samples: 20,
            // As many as the full run: 10 cold logins must stay within the slowest 1 %.
            logins: 1000,
            aws_latency_ms: 200,
            session_levels: vec![100],
            link_rtts_ms: vec![30],
            link_logins: 5,
            link_queries: 10,
            link_copy_rows: 2_000,
        }
    }

    /// PostgreSQL `max_connections` this plan needs.
    pub fn max_connections(&self) -> u32 {
        let sessions = self.session_levels.iter().copied().max().unwrap_or(0);
        u32::try_from(sessions)
            .unwrap_or(u32::MAX)
            .saturating_add(100)
    }
}

/// Never let a client program run forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

/// What one client-program run measured, plus the CPU the middle process used meanwhile.
struct Measured<T> {
    value: T,
    middle_cpu: Option<Duration>,
}

async fn with_middle_cpu<T, F>(pid: Option<u32>, run: F) -> anyhow::Result<Measured<T>>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let before = pid.map(procfs::cpu_time).transpose()?;
    let value = run.await?;
    let middle_cpu = match (pid, before) {
        (Some(pid), Some(before)) => Some(procfs::cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    Ok(Measured { value, middle_cpu })
}

fn libpq_command(program: &std::path::Path, endpoint: &Endpoint) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    endpoint.libpq_env(&mut command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// Runs `command` to completion with stdout discarded; the wall time it took.
async fn run_timed(mut command: tokio::process::Command, what: &str) -> anyhow::Result<Duration> {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let started = Instant::now();
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{what} timed out"))?
        .with_context(|| format!("running {what}"))?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(elapsed)
}

pub struct Runner<'a> {
    pub stack: &'a mut BenchStack,
    pub plan: &'a Plan,
    pub psql: std::path::PathBuf,
    pub pgbench: std::path::PathBuf,
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}

fn copy_sql(rows: u64) -> String {
    format!("COPY (SELECT repeat('x', 4000) FROM generate_series(1, {rows})) TO STDOUT")
}

fn wide_sql(rows: u64) -> String {
    // Sixteen columns of mixed types, about 330 bytes per row as psql prints it.
    format!(
        "SELECT g AS id, g * 2 AS c1, g::float8 / 7 AS c2, md5(g::text) AS c3, \
         md5((g + 1)::text) AS c4, repeat('w', 64) AS c5, g % 97 AS c6, \
         timestamp '2024-01-01' + g * interval '1 second' AS c7, (g % 2 = 0) AS c8, \
         g::numeric / 3 AS c9, 'constant text value' AS c10, g::text AS c11, \
         upper(md5(g::text)) AS c12, g::int8 * 1000003 AS c13, 3.14159::float4 AS c14, \
         repeat('z', 32) AS c15 \
         FROM generate_series(1, {rows}) g"
    )
}

impl Runner<'_> {
    fn endpoint(&self, target: Target) -> Endpoint {
        self.stack.endpoint(target)
    }

    /// Workload 1a: `COPY (SELECT ...) TO STDOUT` through psql to /dev/null.
    pub async fn copy_throughput(&mut self) -> anyhow::Result<(Comparison, CpuCost)> {
        let rows = self.plan.copy_rows;
        let bytes = rows * 4001;
        let sql = copy_sql(rows);
        progress(format!(
            "relay throughput: COPY of {:.2} GiB, {} rounds",
            bytes as f64 / f64::from(1 << 30),
            self.plan.rounds
        ));
        let mut comparison =
            Comparison::new("COPY ... TO STDOUT (psql)", Metric::MegabytesPerSecond);
        let mut cpu = CpuCost::new("COPY ... TO STDOUT", "CPU-s per GiB relayed");
        for round in 0..self.plan.rounds {
            for target in Target::ALL {
                let endpoint = self.endpoint(target);
                let mut command = libpq_command(&self.psql, &endpoint);
                command.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql]);
                let measured = with_middle_cpu(
                    self.stack.middle_pid(target)?,
                    run_timed(command, "psql COPY"),
                )
                .await?;
                let mbps = bytes as f64 / 1e6 / measured.value.as_secs_f64();
                progress(format!(
                    "  round {round} {:9}: {mbps:8.1} MB/s",
                    target.as_str()
                ));
                comparison.add(target, mbps);
                if let Some(spent) = measured.middle_cpu {
                    cpu.add(
                        target,
                        spent.as_secs_f64() / (bytes as f64 / f64::from(1 << 30)),
                    );
                }
            }
        }
        Ok((comparison, cpu))
    }

    /// Workload 1b: a wide SELECT through psql (FETCH_COUNT cursor) to /dev/null.
    pub async fn wide_select(&mut self) -> anyhow::Result<Comparison> {
        let sql = wide_sql(self.plan.wide_rows);
        let args = |sql: &str| -> Vec<String> {
            [
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "FETCH_COUNT=10000",
                "-c",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([sql.to_string()])
            .collect()
        };
        // The size of the output, counted once (directly) instead of on every timed run.
        let bytes = {
            let mut command = libpq_command(&self.psql, &self.endpoint(Target::Direct));
            command
                .args(args(&sql))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = command.spawn().context("running psql")?;
            let mut stderr = child.stderr.take().context("psql stderr")?;
            let errors = tokio::spawn(async move {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text).await;
                text
            });
            let mut stdout = child.stdout.take().context("psql stdout")?;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let status = child.wait().await?;
            let errors = errors.await.unwrap_or_default();
            anyhow::ensure!(
                status.success(),
                "psql wide SELECT failed ({status}): {}",
                errors.trim()
            );
            total
        };
        progress(format!(
            "relay throughput: wide SELECT of {} rows ({:.0} MB of psql output), {} rounds",
            self.plan.wide_rows,
            bytes as f64 / 1e6,
            self.plan.rounds
        ));
        let mut comparison =
            Comparison::new("wide SELECT (psql, 16 columns)", Metric::MegabytesPerSecond);
        for round in 0..self.plan.rounds {
            for target in Target::ALL {
                let mut command = libpq_command(&self.psql, &self.endpoint(target));
                command.args(args(&sql));
                let elapsed = run_timed(command, "psql wide SELECT").await?;
                let mbps = bytes as f64 / 1e6 / elapsed.as_secs_f64();
                progress(format!(
                    "  round {round} {:9}: {mbps:8.1} MB/s",
                    target.as_str()
                ));
                comparison.add(target, mbps);
            }
        }
        Ok(comparison)
    }

    /// [`Self::pgbench`], with the CPU time the middle (proxy or PgBouncer) spent meanwhile.
    async fn pgbench_measured(
        &self,
        target: Target,
        args: &[String],
    ) -> anyhow::Result<Measured<PgbenchResult>> {
        with_middle_cpu(self.stack.middle_pid(target)?, self.pgbench(target, args)).await
    }

    async fn pgbench(&self, target: Target, args: &[String]) -> anyhow::Result<PgbenchResult> {
        let mut command = libpq_command(&self.pgbench, &self.endpoint(target));
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
            .await
            .context("pgbench timed out")?
            .context("running pgbench")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench {} against {} failed ({}): {}{}",
            args.join(" "),
            target.as_str(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        PgbenchResult::parse(&stdout)
            .with_context(|| format!("unexpected pgbench output:\n{stdout}"))
    }

    /// Workload 2: `pgbench -S` over established sessions with `clients` clients.
    pub async fn select_only(
        &mut self,
        clients: u32,
    ) -> anyhow::Result<(Comparison, Comparison, CpuCost)> {
        let threads = clients.min(2);
        let args: Vec<String> = [
            "-n".to_string(),
            "-S".into(),
            "-c".into(),
            clients.to_string(),
            "-j".into(),
            threads.to_string(),
            "-T".into(),
            self.plan.pgbench_seconds.to_string(),
        ]
        .into();
        progress(format!(
            "small queries: pgbench -S, {clients} client(s), {} s x {} rounds",
            self.plan.pgbench_seconds, self.plan.rounds
        ));
        let label = format!(
            "pgbench -S, {clients} client{}",
            if clients == 1 { "" } else { "s" }
        );
        let mut tps = Comparison::new(&label, Metric::TransactionsPerSecond);
        let mut latency = Comparison::new(&label, Metric::MeanLatencyMs);
        let mut cpu = CpuCost::new(&label, "CPU-µs per query");
        for round in 0..self.plan.rounds {
            for target in Target::ALL {
                let measured = self.pgbench_measured(target, &args).await?;
                let r = measured.value;
                progress(format!(
                    "  round {round} {:9}: {:9.0} tps, {:.3} ms",
                    target.as_str(),
                    r.tps,
                    r.latency_ms
                ));
                tps.add(target, r.tps);
                latency.add(target, r.latency_ms);
                if let (Some(spent), true) = (measured.middle_cpu, r.transactions > 0) {
                    cpu.add(target, spent.as_secs_f64() * 1e6 / r.transactions as f64);
                }
            }
        }
        Ok((tps, latency, cpu))
    }

    /// Workload 3: `pgbench -C -S` (a new connection per transaction) for connections per
    /// second, and sequential tokio-postgres logins for setup-time percentiles.
    pub async fn new_connections(&mut self) -> anyhow::Result<(Vec<Comparison>, CpuCost)> {
        let args: Vec<String> = ["-n", "-S", "-C", "-c", "2", "-j", "2", "-T"]
            .iter()
            .map(|s| s.to_string())
            .chain([self.plan.pgbench_seconds.to_string()])
            .collect();
        progress(format!(
            "connection setup: pgbench -C -S -c 2 -j 2, {} s, and {} sequential logins, x {} rounds",
            self.plan.pgbench_seconds, self.plan.connect_samples, self.plan.rounds
        ));
        let mut per_second =
            Comparison::new("pgbench -C -S, 2 clients", Metric::ConnectionsPerSecond);
        let mut avg_connect = Comparison::new("pgbench -C -S, 2 clients", Metric::AverageConnectMs);
        let mut p50 = Comparison::new("sequential logins (tokio-postgres)", Metric::P50SetupMs);
        let mut p99 = Comparison::new("sequential logins (tokio-postgres)", Metric::P99SetupMs);
        let mut cpu = CpuCost::new("pgbench -C -S, 2 clients", "CPU-ms per connection");
        for round in 0..self.plan.rounds {
            for target in Target::ALL {
                let measured = self.pgbench_measured(target, &args).await?;
                let r = measured.value;
                if let (Some(spent), true) = (measured.middle_cpu, r.transactions > 0) {
                    cpu.add(target, spent.as_secs_f64() * 1e3 / r.transactions as f64);
                }
                let connector = self.endpoint(target).connector()?;
                let mut setup = Vec::with_capacity(self.plan.connect_samples);
                for _ in 0..self.plan.connect_samples {
                    let started = Instant::now();
                    let client = connector
                        .connect()
                        .await
                        .with_context(|| format!("logging in through {}", target.as_str()))?;
                    setup.push(started.elapsed().as_secs_f64() * 1e3);
                    drop(client);
                }
                let (s50, s99) = (
                    stats::percentile(&setup, 50.0).unwrap_or(f64::NAN),
                    stats::percentile(&setup, 99.0).unwrap_or(f64::NAN),
                );
                progress(format!(
                    "  round {round} {:9}: {:7.0} conn/s (avg connect {:.2} ms); logins p50 {s50:.2} ms, p99 {s99:.2} ms",
                    target.as_str(),
                    r.tps,
                    r.avg_connect_ms.unwrap_or(f64::NAN),
                ));
                per_second.add(target, r.tps);
                if let Some(ms) = r.avg_connect_ms {
                    avg_connect.add(target, ms);
                }
                p50.add(target, s50);
                p99.add(target, s99);
            }
        }
        Ok((vec![per_second, avg_connect, p50, p99], cpu))
    }

    /// Workload 4: `logins` logins spread over the identities, on a freshly started proxy
    /// (empty caches), with the emulator adding `latency` to every AWS call.
    pub async fn credential_economy(&mut self, latency: Duration) -> anyhow::Result<CredentialRun> {
        progress(format!(
            "credential economy: {} logins by {} identities, AWS latency {} ms",
            self.plan.logins,
            self.stack.identities.len(),
            latency.as_millis()
        ));
        self.stack.emulator.faults().set_latency(latency);
        let before: BTreeMap<String, u64> = Api::ALL
            .iter()
            .map(|api| (api.name().to_string(), self.stack.emulator.calls(*api)))
            .collect();
        let result = async {
            self.stack.restart_proxy().await?;
            let identities = self.stack.identities.len();
            let per_identity = self.plan.logins.div_ceil(identities);
            let mut workers = tokio::task::JoinSet::new();
            for i in 0..identities {
                let connector = self.stack.proxy_endpoint_as(i).connector()?;
                workers.spawn(async move {
                    // The first login of each identity finds the cache cold.
                    let mut times = Vec::with_capacity(per_identity);
                    for _ in 0..per_identity {
                        let started = Instant::now();
                        let client = connector.connect().await?;
                        times.push(started.elapsed().as_secs_f64() * 1e3);
                        drop(client);
                    }
                    anyhow::Ok(times)
                });
            }
            let (mut times, mut first, mut later) = (Vec::new(), Vec::new(), Vec::new());
            while let Some(worker) = workers.join_next().await {
                let worker = worker.context("login worker panicked")??;
                if let Some((head, tail)) = worker.split_first() {
                    first.push(*head);
                    later.extend_from_slice(tail);
                }
                times.extend(worker);
            }
            anyhow::Ok((times, first, later))
        }
        .await;
        self.stack.emulator.faults().set_latency(Duration::ZERO);
        let (times, first, later) = result.with_context(|| {
            format!(
                "credential economy run; proxy logs:\n{}",
                self.stack.proxy_logs()
            )
        })?;
        let calls: BTreeMap<String, u64> = Api::ALL
            .iter()
            .map(|api| {
                let name = api.name().to_string();
                let delta = self
                    .stack
                    .emulator
                    .calls(*api)
                    .saturating_sub(before[&name]);
                (name, delta)
            })
            .collect();
        let run = CredentialRun {
            aws_latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            logins: times.len(),
            identities: self.stack.identities.len(),
            calls,
            p50_ms: stats::percentile(&times, 50.0).unwrap_or(f64::NAN),
            p99_ms: stats::percentile(&times, 99.0).unwrap_or(f64::NAN),
            max_ms: stats::percentile(&times, 100.0).unwrap_or(f64::NAN),
            over_100ms: times.iter().filter(|t| **t > 100.0).count(),
            first_login_max_ms: stats::percentile(&first, 100.0).unwrap_or(f64::NAN),
            later_p99_ms: stats::percentile(&later, 99.0).unwrap_or(f64::NAN),
        };
        progress(format!(
            "  calls {:?}; login p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} over 100 ms; \
             first login per identity: max {:.1} ms; later logins: p99 {:.2} ms",
            run.calls,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            run.over_100ms,
            run.first_login_max_ms,
            run.later_p99_ms
        ));
        Ok(run)
    }

    /// Workload 5: the proxy's RSS with 0 and `levels` idle sessions (each logged in and
    /// having run one `SELECT 1`, then idle). Stops early, and says so, when the machine
    /// runs short of memory or PostgreSQL refuses more backends.
    pub async fn idle_memory(&mut self) -> anyhow::Result<Vec<MemoryPoint>> {
        /// Keep this much memory free for everybody else on the machine.
        const MEMORY_FLOOR: u64 = 3 << 30;
        const PARALLEL_LOGINS: usize = 16;
        self.stack.restart_proxy().await?;
        let identities = self.stack.identities.len();
        let connectors = (0..identities)
            .map(|i| self.stack.proxy_endpoint_as(i).connector())
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Warm the credential cache and lazily built state, so the baseline has them.
        for connector in &connectors {
            connector.connect().await?.simple_query("SELECT 1").await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = self.stack.proxy_pid()?;
        let baseline = procfs::rss_bytes(pid)?;
        let mut points = vec![MemoryPoint {
            requested: 0,
            sessions: 0,
            rss_bytes: baseline,
            bytes_per_session: None,
            mem_available_bytes: procfs::mem_available_bytes()?,
            stopped_early: None,
        }];
        progress(format!(
            "idle sessions: baseline RSS {:.1} MiB",
            baseline as f64 / f64::from(1 << 20)
        ));
        let mut sessions: Vec<tokio_postgres::Client> = Vec::new();
        for &level in &self.plan.session_levels {
            let mut stopped_early = None;
            while sessions.len() < level {
                let available = procfs::mem_available_bytes()?;
                if available < MEMORY_FLOOR {
                    stopped_early = Some(format!(
                        "MemAvailable fell to {:.1} GiB",
                        available as f64 / f64::from(1 << 30)
                    ));
                    break;
                }
                let batch = (level - sessions.len()).min(PARALLEL_LOGINS * 8);
                let mut logins = tokio::task::JoinSet::new();
                for k in 0..batch {
                    let connector = connectors[(sessions.len() + k) % identities].clone();
                    logins.spawn(async move {
                        let client = connector.connect().await?;
                        client.simple_query("SELECT 1").await?;
                        anyhow::Ok(client)
                    });
                    // Bounded parallelism: wait for one before starting more.
                    if logins.len() >= PARALLEL_LOGINS {
                        if let Some(done) = logins.join_next().await {
                            match done? {
                                Ok(client) => sessions.push(client),
                                Err(e) => stopped_early = Some(format!("a login failed: {e:#}")),
                            }
                        }
                    }
                }
                while let Some(done) = logins.join_next().await {
                    match done? {
                        Ok(client) => sessions.push(client),
                        Err(e) => stopped_early = Some(format!("a login failed: {e:#}")),
                    }
                }
                if stopped_early.is_some() {
                    break;
                }
            }
            // Let the proxy settle (log buffers, freed login state).
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = procfs::rss_bytes(pid)?;
            let n = sessions.len();
            let per_session = (n > 0).then(|| rss.saturating_sub(baseline) as f64 / n as f64);
            let point = MemoryPoint {
                requested: level,
                sessions: n,
                rss_bytes: rss,
                bytes_per_session: per_session,
                mem_available_bytes: procfs::mem_available_bytes()?,
                stopped_early: stopped_early.clone(),
            };
            progress(format!(
                "  {n} idle sessions: RSS {:.1} MiB, {:.1} KiB per session{}",
                rss as f64 / f64::from(1 << 20),
                per_session.unwrap_or(f64::NAN) / 1024.0,
                stopped_early
                    .as_deref()
                    .map(|why| format!(" (stopped early: {why})"))
                    .unwrap_or_default()
            ));
            points.push(point);
            if stopped_early.is_some() {
                break;
            }
        }
        drop(sessions);
        Ok(points)
    }
}

/// The numbers pgbench prints at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PgbenchResult {
    pub transactions: u64,
    pub latency_ms: f64,
    pub tps: f64,
    /// `average connection time` (printed with `-C`).
    pub avg_connect_ms: Option<f64>,
}

impl PgbenchResult {
    pub fn parse(output: &str) -> Option<PgbenchResult> {
        let value_after = |prefix: &str| -> Option<f64> {
            output
                .lines()
                .find_map(|line| line.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse().ok())
        };
        Some(PgbenchResult {
            transactions: value_after("number of transactions actually processed:")? as u64,
            latency_ms: value_after("latency average =")?,
            tps: value_after("tps =")?,
            avg_connect_ms: value_after("average connection time ="),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let output = "\
pgbench (15.14 (Debian 15.14-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: simple
number of clients: 2
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 1234
number of failed transactions: 0 (0.000%)
latency average = 3.242 ms
average connection time = 2.801 ms
tps = 616.713009 (including reconnection times)
";
        let r = PgbenchResult::parse(output).unwrap();
        assert_eq!(r.transactions, 1234);
        assert_eq!(r.latency_ms, 3.242);
        assert_eq!(r.tps, 616.713009);
        assert_eq!(r.avg_connect_ms, Some(2.801));
        assert!(PgbenchResult::parse("pgbench: error").is_none());
    }
}
