//! Phase 2: an authenticated client is admitted: its route (target) by server name, and
//! the per-identity limit. (The connection limits refused it before negotiation.)

use super::trail::{Refused, Trail};
use super::Connection;
use crate::frontend::ClientSession;
use crate::refusal::{LimitExceeded, Refusal};
use crate::runtime::{IdentityGuard, TargetContext};
use std::sync::Arc;

/// A client that may use a target.
pub(super) struct Admitted {
    pub client: ClientSession,
    pub target: Arc<TargetContext>,
    /// Holds the identity's place in `max_connections_per_identity` until the session ends.
    pub _identity_slot: IdentityGuard,
}

pub(super) fn admit(
    conn: &Connection,
    trail: &mut Trail,
    client: ClientSession,
) -> Result<Admitted, Refused> {
    let route = conn.listener.route(client.server_name.as_deref()).cloned();
    if let Ok(target) = &route {
        trail.target(target);
    }
    let target = match route {
        Ok(target) => target,
        Err(refusal) => return Err(Refused::new(Refusal::ServerName(refusal), client.stream)),
    };
    // A certificate identity is its issuer and subject, whatever certificate (renewed,
    // re-issued) carries them; a local user is its name.
    let identity = client.principal.limit_key();
    let Some(identity_slot) = conn
        .shared
        .admission
        .admit_identity(&identity, &conn.state.limits)
    else {
        return Err(Refused::new(
            Refusal::Limit(LimitExceeded::Identity),
            client.stream,
        ));
    };
    Ok(Admitted {
        client,
        target,
        _identity_slot: identity_slot,
    })
}
