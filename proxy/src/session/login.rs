//! Phase 4: a database credential for the grant, and a verify-full login upstream with it.

use super::authorize::Authorized;
use super::trail::{Refused, Trail};
use super::{terminated, Connection};
use crate::backend::{LoginRequest, UpstreamOrigin, UpstreamSession};
use crate::metrics::Metrics;
use crate::net::set_socket_options;
use crate::refusal::{Refusal, ShutdownStage};
use proxy_auth::db_credentials::DbCredential;
use std::time::Instant;
use tracing::warn;

/// A client whose upstream session is logged in, not yet told so.
pub(super) struct LoggedIn {
    pub authorized: Authorized,
    pub upstream: UpstreamSession,
    pub credential: DbCredential,
}

pub(super) async fn login(
    conn: &Connection,
    trail: &mut Trail,
    authorized: Authorized,
) -> Result<LoggedIn, Refused> {
    let mut terminate = conn.terminate.clone();
    let result = tokio::select! {
        r = login_upstream(conn, &authorized) => r,
        _ = terminated(&mut terminate) => Err((Refusal::ShuttingDown(ShutdownStage::Login), Vec::new())),
    };
    match result {
        Ok((upstream, credential)) => {
            set_socket_options(upstream.stream.get_ref().0.get_ref(), &conn.state.limits);
            trail.logged_in(&credential, &upstream);
            Ok(LoggedIn {
                authorized,
                upstream,
                credential,
            })
        }
        Err((refusal, request_ids)) => {
            trail.aws_request_ids(&request_ids);
            Err(Refused::new(refusal, authorized.admitted.client.stream))
        }
    }
}

/// Obtains a credential and logs in upstream. A login refused with an authentication
/// error after a cached credential is retried once with a fresh one: the cached password
/// may have been revoked or rotated behind our back. On failure, also the AWS request ids
/// of the credential that was refused.
async fn login_upstream(
    conn: &Connection,
    authorized: &Authorized,
) -> Result<(UpstreamSession, DbCredential), (Refusal, Vec<String>)> {
    let grant = &authorized.grant;
    let target = &authorized.admitted.target;
    let request = grant.credential_request();
    let metrics = &conn.shared.metrics;
    let credentials = &conn.shared.credentials;
    // AWS calls are budgeted per client identity.
    let requester = authorized.admitted.client.principal.limit_key();
    let mut retried = false;
    loop {
        let fetch_started = Instant::now();
        let credential = credentials.credential(&request, &requester).await;
        let observe = |family, elapsed| Metrics::observe(family, "target", &target.name, elapsed);
        observe(&metrics.credential_fetch_seconds, fetch_started.elapsed());
        let credential = credential.map_err(|e| (Refusal::Credentials(e), Vec::new()))?;
        let login = LoginRequest {
            user: &credential.user,
            password: &credential.password,
            database: &grant.database,
            params: &authorized.admitted.client.startup.params,
        };
        match target.warm.connect_and_login(&login).await {
            Ok(session) => {
                if session.origin == UpstreamOrigin::Dialled {
                    observe(&metrics.upstream_connect_seconds, session.connect_time);
                }
                observe(&metrics.upstream_auth_seconds, session.auth_time);
                return Ok((session, credential));
            }
            Err(e) if e.is_auth_failure() && !retried => {
                warn!(
                    target = %grant.target, db_user = ?credential.user, error = ?e.to_string(),
                    "upstream refused a cached credential; retrying once with a fresh one"
                );
                credentials.invalidate(&request, &credential);
                retried = true;
            }
            Err(e) => {
                if e.is_auth_failure() {
                    // A fresh credential refused too: another one would only be refused
                    // again (the user may not exist). Let AWS rest for a while.
                    credentials.refused_again(&request, &e.to_string());
                }
                return Err((Refusal::Upstream(e), credential.aws_request_ids.clone()));
            }
        }
    }
}
