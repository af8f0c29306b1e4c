//! When a cached value is refreshed, and when it stops being served.

use rand::Rng as _;
use std::time::{Duration, SystemTime};

/// Where a value's deadlines lie relative to its expiry, before they are capped by its
/// lifetime `L` (see [`Deadlines::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Margins {
    /// The value is not served within this margin of its expiry (at most `L/2`).
    pub hard: Duration,
    /// Refreshing starts this long before expiry (at most `3L/4`, at least the hard margin).
    pub soft: Duration,
    /// Up to this much, drawn per value, is added to the soft margin, so that many keys (or
    /// many proxies) fetched together do not all refresh at the same moment.
    pub jitter: Duration,
}

impl Margins {
    /// The database credential cache's margins: `refresh_before` is the hard margin and
    /// refreshing starts at twice that, so once warm, callers never wait.
    pub fn doubled(refresh_before: Duration) -> Self {
        Margins {
            hard: refresh_before,
            soft: refresh_before.saturating_mul(2),
            jitter: Duration::ZERO,
        }
    }
}

/// When a cached value stops being served, and when it starts being refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub soft: SystemTime,
    pub hard: SystemTime,
}

impl Deadlines {
    /// The deadlines of [`Margins::doubled`]`(refresh_before)` (the cache's tests pin them).
    #[cfg(test)]
    pub fn new(fetched_at: SystemTime, expiration: SystemTime, refresh_before: Duration) -> Self {
        Self::place(fetched_at, expiration, &Margins::doubled(refresh_before))
    }

    /// For a value fetched at `f` that expires at `e` (lifetime `L = e - f`): hard deadline
    /// `e - min(hard, L/2)`, so short-lived values still get used for half their life; soft
    /// deadline `e - min(soft + jitter, 3L/4)`, never after the hard one.
    pub fn place(fetched_at: SystemTime, expiration: SystemTime, margins: &Margins) -> Self {
        // A value that already looks expired (clock skew) has no lifetime left.
        let lifetime = expiration
            .duration_since(fetched_at)
            .unwrap_or(Duration::ZERO);
        let hard = margins.hard.min(lifetime / 2);
        let soft = (margins.soft + draw(margins.jitter))
            .min(lifetime * 3 / 4)
            .max(hard);
        let before = |d: Duration| expiration.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        Deadlines {
            soft: before(soft),
            hard: before(hard),
        }
    }
}

/// A duration drawn uniformly from `[0, max]`, to the millisecond.
fn draw(max: Duration) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=max_ms))
}

/// A delay drawn uniformly from `[delay / 2, delay]` ("equal jitter"): retries from many
/// callers spread out, while the backoff still grows.
pub(crate) fn equal_jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + draw(delay - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn jitter_moves_only_the_soft_deadline_and_stays_in_range() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let margins = Margins {
            hard: Duration::from_secs(60),
            soft: Duration::from_secs(300),
            jitter: Duration::from_secs(60),
        };
        for _ in 0..50 {
            let d = Deadlines::place(t0, t0 + HOUR, &margins);
            assert_eq!(d.hard, t0 + HOUR - Duration::from_secs(60));
            assert!(d.soft <= t0 + HOUR - Duration::from_secs(300));
            assert!(d.soft >= t0 + HOUR - Duration::from_secs(360));
        }
    }

    #[test]
    fn equal_jitter_stays_between_half_and_all_of_the_delay() {
        for _ in 0..50 {
            let d = equal_jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
        assert_eq!(equal_jitter(Duration::ZERO), Duration::ZERO);
    }
}
