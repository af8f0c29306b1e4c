//! The database credential cache: [`RedshiftCredentials`].
//!
//! One entry per [`DbCredentialRequest`] (target, role, db user, db name, sorted groups).
//! For a credential fetched at `f` that expires at `e` (lifetime `L = e - f`) and the
//! configured `refresh_before` `R`:
//!
//! - margin `M = min(R, L/2)`, so short-lived credentials still get used for half their life;
//! - **hard** deadline `e - M`: from then on the credential is never served, callers wait
//!   for a fresh one;
//! - **soft** deadline `e - min(2M, 3L/4)`: from then on each use still serves the cached
//!   credential but starts one background refresh, so once warm clients never wait on AWS.
//!
//! Deadlines are judged on the wall clock ([`Clock`]) at the moment of use, because the
//! expiration AWS returns is a wall-clock time. If the clock jumps forward the entry just
//! looks expired and is fetched again; if it jumps backward a credential may be served past
//! its real expiry, the upstream refuses it, and the caller's [`DbCredentialSource::invalidate`]
//! plus retry recovers.
//!
//! Fetches are single-flight per key: concurrent misses share one AWS call, different keys
//! never wait on each other. A fetch runs in its own task, so a client that gives up does not
//! cancel it and the result still lands in the cache.
//!
//! **Errors are not cached.** All callers waiting on a failed fetch receive its error, and
//! the next caller tries again. A negative cache would delay the effect of fixing an IAM
//! policy and would hide recoveries; the load on AWS stays bounded because concurrent misses
//! share one call and the SDK already retries transient failures with backoff. A failed
//! *background* refresh is only retried after [`REFRESH_RETRY_BACKOFF`], while the cached
//! credential keeps being served until its hard deadline.

use crate::aws::clock::Clock;
use crate::db_credentials::{
    CredentialError, DbCredential, DbCredentialRequest, DbCredentialSource,
};
use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// Obtains a fresh database credential for a request: one AWS call, no caching. The seam
/// between the cache and AWS: [`AwsCredentialFetcher`](super::AwsCredentialFetcher) calls
/// Redshift through the AWS SDK, tests plug in fakes.
#[async_trait]
pub trait FetchDbCredential: Send + Sync + 'static {
    async fn fetch(&self, request: &DbCredentialRequest) -> Result<DbCredential, CredentialError>;
}

/// After a failed background refresh, wait this long before the next background attempt.
pub const REFRESH_RETRY_BACKOFF: Duration = Duration::from_secs(10);

/// Below this many entries the cache is never swept for expired ones.
const MIN_SWEEP_THRESHOLD: usize = 64;

/// A snapshot of the cache's counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that had to wait for a fetch (their own or a concurrent caller's).
    pub misses: u64,
    /// Calls to the fetcher (AWS), foreground and background.
    pub fetches: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes: u64,
    /// Fetches that failed.
    pub fetch_errors: u64,
    /// Keys currently held (including ones with only a fetch in flight).
    pub entries: usize,
    /// The earliest expiration among cached credentials.
    pub earliest_expiry: Option<SystemTime>,
}

/// When a cached credential stops being served, and when it starts being refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadlines {
    soft: SystemTime,
    hard: SystemTime,
}

impl Deadlines {
    fn new(fetched_at: SystemTime, expiration: SystemTime, refresh_before: Duration) -> Self {
        // A credential that already looks expired (clock skew) has no lifetime left.
        let lifetime = expiration
            .duration_since(fetched_at)
            .unwrap_or(Duration::ZERO);
        let margin = refresh_before.min(lifetime / 2);
        let soft_margin = (margin * 2).min(lifetime * 3 / 4);
        let before = |d: Duration| expiration.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
        Deadlines {
            soft: before(soft_margin),
            hard: before(margin),
        }
    }
}

type FetchResult = Result<DbCredential, CredentialError>;
type Flight = Shared<BoxFuture<'static, FetchResult>>;

struct Cached {
    credential: DbCredential,
    deadlines: Deadlines,
}

struct InFlight {
    id: u64,
    future: Flight,
}

