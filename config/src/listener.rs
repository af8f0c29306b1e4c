//! `[[listener]]`: where clients connect, and how they authenticate.

mod auth;
mod sni;

pub use crate::address::{Cidr, ListenAddress};
pub use auth::{ClientAuthMode, LocalUserConfig};
pub use sni::ListenerCertificateConfig;

use crate::problems::{KeyPath, Problems};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

/// A listener for PostgreSQL clients: TCP, or a Unix-domain socket. By default clients
/// authenticate with TLS and a client certificate (`client_auth`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs; defaults to the bind address.
    #[serde(default)]
    pub name: Option<String>,
    /// `IP:port` to bind, e.g. `127.0.0.1:5439` or `[::]:5439`; or `unix:/absolute/path`
    /// for a Unix-domain socket (libpq clients name the directory as `host` and find
    /// `.s.PGSQL.<port>` in it).
    pub bind: ListenAddress,
    /// Target this listener routes to. May be omitted when exactly one target exists.
    #[serde(default)]
    pub target: Option<String>,
    /// PEM certificate chain the proxy presents to clients (leaf first). Required for
    /// `client_auth = "certificate"`; for `password` and `trust` it turns TLS on.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CAs that issue client certificates (`client_auth = "certificate"`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM CRL files checked against client certificates.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Time a client has from TCP accept to a complete startup message.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Forward the client's `options` startup parameter (untrusted input; off by default).
    #[serde(default)]
    pub allow_options: bool,
    /// Open connections this listener accepts at once (any phase); overrides
    /// `[limits] max_connections_per_listener` for this listener.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// `[[listener.certificates]]`: more server certificates, chosen by the server name
    /// (SNI) the client asks for. `tls_cert`/`tls_key` stay the default certificate.
    #[serde(default)]
    pub certificates: Vec<ListenerCertificateConfig>,
    /// Refuse clients whose server name matches no `certificates` entry, or that send none,
    /// instead of serving them the default certificate and the listener's target.
    #[serde(default)]
    pub strict_sni: bool,
    /// How clients authenticate: `certificate` (default), `password` (SCRAM-SHA-256 against
    /// `users`) or `trust` (loopback and Unix sockets only: everyone is `trust_user`).
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// `password`/`trust`: also accept clients that do not use TLS. Only on loopback
    /// addresses and Unix sockets.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// `[[listener.users]]`: the local users of a `password` listener.
    #[serde(default)]
    pub users: Vec<LocalUserConfig>,
    /// `trust`: the local user every client of this listener is.
    #[serde(default)]
    pub trust_user: Option<String>,
    /// Permission bits of a Unix socket (default `0o660`: owner and group may connect).
    #[serde(default)]
    pub unix_socket_mode: Option<u32>,
    /// Clients arrive through a load balancer that starts every connection with a PROXY
    /// protocol header (v1 or v2), whose client address the proxy then uses everywhere.
    /// The header is required on every connection of this listener.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The load balancers allowed to send that header; a connection from anywhere else is
    /// closed before it is read.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Cidr>,
}

/// Default permission bits of a Unix-socket listener.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;

fn default_login_timeout() -> Duration {
    Duration::from_secs(30)
}

