//! Warm upstream connections: TCP connected, SSLRequest answered and the verify-full TLS
//! handshake done ahead of demand, before any StartupMessage, so that a login pays only
//! for its StartupMessage and authentication. Across a 30 ms link that is two round trips
//! instead of five.
//!
//! A keeper task per target holds [`WarmPool::size`] of them ready. A connection that has
//! waited [`WarmPool::max_age`] is closed (TLS close_notify, so the server logs nothing) and
//! replaced: servers close connections that do not log in, PostgreSQL after
//! `authentication_timeout` (60 s by default), which Redshift, a PostgreSQL 8.0 derivative,
//! does not document otherwise. The keeper also watches every ready connection: one the
//! server closed (or that carries unexpected bytes) is discarded at once and replaced.
//! Dial failures back off exponentially, so a target that is down is not hammered.
//!
//! A login takes the oldest ready connection, checks without waiting that it is still
//! open, and dials as before when none is ready. Should the connection turn out dead once
//! the login starts (closed between the check and the StartupMessage), the login runs
//! once more on a freshly dialled connection: nothing was authenticated on the dead one.

use super::endpoint::UpstreamEndpoint;
use super::error::UpstreamError;
use super::login::{
    self, connect_and_login, encode_startup, LoginRequest, UpstreamOrigin, UpstreamSession,
};
use super::transport::UpstreamStream;
use crate::metrics::WarmCounters;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Longest wait between dial attempts while the upstream cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time allowed to say goodbye (close_notify) on a connection being recycled.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a warm connection was closed instead of serving a login (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// It reached `warm_connection_max_age`.
    Age,
    /// The server closed it, reset it, or sent something before any StartupMessage.
    Closed,
    /// It was taken but the login on it failed with a lost connection (then dialled anew).
    FailedLogin,
    /// The pool was stopped (reload, shutdown).
    Stopped,
}

impl DiscardReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::Age => "age",
            DiscardReason::Closed => "closed",
            DiscardReason::FailedLogin => "failed_login",
            DiscardReason::Stopped => "stopped",
        }
    }
}

/// One ready connection.
struct Warm {
    stream: UpstreamStream,
    ready_at: Instant,
}

struct Inner {
    ready: Mutex<VecDeque<Warm>>,
    /// A connection was taken, or the pool stopped.
    changed: Notify,
    stopped: std::sync::atomic::AtomicBool,
    counters: OnceLock<WarmCounters>,
}

impl Inner {
    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Warm>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn count(&self, event: impl FnOnce(&WarmCounters)) {
        if let Some(c) = self.counters.get() {
            event(c);
        }
    }

    fn discard(&self, warm: Warm, reason: DiscardReason) {
        self.count(|c| c.discarded(reason.as_str()));
        close_politely(warm.stream);
    }

    fn publish_ready(&self, n: usize) {
        self.count(|c| c.set_ready(n));
    }
}

/// The warm connections of one target; see the module documentation. Dropping it stops
/// the keeper and closes the connections.
pub struct WarmPool {
    endpoint: Arc<UpstreamEndpoint>,
    size: usize,
    max_age: Duration,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("host", &self.endpoint.host)
            .field("size", &self.size)
            .field("max_age", &self.max_age)
            .field("ready", &self.ready())
            .finish()
    }
}

impl WarmPool {
    /// A pool of `size` connections to `endpoint` (0: none), not yet filling: see
    /// [`WarmPool::start`].
    pub fn new(endpoint: Arc<UpstreamEndpoint>, size: usize, max_age: Duration) -> Self {
        WarmPool {
            endpoint,
            size,
            max_age,
            inner: Arc::new(Inner {
                ready: Mutex::new(VecDeque::new()),
                changed: Notify::new(),
                stopped: std::sync::atomic::AtomicBool::new(false),
                counters: OnceLock::new(),
            }),
        }
    }