#[derive(Default)]
struct EntryState {
    current: Option<Cached>,
    inflight: Option<InFlight>,
    /// When the last background refresh failed, for backoff.
    refresh_failed_at: Option<SystemTime>,
}

#[derive(Default)]
struct Entry {
    state: Mutex<EntryState>,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, EntryState> {
        // Critical sections only assign whole fields, so a poisoned lock holds no torn state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Entries {
    map: HashMap<DbCredentialRequest, Arc<Entry>>,
    /// Sweep expired entries when the map grows to this size (amortised O(1) per insert).
    sweep_at: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    fetch_errors: AtomicU64,
    flight_ids: AtomicU64,
}

struct Inner {
    fetcher: Arc<dyn FetchDbCredential>,
    clock: Arc<dyn Clock>,
    refresh_before: Duration,
    entries: Mutex<Entries>,
    counters: Counters,
}

/// Redshift database credentials, cached and refreshed ahead of expiry.
///
/// Cheap to clone; clones share the cache. Fetches run as Tokio tasks, so
/// [`credential`](DbCredentialSource::credential) must be called within a Tokio runtime.
#[derive(Clone)]
pub struct RedshiftCredentials {
    inner: Arc<Inner>,
}

impl RedshiftCredentials {
    /// A cache over any fetcher and clock. The production one, over the AWS SDK, is
    /// [`RedshiftCredentials::new`] (feature `aws-sdk`).
    pub fn with_fetcher(
        fetcher: Arc<dyn FetchDbCredential>,
        clock: Arc<dyn Clock>,
        refresh_before: Duration,
    ) -> Self {
        RedshiftCredentials {
            inner: Arc::new(Inner {
                fetcher,
                clock,
                refresh_before,
                entries: Mutex::new(Entries {
                    map: HashMap::new(),
                    sweep_at: MIN_SWEEP_THRESHOLD,
                }),
                counters: Counters::default(),
            }),
        }
    }

    /// Current counters and the earliest cached expiry.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let entries = self.inner.lock_entries();
        let earliest_expiry = entries
            .map
            .values()
            .filter_map(|e| e.lock().current.as_ref().map(|c| c.credential.expiration))
            .min();
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            fetch_errors: c.fetch_errors.load(Ordering::Relaxed),
            entries: entries.map.len(),
            earliest_expiry,
        }
    }

    /// Waits for the fetch in flight for `request`, if any (tests observe background
    /// refreshes with it).
    #[cfg(test)]
    async fn settle(&self, request: &DbCredentialRequest) {
        let key = normalized(request);
        let entry = self.inner.lock_entries().map.get(&key).cloned();
        let flight = entry.and_then(|e| e.lock().inflight.as_ref().map(|f| f.future.clone()));
        if let Some(flight) = flight {
            let _ = flight.await;
        }
    }
}

/// The cache key: groups sorted and de-duplicated, so equal grants share an entry even if
/// a caller did not normalise them.
fn normalized(request: &DbCredentialRequest) -> DbCredentialRequest {
    let mut key = request.clone();
    key.db_groups.sort();
    key.db_groups.dedup();
    key
}

impl Inner {
    fn lock_entries(&self) -> MutexGuard<'_, Entries> {
        // Critical sections leave the map consistent at every step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key`, created if absent.
    fn entry(&self, key: &DbCredentialRequest, now: SystemTime) -> Arc<Entry> {
        let mut entries = self.lock_entries();
        if let Some(entry) = entries.map.get(key) {
            return Arc::clone(entry);
        }
        if entries.map.len() >= entries.sweep_at {
            // Keys come from policy grants (e.g. one db user per certificate CN), so the
            // key space can grow without bound: drop entries that hold nothing usable.
            entries.map.retain(|_, entry| {
                let state = entry.lock();
                state.inflight.is_some()
                    || state
                        .current
                        .as_ref()
                        .is_some_and(|c| now < c.credential.expiration)
            });
            entries.sweep_at = (entries.map.len() * 2).max(MIN_SWEEP_THRESHOLD);
        }
        let entry = Arc::new(Entry::default());
        entries.map.insert(key.clone(), Arc::clone(&entry));
        entry
    }

