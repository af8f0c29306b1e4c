//! The client side: listeners, pre-authentication negotiation, client TLS (mTLS).

pub mod negotiate;
pub mod params;
pub mod tls;

#[cfg(test)]
mod test_support;

pub use negotiate::{
    negotiate, negotiate_gated, CancelTarget, ClientSession, FrontendError, FrontendErrorKind,
    FrontendSettings, Negotiated,
};
pub use params::{ClientStartup, StartupRefusal};
pub use tls::{ClientCertError, ClientTls, TlsSetupError};
