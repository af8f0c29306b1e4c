//! Brute-force throttling of password listeners: failed attempts are counted per local user
//! (per listener) and per source address. Each failure delays the next failure's answer
//! (growing delay); too many within the lockout window lock the user or the address for
//! that window. A locked login runs the whole exchange and is refused exactly like a wrong
//! password, so the lock tells an attacker nothing.

use proxy_config::SecurityConfig;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Records kept at most per kind; beyond it, records that lock nothing are dropped.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Wait this long before answering the client.
    pub delay: Duration,
    /// This failure locked the user or the address.
    pub locked_now: bool,
}

/// See the module documentation.
#[derive(Default)]
pub struct PasswordThrottle {
    users: Mutex<HashMap<(String, String), Record>>,
    sources: Mutex<HashMap<IpAddr, Record>>,
}

impl PasswordThrottle {
    /// Whether `user` of `listener`, or `source`, is locked now.
    pub fn locked(&self, listener: &str, user: &str, source: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let locked = |r: Option<&Record>| r.and_then(|r| r.locked_until).is_some_and(|t| now < t);
        locked(lock(&self.users).get(&(listener.to_owned(), user.to_owned())))
            || source.is_some_and(|ip| locked(lock(&self.sources).get(&ip)))
    }

    /// Counts a failed attempt.
    pub fn failed(
        &self,
        listener: &str,
        user: &str,
        source: Option<IpAddr>,
        settings: &SecurityConfig,
    ) -> Verdict {
        let now = Instant::now();
        let by_user = count(
            &mut lock(&self.users),
            (listener.to_owned(), user.to_owned()),
            now,
            settings,
        );
        let by_source = source.map(|ip| count(&mut lock(&self.sources), ip, now, settings));
        let worse = match by_source {
            Some(s) if s.failures > by_user.failures => s,
            _ => by_user,
        };
        let doublings = worse.failures.saturating_sub(1).min(20);
        Verdict {
            delay: settings
                .password_failure_delay
                .saturating_mul(1 << doublings)
                .min(settings.password_failure_delay_max),
            locked_now: worse.locked_until == Some(now + settings.password_lockout)
                && worse.failures == settings.password_lockout_after,
        }
    }

    /// A successful login clears the user's and the address's failures.
    pub fn succeeded(&self, listener: &str, user: &str, source: Option<IpAddr>) {
        lock(&self.users).remove(&(listener.to_owned(), user.to_owned()));
        if let Some(ip) = source {
            lock(&self.sources).remove(&ip);
        }
    }
}

/// Adds a failure to `key`'s record (failures older than the lockout window are forgotten
/// first) and returns the record.
fn count<K: Eq + Hash>(
    map: &mut HashMap<K, Record>,
    key: K,
    now: Instant,
    settings: &SecurityConfig,
) -> Record {
    let window = settings.password_lockout;
    if map.len() >= MAX_TRACKED {
        map.retain(|_, r| {
            r.locked_until.is_some_and(|t| now < t) || now.duration_since(r.last) < window
        });
    }
    let record = map.entry(key).or_insert(Record {
        failures: 0,
        last: now,
        locked_until: None,
    });
    if now.duration_since(record.last) >= window && record.locked_until.is_none_or(|t| t <= now) {
        record.failures = 0;
        record.locked_until = None;
    }
    record.failures = record.failures.saturating_add(1);
    record.last = now;
    let limit = settings.password_lockout_after;
    if limit > 0 && record.failures >= limit && record.locked_until.is_none_or(|t| t <= now) {
        record.locked_until = Some(now + window);
    }
    *record
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections leave the maps consistent at every step.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SecurityConfig {
        SecurityConfig {
            password_failure_delay: Duration::from_millis(100),
            password_failure_delay_max: Duration::from_millis(800),
            password_lockout_after: 5,
            password_lockout: Duration::from_secs(60),
            ..SecurityConfig::default()
        }
    }

    #[test]
    fn delays_grow_then_the_user_locks_and_success_clears_it() {
        let t = PasswordThrottle::default();
        let ip: IpAddr = [192, 0, 2, 7].into();
        let delays: Vec<_> = (0..5)
            .map(|_| t.failed("legacy", "etl", Some(ip), &settings()))
            .collect();
        assert_eq!(
            delays
                .iter()
                .map(|v| v.delay.as_millis())
                .collect::<Vec<_>>(),
            [100, 200, 400, 800, 800]
        );
        assert_eq!(
            delays.iter().map(|v| v.locked_now).collect::<Vec<_>>(),
            [false, false, false, false, true]
        );
        assert!(t.locked("legacy", "etl", None));
        assert!(
            t.locked("legacy", "someone-else", Some(ip)),
            "the address too"
        );
        assert!(!t.locked("other-listener", "etl", None));
        t.succeeded("legacy", "etl", Some(ip));
        assert!(!t.locked("legacy", "etl", Some(ip)));
    }

    #[test]
    fn no_lock_when_lockout_is_off() {
        let t = PasswordThrottle::default();
        let off = SecurityConfig {
            password_lockout_after: 0,
            ..settings()
        };
        for _ in 0..50 {
            t.failed("legacy", "etl", None, &off);
        }
        assert!(!t.locked("legacy", "etl", None));
    }
}
