//! Retries within one fetch: for fetchers whose client does not retry on its own (the AWS
//! SDK clients do; the Roles Anywhere `CreateSession` client does not).

use super::deadlines::equal_jitter;
use std::time::Duration;

/// Retries of retryable failures within one fetch, with jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, first one included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after `failed` attempts before the next one, or `None` once every
    /// attempt is spent: `initial_backoff` doubling per failure up to `max_backoff`, each
    /// wait drawn from its upper half so that many callers spread out.
    pub fn wait_after(&self, failed: u32) -> Option<Duration> {
        if failed == 0 || failed >= self.max_attempts {
            return None;
        }
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << (failed - 1).min(16));
        Some(equal_jitter(doubled.min(self.max_backoff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_and_stop_after_the_last_attempt() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let upper = [100, 200, 300, 300];
        for (failed, upper) in (1..).zip(upper) {
            let wait = policy.wait_after(failed).unwrap();
            let upper = Duration::from_millis(upper);
            assert!(wait <= upper && wait >= upper / 2, "{failed}: {wait:?}");
        }
        assert_eq!(policy.wait_after(5), None);
    }
}
