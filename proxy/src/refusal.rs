//! Every way a connection can be refused, and the one mapping from each to what the client
//! reads, what the audit records, and what the metrics count.
//!
//! Errors are typed where they arise (the frontend, the policy, the credential chain, the
//! upstream login); none of them knows SQLSTATEs or client wording. [`Refusal::wire`] is
//! the only translation, an exhaustive `match` without wildcard arms, so a new error
//! variant does not compile until someone decides what the client is told about it. The
//! same holds for [`stop_response`], the message of a session the proxy ends itself.
//!
//! Client texts follow PostgreSQL's wording where PostgreSQL has the same condition, never
//! say what would have been allowed, and never carry secrets or pre-TLS server text.

use crate::audit::RefusalReason;
use crate::backend::UpstreamError;
use crate::frontend::password::PasswordAuthError;
use crate::frontend::{ClientCertError, FrontendErrorKind, ServerNameRefusal};
use crate::net::messages::startup::StartupError;
use crate::net::messages::ErrorResponse;
use crate::sqlstate;
use proxy_auth::db_credentials::CredentialError;
use proxy_auth::password::PasswordError;
use proxy_auth::policy::Denial;
use proxy_config::PasswordMethod;

/// Why a connection did not become a relayed session.
#[derive(Debug)]
pub enum Refusal {
    /// Negotiation failed: startup packets, TLS, the client certificate, password login.
    Frontend(FrontendErrorKind),
    /// A connection limit.
    Limit(LimitExceeded),
    /// The server name (SNI) is not served (`strict_sni`).
    ServerName(ServerNameRefusal),
    /// The policy refused the identity, user, database or target.
    Policy(Denial),
    /// No database credential could be obtained.
    Credentials(CredentialError),
    /// Connecting or logging in upstream failed.
    Upstream(UpstreamError),
    /// The upstream's login reply did not end with ReadyForQuery.
    InvalidLoginReply,
    /// The client went away while the proxy answered its login.
    ClientLeft(std::io::Error),
    /// The proxy is shutting down.
    ShuttingDown(ShutdownStage),
}

/// Which connection limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// `[limits] max_connections`.
    Total,
    /// The listener's `max_connections` (or `[limits] max_connections_per_listener`).
    Listener,
    /// `[limits] max_connections_per_identity`.
    Identity,
    /// `[limits] max_pending_per_source`: connections of one address not yet
    /// authenticated.
    Source,
}

/// Where a shutdown caught the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStage {
    /// Before the client finished negotiating: nothing is said.
    Negotiation,
    /// While the proxy obtained credentials or logged in upstream.
    Login,
}

/// What a refusal means on the wire, in the audit and in the metrics.
#[derive(Debug, Clone)]
pub struct WireRefusal {
    /// The audit's `refusal.reason` and the `reason` label of the refusal counter.
    pub reason: RefusalReason,
    /// What the client is sent; `None` when nobody can read it (the client left, its TLS
    /// handshake failed) or nothing may be said (cancel requests get no reply).
    pub response: Option<ErrorResponse>,
    /// The `outcome` label of `logins_total`, for refusals after the client authenticated.
    pub login_outcome: Option<&'static str>,
}

impl WireRefusal {
    /// The SQLSTATE the client was (or would have been) told.
    pub fn sqlstate(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.code.as_str())
    }
}

