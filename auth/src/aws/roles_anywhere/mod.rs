//! Native IAM Roles Anywhere: the X.509 request signer, the CreateSession client and the
//! refreshing per-role credential provider.

pub mod provider;
pub mod session;
pub mod signer;
#[cfg(test)]
pub(crate) mod test_support;

pub use provider::{RetryPolicy, RolesAnywhere, RolesAnywhereProvider, SessionSummary};
pub use session::{SessionClient, SessionCredentials, SessionError, SessionRequest};
pub use signer::{KeyType, SignerError, X509Signer};
