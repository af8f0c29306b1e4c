//! Results: medians and ratios, rendered as Markdown and serialized as JSON.

use crate::bench::endpoint::Target;
use crate::bench::latency::LinkComparison;
use crate::bench::procfs::Machine;
use crate::bench::stack::LinkPath;
use crate::bench::stats;
use crate::bench::workloads::Plan;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a comparison measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    MegabytesPerSecond,
    TransactionsPerSecond,
    MeanLatencyMs,
    ConnectionsPerSecond,
    AverageConnectMs,
    P50SetupMs,
    P99SetupMs,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Metric::MegabytesPerSecond => "MB/s",
            Metric::TransactionsPerSecond => "TPS",
            Metric::MeanLatencyMs => "mean latency, ms",
            Metric::ConnectionsPerSecond => "connections/s",
            Metric::AverageConnectMs => "mean connect time, ms",
            Metric::P50SetupMs => "p50 setup, ms",
            Metric::P99SetupMs => "p99 setup, ms",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::MegabytesPerSecond
                | Metric::TransactionsPerSecond
                | Metric::ConnectionsPerSecond
        )
    }
}

/// One metric of one workload, sampled per target in interleaved rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub workload: String,
    pub metric: Metric,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub samples: BTreeMap<Target, Vec<f64>>,
    pub median: BTreeMap<Target, f64>,
    /// Median(proxy) / median(direct), as the raw ratio of the metric's values.
    pub proxy_over_direct: Option<f64>,
    pub proxy_over_pgbouncer: Option<f64>,
}

impl Comparison {
    pub fn new(workload: &str, metric: Metric) -> Comparison {
        Comparison {
            workload: workload.to_string(),
            metric,
            unit: metric.label(),
            higher_is_better: metric.higher_is_better(),
            samples: BTreeMap::new(),
            median: BTreeMap::new(),
            proxy_over_direct: None,
            proxy_over_pgbouncer: None,
        }
    }

    pub fn add(&mut self, target: Target, value: f64) {
        self.samples.entry(target).or_default().push(value);
        if let Some(m) = stats::median(&self.samples[&target]) {
            self.median.insert(target, m);
        }
        let ratio = |a: Target, b: Target| match (self.median.get(&a), self.median.get(&b)) {
            (Some(a), Some(b)) if *b != 0.0 => Some(a / b),
            _ => None,
        };
        self.proxy_over_direct = ratio(Target::Proxy, Target::Direct);
        self.proxy_over_pgbouncer = ratio(Target::Proxy, Target::Pgbouncer);
    }

    pub fn median_of(&self, target: Target) -> Option<f64> {
        self.median.get(&target).copied()
    }
}

/// CPU the middle process (proxy, PgBouncer) spent per unit of work, from
/// `/proc/PID/stat` utime + stime deltas around each run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuCost {
    pub workload: String,
    pub unit: String,
    pub samples: BTreeMap<Target, Vec<f64>>,
    pub median: BTreeMap<Target, f64>,
}

impl CpuCost {
    pub fn new(workload: &str, unit: &str) -> CpuCost {
        CpuCost {
            workload: workload.into(),
            unit: unit.into(),
            samples: BTreeMap::new(),
            median: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, target: Target, value: f64) {
        self.samples.entry(target).or_default().push(value);
        if let Some(m) = stats::median(&self.samples[&target]) {
            self.median.insert(target, m);
        }
    }
}

/// One credential-economy run (fresh proxy, `logins` logins).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialRun {
    pub aws_latency_ms: u64,
    pub logins: usize,
    pub identities: usize,
    /// AWS calls made during the run, per API.
    pub calls: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub over_100ms: usize,
    /// Slowest first login of an identity (cold cache: the AWS calls happen here).
    pub first_login_max_ms: f64,
    /// p99 of the logins after each identity's first (warm cache).
    pub later_p99_ms: f64,
}

impl CredentialRun {
    pub fn credential_calls(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(api, _)| api.as_str() != "CreateSession")
            .map(|(_, n)| n)
            .sum()
    }
}

/// The proxy's RSS at one idle-session count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryPoint {
    pub requested: usize,
    pub sessions: usize,
    pub rss_bytes: u64,
    /// (RSS - RSS with 0 sessions) / sessions.
    pub bytes_per_session: Option<f64>,
    pub mem_available_bytes: u64,
    /// Why fewer than `requested` sessions were opened.
    pub stopped_early: Option<String>,
}

