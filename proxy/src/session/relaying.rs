//! Phase 5: the client is told it is logged in (with the proxy's own cancel key), then the
//! session is relayed byte for byte until either side ends it or the proxy does.

use super::admit::Admitted;
use super::login::LoggedIn;
use super::negotiation::GaugeGuard;
use super::trail::{millis, Refused, Trail};
use super::Connection;
use crate::audit::{StatementAudit, StatementContext};
use crate::backend::{BackendKey, UpstreamOrigin, UpstreamSession};
use crate::cancel::{CancelOutcome, ProxyKey};
use crate::frontend::SessionStream;
use crate::metrics::labels;
use crate::net::messages::{AuthenticationRequest, BackendKeyData, Decode, Encode, ReadyForQuery};
use crate::refusal::{Refusal, StopReason};
use crate::relay::{
    relay_keeping, Ended, Kept, RelayControl, RelayOutcome, Side, StatementTracker,
};
use crate::reuse::{parameters_of, ReuseKey, SessionToKeep};
use crate::runtime::TargetContext;
use bytes::{BufMut, BytesMut};
use proxy_auth::principal::ClientPrincipal;
use proxy_config::LimitsConfig;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

pub(super) async fn run(conn: Connection, mut trail: Trail, session: LoggedIn) {
    let LoggedIn {
        authorized,
        upstream,
        credential,
        reuse_key,
    } = session;
    let grant = authorized.grant;
    // The identity's slot is held until the session ends, with this binding.
    let Admitted {
        client,
        target,
        _identity_slot,
    } = authorized.admitted;
    let shared = &conn.shared;
    let UpstreamSession {
        stream: upstream_stream,
        backend_key,
        after_auth,
        tls_version: upstream_tls,
        tls_cipher,
        auth_method,
        origin: upstream_origin,
        logged_in_at,
        ..
    } = upstream;
    let upstream_key = backend_key.clone();
    let (proxy_key, _registration) = shared
        .cancels
        .register(target.endpoint.clone(), backend_key);
    let client_stream = match greet(client.stream, &after_auth, proxy_key).await {
        Ok(stream) => stream,
        Err(refusal) => return trail.refuse(refusal).await,
    };
    shared.metrics.login(&target.name, "success");
    let principal = &client.principal;
    info!(
        session_id = %trail.session_id(), listener = %conn.listener.name,
        peer = %trail.record.client_addr, identity = ?principal.short_name(),
        auth_method = principal.auth_method(),
        fingerprint = ?principal.certificate().map(|c| &c.fingerprint_sha256), rule = %grant.rule,
        server_name = ?client.server_name, target = %target.name, db_user = ?credential.user,
        database = ?grant.database,
        groups = ?grant.db_groups, aws_request_ids = ?credential.aws_request_ids,
        client_tls = %client.tls.as_ref().map_or("none", |t| t.version.as_str()),
        upstream_tls = %upstream_tls, upstream_connection = upstream_origin.as_str(),
        login_ms = millis(trail.accepted.elapsed()), outcome = "open",
        "session opened"
    );

    let _active = GaugeGuard::new(
        shared
            .metrics
            .sessions_active
            .get_or_create(&labels(&[
                ("listener", &conn.listener.name),
                ("target", &target.name),
            ]))
            .clone(),
    );
    let control = relay_control(&conn, &trail, principal, reuse_key.is_some());
    let who = principal.short_name().to_string();
    let (outcome, kept) = relay_keeping(client_stream, upstream_stream, control).await;
    cancel_if_running(&conn, &trail, &target, &outcome, upstream_key.clone());
    let uses = match upstream_origin {
        UpstreamOrigin::Reused { uses } => uses,
        _ => 1,
    };
    trail.record.upstream_kept =
        keep_for_reuse(&target, kept, reuse_key, |upstream, statements| {
            SessionToKeep {
                upstream,
                backend_key: upstream_key,
                parameters: parameters_of(&after_auth),
                uses,
                logged_in_at,
                tls_version: upstream_tls,
                tls_cipher,
                auth_method,
                statements,
            }
        });
    let close_reason = close_reason(&outcome);
    shared
        .metrics
        .sessions_closed
        .get_or_create(&labels(&[("reason", close_reason)]))
        .inc();
    info!(
        session_id = %trail.session_id(), listener = %conn.listener.name, identity = ?who,
        target = %target.name, db_user = ?credential.user, database = ?grant.database,
        bytes_from_client = outcome.client_to_upstream, bytes_to_client = outcome.upstream_to_client,
        duration_ms = millis(trail.accepted.elapsed()), close_reason,
        upstream_kept = trail.record.upstream_kept,
        error = ?outcome.error.as_ref().map(ToString::to_string), outcome = "closed",
        "session closed"
    );
    trail.closed(&outcome, close_reason);
}

/// How the relay of this session ends, what it counts, and what it reads as it passes.
fn relay_control(
    conn: &Connection,
    trail: &Trail,
    principal: &ClientPrincipal,
    session_reuse: bool,
) -> RelayControl {
    let metrics = &conn.shared.metrics;
    RelayControl {
        shutdown: Some(conn.terminate.clone()),
        idle_timeout: conn.state.limits.idle_timeout,
        deadline: session_deadline(
            &conn.state.limits,
            principal.certificate().map(|c| c.not_after_unix),
        ),
        revoked: principal.certificate().map(|id| revoked(conn, id.clone())),
        bytes_from_client: Some(metrics.bytes_from_clients.clone()),
        bytes_to_client: Some(metrics.bytes_to_clients.clone()),
        session_reuse,
        statements: statement_tracker(conn, trail),
    }
}