impl Refusal {
    /// The one mapping (see the module documentation).
    pub fn wire(&self) -> WireRefusal {
        use RefusalReason as R;
        let (reason, response, login_outcome) = match self {
            Refusal::Frontend(kind) => return frontend_refusal(kind),
            Refusal::Limit(limit) => {
                let (reason, message) = match limit {
                    LimitExceeded::Total => (R::MaxConnections, "sorry, too many clients already"),
                    LimitExceeded::Listener => (
                        R::MaxConnectionsPerListener,
                        "sorry, too many clients already",
                    ),
                    LimitExceeded::Identity => (
                        R::MaxConnectionsPerIdentity,
                        "too many connections for this client identity",
                    ),
                    LimitExceeded::Source => (
                        R::MaxPendingPerSource,
                        "too many connections from this address are still logging in",
                    ),
                };
                (
                    reason,
                    Some(fatal(sqlstate::TOO_MANY_CONNECTIONS, message)),
                    None,
                )
            }
            Refusal::ServerName(refusal) => {
                let hint = match refusal {
                    ServerNameRefusal::Missing => {
                        "Connect by host name rather than IP address (libpq sends the name \
                         unless sslsni=0)."
                    }
                    ServerNameRefusal::Unknown(_) => {
                        "Connect with a host name the proxy has a certificate for."
                    }
                };
                let response =
                    fatal(sqlstate::INVALID_AUTHORIZATION, refusal.to_string()).with_hint(hint);
                (R::ServerName, Some(response), None)
            }
            // Always 28000, whichever check failed: the code must not reveal it either.
            Refusal::Policy(denial) => (
                R::Policy,
                Some(fatal(
                    sqlstate::INVALID_AUTHORIZATION,
                    denial.client_message(),
                )),
                Some("denied"),
            ),
            Refusal::Credentials(CredentialError::Throttled(_)) => (
                R::CredentialBudget,
                Some(fatal(
                    sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                    "too many credential requests for this client identity; try again later",
                )),
                Some("credentials_throttled"),
            ),
            Refusal::Credentials(e) => {
                let response = match e {
                    CredentialError::Denied(_) | CredentialError::Invalid(_) => fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "could not obtain database credentials for this login",
                    ),
                    CredentialError::Unavailable(_) | CredentialError::Throttled(_) => fatal(
                        sqlstate::UNABLE_TO_CONNECT,
                        "could not obtain database credentials: the AWS credential service is \
                         unavailable",
                    ),
                };
                (R::Credentials, Some(response), Some("credentials_failed"))
            }
            Refusal::Upstream(e) => (
                R::Upstream,
                Some(upstream_response(e)),
                Some("upstream_failed"),
            ),
            Refusal::InvalidLoginReply => (
                R::Upstream,
                Some(fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "upstream sent an invalid login reply",
                )),
                Some("upstream_failed"),
            ),
            Refusal::ClientLeft(_) => (R::ClientDisconnected, None, None),
            Refusal::ShuttingDown(ShutdownStage::Negotiation) => (R::ShuttingDown, None, None),
            Refusal::ShuttingDown(ShutdownStage::Login) => (
                R::ShuttingDown,
                Some(stop_response(StopReason::Shutdown)),
                None,
            ),
        };
        WireRefusal {
            reason,
            response,
            login_outcome,
        }
    }

    /// The operator's one-line explanation (never a secret; certificate- and client-chosen
    /// text is quoted by the errors themselves).
    pub fn log_detail(&self) -> String {
        match self {
            Refusal::Frontend(kind) => kind.to_string(),
            Refusal::Limit(limit) => match limit {
                LimitExceeded::Total => "connection limit reached (max_connections)".into(),
                LimitExceeded::Listener => {
                    "connection limit reached (max_connections_per_listener)".into()
                }
                LimitExceeded::Identity => "identity is at max_connections_per_identity".into(),
                LimitExceeded::Source => {
                    "source address is at max_pending_per_source (connections not yet \
                     authenticated)"
                        .into()
                }
            },
            Refusal::ServerName(r) => r.to_string(),
            Refusal::Policy(denial) => denial.log_detail(),
            Refusal::Credentials(e) => e.to_string(),
            Refusal::Upstream(e) => e.to_string(),
            Refusal::InvalidLoginReply => {
                "upstream login reply did not end with ReadyForQuery".into()
            }
            Refusal::ClientLeft(e) => format!("client left during login: {e}"),
            Refusal::ShuttingDown(ShutdownStage::Negotiation) => {
                "closed during negotiation by shutdown".into()
            }
            Refusal::ShuttingDown(ShutdownStage::Login) => "login interrupted by shutdown".into(),
        }
    }
}

