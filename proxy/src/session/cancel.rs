//! A CancelRequest: forwarded to the upstream session it names (if the key is known),
//! counted, logged and audited. The requester never gets a reply, as from PostgreSQL.

use super::trail::Trail;
use super::Connection;
use crate::audit::{ConnectionKind, Outcome};
use crate::frontend::CancelTarget;
use crate::metrics::labels;
use tracing::info;

pub(super) async fn forward(conn: &Connection, mut trail: Trail, target: CancelTarget) {
    let shared = &conn.shared;
    let outcome = shared
        .cancels
        .cancel(conn.peer.rate_limit_key(), target.pid, &target.key)
        .await;
    shared
        .metrics
        .cancels
        .get_or_create(&labels(&[("outcome", outcome.as_str())]))
        .inc();
    info!(
        session_id = %trail.session_id(), listener = %conn.listener.name, peer = %conn.peer,
        outcome = outcome.as_str(), "cancel request"
    );
    trail.record.cancel_outcome = Some(outcome.as_str().to_string());
    trail.finish(ConnectionKind::Cancel, Outcome::Cancel);
}
