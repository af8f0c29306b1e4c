//! The pre-authentication state machine: from TCP accept to a complete StartupMessage
//! inside TLS with a verified client certificate (or to a CancelRequest).
//!
//! That is the default, `client_auth = "certificate"`. On `password` listeners no client
//! certificate is requested and the startup message is followed by a SCRAM-SHA-256
//! exchange ([`crate::frontend::password`]); on `trust` listeners the client is the
//! configured local user. Either may accept a plaintext StartupMessage (`allow_plaintext`,
//! loopback only; Unix sockets, which never carry TLS): SSLRequest is then answered `N`
//! when the listener has no certificate.
//!
//! ```text
//! plaintext ──GSSENCRequest──▶ 'N' (once) ──▶ plaintext
//!     │  ├──CancelRequest──▶ Cancel (no reply)
//!     │  ├──StartupMessage─▶ 28000 "TLS required"
//!     │  └──SSLRequest─────▶ nothing pipelined? 'S' ─▶ TLS handshake ─┐
//!     └──0x16 (direct TLS, ALPN "postgresql" required) ─▶ handshake ─┤
//!                                                                     ▼
//!                 inside TLS ──CancelRequest──▶ Cancel (no certificate needed)
//!                            └─StartupMessage─▶ verify client certificate, identity,
//!                                               parameters ─▶ Session
//! ```
//!
//! [`negotiate`] owns the socket until it returns, so it sends the client-visible
//! ErrorResponse itself wherever the client can read one (plaintext before TLS, inside TLS
//! after the handshake) and returns the error for the operator log. Everything runs under
//! the listener's login timeout.

use crate::frontend::params::{classify, ClientStartup, StartupRefusal};
use crate::frontend::password::{authenticate, PasswordAuthError};
use crate::frontend::tls::{ClientCertError, ClientTls, ALPN_POSTGRESQL};
use crate::frontend::transport::{ClientSocket, SessionStream};
use crate::net::buffered::ReadBuffered;
use crate::net::messages::negotiate_protocol_version::NegotiateProtocolVersion;
use crate::net::messages::startup::{
    read_startup_packet, CancelRequest, StartupError, StartupMessage, StartupPacket, PROTOCOL_MAJOR,
};
use crate::net::messages::ErrorResponse;
use proxy_auth::identity::{ClientIdentity, IdentityError};
use proxy_auth::principal::{ClientPrincipal, LocalAuthMethod, LocalUser};
use proxy_auth::scram::LocalUsers;
use proxy_config::ClientAuthMode;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;

/// The client connection once TLS is up, with a read buffer under TLS (see
/// [`ReadBuffered`]).
pub type ClientStream = TlsStream<ReadBuffered<TcpStream>>;

/// First byte of a TLS handshake record: a direct-TLS client (PostgreSQL 17
/// `sslnegotiation=direct`). A StartupMessage length never starts with it (max 10000).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The version a NegotiateProtocolVersion offers: the full protocol number 3.0
/// (`major << 16 | minor`), as PostgreSQL sends it (`PG_PROTOCOL_LATEST`) and libpq reads
/// it. A bare minor (0) reads as protocol 0.0, which libpq 18 rejects as a "downgrade to
/// pre-3.0 protocol version".
const NEGOTIATED_PROTOCOL_VERSION: i32 = (PROTOCOL_MAJOR as i32) << 16;

/// Time allowed to deliver a final ErrorResponse and close, once negotiation has failed
/// (the login timeout may already be spent).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time spent discarding unread client bytes after the ErrorResponse, so closing does not
/// turn into a TCP reset that destroys the error before the client reads it.
const LINGER_TIMEOUT: Duration = Duration::from_millis(500);
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// What the client side needs from a listener's configuration.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    /// `None`: the listener has no certificate and answers SSLRequest with `N` (only
    /// `password`/`trust` listeners that accept plaintext, and Unix sockets).
    pub tls: Option<Arc<ClientTls>>,
    /// Time from TCP accept to a complete StartupMessage.
    pub login_timeout: Duration,
    /// Forward the client's `options` startup parameter.
    pub allow_options: bool,
    /// How clients authenticate.
    pub auth: ClientAuth,
    /// Accept a StartupMessage outside TLS.
    pub accepts_plaintext: bool,
}

/// How a listener's clients authenticate (`client_auth`).
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// A client certificate verified against the listener's CAs.
    Certificate,
    /// SCRAM-SHA-256 against these local users.
    Password(Arc<LocalUsers>),
    /// Every client is this local user.
    Trust(String),
}

impl ClientAuth {
    pub fn from_listener(listener: &proxy_config::ListenerConfig) -> ClientAuth {
        match listener.client_auth {
            ClientAuthMode::Certificate => ClientAuth::Certificate,
            ClientAuthMode::Password => {
                ClientAuth::Password(Arc::new(LocalUsers::from_listener(listener)))
            }
            ClientAuthMode::Trust => {
                ClientAuth::Trust(listener.trust_user.clone().unwrap_or_default())
            }
        }
    }

