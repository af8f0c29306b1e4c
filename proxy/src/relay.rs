//! Relaying an established session: both directions spliced, byte for byte.
//!
//! After login the proxy inspects nothing: PostgreSQL messages pass through unchanged.
//! The session ends when either side ends, and the other side is then shut down, so a
//! client that disconnects also closes its upstream session (and stops its query).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Buffer per direction: room for several full TLS records (16 KiB of plaintext each).
const RELAY_BUFFER: usize = 64 * 1024;

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

/// How a relay ended and what it moved.
#[derive(Debug)]
pub struct RelayOutcome {
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    /// The side whose stream ended first.
    pub ended_by: Side,
    /// The I/O error that ended it, if it was not an orderly close.
    pub error: Option<std::io::Error>,
}

/// Runs the session until either side closes or fails.
pub async fn relay<C, U>(client: C, upstream: U) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream);
    let mut to_upstream = 0u64;
    let mut to_client = 0u64;

    let (ended_by, result) = {
        let up = pump(&mut client_rd, &mut upstream_wr, &mut to_upstream);
        let down = pump(&mut upstream_rd, &mut client_wr, &mut to_client);
        tokio::select! {
            r = up => (Side::Client, r),
            r = down => (Side::Upstream, r),
        }
    };
    // Close the other direction too; errors here only mean it was already gone.
    match ended_by {
        Side::Client => {
            let _ = upstream_wr.shutdown().await;
        }
        Side::Upstream => {
            let _ = client_wr.shutdown().await;
        }
    }
    RelayOutcome {
        client_to_upstream: to_upstream,
        upstream_to_client: to_client,
        ended_by,
        error: result.err(),
    }
}

/// Copies `from` to `to` until end of stream, counting bytes.
async fn pump<R, W>(from: &mut R, to: &mut W, count: &mut u64) -> std::io::Result<()>
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
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        *count += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_and_closes_upstream_when_client_leaves() {
        let (client_near, mut client_far) = tokio::io::duplex(1024);
        let (upstream_near, mut upstream_far) = tokio::io::duplex(1024);
        let task = tokio::spawn(relay(client_near, upstream_near));

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
        assert_eq!(outcome.ended_by, Side::Client);
        assert_eq!(
            (outcome.client_to_upstream, outcome.upstream_to_client),
            (14, 2)
        );
        // The upstream sees end of stream: its session ends too.
        let mut rest = Vec::new();
        upstream_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
