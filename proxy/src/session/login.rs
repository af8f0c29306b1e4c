//! Phase 4: a database credential for the grant, and a verify-full login upstream with it.

use super::authorize::Authorized;
use super::trail::{Refused, Trail};
use super::{terminated, Connection};
use crate::backend::{LoginRequest, UpstreamOrigin, UpstreamSession};
use crate::metrics::Metrics;
use crate::net::set_socket_options;
use crate::refusal::{Refusal, ShutdownStage};
use crate::reuse::ReuseKey;
use crate::runtime::TargetContext;
use proxy_auth::db_credentials::DbCredential;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

/// A client whose upstream session is logged in, not yet told so.
pub(super) struct LoggedIn {
    pub authorized: Authorized,
    pub upstream: UpstreamSession,
    pub credential: DbCredential,
    /// On a `session_reuse` target: who may be handed the session after this client.
    pub reuse_key: Option<ReuseKey>,
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
        Ok((upstream, credential, reuse_key)) => {
            set_socket_options(upstream.stream.get_ref().0.get_ref(), &conn.state.limits);
            trail.logged_in(&credential, &upstream);
            Ok(LoggedIn {
                authorized,
                upstream,
                credential,
                reuse_key,
            })
        }
        Err((refusal, request_ids)) => {
            trail.aws_request_ids(&request_ids);
            Err(Refused::new(refusal, authorized.admitted.client.stream))
        }
    }
}

/// Obtains a credential and logs in upstream, or takes a kept session of the same
/// identity and grant (session reuse). A login refused with an authentication error after
/// a cached credential is retried once with a fresh one: the cached password may have
/// been revoked or rotated behind our back. On failure, also the AWS request ids of the
/// credential that was refused.
async fn login_upstream(
    conn: &Connection,
    authorized: &Authorized,
) -> Result<(UpstreamSession, DbCredential, Option<ReuseKey>), (Refusal, Vec<String>)> {
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
        // Only after the credential: whoever may no longer get one gets no session either.
        let reuse_key = target
            .sessions
            .enabled()
            .then(|| reuse_key(authorized, &credential));
        if let Some(key) = &reuse_key {
            if let Some(reused) = target.sessions.take(key).await {
                if reused.waited {
                    log_in_a_spare(target.clone(), key.clone(), &credential, authorized);
                }
                return Ok((reused.session, credential, reuse_key));
            }
        }
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
                return Ok((session, credential, reuse_key));
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

/// Everything that decides what an upstream session is: the exact certificate (or local
/// user), the database user it logged in as, the database, groups, role and the startup
/// parameters forwarded.
fn reuse_key(authorized: &Authorized, credential: &DbCredential) -> ReuseKey {
    let client = &authorized.admitted.client;
    let principal = &client.principal;
    let grant = &authorized.grant;
    let identity = match principal.certificate() {
        Some(c) => format!("{}\n{}", principal.limit_key(), c.fingerprint_sha256),
        None => principal.limit_key(),
    };
    ReuseKey {
        identity,
        db_user: credential.user.clone(),
        database: grant.database.clone(),
        groups: grant.db_groups.clone(),
        role: grant.role_arn.as_ref().map(ToString::to_string),
        params: client.startup.params.clone(),
    }
}

/// Logs in one more session for `key` in the background and keeps it, ready: the client
/// just had to wait for the reset of the only session kept for it, so it reconnects faster
/// than a reset takes; with two sessions taking turns, the next one will not wait.
fn log_in_a_spare(
    target: Arc<TargetContext>,
    key: ReuseKey,
    credential: &DbCredential,
    authorized: &Authorized,
) {
    let user = credential.user.clone();
    let password = credential.password.clone();
    let database = authorized.grant.database.clone();
    let params = authorized.admitted.client.startup.params.clone();
    tokio::spawn(async move {
        let login = LoginRequest {
            user: &user,
            password: &password,
            database: &database,
            params: &params,
        };
        match target.warm.connect_and_login(&login).await {
            Ok(session) => {
                let _ = target.sessions.keep_fresh(key, session);
            }
            Err(e) => debug!(target = %target.name, error = %e, "no spare session for reuse"),
        }
    });
}