    pub fn endpoint(&self) -> &Arc<UpstreamEndpoint> {
        &self.endpoint
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Connections ready now.
    pub fn ready(&self) -> usize {
        self.inner.ready().len()
    }

    /// Starts the keeper (on the current tokio runtime), counting into `counters`. Without
    /// it the pool stays empty and every login dials. Calling it again does nothing.
    pub fn start(&self, counters: WarmCounters) {
        if self.inner.counters.set(counters).is_err() || self.size == 0 {
            return;
        }
        tokio::spawn(keep(
            self.inner.clone(),
            self.endpoint.clone(),
            self.size,
            self.max_age,
        ));
    }

    /// Stops the keeper and closes every ready connection; later logins dial.
    pub fn stop(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.changed.notify_one();
        let drained: Vec<Warm> = self.inner.ready().drain(..).collect();
        for warm in drained {
            self.inner.discard(warm, DiscardReason::Stopped);
        }
        self.inner.publish_ready(0);
    }

    /// The oldest ready connection that is still young and open; the others met on the
    /// way are discarded. Counts a hit or a miss.
    fn take(&self) -> Option<UpstreamStream> {
        if self.size == 0 || self.inner.is_stopped() {
            return None;
        }
        let mut ready = self.inner.ready();
        let mut found = None;
        while let Some(mut warm) = ready.pop_front() {
            if warm.ready_at.elapsed() >= self.max_age {
                self.inner.discard(warm, DiscardReason::Age);
            } else if !still_open(&mut warm.stream, &mut Context::from_waker(Waker::noop())) {
                self.inner.discard(warm, DiscardReason::Closed);
            } else {
                found = Some(warm.stream);
                break;
            }
        }
        let left = ready.len();
        drop(ready);
        self.inner.publish_ready(left);
        self.inner.changed.notify_one();
        match found {
            Some(_) => self.inner.count(WarmCounters::hit),
            None => self.inner.count(WarmCounters::miss),
        }
        found
    }

    /// Logs in on a warm connection when one is ready, else connects as
    /// [`connect_and_login`] does. The session's [`UpstreamOrigin`] says which.
    pub async fn connect_and_login(
        &self,
        req: &LoginRequest<'_>,
    ) -> Result<UpstreamSession, UpstreamError> {
        let ep = &self.endpoint;
        // Encode first: a parameter we refuse to send should not cost a warm connection.
        let startup = encode_startup(req)?;
        if let Some(stream) = self.take() {
            let started = std::time::Instant::now();
            let attempt = login::within_login_timeout(ep, async {
                login::login_on(ep, stream, &startup, req).await
            })
            .await;
            match attempt {
                Ok(mut session) => {
                    session.origin = UpstreamOrigin::Warm;
                    session.auth_time = started.elapsed();
                    return Ok(session);
                }
                Err(e @ (UpstreamError::Closed { .. } | UpstreamError::Io { .. })) => {
                    self.inner
                        .count(|c| c.discarded(DiscardReason::FailedLogin.as_str()));
                    debug!(host = %ep.host, error = %e, "warm connection lost at login; dialling");
                }
                Err(e) => return Err(e),
            }
        }
        connect_and_login(ep, req).await
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls a connection that should have nothing to say: `Pending` means open and silent.
/// End of stream, an error, or any byte (a server speaks first only to refuse) mean it
/// cannot take a login. Registers `cx`'s waker for the next change.
pub fn still_open(stream: &mut UpstreamStream, cx: &mut Context<'_>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(cx, &mut buf), Poll::Pending)
}

/// Sends TLS close_notify and closes, in the background, within [`CLOSE_GRACE`].
fn close_politely(mut stream: UpstreamStream) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = tokio::time::timeout(CLOSE_GRACE, stream.shutdown()).await;
    });
}

/// The keeper: dials until `size` connections are ready or being dialled, recycles them
/// at `max_age`, and discards those the server closes, until the pool stops.
async fn keep(inner: Arc<Inner>, ep: Arc<UpstreamEndpoint>, size: usize, max_age: Duration) {
    let mut dialling: JoinSet<Result<UpstreamStream, UpstreamError>> = JoinSet::new();
    let mut backoff = Duration::ZERO;
    let mut retry_at = Instant::now();
    loop {
        if inner.is_stopped() {
            return;
        }
        let now = Instant::now();
        let oldest = recycle_aged(&inner, max_age, now);
        let ready = inner.ready().len();
        inner.publish_ready(ready);
        if now >= retry_at {
            for _ in (ready + dialling.len())..size {
                let ep = ep.clone();
                dialling.spawn(async move { login::connect(&ep).await });
            }
        }
        let next_recycle = oldest.map_or(now + max_age, |at| at + max_age);
        let wake_at = if dialling.is_empty() && ready < size {
            next_recycle.min(retry_at)
        } else {
            next_recycle
        };
        tokio::select! {
            _ = inner.changed.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            Some(done) = dialling.join_next(), if !dialling.is_empty() => match done {
                Ok(Ok(stream)) => {
                    backoff = Duration::ZERO;
                    if inner.is_stopped() {
                        close_politely(stream);
                        return;
                    }
                    inner.ready().push_back(Warm { stream, ready_at: Instant::now() });
                }
                Ok(Err(e)) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    retry_at = Instant::now() + backoff;
                    warn!(host = %ep.host, error = %e, retry_in = ?backoff, "could not open a warm upstream connection");
                }
                Err(_) => {}
            },
            _ = closed_by_server(&inner) => {}
        }
    }
}

/// Discards the ready connections that reached `max_age`; when the oldest remaining one
/// became ready.
fn recycle_aged(inner: &Inner, max_age: Duration, now: Instant) -> Option<Instant> {
    let mut ready = inner.ready();
    while ready
        .front()
        .is_some_and(|w| now.duration_since(w.ready_at) >= max_age)
    {
        if let Some(warm) = ready.pop_front() {
            inner.discard(warm, DiscardReason::Age);
        }
    }
    ready.front().map(|w| w.ready_at)
}

/// Resolves once a ready connection was closed by the server (and discards it); until
/// then the keeper's waker is registered with every ready connection.
fn closed_by_server(inner: &Inner) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let mut closed = 0;
        inner.ready().retain_mut(|warm| {
            let open = still_open(&mut warm.stream, cx);
            closed += usize::from(!open);
            open
        });
        if closed == 0 {
            return Poll::Pending;
        }
        for _ in 0..closed {
            inner.count(|c| c.discarded(DiscardReason::Closed.as_str()));
        }
        Poll::Ready(())
    })
}
