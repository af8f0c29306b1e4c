//! Relaying an established session: both directions spliced, byte for byte.
//!
//! After login the proxy inspects nothing: PostgreSQL messages pass through unchanged.
//! The session ends when either side ends, and the other side is then shut down, so a
//! client that disconnects also closes its upstream session (and stops its query).
//!
//! The proxy may also end a session itself (shutdown drain, idle timeout, maximum
//! lifetime). It then tells the client why with a FATAL ErrorResponse, which must not land
//! in the middle of an upstream message. So the upstream→client direction tracks message
//! boundaries by counting header lengths ([`BoundaryTracker`]; bodies are never parsed) and
//! the error is written at the next boundary. If none comes within [`STOP_GRACE`] (a huge
//! message mid-flight), the session is closed without it.

use crate::net::messages::{Encode, ReadyForQuery, Terminate};
use crate::refusal::{stop_response, StopReason};
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Buffer per direction: room for several full TLS records (16 KiB of plaintext each).
const RELAY_BUFFER: usize = 64 * 1024;

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
}

/// Runs the session until either side closes or fails, or `control` stops it.
pub async fn relay<C, U>(client: C, upstream: U, mut control: RelayControl) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream);
    let mut to_upstream = 0u64;
    let mut to_client = 0u64;
    let mut client_tail = ClientTail::default();
    let mut client_frames = BoundaryTracker::default();
    // The login reply ended with ReadyForQuery: the session starts idle.
    let mut upstream_frames = BoundaryTracker::after(ReadyForQuery::TAG);
    let idle = IdleMarks::default();
    let origin = Instant::now();
    // Milliseconds since `origin` of the last byte in either direction.
    let last_activity = AtomicU64::new(0);

    let stop = stop_signal(&mut control, origin, &last_activity);
    let (ended, result) = {
        let up = pump(
            &mut client_rd,
            &mut upstream_wr,
            &mut to_upstream,
            control.bytes_from_client.as_ref(),
            (origin, &last_activity),
            (&mut client_tail, &mut client_frames, &idle),
        );
        let down = pump_to_client(
            &mut upstream_rd,
            &mut client_wr,
            &mut to_client,
            control.bytes_to_client.as_ref(),
            (origin, &last_activity),
            (&mut upstream_frames, &idle),
            stop,
        );
        tokio::select! {
            r = up => (Ended::By(Side::Client), r),
            r = down => match r {
                Ok(Some(stopped)) => (stopped, Ok(())),
                Ok(None) => (Ended::By(Side::Upstream), Ok(())),
                Err(e) => (Ended::By(Side::Upstream), Err(e)),
            },
        }
    };
    // After the client's Terminate the upstream closes too, and may be seen first: the
    // client still ended the session.
    let ended = match ended {
        Ended::By(Side::Upstream) if result.is_ok() && client_tail.is_terminate() => {
            Ended::By(Side::Client)
        }
        other => other,
    };
    // Close the other direction too; errors here only mean it was already gone. A session
    // the client did not end with its own Terminate gets one from the proxy (when the
    // client's last message was whole), so the upstream ends it as a clean logout.
    let say_terminate = !client_tail.is_terminate()
        && client_frames.at_boundary()
        && !idle.mid_write.load(Ordering::Relaxed);
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
    RelayOutcome {
        client_to_upstream: to_upstream,
        upstream_to_client: to_client,
        ended,
        error: result.err(),
        client_terminated: client_tail.is_terminate(),
        upstream_idle: upstream_frames.at_boundary()
            && upstream_frames.last_message() == Some(ReadyForQuery::TAG)
            && idle.forwarded.load(Ordering::Relaxed) == idle.ready_mark.load(Ordering::Relaxed),
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

/// The last five bytes the client sent, to tell a Terminate (`X`, length 4) from a client
/// that vanished, whose query may still be running upstream. Looking at the tail only
/// costs nothing per message; a Terminate is always the last thing a client sends.
#[derive(Default)]
struct ClientTail {
    bytes: [u8; 5],
    seen: usize,
}

impl ClientTail {
    fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= 5 {
            self.bytes.copy_from_slice(&chunk[chunk.len() - 5..]);
        } else {
            self.bytes.rotate_left(chunk.len());
            self.bytes[5 - chunk.len()..].copy_from_slice(chunk);
        }
        self.seen = self.seen.saturating_add(chunk.len());
    }

    fn is_terminate(&self) -> bool {
        self.seen >= 5 && self.bytes == Terminate::WIRE
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

/// Copies `from` to `to` until end of stream, counting bytes.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    count: &mut u64,
    metric: Option<&Counter>,
    activity: (Instant, &AtomicU64),
    (tail, frames, idle): (&mut ClientTail, &mut BoundaryTracker, &IdleMarks),
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // A peer that vanishes without close_notify is an ordinary disconnect for us.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (n, pending_err) = read_ready(from, &mut buf, n).await;
        touch(activity);
        tail.push(&buf[..n]);
        // A write cut short (the session ended meanwhile) leaves a partial message
        // upstream: the proxy must then not append a Terminate to it.
        idle.mid_write.store(true, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        idle.mid_write.store(false, Ordering::Relaxed);
        frames.advance(&buf[..n]);
        *count += n as u64;
        idle.forwarded.store(*count, Ordering::Relaxed);
        if let Some(m) = metric {
            m.inc_by(n as u64);
        }
        if let Some(e) = pending_err {
            return Err(e);
        }
    }
}

/// After a read of `n` bytes into `buf`, adds whatever `from` can deliver without waiting
/// (more TLS records already received), so that a burst that arrived while the proxy was
/// busy leaves in one write: fewer `writev` calls and wake-ups exactly when the machine is
/// loaded. Never waits. An error met here is returned alongside the bytes read before it,
/// which are forwarded first; an end of stream is left for the next ordinary read.
async fn read_ready<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut [u8],
    mut n: usize,
) -> (usize, Option<std::io::Error>) {
    while n < buf.len() {
        let mut more = ReadBuf::new(&mut buf[n..]);
        let polled =
            std::future::poll_fn(|cx| match Pin::new(&mut *from).poll_read(cx, &mut more) {
                Poll::Pending => Poll::Ready(None),
                Poll::Ready(r) => Poll::Ready(Some(r)),
            })
            .await;
        match polled {
            Some(Ok(())) if !more.filled().is_empty() => n += more.filled().len(),
            None | Some(Ok(())) => break,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Some(Err(e)) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// The upstream→client direction: [`pump`] plus boundary tracking, so that when `stop`
/// fires the client gets a FATAL ErrorResponse between two messages. `Ok(None)`: the
/// upstream ended the stream.
async fn pump_to_client<R, W>(
    from: &mut R,
    to: &mut W,
    count: &mut u64,
    metric: Option<&Counter>,
    activity: (Instant, &AtomicU64),
    (tracker, idle): (&mut BoundaryTracker, &IdleMarks),
    stop: impl Future<Output = StopReason>,
) -> std::io::Result<Option<Ended>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUFFER];
    let mut stopping: Option<(StopReason, Instant)> = None;
    tokio::pin!(stop);
    loop {
        let read = tokio::select! {
            biased;
            reason = &mut stop, if stopping.is_none() => {
                if tracker.at_boundary() {
                    let notified = notify(to, reason).await;
                    return Ok(Some(Ended::Stopped { reason, notified }));
                }
                stopping = Some((reason, Instant::now() + STOP_GRACE));
                continue;
            }
            _ = sleep_until_opt(stopping.map(|(_, at)| at)), if stopping.is_some() => {
                let reason = stopping.map_or(StopReason::Shutdown, |(r, _)| r);
                return Ok(Some(Ended::Stopped { reason, notified: false }));
            }
            r = from.read(&mut buf) => r,
        };
        let n = match read {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        let (n, pending_err) = read_ready(from, &mut buf, n).await;
        touch(activity);
        let chunk = &buf[..n];
        // While stopping, forward only up to the first boundary, then say why and end.
        let forward = match stopping {
            Some(_) => tracker.first_boundary_in(chunk).unwrap_or(n),
            None => {
                tracker.advance(chunk);
                n
            }
        };
        // A client that stops reading blocks this write for as long as it likes; the
        // session must still end on idle timeout, lifetime, certificate expiry and drain.
        let grace = stopping.map(|(_, at)| at);
        let written = {
            let write = async {
                to.write_all(&chunk[..forward]).await?;
                to.flush().await
            };
            tokio::pin!(write);
            tokio::select! {
                biased;
                r = &mut write => Some(r),
                reason = &mut stop, if stopping.is_none() => {
                    stopping = Some((reason, Instant::now() + STOP_GRACE));
                    // A slow client may still take it within the grace.
                    tokio::time::timeout(STOP_GRACE, &mut write).await.ok()
                }
                _ = sleep_until_opt(grace), if grace.is_some() => None,
            }
        };
        match written {
            Some(result) => result?,
            None => {
                let reason = stopping.map_or(StopReason::Shutdown, |(r, _)| r);
                return Ok(Some(Ended::Stopped {
                    reason,
                    notified: false,
                }));
            }
        }
        *count += forward as u64;
        if let Some(m) = metric {
            m.inc_by(forward as u64);
        }
        if tracker.at_boundary() && tracker.last_message() == Some(ReadyForQuery::TAG) {
            idle.ready_mark
                .store(idle.forwarded.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let Some((reason, _)) = stopping {
            if forward < n || tracker.at_boundary() {
                let notified = notify(to, reason).await;
                return Ok(Some(Ended::Stopped { reason, notified }));
            }
        }
        if let Some(e) = pending_err {
            return Err(e);
        }
    }
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

/// Follows backend message framing (1 tag byte, 4 length bytes counting themselves, body)
/// without looking at bodies, to know where messages start.
#[derive(Debug, Default, Clone)]
pub struct BoundaryTracker {
    /// Header bytes of the next message seen so far (0..=5).
    header_len: usize,
    header: [u8; 5],
    /// Body bytes of the current message still to come.
    body_left: u64,
    /// A length below 4 was seen: framing is lost and no boundary is ever reported again.
    lost: bool,
    /// The type of the last message whose header was read.
    last_tag: Option<u8>,
}

impl BoundaryTracker {
    /// A tracker whose stream so far ended with a whole message of type `tag`.
    pub fn after(tag: u8) -> Self {
        BoundaryTracker {
            last_tag: Some(tag),
            ..BoundaryTracker::default()
        }
    }

    /// The type of the last message whose header was seen (the message may not be whole:
    /// see [`at_boundary`](Self::at_boundary)).
    pub fn last_message(&self) -> Option<u8> {
        self.last_tag
    }

    /// Whether the bytes seen so far end exactly at a message boundary.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.header_len == 0 && self.body_left == 0
    }

    /// Consumes `chunk`.
    pub fn advance(&mut self, chunk: &[u8]) {
        let _ = self.consume(chunk, false);
    }

    /// Consumes `chunk` up to the first message boundary after its start and returns that
    /// offset (`Some(0)` when already at one); consumes all of it and returns `None` when
    /// it holds no boundary.
    pub fn first_boundary_in(&mut self, chunk: &[u8]) -> Option<usize> {
        if self.at_boundary() {
            return Some(0);
        }
        self.consume(chunk, true)
    }

    fn consume(&mut self, chunk: &[u8], stop_at_boundary: bool) -> Option<usize> {
        let mut pos = 0;
        while pos < chunk.len() && !self.lost {
            if self.body_left > 0 {
                let take = self.body_left.min((chunk.len() - pos) as u64);
                self.body_left -= take;
                pos += take as usize;
            } else {
                let take = (5 - self.header_len).min(chunk.len() - pos);
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&chunk[pos..pos + take]);
                self.header_len += take;
                pos += take;
                if self.header_len == 5 {
                    let len = i32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.header_len = 0;
                    self.last_tag = Some(self.header[0]);
                    match u64::try_from(len) {
                        Ok(len) if len >= 4 => self.body_left = len - 4,
                        _ => self.lost = true,
                    }
                }
            }
            if stop_at_boundary && self.at_boundary() {
                return Some(pos);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::framing::encode_into;
    use crate::net::messages::{Decode, ErrorResponse};
    use bytes::BytesMut;

    /// Hands out prepared chunks (or errors), then is not ready.
    struct Chunks(std::collections::VecDeque<std::io::Result<&'static [u8]>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some(Ok(chunk)) => {
                    let (now, later) = chunk.split_at(chunk.len().min(buf.remaining()));
                    buf.put_slice(now);
                    if !later.is_empty() {
                        self.0.push_front(Ok(later));
                    }
                    Poll::Ready(Ok(()))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn what_is_already_readable_joins_the_same_write() {
        let mut from = Chunks(vec![Ok(&b"first"[..]), Ok(b"second"), Ok(b"third")].into());
        let mut buf = [0u8; 64];
        let n = from.read(&mut buf).await.unwrap();
        let (n, err) = read_ready(&mut from, &mut buf, n).await;
        assert_eq!(&buf[..n], b"firstsecondthird");
        assert!(err.is_none());

        // Never more than the buffer holds; the rest stays for the next read.
        let mut from = Chunks(vec![Ok(&b"12345"[..]), Ok(b"6789")].into());
        let mut small = [0u8; 7];
        let n = from.read(&mut small).await.unwrap();
        let (n, _) = read_ready(&mut from, &mut small, n).await;
        assert_eq!(&small[..n], b"1234567");
        assert_eq!(from.read(&mut small).await.unwrap(), 2);

        // An error comes back with the bytes before it, to be forwarded first.
        let broken = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let mut from = Chunks(vec![Ok(&b"last words"[..]), Err(broken)].into());
        let (n, err) = read_ready(&mut from, &mut buf, 0).await;
        assert_eq!(&buf[..n], b"last words");
        assert_eq!(err.unwrap().kind(), std::io::ErrorKind::ConnectionReset);

        // End of stream is left for the next ordinary read.
        let mut from = Chunks(vec![Ok(&b"bye"[..]), Ok(b"")].into());
        let (n, err) = read_ready(&mut from, &mut buf, 0).await;
        assert_eq!((&buf[..n], err.is_none()), (&b"bye"[..], true));
    }

    #[tokio::test]
    async fn relays_both_ways_and_closes_upstream_when_client_leaves() {
        let (client_near, mut client_far) = tokio::io::duplex(1024);
        let (upstream_near, mut upstream_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client_near, upstream_near, RelayControl::default()));

        client_far.write_all(b"hello upstream").await.unwrap();
        let mut got = [0u8; 14];
        upstream_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello upstream");

        upstream_far.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        client_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");

        drop(client_far);
        let outcome = task.await.unwrap();
        assert_eq!(outcome.ended, Ended::By(Side::Client));
        assert_eq!(
            (outcome.client_to_upstream, outcome.upstream_to_client),
            (14, 2)
        );
        // The upstream sees end of stream: its session ends too.
        let mut rest = Vec::new();
        upstream_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    /// A client that stops reading while the upstream keeps sending fills the socket
    /// buffers and blocks the proxy's write: the session must still end.
    #[tokio::test]
    async fn a_client_that_stops_reading_still_ends_on_idle_timeout_and_drain() {
        for stop_by_drain in [false, true] {
            let (client_near, _client_far) = tokio::io::duplex(64);
            let (upstream_near, mut upstream_far) = tokio::io::duplex(1 << 16);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(relay(
                client_near,
                upstream_near,
                RelayControl {
                    shutdown: Some(stop_rx),
                    idle_timeout: (!stop_by_drain).then_some(Duration::from_millis(300)),
                    ..Default::default()
                },
            ));
            // More than the client side's buffer, in whole messages; nobody reads it.
            upstream_far.write_all(&messages(20, 100)).await.unwrap();
            if stop_by_drain {
                tokio::time::sleep(Duration::from_millis(300)).await;
                stop_tx.send(true).unwrap();
            }
            // The stop, then at most the grace for the blocked write.
            let outcome = tokio::time::timeout(STOP_GRACE * 3, task)
                .await
                .expect("the relay ended")
                .unwrap();
            let reason = if stop_by_drain {
                StopReason::Shutdown
            } else {
                StopReason::Idle
            };
            assert_eq!(
                outcome.ended,
                Ended::Stopped {
                    reason,
                    notified: false
                }
            );
        }
    }

    fn messages(n: usize, body: usize) -> BytesMut {
        let mut out = BytesMut::new();
        for _ in 0..n {
            encode_into(&mut out, b'D', &vec![7u8; body]);
        }
        out
    }

    #[test]
    fn the_tracker_finds_boundaries_across_any_split() {
        let wire = messages(3, 10); // 3 x 15 bytes
        for split in 0..wire.len() {
            let mut t = BoundaryTracker::default();
            t.advance(&wire[..split]);
            assert_eq!(t.at_boundary(), split % 15 == 0, "split {split}");
            let next = t.first_boundary_in(&wire[split..]);
            let expected = if split % 15 == 0 { 0 } else { 15 - split % 15 };
            assert_eq!(next, Some(expected), "split {split}");
        }
        let mut t = BoundaryTracker::default();
        t.advance(b"D\0\0\0\x02");
        assert!(!t.at_boundary(), "a length below 4 loses framing for good");
        assert_eq!(t.first_boundary_in(&messages(1, 1)), None);
    }

    #[tokio::test]
    async fn a_stop_lands_between_messages_not_inside_one() {
        let (client_near, mut client_far) = tokio::io::duplex(1 << 20);
        let (upstream_near, mut upstream_far) = tokio::io::duplex(1 << 20);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(relay(
            client_near,
            upstream_near,
            RelayControl {
                shutdown: Some(stop_rx),
                ..Default::default()
            },
        ));
        // Half a message, then the stop, then the rest and more messages.
        let wire = messages(4, 100);
        upstream_far.write_all(&wire[..50]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        upstream_far.write_all(&wire[50..]).await.unwrap();
        let outcome = task.await.unwrap();
        assert_eq!(
            outcome.ended,
            Ended::Stopped {
                reason: StopReason::Shutdown,
                notified: true
            }
        );
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        // Exactly the first message, then the ErrorResponse.
        assert_eq!(&got[..105], &wire[..105]);
        let error = &got[105..];
        assert_eq!(error[0], b'E');
        let parsed = ErrorResponse::decode(&error[5..]).unwrap();
        assert_eq!(parsed.code, "57P01");
        assert_eq!(outcome.upstream_to_client, 105);
    }

    #[tokio::test]
    async fn an_idle_session_is_ended_with_57p05() {
        let (client_near, mut client_far) = tokio::io::duplex(1024);
        let (upstream_near, _upstream_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(
            client_near,
            upstream_near,
            RelayControl {
                idle_timeout: Some(Duration::from_millis(200)),
                ..Default::default()
            },
        ));
        let outcome = task.await.unwrap();
        assert!(matches!(
            outcome.ended,
            Ended::Stopped {
                reason: StopReason::Idle,
                notified: true
            }
        ));
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(ErrorResponse::decode(&got[5..]).unwrap().code, "57P05");
    }
}

#[cfg(test)]
mod client_tail_tests {
    use super::ClientTail;

    #[test]
    fn terminate_is_recognised_across_chunk_boundaries() {
        let mut t = ClientTail::default();
        t.push(b"Q\0\0\0\x0dselect 1\0");
        assert!(!t.is_terminate());
        t.push(b"X\0\0");
        t.push(b"\0\x04");
        assert!(t.is_terminate());
        t.push(b"Q");
        assert!(
            !t.is_terminate(),
            "anything after Terminate is not a goodbye"
        );
        let mut short = ClientTail::default();
        short.push(b"\0\x04");
        assert!(!short.is_terminate());
    }
}
