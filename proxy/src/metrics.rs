//! Prometheus metrics (`prometheus-client`), served as text at the admin listener's
//! `/metrics`.
//!
//! Counters and histograms are updated on the session path (an atomic add each); values
//! that live elsewhere (the credential cache, certificate expiry, the audit queue) are read
//! at scrape time by [`ScrapeTimeCollector`], so they are always current and cost nothing
//! between scrapes. Every name starts with `redshift_iam_proxy_`; the list is in
//! `docs/operations.md`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proxy_auth::aws::{AwsApi, AwsCallObserver, AwsCallOutcome};
use proxy_auth::redshift::{CacheStats, RedshiftCredentials};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Common prefix of every metric name.
pub const PREFIX: &str = "redshift_iam_proxy";

/// Label sets: a few fixed keys with small, bounded value sets (listener and target names,
/// stable reason strings). Never a user, a certificate subject or an address.
pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s: handshakes and logins are milliseconds; AWS calls under throttling and
    // timeouts reach tens of seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// AWS calls by API and outcome, and their latency: every HTTP request the proxy sends to
/// AWS (each retry attempt counts), reported by the credential chain through
/// [`AwsCallObserver`]. Created before the credential chain, which is built before the
/// listeners; clones share the same series.
#[derive(Clone)]
pub struct AwsCallMetrics {
    calls: Family<Labels, Counter>,
    duration: HistogramFamily,
}

impl Default for AwsCallMetrics {
    fn default() -> Self {
        AwsCallMetrics {
            calls: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl std::fmt::Debug for AwsCallMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCallMetrics").finish_non_exhaustive()
    }
}

impl AwsCallObserver for AwsCallMetrics {
    fn aws_call(&self, api: AwsApi, outcome: AwsCallOutcome, elapsed: Duration) {
        self.calls
            .get_or_create(&labels(&[
                ("api", api.as_str()),
                ("outcome", outcome.as_str()),
            ]))
            .inc();
        Metrics::observe(&self.duration, "api", api.as_str(), elapsed);
    }
}

/// Read at scrape time: the credential cache's counters. Implemented for the production
/// cache; tests that use their own credential source may implement it or leave it out.
pub trait CredentialStats: Send + Sync + 'static {
    fn stats(&self) -> CacheStats;
}

impl CredentialStats for RedshiftCredentials {
    fn stats(&self) -> CacheStats {
        RedshiftCredentials::stats(self)
    }
}

/// A certificate whose expiry is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// `server`, `client_ca` or `roles_anywhere`.
    pub kind: &'static str,
    /// The listener it belongs to (empty for the Roles Anywhere certificate).
    pub listener: String,
    /// The certificate's subject, so several CAs in one bundle stay apart.
    pub subject: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

/// A CRL whose nextUpdate is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlExpiry {
    pub listener: String,
    pub issuer: String,
    pub next_update_unix: i64,
}

/// Values read at scrape time, supplied by the server.
pub trait ScrapeSource: Send + Sync + 'static {
    fn certificates(&self) -> Vec<CertificateExpiry>;
    fn crls(&self) -> Vec<CrlExpiry> {
        Vec::new()
    }
    fn audit_counts(&self) -> AuditCounts;
    fn credential_stats(&self) -> Option<CacheStats>;
}

/// Audit writer counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditCounts {
    pub written: u64,
    pub dropped: u64,
    pub write_errors: u64,
    pub statements_written: u64,
    pub statements_dropped: u64,
}

/// Every metric the proxy updates as it runs.
pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Family<Labels, Counter>,
    pub connections_active: Family<Labels, Gauge>,
    pub connections_refused: Family<Labels, Counter>,
    pub handshakes_active: Gauge,
    pub sessions_active: Family<Labels, Gauge>,
    pub sessions_closed: Family<Labels, Counter>,
    pub logins: Family<Labels, Counter>,
    pub client_handshake_seconds: HistogramFamily,
    pub credential_fetch_seconds: HistogramFamily,
    pub upstream_connect_seconds: HistogramFamily,
    pub upstream_auth_seconds: HistogramFamily,
    pub upstream_resume_retries: Family<Labels, Counter>,
    pub bytes_from_clients: Counter<u64, AtomicU64>,
    pub bytes_to_clients: Counter<u64, AtomicU64>,
    pub cancels: Family<Labels, Counter>,
    pub proxy_protocol_rejected: Family<Labels, Counter>,
    pub proxy_protocol_local: Family<Labels, Counter>,
    pub password_failures: Family<Labels, Counter>,
    pub password_lockouts: Family<Labels, Counter>,
    pub reloads: Family<Labels, Counter>,
    pub last_reload_success: Gauge,
    pub upstream: UpstreamPoolMetrics,
}

