//! The client side: listeners, pre-authentication negotiation, client TLS (mTLS).

pub mod negotiate;
pub mod params;
pub mod password;
pub mod sni;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod test_support;

pub use negotiate::{
    negotiate, negotiate_gated, CancelTarget, ClientAuth, ClientSession, ClientTlsInfo,
    FrontendError, FrontendErrorKind, FrontendSettings, Negotiated, RefusedPeer,
};
pub use params::{ClientStartup, StartupRefusal};
pub use sni::{ServerNameRefusal, SniCertificates};
pub use tls::{ClientCertError, ClientTls, TlsSetupError};
pub use transport::{ClientPeer, ClientSocket, SessionStream};
