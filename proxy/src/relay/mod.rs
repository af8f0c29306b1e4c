//! Relaying an established session: both directions spliced, byte for byte.
//!
//! After login the proxy inspects nothing: PostgreSQL messages pass through unchanged
//! (session reuse and the statement audit read the client's messages as they pass, see
//! [`statements`]).
//! The session ends when either side ends, and the other side is then shut down, so a
//! client that disconnects also closes its upstream session (and stops its query).
//!
//! The proxy may also end a session itself (shutdown drain, idle timeout, maximum
//! lifetime). It then tells the client why with a FATAL ErrorResponse, which must not land
//! in the middle of an upstream message. So the upstream→client direction tracks message
//! boundaries by counting header lengths ([`BoundaryTracker`]; bodies are never parsed) and
//! the error is written at the next boundary. If none comes within [`STOP_GRACE`] (a huge
//! message mid-flight), the session is closed without it.

mod framing;
mod pump;
mod statement_audit;
mod statements;
#[cfg(test)]
mod tests;

pub use framing::BoundaryTracker;
pub use statement_audit::{Statement, StatementSink, StatementText, StatementTracker};

use crate::net::messages::{Encode, ReadyForQuery, Terminate};
use crate::refusal::{stop_response, StopReason};
use framing::ClientTail;
use prometheus_client::metrics::counter::Counter;
use pump::{pump, pump_to_client, ClientSide};
use statements::ClientWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for a message boundary once the proxy decided to end a session.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Which side ended the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// One side's stream ended or failed.
    By(Side),
    /// The proxy ended it; `notified` says whether the client got the ErrorResponse.
    Stopped { reason: StopReason, notified: bool },
}

/// How a relay ended and what it moved.
#[derive(Debug)]
pub struct RelayOutcome {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub ended: Ended,
    /// The I/O error that ended it, if it was not an orderly close.
    pub error: Option<std::io::Error>,
    /// The client's last bytes were a Terminate message: it left on purpose, with no
    /// query of its own still running upstream.
    pub client_terminated: bool,
    /// The upstream's last message was ReadyForQuery and the client sent nothing after
    /// it: no query was running when the session ended.
    pub upstream_idle: bool,
}

impl RelayOutcome {
    /// The side whose stream ended first (the proxy counts as upstream when it stopped it).
    pub fn ended_by(&self) -> Side {
        match self.ended {
            Ended::By(side) => side,
            Ended::Stopped { .. } => Side::Upstream,
        }
    }
}

/// What else, besides the two streams, can end a relay, and where to count bytes.
#[derive(Default)]
pub struct RelayControl {
    /// Becomes `true` when the session must stop (shutdown drain expired).
    pub shutdown: Option<watch::Receiver<bool>>,
    /// End the session after this long without traffic in either direction.
    pub idle_timeout: Option<Duration>,
    /// End the session at this instant.
    pub deadline: Option<(Instant, StopReason)>,
    /// Resolves when the client's certificate has been revoked.
    pub revoked: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Process-wide byte counters, updated as data flows.
    pub bytes_from_client: Option<Counter>,
    pub bytes_to_client: Option<Counter>,
    /// Watch the client's messages for session reuse, and keep the upstream session of a
    /// client that leaves cleanly (see [`relay_keeping`]).
    pub session_reuse: bool,
    /// Read the statements the client sends, for the statement audit.
    pub statements: Option<StatementTracker>,
}

/// What became of the upstream session at the end of a relay.
pub enum Kept<U> {
    /// Session reuse is off: the upstream was closed.
    Off,
    /// The client left cleanly (a Terminate, withheld) while the upstream was idle
    /// outside any transaction: the upstream session, still logged in, and the names of
    /// the statements the client prepared on it.
    Kept {
        upstream: U,
        statements: Vec<Vec<u8>>,
    },
    /// The upstream was closed as usual; why it could not be kept (a stable label).
    Closed(&'static str),
}

/// Runs the session until either side closes or fails, or `control` stops it.
pub async fn relay<C, U>(client: C, upstream: U, control: RelayControl) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    relay_keeping(client, upstream, control).await.0
}

