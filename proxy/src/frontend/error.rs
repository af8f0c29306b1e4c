//! Why negotiation failed. What the client is told about each is decided in
//! [`crate::refusal`], not here.

use crate::frontend::params::StartupRefusal;
use crate::frontend::password::PasswordAuthError;
use crate::frontend::tls::ClientCertError;
use crate::frontend::transport::SessionStream;
use crate::net::messages::startup::StartupError;
use proxy_auth::identity::{ClientIdentity, IdentityError};
use proxy_config::PasswordMethod;
use std::io;

/// Why negotiation failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendErrorKind {
    #[error("client disconnected during startup")]
    Disconnected,
    #[error("i/o error during startup: {0}")]
    Io(#[source] io::Error),
    #[error("login timeout expired")]
    LoginTimeout,
    /// No completed TLS handshake (or plaintext startup message) within
    /// `[limits] handshake_timeout`.
    #[error("handshake timeout expired")]
    HandshakeTimeout,
    /// A connection limit was reached before negotiation began; the client asked for a
    /// session and is refused on its first packet.
    #[error("connection limit reached")]
    Busy,
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("received unencrypted data after SSL request")]
    PipelinedAfterSslRequest,
    #[error("{0}")]
    UnexpectedNegotiation(&'static str),
    #[error("client sent a plaintext startup message; TLS is required")]
    TlsRequired,
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] io::Error),
    #[error("direct TLS connection without ALPN protocol \"postgresql\"")]
    DirectTlsWithoutAlpn,
    #[error("{0}")]
    ClientCert(#[from] ClientCertError),
    #[error("{0}")]
    Identity(#[from] IdentityError),
    #[error("{0}")]
    Refused(#[from] StartupRefusal),
    /// A plaintext StartupMessage on a `password`/`trust` listener that requires TLS.
    #[error("client sent a plaintext startup message; TLS is required")]
    PlaintextNotAllowed,
    /// A direct TLS handshake on a listener that has no certificate.
    #[error("client started TLS directly, but this listener has no TLS certificate")]
    TlsNotConfigured,
    #[error("password authentication ({method}) of user {user:?} failed: {error}")]
    Password {
        user: String,
        method: PasswordMethod,
        error: PasswordAuthError,
    },
}

impl From<io::Error> for FrontendErrorKind {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FrontendErrorKind::Disconnected,
            _ => FrontendErrorKind::Io(e),
        }
    }
}

/// A failed negotiation: the cause, and the connection if the client can still be told.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct FrontendError {
    pub kind: FrontendErrorKind,
    /// The client's connection, to send the refusal on; `None` when there is no usable
    /// connection left (the TLS handshake failed, the listener cannot speak TLS).
    pub stream: Option<SessionStream>,
    /// What was known of the client when it was refused inside TLS (for the audit).
    pub peer: Option<Box<RefusedPeer>>,
}

/// A client refused after its TLS handshake: its TLS session and the certificate it
/// presented, parsed whether or not it was accepted (an expired, revoked or foreign
/// certificate still names who tried). The client proved it holds the certificate's key
/// during the handshake; the rest of its content is only as trustworthy as the refusal
/// reason says.
#[derive(Debug, Clone)]
pub struct RefusedPeer {
    pub tls_version: String,
    pub tls_cipher: String,
    /// `None` when no certificate was presented or its leaf could not be parsed.
    pub certificate: Option<ClientIdentity>,
    /// The server name (SNI) the client asked for.
    pub server_name: Option<String>,
}

impl RefusedPeer {
    pub(crate) fn of(connection: &rustls::ServerConnection) -> Self {
        let (tls_version, tls_cipher) = crate::net::tls_names(connection);
        let certificate = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientIdentity::from_der(leaf).ok());
        RefusedPeer {
            tls_version,
            tls_cipher,
            certificate,
            server_name: connection.server_name().map(str::to_owned),
        }
    }
}

impl FrontendError {
    /// A failure with no connection left to report it on.
    pub(crate) fn silent(kind: FrontendErrorKind) -> Self {
        FrontendError {
            kind,
            stream: None,
            peer: None,
        }
    }

    /// A failure to report on `stream`.
    pub(crate) fn on(kind: FrontendErrorKind, stream: impl Into<SessionStream>) -> Self {
        FrontendError {
            kind,
            stream: Some(stream.into()),
            peer: None,
        }
    }
}
