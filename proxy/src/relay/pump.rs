//! The two directions of a relay: plain copying client→upstream, and upstream→client with
//! message boundaries tracked so the proxy can end a session between two messages.

use super::framing::{BoundaryTracker, ClientTail};
use super::statements::ClientWatch;
use super::{notify, sleep_until_opt, touch, Ended, IdleMarks, STOP_GRACE};
use crate::net::messages::ReadyForQuery;
use crate::refusal::StopReason;
use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// Buffer per direction: room for several full TLS records (16 KiB of plaintext each).
const RELAY_BUFFER: usize = 64 * 1024;

/// What the client→upstream direction looks at as it copies.
pub(super) struct ClientSide<'a> {
    pub tail: &'a mut ClientTail,
    pub frames: &'a mut BoundaryTracker,
    pub idle: &'a IdleMarks,
    /// With session reuse: the client's messages as reuse needs them.
    pub watch: Option<&'a mut ClientWatch>,
}

/// Copies `from` to `to` until end of stream, counting bytes. `Ok(true)`: the client's
/// final Terminate was withheld (see [`ClientWatch`]), and the stream is taken as ended.
pub(super) async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    count: &mut u64,
    metric: Option<&Counter>,
    activity: (Instant, &AtomicU64),
    side: ClientSide<'_>,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let ClientSide {
        tail,
        frames,
        idle,
        mut watch,
    } = side;
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            // A peer that vanishes without close_notify is an ordinary disconnect for us.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        };
        let (n, pending_err) = read_ready(from, &mut buf, n).await;
        touch(activity);
        let terminate_at = watch.as_deref_mut().and_then(|w| w.scan(&buf[..n]));
        let chunk = &buf[..terminate_at.unwrap_or(n)];
        tail.push(chunk);
        if !chunk.is_empty() {
            // A write cut short (the session ended meanwhile) leaves a partial message
            // upstream: the proxy must then not append a Terminate to it.
            idle.mid_write.store(true, Ordering::Relaxed);
            to.write_all(chunk).await?;
            to.flush().await?;
            idle.mid_write.store(false, Ordering::Relaxed);
        }
        frames.advance(chunk);
        *count += chunk.len() as u64;
        idle.forwarded.store(*count, Ordering::Relaxed);
        if let Some(m) = metric {
            m.inc_by(chunk.len() as u64);
        }
        if terminate_at.is_some() {
            return Ok(true);
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
pub(super) async fn read_ready<R: AsyncRead + Unpin>(
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
pub(super) async fn pump_to_client<R, W>(
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
