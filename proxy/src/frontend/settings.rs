//! What the client side needs from a listener's configuration.

use proxy_auth::password::LocalUsers;
use proxy_config::ClientAuthMode;
use std::sync::Arc;
use std::time::Duration;

use crate::frontend::tls::ClientTls;

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
