//! The database credential cache: [`RedshiftCredentials`], the [`refresh`](crate::refresh)
//! engine over Redshift's credential APIs, with a budget per client identity.
//!
//! One entry per credential request (target, role, db user, db name, sorted groups; user
//! and groups are dropped for APIs that ignore them). What AWS costs is bounded per client
//! identity (the `requester` of [`DbCredentialSource::credential`]):
//!
//! - **Fetches are rate-limited**: each identity has a token bucket of
//!   `fetches_per_identity_per_minute` (burst and refill per minute). A login that would
//!   call AWS with an empty bucket is refused ([`CredentialError::Throttled`]); logins
//!   served from the cache cost nothing.
//! - **Failures back off** (see the engine), including refusals by the upstream that a new
//!   credential would only repeat ([`DbCredentialSource::refused_again`]).
//! - **Cached credentials per identity are bounded** by `max_cached_per_identity`: an
//!   identity that asks for more distinct (user, database, groups) evicts its least
//!   recently used ones.

use crate::aws::clock::Clock;
use crate::db_credentials::{
    CredentialError, DbCredential, DbCredentialRequest, DbCredentialSource,
};
use crate::refresh::{Expiring, Fetch, RefreshAhead, RefreshPolicy, RefreshStats};
use async_trait::async_trait;
use secrecy::ExposeSecret;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Obtains a fresh database credential for a request: one AWS call, no caching. The seam
/// between the cache and AWS: [`AwsCredentialFetcher`](super::AwsCredentialFetcher) calls
/// Redshift through the AWS SDK, tests plug in fakes.
#[async_trait]
pub trait FetchDbCredential: Send + Sync + 'static {
    async fn fetch(&self, request: &DbCredentialRequest) -> Result<DbCredential, CredentialError>;

    /// The cache key of `request`: what distinguishes the credentials AWS issues. Groups
    /// are sorted and de-duplicated; fetchers whose API ignores the user or the groups
    /// drop them, so such grants share one credential.
    fn cache_key(&self, request: &DbCredentialRequest) -> DbCredentialRequest {
        let mut key = request.clone();
        key.db_groups.sort();
        key.db_groups.dedup();
        key
    }
}

/// A snapshot of the cache's counters, for metrics.
pub type CacheStats = RefreshStats;

/// How much AWS work one client identity may cause.
#[derive(Debug, Clone, Copy)]
pub struct IdentityBudget {
    /// Credential calls per minute, also the burst.
    pub fetches_per_minute: u32,
    /// Distinct cached credentials per identity.
    pub max_cached: usize,
}

impl IdentityBudget {
    pub fn from_config(config: &proxy_config::DbCredentialsConfig) -> Self {
        IdentityBudget {
            fetches_per_minute: config.fetches_per_identity_per_minute,
            max_cached: config.max_cached_per_identity,
        }
    }
}

impl Default for IdentityBudget {
    fn default() -> Self {
        IdentityBudget::from_config(&proxy_config::DbCredentialsConfig::default())
    }
}

impl Expiring for DbCredential {
    fn expiration(&self) -> SystemTime {
        self.expiration
    }
}

struct ToEngine(Arc<dyn FetchDbCredential>);

#[async_trait]
impl Fetch<DbCredentialRequest, DbCredential, CredentialError> for ToEngine {
    async fn fetch(&self, key: &DbCredentialRequest) -> Result<DbCredential, CredentialError> {
        self.0.fetch(key).await
    }
}

/// A token bucket, refilled continuously.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What each identity has spent and holds.
#[derive(Default)]
struct Ledger {
    buckets: HashMap<String, Bucket>,
    /// Keys each identity used, least recently used first.
    held: HashMap<String, VecDeque<DbCredentialRequest>>,
}

/// Redshift database credentials, cached and refreshed ahead of expiry.
///
/// Cheap to clone; clones share the cache. Fetches run as Tokio tasks, so
/// [`credential`](DbCredentialSource::credential) must be called within a Tokio runtime.
#[derive(Clone)]
pub struct RedshiftCredentials {
    engine: RefreshAhead<DbCredentialRequest, DbCredential, CredentialError>,
    fetcher: Arc<dyn FetchDbCredential>,
    budget: IdentityBudget,
    ledger: Arc<Mutex<Ledger>>,
}

