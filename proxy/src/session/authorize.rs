//! Phase 3: the policy decides what the admitted client is granted.

use super::admit::Admitted;
use super::trail::{Refused, Trail};
use super::Connection;
use crate::refusal::Refusal;
use proxy_auth::policy::{Access, Grant};

/// A client with a grant: database user, database, groups and role.
pub(super) struct Authorized {
    pub admitted: Admitted,
    pub grant: Grant,
}

pub(super) fn authorize(
    conn: &Connection,
    trail: &mut Trail,
    admitted: Admitted,
) -> Result<Authorized, Refused> {
    let client = &admitted.client;
    let access = Access {
        listener: &conn.listener.name,
        target: &admitted.target.name,
    };
    let decision = conn.state.policy().authorize(
        &client.principal,
        &access,
        &client.startup.user,
        &client.startup.database,
    );
    let grant = match decision {
        Ok(grant) => grant,
        Err(denial) => {
            return Err(Refused::new(
                Refusal::Policy(denial),
                admitted.client.stream,
            ))
        }
    };
    trail.authorized(&grant, conn.state.default_role.as_ref());
    Ok(Authorized { admitted, grant })
}
