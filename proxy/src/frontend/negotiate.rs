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
//! [`negotiate`] owns the socket until it returns. On failure it hands the socket back in
//! the error, wherever the client can still read a reply (plaintext before TLS, inside TLS
//! after the handshake), and the session's refusal sink tells the client
//! ([`crate::refusal`] decides what). Everything runs under the listener's login timeout.

use crate::frontend::error::{FrontendError, FrontendErrorKind, RefusedPeer};
use crate::frontend::negotiated::{CancelTarget, ClientSession, ClientTlsInfo, Negotiated};
use crate::frontend::params::{classify, ClientStartup};
use crate::frontend::password::authenticate;
use crate::frontend::settings::{ClientAuth, FrontendSettings};
use crate::frontend::tls::{ClientCertError, ALPN_POSTGRESQL};
use crate::frontend::transport::{ClientSocket, ClientStream, SessionStream};
use crate::net::buffered::ReadBuffered;
use crate::net::messages::startup::{read_startup_packet, SslResponse, StartupPacket};
use crate::net::messages::startup_message::PROTOCOL_3_0;
use crate::net::messages::{Decode, Encode, NegotiateProtocolVersion, StartupMessage};
use proxy_auth::identity::ClientIdentity;
use proxy_auth::principal::{ClientPrincipal, LocalAuthMethod, LocalUser};
use rustls::server::Acceptor;
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::LazyConfigAcceptor;

/// First byte of a TLS handshake record: a direct-TLS client (PostgreSQL 17
/// `sslnegotiation=direct`). A StartupMessage length never starts with it (max 10000).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The version a NegotiateProtocolVersion offers: the full protocol number 3.0
/// (`major << 16 | minor`), as PostgreSQL sends it (`PG_PROTOCOL_LATEST`) and libpq reads
/// it. A bare minor (0) reads as protocol 0.0, which libpq 18 rejects as a "downgrade to
/// pre-3.0 protocol version".
const NEGOTIATED_PROTOCOL_VERSION: i32 = PROTOCOL_3_0;

/// How negotiation may proceed, as admission decided before it began.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    /// Slots for TLS handshakes (`[limits] max_handshakes`), taken only once a complete
    /// ClientHello has arrived, so clients that stall before it hold none.
    pub handshakes: Option<&'a Semaphore>,
    /// Time from accept to a completed TLS handshake (or a plaintext startup message).
    pub handshake_timeout: Duration,
    /// The connection is over a limit: a CancelRequest is still served (it ends at once),
    /// anything else is refused on its first packet, never carried through a handshake.
    pub refuse_sessions: bool,
    /// Whether password logins of a user (from this client's address) are locked after
    /// repeated failures; a locked login is refused like a wrong password.
    pub password_locked: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
}

impl Gate<'_> {
    /// No slots, no limit reached, the handshake bounded only by the login timeout.
    pub fn open() -> Gate<'static> {
        Gate {
            handshakes: None,
            handshake_timeout: Duration::MAX,
            refuse_sessions: false,
            password_locked: None,
        }
    }
}

/// Runs the pre-authentication phase on a freshly accepted socket.
pub async fn negotiate(
    socket: impl Into<ClientSocket>,
    settings: &FrontendSettings,
) -> Result<Negotiated, FrontendError> {
    negotiate_gated(socket, settings, Gate::open()).await
}