/// Keeps the upstream session for the next client of `key` when the client left cleanly;
/// whether it was kept.
fn keep_for_reuse<U>(
    target: &TargetContext,
    kept: Kept<U>,
    key: Option<ReuseKey>,
    session: impl FnOnce(U, Vec<Vec<u8>>) -> SessionToKeep,
) -> bool {
    match (kept, key) {
        (
            Kept::Kept {
                upstream,
                statements,
            },
            Some(key),
        ) => target
            .sessions
            .keep(key, session(upstream, statements))
            .is_ok(),
        (Kept::Closed(why), _) => {
            target.sessions.not_kept(why);
            false
        }
        _ => false,
    }
}

/// With `[audit] statements`: what reads the client's statements into audit records.
fn statement_tracker(conn: &Connection, trail: &Trail) -> Option<StatementTracker> {
    let config = &conn.state.config().audit;
    let log = &conn.shared.audit;
    if !config.statements || !log.enabled() {
        return None;
    }
    let max_text = usize::try_from(config.statement_max_length.0).unwrap_or(usize::MAX);
    let sink = StatementAudit::new(log.clone(), StatementContext::of(&trail.record));
    Some(StatementTracker::new(max_text, Box::new(sink)))
}

/// A query may still run when the client left mid-query or the proxy ended the session:
/// the server notices a closed connection only when it next reads or writes. Cancel it, as
/// the client's own Ctrl-C would.
fn cancel_if_running(
    conn: &Connection,
    trail: &Trail,
    target: &TargetContext,
    outcome: &RelayOutcome,
    upstream_key: Option<BackendKey>,
) {
    let client_left_mid_query =
        outcome.ended == Ended::By(Side::Client) && !outcome.client_terminated;
    let proxy_ended_it = matches!(outcome.ended, Ended::Stopped { .. });
    if !(client_left_mid_query || proxy_ended_it) || outcome.upstream_idle {
        return;
    }
    if let Some(key) = upstream_key {
        let endpoint = target.endpoint.clone();
        let cancels = conn.shared.cancels.clone();
        let session_id = trail.session_id().to_string();
        tokio::spawn(async move {
            let outcome = cancels.cancel_for_proxy(&endpoint, &key).await;
            if outcome != CancelOutcome::Forwarded {
                warn!(%session_id, outcome = outcome.as_str(), "could not cancel the upstream query of a session that ended");
            }
        });
    }
}

/// Tells the client it is logged in: the whole login reply in one write (some drivers
/// mis-handle fragmented replies).
async fn greet(
    mut client: SessionStream,
    after_auth: &[u8],
    key: ProxyKey,
) -> Result<SessionStream, Refused> {
    let Some(greeting) = login_reply(after_auth, key) else {
        return Err(Refused::new(Refusal::InvalidLoginReply, client));
    };
    let written = async {
        client.write_all(&greeting).await?;
        client.flush().await
    };
    match written.await {
        Ok(()) => Ok(client),
        Err(e) => Err(Refused::new(Refusal::ClientLeft(e), None)),
    }
}

fn close_reason(outcome: &RelayOutcome) -> &'static str {
    match (&outcome.ended, &outcome.error) {
        (Ended::Stopped { reason, .. }, _) => reason.as_str(),
        (Ended::By(Side::Client), None) => "client_closed",
        (Ended::By(Side::Upstream), None) => "upstream_closed",
        (Ended::By(Side::Client), Some(_)) => "client_error",
        (Ended::By(Side::Upstream), Some(_)) => "upstream_error",
    }
}

/// Resolves once a reload brings a CRL that revokes `id`.
fn revoked(
    conn: &Connection,
    id: proxy_auth::identity::ClientIdentity,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let shared = conn.shared.clone();
    let listener = conn.listener.name.clone();
    let mut changes = shared.state_changes();
    Box::pin(async move {
        while changes.changed().await.is_ok() {
            if shared.state().revocation.revokes(&listener, &id) {
                return;
            }
        }
        std::future::pending::<()>().await
    })
}

/// When the session must end: `max_session_lifetime` after login, or the certificate's
/// notAfter when sessions are bound to it, whichever comes first.
fn session_deadline(
    limits: &LimitsConfig,
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

/// AuthenticationOk, the upstream's login messages, the proxy's BackendKeyData, and the
/// final ReadyForQuery, as one buffer. `None` if the upstream reply is not well-formed.
fn login_reply(after_auth: &[u8], key: ProxyKey) -> Option<BytesMut> {
    const READY_FOR_QUERY_LEN: usize = 6;
    let split = after_auth.len().checked_sub(READY_FOR_QUERY_LEN)?;
    let (messages, ready) = after_auth.split_at(split);
    let ready_for_query = ReadyForQuery::decode(&ready[5..]).ok()?;
    if ready != &ready_for_query.encode()[..] {
        return None;
    }
    let mut out = BytesMut::with_capacity(after_auth.len() + 32);
    AuthenticationRequest::Ok.encode_into(&mut out);
    out.put_slice(messages);
    BackendKeyData {
        pid: key.pid,
        key: key.secret.to_vec(),
    }
    .encode_into(&mut out);
    out.put_slice(ready);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::framing::encode_into;

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