impl RedshiftCredentials {
    /// A cache over any fetcher and clock. The production one, over the AWS SDK, is
    /// [`RedshiftCredentials::new`] (feature `aws-sdk`).
    pub fn with_fetcher(
        fetcher: Arc<dyn FetchDbCredential>,
        clock: Arc<dyn Clock>,
        policy: RefreshPolicy,
        budget: IdentityBudget,
    ) -> Self {
        RedshiftCredentials {
            engine: RefreshAhead::new(Arc::new(ToEngine(fetcher.clone())), clock, policy),
            fetcher,
            budget,
            ledger: Arc::new(Mutex::new(Ledger::default())),
        }
    }

    /// Current counters and the earliest cached expiry.
    pub fn stats(&self) -> CacheStats {
        self.engine.stats()
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        // Critical sections leave the ledger consistent at every step.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one fetch from `requester`'s bucket.
    fn spend(&self, requester: &str) -> Result<(), CredentialError> {
        let per_minute = f64::from(self.budget.fetches_per_minute.max(1));
        let now = Instant::now();
        let mut ledger = self.ledger();
        if ledger.buckets.len() > 4096 {
            // Full buckets carry no information: forget them.
            ledger
                .buckets
                .retain(|_, b| b.tokens + refill(b.at, now, per_minute) < per_minute);
        }
        let bucket = ledger
            .buckets
            .entry(requester.to_owned())
            .or_insert(Bucket {
                tokens: per_minute,
                at: now,
            });
        bucket.tokens = (bucket.tokens + refill(bucket.at, now, per_minute)).min(per_minute);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(CredentialError::Throttled(format!(
                "this client identity made {} credential requests in the last minute",
                self.budget.fetches_per_minute
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Records that `requester` uses `key`; evicts its least recently used credentials
    /// beyond the budget.
    fn hold(&self, requester: &str, key: &DbCredentialRequest) {
        let evicted: Vec<DbCredentialRequest> = {
            let mut ledger = self.ledger();
            let held = ledger.held.entry(requester.to_owned()).or_default();
            held.retain(|k| k != key);
            held.push_back(key.clone());
            let over = held.len().saturating_sub(self.budget.max_cached.max(1));
            held.drain(..over).collect()
        };
        for key in evicted {
            self.engine.remove(&key);
        }
    }
}

fn refill(since: Instant, now: Instant, per_minute: f64) -> f64 {
    now.saturating_duration_since(since).as_secs_f64() * per_minute / 60.0
}

#[async_trait]
impl DbCredentialSource for RedshiftCredentials {
    async fn credential(
        &self,
        request: &DbCredentialRequest,
        requester: &str,
    ) -> Result<DbCredential, CredentialError> {
        let key = self.fetcher.cache_key(request);
        let credential = self
            .engine
            .get_or_admit(&key, || self.spend(requester))
            .await?;
        self.hold(requester, &key);
        Ok(credential)
    }

    fn invalidate(&self, request: &DbCredentialRequest, refused: &DbCredential) {
        let key = self.fetcher.cache_key(request);
        let dropped = self.engine.invalidate(&key, |c| {
            c.user == refused.user && c.password.expose_secret() == refused.password.expose_secret()
        });
        if dropped {
            tracing::info!(
                target = %key.target,
                db_user = ?key.db_user,
                db_name = ?key.db_name,
                "database credential invalidated"
            );
        }
    }

    fn refused_again(&self, request: &DbCredentialRequest, reason: &str) {
        let key = self.fetcher.cache_key(request);
        self.engine.fail(
            &key,
            CredentialError::Denied(format!(
                "the upstream refused a freshly issued credential for this login ({reason}); \
                 not asking AWS again until the backoff passes"
            )),
        );
    }
}

/// The refresh policy of `[db_credentials]`.
pub fn refresh_policy(config: &proxy_config::DbCredentialsConfig) -> RefreshPolicy {
    RefreshPolicy {
        refresh_before: config.refresh_before,
        backoff_max: config.failure_backoff_max.max(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests;