impl From<FrontendErrorKind> for Refusal {
    fn from(kind: FrontendErrorKind) -> Self {
        Refusal::Frontend(kind)
    }
}

/// Why the proxy itself ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Shutdown: the drain timeout expired.
    Shutdown,
    /// No traffic in either direction for `[limits] idle_timeout`.
    Idle,
    /// `[limits] max_session_lifetime` reached.
    Lifetime,
    /// The client certificate expired (`session_lifetime_within_certificate`).
    CertificateExpired,
    /// A reload brought a CRL that revokes the client certificate.
    CertificateRevoked,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::Idle => "idle_timeout",
            StopReason::Lifetime => "max_session_lifetime",
            StopReason::CertificateExpired => "certificate_expired",
            StopReason::CertificateRevoked => "certificate_revoked",
        }
    }
}

/// The ErrorResponse for a session the proxy ends itself, in PostgreSQL's own words where
/// it has them.
pub fn stop_response(reason: StopReason) -> ErrorResponse {
    match reason {
        StopReason::Shutdown => fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command",
        ),
        StopReason::Idle => fatal(
            sqlstate::IDLE_SESSION_TIMEOUT,
            "terminating connection due to idle-session timeout",
        ),
        StopReason::Lifetime => fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection: maximum session lifetime reached",
        ),
        StopReason::CertificateExpired => fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection: the client certificate has expired",
        ),
        StopReason::CertificateRevoked => fatal(
            sqlstate::ADMIN_SHUTDOWN,
            "terminating connection: the client certificate has been revoked",
        ),
    }
}

fn fatal(code: &str, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::fatal(code, message)
}

/// [`Refusal::wire`] of a negotiation failure, without taking the error.
pub fn frontend_refusal(kind: &FrontendErrorKind) -> WireRefusal {
    let (reason, response) = frontend(kind);
    WireRefusal {
        reason,
        response,
        login_outcome: None,
    }
}

fn frontend(kind: &FrontendErrorKind) -> (RefusalReason, Option<ErrorResponse>) {
    use FrontendErrorKind as K;
    use RefusalReason as R;
    let protocol = |message: String| Some(fatal(sqlstate::PROTOCOL_VIOLATION, message));
    match kind {
        K::Disconnected | K::Io(_) => (R::ClientDisconnected, None),
        K::LoginTimeout => (R::LoginTimeout, protocol("login timeout expired".into())),
        K::HandshakeTimeout => (
            R::HandshakeTimeout,
            protocol("handshake timeout expired".into()),
        ),
        // The session turns this into the limit it hit; on its own it is the total.
        K::Busy => (
            R::MaxConnections,
            Some(fatal(
                sqlstate::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            )),
        ),
        // A malformed cancel gets no reply, like any cancel.
        K::Startup(StartupError::BadCancelRequest { .. }) => (R::Protocol, None),
        K::Startup(
            e @ (StartupError::BadLength(_)
            | StartupError::UnsupportedProtocol { .. }
            | StartupError::BadRequestLength { .. }
            | StartupError::Layout(_)
            | StartupError::NotUtf8),
        ) => (R::Protocol, protocol(e.to_string())),
        K::PipelinedAfterSslRequest => (
            R::Protocol,
            protocol(kind.to_string()).map(|r| {
                r.with_detail(
                    "This could be either a client-software bug or evidence of an attempted \
                     man-in-the-middle attack.",
                )
            }),
        ),
        K::UnexpectedNegotiation(m) => (R::Protocol, protocol((*m).into())),
        K::DirectTlsWithoutAlpn => (
            R::Protocol,
            protocol("direct SSL connection requires ALPN protocol \"postgresql\"".into()),
        ),
        K::TlsRequired => (
            R::TlsRequired,
            Some(
                fatal(
                    sqlstate::INVALID_AUTHORIZATION,
                    "this proxy requires TLS with a client certificate",
                )
                .with_hint(
                    "Connect with sslmode=require (or verify-ca / verify-full) and provide a \
                     client certificate and key (sslcert, sslkey).",
                ),
            ),
        ),
        K::PlaintextNotAllowed => (
            R::TlsRequired,
            Some(
                fatal(sqlstate::INVALID_AUTHORIZATION, "this proxy requires TLS")
                    .with_hint("Connect with sslmode=require (or verify-ca / verify-full)."),
            ),
        ),
        // The client began a TLS handshake the listener cannot answer: like any failed
        // handshake, there is nobody to tell in the protocol's terms.
        K::TlsNotConfigured | K::TlsHandshake(_) => (R::TlsHandshake, None),
        K::ClientCert(e) => (R::ClientCertificate, Some(client_certificate(e))),
        K::Identity(_) => (
            R::ClientCertificate,
            Some(fatal(
                sqlstate::INVALID_AUTHORIZATION,
                "the client certificate cannot be read",
            )),
        ),
        K::Refused(r) => (
            R::StartupParameters,
            Some(fatal(sqlstate::INVALID_AUTHORIZATION, r.to_string())),
        ),
        K::Password {
            user,
            method,
            error,
        } => password(user, *method, error),
    }
}

