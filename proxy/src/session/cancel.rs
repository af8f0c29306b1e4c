//! A CancelRequest: forwarded to the upstream session it names (if the key is known), or
//! to the peer instance whose key it is; counted, logged and audited. The requester never gets a reply, as from PostgreSQL.

use super::trail::Trail;
use super::Connection;
use crate::audit::{ConnectionKind, Outcome};
use crate::cancel::Requester;
use crate::frontend::{CancelTarget, ClientPeer};
use crate::metrics::labels;
use tracing::info;

pub(super) async fn forward(conn: &Connection, mut trail: Trail, target: CancelTarget) {
    let shared = &conn.shared;
    let from = Requester {
        rate_limit_key: conn.peer.rate_limit_key(),
        addr: match &conn.peer {
            ClientPeer::Tcp(addr) => Some(*addr),
            ClientPeer::Unix { .. } => None,
        },
    };
    let peering = &conn.state.config().peering;
    let outcome = shared
        .cancels
        .cancel(from, target.pid, &target.key, peering)
        .await;
    shared
        .metrics
        .cancels
        .get_or_create(&labels(&[("outcome", outcome.as_str())]))
        .inc();
    info!(
        session_id = %trail.session_id(), listener = %conn.listener.name, peer = %conn.peer,
        outcome = outcome.as_str(), peer_instance = ?outcome.peer(), "cancel request"
    );
    trail.record.cancel_outcome = Some(outcome.as_str().to_string());
    trail.record.cancel_peer = outcome.peer();
    trail.finish(ConnectionKind::Cancel, Outcome::Cancel);
}
