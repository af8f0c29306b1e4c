//! The refresh-ahead engine behind every expiring credential the proxy holds (database
//! credentials, Roles Anywhere sessions): a keyed cache that serves a value until shortly
//! before it expires, refreshes it ahead of that, shares one fetch among concurrent
//! callers, and backs off after failures.
//!
//! Each cached value has two deadlines ([`Margins`]; by default those of
//! [`Margins::doubled`] with the policy's `refresh_before` `R`). For a value fetched at `f`
//! that expires at `e` (lifetime `L = e - f`):
//!
//! - **hard** deadline `e - min(hard, L/2)` (by default `e - min(R, L/2)`): from then on the
//!   value is never served, callers wait for a fresh one; short-lived values still get used
//!   for half their life;
//! - **soft** deadline `e - min(soft + jitter, 3L/4)` (by default `e - min(2R, 3L/4)`):
//!   from then on each use still serves the cached value but starts one background
//!   refresh, so once warm, callers never wait.
//!
//! Deadlines are judged on the wall clock ([`Clock`]) at the moment of use, because
//! expirations are wall-clock times: if the clock jumps forward the entry just looks
//! expired and is fetched again; if it jumps backward a value may be served past its real
//! expiry, the user of it is refused, and [`RefreshAhead::invalidate`] recovers.
//!
//! Fetches are single-flight per key: concurrent misses share one call, different keys
//! never wait on each other. A fetch runs in its own task, so a caller that gives up does
//! not cancel it and the result still lands in the cache.
//!
//! **Failures back off.** After a failed fetch of a key, callers that have no usable value
//! get that failure at once, without a new call, until the backoff passes: 1 s after the
//! first failure, doubling up to `backoff_max`, reset by a success. A failed background
//! refresh backs off the same way while the cached value keeps being served until its hard
//! deadline. Bounded retries keep a broken IAM policy or an unknown database user from
//! turning every login into a call to AWS; a fixed policy takes effect within
//! `backoff_max`.
//!
//! **Options** ([`EngineOptions`]): other [`Margins`]; a [`Background`] refresher that
//! keeps chosen keys fresh (and retries their failures) even when nobody uses them; and a
//! capacity, beyond which the least recently used key is forgotten.

use crate::aws::clock::Clock;
use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

mod background;
mod deadlines;
mod entry;
mod retry;

use entry::{backing_off, record_failure, Cached, Entries, Entry, EntryState, InFlight};

pub use background::Background;
pub(crate) use deadlines::Deadlines;
pub use deadlines::Margins;
pub use retry::RetryPolicy;

/// A value with an expiration.
pub trait Expiring: Clone + Send + Sync + 'static {
    fn expiration(&self) -> SystemTime;
}

/// Obtains a fresh value for a key: one call, no caching.
#[async_trait]
pub trait Fetch<K, V, E>: Send + Sync + 'static {
    async fn fetch(&self, key: &K) -> Result<V, E>;
}

/// A fetch task that ended without a result (the runtime is shutting down).
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential fetch did not complete: {0}")]
pub struct FetchAborted(pub String);

/// First wait after a failure; it doubles per failure up to [`RefreshPolicy::backoff_max`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// Below this many entries the cache is never swept for expired ones.
pub(crate) const MIN_SWEEP_THRESHOLD: usize = 64;

/// When values are refreshed and how failures back off.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    pub refresh_before: Duration,
    pub backoff_max: Duration,
}

/// What an engine does beyond [`RefreshPolicy`]; the default adds nothing.
pub struct EngineOptions<K> {
    /// Deadlines other than [`Margins::doubled`]`(refresh_before)`.
    pub margins: Option<Margins>,
    /// Keep some keys fresh without being asked.
    pub background: Option<Background<K>>,
    /// Most keys held at once: a new key beyond it evicts the least recently used one
    /// (never one the [`Background`] keeps warm).
    pub capacity: Option<usize>,
}

