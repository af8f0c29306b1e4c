//! Cancel routing: the proxy hands each client its own random BackendKeyData and maps it
//! to the upstream session's real key, so a CancelRequest (which arrives on a new,
//! unauthenticated connection) reaches exactly the right upstream backend.

use crate::backend::{BackendKey, UpstreamEndpoint};
use rand::Rng;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// The key a client received from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyKey {
    pub pid: i32,
    pub secret: [u8; 4],
}

struct Entry {
    secret: [u8; 4],
    endpoint: Arc<UpstreamEndpoint>,
    upstream: BackendKey,
}

/// Live sessions by proxy pid, plus the rate limiter for cancel requests.
pub struct CancelRegistry {
    sessions: Mutex<HashMap<i32, Entry>>,
    limiter: Mutex<RateLimiter>,
    /// Cancels being forwarded upstream at once (clients' and the proxy's own).
    in_flight: Semaphore,
}

/// Most cancels forwarded upstream at once; beyond it a cancel is dropped (rate-limited).
const MAX_IN_FLIGHT: usize = 64;

/// Removes the session's entry when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock_sessions().remove(&self.pid);
    }
}

/// What became of a cancel request. Never reported to the requester (PostgreSQL sends no
/// reply to a CancelRequest), only logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Forwarded,
    UnknownKey,
    RateLimited,
    UpstreamFailed,
}

impl CancelOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::UnknownKey => "unknown_key",
            CancelOutcome::RateLimited => "rate_limited",
            CancelOutcome::UpstreamFailed => "upstream_failed",
        }
    }
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelRegistry {
    pub fn new() -> Self {
        CancelRegistry {
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(RateLimiter::new(RATE_PER_SECOND, BURST)),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is intact.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh random proxy key for a session whose upstream key is `upstream`.
    pub fn register(
        self: &Arc<Self>,
        endpoint: Arc<UpstreamEndpoint>,
        upstream: Option<BackendKey>,
    ) -> (ProxyKey, Option<Registration>) {
        let mut rng = rand::rng();
        let mut sessions = self.lock_sessions();
        loop {
            let key = ProxyKey {
                pid: rng.random_range(1..i32::MAX),
                secret: rng.random(),
            };
            let Some(upstream) = &upstream else {
                // Nothing to cancel upstream; the client still gets a well-formed key.
                return (key, None);
            };
            if sessions.contains_key(&key.pid) {
                continue;
            }
            sessions.insert(
                key.pid,
                Entry {
                    secret: key.secret,
                    endpoint: endpoint.clone(),
                    upstream: upstream.clone(),
                },
            );
            let registration = Registration {
                registry: self.clone(),
                pid: key.pid,
            };
            return (key, Some(registration));
        }
    }

    /// Number of sessions that can currently be cancelled.
    pub fn len(&self) -> usize {
        self.lock_sessions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles a CancelRequest from `peer`: rate-limit the address, match the key in
    /// constant time, then charge the global budget and forward it upstream over
    /// verify-full TLS. Requests with unknown keys cost only their own address's budget, so
    /// a flood of guessed keys cannot use up the cancels of everyone else.
    pub async fn cancel(&self, peer: IpAddr, pid: i32, secret: &[u8]) -> CancelOutcome {
        if !self.limiter().allow_peer(peer, Instant::now()) {
            return CancelOutcome::RateLimited;
        }
        let target = {
            let sessions = self.lock_sessions();
            sessions.get(&pid).and_then(|e| {
                let matches = secret.len() == e.secret.len() && bool::from(secret.ct_eq(&e.secret));
                matches.then(|| (e.endpoint.clone(), e.upstream.clone()))
            })
        };
        let Some((endpoint, upstream)) = target else {
            return CancelOutcome::UnknownKey;
        };
        self.forward(&endpoint, &upstream).await
    }

    /// Cancels a query on behalf of the proxy itself (a session it ended, or whose client
    /// vanished, while a query ran), within the same global budget and in-flight bound as
    /// clients' cancels.
    pub async fn cancel_for_proxy(
        &self,
        endpoint: &UpstreamEndpoint,
        upstream: &BackendKey,
    ) -> CancelOutcome {
        self.forward(endpoint, upstream).await
    }

    async fn forward(&self, endpoint: &UpstreamEndpoint, upstream: &BackendKey) -> CancelOutcome {
        if !self.limiter().allow_global(Instant::now()) {
            return CancelOutcome::RateLimited;
        }
        let Ok(_slot) = self.in_flight.try_acquire() else {
            return CancelOutcome::RateLimited;
        };
        match crate::backend::send_cancel(endpoint, upstream).await {
            Ok(()) => CancelOutcome::Forwarded,
            Err(e) => {
                tracing::warn!(upstream = %endpoint.host, error = %e, "cancel request could not be forwarded");
                CancelOutcome::UpstreamFailed
            }
        }
    }
}

/// Cancels allowed per second, per client address and (×20) in total.
const RATE_PER_SECOND: f64 = 20.0;
const BURST: f64 = 40.0;
/// Addresses tracked at most; beyond this, idle buckets are dropped.
const MAX_TRACKED: usize = 10_000;

/// Token buckets: one per client address and one global, so one noisy host cannot
/// starve others and a distributed flood cannot hammer the upstream.
struct RateLimiter {
    rate: f64,
    burst: f64,
    global: Bucket,
    per_peer: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl RateLimiter {
    fn new(rate: f64, burst: f64) -> Self {
        let now = Instant::now();
        RateLimiter {
            rate,
            burst,
            global: Bucket {
                tokens: burst * 20.0,
                at: now,
            },
            per_peer: HashMap::new(),
        }
    }

    /// Charges `peer`'s bucket.
    fn allow_peer(&mut self, peer: IpAddr, now: Instant) -> bool {
        if self.per_peer.len() >= MAX_TRACKED {
            let (rate, burst) = (self.rate, self.burst);
            self.per_peer.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.per_peer.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.take(rate, burst, now)
    }

    /// Charges the global bucket (once the request is known to name a session).
    fn allow_global(&mut self, now: Instant) -> bool {
        self.global.take(self.rate * 20.0, self.burst * 20.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limit_is_per_peer_and_refills() {
        let mut l = RateLimiter::new(10.0, 5.0);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.allow_peer(a, t0)).count(), 5);
        assert!(l.allow_peer(b, t0), "another peer is not starved");
        assert!(
            l.allow_peer(a, t0 + Duration::from_millis(150)),
            "tokens refill over time"
        );
    }

    #[tokio::test]
    async fn guessed_keys_cost_only_their_own_address() {
        let registry = CancelRegistry::new();
        // Far more guesses than the global budget holds, from many addresses.
        for i in 0..2000u32 {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let outcome = registry.cancel(peer, 7, &[1, 2, 3, 4]).await;
            assert_eq!(outcome, CancelOutcome::UnknownKey);
        }
        assert!(
            registry.limiter().allow_global(Instant::now()),
            "the global budget is untouched"
        );
    }
}