/// [`relay`], which with `control.session_reuse` also hands back the upstream session of a
/// client that left cleanly instead of closing it.
pub async fn relay_keeping<C, U>(
    client: C,
    upstream: U,
    mut control: RelayControl,
) -> (RelayOutcome, Kept<U>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream);
    let (mut to_upstream, mut to_client) = (0u64, 0u64);
    let mut client_tail = ClientTail::default();
    let mut client_frames = BoundaryTracker::default();
    let reuse = control.session_reuse;
    let mut watch = client_watch(reuse, control.statements.take());
    // The login reply ended with ReadyForQuery 'I': no transaction before a first query.
    let mut upstream_frames = BoundaryTracker::after(ReadyForQuery::TAG, Some(ReadyForQuery::IDLE));
    let idle = IdleMarks::default();
    let origin = Instant::now();
    // Milliseconds since `origin` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);
    let stop = stop_signal(&mut control, origin, &last_activity);
    let (ended, result) = first_to_end(
        pump(
            &mut client_rd,
            &mut upstream_wr,
            &mut to_upstream,
            control.bytes_from_client.as_ref(),
            (origin, &last_activity),
            ClientSide {
                tail: &mut client_tail,
                frames: &mut client_frames,
                idle: &idle,
                watch: watch.as_mut(),
            },
        ),
        pump_to_client(
            &mut upstream_rd,
            &mut client_wr,
            &mut to_client,
            control.bytes_to_client.as_ref(),
            (origin, &last_activity),
            (&mut upstream_frames, &idle),
            stop,
        ),
    )
    .await;
    let withheld = matches!(result, Ok(true));
    let client_terminated = withheld || client_tail.is_terminate();
    // After the client's Terminate the upstream closes too, and may be seen first: the
    // client still ended the session.
    let ended = match ended {
        Ended::By(Side::Upstream) if result.is_ok() && client_terminated => Ended::By(Side::Client),
        other => other,
    };
    let upstream_idle = upstream_frames.at_boundary()
        && upstream_frames.last_message() == Some(ReadyForQuery::TAG)
        && idle.all_forwarded();
    let outcome = RelayOutcome {
        client_to_upstream: to_upstream,
        upstream_to_client: to_client,
        ended,
        error: result.err(),
        client_terminated,
        upstream_idle,
    };
    let keep = watch.filter(|_| reuse).map(|watch| {
        let why_not = match withheld && ended == Ended::By(Side::Client) {
            true => why_not_kept(&outcome, &idle, &upstream_frames, &watch),
            false => Some("no_terminate"),
        };
        (why_not, watch)
    });
    if let Some((None, watch)) = keep {
        let _ = tokio::time::timeout(STOP_GRACE, client_wr.shutdown()).await;
        let upstream = upstream_rd.unsplit(upstream_wr);
        let statements = watch.into_statements();
        return (
            outcome,
            Kept::Kept {
                upstream,
                statements,
            },
        );
    }
    // Close the other direction too; errors here only mean it was already gone. A session
    // the client did not end with its own Terminate gets one from the proxy (when the
    // client's last message was whole), so the upstream ends it as a clean logout.
    let say_terminate = !client_tail.is_terminate()
        && client_frames.at_boundary()
        && !idle.mid_write.load(Ordering::Relaxed);
    close(ended, &mut client_wr, &mut upstream_wr, say_terminate).await;
    let kept = match keep {
        Some((Some(why), _)) => Kept::Closed(why),
        _ => Kept::Off,
    };
    (outcome, kept)
}

/// Runs both directions until one ends: the client's side (`Ok(true)` when it withheld
/// the client's Terminate), or the upstream's, or the proxy's stop.
async fn first_to_end(
    up: impl Future<Output = std::io::Result<bool>>,
    down: impl Future<Output = std::io::Result<Option<Ended>>>,
) -> (Ended, std::io::Result<bool>) {
    tokio::select! {
        r = up => (Ended::By(Side::Client), r),
        r = down => match r {
            Ok(Some(stopped)) => (stopped, Ok(false)),
            Ok(None) => (Ended::By(Side::Upstream), Ok(false)),
            Err(e) => (Ended::By(Side::Upstream), Err(e)),
        },
    }
}

/// What reads the client's messages: for session reuse, the statement audit, both, or
/// neither (then no byte of the client's is looked at).
fn client_watch(reuse: bool, statements: Option<StatementTracker>) -> Option<ClientWatch> {
    match statements {
        Some(audit) => Some(ClientWatch::new(reuse, Some(audit))),
        None => reuse.then(ClientWatch::default),
    }
}

