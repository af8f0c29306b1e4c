//! The audit trail: one JSON line per connection, separate from the operational log.
//!
//! Every connection that reaches the proxy ends in exactly one [`AuditRecord`]: a session
//! that was established and then closed, a refusal at any stage (before TLS, at the
//! certificate, by policy, by a limit, at the credential or upstream login step), or a
//! cancel request. Records carry who (certificate fields), what was granted, where it went,
//! how (TLS on both sides, AWS request ids for CloudTrail correlation), and what happened.
//! They never carry a password, token, key or cancel secret: the record type has no field
//! that could hold one.
//!
//! Writing must never stall the async runtime, so records go through a bounded queue to a
//! dedicated writer thread ([`writer`]). When the queue is full (the disk is stuck), records
//! are dropped and counted ([`AuditLog::dropped`], exported as a metric) rather than
//! blocking sessions.

mod writer;

pub use writer::{AuditLog, AuditOpenError, Destination};

use proxy_auth::identity::ClientIdentity;
use serde::Serialize;
use std::time::SystemTime;

/// What kind of connection a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    /// A client that asked for (or could have become) a database session.
    Session,
    /// A CancelRequest.
    Cancel,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A session was established and has now ended (`close_reason` says how).
    Closed,
    /// The connection was refused (`refusal` says where and why).
    Refused,
    /// A cancel request was handled (`cancel_outcome` says what became of it).
    Cancel,
}

/// The step at which a connection was refused. Stable names: dashboards and alerts key on
/// them, and they double as the `reason` label of `proxy_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The client left, or the connection failed, before a startup message.
    ClientDisconnected,
    /// No complete startup message within the login timeout.
    LoginTimeout,
    /// No completed TLS handshake within `[limits] handshake_timeout`.
    HandshakeTimeout,
    /// A malformed or unexpected startup sequence.
    Protocol,
    /// The client did not use TLS.
    TlsRequired,
    /// The TLS handshake failed.
    TlsHandshake,
    /// The client certificate was missing, invalid, expired, revoked or unreadable.
    ClientCertificate,
    /// Startup parameters the proxy does not accept.
    StartupParameters,
    /// Password authentication failed: unknown local user or wrong password (the record
    /// does not say which; the operational log does).
    PasswordAuthentication,
    /// Password authentication refused because the user or the client's address is locked
    /// after repeated failures (the client is told exactly what a wrong password gets).
    PasswordLocked,
    /// The client asked for a server name (SNI) the listener does not serve, or sent none,
    /// on a listener with `strict_sni`.
    ServerName,
    /// No policy rule grants the requested user, database and target.
    Policy,
    /// Database credentials could not be obtained.
    Credentials,
    /// The client identity spent its budget of AWS credential calls.
    CredentialBudget,
    /// The upstream login failed (connect, TLS, authentication, or a malformed reply).
    Upstream,
    /// `[limits] max_connections`.
    MaxConnections,
    /// `[[listener]] max_connections`, or `[limits] max_connections_per_listener`.
    MaxConnectionsPerListener,
    /// `[limits] max_connections_per_identity`.
    MaxConnectionsPerIdentity,
    /// `[limits] max_pending_per_source`.
    MaxPendingPerSource,
    /// The proxy is shutting down.
    ShuttingDown,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        use RefusalReason as R;
        match self {
            R::ClientDisconnected => "client_disconnected",
            R::LoginTimeout => "login_timeout",
            R::HandshakeTimeout => "handshake_timeout",
            R::Protocol => "protocol",
            R::TlsRequired => "tls_required",
            R::TlsHandshake => "tls_handshake",
            R::ClientCertificate => "client_certificate",
            R::StartupParameters => "startup_parameters",
            R::PasswordAuthentication => "password_authentication",
            R::PasswordLocked => "password_locked",
            R::ServerName => "server_name",
            R::Policy => "policy",
            R::Credentials => "credentials",
            R::CredentialBudget => "credential_budget",
            R::Upstream => "upstream",
            R::MaxConnections => "max_connections",
            R::MaxConnectionsPerListener => "max_connections_per_listener",
            R::MaxConnectionsPerIdentity => "max_connections_per_identity",
            R::MaxPendingPerSource => "max_pending_per_source",
            R::ShuttingDown => "shutting_down",
        }
    }
}

/// Why a connection was refused: the stage, the SQLSTATE the client was sent (if any), and
/// the operator-facing detail (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusalRecord {
    pub reason: RefusalReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    pub detail: String,
}

/// The client certificate's identifying fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_email: Vec<String>,
    /// RFC 3339.
    pub not_after: String,
    /// The chain was verified and accepted. `false` on refused connections: the fields
    /// are what the client presented, not vouched for by any trusted CA.
    pub verified: bool,
}