fn client_certificate(e: &ClientCertError) -> ErrorResponse {
    let response = fatal(sqlstate::INVALID_AUTHORIZATION, e.to_string());
    match e {
        ClientCertError::Missing => {
            response.with_hint("Provide a client certificate and key (sslcert, sslkey).")
        }
        ClientCertError::Expired
        | ClientCertError::NotYetValid
        | ClientCertError::Revoked
        | ClientCertError::RevocationStatusUnknown
        | ClientCertError::RevocationListExpired
        | ClientCertError::UnknownIssuer
        | ClientCertError::WrongUsage
        | ClientCertError::BadEncoding
        | ClientCertError::BadSignature
        | ClientCertError::Other(_) => response,
    }
}

fn password(
    user: &str,
    method: PasswordMethod,
    error: &PasswordAuthError,
) -> (RefusalReason, Option<ErrorResponse>) {
    use PasswordAuthError as P;
    use RefusalReason as R;
    let protocol = |message: String| Some(fatal(sqlstate::PROTOCOL_VIOLATION, message));
    match error {
        P::Disconnected | P::Io(_) => (R::ClientDisconnected, None),
        P::Timeout => (R::LoginTimeout, protocol("login timeout expired".into())),
        P::UnexpectedMessage { expected, got } => (
            R::Protocol,
            protocol(format!(
                "expected {expected} message, got message type {}",
                *got as u32
            )),
        ),
        P::Framing(_) => (
            R::Protocol,
            protocol("invalid password message length".into()),
        ),
        P::InitialResponse(_) => (
            R::Protocol,
            protocol("malformed SASL initial response".into()),
        ),
        P::Response(_) => (R::Protocol, protocol("malformed password response".into())),
        P::Mechanism(_) => (
            R::Protocol,
            protocol("client selected an invalid SASL authentication mechanism".into()),
        ),
        P::Password(e) => password_check(user, method, e),
    }
}

