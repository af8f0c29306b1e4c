//! Keeping chosen keys fresh without being asked: one task per engine wakes at the next
//! soft deadline (or backoff end) of the keys it keeps warm, refreshes what is due, and
//! retries their failures once the backoff passes. A proxy without its AWS credentials
//! reports itself unready and gets no logins, so nobody else would ask again.

use super::{backing_off, Entry, Expiring, FetchAborted, Inner};
use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, SystemTime};

/// Which keys the engine keeps fresh in the background, and how often it re-reads the
/// wall clock.
pub struct Background<K> {
    /// Longest sleep between two looks at the wall clock, so that a machine waking from
    /// sleep (or a clock set forward) refreshes within this.
    pub poll_interval: Duration,
    keep_warm: Box<dyn Fn(&K) -> bool + Send + Sync>,
}

impl<K> Background<K> {
    /// Keeps the keys `keep_warm` selects fresh; other keys are refreshed ahead only when
    /// used, as without a background.
    pub fn new(
        poll_interval: Duration,
        keep_warm: impl Fn(&K) -> bool + Send + Sync + 'static,
    ) -> Self {
        Background {
            poll_interval: poll_interval.max(Duration::from_millis(1)),
            keep_warm: Box::new(keep_warm),
        }
    }

    pub(super) fn keeps_warm(&self, key: &K) -> bool {
        (self.keep_warm)(key)
    }
}

impl<K, V, E> Inner<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    V: Expiring,
    E: Clone + Send + Sync + std::fmt::Display + From<FetchAborted> + 'static,
{
    /// Starts the background refresher unless there is none to run or it runs already.
    /// Needs a Tokio runtime, which every (async) caller of this has.
    pub(super) fn ensure_refresher(self: &Arc<Self>) {
        let Some(background) = &self.background else {
            return;
        };
        let mut refresher = self
            .refresher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if refresher.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(refresh_loop(Arc::downgrade(self), background.poll_interval));
        *refresher = Some(task.abort_handle());
    }

    /// Starts the background refreshes due at `now`; returns when the next one falls due.
    fn refresh_due(self: &Arc<Self>, now: SystemTime, latest: SystemTime) -> SystemTime {
        let Some(background) = &self.background else {
            return latest;
        };
        let warm: Vec<(K, Arc<Entry<V, E>>)> = self
            .lock_entries()
            .map
            .iter()
            .filter(|(key, _)| background.keeps_warm(key))
            .map(|(key, entry)| (key.clone(), Arc::clone(entry)))
            .collect();
        let mut next = latest;
        for (key, entry) in warm {
            let mut state = entry.lock();
            if state.inflight.is_some() {
                continue;
            }
            let due_at = match (&state.current, &state.failure) {
                (_, Some(failure)) if backing_off(failure, now, self.policy.backoff_max) => {
                    Some(failure.until)
                }
                (Some(cached), _) if now < cached.deadlines.soft => Some(cached.deadlines.soft),
                // Nothing fetched and nothing failed (e.g. invalidated): its next user fetches.
                (None, None) => None,
                _ => {
                    self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = ?key, "refreshing in the background");
                    drop(self.start_fetch(&key, &entry, &mut state, true));
                    None
                }
            };
            if let Some(at) = due_at {
                next = next.min(at);
            }
        }
        next
    }
}

/// Runs until the engine is dropped; holds it only while looking, never while sleeping.
async fn refresh_loop<K, V, E>(engine: Weak<Inner<K, V, E>>, poll_interval: Duration)
where
    K: Clone + Eq + Hash + Send + Sync + std::fmt::Debug + 'static,
    V: Expiring,
    E: Clone + Send + Sync + std::fmt::Display + From<FetchAborted> + 'static,
{
    loop {
        let wait = {
            let Some(inner) = engine.upgrade() else {
                return;
            };
            let now = inner.clock.now();
            let next = inner.refresh_due(now, now + poll_interval);
            next.duration_since(now).unwrap_or_default()
        };
        tokio::time::sleep(wait.clamp(Duration::from_millis(1), poll_interval)).await;
    }
}