impl CertificateRecord {
    /// The record of a certificate the proxy verified and accepted.
    pub fn verified(id: &ClientIdentity) -> Self {
        CertificateRecord {
            verified: true,
            ..CertificateRecord::presented(id)
        }
    }

    /// The record of a certificate a refused client presented (not vouched for).
    pub fn presented(id: &ClientIdentity) -> Self {
        let not_after = time::OffsetDateTime::from_unix_timestamp(id.not_after_unix)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        CertificateRecord {
            subject: id.subject.clone(),
            issuer: id.issuer.clone(),
            serial: id.serial_hex.clone(),
            fingerprint_sha256: id.fingerprint_sha256.clone(),
            san_dns: id.san_dns.clone(),
            san_uri: id.san_uri.clone(),
            san_email: id.san_email.clone(),
            not_after,
            verified: false,
        }
    }
}

/// A negotiated TLS session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsRecord {
    pub version: String,
    pub cipher: String,
}

/// One connection, from accept to close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the connection ended, RFC 3339 UTC.
    pub time: String,
    /// When it was accepted, RFC 3339 UTC.
    pub started: String,
    /// Random per connection; also in the operational log lines of the session.
    pub session_id: String,
    pub kind: ConnectionKind,
    pub outcome: Outcome,
    pub listener: String,
    /// `host:port`, or `unix:<socket path>` for a Unix-socket client.
    pub client_addr: String,
    /// The load balancer that relayed the connection with a PROXY protocol header
    /// (`client_addr` is then the client it named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// A Unix-socket client's user and process id (`SO_PEERCRED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_pid: Option<i32>,
    /// How the client authenticated (or had to): `certificate`, `password` or `trust`
    /// (the listener's `client_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    /// How a `password` login's user proved its password: `scram-sha-256`, `md5` or
    /// `sha256` (Redshift's digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_method: Option<String>,
    /// The local user of a `password` or `trust` login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<TlsRecord>,
    /// The server name (SNI) the client asked for in its TLS handshake; it selects the
    /// certificate and may select the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// What the client asked for in its startup message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_database: Option<String>,
    /// The policy rule that granted the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The database user logged in as (as issued, e.g. `IAM:alice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The IAM role the credential calls ran as (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iam_role: Option<String>,
    /// Request ids of the AWS calls behind the database credential (CloudTrail).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aws_request_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<TlsRecord>,
    /// Connection attempts the upstream login took (more than one while a serverless
    /// workgroup resumed; see `[[target]] resume_wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_attempts: Option<u32>,
    /// Where the upstream session came from: `dialled` (connected for this client), `warm`
    /// (TCP and TLS were ready, the login ran for this client) or `reused` (the logged-in
    /// session of an earlier client with the same identity and grant, reset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_connection: Option<String>,
    /// A reused session: how many clients it has served, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_session_uses: Option<u32>,
    /// The client left cleanly and its upstream session was kept for the next client
    /// (`session_reuse`), instead of being closed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub upstream_kept: bool,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_outcome: Option<String>,
    /// The `[peering] id` of the instance a cancel request's key belongs to, when it is
    /// not this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_peer: Option<u8>,
}

impl AuditRecord {
    /// A record for a connection accepted at `started`, to be filled in as it progresses.
    pub fn new(session_id: String, listener: &str, client_addr: String) -> Self {
        AuditRecord {
            time: String::new(),
            started: rfc3339(SystemTime::now()),
            session_id,
            kind: ConnectionKind::Session,
            outcome: Outcome::Refused,
            listener: listener.to_string(),
            client_addr,
            via: None,
            client_uid: None,
            client_pid: None,
            auth_method: None,
            password_method: None,
            local_user: None,
            refusal: None,
            client_certificate: None,
            client_tls: None,
            server_name: None,
            requested_user: None,
            requested_database: None,
            rule: None,
            target: None,
            db_user: None,
            database: None,
            groups: Vec::new(),
            iam_role: None,
            aws_request_ids: Vec::new(),
            upstream_tls: None,
            upstream_attempts: None,
            upstream_connection: None,
            upstream_session_uses: None,
            upstream_kept: false,
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration_ms: 0,
            close_reason: None,
            cancel_outcome: None,
            cancel_peer: None,
        }
    }
}

/// RFC 3339 with millisecond precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let millis = t.millisecond();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    match t.format(&time::format_description::well_known::Rfc3339) {
        // `...T12:34:56Z` → `...T12:34:56.789Z`
        Ok(s) => match s.strip_suffix('Z') {
            Some(base) => format!("{base}.{millis:03}Z"),
            None => s,
        },
        Err(_) => String::new(),
    }
}

/// A random session id: 128 bits, hex.
pub fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }
}
