//! The audit record of one connection as its phases fill it in, and the two ways it ends:
//! [`Trail::refuse`], the one refusal sink (ErrorResponse, audit record, metric, log line),
//! and [`Trail::finish`].

use crate::audit::{
    new_session_id, rfc3339, AuditRecord, CertificateRecord, ConnectionKind, Outcome,
    RefusalRecord, TlsRecord,
};
use crate::backend::{UpstreamOrigin, UpstreamSession};
use crate::frontend::{ClientPeer, ClientSession, RefusedPeer, SessionStream};
use crate::net::messages::{Encode, ErrorResponse};
use crate::refusal::Refusal;
use crate::relay::RelayOutcome;
use crate::runtime::{ListenerContext, Shared, TargetContext};
use proxy_auth::db_credentials::DbCredential;
use proxy_auth::policy::Grant;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tracing::info;

/// Time allowed to deliver a final ErrorResponse and close (the login timeout may already
/// be spent).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time spent discarding unread client bytes after the ErrorResponse, so closing does not
/// turn into a TCP reset that destroys the error before the client reads it.
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// A refusal, and the client connection to tell it on (when there is one).
#[derive(Debug)]
pub struct Refused {
    // Boxed: refusals are the rare path and should not bloat every phase's `Result`.
    pub refusal: Box<Refusal>,
    pub client: Option<SessionStream>,
}

impl Refused {
    pub fn new(refusal: impl Into<Refusal>, client: impl Into<Option<SessionStream>>) -> Self {
        Refused {
            refusal: Box::new(refusal.into()),
            client: client.into(),
        }
    }
}

/// The audit record of one connection under construction, and where it goes when done.
pub struct Trail {
    pub record: AuditRecord,
    pub accepted: Instant,
    shared: Arc<Shared>,
}

impl Trail {
    pub fn new(listener: &ListenerContext, peer: &ClientPeer, shared: Arc<Shared>) -> Trail {
        let mut record = AuditRecord::new(new_session_id(), &listener.name, peer.to_string());
        record.client_uid = peer.uid();
        record.client_pid = peer.pid();
        record.auth_method = Some(listener.frontend.auth.as_str().to_string());
        Trail {
            record,
            accepted: Instant::now(),
            shared,
        }
    }

    pub fn session_id(&self) -> &str {
        &self.record.session_id
    }

    /// Who was refused during negotiation: the certificate they presented (verified or
    /// not), their TLS session and server name.
    pub fn refused_peer(&mut self, peer: &RefusedPeer) {
        let r = &mut self.record;
        r.client_certificate = peer.certificate.as_ref().map(CertificateRecord::presented);
        r.client_tls = Some(TlsRecord {
            version: peer.tls_version.clone(),
            cipher: peer.tls_cipher.clone(),
        });
        r.server_name = peer.server_name.clone();
    }

    /// What negotiation established: who the client is and what it asked for.
    pub fn negotiated(&mut self, client: &ClientSession) {
        let r = &mut self.record;
        r.client_certificate = client.identity().map(CertificateRecord::verified);
        r.local_user = client.principal.local_user().map(|u| u.name.clone());
        r.password_method = client
            .principal
            .local_user()
            .and_then(|u| u.password_method)
            .map(|m| m.as_str().to_string());
        r.client_tls = client.tls.as_ref().map(|t| TlsRecord {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
        });
        r.requested_user = Some(client.startup.user.clone());
        r.requested_database = Some(client.startup.database.clone());
        r.server_name = client.server_name.clone();
    }

    pub fn target(&mut self, target: &TargetContext) {
        self.record.target = Some(target.name.clone());
    }

    pub fn authorized(&mut self, grant: &Grant, default_role: Option<&proxy_config::Arn>) {
        let r = &mut self.record;
        r.rule = Some(grant.rule.clone());
        r.db_user = Some(grant.db_user.clone());
        r.database = Some(grant.database.clone());
        r.groups = grant.db_groups.clone();
        r.iam_role = grant
            .role_arn
            .as_ref()
            .or(default_role)
            .map(ToString::to_string);
    }

