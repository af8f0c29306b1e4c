//! [`UpstreamError`]: why connecting, logging in or cancelling upstream failed.
//!
//! `Display` is for the proxy's logs; what a client may see is decided in
//! [`crate::refusal`]. Neither ever contains a password (it is never formatted into
//! anything), nor the text of a reply the upstream sent before TLS (unauthenticated bytes
//! are never kept).

use crate::net::messages::startup_message::StartupEncodeError;
use crate::net::messages::ErrorResponse;
use crate::sqlstate;
use std::fmt;
use std::time::Duration;

/// Which step was under way when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// DNS resolution and the TCP connection.
    Connect,
    /// SSLRequest and the TLS handshake.
    Tls,
    /// StartupMessage, authentication and the wait for ReadyForQuery.
    Login,
    /// Sending a CancelRequest.
    Cancel,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connect",
            Phase::Tls => "TLS negotiation",
            Phase::Login => "login",
            Phase::Cancel => "cancel request",
        })
    }
}

/// Why the TLS handshake failed, as precisely as the TLS stack tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted CA (`ca_bundle` or the Mozilla roots).
    UntrustedIssuer,
    /// The certificate is valid but not for the configured `host`.
    NameMismatch,
    Expired,
    NotYetValid,
    Revoked,
    /// Any other certificate problem (bad encoding, signature, purpose, ...).
    BadCertificate(String),
    /// The handshake itself failed (alert, no common version or cipher suite, ...).
    Handshake(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UntrustedIssuer => {
                f.write_str("certificate is not issued by a trusted CA (unknown issuer)")
            }
            TlsFailure::NameMismatch => f.write_str("certificate is not valid for the host name"),
            TlsFailure::Expired => f.write_str("certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("certificate is not valid yet"),
            TlsFailure::Revoked => f.write_str("certificate is revoked"),
            TlsFailure::BadCertificate(d) => write!(f, "invalid certificate: {d}"),
            TlsFailure::Handshake(d) => write!(f, "handshake failed: {d}"),
        }
    }
}

impl TlsFailure {
    /// Classifies the error a failed `tokio_rustls` handshake returns.
    pub(crate) fn from_io(e: &std::io::Error) -> Self {
        let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Handshake(e.to_string());
        };
        use rustls::CertificateError as C;
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => TlsFailure::UntrustedIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
                C::Revoked => TlsFailure::Revoked,
                other => TlsFailure::BadCertificate(format!("{other:?}")),
            },
            other => TlsFailure::Handshake(other.to_string()),
        }
    }
}

