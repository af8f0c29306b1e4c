//! `client_auth` and what goes with it: the TLS files each mode needs, local users, the
//! trust identity, and where plaintext and `trust` are allowed (loopback and Unix sockets
//! only, because anyone who can reach the socket gets in or sees the exchange).

use crate::address::ListenAddress;
use crate::problems::{KeyPath, Problems};
use crate::verifier::PasswordVerifierText;
use serde::Deserialize;
use std::collections::HashSet;

/// How the clients of a listener authenticate to the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// TLS with a client certificate verified against `client_ca`.
    #[default]
    Certificate,
    /// A password checked against the verifiers in `[[listener.users]]` (SCRAM-SHA-256,
    /// md5 or Redshift's SHA-256 digest, per user).
    Password,
    /// No authentication: every client is `trust_user`.
    Trust,
}

impl ClientAuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMode::Certificate => "certificate",
            ClientAuthMode::Password => "password",
            ClientAuthMode::Trust => "trust",
        }
    }
}

/// A local user of a `password` listener. Only a verifier is stored, never the password
/// (`redshift-iam-proxy hash-password` makes one); its form selects the login method.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserConfig {
    /// The user name clients log in with (their startup `user`).
    pub name: String,
    /// `SCRAM-SHA-256$...`, `md5...` or `sha256|...|...` (checked by validation; see
    /// [`crate::PasswordVerifier`]). `scram_verifier`, its name before md5 and sha256 were
    /// added, is still read.
    #[serde(alias = "scram_verifier")]
    pub password_verifier: PasswordVerifierText,
}

impl std::fmt::Debug for LocalUserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUserConfig")
            .field("name", &self.name)
            .field("password_verifier", &self.password_verifier)
            .finish()
    }
}

impl LocalUserConfig {
    /// A reload applies users and their verifiers to new logins. Every field is named, so
    /// a new one does not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let LocalUserConfig {
            name: _,
            password_verifier: _,
        } = self;
    }
}

/// What the `client_auth` checks read of a `[[listener]]`.
pub(super) struct AuthSettings<'a> {
    /// The listener as messages name it (its `name`, else its `bind`).
    pub name: &'a str,
    pub bind: &'a ListenAddress,
    pub mode: ClientAuthMode,
    pub tls_cert: bool,
    pub tls_key: bool,
    pub client_ca: bool,
    pub client_crls: bool,
    /// Whether `[[listener.certificates]]` entries exist.
    pub certificates: bool,
    pub users: &'a [LocalUserConfig],
    pub trust_user: Option<&'a str>,
    pub allow_plaintext: bool,
    pub unix_socket_mode: Option<u32>,
}

