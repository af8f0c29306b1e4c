//! The relay against in-memory streams.

use super::framing::ClientTail;
use super::pump::read_ready;
use super::*;
use crate::net::framing::encode_into;
use crate::net::messages::{Decode, ErrorResponse};
use bytes::BytesMut;
use std::task::Poll;
use tokio::io::{AsyncReadExt, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;

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

/// Runs the relay with `control` between two in-memory pipes holding `client_buffer` and
/// `upstream_buffer` bytes; returns the client's and the upstream's ends and the relay.
fn start_relay(
    client_buffer: usize,
    upstream_buffer: usize,
    control: RelayControl,
) -> (DuplexStream, DuplexStream, JoinHandle<RelayOutcome>) {
    let (client_near, client_far) = tokio::io::duplex(client_buffer);
    let (upstream_near, upstream_far) = tokio::io::duplex(upstream_buffer);
    let task = tokio::spawn(relay(client_near, upstream_near, control));
    (client_far, upstream_far, task)
}

/// Stops the session when `shutdown` becomes `true`.
fn stopped_by(shutdown: watch::Receiver<bool>) -> RelayControl {
    RelayControl {
        shutdown: Some(shutdown),
        ..Default::default()
    }
}

#[tokio::test]
async fn relays_both_ways_and_closes_upstream_when_client_leaves() {
    let (mut client_far, mut upstream_far, task) = start_relay(1024, 1024, RelayControl::default());

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
        let (stop_tx, stop_rx) = watch::channel(false);
        let control = RelayControl {
            idle_timeout: (!stop_by_drain).then_some(Duration::from_millis(300)),
            ..stopped_by(stop_rx)
        };
        let (_client_far, mut upstream_far, task) = start_relay(64, 1 << 16, control);
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut client_far, mut upstream_far, task) =
        start_relay(1 << 20, 1 << 20, stopped_by(stop_rx));
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
    let control = RelayControl {
        idle_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let (mut client_far, _upstream_far, task) = start_relay(1024, 1024, control);
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
