//! The upstream side: verify-full TLS to Redshift, login with temporary credentials,
//! cancel forwarding.
//!
//! Build one [`UpstreamEndpoint`] per `[[target]]` at startup, then call
//! [`connect_and_login`] per client session and [`send_cancel`] per forwarded cancel.

mod auth;
mod cancel;
mod endpoint;
mod error;
pub(crate) mod login;
pub mod scram;
pub mod startup_params;
mod transport;

#[cfg(test)]
mod tests;

pub use auth::AuthMethod;
pub use cancel::{send_cancel, CANCEL_GRACE};
pub use endpoint::{UpstreamEndpoint, UpstreamSetupError};
pub use error::{Phase, TlsFailure, UpstreamError};
pub use login::{
    connect_and_login, BackendKey, LoginRequest, UpstreamSession, MAX_AFTER_AUTH, MAX_LOGIN_MESSAGE,
};
pub use transport::UpstreamStream;
