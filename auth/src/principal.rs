//! Who a client is, however it authenticated: a verified client certificate, or a local user
//! of a `password` or `trust` listener. The policy matches either kind, but never one kind
//! with the other's fields.

use crate::identity::ClientIdentity;
use std::fmt;

/// How a local user was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalAuthMethod {
    /// A password checked against a verifier in the listener's `[[listener.users]]`.
    Password,
    /// Not at all: the listener's `trust_user` (loopback and Unix sockets only).
    Trust,
}

impl LocalAuthMethod {
    /// The `client_auth` value it comes from; also the audit's `auth_method`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalAuthMethod::Password => "password",
            LocalAuthMethod::Trust => "trust",
        }
    }
}

/// A local user of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub method: LocalAuthMethod,
    /// How a `Password` user proved its password (for the audit).
    pub password_method: Option<proxy_config::PasswordMethod>,
}

/// An authenticated client.
// One per session, held for its life: the size of the certificate variant costs nothing
// worth an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPrincipal {
    Certificate(ClientIdentity),
    LocalUser(LocalUser),
}

impl ClientPrincipal {
    /// `certificate`, `password` or `trust`.
    pub fn auth_method(&self) -> &'static str {
        match self {
            ClientPrincipal::Certificate(_) => "certificate",
            ClientPrincipal::LocalUser(u) => u.method.as_str(),
        }
    }

    pub fn certificate(&self) -> Option<&ClientIdentity> {
        match self {
            ClientPrincipal::Certificate(id) => Some(id),
            ClientPrincipal::LocalUser(_) => None,
        }
    }

    pub fn local_user(&self) -> Option<&LocalUser> {
        match self {
            ClientPrincipal::Certificate(_) => None,
            ClientPrincipal::LocalUser(u) => Some(u),
        }
    }

    /// A short name for log lines: the certificate CN (else its subject), or the local
    /// user name.
    pub fn short_name(&self) -> &str {
        match self {
            ClientPrincipal::Certificate(id) => id.common_name.as_deref().unwrap_or(&id.subject),
            ClientPrincipal::LocalUser(u) => &u.name,
        }
    }

    /// What `max_connections_per_identity` counts by: issuer and subject (whatever
    /// certificate, renewed or re-issued, carries them), or the local user. The prefixes
    /// keep a local user from sharing a count with a certificate.
    pub fn limit_key(&self) -> String {
        match self {
            ClientPrincipal::Certificate(id) => format!("cert\n{}\n{}", id.issuer, id.subject),
            ClientPrincipal::LocalUser(u) => format!("local\n{}", u.name),
        }
    }

    pub fn as_ref(&self) -> PrincipalRef<'_> {
        self.into()
    }
}

impl fmt::Display for ClientPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientPrincipal::Certificate(id) => write!(f, "certificate {id}"),
            ClientPrincipal::LocalUser(u) => {
                write!(f, "local user {:?} ({})", u.name, u.method.as_str())
            }
        }
    }
}

/// A borrowed [`ClientPrincipal`], so callers holding just a certificate identity or just
/// a local user can ask the policy without building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalRef<'a> {
    Certificate(&'a ClientIdentity),
    LocalUser(&'a LocalUser),
}

impl<'a> From<&'a ClientIdentity> for PrincipalRef<'a> {
    fn from(id: &'a ClientIdentity) -> Self {
        PrincipalRef::Certificate(id)
    }
}

impl<'a> From<&'a LocalUser> for PrincipalRef<'a> {
    fn from(u: &'a LocalUser) -> Self {
        PrincipalRef::LocalUser(u)
    }
}

impl<'a> From<&'a ClientPrincipal> for PrincipalRef<'a> {
    fn from(p: &'a ClientPrincipal) -> Self {
        match p {
            ClientPrincipal::Certificate(id) => PrincipalRef::Certificate(id),
            ClientPrincipal::LocalUser(u) => PrincipalRef::LocalUser(u),
        }
    }
}
