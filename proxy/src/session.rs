//! One client connection from accept to close: limits, negotiation, policy, credentials,
//! upstream login, and the relay, with one audit record and its metrics at the end.

use crate::audit::{
    new_session_id, rfc3339, AuditRecord, CertificateRecord, ConnectionKind, Outcome, Refusal,
    RefusalReason, TlsRecord,
};
use crate::backend::{self, LoginRequest, UpstreamError, UpstreamSession};
use crate::cancel::ProxyKey;
use crate::frontend::password::PasswordAuthError;
use crate::frontend::{
    negotiate_gated, ClientPeer, ClientSession, ClientSocket, FrontendErrorKind, Negotiated,
};
use crate::metrics::{labels, Metrics};
use crate::net::framing::encode_into;
use crate::net::messages::ErrorResponse;
use crate::relay::{relay, Ended, RelayControl, Side, StopReason};
use crate::server::{set_socket_options, ListenerContext, Shared, State, TargetContext};
use bytes::{BufMut, BytesMut};
use prometheus_client::metrics::gauge::Gauge;
use proxy_auth::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use proxy_auth::policy::Grant;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tracing::{info, warn};

/// Decrements a gauge when dropped, so cancelled futures cannot leak a count.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(g: Gauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The audit record of one connection under construction, and where it goes when done.
struct Trail<'a> {
    record: AuditRecord,
    accepted: Instant,
    shared: &'a Shared,
}