impl AuthSettings<'_> {
    /// Every problem of the listener at `path` with its `client_auth`.
    pub fn check(&self, path: &KeyPath, p: &mut Problems) {
        self.check_unix_socket(path, p);
        self.check_keys_of_other_modes(path, p);
        match self.mode {
            ClientAuthMode::Certificate => self.check_certificate_mode(path, p),
            ClientAuthMode::Password => self.check_password_mode(path, p),
            ClientAuthMode::Trust => self.check_trust_mode(path, p),
        }
        if self.mode != ClientAuthMode::Certificate {
            self.check_transport(path, p);
        }
    }

    fn unix(&self) -> bool {
        self.bind.is_unix()
    }

    fn quoted_mode(&self) -> String {
        format!("client_auth = {:?}", self.mode.as_str())
    }

    fn check_unix_socket(&self, path: &KeyPath, p: &mut Problems) {
        p.check(path.key("bind"), self.bind.check_usable());
        if let Some(m) = self.unix_socket_mode {
            if !self.unix() {
                p.add(
                    path.key("unix_socket_mode"),
                    "only applies to Unix-socket listeners (bind = \"unix:/path\")",
                );
            } else if m > 0o777 {
                p.add(
                    path.key("unix_socket_mode"),
                    format!("{m:#o} is not a permission mode (0o000 to 0o777)"),
                );
            }
        }
    }

    /// Keys only another `client_auth` uses, TLS files that go together, and TLS on a
    /// Unix socket.
    fn check_keys_of_other_modes(&self, path: &KeyPath, p: &mut Problems) {
        let mut only_for = |field: &str, modes: &str| {
            p.add(
                path.key(field),
                format!(
                    "only used with {modes}; listener {:?} has {}",
                    self.name,
                    self.quoted_mode()
                ),
            )
        };
        if self.mode != ClientAuthMode::Certificate {
            if self.client_ca {
                only_for(
                    "client_ca",
                    "client_auth = \"certificate\" (password and trust listeners request no \
                     client certificate)",
                );
            }
            if self.client_crls {
                only_for("client_crls", "client_auth = \"certificate\"");
            }
        }
        if self.mode != ClientAuthMode::Password && !self.users.is_empty() {
            only_for("users", "client_auth = \"password\"");
        }
        if self.mode != ClientAuthMode::Trust && self.trust_user.is_some() {
            only_for("trust_user", "client_auth = \"trust\"");
        }
        if self.tls_cert != self.tls_key {
            let missing = if self.tls_cert { "tls_key" } else { "tls_cert" };
            p.add(
                path.key(missing),
                "tls_cert and tls_key go together: give both or neither",
            );
        }
        if self.unix() && (self.tls_cert || self.certificates) {
            p.add(
                path.key(if self.tls_cert {
                    "tls_cert"
                } else {
                    "certificates"
                }),
                format!(
                    "listener {:?} is a Unix socket, which never carries TLS (libpq does not \
                     use TLS over Unix sockets); remove its TLS certificates",
                    self.name
                ),
            );
        }
    }

    fn check_certificate_mode(&self, path: &KeyPath, p: &mut Problems) {
        if self.unix() {
            p.add(
                path.key("client_auth"),
                format!(
                    "listener {:?} is a Unix socket, which cannot carry TLS, so client \
                     certificates cannot be used there; use client_auth = \"password\" (with \
                     allow_plaintext = true) or client_auth = \"trust\"",
                    self.name
                ),
            );
            return;
        }
        // With only one of tls_cert and tls_key, the other is already reported.
        let no_tls = !self.tls_cert && !self.tls_key;
        for (field, missing) in [
            ("tls_cert", no_tls),
            ("tls_key", no_tls),
            ("client_ca", !self.client_ca),
        ] {
            if missing {
                p.add(
                    path.key(field),
                    "required for client_auth = \"certificate\" (the default)",
                );
            }
        }
        if self.allow_plaintext {
            p.add(
                path.key("allow_plaintext"),
                "certificate authentication needs TLS; allow_plaintext only applies to \
                 client_auth = \"password\" or \"trust\"",
            );
        }
    }

    fn check_password_mode(&self, path: &KeyPath, p: &mut Problems) {
        if self.users.is_empty() {
            p.add(
                path.key("users"),
                "client_auth = \"password\" needs at least one [[listener.users]] entry",
            );
        }
        let mut seen = HashSet::new();
        for (j, u) in self.users.iter().enumerate() {
            let user = path.key("users").index(j);
            p.check(user.key("name"), check_local_user_name(&u.name));
            if let Err(e) = u.password_verifier.parse() {
                p.add(user.key("password_verifier"), e.to_string());
            }
            if !seen.insert(u.name.as_str()) {
                p.add(user.key("name"), format!("duplicate user {:?}", u.name));
            }
        }
    }

    fn check_trust_mode(&self, path: &KeyPath, p: &mut Problems) {
        if !self.bind.is_local_only() {
            p.add(
                path.key("client_auth"),
                format!(
                    "client_auth = \"trust\" lets in anyone who can connect, without \
                     authentication; listener {:?} binds {:?}, which is neither a loopback \
                     address nor a Unix socket",
                    self.name,
                    self.bind.to_string()
                ),
            );
        }
        match self.trust_user {
            Some(user) => p.check(path.key("trust_user"), check_local_user_name(user)),
            None => p.add(
                path.key("trust_user"),
                "required for client_auth = \"trust\": the local user every client of this \
                 listener is, for the policy's match.local_user",
            ),
        }
    }

    /// `password` and `trust`: TLS, or plaintext where only local processes can connect.
    fn check_transport(&self, path: &KeyPath, p: &mut Problems) {
        if self.allow_plaintext && !self.bind.is_local_only() {
            p.add(
                path.key("allow_plaintext"),
                format!(
                    "plaintext is only allowed on loopback addresses and Unix sockets; \
                     listener {:?} binds {:?}",
                    self.name,
                    self.bind.to_string()
                ),
            );
        }
        if self.unix() && self.mode == ClientAuthMode::Password && !self.allow_plaintext {
            p.add(
                path.key("allow_plaintext"),
                format!(
                    "listener {:?} is a Unix socket, which never carries TLS: set \
                     allow_plaintext = true to accept password logins over it",
                    self.name
                ),
            );
        }
        if !self.unix() && !self.tls_cert && !self.tls_key && !self.allow_plaintext {
            p.add(
                path.key("tls_cert"),
                format!(
                    "required for {} unless allow_plaintext = true (loopback only): clients \
                     must use TLS",
                    self.quoted_mode()
                ),
            );
        }
    }
}

/// Local user names (`[[listener.users]] name`, `trust_user`): what a startup `user` can
/// carry (PostgreSQL's 63-byte limit), printable, so that logs and audit stay readable.
fn check_local_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains control characters"));
    }
    Ok(())
}
