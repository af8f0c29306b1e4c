//! Wall-clock time, injectable for tests.
//!
//! Credential expiry is judged on the wall clock ([`SystemTime`]) at the moment of use, never on
//! a monotonic [`std::time::Instant`]: a monotonic clock stops while a laptop sleeps, so a
//! deadline computed on it would keep expired credentials in use after the machine wakes up.

use std::fmt;
#[cfg(any(test, feature = "test-util"))]
use std::sync::{Arc, Mutex};
#[cfg(any(test, feature = "test-util"))]
use std::time::Duration;
use std::time::SystemTime;

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests, including other crates' tests: feature
/// `test-util`).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    pub fn new(now: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(now)),
        }
    }

    pub fn set(&self, now: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Moves the clock forward, like a machine waking up from sleep.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
