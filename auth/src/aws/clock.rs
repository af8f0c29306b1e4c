//! Wall-clock time, injectable for tests.
//!
//! Credential expiry is judged on the wall clock ([`SystemTime`]) at the moment of use, never on
//! a monotonic [`std::time::Instant`]: a monotonic clock stops while a laptop sleeps, so a
//! deadline computed on it would keep expired credentials in use after the machine wakes up.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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

/// A clock that only moves when told to (tests, including other crates' tests).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

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

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}