/// Why the upstream session of a client that left with a Terminate cannot be kept, if
/// it cannot: something still running, a transaction open, or what the client did to it.
fn why_not_kept(
    outcome: &RelayOutcome,
    idle: &IdleMarks,
    upstream_frames: &BoundaryTracker,
    watch: &ClientWatch,
) -> Option<&'static str> {
    // A client that pipelined (sent its next query before the previous answer) can leave
    // while that next query runs, after a ReadyForQuery that answered an earlier one.
    let pipelined = watch.awaiting_ready() != upstream_frames.ready_count();
    if !outcome.upstream_idle || idle.mid_write.load(Ordering::Relaxed) || pipelined {
        Some("busy")
    } else if upstream_frames.ready_status() != Some(b'I') {
        Some("transaction")
    } else {
        watch.refused()
    }
}

/// Closes both sides after a relay that `ended` so: the side still open first sees end of
/// stream; the upstream gets a Terminate first when `say_terminate`.
async fn close<C, U>(ended: Ended, client_wr: &mut C, upstream_wr: &mut U, say_terminate: bool)
where
    C: AsyncWrite + Unpin,
    U: AsyncWrite + Unpin,
{
    let close_upstream = async {
        if say_terminate {
            let _ = upstream_wr.write_all(&Terminate::WIRE).await;
        }
        let _ = upstream_wr.shutdown().await;
    };
    match ended {
        Ended::By(Side::Client) => {
            let _ = tokio::time::timeout(STOP_GRACE, close_upstream).await;
        }
        Ended::By(Side::Upstream) => {
            let _ = client_wr.shutdown().await;
        }
        Ended::Stopped { .. } => {
            let _ = tokio::time::timeout(STOP_GRACE, async {
                let _ = client_wr.shutdown().await;
                close_upstream.await;
            })
            .await;
        }
    }
}

/// What tells an idle session from one with a query running: client bytes forwarded in
/// total, and that total when the upstream last finished a message with ReadyForQuery.
#[derive(Default)]
struct IdleMarks {
    forwarded: AtomicU64,
    ready_mark: AtomicU64,
    /// A client→upstream write is under way.
    mid_write: AtomicBool,
}

impl IdleMarks {
    /// Everything the client sent before the upstream's last ReadyForQuery was forwarded.
    fn all_forwarded(&self) -> bool {
        self.forwarded.load(Ordering::Relaxed) == self.ready_mark.load(Ordering::Relaxed)
    }
}

/// Resolves when the proxy must end the session, with the reason.
fn stop_signal<'a>(
    control: &mut RelayControl,
    origin: Instant,
    last_activity: &'a AtomicU64,
) -> impl Future<Output = StopReason> + 'a {
    let mut shutdown = control.shutdown.clone();
    let idle = control.idle_timeout;
    let deadline = control.deadline;
    let revoked = control.revoked.take();
    async move {
        let revoked = async {
            match revoked {
                Some(revoked) => revoked.await,
                None => std::future::pending().await,
            }
        };
        let shutdown = async {
            match &mut shutdown {
                // `wait_for` also sees a value that was already true.
                Some(rx) => {
                    if rx.wait_for(|stop| *stop).await.is_err() {
                        // Sender gone: the proxy is going away without a drain.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let idle = async {
            let Some(idle) = idle else {
                return std::future::pending::<()>().await;
            };
            loop {
                let last = origin + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                let due = last + idle;
                if Instant::now() >= due {
                    return;
                }
                tokio::time::sleep_until(due).await;
            }
        };
        let lifetime = async {
            match deadline {
                Some((at, reason)) => {
                    tokio::time::sleep_until(at).await;
                    reason
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => StopReason::Shutdown,
            _ = idle => StopReason::Idle,
            r = lifetime => r,
            _ = revoked => StopReason::CertificateRevoked,
        }
    }
}

fn touch((origin, last): (Instant, &AtomicU64)) {
    let ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
    last.store(ms, Ordering::Relaxed);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes the ErrorResponse for `reason`; whether it was delivered to the socket.
async fn notify<W: AsyncWrite + Unpin>(to: &mut W, reason: StopReason) -> bool {
    let wire = stop_response(reason).encode();
    matches!(
        tokio::time::timeout(STOP_GRACE, async {
            to.write_all(&wire).await?;
            to.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}