/// [`negotiate`] under `gate`: the handshake bounded by its timeout and run holding one of
/// its slots, or the session refused at once.
pub async fn negotiate_gated(
    socket: impl Into<ClientSocket>,
    settings: &FrontendSettings,
    gate: Gate<'_>,
) -> Result<Negotiated, FrontendError> {
    let now = Instant::now();
    let deadline = now + settings.login_timeout;
    let handshake = Deadlines {
        at: now
            .checked_add(gate.handshake_timeout)
            .map_or(deadline, |at| at.min(deadline)),
        login: deadline,
    };
    let mut tcp = match socket.into() {
        ClientSocket::Tcp(tcp) => tcp,
        ClientSocket::Unix(unix) => return negotiate_unix(unix, settings, handshake, &gate).await,
    };

    let direct = match direct_tls(&tcp, settings, handshake).await {
        Ok(true) if gate.refuse_sessions => {
            // No reply is possible without a handshake, and none is owed.
            return Err(FrontendError::silent(FrontendErrorKind::Busy));
        }
        Ok(true) => true,
        Ok(false) => {
            match plaintext_phase(&mut tcp, settings, handshake, gate.refuse_sessions).await {
                Ok(PlainOutcome::Cancel(c)) => return Ok(Negotiated::Cancel(c)),
                Ok(PlainOutcome::StartTls) => false,
                Ok(PlainOutcome::Startup(msg)) => {
                    return match startup_phase(&mut tcp, settings, &msg, None, deadline, &gate)
                        .await
                    {
                        Ok((principal, startup)) => Ok(plaintext_session(
                            SessionStream::Tcp(tcp),
                            principal,
                            startup,
                        )),
                        Err(kind) => Err(FrontendError::on(kind, tcp)),
                    }
                }
                Err(kind) => return Err(FrontendError::on(kind, tcp)),
            }
        }
        Err(kind) => return Err(FrontendError::on(kind, tcp)),
    };
    let Some(tls_settings) = &settings.tls else {
        // `direct_tls` and `plaintext_phase` only start TLS on listeners that have it.
        return Err(FrontendError::silent(FrontendErrorKind::TlsNotConfigured));
    };

    // During the handshake there is no channel the client could read an error from.
    // Buffered only from here on: everything the client sends now is TLS.
    let hello = LazyConfigAcceptor::new(Acceptor::default(), ReadBuffered::new(tcp));
    let start = match timeout_at(handshake.at, hello).await {
        Err(_) => return Err(FrontendError::silent(handshake.expired())),
        Ok(Err(e)) => return Err(FrontendError::silent(FrontendErrorKind::TlsHandshake(e))),
        Ok(Ok(start)) => start,
    };
    let permit = match gate.handshakes {
        Some(slots) => match timeout_at(handshake.at, slots.acquire()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => return Err(FrontendError::silent(handshake.expired())),
        },
        None => None,
    };
    let accept = start.into_stream(tls_settings.server_config().clone());
    let mut tls = match timeout_at(handshake.at, accept).await {
        Err(_) => return Err(FrontendError::silent(handshake.expired())),
        Ok(Err(e)) => return Err(FrontendError::silent(FrontendErrorKind::TlsHandshake(e))),
        Ok(Ok(tls)) => tls,
    };
    drop(permit);

    match tls_phase(&mut tls, settings, deadline, direct, &gate).await {
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
            let mut error = FrontendError::on(kind, tls);
            error.peer = Some(Box::new(peer));
            Err(error)
        }
    }
}

/// The handshake deadline, and the login deadline it never exceeds.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    at: Instant,
    login: Instant,
}

impl From<Instant> for Deadlines {
    /// A wait bounded by the login deadline alone.
    fn from(login: Instant) -> Self {
        Deadlines { at: login, login }
    }
}

impl Deadlines {
    /// Which timeout a wait that ended at `at` ran into.
    fn expired(&self) -> FrontendErrorKind {
        if self.at < self.login {
            FrontendErrorKind::HandshakeTimeout
        } else {
            FrontendErrorKind::LoginTimeout
        }
    }
}

