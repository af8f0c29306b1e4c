//! Forwarding a client's cancel request to the upstream over a fresh verify-full TLS
//! connection.

use super::endpoint::UpstreamEndpoint;
use super::error::{Phase, UpstreamError};
use super::login::BackendKey;
use super::transport;
use crate::net::messages::backend_key_data::valid_key_len;
use crate::net::messages::{CancelRequest, Encode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Time allowed beyond `connect_timeout` for the TLS handshake and delivering the request.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Sends a CancelRequest for `key` on a new connection: SSLRequest, `S`, TLS verify-full
/// (same rules as login), CancelRequest, then close. The server never answers; waiting for
/// its close tells us it has read the request. Bounded by `connect_timeout` + [`CANCEL_GRACE`].
pub async fn send_cancel(ep: &UpstreamEndpoint, key: &BackendKey) -> Result<(), UpstreamError> {
    if !valid_key_len(&key.key) {
        return Err(UpstreamError::protocol(
            Phase::Cancel,
            format!("cancel key of {} bytes", key.key.len()),
        ));
    }
    let limit = ep.connect_timeout + CANCEL_GRACE;
    let cancel = async {
        let tcp = transport::dial(ep).await?;
        let mut tls = transport::start_tls(ep, tcp).await?;
        let io = |e| UpstreamError::io(Phase::Cancel, e);
        tls.write_all(&CancelRequest::from(key).encode())
            .await
            .map_err(io)?;
        tls.flush().await.map_err(io)?;
        tls.shutdown().await.map_err(io)?;
        // The server closes after reading the request, with or without close_notify; any
        // outcome of this read means it is done with us.
        let mut sink = [0u8; 64];
        while let Ok(n) = tls.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, cancel)
        .await
        .map_err(|_| UpstreamError::Timeout {
            phase: Phase::Cancel,
            after: limit,
        })?
}