impl Trail<'_> {
    fn finish(mut self, outcome: Outcome) {
        self.record.outcome = outcome;
        self.record.time = rfc3339(SystemTime::now());
        self.record.duration_ms = millis(self.accepted.elapsed());
        self.shared.audit.record(&self.record);
    }

    /// Records a refusal: audit, metrics and one operator log line.
    fn refuse(mut self, reason: RefusalReason, sqlstate: Option<&str>, detail: String) {
        self.shared
            .metrics
            .refused(&self.record.listener, reason.as_str());
        info!(
            session_id = %self.record.session_id, listener = %self.record.listener,
            peer = %self.record.client_addr, server_name = ?self.record.server_name,
            target = ?self.record.target, reason = reason.as_str(), sqlstate = ?sqlstate,
            detail = %detail, outcome = "refused",
            "connection refused"
        );
        self.record.refusal = Some(Refusal {
            reason,
            sqlstate: sqlstate.map(str::to_string),
            detail,
        });
        self.finish(Outcome::Refused);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves once the proxy must end every connection (drain timeout expired).
async fn terminated(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|t| *t).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn refusal_reason(kind: &FrontendErrorKind) -> RefusalReason {
    use FrontendErrorKind as K;
    #[allow(unreachable_patterns)]
    match kind {
        K::Disconnected | K::Io(_) => RefusalReason::ClientDisconnected,
        K::LoginTimeout => RefusalReason::LoginTimeout,
        K::TlsRequired => RefusalReason::TlsRequired,
        K::TlsHandshake(_) => RefusalReason::TlsHandshake,
        K::ClientCert(_) | K::Identity(_) => RefusalReason::ClientCertificate,
        K::PlaintextNotAllowed => RefusalReason::TlsRequired,
        K::Password { error, .. } if error.is_authentication_failure() => {
            RefusalReason::PasswordAuthentication
        }
        K::Password { error, .. } => match error {
            PasswordAuthError::Disconnected | PasswordAuthError::Io(_) => {
                RefusalReason::ClientDisconnected
            }
            PasswordAuthError::Timeout => RefusalReason::LoginTimeout,
            _ => RefusalReason::Protocol,
        },
        K::Refused(_) => RefusalReason::StartupParameters,
        K::Startup(_)
        | K::PipelinedAfterSslRequest
        | K::UnexpectedNegotiation(_)
        | K::DirectTlsWithoutAlpn => RefusalReason::Protocol,
        // Kinds added later default to the protocol class until mapped.
        _ => RefusalReason::Protocol,
    }
}

/// Serves one accepted connection (TCP or Unix socket) to completion. Never panics on
/// client input; every refusal is an ErrorResponse to the client (where one can be sent),
/// one log line for the operator, one audit record and a metric.
pub async fn serve_connection(
    socket: ClientSocket,
    peer: ClientPeer,
    listener_name: String,
    state: Arc<State>,
    shared: Arc<Shared>,
) {
    let accepted = Instant::now();
    if let ClientSocket::Tcp(tcp) = &socket {
        let _ = tcp.set_nodelay(true);
    }
    let Some(listener) = state.listeners.get(&listener_name).cloned() else {
        // The listener set never changes while running (reloads that change it are
        // refused), so every accepted connection finds its listener.
        return;
    };
    let (_connection, over_limit) = shared.admit(&listener, &state.limits);
    let mut trail = Trail {
        record: AuditRecord::new(new_session_id(), &listener.name, peer.to_string()),
        accepted,
        shared: &shared,
    };
    trail.record.client_uid = peer.uid();
    trail.record.client_pid = peer.pid();
    trail.record.auth_method = Some(listener.frontend.auth.as_str().to_string());
    let mut terminate = shared.terminate_signal();

    // Handshakes cost CPU: `negotiate_gated` runs the TLS handshake holding one of a
    // bounded number of slots, taken only once the client's request has arrived.
    let negotiated = {
        let _active = GaugeGuard::new(shared.metrics.handshakes_active.clone());
        tokio::select! {
            r = negotiate_gated(socket, &listener.frontend, Some(&state.handshakes)) => Some(r),
            _ = terminated(&mut terminate) => None,
        }
    };

    match negotiated {
        None => trail.refuse(
            RefusalReason::ShuttingDown,
            None,
            "closed during negotiation by shutdown".into(),
        ),
        Some(Err(e)) => {
            let reason = refusal_reason(&e.kind);
            let mut trail = trail;
            // Who tried, even when their certificate was the reason for the refusal.
            if let Some(refused) = &e.peer {
                trail.record.client_certificate =
                    refused.certificate.as_ref().map(CertificateRecord::from);
                trail.record.client_tls = Some(TlsRecord {
                    version: refused.tls_version.clone(),
                    cipher: refused.tls_cipher.clone(),
                });
                trail.record.server_name = refused.server_name.clone();
            }
            // The startup user a password login was attempted for (never the password).
            if let FrontendErrorKind::Password { user, .. } = &e.kind {
                trail.record.requested_user = Some(user.clone());
            }
            trail.refuse(reason, e.sqlstate(), e.to_string());
        }
        Some(Ok(Negotiated::Cancel(target))) => {
            let outcome = shared
                .cancels
                .cancel(peer.rate_limit_key(), target.pid, &target.key)
                .await;
            shared
                .metrics
                .cancels
                .get_or_create(&labels(&[("outcome", outcome.as_str())]))
                .inc();
            info!(
                session_id = %trail.record.session_id, listener = %listener.name, peer = %peer,
                outcome = outcome.as_str(), "cancel request"
            );
            let mut trail = trail;
            trail.record.kind = ConnectionKind::Cancel;
            trail.record.cancel_outcome = Some(outcome.as_str().to_string());
            trail.finish(Outcome::Cancel);
        }
        Some(Ok(Negotiated::Session(client))) => {
            Metrics::observe(
                &shared.metrics.client_handshake_seconds,
                "listener",
                &listener.name,
                accepted.elapsed(),
            );
            let mut trail = trail;
            let c = &client;
            trail.record.client_certificate = c.identity().map(CertificateRecord::from);
            trail.record.local_user = c.principal.local_user().map(|u| u.name.clone());
            trail.record.client_tls = c.tls.as_ref().map(|t| TlsRecord {
                version: t.version.clone(),
                cipher: t.cipher.clone(),
            });
            trail.record.requested_user = Some(c.startup.user.clone());
            trail.record.requested_database = Some(c.startup.database.clone());
            trail.record.server_name = c.server_name.clone();
            let route = listener.route(c.server_name.as_deref()).cloned();
            trail.record.target = route.as_ref().ok().map(|t| t.name.clone());
            if let Some(reason) = over_limit {
                let mut client = *client;
                let response = ErrorResponse::fatal("53300", "sorry, too many clients already");
                send_and_close(&mut client, &response).await;
                trail.refuse(
                    reason,
                    Some("53300"),
                    format!("connection limit reached ({})", reason.as_str()),
                );
                return;
            }
            let target = match route {
                Ok(target) => target,
                Err(refusal) => {
                    let mut client = *client;
                    let response = ErrorResponse::fatal(refusal.sqlstate(), refusal.to_string())
                        .with_hint(refusal.hint());
                    send_and_close(&mut client, &response).await;
                    trail.refuse(
                        RefusalReason::ServerName,
                        Some(refusal.sqlstate()),
                        refusal.to_string(),
                    );
                    return;
                }
            };
            run_session(
                *client, &listener, &target, &state, &shared, trail, terminate,
            )
            .await;
        }
    }
}

/// Why a login failed: what the client is told, and what the operator reads.
struct LoginFailure {
    reason: RefusalReason,
    response: ErrorResponse,
    log: String,
}

impl LoginFailure {
    fn from_credential(e: &CredentialError) -> Self {
        let message = match e {
            CredentialError::Unavailable(_) => {
                "could not obtain database credentials: the AWS credential service is unavailable"
            }
            _ => "could not obtain database credentials for this login",
        };
        LoginFailure {
            reason: RefusalReason::Credentials,
            response: ErrorResponse::fatal(e.sqlstate(), message),
            log: e.to_string(),
        }
    }

    fn from_upstream(e: &UpstreamError) -> Self {
        LoginFailure {
            reason: RefusalReason::Upstream,
            response: ErrorResponse::fatal(e.sqlstate(), e.client_message()),
            log: e.to_string(),
        }
    }
}

async fn run_session(
    mut client: ClientSession,
    listener: &ListenerContext,
    target: &Arc<TargetContext>,
    state: &State,
    shared: &Arc<Shared>,
    mut trail: Trail<'_>,
    mut terminate: watch::Receiver<bool>,
) {
    let principal = client.principal.clone();
    let who = principal.short_name().to_string();
    let session_id = trail.record.session_id.clone();

    // Per-identity limit: a certificate identity is its issuer and subject, whatever
    // certificate (renewed, re-issued) carries them; a local user is its name.
    let identity_key = principal.limit_key();
    let Some(_identity_slot) = shared.admit_identity(&identity_key, &state.limits) else {
        let response =
            ErrorResponse::fatal("53300", "too many connections for this client identity");
        send_and_close(&mut client, &response).await;
        trail.refuse(
            RefusalReason::MaxConnectionsPerIdentity,
            Some("53300"),
            format!("identity {who} is at max_connections_per_identity"),
        );
        return;
    };

    let grant = match state.policy().authorize(
        &principal,
        &target.name,
        &client.startup.user,
        &client.startup.database,
    ) {
        Ok(grant) => grant,
        Err(denial) => {
            shared.metrics.login(&target.name, "denied");
            let response = ErrorResponse::fatal(denial.sqlstate(), denial.client_message());
            send_and_close(&mut client, &response).await;
            trail.refuse(
                RefusalReason::Policy,
                Some(denial.sqlstate()),
                denial.log_detail().to_string(),
            );
            return;
        }
    };
    trail.record.rule = Some(grant.rule.clone());
    trail.record.db_user = Some(grant.db_user.clone());
    trail.record.database = Some(grant.database.clone());
    trail.record.groups = grant.db_groups.clone();
    trail.record.iam_role = grant
        .role_arn
        .clone()
        .or_else(|| state.default_role.clone());
    if !client.startup.dropped_params.is_empty() {
        info!(
            session_id = %session_id, identity = %who, dropped = ?client.startup.dropped_params,
            "startup parameters accepted but not forwarded upstream"
        );
    }

    let login = tokio::select! {
        r = login_upstream(&client, &grant, target, shared) => Some(r),
        _ = terminated(&mut terminate) => None,
    };
    let (upstream, credential) = match login {
        None => {
            let response = crate::relay::StopReason::Shutdown.error_response();
            send_and_close(&mut client, &response).await;
            trail.refuse(
                RefusalReason::ShuttingDown,
                Some("57P01"),
                "login interrupted by shutdown".into(),
            );
            return;
        }
        Some(Ok(ok)) => ok,
        Some(Err((failure, request_ids))) => {
            let outcome = match failure.reason {
                RefusalReason::Credentials => "credentials_failed",
                _ => "upstream_failed",
            };
            shared.metrics.login(&target.name, outcome);
            trail.record.aws_request_ids = request_ids;
            send_and_close(&mut client, &failure.response).await;
            let code = failure.response.code.clone();
            trail.refuse(failure.reason, Some(&code), failure.log);
            return;
        }
    };
    set_socket_options(upstream.stream.get_ref().0.get_ref(), &state.limits);

    let UpstreamSession {
        stream: upstream_stream,
        backend_key,
        after_auth,
        tls_version: upstream_tls,
        tls_cipher: upstream_cipher,
        ..
    } = upstream;
    trail.record.db_user = Some(credential.user.clone());
    trail.record.aws_request_ids = credential.aws_request_ids.clone();
    trail.record.upstream_tls = Some(TlsRecord {
        version: upstream_tls.clone(),
        cipher: upstream_cipher,
    });
    let upstream_key = backend_key.clone();
    let (proxy_key, _registration) = shared
        .cancels
        .register(target.endpoint.clone(), backend_key);
    let Some(greeting) = login_reply(&after_auth, proxy_key) else {
        shared.metrics.login(&target.name, "upstream_failed");
        let response = ErrorResponse::fatal("08P01", "upstream sent an invalid login reply");
        send_and_close(&mut client, &response).await;
        trail.refuse(
            RefusalReason::Upstream,
            Some("08P01"),
            "upstream login reply did not end with ReadyForQuery".into(),
        );
        return;
    };
    // One write for the whole login reply: some drivers mis-handle fragmented replies.
    if let Err(e) = async {
        client.stream.write_all(&greeting).await?;
        client.stream.flush().await
    }
    .await
    {
        trail.refuse(
            RefusalReason::ClientDisconnected,
            None,
            format!("client left during login: {e}"),
        );
        return;
    }
    shared.metrics.login(&target.name, "success");

    info!(
        session_id = %session_id, listener = %listener.name, peer = %trail.record.client_addr,
        identity = %who, auth_method = principal.auth_method(),
        fingerprint = ?principal.certificate().map(|c| &c.fingerprint_sha256), rule = %grant.rule,
        server_name = ?client.server_name, target = %target.name, db_user = %credential.user,
        database = %grant.database,
        groups = ?grant.db_groups, aws_request_ids = ?credential.aws_request_ids,
        client_tls = %client.tls.as_ref().map_or("none", |t| t.version.as_str()),
        upstream_tls = %upstream_tls,
        login_ms = millis(trail.accepted.elapsed()), outcome = "open",
        "session opened"
    );

    let _active = GaugeGuard::new(
        shared
            .metrics
            .sessions_active
            .get_or_create(&labels(&[
                ("listener", &listener.name),
                ("target", &target.name),
            ]))
            .clone(),
    );
    let control = RelayControl {
        shutdown: Some(terminate),
        idle_timeout: state.limits.idle_timeout,
        deadline: session_deadline(
            &state.limits,
            principal.certificate().map(|c| c.not_after_unix),
        ),
        bytes_from_client: Some(shared.metrics.bytes_from_clients.clone()),
        bytes_to_client: Some(shared.metrics.bytes_to_clients.clone()),
    };
    let outcome = relay(client.stream, upstream_stream, control).await;
    if outcome.ended == Ended::By(Side::Client) && !outcome.client_terminated {
        // The client vanished without Terminate, perhaps mid-query. Closing our upstream
        // connection is not enough: the server notices only when it next reads or writes,
        // so a long query would run on. Cancel it, as the client's own Ctrl-C would.
        if let Some(key) = upstream_key {
            let endpoint = target.endpoint.clone();
            let session_id = session_id.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::backend::send_cancel(&endpoint, &key).await {
                    warn!(%session_id, error = %e, "could not cancel the upstream query of a vanished client");
                }
            });
        }
    }
    let close_reason = match (&outcome.ended, &outcome.error) {
        (Ended::Stopped { reason, .. }, _) => reason.as_str(),
        (Ended::By(Side::Client), None) => "client_closed",
        (Ended::By(Side::Upstream), None) => "upstream_closed",
        (Ended::By(Side::Client), Some(_)) => "client_error",
        (Ended::By(Side::Upstream), Some(_)) => "upstream_error",
    };
    shared
        .metrics
        .sessions_closed
        .get_or_create(&labels(&[("reason", close_reason)]))
        .inc();
    info!(
        session_id = %session_id, listener = %listener.name, identity = %who,
        target = %target.name, db_user = %credential.user, database = %grant.database,
        bytes_from_client = outcome.client_to_upstream, bytes_to_client = outcome.upstream_to_client,
        duration_ms = millis(trail.accepted.elapsed()), close_reason,
        error = ?outcome.error.as_ref().map(ToString::to_string), outcome = "closed",
        "session closed"
    );
    trail.record.bytes_from_client = outcome.client_to_upstream;
    trail.record.bytes_to_client = outcome.upstream_to_client;
    trail.record.close_reason = Some(close_reason.to_string());
    trail.finish(Outcome::Closed);
}

