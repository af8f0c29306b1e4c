//! Warm upstream connections and kept sessions (session reuse), by target: the counters
//! the pools update and how they are registered.

use super::{labels, Labels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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

    pub(super) fn register(&self, registry: &mut Registry) {
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