    /// Starts fetching `key` in its own task and records the flight in `state` (whose lock
    /// the caller holds, so the task cannot complete before the flight is recorded).
    fn start_fetch(
        self: &Arc<Self>,
        key: &DbCredentialRequest,
        entry: &Arc<Entry>,
        state: &mut EntryState,
        background: bool,
    ) -> Flight {
        let id = self.counters.flight_ids.fetch_add(1, Ordering::Relaxed);
        self.counters.fetches.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(self);
        let entry = Arc::clone(entry);
        let key = key.clone();
        let task = tokio::spawn(async move {
            let result = inner.fetcher.fetch(&key).await;
            inner.complete_fetch(&key, &entry, id, background, &result);
            result
        });
        let future = async move {
            task.await.unwrap_or_else(|e| {
                Err(CredentialError::Unavailable(format!(
                    "database credential fetch did not complete: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        state.inflight = Some(InFlight {
            id,
            future: future.clone(),
        });
        future
    }

    fn complete_fetch(
        &self,
        key: &DbCredentialRequest,
        entry: &Entry,
        id: u64,
        background: bool,
        result: &FetchResult,
    ) {
        let now = self.clock.now();
        let mut state = entry.lock();
        let detached = state.inflight.as_ref().is_none_or(|f| f.id != id);
        if !detached {
            state.inflight = None;
        }
        match result {
            // Detached by `invalidate`: it may carry the refused credential.
            Ok(_) if detached => {}
            Ok(credential) => {
                let deadlines = Deadlines::new(now, credential.expiration, self.refresh_before);
                if now >= deadlines.hard {
                    // Still handed to the callers waiting for it: AWS just issued it, so
                    // our clock is the likelier culprit. It will not be served from cache.
                    tracing::warn!(
                        target = %key.target,
                        db_user = %key.db_user,
                        "freshly issued database credential already looks expired; \
                         check the system clock"
                    );
                }
                state.current = Some(Cached {
                    credential: credential.clone(),
                    deadlines,
                });
                state.refresh_failed_at = None;
            }
            Err(error) => {
                self.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
                if background {
                    state.refresh_failed_at = Some(now);
                    tracing::warn!(
                        target = %key.target,
                        db_user = %key.db_user,
                        db_name = %key.db_name,
                        %error,
                        "background refresh of database credential failed; \
                         serving the cached one while it lasts"
                    );
                }
            }
        }
    }
}

/// Whether a background refresh may start now after one failed at `failed_at`.
fn backoff_elapsed(failed_at: Option<SystemTime>, now: SystemTime) -> bool {
    match failed_at {
        None => true,
        // A clock that went backwards must not suppress refreshes for that long.
        Some(t) => now < t || now >= t + REFRESH_RETRY_BACKOFF,
    }
}

#[async_trait]
impl DbCredentialSource for RedshiftCredentials {
    async fn credential(
        &self,
        request: &DbCredentialRequest,
    ) -> Result<DbCredential, CredentialError> {
        let inner = &self.inner;
        let key = normalized(request);
        let now = inner.clock.now();
        let entry = inner.entry(&key, now);
        let flight = {
            let mut state = entry.lock();
            if let Some(cached) = &state.current {
                if now < cached.deadlines.hard {
                    inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                    let credential = cached.credential.clone();
                    let refresh = now >= cached.deadlines.soft
                        && state.inflight.is_none()
                        && backoff_elapsed(state.refresh_failed_at, now);
                    if refresh {
                        inner.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            target = %key.target,
                            db_user = %key.db_user,
                            db_name = %key.db_name,
                            "refreshing database credential ahead of expiry"
                        );
                        // The flight is recorded in the entry; nobody needs to await it.
                        drop(inner.start_fetch(&key, &entry, &mut state, true));
                    }
                    return Ok(credential);
                }
                state.current = None;
            }
            inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            match &state.inflight {
                Some(flight) => flight.future.clone(),
                None => inner.start_fetch(&key, &entry, &mut state, false),
            }
        };
        flight.await
    }

    fn invalidate(&self, request: &DbCredentialRequest, refused: &DbCredential) {
        let key = normalized(request);
        let Some(entry) = self.inner.lock_entries().map.get(&key).cloned() else {
            return;
        };
        let mut state = entry.lock();
        // Every session refused with this credential reports it. Only the first report may
        // drop it: dropping what replaced it would send each of them to AWS on its own.
        let cached_is_refused = state.current.as_ref().is_some_and(|c| {
            c.credential.user == refused.user
                && c.credential.password.expose_secret() == refused.password.expose_secret()
        });
        if !cached_is_refused {
            return;
        }
        state.current = None;
        // A refresh in flight started before the refusal and may bring the same credential
        // back: detach it (its waiters still get its result), so the next caller starts a
        // fetch of its own, which the other refused sessions then share.
        state.inflight = None;
        tracing::info!(
            target = %key.target,
            db_user = %key.db_user,
            db_name = %key.db_name,
            "database credential invalidated"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::clock::ManualClock;
    use secrecy::SecretString;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Semaphore;

    const HOUR: Duration = Duration::from_secs(3600);
    const FIVE_MIN: Duration = Duration::from_secs(300);

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ))
    }

    /// Issues `pw-<n>` for the n-th call, valid for `lifetime` from the fake clock's now.
    /// Calls for `gated_user` wait for a permit on `gate`; queued errors are returned first.
    struct FakeFetcher {
        clock: Arc<ManualClock>,
        lifetime: Duration,
        calls: AtomicUsize,
        /// Calls that have returned their result.
        answered: AtomicUsize,
        gated_user: Mutex<Option<String>>,
        gate: Semaphore,
        errors: Mutex<VecDeque<CredentialError>>,
    }

    impl FakeFetcher {
        fn new(clock: &Arc<ManualClock>, lifetime: Duration) -> Arc<Self> {
            Arc::new(FakeFetcher {
                clock: Arc::clone(clock),
                lifetime,
                calls: AtomicUsize::new(0),
                answered: AtomicUsize::new(0),
                gated_user: Mutex::new(None),
                gate: Semaphore::new(0),
                errors: Mutex::new(VecDeque::new()),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
        fn answered(&self) -> usize {
            self.answered.load(Ordering::SeqCst)
        }
        fn hold(&self, user: &str) {
            *self.gated_user.lock().unwrap() = Some(user.to_owned());
        }
        /// Later calls pass the gate; calls already waiting stay until [`Self::release`].
        fn stop_holding(&self) {
            *self.gated_user.lock().unwrap() = None;
        }
        fn release(&self) {
            self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
        fn fail_next(&self, error: CredentialError) {
            self.errors.lock().unwrap().push_back(error);
        }
    }

    #[async_trait]
    impl FetchDbCredential for FakeFetcher {
        async fn fetch(&self, request: &DbCredentialRequest) -> FetchResult {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let gated = self.gated_user.lock().unwrap().as_deref() == Some(&request.db_user);
            if gated {
                self.gate.acquire().await.expect("gate open").forget();
            }
            // The cache handles the result before its task next yields, so a test that
            // sees the call answered sees the cache updated.
            self.answered.fetch_add(1, Ordering::SeqCst);
            if let Some(error) = self.errors.lock().unwrap().pop_front() {
                return Err(error);
            }
            Ok(DbCredential {
                user: format!("IAM:{}", request.db_user),
                password: SecretString::from(format!("pw-{n}")),
                expiration: self.clock.now() + self.lifetime,
                aws_request_ids: vec![format!("req-{n}")],
            })
        }
    }

    fn request(user: &str) -> DbCredentialRequest {
        DbCredentialRequest {
            target: "t1".into(),
            role_arn: None,
            db_user: user.into(),
            db_name: "dev".into(),
            db_groups: vec![],
        }
    }

    fn cache(fetcher: &Arc<FakeFetcher>, clock: &Arc<ManualClock>) -> RedshiftCredentials {
        RedshiftCredentials::with_fetcher(fetcher.clone(), clock.clone(), FIVE_MIN)
    }

    async fn password(source: &RedshiftCredentials, user: &str) -> String {
        let credential = source.credential(&request(user)).await.expect("credential");
        credential.password.expose_secret().to_owned()
    }

    /// Waits (bounded) until `cond` holds; background tasks need a few scheduler turns.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn deadlines_for_a_one_hour_credential() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let d = Deadlines::new(t0, t0 + HOUR, FIVE_MIN);
        assert_eq!(d.hard, t0 + Duration::from_secs(3300));
        assert_eq!(d.soft, t0 + Duration::from_secs(3000));
    }

    #[test]
    fn deadlines_keep_short_credentials_useful_for_half_their_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // refresh_before larger than the whole lifetime
        let d = Deadlines::new(t0, t0 + Duration::from_secs(900), Duration::from_secs(1200));
        assert_eq!(d.hard, t0 + Duration::from_secs(450));
        assert_eq!(d.soft, t0 + Duration::from_secs(225));
    }

    #[test]
    fn deadlines_of_an_already_expired_credential_are_past() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let d = Deadlines::new(t0, t0 - Duration::from_secs(10), FIVE_MIN);
        assert!(d.hard <= t0 && d.soft <= t0);
    }

    #[tokio::test]
    async fn second_request_is_served_from_cache() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        let first = source
            .credential(&request("alice"))
            .await
            .expect("credential");
        assert_eq!(first.user, "IAM:alice");
        assert_eq!(first.aws_request_ids, vec!["req-1".to_owned()]);
        clock.advance(Duration::from_secs(60));
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(fetcher.calls(), 1);
        let stats = source.stats();
        assert_eq!((stats.hits, stats.misses, stats.fetches), (1, 1, 1));
        assert_eq!(stats.entries, 1);
    }

    #[tokio::test]
    async fn different_keys_are_cached_separately() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(password(&source, "bob").await, "pw-2");
        let mut other_db = request("alice");
        other_db.db_name = "prod".into();
        let c = source.credential(&other_db).await.expect("credential");
        assert_eq!(c.password.expose_secret(), "pw-3");
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test]
    async fn group_order_and_duplicates_do_not_split_the_cache() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        let mut a = request("alice");
        a.db_groups = vec!["b".into(), "a".into(), "b".into()];
        let mut b = request("alice");
        b.db_groups = vec!["a".into(), "b".into()];
        source.credential(&a).await.expect("credential");
        source.credential(&b).await.expect("credential");
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn soft_window_serves_current_and_refreshes_in_background() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        assert_eq!(password(&source, "alice").await, "pw-1");

        fetcher.hold("alice");
        clock.advance(Duration::from_secs(3000)); // soft deadline of a 1 h credential
        let served = tokio::time::timeout(Duration::from_secs(2), password(&source, "alice"))
            .await
            .expect("served without waiting for AWS");
        assert_eq!(served, "pw-1");
        eventually("background fetch to start", || fetcher.calls() == 2).await;
        // Further uses while the refresh is in flight neither wait nor start another one.
        for _ in 0..10 {
            assert_eq!(password(&source, "alice").await, "pw-1");
        }
        assert_eq!(fetcher.calls(), 2);

        fetcher.release();
        source.settle(&request("alice")).await;
        assert_eq!(password(&source, "alice").await, "pw-2");
        let stats = source.stats();
        assert_eq!((stats.refreshes, stats.fetches, stats.misses), (1, 2, 1));
    }

