//! Connection limits: open connections in total, per listener and per client identity.
//! Every connection holds a guard from the moment it is counted; dropping the guard (the
//! connection ending in any way, or its task being cancelled) releases the count.

use crate::metrics::{labels, Labels};
use crate::refusal::LimitExceeded;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use proxy_config::LimitsConfig;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections, in total, per listener and per client identity.
pub struct Admission {
    total: AtomicUsize,
    per_listener: HashMap<String, AtomicUsize>,
    per_identity: Mutex<HashMap<String, usize>>,
    /// Connections per source address that have not authenticated yet.
    pending: Mutex<HashMap<IpAddr, usize>>,
    /// `connections_active{listener}`.
    active: Family<Labels, Gauge>,
}

impl Admission {
    /// Counts for the listeners named (the set never changes while running).
    pub fn new<'a>(
        listeners: impl IntoIterator<Item = &'a str>,
        active: Family<Labels, Gauge>,
    ) -> Self {
        Admission {
            total: AtomicUsize::new(0),
            per_listener: listeners
                .into_iter()
                .map(|name| (name.to_string(), AtomicUsize::new(0)))
                .collect(),
            per_identity: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            active,
        }
    }

    /// Open client connections (any phase).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Counts a new connection on `listener`, whose own limit is `listener_max`; says which
    /// limit it exceeds, if any. The connection counts against the limits until the guard
    /// is dropped either way.
    pub fn admit(
        self: &Arc<Self>,
        listener: &str,
        listener_max: Option<usize>,
        limits: &LimitsConfig,
    ) -> (ConnectionGuard, Option<LimitExceeded>) {
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        let on_listener = self
            .per_listener
            .get(listener)
            .map(|c| c.fetch_add(1, Ordering::SeqCst) + 1)
            .unwrap_or(0);
        self.active
            .get_or_create(&labels(&[("listener", listener)]))
            .inc();
        let guard = ConnectionGuard {
            admission: self.clone(),
            listener: listener.to_string(),
        };
        let exceeded = if limits.max_connections.is_some_and(|max| total > max) {
            Some(LimitExceeded::Total)
        } else if listener_max.is_some_and(|max| on_listener > max) {
            Some(LimitExceeded::Listener)
        } else {
            None
        };
        (guard, exceeded)
    }

    /// Counts a session of `identity`; `None` when that identity is at its limit.
    pub fn admit_identity(
        self: &Arc<Self>,
        identity: &str,
        limits: &LimitsConfig,
    ) -> Option<IdentityGuard> {
        let mut map = self.lock_identities();
        let n = map.entry(identity.to_string()).or_insert(0);
        if limits
            .max_connections_per_identity
            .is_some_and(|max| *n >= max)
        {
            return None;
        }
        *n += 1;
        Some(IdentityGuard {
            admission: self.clone(),
            identity: identity.to_string(),
        })
    }

    /// Counts a connection of `source` that has not authenticated yet; whether the source
    /// is over `max_pending_per_source`. Counted either way until the guard drops (when
    /// negotiation ends), so a flood of silent sockets from one address cannot starve
    /// other clients of handshakes.
    pub fn admit_pending(
        self: &Arc<Self>,
        source: IpAddr,
        limits: &LimitsConfig,
    ) -> (PendingGuard, bool) {
        let mut map = lock(&self.pending);
        let n = map.entry(source).or_insert(0);
        *n += 1;
        let over = *n > limits.max_pending_per_source;
        (
            PendingGuard {
                admission: self.clone(),
                source,
            },
            over,
        )
    }

    fn lock_identities(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Critical sections leave the map consistent at every step.
        self.per_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open connection; released on drop.
pub struct ConnectionGuard {
    admission: Arc<Admission>,
    listener: String,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let a = &self.admission;
        a.total.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = a.per_listener.get(&self.listener) {
            n.fetch_sub(1, Ordering::SeqCst);
        }
        a.active
            .get_or_create(&labels(&[("listener", &self.listener)]))
            .dec();
    }
}

/// One connection of a source address that has not authenticated yet; released on drop.
pub struct PendingGuard {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut map = lock(&self.admission.pending);
        if let Some(n) = map.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.source);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections leave the maps consistent at every step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One session of a client identity; released on drop.
pub struct IdentityGuard {
    admission: Arc<Admission>,
    identity: String,
}

impl Drop for IdentityGuard {
    fn drop(&mut self) {
        let mut map = self.admission.lock_identities();
        if let Some(n) = map.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: Option<usize>, per_identity: Option<usize>) -> LimitsConfig {
        LimitsConfig {
            max_connections: total,
            max_connections_per_identity: per_identity,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn connections_count_until_their_guard_drops() {
        let admission = Arc::new(Admission::new(["a", "b"], Family::default()));
        let limits = limits(Some(2), None);
        let (first, exceeded) = admission.admit("a", Some(1), &limits);
        assert_eq!(exceeded, None);
        let (_second, exceeded) = admission.admit("a", Some(1), &limits);
        assert_eq!(exceeded, Some(LimitExceeded::Listener));
        let (_third, exceeded) = admission.admit("b", None, &limits);
        assert_eq!(exceeded, Some(LimitExceeded::Total));
        assert_eq!(admission.open(), 3);
        drop(first);
        assert_eq!(admission.open(), 2);
    }

    #[test]
    fn pending_connections_are_capped_per_source_address() {
        let admission = Arc::new(Admission::new(["a"], Family::default()));
        let limits = LimitsConfig {
            max_pending_per_source: 2,
            ..LimitsConfig::default()
        };
        let attacker: IpAddr = [192, 0, 2, 1].into();
        let (a, over_a) = admission.admit_pending(attacker, &limits);
        let (_b, over_b) = admission.admit_pending(attacker, &limits);
        let (_c, over_c) = admission.admit_pending(attacker, &limits);
        assert_eq!((over_a, over_b, over_c), (false, false, true));
        let (_d, over_d) = admission.admit_pending([192, 0, 2, 2].into(), &limits);
        assert!(!over_d, "another address is not affected");
        drop(a);
        drop(_c);
        let (_e, over_e) = admission.admit_pending(attacker, &limits);
        assert!(!over_e);
    }

    #[test]
    fn an_identity_at_its_limit_is_refused_until_a_session_ends() {
        let admission = Arc::new(Admission::new(["a"], Family::default()));
        let limits = limits(None, Some(1));
        let first = admission.admit_identity("cert\nCA\nalice", &limits);
        assert!(first.is_some());
        assert!(admission
            .admit_identity("cert\nCA\nalice", &limits)
            .is_none());
        assert!(admission.admit_identity("cert\nCA\nbob", &limits).is_some());
        drop(first);
        assert!(admission
            .admit_identity("cert\nCA\nalice", &limits)
            .is_some());
    }
}
