//! Session reuse (`session_reuse = true` on a target): the logged-in upstream session of a
//! client that left cleanly is kept for a while and handed to the next client with the
//! same [`ReuseKey`], after a reset ([`reset`]). Across a link to Redshift a login costs
//! several round trips; a kept session costs none, once its reset is done.
//!
//! Each kept session is a task ([`keeper`]) that owns the connection: it runs the reset at
//! once, then waits for a taker, and closes the session when the reset fails, when the
//! server closes it or sends anything, at the idle timeout or maximum age, and when the
//! pool stops (reload, shutdown). A taker that finds the reset still running waits for it
//! (one round trip at most). The pool is bounded per key and per target; a session that
//! served `session_reuse_max_uses` clients, or is older than `session_reuse_max_age`, is
//! not kept.
//!
//! Sessions are only ever handed to a client with the same key: the same certificate (its
//! issuer, subject and fingerprint) or local user, and the same database user, database,
//! groups, IAM role and startup parameters. Whatever a reset cannot undo stays within
//! what that one identity could do in one session anyway.

mod keeper;
pub mod reset;

use crate::backend::{AuthMethod, BackendKey, UpstreamOrigin, UpstreamSession, UpstreamStream};
use crate::metrics::ReuseCounters;
use crate::net::messages::{Decode, Encode, ParameterStatus, ReadyForQuery};
use bytes::BytesMut;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Who may be handed a kept session: everything that decides what the session is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReuseKey {
    /// The client's identity (certificate issuer, subject and fingerprint, or local
    /// user), as [`proxy_auth::principal::ClientPrincipal`] names it.
    pub identity: String,
    /// The database user the session logged in as (as issued: `IAMA:alice`).
    pub db_user: String,
    pub database: String,
    pub groups: Vec<String>,
    pub role: Option<String>,
    /// The startup parameters forwarded upstream, in order.
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for ReuseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReuseKey")
            .field("db_user", &self.db_user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// The `session_reuse*` settings of one target.
#[derive(Debug, Clone)]
pub struct ReuseSettings {
    pub enabled: bool,
    pub idle_timeout: Duration,
    pub max_age: Duration,
    pub max_uses: u32,
    pub per_key: usize,
    pub max_sessions: usize,
    /// `session_reset`.
    pub reset: Vec<String>,
    /// How long a reset may take (the target's `login_timeout`).
    pub reset_timeout: Duration,
}

impl ReuseSettings {
    pub fn from_config(t: &proxy_config::TargetConfig) -> Self {
        ReuseSettings {
            enabled: t.session_reuse,
            idle_timeout: t.session_reuse_idle_timeout,
            max_age: t.session_reuse_max_age,
            max_uses: t.session_reuse_max_uses,
            per_key: t.session_reuse_per_key,
            max_sessions: t.session_reuse_max_sessions,
            reset: t.session_reset.clone(),
            reset_timeout: t.login_timeout,
        }
    }
}

/// A logged-in upstream session and what a client must be told about it.
pub struct SessionToKeep {
    pub upstream: UpstreamStream,
    pub backend_key: Option<BackendKey>,
    /// ParameterStatus values in force, in the order the server reported them.
    pub parameters: Vec<(String, String)>,
    /// Clients served so far.
    pub uses: u32,
    pub logged_in_at: Instant,
    pub tls_version: String,
    pub tls_cipher: String,
    pub auth_method: AuthMethod,
    /// Statements the last client prepared by name, to close before reuse.
    pub statements: Vec<Vec<u8>>,
}

impl SessionToKeep {
    /// The session for its next client (one more use), with the recorded ParameterStatus
    /// set and ReadyForQuery as its login reply.
    fn into_upstream_session(self) -> UpstreamSession {
        let mut after_auth = BytesMut::new();
        for (name, value) in &self.parameters {
            let status = ParameterStatus {
                name: name.as_bytes(),
                value: value.as_bytes(),
            };
            status.encode_into(&mut after_auth);
        }
        ReadyForQuery {
            status: ReadyForQuery::IDLE,
        }
        .encode_into(&mut after_auth);
        UpstreamSession {
            stream: self.upstream,
            backend_key: self.backend_key,
            after_auth,
            tls_version: self.tls_version,
            tls_cipher: self.tls_cipher,
            auth_method: self.auth_method,
            origin: UpstreamOrigin::Reused {
                uses: self.uses.saturating_add(1),
            },
            connect_time: Duration::ZERO,
            auth_time: Duration::ZERO,
            logged_in_at: self.logged_in_at,
        }
    }
}

/// A kept session handed to a client.
pub struct Reused {
    pub session: UpstreamSession,
    /// No session of the key was ready: the client waited for the reset that follows the
    /// previous client's exit (one round trip). The same identity reconnects faster than
    /// that; a second session logged in meanwhile ([`SessionPool::keep_fresh`]) spares its
    /// next reconnection the wait.
    pub waited: bool,
}

/// The ParameterStatus messages of a login reply (the messages after AuthenticationOk),
/// in order.
pub fn parameters_of(after_auth: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = after_auth;
    while let [tag, a, b, c, d, tail @ ..] = rest {
        let len = i32::from_be_bytes([*a, *b, *c, *d]);
        let Some(body_len) = usize::try_from(len).ok().and_then(|l| l.checked_sub(4)) else {
            break;
        };
        let Some((body, next)) = tail.split_at_checked(body_len) else {
            break;
        };
        if *tag == ParameterStatus::TAG {
            if let Ok(ParameterStatus { name, value }) = ParameterStatus::decode(body) {
                set_parameter(
                    &mut out,
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                );
            }
        }
        rest = next;
    }
    out
}

fn set_parameter(parameters: &mut Vec<(String, String)>, name: String, value: String) {
    match parameters.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = value,
        None => parameters.push((name, value)),
    }
}

/// A kept session as the pool sees it: how to ask its keeper for it.
struct Entry {
    id: u64,
    requests: mpsc::Sender<oneshot::Sender<SessionToKeep>>,
    reset_done: Arc<AtomicBool>,
}

struct Inner {
    entries: Mutex<HashMap<ReuseKey, Vec<Entry>>>,
    /// Keys with a spare session being logged in (at most one each).
    spares: Mutex<HashSet<ReuseKey>>,
    next_id: AtomicU64,
    stopped: watch::Sender<bool>,
    counters: OnceLock<ReuseCounters>,
}

impl Inner {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ReuseKey, Vec<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, event: impl FnOnce(&ReuseCounters)) {
        if let Some(c) = self.counters.get() {
            event(c);
        }
    }

    /// Forgets entry `id` (its keeper ended); whether it was still listed.
    fn remove(&self, key: &ReuseKey, id: u64) -> bool {
        let mut entries = self.entries();
        let Some(list) = entries.get_mut(key) else {
            return false;
        };
        let before = list.len();
        list.retain(|e| e.id != id);
        let removed = list.len() < before;
        if list.is_empty() {
            entries.remove(key);
        }
        let total = entries.values().map(Vec::len).sum();
        drop(entries);
        self.count(|c| c.set_kept(total));
        removed
    }

    /// Takes an entry of `key` off the list: one whose reset is done if any (the most
    /// recently kept), else the most recently kept.
    fn pop(&self, key: &ReuseKey) -> Option<Entry> {
        let mut entries = self.entries();
        let list = entries.get_mut(key)?;
        let index = list
            .iter()
            .rposition(|e| e.reset_done.load(Ordering::SeqCst))
            .unwrap_or(list.len() - 1);
        let entry = list.remove(index);
        if list.is_empty() {
            entries.remove(key);
        }
        let total = entries.values().map(Vec::len).sum();
        drop(entries);
        self.count(|c| c.set_kept(total));
        Some(entry)
    }
}