    /// `certificate`, `password` or `trust`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientAuth::Certificate => "certificate",
            ClientAuth::Password(_) => "password",
            ClientAuth::Trust(_) => "trust",
        }
    }
}

impl FrontendSettings {
    /// Loads the listener's TLS files (when it has any) and takes its login settings.
    pub fn from_listener(
        listener: &proxy_config::ListenerConfig,
    ) -> Result<FrontendSettings, crate::frontend::tls::TlsSetupError> {
        let tls = match listener.tls_cert {
            Some(_) => Some(Arc::new(ClientTls::from_config(listener)?)),
            None => None,
        };
        Ok(FrontendSettings {
            tls,
            login_timeout: listener.login_timeout,
            allow_options: listener.allow_options,
            auth: ClientAuth::from_listener(listener),
            accepts_plaintext: listener.accepts_plaintext(),
        })
    }
}

/// The outcome of a successful negotiation.
#[derive(Debug)]
pub enum Negotiated {
    /// A client that completed TLS, presented a valid certificate and a StartupMessage.
    Session(Box<ClientSession>),
    /// A CancelRequest. No reply is ever sent to it; the connection is already closed.
    Cancel(CancelTarget),
}

/// The backend a CancelRequest names (the proxy's own BackendKeyData values).
#[derive(Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub pid: i32,
    /// 4 bytes for protocol 3.0; 4..=256 accepted.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for CancelTarget {
    // The key is the secret that authorises the cancel: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTarget")
            .field("pid", &self.pid)
            .field("key_len", &self.key.len())
            .finish()
    }
}

impl From<CancelRequest> for CancelTarget {
    fn from(c: CancelRequest) -> Self {
        CancelTarget {
            pid: c.pid,
            key: c.key,
        }
    }
}

/// An authenticated client, ready for policy, credentials and the upstream login.
pub struct ClientSession {
    pub stream: SessionStream,
    /// Who the client is: its certificate identity, or a local user.
    pub principal: ClientPrincipal,
    pub startup: ClientStartup,
    /// `None` for a plaintext connection.
    pub tls: Option<ClientTlsInfo>,
    /// The server name (SNI) the client asked for, lowercase; `None` when it sent none.
    pub server_name: Option<String>,
}