    /// The AWS calls behind a credential (also recorded when the login then failed).
    pub fn aws_request_ids(&mut self, ids: &[String]) {
        self.record.aws_request_ids = ids.to_vec();
    }

    /// How many connection attempts the upstream login took (recorded also when it
    /// failed).
    pub fn upstream_attempts(&mut self, attempts: u32) {
        self.record.upstream_attempts = Some(attempts);
    }

    pub fn logged_in(&mut self, credential: &DbCredential, upstream: &UpstreamSession) {
        let r = &mut self.record;
        r.db_user = Some(credential.user.clone());
        r.aws_request_ids = credential.aws_request_ids.clone();
        r.upstream_tls = Some(TlsRecord {
            version: upstream.tls_version.clone(),
            cipher: upstream.tls_cipher.clone(),
        });
        r.upstream_connection = Some(upstream.origin.as_str().to_string());
        if let UpstreamOrigin::Reused { uses } = upstream.origin {
            r.upstream_session_uses = Some(uses);
        }
    }

    /// Ends the record of a session that was relayed.
    pub fn closed(mut self, outcome: &RelayOutcome, close_reason: &str) {
        self.record.bytes_from_client = outcome.client_to_upstream;
        self.record.bytes_to_client = outcome.upstream_to_client;
        self.record.close_reason = Some(close_reason.to_string());
        self.finish(ConnectionKind::Session, Outcome::Closed);
    }

    /// Ends the record of a connection that was not refused.
    pub fn finish(mut self, kind: ConnectionKind, outcome: Outcome) {
        self.record.kind = kind;
        self.record.outcome = outcome;
        self.record.time = rfc3339(SystemTime::now());
        self.record.duration_ms = millis(self.accepted.elapsed());
        self.shared.audit.record(&self.record);
    }

    /// The refusal sink: counts the refusal, writes one operator log line and the audit
    /// record, then tells the client (when it can be told). In that order, so whoever sees
    /// the client's error also sees the metric and the audit record.
    pub async fn refuse(mut self, refused: Refused) {
        let wire = refused.refusal.wire();
        let detail = refused.refusal.log_detail();
        let metrics = &self.shared.metrics;
        metrics.refused(&self.record.listener, wire.reason.as_str());
        if let (Some(outcome), Some(target)) = (wire.login_outcome, &self.record.target) {
            metrics.login(target, outcome);
        }
        let sqlstate = wire.sqlstate().map(str::to_string);
        info!(
            session_id = %self.record.session_id, listener = %self.record.listener,
            peer = %self.record.client_addr, server_name = ?self.record.server_name,
            target = ?self.record.target, reason = wire.reason.as_str(), sqlstate = ?sqlstate,
            detail = ?detail, outcome = "refused",
            "connection refused"
        );
        self.record.refusal = Some(RefusalRecord {
            reason: wire.reason,
            sqlstate,
            detail,
        });
        self.finish(ConnectionKind::Session, Outcome::Refused);
        if let (Some(client), Some(response)) = (refused.client, &wire.response) {
            report(client, response).await;
        }
    }
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes `response`, closes our side and lingers briefly so the client reads it. Bounded
/// in time whatever the client does.
pub async fn report(mut client: SessionStream, response: &ErrorResponse) {
    let wire = response.encode();
    let sent = matches!(
        timeout(REPORT_TIMEOUT, async {
            client.write_all(&wire).await?;
            client.flush().await?;
            client.shutdown().await
        })
        .await,
        Ok(Ok(()))
    );
    if sent {
        let _ = timeout(LINGER_TIMEOUT, discard_input(&mut client)).await;
    }
}

async fn discard_input(client: &mut SessionStream) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_MAX_BYTES {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}
