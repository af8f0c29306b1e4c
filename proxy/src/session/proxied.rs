//! Phase 0 on a `proxy_protocol` listener: the load balancer's PROXY header, read before
//! anything else, names the client. From then on that address is the connection's peer:
//! in the audit record, the log lines, the per-address limits and the cancel rate limits.
//!
//! A connection from outside `proxy_protocol_from` is closed unread (whoever sends the
//! header chooses the address every limit keys on); a missing, malformed, oversized or late
//! header closes it too. Either way one log line and the `proxy_protocol_rejected` metric,
//! and no reply: the peer is not speaking PostgreSQL yet, and the specification says to
//! drop it.

use crate::frontend::{ClientPeer, ClientSocket};
use crate::metrics::labels;
use crate::net::proxy_header::{read_header, ProxyHeader};
use crate::runtime::{ListenerContext, Shared, State};
use proxy_config::Cidr;
use std::net::SocketAddr;
use tracing::{debug, warn};

/// Where a connection comes from once its header (if the listener wants one) is read.
pub(super) struct Arrival {
    pub peer: ClientPeer,
    /// The balancer that sent the header, when it named a client.
    pub via: Option<SocketAddr>,
}

/// The connection's client, or `None` when it was closed (logged and counted).
pub(super) async fn arrive(
    socket: &mut ClientSocket,
    peer: ClientPeer,
    listener: &ListenerContext,
    state: &State,
    shared: &Shared,
) -> Option<Arrival> {
    let (Some(trusted), ClientSocket::Tcp(tcp), ClientPeer::Tcp(balancer)) =
        (&listener.proxy_protocol_from, socket, &peer)
    else {
        return Some(Arrival { peer, via: None });
    };
    let balancer = *balancer;
    let reject = |reason: &str, error: &dyn std::fmt::Display| {
        shared
            .metrics
            .proxy_protocol_rejected
            .get_or_create(&labels(&[("listener", &listener.name), ("reason", reason)]))
            .inc();
        warn!(
            listener = %listener.name, peer = %balancer, reason, error = %error,
            "connection closed: no valid PROXY protocol header from a trusted source"
        );
        None
    };
    if !is_trusted(trusted, balancer) {
        return reject(
            "untrusted_source",
            &"the address is not in proxy_protocol_from",
        );
    }
    let limit = state
        .limits
        .handshake_timeout
        .min(listener.frontend.login_timeout);
    let header = match tokio::time::timeout(limit, read_header(tcp)).await {
        Err(_) => {
            return reject(
                "timeout",
                &format_args!("no complete header within {limit:?}"),
            )
        }
        Ok(Err(e)) => return reject(e.as_str(), &e),
        Ok(Ok(header)) => header,
    };
    match header {
        ProxyHeader::Proxied { source, .. } => Some(Arrival {
            peer: ClientPeer::Tcp(source),
            via: Some(balancer),
        }),
        ProxyHeader::Local => {
            shared
                .metrics
                .proxy_protocol_local
                .get_or_create(&labels(&[("listener", &listener.name)]))
                .inc();
            debug!(listener = %listener.name, peer = %balancer, "PROXY header without a client address (LOCAL): the balancer itself");
            Some(Arrival { peer, via: None })
        }
    }
}

fn is_trusted(trusted: &[Cidr], balancer: SocketAddr) -> bool {
    trusted.iter().any(|net| net.contains(balancer.ip()))
}
