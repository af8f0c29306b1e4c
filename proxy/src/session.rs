//! One client connection from accept to close: negotiation, policy, credentials,
//! upstream login, and the relay.

use crate::backend::{self, LoginRequest, UpstreamError, UpstreamSession};
use crate::cancel::ProxyKey;
use crate::frontend::{negotiate, ClientSession, Negotiated};
use crate::net::framing::encode_into;
use crate::net::messages::ErrorResponse;
use crate::relay::{relay, Side};
use crate::server::{ListenerContext, Shared};
use bytes::{BufMut, BytesMut};
use proxy_auth::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use proxy_auth::policy::Grant;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

/// Serves one accepted TCP connection to completion. Never panics on client input; every
/// refusal is an ErrorResponse to the client and one log line for the operator.
pub async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerContext>,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let negotiated = negotiate(tcp, &listener.frontend).await;
    match negotiated {
        Err(e) => {
            info!(
                listener = %listener.name, peer = %peer, sqlstate = e.sqlstate(), error = %e,
                "connection refused before login"
            );
        }
        Ok(Negotiated::Cancel(target)) => {
            let outcome = shared
                .cancels
                .cancel(peer.ip(), target.pid, &target.key)
                .await;
            info!(listener = %listener.name, peer = %peer, outcome = outcome.as_str(), "cancel request");
        }
        Ok(Negotiated::Session(client)) => {
            run_session(*client, peer, &listener, &shared).await;
        }
    }
}

/// Why a login failed: what the client is told, and what the operator reads.
struct LoginFailure {
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
            response: ErrorResponse::fatal(e.sqlstate(), message),
            log: e.to_string(),
        }
    }

    fn from_upstream(e: &UpstreamError) -> Self {
        LoginFailure {
            response: ErrorResponse::fatal(e.sqlstate(), e.client_message()),
            log: e.to_string(),
        }
    }
}

async fn run_session(
    mut client: ClientSession,
    peer: SocketAddr,
    listener: &ListenerContext,
    shared: &Shared,
) {
    let started = Instant::now();
    let identity = &client.identity;
    let who = identity
        .common_name
        .clone()
        .unwrap_or_else(|| identity.subject.clone());
    let target = &listener.target;

    let grant = match shared.policy().authorize(
        identity,
        &target.name,
        &client.startup.user,
        &client.startup.database,
    ) {
        Ok(grant) => grant,
        Err(denial) => {
            warn!(
                listener = %listener.name, peer = %peer, identity = %who,
                fingerprint = %identity.fingerprint_sha256, target = %target.name,
                requested_user = ?client.startup.user, requested_database = ?client.startup.database,
                reason = %denial.log_detail(), outcome = "denied",
                "session refused by policy"
            );
            let response = ErrorResponse::fatal(denial.sqlstate(), denial.client_message());
            send_and_close(&mut client, &response).await;
            return;
        }
    };
    if !client.startup.dropped_params.is_empty() {
        info!(
            peer = %peer, identity = %who, dropped = ?client.startup.dropped_params,
            "startup parameters accepted but not forwarded upstream"
        );
    }

    let (upstream, credential) = match login_upstream(&client, &grant, listener, shared).await {
        Ok(ok) => ok,
        Err(failure) => {
            warn!(
                listener = %listener.name, peer = %peer, identity = %who, target = %target.name,
                db_user = %grant.db_user, database = %grant.database, rule = %grant.rule,
                sqlstate = %failure.response.code, error = %failure.log, outcome = "login_failed",
                "session refused"
            );
            send_and_close(&mut client, &failure.response).await;
            return;
        }
    };

    let UpstreamSession {
        stream: upstream_stream,
        backend_key,
        after_auth,
        tls_version: upstream_tls,
        ..
    } = upstream;
    let (proxy_key, _registration) = shared
        .cancels
        .register(target.endpoint.clone(), backend_key);
    let greeting = match login_reply(&after_auth, proxy_key) {
        Some(g) => g,
        None => {
            warn!(peer = %peer, target = %target.name, "upstream login reply did not end with ReadyForQuery");
            let response = ErrorResponse::fatal("08P01", "upstream sent an invalid login reply");
            send_and_close(&mut client, &response).await;
            return;
        }
    };
    // One write for the whole login reply: some drivers mis-handle fragmented replies.
    if let Err(e) = async {
        client.stream.write_all(&greeting).await?;
        client.stream.flush().await
    }
    .await
    {
        info!(peer = %peer, error = %e, "client left during login");
        return;
    }

    info!(
        listener = %listener.name, peer = %peer, identity = %who,
        fingerprint = %identity.fingerprint_sha256, rule = %grant.rule, target = %target.name,
        db_user = %credential.user, database = %grant.database, groups = ?grant.db_groups,
        aws_request_ids = ?credential.aws_request_ids,
        client_tls = %client.tls_version, upstream_tls = %upstream_tls,
        login_ms = started.elapsed().as_millis() as u64, outcome = "open",
        "session opened"
    );

    let outcome = relay(client.stream, upstream_stream).await;
    let close_reason = match (&outcome.error, outcome.ended_by) {
        (None, Side::Client) => "client_closed".to_string(),
        (None, Side::Upstream) => "upstream_closed".to_string(),
        (Some(e), side) => format!("{}_error: {e}", side.as_str()),
    };
    info!(
        listener = %listener.name, peer = %peer, identity = %who, target = %target.name,
        db_user = %credential.user, database = %grant.database,
        bytes_from_client = outcome.client_to_upstream, bytes_to_client = outcome.upstream_to_client,
        duration_ms = started.elapsed().as_millis() as u64, close_reason = %close_reason,
        outcome = "closed",
        "session closed"
    );
}

/// Obtains a credential and logs in upstream. A login refused with an authentication
/// error after a cached credential is retried once with a fresh one: the cached password
/// may have been revoked or rotated behind our back.
async fn login_upstream(
    client: &ClientSession,
    grant: &Grant,
    listener: &ListenerContext,
    shared: &Shared,
) -> Result<(UpstreamSession, DbCredential), LoginFailure> {
    let request = DbCredentialRequest {
        target: grant.target.clone(),
        role_arn: grant.role_arn.clone(),
        db_user: grant.db_user.clone(),
        db_name: grant.database.clone(),
        db_groups: grant.db_groups.clone(),
    };
    let endpoint = &listener.target.endpoint;
    let mut retried = false;
    loop {
        let credential = shared
            .credentials
            .credential(&request)
            .await
            .map_err(|e| LoginFailure::from_credential(&e))?;
        let login = LoginRequest {
            user: &credential.user,
            password: &credential.password,
            database: &grant.database,
            params: &client.startup.params,
        };
        match backend::connect_and_login(endpoint, &login).await {
            Ok(session) => return Ok((session, credential)),
            Err(e) if e.is_auth_failure() && !retried => {
                warn!(
                    target = %grant.target, db_user = %credential.user, error = %e,
                    "upstream refused a cached credential; retrying once with a fresh one"
                );
                shared.credentials.invalidate(&request);
                retried = true;
            }
            Err(e) => return Err(LoginFailure::from_upstream(&e)),
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
