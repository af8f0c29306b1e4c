//! What a successful negotiation yields: an authenticated client with its startup request,
//! or a CancelRequest.

use crate::frontend::params::ClientStartup;
use crate::frontend::transport::SessionStream;
use crate::net::messages::CancelRequest;
use proxy_auth::identity::ClientIdentity;
use proxy_auth::principal::ClientPrincipal;

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