/// A target of issue 8 and how the run did against it (information, not a test verdict).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub plan: Plan,
    pub started_at: String,
    pub duration_seconds: f64,
    pub comparisons: Vec<Comparison>,
    pub cpu: Vec<CpuCost>,
    pub credentials: Vec<CredentialRun>,
    pub memory: Vec<MemoryPoint>,
    /// Latency mode: both paths across the delay link, per round-trip time.
    pub links: Vec<LinkComparison>,
    pub targets: Vec<TargetCheck>,
}

fn find<'a>(
    comparisons: &'a [Comparison],
    workload: &str,
    metric: Metric,
) -> Option<&'a Comparison> {
    comparisons
        .iter()
        .find(|c| c.workload.starts_with(workload) && c.metric == metric)
}

impl Report {
    /// Evaluates the targets from the collected numbers.
    pub fn check_targets(&mut self) {
        let mut checks = Vec::new();
        let ratio_check = |label: &str, ratio: Option<f64>, min: f64| TargetCheck {
            target: format!("{label} ≥ {min:.2}×"),
            measured: ratio.map_or("not measured".into(), |r| format!("{r:.2}×")),
            met: ratio.map(|r| r >= min),
        };
        let copy = find(&self.comparisons, "COPY", Metric::MegabytesPerSecond);
        checks.push(ratio_check(
            "relay throughput (COPY) proxy/direct",
            copy.and_then(|c| c.proxy_over_direct),
            0.80,
        ));
        let select8 = find(
            &self.comparisons,
            "pgbench -S, 8 clients",
            Metric::TransactionsPerSecond,
        );
        checks.push(ratio_check(
            "pgbench -S 8 clients TPS proxy/direct",
            select8.and_then(|c| c.proxy_over_direct),
            0.60,
        ));
        checks.push(ratio_check(
            "pgbench -S 8 clients TPS proxy/pgbouncer",
            select8.and_then(|c| c.proxy_over_pgbouncer),
            1.5,
        ));
        let connections = find(
            &self.comparisons,
            "pgbench -C -S",
            Metric::ConnectionsPerSecond,
        );
        checks.push(ratio_check(
            "new connections/s proxy/direct",
            connections.and_then(|c| c.proxy_over_direct),
            0.70,
        ));
        if let Some(run) = self.credentials.first() {
            let create = run.calls.get("CreateSession").copied().unwrap_or(0);
            let credential = run.credential_calls();
            checks.push(TargetCheck {
                target: format!(
                    "{} logins by {} identities: exactly 1 CreateSession, ≤ {} credential calls",
                    run.logins, run.identities, run.identities
                ),
                measured: format!("{create} CreateSession, {credential} credential calls"),
                met: Some(create == 1 && credential <= run.identities as u64),
            });
        }
        if let (Some(base), Some(slow)) = (self.credentials.first(), self.credentials.get(1)) {
            // "Within noise": at most 25 % or 5 ms above the run without added latency.
            let unchanged = slow.p99_ms <= (base.p99_ms * 1.25).max(base.p99_ms + 5.0);
            checks.push(TargetCheck {
                target: format!(
                    "p99 login unchanged with {} ms AWS latency (≤ +25 % or +5 ms)",
                    slow.aws_latency_ms
                ),
                measured: format!("p99 {:.2} ms → {:.2} ms", base.p99_ms, slow.p99_ms),
                met: Some(unchanged),
            });
        }
        if let Some(last) = self.memory.last().filter(|p| p.sessions > 0) {
            let per = last.bytes_per_session.unwrap_or(f64::NAN);
            checks.push(TargetCheck {
                target: format!(
                    "≤ 64 KiB RSS per idle session (at {} requested)",
                    last.requested
                ),
                measured: format!("{:.1} KiB at {} sessions", per / 1024.0, last.sessions),
                met: Some(per <= 64.0 * 1024.0 && last.sessions == last.requested),
            });
        }
        self.check_link_targets(&mut checks);
        self.targets = checks;
    }