/// When the session must end: `max_session_lifetime` after login, or the certificate's
/// notAfter when sessions are bound to it, whichever comes first.
fn session_deadline(
    limits: &proxy_config::LimitsConfig,
    certificate_not_after_unix: Option<i64>,
) -> Option<(tokio::time::Instant, StopReason)> {
    let now = tokio::time::Instant::now();
    let lifetime = limits
        .max_session_lifetime
        .map(|d| (now + d, StopReason::Lifetime));
    // Local users have no certificate to outlive.
    let not_after =
        certificate_not_after_unix.filter(|_| limits.session_lifetime_within_certificate);
    let certificate = not_after.map(|not_after_unix| {
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let left = Duration::from_secs(not_after_unix.saturating_sub(now_unix).max(0) as u64);
        (now + left, StopReason::CertificateExpired)
    });
    match (lifetime, certificate) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Obtains a credential and logs in upstream. A login refused with an authentication
/// error after a cached credential is retried once with a fresh one: the cached password
/// may have been revoked or rotated behind our back.
async fn login_upstream(
    client: &ClientSession,
    grant: &Grant,
    target: &TargetContext,
    shared: &Shared,
) -> Result<(UpstreamSession, DbCredential), (LoginFailure, Vec<String>)> {
    let request = DbCredentialRequest {
        target: grant.target.clone(),
        role_arn: grant.role_arn.clone(),
        db_user: grant.db_user.clone(),
        db_name: grant.database.clone(),
        db_groups: grant.db_groups.clone(),
    };
    let endpoint = &target.endpoint;
    let target = target.name.as_str();
    let metrics = &shared.metrics;
    let mut retried = false;
    loop {
        let fetch_started = Instant::now();
        let credential = shared.credentials.credential(&request).await;
        Metrics::observe(
            &metrics.credential_fetch_seconds,
            "target",
            target,
            fetch_started.elapsed(),
        );
        let credential = credential.map_err(|e| (LoginFailure::from_credential(&e), Vec::new()))?;
        let login = LoginRequest {
            user: &credential.user,
            password: &credential.password,
            database: &grant.database,
            params: &client.startup.params,
        };
        match backend::connect_and_login(endpoint, &login).await {
            Ok(session) => {
                Metrics::observe(
                    &metrics.upstream_connect_seconds,
                    "target",
                    target,
                    session.connect_time,
                );
                Metrics::observe(
                    &metrics.upstream_auth_seconds,
                    "target",
                    target,
                    session.auth_time,
                );
                return Ok((session, credential));
            }
            Err(e) if e.is_auth_failure() && !retried => {
                warn!(
                    target = %grant.target, db_user = %credential.user, error = %e,
                    "upstream refused a cached credential; retrying once with a fresh one"
                );
                shared.credentials.invalidate(&request, &credential);
                retried = true;
            }
            Err(e) => {
                return Err((
                    LoginFailure::from_upstream(&e),
                    credential.aws_request_ids.clone(),
                ))
            }
        }
    }
}

/// AuthenticationOk, the upstream's login messages, the proxy's BackendKeyData, and the
/// final ReadyForQuery, as one buffer. `None` if the upstream reply is not well-formed.
fn login_reply(after_auth: &[u8], key: ProxyKey) -> Option<BytesMut> {
    const READY_FOR_QUERY_LEN: usize = 6;
    let split = after_auth.len().checked_sub(READY_FOR_QUERY_LEN)?;
    let (messages, ready) = after_auth.split_at(split);
    if ready[0] != b'Z' || ready[1..5] != 5i32.to_be_bytes() {
        return None;
    }
    let mut out = BytesMut::with_capacity(after_auth.len() + 32);
    encode_into(&mut out, b'R', &0i32.to_be_bytes());
    out.put_slice(messages);
    let mut key_body = [0u8; 8];
    key_body[..4].copy_from_slice(&key.pid.to_be_bytes());
    key_body[4..].copy_from_slice(&key.secret);
    encode_into(&mut out, b'K', &key_body);
    out.put_slice(ready);
    Some(out)
}

async fn send_and_close(client: &mut ClientSession, response: &ErrorResponse) {
    let _ = client.stream.write_all(&response.encode()).await;
    let _ = client.stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_reply_inserts_the_proxy_key_before_ready_for_query() {
        let mut upstream = BytesMut::new();
        encode_into(&mut upstream, b'S', b"server_version\x0015.0\x00");
        encode_into(&mut upstream, b'Z', b"I");
        let key = ProxyKey {
            pid: 7,
            secret: [1, 2, 3, 4],
        };
        let reply = login_reply(&upstream, key).unwrap();
        let mut expected = BytesMut::new();
        encode_into(&mut expected, b'R', &[0, 0, 0, 0]);
        encode_into(&mut expected, b'S', b"server_version\x0015.0\x00");
        encode_into(&mut expected, b'K', &[0, 0, 0, 7, 1, 2, 3, 4]);
        encode_into(&mut expected, b'Z', b"I");
        assert_eq!(reply, expected);
        assert!(login_reply(b"", key).is_none());
        assert!(login_reply(b"S\0\0\0\x05x", key).is_none());
    }
}
