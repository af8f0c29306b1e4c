//! Forwarding a cancel request to the peer instance whose key it carries: a plain
//! CancelRequest to the peer's listener, as a client would send it (PgBouncer's peers do
//! the same), after a PROXY v2 header naming the original client when the peer's listener
//! expects one. The peer handles it as its own: rate limits, audit, the upstream cancel.
//!
//! Like a client's, the request travels without TLS: it carries only a one-time capability
//! to interrupt one running query, and peers talk over the network the balancer reaches
//! them on.

use crate::net::messages::{CancelRequest, Encode};
use crate::net::proxy_header::encode_v2;
use proxy_config::PeerConfig;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time allowed to resolve, connect and hand over a request. A peer that takes longer is
/// down or unreachable; the client's query runs on, as it would without peering.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends the CancelRequest `pid`/`secret` to `peer`, on behalf of `client` (`None` for a
/// Unix-socket client, which has no network address to pass on).
pub async fn send_to_peer(
    peer: &PeerConfig,
    client: Option<SocketAddr>,
    pid: i32,
    secret: &[u8],
) -> io::Result<()> {
    let send = async {
        let address = (peer.address.host.as_str(), peer.address.port);
        let mut tcp = TcpStream::connect(address).await?;
        let _ = tcp.set_nodelay(true);
        let mut request = Vec::with_capacity(64);
        if peer.proxy_protocol {
            let destination = tcp.peer_addr()?;
            // A Unix-socket client: the header names this instance's own address.
            let source = client.unwrap_or(tcp.local_addr()?);
            request.extend_from_slice(&encode_v2(source, destination));
        }
        let cancel = CancelRequest {
            pid,
            key: secret.to_vec(),
        };
        request.extend_from_slice(&cancel.encode());
        tcp.write_all(&request).await?;
        tcp.shutdown().await?;
        // The peer closes once it has read the request; any outcome of this read means
        // it is done with us.
        let mut sink = [0u8; 64];
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(PEER_TIMEOUT, send)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {PEER_TIMEOUT:?}"),
            )
        })?
}