impl ListenerConfig {
    /// The listener's `name`, else its `bind` as written (`127.0.0.1:5439`,
    /// `unix:/run/...`).
    pub fn display_name(&self) -> Cow<'_, str> {
        match &self.name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(self.bind.to_string()),
        }
    }

    /// A Unix socket, or a TCP address on the loopback interface: only local processes
    /// can connect.
    pub fn is_local_only(&self) -> bool {
        self.bind.is_local_only()
    }

    /// The permission bits of a Unix-socket listener.
    pub fn unix_socket_mode(&self) -> u32 {
        self.unix_socket_mode.unwrap_or(DEFAULT_UNIX_SOCKET_MODE)
    }

    /// Whether clients may connect without TLS: a Unix socket (which never carries TLS,
    /// and for `password` needs `allow_plaintext`), or `allow_plaintext`.
    pub fn accepts_plaintext(&self) -> bool {
        match self.client_auth {
            ClientAuthMode::Certificate => false,
            ClientAuthMode::Password => self.allow_plaintext,
            ClientAuthMode::Trust => self.allow_plaintext || self.bind.is_unix(),
        }
    }

    /// Every problem of this listener on its own, as `path` (`listener[0]`). Names shared
    /// with other listeners and targets are checked by [`crate::Config`].
    pub(crate) fn check(&self, path: &KeyPath, p: &mut Problems) {
        if self.name.as_deref() == Some("") {
            p.add(path.key("name"), "must not be empty");
        }
        if self.max_connections == Some(0) {
            p.add(
                path.key("max_connections"),
                "must be greater than 0 (omit it to use [limits] max_connections_per_listener)",
            );
        }
        if self.login_timeout.is_zero() {
            p.add(path.key("login_timeout"), "must be greater than 0");
        }
        self.check_certificates(path, p);
        self.check_proxy_protocol(path, p);
        self.auth_settings(&self.display_name()).check(path, p);
    }

    /// `proxy_protocol` and the sources it trusts.
    fn check_proxy_protocol(&self, path: &KeyPath, p: &mut Problems) {
        if self.proxy_protocol && self.bind.is_unix() {
            p.add(
                path.key("proxy_protocol"),
                "only on TCP listeners (a Unix socket has no network client address to carry)",
            );
        } else if self.proxy_protocol && self.proxy_protocol_from.is_empty() {
            p.add(
                path.key("proxy_protocol_from"),
                "required with proxy_protocol = true: the networks of the load balancers that \
                 send the header (anyone else could claim any client address)",
            );
        }
        if !self.proxy_protocol && !self.proxy_protocol_from.is_empty() {
            p.add(
                path.key("proxy_protocol_from"),
                "only with proxy_protocol = true",
            );
        }
    }

    /// `[[listener.certificates]]` and `strict_sni`.
    fn check_certificates(&self, path: &KeyPath, p: &mut Problems) {
        if self.strict_sni && self.certificates.is_empty() {
            p.add(
                path.key("strict_sni"),
                "needs at least one [[listener.certificates]] entry (otherwise every client \
                 is refused)",
            );
        }
        // Unix sockets, which carry no TLS at all, are refused with their own message.
        if !self.certificates.is_empty() && self.tls_cert.is_none() && !self.bind.is_unix() {
            p.add(
                path.key("tls_cert"),
                "required with [[listener.certificates]]: tls_cert and tls_key are the default \
                 certificate, for clients that send no server name or one no entry serves",
            );
        }
        sni::check_entries(&self.certificates, path, p);
    }

    fn auth_settings<'a>(&'a self, name: &'a str) -> auth::AuthSettings<'a> {
        auth::AuthSettings {
            name,
            bind: &self.bind,
            mode: self.client_auth,
            tls_cert: self.tls_cert.is_some(),
            tls_key: self.tls_key.is_some(),
            client_ca: self.client_ca.is_some(),
            client_crls: !self.client_crls.is_empty(),
            certificates: !self.certificates.is_empty(),
            users: &self.users,
            trust_user: self.trust_user.as_deref(),
            allow_plaintext: self.allow_plaintext,
            unix_socket_mode: self.unix_socket_mode,
        }
    }
}

/// What a reload cannot change of a listener: its socket, bound (and a Unix socket's mode
/// set) when the proxy starts. Listeners are told apart by name.
#[derive(Debug, PartialEq, Eq)]
pub struct ListenerRestartOnly<'a> {
    /// `name`, else `bind`.
    pub name: Cow<'a, str>,
    pub bind: &'a ListenAddress,
    pub unix_socket_mode: Option<u32>,
}

impl ListenerConfig {
    /// The restart-only part of this listener. Every field is named here, so a new one
    /// does not compile until it is classified.
    pub fn restart_only(&self) -> ListenerRestartOnly<'_> {
        let ListenerConfig {
            name,
            bind,
            unix_socket_mode,
            // A reload applies these to new connections (a new State).
            target: _,
            tls_cert: _,
            tls_key: _,
            client_ca: _,
            client_crls: _,
            login_timeout: _,
            allow_options: _,
            max_connections: _,
            certificates,
            strict_sni: _,
            client_auth: _,
            allow_plaintext: _,
            users,
            trust_user: _,
            proxy_protocol: _,
            proxy_protocol_from: _,
        } = self;
        certificates
            .iter()
            .for_each(ListenerCertificateConfig::all_reloadable);
        users.iter().for_each(LocalUserConfig::all_reloadable);
        ListenerRestartOnly {
            name: match name {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(bind.to_string()),
            },
            bind,
            unix_socket_mode: *unix_socket_mode,
        }
    }
}
