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
//! dedicated writer thread. When the queue is full (the disk is stuck), records are dropped
//! and counted ([`AuditLog::dropped`], exported as a metric) rather than blocking sessions.

use proxy_auth::identity::ClientIdentity;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;
use tracing::{error, warn};

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
    /// A Unix-socket client's user and process id (`SO_PEERCRED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_pid: Option<i32>,
    /// How the client authenticated (or had to): `certificate`, `password` or `trust`
    /// (the listener's `client_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
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
            client_uid: None,
            client_pid: None,
            auth_method: None,
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
            upstream_connection: None,
            upstream_session_uses: None,
            upstream_kept: false,
            bytes_from_client: 0,
            bytes_to_client: 0,
            duration_ms: 0,
            close_reason: None,
            cancel_outcome: None,
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

/// Where audit records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::File(path) => Box::new(open_append(path)?),
        })
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        // Audit records name people and roles: readable by the proxy's user and group only.
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

/// The audit file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit file {}: {source}", path.display())]
pub struct AuditOpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

enum Message {
    Line(String),
    Reopen(Destination),
}

struct Writer {
    tx: SyncSender<Message>,
    thread: JoinHandle<()>,
}

/// The audit trail: a bounded queue and its writer thread. Cheap to share (`Arc`).
pub struct AuditLog {
    writer: Mutex<Option<Writer>>,
    /// A clone of the writer's sender, for the hot path (no lock).
    tx: Option<SyncSender<Message>>,
    written: Arc<AtomicU64>,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.tx.is_some())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// An audit log that discards every record (`[audit] enabled = false`).
    pub fn disabled() -> AuditLog {
        AuditLog {
            writer: Mutex::new(None),
            tx: None,
            written: Arc::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            failed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Opens `destination` now (so a bad path fails start-up) and starts the writer.
    pub fn start(destination: Destination, capacity: usize) -> Result<AuditLog, AuditOpenError> {
        let out = destination.open().map_err(|source| AuditOpenError {
            path: match &destination {
                Destination::File(p) => p.clone(),
                Destination::Stdout => PathBuf::from("<stdout>"),
            },
            source,
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let thread = {
            let written = written.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || write_loop(rx, out, &written, &failed))
                .map_err(|source| AuditOpenError {
                    path: PathBuf::from("<audit writer thread>"),
                    source,
                })?
        };
        Ok(AuditLog {
            writer: Mutex::new(Some(Writer {
                tx: tx.clone(),
                thread,
            })),
            tx: Some(tx),
            written,
            dropped: AtomicU64::new(0),
            failed,
        })
    }

    /// Builds the audit log `[audit]` asks for.
    pub fn from_config(config: &proxy_config::AuditConfig) -> Result<AuditLog, AuditOpenError> {
        if !config.enabled {
            return Ok(AuditLog::disabled());
        }
        AuditLog::start(destination(config), config.queue_capacity)
    }

    /// Queues one record. Never blocks: a full queue drops the record and counts it.
    pub fn record(&self, record: &AuditRecord) {
        let Some(tx) = &self.tx else { return };
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                // Cannot happen for this plain data type; count it rather than panic.
                error!(error = %e, "cannot serialise an audit record");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One warning per power of two keeps a stuck disk from flooding the log.
                if n.is_power_of_two() {
                    warn!(dropped = n, "audit queue full: audit records dropped");
                }
            }
        }
    }

    /// Switches to a new destination (reload, log rotation). The new file is opened here,
    /// so an unusable path is reported and the current destination kept.
    pub fn reopen(&self, config: &proxy_config::AuditConfig) -> Result<(), AuditOpenError> {
        if self.tx.is_none() {
            // Enabling an audit log that was off at start needs a restart (documented).
            return Ok(());
        }
        let dest = destination(config);
        if let Destination::File(path) = &dest {
            open_append(path).map_err(|source| AuditOpenError {
                path: path.clone(),
                source,
            })?;
        }
        let guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = guard.as_ref() {
            // Blocking send: a reopen must not be lost behind a full queue. Called from
            // reload, which runs on a blocking thread.
            let _ = w.tx.send(Message::Reopen(dest));
        }
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records the writer failed to write (I/O errors).
    pub fn write_errors(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Writes out everything queued and stops the writer. Blocks: call it from a blocking
    /// context (process exit). Later records are dropped.
    pub fn close(&self) {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Writer { tx, thread }) = writer {
            drop(tx);
            // The hot-path sender clone keeps the channel open; the writer stops at the
            // marker instead.
            if let Some(hot) = &self.tx {
                let _ = hot.send(Message::Line(String::new()));
            }
            let _ = thread.join();
        }
    }
}

fn destination(config: &proxy_config::AuditConfig) -> Destination {
    match &config.path {
        Some(p) => Destination::File(p.clone()),
        None => Destination::Stdout,
    }
}

fn write_loop(
    rx: Receiver<Message>,
    out: Box<dyn Write + Send>,
    written: &AtomicU64,
    failed: &AtomicU64,
) {
    let mut out = BufWriter::new(out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Drain what is queued, then flush once: one syscall per burst, not per record.
        while let Some(message) = next {
            match message {
                // The close marker.
                Message::Line(line) if line.is_empty() => {
                    let _ = out.flush();
                    return;
                }
                Message::Line(line) => {
                    if writeln!(out, "{line}").is_ok() {
                        written.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Message::Reopen(dest) => {
                    let _ = out.flush();
                    match dest.open() {
                        Ok(w) => out = BufWriter::new(w),
                        Err(e) => {
                            error!(error = %e, "cannot reopen the audit file; keeping the old one")
                        }
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AuditRecord {
        let mut r = AuditRecord::new(id.into(), "main", "127.0.0.1:5000".into());
        r.outcome = Outcome::Closed;
        r.time = rfc3339(SystemTime::now());
        r
    }

    #[test]
    fn records_are_json_lines_in_order_and_reopen_switches_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.jsonl");
        let second = dir.path().join("b.jsonl");
        let log = AuditLog::start(Destination::File(first.clone()), 16).unwrap();
        log.record(&record("one"));
        log.record(&record("two"));
        log.reopen(&proxy_config::AuditConfig {
            path: Some(second.clone()),
            ..Default::default()
        })
        .unwrap();
        log.record(&record("three"));
        log.close();
        let a = std::fs::read_to_string(&first).unwrap();
        let ids: Vec<String> = a
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"].to_string()
            })
            .collect();
        assert_eq!(ids, ["\"one\"", "\"two\""]);
        let b = std::fs::read_to_string(&second).unwrap();
        assert_eq!(b.lines().count(), 1);
        assert!(b.contains("\"three\""));
        assert_eq!(log.written(), 3);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        // A queue of one record cannot keep up with a tight loop: some records are
        // dropped, none is lost silently, and `record` returned each time.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = AuditLog::start(Destination::File(path.clone()), 1).unwrap();
        for i in 0..2000 {
            log.record(&record(&i.to_string()));
        }
        log.close();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(lines, log.written());
        assert_eq!(log.written() + log.dropped(), 2000);
    }

    #[test]
    fn an_unwritable_path_fails_at_start() {
        let err = AuditLog::start(
            Destination::File(PathBuf::from("/nonexistent-dir/audit.jsonl")),
            4,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent-dir/audit.jsonl"),
            "{err}"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }
}