/// PostgreSQL's own answers to the same failures; an unknown user and a wrong password
/// read the same. A client speaking Redshift's digest is a Redshift driver, and Redshift
/// reports a failed password as 28000 where PostgreSQL says 28P01 (research:
/// redshift-server.md §3); redshift_connector tells the two apart (InterfaceError vs
/// ProgrammingError).
fn password_check(
    user: &str,
    method: PasswordMethod,
    e: &PasswordError,
) -> (RefusalReason, Option<ErrorResponse>) {
    use RefusalReason as R;
    let malformed = |method: &str, detail: &str| {
        fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed {method} message"),
        )
        .with_detail(detail)
    };
    let response = match e {
        PasswordError::UnknownUser | PasswordError::WrongPassword | PasswordError::Locked => {
            let reason = if *e == PasswordError::Locked {
                R::PasswordLocked
            } else {
                R::PasswordAuthentication
            };
            let code = match method {
                PasswordMethod::RedshiftSha256 => sqlstate::INVALID_AUTHORIZATION,
                PasswordMethod::ScramSha256 | PasswordMethod::Md5 => sqlstate::INVALID_PASSWORD,
            };
            return (
                reason,
                Some(fatal(
                    code,
                    format!("password authentication failed for user {}", quoted(user)),
                )),
            );
        }
        PasswordError::Malformed { method, detail } => malformed(method, detail),
        PasswordError::ChannelBindingNotOffered => malformed(
            "SCRAM",
            "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message \
             includes channel binding data.",
        ),
        PasswordError::AuthorizationIdentity => fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "client uses authorization identity, but it is not supported",
        ),
        PasswordError::ChannelBindingMismatch => fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "SCRAM channel binding check failed",
        ),
        PasswordError::NonceMismatch => {
            fatal(sqlstate::PROTOCOL_VIOLATION, "invalid SCRAM response")
                .with_detail("Nonce does not match.")
        }
        PasswordError::OutOfOrder => {
            fatal(sqlstate::PROTOCOL_VIOLATION, "unexpected SCRAM message")
        }
    };
    (R::Protocol, Some(response))
}

/// The user name in a client message: PostgreSQL's `"name"` form for ordinary names.
fn quoted(user: &str) -> String {
    format!("\"{user}\"")
}

/// SQLSTATE and message of an upstream failure: the upstream's own for its ErrorResponses
/// (they arrive over verified TLS after the server proved its identity), 08001 when the
/// upstream cannot be reached or trusted, 08P01 for protocol violations, 08006 when the
/// connection broke mid-login. Never a password, pre-TLS server text or an internal
/// address.
pub fn upstream_response(e: &UpstreamError) -> ErrorResponse {
    use UpstreamError as U;
    let unable = |message: String| fatal(sqlstate::UNABLE_TO_CONNECT, message);
    match e {
        U::Connect { .. } => unable("could not connect to the upstream server".into()),
        U::Timeout { phase, .. } => unable(format!(
            "the upstream server did not respond in time ({phase})"
        )),
        U::TlsNotOffered => unable("the upstream server does not offer TLS".into()),
        U::ServerErrorBeforeTls => unable("the upstream server refused to start TLS".into()),
        U::Tls { failure, .. } => unable(format!(
            "could not establish a verified TLS connection to the upstream server: {failure}"
        )),
        U::UnsupportedAuth { code } => unable(format!(
            "the upstream server requested an unsupported authentication method ({code})"
        )),
        U::IdentityTokenRequested => unable(
            "the upstream server requested an identity-provider token (Redshift auth code 14); \
             the proxy signs in with temporary IAM database credentials, so the target must \
             accept IAM password logins"
                .into(),
        ),
        U::UnsupportedDigest { algorithm } => unable(format!(
            "the upstream server requested an unsupported digest algorithm ({algorithm})"
        )),
        U::NoSaslMechanism { .. } => {
            unable("the upstream server offered no supported SASL mechanism".into())
        }
        U::UnusableCredential { .. } => {
            unable("the database credential cannot be sent to the upstream server".into())
        }
        U::Protocol { .. } => fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "protocol violation by the upstream server",
        ),
        U::Scram { .. } => fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "the upstream server failed SCRAM authentication",
        ),
        // Relayed as sent; the login parser substitutes XX000 for a missing code.
        U::AuthFailed { sqlstate, message }
        | U::Server {
            sqlstate, message, ..
        } => fatal(sqlstate, message.clone()),
        U::InvalidStartupParameter(e) => fatal(sqlstate::INVALID_PARAMETER_VALUE, e.to_string()),
        U::Closed { .. } | U::Io { .. } => fatal(
            sqlstate::CONNECTION_FAILURE,
            "lost the connection to the upstream server during login",
        ),
    }
}

#[cfg(test)]
mod tests;
