//! Prometheus metrics (`prometheus-client`), served as text at the admin listener's
//! `/metrics`.
//!
//! Counters and histograms are updated on the session path (an atomic add each); values
//! that live elsewhere (the credential cache, certificate expiry, the audit queue) are read
//! at scrape time by `ScrapeTimeCollector` (`scrape.rs`), so they are always current and cost nothing
//! between scrapes. Every name starts with `redshift_iam_proxy_`; the list is in
//! `docs/operations.md`.

mod scrape;
mod upstream_pools;

pub use upstream_pools::{ReuseCounters, UpstreamPoolMetrics, WarmCounters};

use scrape::ScrapeTimeCollector;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proxy_auth::aws::{AwsApi, AwsCallObserver, AwsCallOutcome};
use proxy_auth::redshift::{CacheStats, RedshiftCredentials};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

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