/// Warm upstream connections and kept sessions, by target.
#[derive(Default)]
pub struct UpstreamPoolMetrics {
    warm_hits: Family<Labels, Counter>,
    warm_misses: Family<Labels, Counter>,
    warm_discards: Family<Labels, Counter>,
    warm_ready: Family<Labels, Gauge>,
    reuse_hits: Family<Labels, Counter>,
    reuse_misses: Family<Labels, Counter>,
    reuse_closes: Family<Labels, Counter>,
    reuse_kept: Family<Labels, Gauge>,
}

/// One target's session-reuse series.
#[derive(Clone, Debug)]
pub struct ReuseCounters {
    hits: Counter,
    misses: Counter,
    closes: Family<Labels, Counter>,
    kept: Gauge,
    target: String,
}

impl ReuseCounters {
    pub fn hit(&self) {
        self.hits.inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn closed(&self, reason: &str) {
        self.closes
            .get_or_create(&labels(&[("target", &self.target), ("reason", reason)]))
            .inc();
    }

    pub fn set_kept(&self, n: usize) {
        self.kept.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    pub fn closes(&self, reason: &str) -> u64 {
        self.closes
            .get_or_create(&labels(&[("target", &self.target), ("reason", reason)]))
            .get()
    }
}

/// One target's warm-connection series.
#[derive(Clone, Debug)]
pub struct WarmCounters {
    hits: Counter,
    misses: Counter,
    discards: Family<Labels, Counter>,
    ready: Gauge,
    target: String,
}

impl WarmCounters {
    pub fn hit(&self) {
        self.hits.inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn discarded(&self, reason: &str) {
        self.discards
            .get_or_create(&labels(&[("target", &self.target), ("reason", reason)]))
            .inc();
    }

    pub fn set_ready(&self, n: usize) {
        self.ready.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    pub fn discards(&self, reason: &str) -> u64 {
        self.discards
            .get_or_create(&labels(&[("target", &self.target), ("reason", reason)]))
            .get()
    }
}

impl UpstreamPoolMetrics {
    /// The series of target `target`.
    pub fn warm(&self, target: &str) -> WarmCounters {
        let by_target = labels(&[("target", target)]);
        WarmCounters {
            hits: self.warm_hits.get_or_create(&by_target).clone(),
            misses: self.warm_misses.get_or_create(&by_target).clone(),
            discards: self.warm_discards.clone(),
            ready: self.warm_ready.get_or_create(&by_target).clone(),
            target: target.to_string(),
        }
    }

    /// The session-reuse series of target `target`.
    pub fn reuse(&self, target: &str) -> ReuseCounters {
        let by_target = labels(&[("target", target)]);
        ReuseCounters {
            hits: self.reuse_hits.get_or_create(&by_target).clone(),
            misses: self.reuse_misses.get_or_create(&by_target).clone(),
            closes: self.reuse_closes.clone(),
            kept: self.reuse_kept.get_or_create(&by_target).clone(),
            target: target.to_string(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "session_reuse_hits",
            "Logins served by a kept upstream session (session_reuse), by target",
            self.reuse_hits.clone(),
        );
        registry.register(
            "session_reuse_misses",
            "Logins on a session_reuse target that found no kept session and logged in, by \
             target",
            self.reuse_misses.clone(),
        );
        registry.register(
            "session_reuse_closes",
            "Upstream sessions of a session_reuse target closed instead of kept or reused, by \
             target and reason (see docs/operations.md)",
            self.reuse_closes.clone(),
        );
        registry.register(
            "sessions_kept",
            "Logged-in upstream sessions kept for reuse now, by target",
            self.reuse_kept.clone(),
        );
        registry.register(
            "warm_connection_hits",
            "Upstream logins that ran on a warm connection (TCP and TLS done ahead), by target",
            self.warm_hits.clone(),
        );
        registry.register(
            "warm_connection_misses",
            "Upstream logins that found no warm connection ready and dialled, by target",
            self.warm_misses.clone(),
        );
        registry.register(
            "warm_connection_discards",
            "Warm connections closed without serving a login, by target and reason (age, \
             closed, failed_login, stopped)",
            self.warm_discards.clone(),
        );
        registry.register(
            "warm_connections_ready",
            "Warm connections ready now, by target",
            self.warm_ready.clone(),
        );
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(scrape: Arc<dyn ScrapeSource>) -> Metrics {
        Self::with_aws_calls(scrape, AwsCallMetrics::default())
    }

    /// All metrics, with `aws_calls` (shared with the credential chain) among them.
    pub fn with_aws_calls(scrape: Arc<dyn ScrapeSource>, aws_calls: AwsCallMetrics) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            registry: Registry::default(),
            connections_accepted: Family::default(),
            connections_active: Family::default(),
            connections_refused: Family::default(),
            handshakes_active: Gauge::default(),
            sessions_active: Family::default(),
            sessions_closed: Family::default(),
            logins: Family::default(),
            client_handshake_seconds: Family::new_with_constructor(latency_histogram),
            credential_fetch_seconds: Family::new_with_constructor(latency_histogram),
            upstream_connect_seconds: Family::new_with_constructor(latency_histogram),
            upstream_auth_seconds: Family::new_with_constructor(latency_histogram),
            upstream_resume_retries: Family::default(),
            bytes_from_clients: Counter::default(),
            bytes_to_clients: Counter::default(),
            cancels: Family::default(),
            proxy_protocol_rejected: Family::default(),
            proxy_protocol_local: Family::default(),
            password_failures: Family::default(),
            password_lockouts: Family::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            upstream: UpstreamPoolMetrics::default(),
        };
        m.register_connections(&mut registry);
        m.register_sessions(&mut registry);
        m.upstream.register(&mut registry);
        registry.register(
            "aws_calls",
            "Requests sent to AWS (every attempt, retries included), by API and outcome \
             (success, throttled, client_error, server_error, timeout, transport)",
            aws_calls.calls.clone(),
        );
        registry.register(
            "aws_call_duration_seconds",
            "Latency of each request sent to AWS, by API",
            aws_calls.duration.clone(),
        );
        registry.register_collector(Box::new(ScrapeTimeCollector { source: scrape }));
        Metrics { registry, ..m }
    }

    /// Connections before login: accepts, refusals, handshakes, password throttling,
    /// cancels, reloads.
    fn register_connections(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "connections_accepted",
            "TCP connections accepted, by listener",
            m.connections_accepted.clone(),
        );
        registry.register(
            "connections_active",
            "Client connections currently open (any phase), by listener",
            m.connections_active.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused, by listener and reason (see the audit refusal reasons)",
            m.connections_refused.clone(),
        );
        registry.register(
            "handshakes_active",
            "Connections in the pre-authentication phase (TLS handshake to startup message)",
            m.handshakes_active.clone(),
        );
        registry.register(
            "cancel_requests",
            "Cancel requests, by outcome (forwarded, unknown_key, rate_limited, upstream_failed; \
             with [peering]: forwarded_to_peer, unknown_peer, peer_failed, ttl_exhausted)",
            m.cancels.clone(),
        );
        registry.register(
            "proxy_protocol_rejected",
            "Connections of proxy_protocol listeners closed before the PostgreSQL protocol, \
             by listener and reason (untrusted_source, missing, malformed, oversized, \
             timeout, closed, io)",
            m.proxy_protocol_rejected.clone(),
        );
        registry.register(
            "proxy_protocol_local",
            "PROXY headers without a client address (v2 LOCAL, v1 UNKNOWN: a balancer's \
             own health check), by listener",
            m.proxy_protocol_local.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by outcome (success, failure)",
            m.reloads.clone(),
        );
        registry.register(
            "last_reload_success_timestamp_seconds",
            "When the running state was last loaded successfully (start or reload)",
            m.last_reload_success.clone(),
        );
        registry.register(
            "password_failures",
            "Failed password logins, by listener (each is answered after a growing delay)",
            m.password_failures.clone(),
        );
        registry.register(
            "password_lockouts",
            "Users or addresses locked after repeated password failures, by listener",
            m.password_lockouts.clone(),
        );
    }

    /// Logins, sessions and what they relay.
    fn register_sessions(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "sessions_active",
            "Established (logged-in) sessions, by listener and target",
            m.sessions_active.clone(),
        );
        registry.register(
            "sessions_closed",
            "Established sessions that ended, by close reason",
            m.sessions_closed.clone(),
        );
        registry.register(
            "logins",
            "Login attempts that passed client authentication, by target and outcome",
            m.logins.clone(),
        );
        registry.register(
            "client_handshake_seconds",
            "TCP accept to a verified startup message (client TLS handshake, certificate \
             verification, startup packet), by listener",
            m.client_handshake_seconds.clone(),
        );
        registry.register(
            "credential_fetch_seconds",
            "Time to obtain a database credential (cache hit or AWS call), by target",
            m.credential_fetch_seconds.clone(),
        );
        registry.register(
            "upstream_connect_seconds",
            "Upstream TCP connect and verify-full TLS handshake, by target",
            m.upstream_connect_seconds.clone(),
        );
        registry.register(
            "upstream_auth_seconds",
            "Upstream authentication up to ReadyForQuery, by target",
            m.upstream_auth_seconds.clone(),
        );
        registry.register(
            "upstream_resume_retries",
            "Upstream logins retried because the target looked like it was resuming \
             (refused, dropped or stalled connections), by target",
            m.upstream_resume_retries.clone(),
        );
        registry.register(
            "client_bytes_received",
            "Bytes relayed from clients to the upstream",
            m.bytes_from_clients.clone(),
        );
        registry.register(
            "client_bytes_sent",
            "Bytes relayed from the upstream to clients",
            m.bytes_to_clients.clone(),
        );
    }

    /// The whole registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail for well-formed metrics.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn refused(&self, listener: &str, reason: &str) {
        self.connections_refused
            .get_or_create(&labels(&[("listener", listener), ("reason", reason)]))
            .inc();
    }

    pub fn login(&self, target: &str, outcome: &str) {
        self.logins
            .get_or_create(&labels(&[("target", target), ("outcome", outcome)]))
            .inc();
    }

    pub fn observe(family: &HistogramFamily, key: &'static str, value: &str, elapsed: Duration) {
        family
            .get_or_create(&labels(&[(key, value)]))
            .observe(elapsed.as_secs_f64());
    }
}

/// Builds a label set.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Metrics computed from other components' state on each scrape.
struct ScrapeTimeCollector {
    source: Arc<dyn ScrapeSource>,
}

impl std::fmt::Debug for ScrapeTimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeTimeCollector")
            .finish_non_exhaustive()
    }
}