/// The kept sessions of one target; see the module documentation.
/// See [`SessionPool::claim_spare`].
pub struct SpareClaim {
    inner: Arc<Inner>,
    key: ReuseKey,
}

impl Drop for SpareClaim {
    fn drop(&mut self) {
        let mut spares = self
            .inner
            .spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        spares.remove(&self.key);
    }
}

pub struct SessionPool {
    settings: Arc<ReuseSettings>,
    inner: Arc<Inner>,
}

impl SessionPool {
    pub fn new(settings: ReuseSettings) -> Self {
        SessionPool {
            settings: Arc::new(settings),
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                spares: Mutex::new(HashSet::new()),
                next_id: AtomicU64::new(0),
                stopped: watch::Sender::new(false),
                counters: OnceLock::new(),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Sessions kept now.
    pub fn kept(&self) -> usize {
        self.inner.entries().values().map(Vec::len).sum()
    }

    /// Counts into `counters` from now on (called once, when the state starts serving).
    pub fn start(&self, counters: ReuseCounters) {
        let _ = self.inner.counters.set(counters);
    }

    /// Closes every kept session; nothing is kept any more.
    pub fn stop(&self) {
        self.inner.stopped.send_replace(true);
        self.inner.entries().clear();
        self.inner.count(|c| c.set_kept(0));
    }

    /// Keeps `session` for the next client with `key`, or says why not (the session is
    /// then closed). It is reset first.
    pub fn keep(&self, key: ReuseKey, session: SessionToKeep) -> Result<(), &'static str> {
        self.keep_as(key, session, true)
    }

    /// Keeps a session that has just logged in for `key` and served nobody: nothing to
    /// reset. See [`Reused::waited`].
    /// Claims the background login of one spare session for `key`: `None` while another
    /// one for the same key runs, so a burst of clients that waited for a reset starts one
    /// login, not one each. The claim ends when dropped.
    pub fn claim_spare(&self, key: &ReuseKey) -> Option<SpareClaim> {
        let mut spares = self
            .inner
            .spares
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        spares.insert(key.clone()).then(|| SpareClaim {
            inner: self.inner.clone(),
            key: key.clone(),
        })
    }

    pub fn keep_fresh(&self, key: ReuseKey, session: UpstreamSession) -> Result<(), &'static str> {
        let parameters = parameters_of(&session.after_auth);
        let session = SessionToKeep {
            upstream: session.stream,
            backend_key: session.backend_key,
            parameters,
            uses: 0,
            logged_in_at: session.logged_in_at,
            tls_version: session.tls_version,
            tls_cipher: session.tls_cipher,
            auth_method: session.auth_method,
            statements: Vec::new(),
        };
        self.keep_as(key, session, false)
    }

