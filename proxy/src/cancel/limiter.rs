//! Token buckets for cancel requests: one per client address and one global, so one noisy
//! host cannot starve others and a distributed flood cannot hammer the upstream (or the
//! peers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Cancels allowed per second, per client address and (×20) in total.
pub(super) const RATE_PER_SECOND: f64 = 20.0;
pub(super) const BURST: f64 = 40.0;
/// Addresses tracked at most; beyond this, idle buckets are dropped.
const MAX_TRACKED: usize = 10_000;

pub(super) struct RateLimiter {
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
    pub(super) fn new(rate: f64, burst: f64) -> Self {
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
    pub(super) fn allow_peer(&mut self, peer: IpAddr, now: Instant) -> bool {
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

    /// Charges the global bucket (once the request is known to name a session, or a peer).
    pub(super) fn allow_global(&mut self, now: Instant) -> bool {
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
}
