//! `[db_credentials]`: caching of temporary database credentials, and how often one client
//! identity may make the proxy ask AWS for them.

use crate::problems::Problems;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCredentialsConfig {
    /// Refresh cached database credentials this long before they expire.
    #[serde(default = "default_db_refresh_before", with = "humantime_serde")]
    pub refresh_before: Duration,
    /// AWS credential calls one client identity may cause per minute (a burst of as many,
    /// then a steady rate); logins beyond it are refused until the budget refills.
    #[serde(default = "default_fetches_per_identity")]
    pub fetches_per_identity_per_minute: u32,
    /// Distinct cached credentials (user, database, groups) one identity may hold.
    #[serde(default = "default_cached_per_identity")]
    pub max_cached_per_identity: usize,
    /// After a failed credential call, or a fresh credential the upstream refused, the same
    /// request waits before AWS is asked again: 1 s, doubling up to this.
    #[serde(default = "default_failure_backoff_max", with = "humantime_serde")]
    pub failure_backoff_max: Duration,
}

impl Default for DbCredentialsConfig {
    fn default() -> Self {
        DbCredentialsConfig {
            refresh_before: default_db_refresh_before(),
            fetches_per_identity_per_minute: default_fetches_per_identity(),
            max_cached_per_identity: default_cached_per_identity(),
            failure_backoff_max: default_failure_backoff_max(),
        }
    }
}

fn default_fetches_per_identity() -> u32 {
    20
}
fn default_cached_per_identity() -> usize {
    16
}
fn default_failure_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_db_refresh_before() -> Duration {
    Duration::from_secs(300)
}

impl DbCredentialsConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let refresh = self.refresh_before;
        if refresh.is_zero() || refresh >= Duration::from_secs(900) {
            p.add(
                "db_credentials.refresh_before",
                "must be greater than 0 and less than 15m (the shortest credential lifetime)",
            );
        }
        if self.fetches_per_identity_per_minute == 0 {
            p.add(
                "db_credentials.fetches_per_identity_per_minute",
                "must be greater than 0 (with 0 no identity could ever log in)",
            );
        }
        if self.max_cached_per_identity == 0 {
            p.add(
                "db_credentials.max_cached_per_identity",
                "must be greater than 0 (with 0 no credential could be cached)",
            );
        }
        if self.failure_backoff_max < Duration::from_secs(1) {
            p.add(
                "db_credentials.failure_backoff_max",
                "must be at least 1s: the backoff starts at 1s and doubles up to it",
            );
        }
    }
}

/// `[db_credentials]` is restart-only as a whole: the credential cache is built once at
/// start.
#[derive(Debug, PartialEq, Eq)]
pub struct DbCredentialsRestartOnly {
    pub refresh_before: Duration,
    pub fetches_per_identity_per_minute: u32,
    pub max_cached_per_identity: usize,
    pub failure_backoff_max: Duration,
}

impl DbCredentialsConfig {
    /// Every field: all restart-only. Named one by one, so a new field does not compile
    /// until it is classified.
    pub fn restart_only(&self) -> DbCredentialsRestartOnly {
        let DbCredentialsConfig {
            refresh_before,
            fetches_per_identity_per_minute,
            max_cached_per_identity,
            failure_backoff_max,
        } = self;
        DbCredentialsRestartOnly {
            refresh_before: *refresh_before,
            fetches_per_identity_per_minute: *fetches_per_identity_per_minute,
            max_cached_per_identity: *max_cached_per_identity,
            failure_backoff_max: *failure_backoff_max,
        }
    }
}