    /// Issue 15's goals at the longest round-trip time measured: new connections through
    /// the proxy (default configuration) and repeat connections with session reuse, as a
    /// share of the direct connect time (p50).
    fn check_link_targets(&self, checks: &mut Vec<TargetCheck>) {
        let Some(rtt) = self.links.iter().map(|l| l.rtt_ms).max().filter(|r| *r > 0) else {
            return;
        };
        let connect = self
            .links
            .iter()
            .find(|l| l.rtt_ms == rtt && l.unit == "connect p50, ms");
        for (path, label, max) in [
            (LinkPath::Proxy, "new connections through the proxy", 0.6),
            (
                LinkPath::ProxyReuse,
                "repeat connections with session reuse",
                0.2,
            ),
        ] {
            let ratio = connect.and_then(|c| c.over_direct.get(&path).copied());
            checks.push(TargetCheck {
                target: format!("{label} at {rtt} ms RTT ≤ {max:.1}× direct connect p50"),
                measured: ratio.map_or("not measured".into(), |r| format!("{r:.2}×")),
                met: ratio.map(|r| r <= max),
            });
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {:.1} GiB RAM, {}. Mode: {}, {} interleaved round(s). Run took {:.0} s.\n",
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            if self.plan.quick { "quick" } else { "full" },
            self.plan.rounds,
            self.duration_seconds
        );
        let _ = writeln!(
            out,
            "| Workload | Metric | direct | proxy | pgbouncer | proxy/direct | proxy/pgbouncer |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        for c in &self.comparisons {
            let cell = |t: Target| c.median_of(t).map_or("–".into(), format_value);
            let ratio = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}×"));
            let _ = writeln!(
                out,
                "| {} | {}{} | {} | {} | {} | {} | {} |",
                c.workload,
                c.unit,
                if c.higher_is_better { " ↑" } else { " ↓" },
                cell(Target::Direct),
                cell(Target::Proxy),
                cell(Target::Pgbouncer),
                ratio(c.proxy_over_direct),
                ratio(c.proxy_over_pgbouncer),
            );
        }
        if !self.cpu.is_empty() {
            let _ = writeln!(out, "\nCPU of the process in the middle (utime + stime):\n");
            let _ = writeln!(out, "| Workload | Unit | proxy | pgbouncer |");
            let _ = writeln!(out, "|---|---|---:|---:|");
            for c in &self.cpu {
                let cell = |t: Target| c.median.get(&t).map_or("–".into(), |v| format_value(*v));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    c.workload,
                    c.unit,
                    cell(Target::Proxy),
                    cell(Target::Pgbouncer)
                );
            }
        }
        if !self.credentials.is_empty() {
            let _ = writeln!(out, "\nCredential economy (fresh proxy per run):\n");
            let _ = writeln!(
                out,
                "| AWS latency | logins | identities | CreateSession | GetClusterCredentials | other credential calls | login p50 | login p99 | max | > 100 ms | first login per identity, max | later logins p99 |"
            );
            let _ = writeln!(
                out,
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for r in &self.credentials {
                let get = |api: &str| r.calls.get(api).copied().unwrap_or(0);
                let other = r.credential_calls() - get("GetClusterCredentials");
                let _ = writeln!(
                    out,
                    "| {} ms | {} | {} | {} | {} | {} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {:.1} ms | {:.2} ms |",
                    r.aws_latency_ms,
                    r.logins,
                    r.identities,
                    get("CreateSession"),
                    get("GetClusterCredentials"),
                    other,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.over_100ms,
                    r.first_login_max_ms,
                    r.later_p99_ms
                );
            }
        }
        if !self.memory.is_empty() {
            let _ = writeln!(out, "\nProxy memory with idle sessions:\n");
            let _ = writeln!(out, "| sessions | proxy RSS | per session | note |");
            let _ = writeln!(out, "|---:|---:|---:|---|");
            for p in &self.memory {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} MiB | {} | {} |",
                    p.sessions,
                    p.rss_bytes as f64 / f64::from(1 << 20),
                    p.bytes_per_session
                        .map_or("–".into(), |b| format!("{:.1} KiB", b / 1024.0)),
                    p.stopped_early
                        .as_deref()
                        .map(|why| format!("requested {}; stopped: {why}", p.requested))
                        .unwrap_or_default()
                );
            }
        }
        out.push_str(&crate::bench::latency::markdown(&self.links));
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\nTargets (issues 8 and 15):\n");
            let _ = writeln!(out, "| Target | Measured | Met |");
            let _ = writeln!(out, "|---|---|---|");
            for t in &self.targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                };
                let _ = writeln!(out, "| {} | {} | {} |", t.target, t.measured, met);
            }
        }
        out
    }
}

/// Three significant digits, at most two decimals.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_of_medians() {
        let mut c = Comparison::new("w", Metric::TransactionsPerSecond);
        for v in [100.0, 110.0, 90.0] {
            c.add(Target::Direct, v);
        }
        for v in [80.0, 70.0, 90.0] {
            c.add(Target::Proxy, v);
        }
        c.add(Target::Pgbouncer, 40.0);
        assert_eq!(c.proxy_over_direct, Some(0.8));
        assert_eq!(c.proxy_over_pgbouncer, Some(2.0));
    }
}
