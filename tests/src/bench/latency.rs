//! Latency mode: a direct client and the proxy, each across the same delay link
//! ([`crate::bench::link`]) to the cluster's Redshift stand-in, at several round-trip
//! times, side by side in interleaved rounds.
//!
//! ```text
//! direct:  client ──────────────────────────── link ──▶ stand-in ──unix──▶ PostgreSQL
//! proxy:   client ──TLS (local)──▶ proxy ───── link ──▶ stand-in ──unix──▶ PostgreSQL
//! ```
//!
//! The direct client logs in to the stand-in as a static md5 user (TLS verify-full), the
//! proxy with the temporary md5 credential of `alice0`: both pay the link's round trips and
//! the stand-in's own login to PostgreSQL. PgBouncer is left out here: it pools logged-in
//! server connections, so across a link it would measure its pool, not a login.

use crate::bench::endpoint::Endpoint;
use crate::bench::report::format_value;
use crate::bench::stack::{BenchStack, LinkPath};
use crate::bench::stats;
use crate::bench::workloads::Plan;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One measurement at one round-trip time, for each path that ran it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkComparison {
    pub rtt_ms: u64,
    pub workload: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub samples: BTreeMap<LinkPath, Vec<f64>>,
    /// The statistic of the samples the row reports (median or a percentile).
    pub value: BTreeMap<LinkPath, f64>,
    /// value(path) / value(direct), for the proxy paths.
    pub over_direct: BTreeMap<LinkPath, f64>,
}

/// How a row summarises its samples.
#[derive(Debug, Clone, Copy)]
enum Statistic {
    Percentile(f64),
    Median,
}

impl LinkComparison {
    fn new(rtt_ms: u64, workload: &str, unit: &'static str, higher_is_better: bool) -> Self {
        LinkComparison {
            rtt_ms,
            workload: workload.into(),
            unit,
            higher_is_better,
            samples: BTreeMap::new(),
            value: BTreeMap::new(),
            over_direct: BTreeMap::new(),
        }
    }

    fn add(&mut self, path: LinkPath, values: &[f64]) {
        self.samples
            .entry(path)
            .or_default()
            .extend_from_slice(values);
    }

    fn summarise(&mut self, statistic: Statistic) {
        for (path, samples) in &self.samples {
            let value = match statistic {
                Statistic::Percentile(p) => stats::percentile(samples, p),
                Statistic::Median => stats::median(samples),
            };
            if let Some(v) = value {
                self.value.insert(*path, v);
            }
        }
        if let Some(direct) = self.value.get(&LinkPath::Direct).copied() {
            for (path, v) in &self.value {
                if *path != LinkPath::Direct && direct != 0.0 {
                    self.over_direct.insert(*path, v / direct);
                }
            }
        }
    }
}

/// The paths this stack offers (the session-reuse one only with a proxy that has the key).
fn paths(stack: &BenchStack) -> Vec<(LinkPath, Endpoint)> {
    LinkPath::ALL
        .iter()
        .filter_map(|p| stack.link_endpoint(*p).map(|e| (*p, e)))
        .collect()
}

/// Every round-trip time of the plan: logins, `select 1`, COPY.
pub async fn run(
    stack: &BenchStack,
    plan: &Plan,
    psql: &Path,
) -> anyhow::Result<Vec<LinkComparison>> {
    let mut rows = Vec::new();
    for &rtt_ms in &plan.link_rtts_ms {
        stack.link.set_rtt(Duration::from_millis(rtt_ms));
        eprintln!(
            "[bench] latency mode: RTT {rtt_ms} ms, {} logins x {} rounds per path",
            plan.link_logins, plan.rounds
        );
        rows.extend(at_rtt(stack, plan, psql, rtt_ms).await?);
    }
    stack.link.set_rtt(Duration::ZERO);
    Ok(rows)
}

