//! What the engine holds per key, and the map of keys with its sweep and eviction.

use super::{
    Deadlines, Expiring, FetchAborted, Flight, Inner, Standing, INITIAL_BACKOFF,
    MIN_SWEEP_THRESHOLD,
};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

pub(super) struct Cached<V> {
    pub(super) value: V,
    pub(super) deadlines: Deadlines,
}

pub(super) struct InFlight<V, E> {
    pub(super) id: u64,
    pub(super) future: Flight<V, E>,
}

/// The last failure of a key and until when it stands in for a fetch.
pub(super) struct Failure<E> {
    pub(super) error: E,
    pub(super) until: SystemTime,
    /// Failures in a row.
    pub(super) count: u32,
}

pub(super) struct EntryState<V, E> {
    pub(super) current: Option<Cached<V>>,
    pub(super) inflight: Option<InFlight<V, E>>,
    pub(super) failure: Option<Failure<E>>,
}

pub(super) struct Entry<V, E> {
    pub(super) state: Mutex<EntryState<V, E>>,
    /// When the key was last asked for, in [`Counters::ticks`] (for eviction).
    pub(super) used: AtomicU64,
}

impl<V, E> Entry<V, E> {
    pub(super) fn new() -> Self {
        Entry {
            state: Mutex::new(EntryState {
                current: None,
                inflight: None,
                failure: None,
            }),
            used: AtomicU64::new(0),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, EntryState<V, E>> {
        // Critical sections only assign whole fields, so a poisoned lock holds no torn state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(super) struct Entries<K, V, E> {
    pub(super) map: HashMap<K, Arc<Entry<V, E>>>,
    /// Sweep expired entries when the map grows to this size (amortised O(1) per insert).
    pub(super) sweep_at: usize,
}

impl<V: Clone, E: Clone> EntryState<V, E> {
    pub(super) fn standing(&self) -> Standing<V, E> {
        Standing {
            value: self.current.as_ref().map(|c| c.value.clone()),
            failure: self.failure.as_ref().map(|f| f.error.clone()),
        }
    }
}

/// Whether `failure` still stands in for a fetch at `now`. A clock that went backwards
/// must not suppress fetches for longer than the longest backoff.
pub(super) fn backing_off<E>(failure: &Failure<E>, now: SystemTime, backoff_max: Duration) -> bool {
    let started = failure
        .until
        .checked_sub(backoff_max)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    now < failure.until && now >= started
}

pub(super) fn record_failure<V, E>(
    state: &mut EntryState<V, E>,
    error: E,
    now: SystemTime,
    max: Duration,
) {
    let count = state
        .failure
        .as_ref()
        .map_or(0, |f| f.count)
        .saturating_add(1);
    let backoff = INITIAL_BACKOFF
        .saturating_mul(1u32 << (count - 1).min(16))
        .min(max);
    state.failure = Some(Failure {
        error,
        until: now + backoff,
        count,
    });
}

impl<K, V, E> Inner<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    V: Expiring,
    E: Clone + Send + Sync + std::fmt::Display + From<FetchAborted> + 'static,
{
    pub(super) fn lock_entries(&self) -> MutexGuard<'_, Entries<K, V, E>> {
        // Critical sections leave the map consistent at every step.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key`, created if absent, marked as used now.
    pub(super) fn entry(&self, key: &K, now: SystemTime) -> Arc<Entry<V, E>> {
        let tick = self.counters.ticks.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock_entries();
        if let Some(entry) = entries.map.get(key) {
            entry.used.store(tick, Ordering::Relaxed);
            return Arc::clone(entry);
        }
        if entries.map.len() >= entries.sweep_at {
            // Keys come from policy grants (e.g. one db user per certificate CN), so the
            // key space can grow without bound: drop entries that hold nothing usable.
            let max = self.policy.backoff_max;
            entries.map.retain(|_, entry| {
                let state = entry.lock();
                state.inflight.is_some()
                    || state
                        .failure
                        .as_ref()
                        .is_some_and(|f| backing_off(f, now, max))
                    || state
                        .current
                        .as_ref()
                        .is_some_and(|c| now < c.value.expiration())
            });
            entries.sweep_at = (entries.map.len() * 2).max(MIN_SWEEP_THRESHOLD);
        }
        if self.capacity.is_some_and(|cap| entries.map.len() >= cap) {
            self.evict_least_recently_used(&mut entries.map);
        }
        let entry = Arc::new(Entry::new());
        entry.used.store(tick, Ordering::Relaxed);
        entries.map.insert(key.clone(), Arc::clone(&entry));
        entry
    }

    /// Forgets the key used longest ago that the background does not keep warm. Its
    /// value stays valid for whoever holds it; a fetch in flight completes unrecorded.
    fn evict_least_recently_used(&self, map: &mut HashMap<K, Arc<Entry<V, E>>>) {
        let oldest = map
            .iter()
            .filter(|(key, _)| !self.background.as_ref().is_some_and(|b| b.keeps_warm(key)))
            .min_by_key(|(_, entry)| entry.used.load(Ordering::Relaxed))
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            tracing::debug!(key = ?key, "evicting the least recently used entry");
            map.remove(&key);
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}
