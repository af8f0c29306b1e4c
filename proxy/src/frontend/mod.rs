//! The client side: pre-authentication negotiation, client TLS (mTLS), password and trust
//! logins, startup parameters.
//!
//! [`negotiate`] turns an accepted socket into a [`Negotiated`] client or a typed
//! [`FrontendError`]; it never decides what the client is told about a failure
//! ([`crate::refusal`] does).

pub mod error;
pub mod negotiate;
pub mod negotiated;
pub mod params;
pub mod password;
pub mod settings;
pub mod sni;
pub mod tls;
pub mod transport;

#[cfg(test)]
mod test_support;

pub use error::{FrontendError, FrontendErrorKind, RefusedPeer};
pub use negotiate::{negotiate, negotiate_gated, Gate};
pub use negotiated::{CancelTarget, ClientSession, ClientTlsInfo, Negotiated};
pub use params::{ClientStartup, StartupRefusal};
pub use settings::{ClientAuth, FrontendSettings};
pub use sni::{ServerNameRefusal, SniCertificates};
pub use tls::{ClientCertError, ClientTls, TlsSetupError};
pub use transport::{ClientPeer, ClientSocket, ClientStream, SessionStream};