fn encode_crls(
    encoder: &mut DescriptorEncoder,
    crls: Vec<CrlExpiry>,
) -> Result<(), std::fmt::Error> {
    if crls.is_empty() {
        return Ok(());
    }
    let g = ConstGauge::new(0i64);
    let mut e = encoder.encode_descriptor(
        "crl_next_update_timestamp_seconds",
        "nextUpdate of each listener's client CRLs; past it the CRL's clients are refused",
        None,
        g.metric_type(),
    )?;
    for c in crls {
        let set = labels(&[("listener", &c.listener), ("issuer", &c.issuer)]);
        ConstGauge::new(c.next_update_unix).encode(e.encode_family(&set)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(e)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

impl Collector for ScrapeTimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let audit = self.source.audit_counts();
        counter(
            &mut encoder,
            "audit_records_written",
            "Audit records written",
            audit.written,
        )?;
        counter(
            &mut encoder,
            "audit_records_dropped",
            "Audit records dropped because the writer could not keep up",
            audit.dropped,
        )?;
        counter(
            &mut encoder,
            "audit_write_errors",
            "Audit records the writer failed to write",
            audit.write_errors,
        )?;
        counter(
            &mut encoder,
            "audit_statements_written",
            "Statement audit records written",
            audit.statements_written,
        )?;
        counter(
            &mut encoder,
            "audit_statements_dropped",
            "Statement audit records dropped because their queue was full",
            audit.statements_dropped,
        )?;

        if let Some(s) = self.source.credential_stats() {
            counter(
                &mut encoder,
                "db_credential_cache_hits",
                "Database credential requests served from the cache",
                s.hits,
            )?;
            counter(
                &mut encoder,
                "db_credential_cache_misses",
                "Database credential requests that waited for an AWS call",
                s.misses,
            )?;
            counter(
                &mut encoder,
                "db_credential_cache_refreshes",
                "Background refreshes of cached database credentials ahead of expiry",
                s.refreshes,
            )?;
            counter(
                &mut encoder,
                "db_credential_fetches",
                "AWS calls for database credentials (foreground and background)",
                s.fetches,
            )?;
            counter(
                &mut encoder,
                "db_credential_fetch_errors",
                "AWS calls for database credentials that failed",
                s.fetch_errors,
            )?;
            counter(
                &mut encoder,
                "db_credential_backed_off",
                "Database credential requests answered with a recent failure instead of an AWS \
                 call (backoff)",
                s.backed_off,
            )?;
            gauge(
                &mut encoder,
                "db_credential_cache_entries",
                "Database credentials currently cached",
                s.entries as i64,
            )?;
            if let Some(expiry) = s.earliest_expiry {
                let left = match expiry.duration_since(SystemTime::now()) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                gauge(
                    &mut encoder,
                    "db_credential_earliest_expiry_seconds",
                    "Seconds until the earliest cached database credential expires",
                    left,
                )?;
            }
        }

        encode_crls(&mut encoder, self.source.crls())?;
        let certs = self.source.certificates();
        if !certs.is_empty() {
            let g = ConstGauge::new(0i64);
            let mut e = encoder.encode_descriptor(
                "certificate_expiry_timestamp_seconds",
                "notAfter of the certificates the proxy uses (server, client_ca, roles_anywhere)",
                None,
                g.metric_type(),
            )?;
            for c in certs {
                let set = labels(&[
                    ("kind", c.kind),
                    ("listener", &c.listener),
                    ("subject", &c.subject),
                ]);
                ConstGauge::new(c.not_after_unix).encode(e.encode_family(&set)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl ScrapeSource for Fixed {
        fn certificates(&self) -> Vec<CertificateExpiry> {
            vec![CertificateExpiry {
                kind: "server",
                listener: "main".into(),
                subject: "CN=proxy".into(),
                not_after_unix: 2_000_000_000,
            }]
        }
        fn audit_counts(&self) -> AuditCounts {
            AuditCounts {
                written: 3,
                dropped: 1,
                write_errors: 0,
                statements_written: 0,
                statements_dropped: 2,
            }
        }
        fn credential_stats(&self) -> Option<CacheStats> {
            Some(CacheStats {
                hits: 5,
                misses: 2,
                earliest_expiry: Some(SystemTime::now() + Duration::from_secs(600)),
                ..Default::default()
            })
        }
    }

    #[test]
    fn text_exposition_has_the_documented_names() {
        let aws = AwsCallMetrics::default();
        let m = Metrics::with_aws_calls(Arc::new(Fixed), aws.clone());
        aws.aws_call(
            AwsApi::GetClusterCredentialsWithIam,
            AwsCallOutcome::Throttled,
            Duration::from_millis(40),
        );
        m.refused("main", "policy");
        m.login("pg", "success");
        Metrics::observe(
            &m.credential_fetch_seconds,
            "target",
            "pg",
            Duration::from_millis(3),
        );
        let text = m.encode();
        for needle in [
            "redshift_iam_proxy_connections_refused_total{listener=\"main\",reason=\"policy\"} 1",
            "redshift_iam_proxy_logins_total{target=\"pg\",outcome=\"success\"} 1",
            "redshift_iam_proxy_credential_fetch_seconds_count{target=\"pg\"} 1",
            "redshift_iam_proxy_audit_records_dropped_total 1",
            "redshift_iam_proxy_audit_statements_dropped_total 2",
            "redshift_iam_proxy_db_credential_cache_hits_total 5",
            "redshift_iam_proxy_certificate_expiry_timestamp_seconds{kind=\"server\",listener=\"main\",subject=\"CN=proxy\"} 2000000000",
            "# TYPE redshift_iam_proxy_db_credential_earliest_expiry_seconds gauge",
            "redshift_iam_proxy_aws_calls_total{api=\"GetClusterCredentialsWithIAM\",outcome=\"throttled\"} 1",
            "redshift_iam_proxy_aws_call_duration_seconds_count{api=\"GetClusterCredentialsWithIAM\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
