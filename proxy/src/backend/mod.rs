//! The upstream side: verify-full TLS to Redshift, login with temporary credentials,
//! cancel forwarding.
//!
//! Build one [`UpstreamEndpoint`] and its [`WarmPool`] per `[[target]]` at startup, then
//! call [`WarmPool::connect_and_login`] per client session (a warm connection when one is
//! ready, else [`connect_and_login`]) and [`send_cancel`] per forwarded cancel.

mod auth;
mod cancel;
mod endpoint;
mod error;
pub(crate) mod login;
pub mod scram;
pub mod startup_params;
mod transport;
mod warm;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod warm_tests;

pub use auth::AuthMethod;
pub use cancel::{send_cancel, CANCEL_GRACE};
pub use endpoint::{UpstreamEndpoint, UpstreamSetupError};
pub use error::{Phase, TlsFailure, UpstreamError};
pub use login::{
    connect_and_login, BackendKey, LoginRequest, UpstreamOrigin, UpstreamSession, MAX_AFTER_AUTH,
    MAX_LOGIN_MESSAGE,
};
pub use transport::UpstreamStream;
pub use warm::{still_open, DiscardReason, WarmPool};