    #[tokio::test]
    async fn before_the_soft_window_nothing_is_refreshed() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        password(&source, "alice").await;
        clock.advance(Duration::from_secs(2999));
        assert_eq!(password(&source, "alice").await, "pw-1");
        tokio::task::yield_now().await;
        assert_eq!(fetcher.calls(), 1);
        assert_eq!(source.stats().refreshes, 0);
    }

    #[tokio::test]
    async fn credential_past_the_hard_deadline_is_never_served() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        password(&source, "alice").await;
        clock.advance(Duration::from_secs(3300)); // expiration - refresh_before
        fetcher.hold("alice");
        let waiting = tokio::time::timeout(Duration::from_millis(50), password(&source, "alice"));
        assert!(waiting.await.is_err(), "must wait for a fresh credential");
        fetcher.release();
        assert_eq!(password(&source, "alice").await, "pw-2");
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test]
    async fn short_lived_credentials_are_replaced_at_half_life() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, Duration::from_secs(900));
        let source = RedshiftCredentials::with_fetcher(
            fetcher.clone(),
            clock.clone(),
            Duration::from_secs(1200),
        );
        assert_eq!(password(&source, "alice").await, "pw-1");
        fetcher.hold("alice"); // keep the background refresh from landing
        clock.advance(Duration::from_secs(449));
        assert_eq!(password(&source, "alice").await, "pw-1");
        clock.advance(Duration::from_secs(1));
        fetcher.release();
        // The background refresh started at 449 s is joined, not duplicated.
        assert_eq!(password(&source, "alice").await, "pw-2");
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_hundred_concurrent_misses_make_one_fetch() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        fetcher.hold("alice");
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { password(&source, "alice").await })
            })
            .collect();
        eventually("the fetch to start", || fetcher.calls() == 1).await;
        fetcher.release();
        for caller in callers {
            assert_eq!(caller.await.expect("caller"), "pw-1");
        }
        assert_eq!(fetcher.calls(), 1);
        assert_eq!(source.stats().hits + source.stats().misses, 100);
    }

    #[tokio::test]
    async fn a_slow_key_does_not_block_other_keys() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        fetcher.hold("slow");
        let slow = {
            let source = source.clone();
            tokio::spawn(async move { password(&source, "slow").await })
        };
        eventually("the slow fetch to start", || fetcher.calls() == 1).await;
        let fast = tokio::time::timeout(Duration::from_secs(2), password(&source, "fast"))
            .await
            .expect("other key not blocked");
        assert_eq!(fast, "pw-2");
        fetcher.release();
        assert_eq!(slow.await.expect("slow caller"), "pw-1");
    }

    #[tokio::test]
    async fn invalidate_forces_a_fresh_credential() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(password(&source, "bob").await, "pw-2");
        let refused = source.credential(&request("alice")).await.unwrap();
        source.invalidate(&request("alice"), &refused);
        assert_eq!(password(&source, "alice").await, "pw-3");
        // Other keys are untouched.
        assert_eq!(password(&source, "bob").await, "pw-2");
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test]
    async fn sessions_refused_with_one_credential_share_one_fetch() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        let refused = source.credential(&request("alice")).await.unwrap();
        // Ten sessions got pw-1 and are refused together; each reports it, then retries.
        let retries: Vec<_> = (0..10)
            .map(|_| {
                let (source, refused) = (source.clone(), refused.clone());
                tokio::spawn(async move {
                    source.invalidate(&request("alice"), &refused);
                    password(&source, "alice").await
                })
            })
            .collect();
        for retry in retries {
            assert_eq!(retry.await.unwrap(), "pw-2");
        }
        assert_eq!(fetcher.calls(), 2);
        // A late report of pw-1 leaves its replacement alone.
        source.invalidate(&request("alice"), &refused);
        assert_eq!(password(&source, "alice").await, "pw-2");
        assert_eq!(fetcher.calls(), 2);
    }

    #[tokio::test]
    async fn a_refresh_started_before_a_refusal_is_not_cached() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        let refused = source.credential(&request("alice")).await.unwrap();
        // Past the soft deadline: this use starts a background refresh, held at AWS.
        clock.advance(HOUR - 2 * FIVE_MIN + Duration::from_secs(1));
        fetcher.hold("alice");
        assert_eq!(password(&source, "alice").await, "pw-1");
        eventually("the refresh to start", || fetcher.calls() == 2).await;
        fetcher.stop_holding();
        // The upstream refuses pw-1: the retry does not wait for the refresh...
        source.invalidate(&request("alice"), &refused);
        assert_eq!(password(&source, "alice").await, "pw-3");
        // ...and the refresh's late answer does not replace what the retry fetched.
        fetcher.release();
        eventually("the refresh to answer", || fetcher.answered() == 3).await;
        assert_eq!(password(&source, "alice").await, "pw-3");
        assert_eq!(fetcher.calls(), 3);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        fetcher.fail_next(CredentialError::Denied("not allowed".into()));
        let err = source
            .credential(&request("alice"))
            .await
            .expect_err("denied");
        assert!(matches!(err, CredentialError::Denied(_)));
        assert_eq!(password(&source, "alice").await, "pw-2");
        let stats = source.stats();
        assert_eq!((stats.fetches, stats.fetch_errors), (2, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_waiters_share_one_failure() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        fetcher.hold("alice");
        fetcher.fail_next(CredentialError::Unavailable("throttled".into()));
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.credential(&request("alice")).await })
            })
            .collect();
        eventually("all callers to join the flight", || {
            source.stats().misses == 10
        })
        .await;
        fetcher.release();
        for caller in callers {
            let err = caller.await.expect("caller").expect_err("shared failure");
            assert!(matches!(err, CredentialError::Unavailable(_)));
        }
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn failed_background_refresh_keeps_serving_and_backs_off() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        password(&source, "alice").await;

        clock.advance(Duration::from_secs(3000));
        fetcher.fail_next(CredentialError::Unavailable("throttled".into()));
        assert_eq!(password(&source, "alice").await, "pw-1");
        source.settle(&request("alice")).await;
        assert_eq!(fetcher.calls(), 2);

        // Within the backoff the cached credential is served without another attempt.
        clock.advance(REFRESH_RETRY_BACKOFF - Duration::from_secs(1));
        assert_eq!(password(&source, "alice").await, "pw-1");
        tokio::task::yield_now().await;
        assert_eq!(fetcher.calls(), 2);

        clock.advance(Duration::from_secs(1));
        assert_eq!(password(&source, "alice").await, "pw-1");
        source.settle(&request("alice")).await;
        assert_eq!(password(&source, "alice").await, "pw-3");
    }

    #[tokio::test]
    async fn clock_jumping_forward_past_expiry_fetches_again() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        password(&source, "alice").await;
        clock.advance(2 * HOUR);
        assert_eq!(password(&source, "alice").await, "pw-2");
        assert_eq!(source.stats().misses, 2);
    }

    #[tokio::test]
    async fn clock_jumping_backward_keeps_serving_the_cached_credential() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        password(&source, "alice").await;
        clock.set(clock.now() - 2 * HOUR);
        assert_eq!(password(&source, "alice").await, "pw-1");
        tokio::task::yield_now().await;
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn a_fetch_completes_for_the_cache_even_if_its_caller_gives_up() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        fetcher.hold("alice");
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), password(&source, "alice")).await;
        assert!(gave_up.is_err());
        fetcher.release();
        source.settle(&request("alice")).await;
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(fetcher.calls(), 1);
    }

    #[tokio::test]
    async fn a_credential_issued_already_expired_goes_to_its_waiters_only() {
        let clock = clock();
        // Issued expiring at once by the local clock, as when it runs ahead of AWS's.
        let fetcher = FakeFetcher::new(&clock, Duration::ZERO);
        let source = cache(&fetcher, &clock);
        assert_eq!(password(&source, "alice").await, "pw-1");
        assert_eq!(password(&source, "alice").await, "pw-2");
    }

    #[tokio::test]
    async fn stats_report_the_earliest_expiry() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        assert_eq!(source.stats().earliest_expiry, None);
        let first = source
            .credential(&request("alice"))
            .await
            .expect("credential");
        clock.advance(Duration::from_secs(60));
        password(&source, "bob").await;
        assert_eq!(source.stats().earliest_expiry, Some(first.expiration));
    }

    #[tokio::test]
    async fn expired_entries_are_swept_as_the_cache_grows() {
        let clock = clock();
        let fetcher = FakeFetcher::new(&clock, HOUR);
        let source = cache(&fetcher, &clock);
        for i in 0..MIN_SWEEP_THRESHOLD {
            password(&source, &format!("user{i}")).await;
        }
        clock.advance(2 * HOUR);
        password(&source, "newcomer").await;
        assert_eq!(source.stats().entries, 1);
    }
}
