//! A network link in user space: a TCP relay that delivers every byte half a round trip
//! after it arrived, in each direction. This machine has no `netem`, and a link between the
//! proxy and Redshift (Direct Connect, VPN: 10-50 ms) is what makes connection setup
//! expensive in production, where a login costs about five round trips.
//!
//! Each direction is a queue of chunks stamped with their arrival time: the reader pushes
//! what it reads at once, the writer sends each chunk when its time comes. Order is kept,
//! the delay does not depend on how many bytes are in flight, and there is no bandwidth
//! cap: the only limit is the queue ([`QUEUE_CHUNKS`] chunks of at most [`CHUNK`] bytes,
//! 64 MiB, far above what a 30 ms link carries at loopback speed), beyond which the reader
//! waits and TCP flow control pushes back on the sender, as a real link's buffers would.
//! The round-trip time can be changed while connections are open; chunks already queued
//! keep the time they were given.
//!
//! The kernel completes the TCP handshake with the relay at once, so a client's `connect`
//! costs no round trip here while on a real link it costs one. The relay charges it where
//! the client first notices: the connection's first chunk toward the server waits one
//! more round trip, so the server's first answer comes two round trips after the connect
//! began, as it would across the link (SYN, SYN-ACK, then request and answer).

use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Largest chunk read at once.
pub const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction before the reader waits.
pub const QUEUE_CHUNKS: usize = 1024;

/// A running link: connections to [`DelayLink::addr`] are relayed to the target with the
/// configured delay. Dropping it closes every connection.
pub struct DelayLink {
    addr: SocketAddr,
    one_way_micros: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLink {
    /// Listens on an ephemeral port of 127.0.0.1 and relays to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<DelayLink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let one_way_micros = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, target, one_way_micros.clone()));
        Ok(DelayLink {
            addr,
            one_way_micros,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the round-trip time: each direction delays by half of it.
    pub fn set_rtt(&self, rtt: Duration) {
        let one_way = u64::try_from(rtt.as_micros() / 2).unwrap_or(u64::MAX);
        self.one_way_micros.store(one_way, Ordering::Relaxed);
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, one_way: Arc<AtomicU64>) {
    // Owned here: aborting the loop (dropping the link) ends every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(relay(client, target, one_way.clone()));
                }
                Err(e) => {
                    eprintln!("[bench] delay link: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, one_way: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    // Both ends carry small request/response messages: Nagle would add its own delays.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = server.into_split();
    tokio::join!(
        direction(client_rd, server_wr, one_way.clone(), true),
        direction(server_rd, client_wr, one_way, false),
    );
}

/// One direction: `None` in the queue is the end of the stream, passed on as a FIN.
/// `handshake`: the first chunk also waits for the TCP handshake's round trip.
async fn direction(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    one_way: Arc<AtomicU64>,
    handshake: bool,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Bytes>)>(QUEUE_CHUNKS);
    tokio::join!(read_side(from, tx, one_way, handshake), write_side(to, rx));
}

async fn read_side(
    mut from: OwnedReadHalf,
    tx: mpsc::Sender<(Instant, Option<Bytes>)>,
    one_way: Arc<AtomicU64>,
    mut handshake: bool,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let read = from.read_buf(&mut buf).await;
        let mut delay = Duration::from_micros(one_way.load(Ordering::Relaxed));
        if std::mem::take(&mut handshake) {
            delay *= 3;
        }
        let due = Instant::now() + delay;
        let chunk = match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(buf.split().freeze()),
        };
        let end = chunk.is_none();
        // The writer is gone (its peer reset): nothing more to deliver.
        if tx.send((due, chunk)).await.is_err() || end {
            return;
        }
    }
}

async fn write_side(mut to: OwnedWriteHalf, mut rx: mpsc::Receiver<(Instant, Option<Bytes>)>) {
    while let Some((due, chunk)) = rx.recv().await {
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        match chunk {
            Some(bytes) => {
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            None => {
                let _ = to.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the link: the first round trip also pays the TCP handshake's,
    /// later ones the configured RTT; bytes arrive in order, and a close passes.
    #[tokio::test]
    async fn delays_each_direction_by_half_the_rtt_and_keeps_order() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let (mut rd, mut wr) = s.split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        });
        let link = DelayLink::start(echo_addr).await.unwrap();
        link.set_rtt(Duration::from_millis(40));
        let mut client = TcpStream::connect(link.addr()).await.unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let started = std::time::Instant::now();
        client.write_all(&payload[..10]).await.unwrap();
        let mut got = vec![0u8; 10];
        client.read_exact(&mut got).await.unwrap();
        let first = started.elapsed();
        assert!(first >= Duration::from_millis(80), "{first:?}");
        let started = std::time::Instant::now();
        client.write_all(&payload[..10]).await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        let rtt = started.elapsed();
        assert!(rtt >= Duration::from_millis(40), "{rtt:?}");
        assert!(rtt < first, "{rtt:?} after {first:?}");
        let (mut rd, mut wr) = client.into_split();
        let send = tokio::spawn({
            let payload = payload.clone();
            async move {
                wr.write_all(&payload).await.unwrap();
                wr.shutdown().await.unwrap();
            }
        });
        let mut echoed = Vec::new();
        rd.read_to_end(&mut echoed).await.unwrap();
        send.await.unwrap();
        assert!(echoed == payload, "bytes arrive whole and in order");
    }
}