/// A failure to reach, log in to, or cancel on the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("upstream {phase} timed out after {}", as_seconds(*.after))]
    Timeout { phase: Phase, after: Duration },
    #[error("upstream does not offer TLS (it answered the SSLRequest with 'N')")]
    TlsNotOffered,
    /// The upstream answered SSLRequest with an ErrorResponse. Its text arrived before TLS,
    /// so it is neither kept, logged nor relayed.
    #[error(
        "upstream answered the SSLRequest with an error (text withheld: it arrived before TLS)"
    )]
    ServerErrorBeforeTls,
    #[error("TLS with upstream {host} failed: {failure}")]
    Tls {
        host: String,
        failure: TlsFailure,
        #[source]
        source: std::io::Error,
    },
    /// The upstream broke the protocol (bad framing, unexpected message, bytes buffered
    /// after the SSL response, ...). The detail is ours, never server-supplied text.
    #[error("protocol violation by upstream during {phase}: {detail}")]
    Protocol { phase: Phase, detail: String },
    #[error("upstream requested authentication method {code}, which the proxy does not support")]
    UnsupportedAuth { code: i32 },
    /// Auth code 14: the server wants an IdP / IAM Identity Center token (what Redshift asks
    /// drivers that sent `idp_type`), not the temporary IAM password the proxy holds.
    #[error(
        "upstream requested an identity-provider token (auth code 14, IAM Identity Center / \
         native IdP); the proxy logs in with temporary IAM database credentials only"
    )]
    IdentityTokenRequested,
    #[error(
        "upstream requested Redshift digest algorithm {algorithm}; only 0 (SHA-256) is supported"
    )]
    UnsupportedDigest { algorithm: i32 },
    #[error("upstream offered no supported SASL mechanism (offered: {offered})")]
    NoSaslMechanism { offered: String },
    /// SCRAM failed on the client side, e.g. the server's signature did not verify (the
    /// server does not know the password: possibly not the real server).
    #[error("SCRAM exchange with upstream failed: {detail}")]
    Scram { detail: String },
    /// The upstream refused the credentials (SQLSTATE 28P01 or 28000).
    #[error("upstream rejected the login: {sqlstate}: {message}")]
    AuthFailed { sqlstate: String, message: String },
    /// Any other ErrorResponse during login (e.g. 3D000 unknown database, 53300 too many
    /// connections).
    #[error("upstream error during login: {severity} {sqlstate}: {message}")]
    Server {
        sqlstate: String,
        severity: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    #[error("cannot build the upstream startup message: {0}")]
    InvalidStartupParameter(#[from] StartupEncodeError),
    /// The credential cannot be encoded for the requested method (e.g. it contains NUL).
    #[error("the database credential cannot be sent to the upstream: {reason}")]
    UnusableCredential { reason: &'static str },
    #[error("upstream closed the connection during {phase}")]
    Closed { phase: Phase },
    #[error("i/o error with upstream during {phase}: {source}")]
    Io {
        phase: Phase,
        #[source]
        source: std::io::Error,
    },
}

fn as_seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl UpstreamError {
    /// True when the upstream refused the credentials: the caller evicts its cached
    /// credential and retries once with a fresh one.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, UpstreamError::AuthFailed { .. })
    }

    /// True when the failure is what a workgroup that is resuming does to the first
    /// connections: refuse or reset them, close them mid-handshake, hold the handshake
    /// past the timeouts (research: redshift-server.md §8: exmergo/dex#97,
    /// redshift_connector#176), or answer "the database system is starting up" (57P03)
    /// as PostgreSQL does. Never a refused password, a certificate problem or a protocol
    /// error: retrying those only delays the answer.
    pub fn may_mean_resuming(&self) -> bool {
        use std::io::ErrorKind as K;
        let transient = |e: &std::io::Error| {
            matches!(
                e.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::BrokenPipe
                    | K::UnexpectedEof
            )
        };
        match self {
            UpstreamError::Connect { source, .. } => transient(source),
            UpstreamError::Timeout { phase, .. } | UpstreamError::Closed { phase } => {
                *phase != Phase::Cancel
            }
            UpstreamError::Io { phase, source } => *phase != Phase::Cancel && transient(source),
            UpstreamError::Server { sqlstate, .. } => sqlstate == sqlstate::CANNOT_CONNECT_NOW,
            _ => false,
        }
    }

    /// Maps an ErrorResponse received during login.
    pub(crate) fn from_error_response(e: ErrorResponse) -> Self {
        if e.code == sqlstate::INVALID_PASSWORD || e.code == sqlstate::INVALID_AUTHORIZATION {
            UpstreamError::AuthFailed {
                sqlstate: e.code,
                message: e.message,
            }
        } else {
            UpstreamError::Server {
                sqlstate: e.code,
                severity: e.severity,
                message: e.message,
                detail: e.detail,
                hint: e.hint,
            }
        }
    }

    pub(crate) fn protocol(phase: Phase, detail: impl Into<String>) -> Self {
        UpstreamError::Protocol {
            phase,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(phase: Phase, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            UpstreamError::Closed { phase }
        } else {
            UpstreamError::Io { phase, source: e }
        }
    }

    pub(crate) fn framing(phase: Phase, e: crate::net::framing::FramingError) -> Self {
        use crate::net::framing::FramingError as F;
        match e {
            F::Closed => UpstreamError::Closed { phase },
            F::Io(e) => UpstreamError::io(phase, e),
            e @ (F::BadLength { .. } | F::TooLong { .. }) => {
                UpstreamError::protocol(phase, e.to_string())
            }
        }
    }
}