/// A Unix-socket client: never TLS (libpq does not use it over Unix sockets).
async fn negotiate_unix(
    mut unix: UnixStream,
    settings: &FrontendSettings,
    handshake: Deadlines,
    gate: &Gate<'_>,
) -> Result<Negotiated, FrontendError> {
    match plaintext_phase(&mut unix, settings, handshake, gate.refuse_sessions).await {
        Ok(PlainOutcome::Cancel(c)) => Ok(Negotiated::Cancel(c)),
        Ok(PlainOutcome::Startup(msg)) => {
            match startup_phase(&mut unix, settings, &msg, None, handshake.login, gate).await {
                Ok((principal, startup)) => Ok(plaintext_session(
                    SessionStream::Unix(unix),
                    principal,
                    startup,
                )),
                Err(kind) => Err(FrontendError::on(kind, unix)),
            }
        }
        // A Unix-socket listener has no TLS, so its SSLRequests were answered `N`.
        Ok(PlainOutcome::StartTls) => {
            Err(FrontendError::silent(FrontendErrorKind::TlsNotConfigured))
        }
        Err(kind) => Err(FrontendError::on(kind, unix)),
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
    deadline: Deadlines,
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
    deadline: Deadlines,
    refuse_sessions: bool,
) -> Result<PlainOutcome, FrontendErrorKind> {
    let mut gss_answered = false;
    let mut ssl_declined = false;
    loop {
        match read_packet(tcp, deadline).await? {
            StartupPacket::CancelRequest(c) => return Ok(PlainOutcome::Cancel(c.into())),
            // Over a limit: refused on the first packet that asks for a session. The
            // client reads the ErrorResponse in plaintext (libpq, after an SSLRequest,
            // reports an error during the SSL exchange without trusting its text).
            StartupPacket::SslRequest | StartupPacket::Startup(_) if refuse_sessions => {
                return Err(FrontendErrorKind::Busy)
            }
            StartupPacket::SslRequest if settings.tls.is_none() => {
                if ssl_declined {
                    return Err(FrontendErrorKind::UnexpectedNegotiation(
                        "duplicate SSL negotiation request",
                    ));
                }
                ssl_declined = true;
                within(deadline, tcp.write_all(&SslResponse::Refused.encode())).await?;
            }
            StartupPacket::SslRequest => {
                // Anything after the SSLRequest was sent before our answer, in plaintext,
                // and would otherwise be taken as coming from inside TLS
                // (CVE-2021-23214 / CVE-2021-3935).
                if bytes_already_sent(tcp)? {
                    return Err(FrontendErrorKind::PipelinedAfterSslRequest);
                }
                within(deadline, tcp.write_all(&SslResponse::Accepted.encode())).await?;
                return Ok(PlainOutcome::StartTls);
            }
            StartupPacket::GssEncRequest => {
                if gss_answered {
                    return Err(FrontendErrorKind::UnexpectedNegotiation(
                        "duplicate GSSAPI negotiation request",
                    ));
                }
                gss_answered = true;
                within(deadline, tcp.write_all(&SslResponse::Refused.encode())).await?;
            }
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
    gate: &Gate<'_>,
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
            let chain = chain.ok_or(ClientCertError::Missing)?;
            let leaf = chain.first().ok_or(ClientCertError::Missing)?;
            let mut identity = ClientIdentity::from_der(leaf)?;
            identity.verified_by = client_tls.verified_by(chain);
            Some(identity)
        }
        // `password` listeners request no certificate; `trust` ignores any.
        _ => None,
    };
    let (principal, startup) =
        startup_phase(tls, settings, &msg, certificate, deadline, gate).await?;
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
    gate: &Gate<'_>,
) -> Result<(ClientPrincipal, ClientStartup), FrontendErrorKind> {
    let classified = classify(msg)?;

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
            let locked = gate.password_locked.is_some_and(|locked| locked(user));
            let local = authenticate(stream, users, user, deadline, locked)
                .await
                .map_err(|error| FrontendErrorKind::Password {
                    user: user.clone(),
                    method: users.method_for(user),
                    error,
                })?;
            ClientPrincipal::LocalUser(local)
        }
        (ClientAuth::Trust(name), _) => ClientPrincipal::LocalUser(LocalUser {
            name: name.clone(),
            method: LocalAuthMethod::Trust,
            password_method: None,
        }),
    };
    Ok((principal, classified.startup))
}

async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    deadline: impl Into<Deadlines>,
) -> Result<StartupPacket, FrontendErrorKind> {
    let body = within(deadline, read_startup_packet(r))
        .await?
        .ok_or(FrontendErrorKind::Disconnected)??;
    Ok(StartupPacket::decode(&body)?)
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
async fn within<T, F>(deadline: impl Into<Deadlines>, fut: F) -> Result<T, FrontendErrorKind>
where
    F: Future<Output = io::Result<T>>,
{
    let deadline = deadline.into();
    match timeout_at(deadline.at, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(deadline.expired()),
    }
}

#[cfg(test)]
mod tests;
