//! Phase 4: a database credential for the grant, and a verify-full login upstream with it,
//! sending the startup parameters the target kind accepts and riding out a serverless
//! workgroup that is resuming.

use super::attribution::Attribution;
use super::authorize::Authorized;
use super::trail::{Refused, Trail};
use super::{terminated, Connection};
use crate::backend::startup_params::{upstream_params, UpstreamParams};
use crate::backend::{LoginRequest, UpstreamError, UpstreamOrigin, UpstreamSession};
use crate::metrics::{labels, Metrics};
use crate::refusal::{Refusal, ShutdownStage};
use crate::reuse::ReuseKey;
use crate::runtime::TargetContext;
use proxy_auth::db_credentials::DbCredential;
use rand::Rng as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// First pause before retrying an upstream that looks like it is resuming; doubled per
/// retry up to [`RESUME_BACKOFF_MAX`].
const RESUME_BACKOFF: Duration = Duration::from_millis(250);
const RESUME_BACKOFF_MAX: Duration = Duration::from_secs(4);

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
    let target = &authorized.admitted.target;
    let client = &authorized.admitted.client;
    let mut params = upstream_params(
        target.kind,
        &client.startup.params,
        conn.listener.frontend.allow_options,
    );
    if let Some(template) = &target.application_name {
        let attribution = Attribution {
            principal: &client.principal,
            client_application: client.startup.param("application_name"),
            session_id: trail.session_id(),
        };
        params.set("application_name", attribution.render(template));
    }
    log_dropped(trail, &authorized, &params);
    let mut terminate = conn.terminate.clone();
    let mut attempts = 0;
    let result = tokio::select! {
        r = login_upstream(conn, trail.accepted, &authorized, &params, &mut attempts) => r,
        _ = terminated(&mut terminate) => Err((Refusal::ShuttingDown(ShutdownStage::Login), Vec::new())),
    };
    if attempts > 0 {
        trail.upstream_attempts(attempts);
    }
    match result {
        Ok((upstream, credential, reuse_key)) => {
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

/// One log line naming what the client sent that does not go upstream.
fn log_dropped(trail: &Trail, authorized: &Authorized, params: &UpstreamParams) {
    let client = &authorized.admitted.client;
    if client.startup.dropped_params.is_empty() && params.dropped.is_empty() {
        return;
    }
    let dropped: Vec<&str> = client
        .startup
        .dropped_params
        .iter()
        .map(String::as_str)
        .chain(params.dropped.iter().map(|(name, _)| name.as_str()))
        .collect();
    let reasons: Vec<&str> = params.dropped.iter().map(|(_, why)| *why).collect();
    info!(
        session_id = %trail.session_id(), identity = ?client.principal.short_name(),
        target = %authorized.admitted.target.name, ?dropped, ?reasons,
        "startup parameters accepted but not forwarded upstream"
    );
}

/// Obtains a credential and logs in upstream, or takes a kept session of the same
/// identity and grant (session reuse). A login refused with an authentication error after
/// a cached credential is retried once with a fresh one: the cached password may have
/// been revoked or rotated behind our back. On failure, also the AWS request ids of the
/// credential that was refused.
async fn login_upstream(
    conn: &Connection,
    accepted: Instant,
    authorized: &Authorized,
    params: &UpstreamParams,
    attempts: &mut u32,
) -> Result<(UpstreamSession, DbCredential, Option<ReuseKey>), (Refusal, Vec<String>)> {
    let grant = &authorized.grant;
    let target = &authorized.admitted.target;
    let request = grant.credential_request();
    let metrics = &conn.shared.metrics;
    let credentials = &conn.shared.credentials;
    // AWS calls are budgeted per client identity.
    let requester = authorized.admitted.client.principal.limit_key();
    // Retries for a resuming upstream stop where the client's login would time out.
    let client_deadline = accepted + conn.listener.frontend.login_timeout;
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
            .then(|| reuse_key(authorized, &credential, params));
        if let Some(key) = &reuse_key {
            if let Some(reused) = target.sessions.take(key).await {
                if reused.waited {
                    log_in_a_spare(target.clone(), key.clone(), &credential, authorized, params);
                }
                return Ok((reused.session, credential, reuse_key));
            }
        }
        let login = LoginRequest {
            user: &credential.user,
            password: &credential.password,
            database: &grant.database,
            params: &params.forwarded,
        };
        match connect_while_resuming(conn, target, &login, client_deadline, attempts).await {
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

/// Connects and logs in; while the failures look like a workgroup that is resuming and
/// the target's `resume_wait` and the client's login deadline allow, waits with backoff
/// and tries again. Counts every attempt into `attempts`.
async fn connect_while_resuming(
    conn: &Connection,
    target: &TargetContext,
    login: &LoginRequest<'_>,
    client_deadline: Instant,
    attempts: &mut u32,
) -> Result<UpstreamSession, UpstreamError> {
    let deadline = client_deadline.min(Instant::now() + target.resume_wait);
    let mut backoff = RESUME_BACKOFF;
    loop {
        *attempts += 1;
        let error = match target.warm.connect_and_login(login).await {
            Ok(session) => return Ok(session),
            Err(e) => e,
        };
        // Equal jitter: many clients of one resuming workgroup do not retry in step.
        let pause = backoff / 2 + rand::rng().random_range(Duration::ZERO..=backoff / 2);
        if !error.may_mean_resuming() || Instant::now() + pause >= deadline {
            return Err(error);
        }
        conn.shared
            .metrics
            .upstream_resume_retries
            .get_or_create(&labels(&[("target", &target.name)]))
            .inc();
        warn!(
            target = %target.name, attempt = *attempts, error = %error,
            retry_in_ms = pause.as_millis() as u64,
            "upstream refused or dropped the login; retrying (the workgroup may be resuming)"
        );
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(RESUME_BACKOFF_MAX);
    }
}

/// Everything that decides what an upstream session is: the exact certificate (or local
/// user), the database user it logged in as, the database, groups, role and the startup
/// parameters forwarded (so an `application_name` template with `{session_id}` makes
/// every session its own).
fn reuse_key(
    authorized: &Authorized,
    credential: &DbCredential,
    params: &UpstreamParams,
) -> ReuseKey {
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
        params: params.forwarded.clone(),
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
    params: &UpstreamParams,
) {
    let Some(claim) = target.sessions.claim_spare(&key) else {
        return;
    };
    let user = credential.user.clone();
    let password = credential.password.clone();
    let database = authorized.grant.database.clone();
    let params = params.forwarded.clone();
    tokio::spawn(async move {
        let _claim = claim;
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