impl<K> Default for EngineOptions<K> {
    fn default() -> Self {
        EngineOptions {
            margins: None,
            background: None,
            capacity: None,
        }
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RefreshStats {
    /// Requests served from the cache.
    pub hits: u64,
    /// Requests that had to wait for a fetch (their own or a concurrent caller's).
    pub misses: u64,
    /// Calls to the fetcher, foreground and background.
    pub fetches: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes: u64,
    /// Fetches that failed.
    pub fetch_errors: u64,
    /// Requests answered with a recent failure instead of a new fetch.
    pub backed_off: u64,
    /// Keys forgotten to stay within the capacity.
    pub evicted: u64,
    /// Keys currently held (including ones with only a fetch in flight).
    pub entries: usize,
    /// The earliest expiration among cached values.
    pub earliest_expiry: Option<SystemTime>,
}

/// What the engine holds for one key, without fetching: for health reports.
#[derive(Debug, Clone)]
pub struct Standing<V, E> {
    /// The latest value, even one past its hard deadline (it may still be unexpired).
    pub value: Option<V>,
    /// The last failure since the last success.
    pub failure: Option<E>,
}

type Flight<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    fetch_errors: AtomicU64,
    backed_off: AtomicU64,
    evicted: AtomicU64,
    flight_ids: AtomicU64,
    /// A logical clock of uses, for least-recently-used eviction.
    ticks: AtomicU64,
}

struct Inner<K, V, E> {
    fetcher: Arc<dyn Fetch<K, V, E>>,
    clock: Arc<dyn Clock>,
    policy: RefreshPolicy,
    margins: Margins,
    background: Option<Background<K>>,
    capacity: Option<usize>,
    /// The background refresher, once started.
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
    entries: Mutex<Entries<K, V, E>>,
    counters: Counters,
}

impl<K, V, E> Drop for Inner<K, V, E> {
    fn drop(&mut self) {
        let refresher = self.refresher.get_mut();
        if let Some(task) = refresher.unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

/// See the module documentation. Cheap to clone; clones share the cache. Fetches run as
/// Tokio tasks, so [`get`](Self::get) must be called within a Tokio runtime.
pub struct RefreshAhead<K, V, E> {
    inner: Arc<Inner<K, V, E>>,
}

impl<K, V, E> Clone for RefreshAhead<K, V, E> {
    fn clone(&self) -> Self {
        RefreshAhead {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Whether [`RefreshAhead::get_or_admit`] may start a fetch of its own.
pub trait Admit<E> {
    /// Called only when the caller would start a foreground fetch (no usable value, no
    /// fetch in flight, no failure standing in); an error is returned to the caller
    /// instead of fetching.
    fn admit(self) -> Result<(), E>;
}

impl<E, F: FnOnce() -> Result<(), E>> Admit<E> for F {
    fn admit(self) -> Result<(), E> {
        self()
    }
}

impl<K, V, E> RefreshAhead<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    V: Expiring,
    E: Clone + Send + Sync + std::fmt::Display + From<FetchAborted> + 'static,
{
    pub fn new(
        fetcher: Arc<dyn Fetch<K, V, E>>,
        clock: Arc<dyn Clock>,
        policy: RefreshPolicy,
    ) -> Self {
        Self::with_options(fetcher, clock, policy, EngineOptions::default())
    }

    pub fn with_options(
        fetcher: Arc<dyn Fetch<K, V, E>>,
        clock: Arc<dyn Clock>,
        policy: RefreshPolicy,
        options: EngineOptions<K>,
    ) -> Self {
        RefreshAhead {
            inner: Arc::new(Inner {
                fetcher,
                clock,
                policy,
                margins: options
                    .margins
                    .unwrap_or_else(|| Margins::doubled(policy.refresh_before)),
                background: options.background,
                capacity: options.capacity,
                refresher: Mutex::new(None),
                entries: Mutex::new(Entries {
                    map: HashMap::new(),
                    sweep_at: MIN_SWEEP_THRESHOLD,
                }),
                counters: Counters::default(),
            }),
        }
    }

    /// A value valid now, from cache when possible.
    pub async fn get(&self, key: &K) -> Result<V, E> {
        self.get_or_admit(key, || Ok(())).await
    }

    /// [`get`](Self::get), asking `admit` before starting a fetch of its own.
    pub async fn get_or_admit(&self, key: &K, admit: impl Admit<E>) -> Result<V, E> {
        let inner = &self.inner;
        inner.ensure_refresher();
        let now = inner.clock.now();
        let entry = inner.entry(key, now);
        let flight = {
            let mut state = entry.lock();
            if let Some(cached) = state.current.as_ref().filter(|c| now < c.deadlines.hard) {
                inner.counters.hits.fetch_add(1, Ordering::Relaxed);
                let value = cached.value.clone();
                let refresh = now >= cached.deadlines.soft
                    && state.inflight.is_none()
                    && !state
                        .failure
                        .as_ref()
                        .is_some_and(|f| backing_off(f, now, inner.policy.backoff_max));
                if refresh {
                    inner.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = ?key, "refreshing ahead of expiry");
                    // The flight is recorded in the entry; nobody needs to await it.
                    drop(inner.start_fetch(key, &entry, &mut state, true));
                }
                return Ok(value);
            }
            // A value past its hard deadline stays recorded (health reports judge it by
            // its real expiry) but is never served.
            inner.counters.misses.fetch_add(1, Ordering::Relaxed);
            match (&state.inflight, &state.failure) {
                (Some(flight), _) => flight.future.clone(),
                (None, Some(failure)) if backing_off(failure, now, inner.policy.backoff_max) => {
                    inner.counters.backed_off.fetch_add(1, Ordering::Relaxed);
                    return Err(failure.error.clone());
                }
                (None, _) => {
                    admit.admit()?;
                    inner.start_fetch(key, &entry, &mut state, false)
                }
            }
        };
        flight.await
    }

    /// A value fetched now, whatever the cache holds and however recent a failure (an
    /// operator's check): joins a fetch in flight, else starts one.
    pub async fn fetch_now(&self, key: &K) -> Result<V, E> {
        let inner = &self.inner;
        inner.ensure_refresher();
        let entry = inner.entry(key, inner.clock.now());
        let flight = {
            let mut state = entry.lock();
            match &state.inflight {
                Some(flight) => flight.future.clone(),
                None => inner.start_fetch(key, &entry, &mut state, false),
            }
        };
        flight.await
    }

    /// The user of a value was refused with it: forget it so the next call fetches anew.
    /// Only a value `is_refused` recognises is dropped, never one that replaced it, so many
    /// users refused at once share one fetch. A fetch in flight started before the refusal
    /// and may bring the same value back: it is detached (its waiters still get its
    /// result) and not cached.
    pub fn invalidate(&self, key: &K, is_refused: impl Fn(&V) -> bool) -> bool {
        let Some(entry) = self.inner.lock_entries().map.get(key).cloned() else {
            return false;
        };
        let mut state = entry.lock();
        if !state.current.as_ref().is_some_and(|c| is_refused(&c.value)) {
            return false;
        }
        state.current = None;
        state.inflight = None;
        true
    }

    /// Records `error` for `key` as a failed fetch would (backoff included) and drops its
    /// value: for failures found by the value's user that a new fetch would only repeat.
    pub fn fail(&self, key: &K, error: E) {
        let now = self.inner.clock.now();
        let entry = self.inner.entry(key, now);
        let mut state = entry.lock();
        state.current = None;
        state.inflight = None;
        record_failure(&mut state, error, now, self.inner.policy.backoff_max);
    }

    /// Forgets `key` entirely.
    pub fn remove(&self, key: &K) {
        self.inner.lock_entries().map.remove(key);
    }

    /// The cached value of `key` if it may still be served (no fetch, no counters).
    pub fn peek(&self, key: &K) -> Option<V> {
        let now = self.inner.clock.now();
        let entry = self.inner.lock_entries().map.get(key).cloned()?;
        let state = entry.lock();
        state
            .current
            .as_ref()
            .filter(|c| now < c.deadlines.hard)
            .map(|c| c.value.clone())
    }

    /// What is held for each key (no fetch, no counters).
    pub fn standings(&self) -> Vec<(K, Standing<V, E>)> {
        let entries: Vec<_> = self
            .inner
            .lock_entries()
            .map
            .iter()
            .map(|(k, e)| (k.clone(), Arc::clone(e)))
            .collect();
        entries
            .into_iter()
            .map(|(key, entry)| (key, entry.lock().standing()))
            .collect()
    }

    /// What is held for `key` (no fetch, no counters).
    pub fn standing(&self, key: &K) -> Option<Standing<V, E>> {
        let entry = self.inner.lock_entries().map.get(key).cloned()?;
        let standing = entry.lock().standing();
        Some(standing)
    }

    pub fn stats(&self) -> RefreshStats {
        let c = &self.inner.counters;
        let entries = self.inner.lock_entries();
        let earliest_expiry = entries
            .map
            .values()
            .filter_map(|e| e.lock().current.as_ref().map(|c| c.value.expiration()))
            .min();
        RefreshStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            fetches: c.fetches.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            fetch_errors: c.fetch_errors.load(Ordering::Relaxed),
            backed_off: c.backed_off.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            entries: entries.map.len(),
            earliest_expiry,
        }
    }

    /// Waits for the fetch in flight for `key`, if any (tests observe background
    /// refreshes with it).
    #[cfg(test)]
    pub(crate) async fn settle(&self, key: &K) {
        let entry = self.inner.lock_entries().map.get(key).cloned();
        let flight = entry.and_then(|e| e.lock().inflight.as_ref().map(|f| f.future.clone()));
        if let Some(flight) = flight {
            let _ = flight.await;
        }
    }
}

impl<K, V, E> Inner<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    V: Expiring,
    E: Clone + Send + Sync + std::fmt::Display + From<FetchAborted> + 'static,
{
    /// Starts fetching `key` in its own task and records the flight in `state` (whose lock
    /// the caller holds, so the task cannot complete before the flight is recorded).
    fn start_fetch(
        self: &Arc<Self>,
        key: &K,
        entry: &Arc<Entry<V, E>>,
        state: &mut EntryState<V, E>,
        background: bool,
    ) -> Flight<V, E> {
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
            // The task only ends without a result if the runtime is shutting down.
            task.await
                .unwrap_or_else(|e| Err(E::from(FetchAborted(e.to_string()))))
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
        key: &K,
        entry: &Entry<V, E>,
        id: u64,
        background: bool,
        result: &Result<V, E>,
    ) {
        let now = self.clock.now();
        let mut state = entry.lock();
        let detached = state.inflight.as_ref().is_none_or(|f| f.id != id);
        if !detached {
            state.inflight = None;
        }
        match result {
            // Detached by `invalidate`: it may carry the refused value.
            Ok(_) if detached => {}
            Ok(value) => {
                let deadlines = Deadlines::place(now, value.expiration(), &self.margins);
                if now >= deadlines.hard {
                    // Still handed to the callers waiting for it: it was just issued, so
                    // our clock is the likelier culprit. It will not be served from cache.
                    tracing::warn!(
                        key = ?key,
                        "freshly issued credential already looks expired; check the system clock"
                    );
                }
                state.current = Some(Cached {
                    value: value.clone(),
                    deadlines,
                });
                state.failure = None;
            }
            Err(error) => {
                self.counters.fetch_errors.fetch_add(1, Ordering::Relaxed);
                record_failure(&mut state, error.clone(), now, self.policy.backoff_max);
                if background {
                    let serving = state
                        .current
                        .as_ref()
                        .is_some_and(|c| now < c.deadlines.hard);
                    tracing::warn!(
                        key = ?key,
                        %error,
                        serving_cached = serving,
                        "background refresh failed; a cached credential is served while it lasts"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