/// The TLS session a client negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsInfo {
    /// e.g. `TLSv1.3`
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`
    pub cipher: String,
}

impl ClientSession {
    /// The client certificate's identity (`client_auth = "certificate"`).
    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.principal.certificate()
    }
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("principal", &self.principal)
            .field("startup", &self.startup)
            .field("tls", &self.tls)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why negotiation failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendErrorKind {
    #[error("client disconnected during startup")]
    Disconnected,
    #[error("i/o error during startup: {0}")]
    Io(#[source] io::Error),
    #[error("login timeout expired")]
    LoginTimeout,
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
    #[error("password authentication of user {user:?} failed: {error}")]
    Password {
        user: String,
        error: PasswordAuthError,
    },
}

impl FrontendErrorKind {
    /// SQLSTATE of the refusal, whether or not the client could be told.
    pub fn sqlstate(&self) -> Option<&'static str> {
        self.client_error().map(|(code, _)| code)
    }

    /// The SQLSTATE and ErrorResponse for the client, or `None` when there is nobody to
    /// tell (the client left, the TLS handshake failed) or nothing may be said (cancels).
    fn client_error(&self) -> Option<(&'static str, ErrorResponse)> {
        use FrontendErrorKind as K;
        const PROTOCOL: &str = "08P01";
        const AUTH: &str = "28000";
        let (code, e) = match self {
            K::Disconnected | K::Io(_) | K::TlsHandshake(_) | K::TlsNotConfigured => return None,
            K::Password { user, error } => {
                let (code, message, detail) = error.client_error(user)?;
                let mut response = ErrorResponse::fatal(code, message);
                if let Some(detail) = detail {
                    response = response.with_detail(detail);
                }
                return Some((code, response));
            }
            K::PlaintextNotAllowed => (
                AUTH,
                ErrorResponse::fatal(AUTH, "this proxy requires TLS")
                    .with_hint("Connect with sslmode=require (or verify-ca / verify-full)."),
            ),
            // A malformed cancel gets no reply, like any cancel.
            K::Startup(StartupError::BadCancelRequest { .. }) => return None,
            K::LoginTimeout => (
                PROTOCOL,
                ErrorResponse::fatal(PROTOCOL, "login timeout expired"),
            ),
            K::Startup(e) => (PROTOCOL, ErrorResponse::fatal(PROTOCOL, e.to_string())),
            K::PipelinedAfterSslRequest => (
                PROTOCOL,
                ErrorResponse::fatal(PROTOCOL, self.to_string()).with_detail(
                    "This could be either a client-software bug or evidence of an attempted \
                     man-in-the-middle attack.",
                ),
            ),
            K::UnexpectedNegotiation(m) => (PROTOCOL, ErrorResponse::fatal(PROTOCOL, *m)),
            K::DirectTlsWithoutAlpn => (
                PROTOCOL,
                ErrorResponse::fatal(
                    PROTOCOL,
                    "direct SSL connection requires ALPN protocol \"postgresql\"",
                ),
            ),
            K::TlsRequired => (
                AUTH,
                ErrorResponse::fatal(AUTH, "this proxy requires TLS with a client certificate")
                    .with_hint(
                        "Connect with sslmode=require (or verify-ca / verify-full) and \
                         provide a client certificate and key (sslcert, sslkey).",
                    ),
            ),
            K::ClientCert(ClientCertError::Missing) => (
                AUTH,
                ErrorResponse::fatal(AUTH, "a client certificate is required")
                    .with_hint("Provide a client certificate and key (sslcert, sslkey)."),
            ),
            K::ClientCert(e) => (AUTH, ErrorResponse::fatal(AUTH, e.to_string())),
            K::Identity(_) => (
                AUTH,
                ErrorResponse::fatal(AUTH, "the client certificate cannot be read"),
            ),
            K::Refused(r) => (AUTH, ErrorResponse::fatal(AUTH, r.to_string())),
        };
        Some((code, e))
    }
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

/// A failed negotiation: the cause, and whether the client was sent an ErrorResponse.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct FrontendError {
    pub kind: FrontendErrorKind,
    /// An ErrorResponse describing `kind` was written to the client.
    pub client_notified: bool,
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
    fn of(connection: &rustls::ServerConnection) -> Self {
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
    pub fn sqlstate(&self) -> Option<&'static str> {
        self.kind.sqlstate()
    }

    pub fn client_notified(&self) -> bool {
        self.client_notified
    }

    fn silent(kind: FrontendErrorKind) -> Self {
        FrontendError {
            kind,
            client_notified: false,
            peer: None,
        }
    }
}

/// Runs the pre-authentication phase on a freshly accepted socket.
pub async fn negotiate(
    socket: impl Into<ClientSocket>,
    settings: &FrontendSettings,
) -> Result<Negotiated, FrontendError> {
    negotiate_gated(socket, settings, None).await
}

/// [`negotiate`], with the TLS handshake run only while holding a permit of `handshakes`.
///
/// The permit bounds the CPU spent on handshakes at once. It is taken only after the
/// client's plaintext request has fully arrived, so connections that stall before TLS
/// (slowloris) wait out their login timeout without holding one; waiting for a permit
/// counts against the login timeout.
pub async fn negotiate_gated(
    socket: impl Into<ClientSocket>,
    settings: &FrontendSettings,
    handshakes: Option<&tokio::sync::Semaphore>,
) -> Result<Negotiated, FrontendError> {
    let deadline = Instant::now() + settings.login_timeout;
    let mut tcp = match socket.into() {
        ClientSocket::Tcp(tcp) => tcp,
        ClientSocket::Unix(unix) => return negotiate_unix(unix, settings, deadline).await,
    };

    let direct = match direct_tls(&tcp, settings, deadline).await {
        Ok(true) => true,
        Ok(false) => match plaintext_phase(&mut tcp, settings, deadline).await {
            Ok(PlainOutcome::Cancel(c)) => return Ok(Negotiated::Cancel(c)),
            Ok(PlainOutcome::StartTls) => false,
            Ok(PlainOutcome::Startup(msg)) => {
                return match startup_phase(&mut tcp, settings, &msg, None, deadline).await {
                    Ok((principal, startup)) => Ok(plaintext_session(
                        SessionStream::Tcp(tcp),
                        principal,
                        startup,
                    )),
                    Err(kind) => Err(fail(&mut tcp, kind).await),
                }
            }
            Err(kind) => return Err(fail(&mut tcp, kind).await),
        },
        Err(kind) => return Err(fail(&mut tcp, kind).await),
    };
    let Some(tls_settings) = &settings.tls else {
        // `direct_tls` and `plaintext_phase` only start TLS on listeners that have it.
        return Err(FrontendError::silent(FrontendErrorKind::TlsNotConfigured));
    };

    let permit = match handshakes {
        Some(gate) => match timeout_at(deadline, gate.acquire()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => return Err(FrontendError::silent(FrontendErrorKind::LoginTimeout)),
        },
        None => None,
    };
    // During the handshake there is no channel the client could read an error from.
    // Buffered only from here on: everything the client sends now is TLS.
    let accept = tls_settings.acceptor().accept(ReadBuffered::new(tcp));
    let mut tls = match timeout_at(deadline, accept).await {
        Err(_) => return Err(FrontendError::silent(FrontendErrorKind::LoginTimeout)),
        Ok(Err(e)) => return Err(FrontendError::silent(FrontendErrorKind::TlsHandshake(e))),
        Ok(Ok(tls)) => tls,
    };
    drop(permit);

    match tls_phase(&mut tls, settings, deadline, direct).await {
        Ok(TlsOutcome::Cancel(c)) => Ok(Negotiated::Cancel(c)),
        Ok(TlsOutcome::Session { principal, startup }) => {
            let (version, cipher) = crate::net::tls_names(tls.get_ref().1);
            let server_name = tls.get_ref().1.server_name().map(str::to_owned);
            Ok(Negotiated::Session(Box::new(ClientSession {
                stream: SessionStream::Tls(Box::new(tls)),
                principal,
                startup,
                tls: Some(ClientTlsInfo { version, cipher }),
                server_name,
            })))
        }
        Err(kind) => {
            let peer = RefusedPeer::of(tls.get_ref().1);
            let mut error = fail(&mut tls, kind).await;
            error.peer = Some(Box::new(peer));
            Err(error)
        }
    }
}

/// A Unix-socket client: never TLS (libpq does not use it over Unix sockets).
async fn negotiate_unix(
    mut unix: UnixStream,
    settings: &FrontendSettings,
    deadline: Instant,
) -> Result<Negotiated, FrontendError> {
    match plaintext_phase(&mut unix, settings, deadline).await {
        Ok(PlainOutcome::Cancel(c)) => Ok(Negotiated::Cancel(c)),
        Ok(PlainOutcome::Startup(msg)) => {
            match startup_phase(&mut unix, settings, &msg, None, deadline).await {
                Ok((principal, startup)) => Ok(plaintext_session(
                    SessionStream::Unix(unix),
                    principal,
                    startup,
                )),
                Err(kind) => Err(fail(&mut unix, kind).await),
            }
        }
        // A Unix-socket listener has no TLS, so its SSLRequests were answered `N`.
        Ok(PlainOutcome::StartTls) => {
            Err(FrontendError::silent(FrontendErrorKind::TlsNotConfigured))
        }
        Err(kind) => Err(fail(&mut unix, kind).await),
    }
}

fn plaintext_session(
    stream: SessionStream,
    principal: ClientPrincipal,
    startup: ClientStartup,
) -> Negotiated {
    Negotiated::Session(Box::new(ClientSession {
        stream,
        principal,
        startup,
        tls: None,
        server_name: None,
    }))
}

/// Whether the client starts with a TLS handshake right away (PostgreSQL 17
/// `sslnegotiation=direct`), which only a listener with a certificate can answer.
async fn direct_tls(
    tcp: &TcpStream,
    settings: &FrontendSettings,
    deadline: Instant,
) -> Result<bool, FrontendErrorKind> {
    let mut first = [0u8; 1];
    if within(deadline, tcp.peek(&mut first)).await? == 0 {
        return Err(FrontendErrorKind::Disconnected);
    }
    match (first[0] == TLS_HANDSHAKE_RECORD, settings.tls.is_some()) {
        (true, true) => Ok(true),
        // The client waits for a ServerHello and could not read an ErrorResponse.
        (true, false) => Err(FrontendErrorKind::TlsNotConfigured),
        (false, _) => Ok(false),
    }
}

enum PlainOutcome {
    Cancel(CancelTarget),
    /// `S` was sent: the TLS handshake comes next.
    StartTls,
    /// A StartupMessage outside TLS, on a listener that accepts one.
    Startup(StartupMessage),
}

/// Sockets whose unread bytes can be probed without blocking.
trait TryRead {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl TryRead for TcpStream {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }
}

impl TryRead for UnixStream {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        UnixStream::try_read(self, buf)
    }
}

async fn plaintext_phase<S: AsyncRead + AsyncWrite + TryRead + Unpin>(
    tcp: &mut S,
    settings: &FrontendSettings,
    deadline: Instant,
) -> Result<PlainOutcome, FrontendErrorKind> {
    let mut gss_answered = false;
    let mut ssl_declined = false;
    loop {
        match read_packet(tcp, deadline).await? {
            StartupPacket::SslRequest if settings.tls.is_none() => {
                if ssl_declined {
                    return Err(FrontendErrorKind::UnexpectedNegotiation(
                        "duplicate SSL negotiation request",
                    ));
                }
                ssl_declined = true;
                within(deadline, tcp.write_all(b"N")).await?;
            }
            StartupPacket::SslRequest => {
                // Anything after the SSLRequest was sent before our answer, in plaintext,
                // and would otherwise be taken as coming from inside TLS
                // (CVE-2021-23214 / CVE-2021-3935).
                if bytes_already_sent(tcp)? {
                    return Err(FrontendErrorKind::PipelinedAfterSslRequest);
                }
                within(deadline, tcp.write_all(b"S")).await?;
                return Ok(PlainOutcome::StartTls);
            }
            StartupPacket::GssEncRequest => {
                if gss_answered {
                    return Err(FrontendErrorKind::UnexpectedNegotiation(
                        "duplicate GSSAPI negotiation request",
                    ));
                }
                gss_answered = true;
                within(deadline, tcp.write_all(b"N")).await?;
            }
            StartupPacket::CancelRequest(c) => return Ok(PlainOutcome::Cancel(c.into())),
            StartupPacket::Startup(msg) if settings.accepts_plaintext => {
                return Ok(PlainOutcome::Startup(msg))
            }
            StartupPacket::Startup(_) => {
                return Err(match settings.auth {
                    ClientAuth::Certificate => FrontendErrorKind::TlsRequired,
                    _ => FrontendErrorKind::PlaintextNotAllowed,
                })
            }
        }
    }
}

// Short-lived return value of one private function; boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum TlsOutcome {
    Cancel(CancelTarget),
    Session {
        principal: ClientPrincipal,
        startup: ClientStartup,
    },
}

async fn tls_phase(
    tls: &mut ClientStream,
    settings: &FrontendSettings,
    deadline: Instant,
    direct: bool,
) -> Result<TlsOutcome, FrontendErrorKind> {
    if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(FrontendErrorKind::DirectTlsWithoutAlpn);
    }
    let msg: StartupMessage = match read_packet(tls, deadline).await? {
        StartupPacket::CancelRequest(c) => return Ok(TlsOutcome::Cancel(c.into())),
        StartupPacket::SslRequest => {
            return Err(FrontendErrorKind::UnexpectedNegotiation(
                "SSL negotiation request inside an encrypted connection",
            ))
        }
        StartupPacket::GssEncRequest => {
            return Err(FrontendErrorKind::UnexpectedNegotiation(
                "GSSAPI negotiation request inside an encrypted connection",
            ))
        }
        StartupPacket::Startup(msg) => msg,
    };

    let certificate = match (&settings.auth, &settings.tls) {
        (ClientAuth::Certificate, Some(client_tls)) => {
            let chain = tls.get_ref().1.peer_certificates();
            client_tls.verify_peer(chain)?;
            let leaf = chain
                .and_then(|c| c.first())
                .ok_or(ClientCertError::Missing)?;
            Some(ClientIdentity::from_der(leaf)?)
        }
        // `password` listeners request no certificate; `trust` ignores any.
        _ => None,
    };
    let (principal, startup) = startup_phase(tls, settings, &msg, certificate, deadline).await?;
    Ok(TlsOutcome::Session { principal, startup })
}

/// After the StartupMessage, wherever it arrived: checks its parameters, negotiates the
/// protocol version, and authenticates the client per `client_auth` (`certificate`: the
/// identity verified by the caller; `password`: SCRAM; `trust`: the listener's user).
async fn startup_phase<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    settings: &FrontendSettings,
    msg: &StartupMessage,
    certificate: Option<ClientIdentity>,
    deadline: Instant,
) -> Result<(ClientPrincipal, ClientStartup), FrontendErrorKind> {
    let classified = classify(msg, settings.allow_options)?;

    // Newer minors (3.2, greased 3.9999) continue at 3.0. Protocol options alone at 3.0 are
    // dropped silently: the Redshift JDBC driver sends `_pq_.compression` at 3.0 and fails
    // on a NegotiateProtocolVersion it does not expect.
    if msg.minor > 0 {
        let v = NegotiateProtocolVersion {
            newest_minor: NEGOTIATED_PROTOCOL_VERSION,
            unsupported_options: classified.protocol_options.clone(),
        };
        within(deadline, async {
            stream.write_all(&v.encode()).await?;
            stream.flush().await
        })
        .await?;
    }

    let principal = match (&settings.auth, certificate) {
        (ClientAuth::Certificate, Some(identity)) => ClientPrincipal::Certificate(identity),
        // Certificate listeners always have TLS and verify before getting here.
        (ClientAuth::Certificate, None) => return Err(ClientCertError::Missing.into()),
        (ClientAuth::Password(users), _) => {
            let user = &classified.startup.user;
            let local = authenticate(stream, users, user, deadline)
                .await
                .map_err(|error| FrontendErrorKind::Password {
                    user: user.clone(),
                    error,
                })?;
            ClientPrincipal::LocalUser(local)
        }
        (ClientAuth::Trust(name), _) => ClientPrincipal::LocalUser(LocalUser {
            name: name.clone(),
            method: LocalAuthMethod::Trust,
        }),
    };
    Ok((principal, classified.startup))
}

async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: Instant,
) -> Result<StartupPacket, FrontendErrorKind> {
    let body = within(deadline, read_startup_packet(r))
        .await?
        .ok_or(FrontendErrorKind::Disconnected)??;
    Ok(StartupPacket::parse(&body)?)
}

/// Whether the client already sent bytes we have not read (non-blocking).
fn bytes_already_sent<S: TryRead>(tcp: &S) -> Result<bool, FrontendErrorKind> {
    // The packet reader has no buffer of its own, so the kernel's socket buffer is the
    // only place pipelined bytes can be. The previous read left the socket marked
    // readable, so `try_read` really asks the kernel.
    let mut probe = [0u8; 512];
    match tcp.try_read(&mut probe) {
        Ok(0) => Err(FrontendErrorKind::Disconnected),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Runs `fut` until the login deadline.
async fn within<T, F>(deadline: Instant, fut: F) -> Result<T, FrontendErrorKind>
where
    F: Future<Output = io::Result<T>>,
{
    match timeout_at(deadline, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(FrontendErrorKind::LoginTimeout),
    }
}

/// Sends the client the ErrorResponse for `kind` (when there is one), closes our side, and
/// builds the error for the operator log.
async fn fail<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    kind: FrontendErrorKind,
) -> FrontendError {
    let Some((_, response)) = kind.client_error() else {
        return FrontendError::silent(kind);
    };
    let wire = response.encode();
    let sent = matches!(
        timeout(REPORT_TIMEOUT, async {
            stream.write_all(&wire).await?;
            stream.flush().await?;
            stream.shutdown().await
        })
        .await,
        Ok(Ok(()))
    );
    if sent {
        let _ = timeout(LINGER_TIMEOUT, discard_input(stream)).await;
    }
    FrontendError {
        kind,
        client_notified: sent,
        peer: None,
    }
}

async fn discard_input<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < LINGER_MAX_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::test_support::*;
    use crate::net::messages::startup::{
        encode_cancel_request, encode_gssenc_request, encode_ssl_request,
    };
    use rustls::pki_types::ServerName;

    fn session(n: Negotiated) -> ClientSession {
        match n {
            Negotiated::Session(s) => *s,
            Negotiated::Cancel(c) => panic!("expected a session, got {c:?}"),
        }
    }

    /// A TLS client with `cert` sends `startup_msg`; returns the client stream and outcome.
    async fn tls_login(
        pki: &TestPki,
        cert: ClientCert,
        startup_msg: &[u8],
    ) -> (
        tokio_rustls::client::TlsStream<TcpStream>,
        Result<Negotiated, FrontendError>,
    ) {
        let (addr, task) = serve_one(pki.settings()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = start_tls(tcp, &pki.connector(cert, TLS13, &[]))
            .await
            .unwrap();
        tls.write_all(startup_msg).await.unwrap();
        let result = outcome(task).await;
        (tls, result)
    }

    /// Asserts a refused login: the client read `sqlstate` with a message containing
    /// `message`, and the server reports the same and that the client was told.
    async fn assert_refused<R: AsyncRead + Unpin>(
        client: &mut R,
        result: Result<Negotiated, FrontendError>,
        sqlstate: &str,
        message: &str,
    ) -> FrontendError {
        let e = read_error(client).await;
        assert_eq!(e.code, sqlstate, "{e:?}");
        assert_eq!(e.severity, "FATAL");
        assert!(
            e.message.contains(message),
            "{:?} lacks {message:?}",
            e.message
        );
        let err = result.expect_err("negotiation must fail");
        assert_eq!(err.sqlstate(), Some(sqlstate));
        assert!(err.client_notified(), "{err}");
        err
    }

    #[tokio::test]
    async fn valid_certificate_yields_a_session() {
        let pki = TestPki::new();
        let msg = startup(
            0,
            &[
                ("user", "a&user=b"),
                ("database", "dev"),
                ("application_name", "psql"),
                ("driver_version", "x"),
            ],
        );
        let (_client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
        let s = session(result.unwrap());
        assert_eq!(s.identity().unwrap().common_name.as_deref(), Some("alice"));
        assert_eq!(s.startup.user, "a&user=b");
        assert_eq!(s.startup.database, "dev");
        assert_eq!(
            s.startup.params,
            [("application_name".to_string(), "psql".to_string())]
        );
        assert_eq!(s.startup.dropped_params, ["driver_version"]);
        let tls = s.tls.unwrap();
        assert_eq!(tls.version, "TLSv1.3");
        assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
    }

    #[tokio::test]
    async fn tls12_client_with_certificate_works() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = start_tls(tcp, &pki.connector(ClientCert::Valid, TLS12, &[]))
            .await
            .unwrap();
        tls.write_all(&startup(0, &[("user", "u")])).await.unwrap();
        let s = session(outcome(task).await.unwrap());
        assert_eq!(s.tls.as_ref().unwrap().version, "TLSv1.2");
        assert_eq!(
            s.startup.database, "",
            "no database: the policy defaults it"
        );
    }

    #[tokio::test]
    async fn ssl_request_client_offering_alpn_postgresql_works() {
        // libpq 17 offers ALPN "postgresql" even on the SSLRequest path.
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = pki.connector(ClientCert::Valid, TLS13, &[b"postgresql"]);
        let mut tls = start_tls(tcp, &connector).await.unwrap();
        tls.write_all(&startup(0, &[("user", "u")])).await.unwrap();
        session(outcome(task).await.unwrap());
    }

    #[tokio::test]
    async fn newer_minor_versions_are_negotiated_down_to_3_0() {
        for minor in [2u16, 9999] {
            let pki = TestPki::new();
            let msg = startup(
                minor,
                &[("user", "u"), ("_pq_.test_protocol_negotiation", "")],
            );
            let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
            let m = read_msg(&mut client).await;
            assert_eq!(m.tag, b'v');
            assert_eq!(
                NegotiateProtocolVersion::parse(&m.body).unwrap(),
                NegotiateProtocolVersion {
                    newest_minor: NEGOTIATED_PROTOCOL_VERSION,
                    unsupported_options: vec!["_pq_.test_protocol_negotiation".into()],
                }
            );
            let s = session(result.unwrap());
            assert_eq!(s.startup.protocol_minor, 0);
            assert_eq!(s.startup.requested_protocol_minor, minor);
            assert!(
                s.startup.params.is_empty(),
                "_pq_ options are never forwarded"
            );
        }
    }

    #[tokio::test]
    async fn protocol_options_at_3_0_are_dropped_without_negotiation() {
        // The Redshift JDBC driver sends `_pq_.compression` at 3.0 and cannot handle `v`.
        let pki = TestPki::new();
        let msg = startup(0, &[("user", "u"), ("_pq_.compression", "lz4")]);
        let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
        let s = session(result.unwrap());
        assert_eq!(s.startup.dropped_params, ["_pq_.compression"]);
        drop(s); // closes the server side: the client must see EOF, not a `v` message
        expect_eof(&mut client).await;
    }

    #[tokio::test]
    async fn startup_packet_length_is_checked() {
        let pki = TestPki::new();
        for len in [0i32, 7, 10_001, -8] {
            let (addr, task) = serve_one(pki.settings()).await;
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&len.to_be_bytes()).await.unwrap();
            tcp.write_all(&[0u8; 8]).await.unwrap();
            assert_refused(
                &mut tcp,
                outcome(task).await,
                "08P01",
                "invalid length of startup packet",
            )
            .await;
        }
    }

    #[tokio::test]
    async fn plaintext_startup_message_is_told_tls_is_required() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&startup(0, &[("user", "u")])).await.unwrap();
        let e = read_error(&mut tcp).await;
        assert_eq!(e.code, "28000");
        assert!(e.message.contains("requires TLS"), "{}", e.message);
        assert!(e.hint.unwrap().contains("sslmode=require"));
        let err = outcome(task).await.unwrap_err();
        assert!(matches!(err.kind, FrontendErrorKind::TlsRequired));
        assert!(err.client_notified());
    }

    #[tokio::test]
    async fn bytes_pipelined_after_ssl_request_are_refused() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut bytes = encode_ssl_request().to_vec();
        bytes.extend_from_slice(&startup(0, &[("user", "injected")]));
        tcp.write_all(&bytes).await.unwrap();
        let err = assert_refused(
            &mut tcp,
            outcome(task).await,
            "08P01",
            "unencrypted data after SSL request",
        )
        .await;
        assert!(matches!(
            err.kind,
            FrontendErrorKind::PipelinedAfterSslRequest
        ));
    }

    #[tokio::test]
    async fn second_ssl_request_inside_tls_is_a_protocol_violation() {
        let pki = TestPki::new();
        let (mut client, result) = tls_login(&pki, ClientCert::Valid, &encode_ssl_request()).await;
        assert_refused(&mut client, result, "08P01", "SSL negotiation request").await;
    }

    #[tokio::test]
    async fn gssenc_request_is_declined_once_then_tls_proceeds() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&encode_gssenc_request()).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], b'N');
        let mut tls = start_tls(tcp, &pki.connector(ClientCert::Valid, TLS13, &[]))
            .await
            .unwrap();
        tls.write_all(&startup(0, &[("user", "u")])).await.unwrap();
        session(outcome(task).await.unwrap());
    }

    #[tokio::test]
    async fn second_gssenc_request_is_a_protocol_violation() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&encode_gssenc_request()).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer[0], b'N');
        tcp.write_all(&encode_gssenc_request()).await.unwrap();
        assert_refused(&mut tcp, outcome(task).await, "08P01", "duplicate GSSAPI").await;
    }

    #[tokio::test]
    async fn plaintext_cancel_request_gets_no_reply() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&encode_cancel_request(4242, &[9, 8, 7, 6]))
            .await
            .unwrap();
        match outcome(task).await.unwrap() {
            Negotiated::Cancel(c) => assert_eq!(
                c,
                CancelTarget {
                    pid: 4242,
                    key: vec![9, 8, 7, 6]
                }
            ),
            Negotiated::Session(_) => panic!("expected a cancel"),
        }
        expect_eof(&mut tcp).await;
    }

    #[tokio::test]
    async fn malformed_cancel_request_gets_no_reply() {
        let pki = TestPki::new();
        let (addr, task) = serve_one(pki.settings()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&encode_cancel_request(1, &[1, 2]))
            .await
            .unwrap();
        let err = outcome(task).await.unwrap_err();
        assert!(!err.client_notified());
        expect_eof(&mut tcp).await;
    }

    #[tokio::test]
    async fn cancel_request_inside_tls_needs_no_client_certificate() {
        let pki = TestPki::new();
        let key = [0x5au8; 32];
        let (mut client, result) =
            tls_login(&pki, ClientCert::None, &encode_cancel_request(7, &key)).await;
        match result.unwrap() {
            Negotiated::Cancel(c) => assert_eq!((c.pid, c.key), (7, key.to_vec())),
            Negotiated::Session(_) => panic!("expected a cancel"),
        }
        expect_eof(&mut client).await;
    }

    #[tokio::test]
    async fn client_certificate_problems_are_reported_with_sqlstate_28000() {
        let cases = [
            (
                ClientCert::None,
                "a client certificate is required",
                ClientCertError::Missing,
            ),
            (ClientCert::Expired, "expired", ClientCertError::Expired),
            (
                ClientCert::NotYetValid,
                "not yet valid",
                ClientCertError::NotYetValid,
            ),
            (ClientCert::Revoked, "revoked", ClientCertError::Revoked),
            (
                ClientCert::OtherCa,
                "not issued by a trusted certificate authority",
                ClientCertError::UnknownIssuer,
            ),
            (
                ClientCert::ServerAuthOnly,
                "not valid for client authentication",
                ClientCertError::WrongUsage,
            ),
        ];
        let pki = TestPki::new();
        for (cert, message, expected) in cases {
            let (mut client, result) = tls_login(&pki, cert, &startup(0, &[("user", "u")])).await;
            let err = assert_refused(&mut client, result, "28000", message).await;
            match err.kind {
                FrontendErrorKind::ClientCert(got) => assert_eq!(got, expected, "{cert:?}"),
                other => panic!("{cert:?}: unexpected {other}"),
            }
        }
    }

    #[tokio::test]
    async fn protocol_major_other_than_3_is_refused() {
        let pki = TestPki::new();
        let mut msg = startup(0, &[("user", "u")]);
        msg[4..6].copy_from_slice(&2u16.to_be_bytes());
        let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
        assert_refused(
            &mut client,
            result,
            "08P01",
            "unsupported frontend protocol 2.0",
        )
        .await;
    }

    #[tokio::test]
    async fn startup_message_contents_are_validated() {
        let pki = TestPki::new();
        let mut not_utf8 = startup(0, &[("user", "u"), ("application_name", "ab")]);
        let at = not_utf8.len() - 3;
        not_utf8[at] = 0xff;
        let mut no_terminator = startup(0, &[("user", "u")]);
        let last = no_terminator.len() - 1;
        no_terminator[last] = b'x';
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (not_utf8, "08P01", "invalid byte sequence"),
            (no_terminator, "08P01", "invalid startup packet layout"),
            (
                startup(0, &[("database", "d")]),
                "28000",
                "no user name specified",
            ),
            (
                startup(0, &[("user", "u"), ("replication", "database")]),
                "28000",
                "replication connections are not supported",
            ),
        ];
        for (msg, sqlstate, message) in cases {
            let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
            assert_refused(&mut client, result, sqlstate, message).await;
        }
    }

    #[tokio::test]
    async fn login_timeout_before_and_after_tls() {
        let pki = TestPki::new();
        let mut settings = pki.settings();
        settings.login_timeout = Duration::from_millis(300);

        // Plaintext: the client connects and says nothing.
        let (addr, task) = serve_one(settings.clone()).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let err = assert_refused(&mut tcp, outcome(task).await, "08P01", "timeout").await;
        assert!(matches!(err.kind, FrontendErrorKind::LoginTimeout));

        // Inside TLS: the handshake completes, then a partial StartupMessage.
        let (addr, task) = serve_one(settings.clone()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = start_tls(tcp, &pki.connector(ClientCert::Valid, TLS13, &[]))
            .await
            .unwrap();
        tls.write_all(&startup(0, &[("user", "u")])[..6])
            .await
            .unwrap();
        assert_refused(&mut tls, outcome(task).await, "08P01", "timeout").await;
    }

    #[tokio::test]
    async fn direct_tls_requires_alpn_postgresql() {
        let pki = TestPki::new();
        let name = || ServerName::try_from("localhost").unwrap();

        let (addr, task) = serve_one(pki.settings()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = pki.connector(ClientCert::Valid, TLS13, &[b"postgresql"]);
        let mut tls = connector.connect(name(), tcp).await.unwrap();
        tls.write_all(&startup(0, &[("user", "u")])).await.unwrap();
        session(outcome(task).await.unwrap());

        let (addr, task) = serve_one(pki.settings()).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = pki.connector(ClientCert::Valid, TLS13, &[]);
        let mut tls = connector.connect(name(), tcp).await.unwrap();
        assert_refused(&mut tls, outcome(task).await, "08P01", "ALPN").await;
    }

    #[tokio::test]
    async fn random_input_never_panics_or_hangs() {
        use rand::{Rng, SeedableRng};
        let pki = TestPki::new();
        let mut settings = pki.settings();
        settings.login_timeout = Duration::from_secs(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xf022);
        for round in 0..150 {
            let inside_tls = round % 3 == 0;
            let len = rng.random_range(0..96);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Plausible length words and codes reach the deeper paths more often.
            if junk.len() >= 8 && rng.random_bool(0.6) {
                let declared = rng.random_range(8..=junk.len() as i32 + 2);
                junk[..4].copy_from_slice(&declared.to_be_bytes());
                let code = [3i32 << 16, (3 << 16) | 2, 80877102, 80877103, 80877104]
                    [rng.random_range(0..5)];
                junk[4..8].copy_from_slice(&code.to_be_bytes());
            }
            let (addr, task) = serve_one(settings.clone()).await;
            let tcp = TcpStream::connect(addr).await.unwrap();
            if inside_tls {
                let connector = pki.connector(ClientCert::Valid, TLS13, &[]);
                let mut tls = start_tls(tcp, &connector).await.unwrap();
                let _ = tls.write_all(&junk).await;
                let _ = tls.shutdown().await;
                let _ = outcome(task).await;
            } else {
                let mut tcp = tcp;
                let _ = tcp.write_all(&junk).await;
                let _ = tcp.shutdown().await;
                let _ = outcome(task).await;
            }
        }
    }
}