    fn keep_as(
        &self,
        key: ReuseKey,
        session: SessionToKeep,
        reset: bool,
    ) -> Result<(), &'static str> {
        let s = &self.settings;
        let refusal = if *self.inner.stopped.borrow() || !s.enabled {
            Some("stopped")
        } else if session.logged_in_at.elapsed() >= s.max_age {
            Some("max_age")
        } else if session.uses >= s.max_uses {
            Some("max_uses")
        } else {
            None
        };
        let entry = match refusal {
            Some(why) => Err(why),
            None => self.list(&key),
        };
        let entry = match entry {
            Ok(entry) => entry,
            Err(why) => {
                self.inner.count(|c| c.closed(why));
                keeper::say_goodbye_later(session.upstream);
                return Err(why);
            }
        };
        tokio::spawn(keeper::keep(keeper::Kept {
            inner: self.inner.clone(),
            settings: self.settings.clone(),
            key,
            id: entry.0,
            session,
            reset,
            requests: entry.1,
            reset_done: entry.2,
        }));
        Ok(())
    }

    /// Lists a new entry for `key` within the bounds; its id, request queue and reset flag.
    #[allow(clippy::type_complexity)]
    fn list(
        &self,
        key: &ReuseKey,
    ) -> Result<
        (
            u64,
            mpsc::Receiver<oneshot::Sender<SessionToKeep>>,
            Arc<AtomicBool>,
        ),
        &'static str,
    > {
        let mut entries = self.inner.entries();
        let total: usize = entries.values().map(Vec::len).sum();
        let of_key = entries.get(key).map_or(0, Vec::len);
        if total >= self.settings.max_sessions || of_key >= self.settings.per_key {
            return Err("full");
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (requests, receiver) = mpsc::channel(1);
        let reset_done = Arc::new(AtomicBool::new(false));
        entries.entry(key.clone()).or_default().push(Entry {
            id,
            requests,
            reset_done: reset_done.clone(),
        });
        drop(entries);
        self.inner.count(|c| c.set_kept(total + 1));
        Ok((id, receiver, reset_done))
    }

    /// Counts a session of this target that could not be kept (the relay says why).
    pub fn not_kept(&self, why: &'static str) {
        self.inner.count(|c| c.closed(why));
    }

    /// A kept session for `key`, reset, when there is one (waiting for a reset under way);
    /// counts a hit or a miss.
    pub async fn take(&self, key: &ReuseKey) -> Option<Reused> {
        if !self.settings.enabled || *self.inner.stopped.borrow() {
            return None;
        }
        while let Some(entry) = self.inner.pop(key) {
            let waited = !entry.reset_done.load(Ordering::SeqCst);
            let (reply, answer) = oneshot::channel();
            if entry.requests.send(reply).await.is_err() {
                continue;
            }
            // The keeper answers once its reset is done, or drops the reply when the reset
            // failed: bounded by the reset timeout.
            if let Ok(session) = answer.await {
                self.inner.count(ReuseCounters::hit);
                return Some(Reused {
                    session: session.into_upstream_session(),
                    waited,
                });
            }
        }
        self.inner.count(ReuseCounters::miss);
        None
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