async fn at_rtt(
    stack: &BenchStack,
    plan: &Plan,
    psql: &Path,
    rtt_ms: u64,
) -> anyhow::Result<Vec<LinkComparison>> {
    let mut connect = LinkComparison::new(rtt_ms, "new connection", "connect, ms", false);
    let mut connect_query = LinkComparison::new(
        rtt_ms,
        "new connection + select 1",
        "to first result, ms",
        false,
    );
    let mut select = LinkComparison::new(rtt_ms, "select 1 (open session)", "ms", false);
    let mut copy = LinkComparison::new(rtt_ms, "COPY ... TO STDOUT (psql)", "MB/s", true);
    let paths = paths(stack);
    for (path, endpoint) in &paths {
        // Seeds what a path keeps between logins (warm connections, a parked session) and
        // leaves the link's effect out of the first timed login.
        endpoint
            .connector()?
            .connect()
            .await
            .with_context(|| format!("first login across the link ({})", path.as_str()))?
            .simple_query("select 1")
            .await?;
    }
    for round in 0..plan.rounds {
        for (path, endpoint) in &paths {
            let (to_ready, to_result) = logins(endpoint, plan.link_logins)
                .await
                .with_context(|| format!("logins across the link ({})", path.as_str()))?;
            connect.add(*path, &to_ready);
            connect_query.add(*path, &to_result);
            let (p50, p99) = (
                stats::percentile(&to_ready, 50.0).unwrap_or(f64::NAN),
                stats::percentile(&to_ready, 99.0).unwrap_or(f64::NAN),
            );
            let mut line = format!(
                "  RTT {rtt_ms} ms round {round} {:22}: connect p50 {p50:.1} ms, p99 {p99:.1} ms",
                path.as_str()
            );
            if *path != LinkPath::ProxyReuse {
                let query = select_latency(endpoint, plan.link_queries).await?;
                select.add(*path, &query);
                let mbps = copy_mbps(psql, endpoint, plan.link_copy_rows).await?;
                copy.add(*path, &[mbps]);
                let _ = write!(
                    line,
                    "; select 1 {:.2} ms; COPY {mbps:.0} MB/s",
                    stats::median(&query).unwrap_or(f64::NAN)
                );
            }
            eprintln!("[bench] {line}");
        }
    }
    let mut p99 = LinkComparison {
        workload: "new connection".into(),
        unit: "connect p99, ms",
        ..connect.clone()
    };
    connect.unit = "connect p50, ms";
    connect.summarise(Statistic::Percentile(50.0));
    p99.summarise(Statistic::Percentile(99.0));
    connect_query.summarise(Statistic::Percentile(50.0));
    connect_query.unit = "to first result p50, ms";
    select.summarise(Statistic::Median);
    select.unit = "median, ms";
    copy.summarise(Statistic::Median);
    Ok(vec![connect, p99, connect_query, select, copy])
}

/// `n` logins one after another, each followed by `select 1` and a clean close: the time
/// to ReadyForQuery and to the query's result, in ms.
async fn logins(endpoint: &Endpoint, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let connector = endpoint.connector()?;
    let (mut to_ready, mut to_result) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let started = Instant::now();
        let client = connector.connect().await?;
        to_ready.push(started.elapsed().as_secs_f64() * 1e3);
        client.simple_query("select 1").await?;
        to_result.push(started.elapsed().as_secs_f64() * 1e3);
        // Dropping the client sends Terminate: a clean exit, which session reuse needs.
        drop(client);
    }
    Ok((to_ready, to_result))
}

/// `n` round trips of `select 1` on one open session, in ms each.
async fn select_latency(endpoint: &Endpoint, n: usize) -> anyhow::Result<Vec<f64>> {
    let client = endpoint.connector()?.connect().await?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client.simple_query("select 1").await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// psql's `COPY (SELECT repeat('x', 4000) ...) TO STDOUT` of `rows` rows, in MB/s.
async fn copy_mbps(psql: &Path, endpoint: &Endpoint, rows: u64) -> anyhow::Result<f64> {
    let sql = format!("COPY (SELECT repeat('x', 4000) FROM generate_series(1, {rows})) TO STDOUT");
    let mut command = tokio::process::Command::new(psql);
    endpoint.libpq_env(&mut command);
    command
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .context("psql COPY across the link timed out")??;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "psql COPY across the link failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok((rows * 4001) as f64 / 1e6 / elapsed.as_secs_f64())
}

/// The latency-mode table: one block of rows per round-trip time.
pub fn markdown(rows: &[LinkComparison]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nAcross a delay link to the Redshift stand-in (latency mode):\n"
    );
    let _ = writeln!(
        out,
        "| RTT | Workload | Metric | direct | proxy | proxy, session reuse | proxy/direct | reuse/direct |"
    );
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let cell = |p: LinkPath| r.value.get(&p).map_or("–".into(), |v| format_value(*v));
        let ratio = |p: LinkPath| {
            r.over_direct
                .get(&p)
                .map_or("–".into(), |v| format!("{v:.2}×"))
        };
        let _ = writeln!(
            out,
            "| {} ms | {} | {}{} | {} | {} | {} | {} | {} |",
            r.rtt_ms,
            r.workload,
            r.unit,
            if r.higher_is_better { " ↑" } else { " ↓" },
            cell(LinkPath::Direct),
            cell(LinkPath::Proxy),
            cell(LinkPath::ProxyReuse),
            ratio(LinkPath::Proxy),
            ratio(LinkPath::ProxyReuse),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_against_direct() {
        let mut c = LinkComparison::new(30, "w", "ms", false);
        c.add(LinkPath::Direct, &[100.0, 300.0, 200.0]);
        c.add(LinkPath::Proxy, &[50.0]);
        c.summarise(Statistic::Median);
        assert_eq!(c.over_direct[&LinkPath::Proxy], 0.25);
        assert!(!c.over_direct.contains_key(&LinkPath::Direct));
        assert!(markdown(&[c]).contains("| 30 ms | w | ms ↓ | 200 | 50.0 | – | 0.25× | – |"));
    }
}
