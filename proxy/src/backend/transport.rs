//! TCP dial, SSLRequest and the verify-full TLS handshake, shared by login and cancel.

use super::endpoint::UpstreamEndpoint;
use super::error::{Phase, TlsFailure, UpstreamError};
use crate::net::buffered::ReadBuffered;
use crate::net::messages::startup::{SslResponse, StartupPacket};
use crate::net::messages::{Encode, ErrorResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The upstream connection once TLS is up. The read buffer under TLS saves most of the
/// `recvfrom` calls rustls would otherwise make (see [`ReadBuffered`]).
pub type UpstreamStream = TlsStream<ReadBuffered<TcpStream>>;

/// Connects to `dial_host:dial_port` within `connect_timeout`, with TCP_NODELAY on (login
/// is a ping-pong of small messages; Nagle would add round trips).
pub(crate) async fn dial(ep: &UpstreamEndpoint) -> Result<TcpStream, UpstreamError> {
    let addr = format!("{}:{}", ep.dial_host, ep.dial_port);
    let connect = TcpStream::connect((ep.dial_host.as_str(), ep.dial_port));
    let tcp = tokio::time::timeout(ep.connect_timeout, connect)
        .await
        .map_err(|_| UpstreamError::Timeout {
            phase: Phase::Connect,
            after: ep.connect_timeout,
        })?
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true)
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Before the handshake: a resuming serverless workgroup may hold it for a while.
    ep.socket_options.apply(&tcp);
    Ok(tcp)
}

/// Sends SSLRequest, requires `S` with nothing behind it, then runs the TLS handshake
/// verifying the chain and `ep.host`. There is no plaintext fallback.
pub(crate) async fn start_tls(
    ep: &UpstreamEndpoint,
    mut tcp: TcpStream,
) -> Result<UpstreamStream, UpstreamError> {
    let phase = Phase::Tls;
    tcp.write_all(&StartupPacket::SslRequest.encode())
        .await
        .map_err(|e| UpstreamError::io(phase, e))?;
    // Read exactly one byte, unbuffered, so that nothing the server sent after it can be
    // swallowed into a buffer and later mistaken for TLS-protected data.
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| UpstreamError::io(phase, e))?;
    match SslResponse::from_byte(answer[0]) {
        Some(SslResponse::Accepted) => {}
        Some(SslResponse::Refused) => return Err(UpstreamError::TlsNotOffered),
        // Not read further: the text is unauthenticated (CVE-2024-10977 class).
        None if answer[0] == ErrorResponse::TAG => return Err(UpstreamError::ServerErrorBeforeTls),
        None => {
            let other = answer[0];
            return Err(UpstreamError::protocol(
                phase,
                format!("unexpected answer 0x{other:02x} to SSLRequest"),
            ));
        }
    }
    ensure_nothing_buffered(&tcp)?;
    let connector = TlsConnector::from(ep.tls.clone());
    // Buffered only from here on: everything the server sends now is TLS.
    connector
        .connect(ep.server_name.clone(), ReadBuffered::new(tcp))
        .await
        .map_err(|source| UpstreamError::Tls {
            host: ep.host.clone(),
            failure: TlsFailure::from_io(&source),
            source,
        })
}

/// CVE-2021-23222 mirror: bytes the server sent right after `S`, before the handshake,
/// would be injected into the session as if they came through TLS. Any readable byte
/// (or an early close) means the server, or someone in the path, broke the protocol.
fn ensure_nothing_buffered(tcp: &TcpStream) -> Result<(), UpstreamError> {
    let mut probe = [0u8; 1];
    match tcp.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Ok(0) => Err(UpstreamError::Closed { phase: Phase::Tls }),
        Ok(_) => Err(UpstreamError::protocol(
            Phase::Tls,
            "upstream sent data after the SSL response, before the TLS handshake",
        )),
        Err(e) => Err(UpstreamError::io(Phase::Tls, e)),
    }
}
