//! AWS credentials for the proxy itself: native IAM Roles Anywhere, an AWS profile
//! (e.g. `credential_process`), or the default chain.
//!
//! Build an [`AwsCredentials`] from `[aws]` with [`AwsCredentials::from_config`] and hand it
//! out as an [`AwsCredentialsForRole`].

use crate::db_credentials::CredentialError;
use aws_credential_types::provider::SharedCredentialsProvider;
use proxy_config::Arn;

/// Hands out AWS credential providers, one per IAM role.
///
/// With Roles Anywhere every role gets its own session (and refresh); the profile and
/// default-chain sources have a single identity and refuse an explicit role.
pub trait AwsCredentialsForRole: Send + Sync + 'static {
    /// The provider for `role_arn`, or for the configured default role when `None`.
    fn provider(
        &self,
        role_arn: Option<&Arn>,
    ) -> Result<SharedCredentialsProvider, CredentialError>;

    /// The provider of the role session of `role_arn` (or the default role) named
    /// `role_session_name`: one session per client identity, so CloudTrail names the client.
    /// The provider caches and refreshes its credentials itself. Only Roles Anywhere names
    /// sessions; other sources refuse.
    fn session_provider(
        &self,
        role_arn: Option<&Arn>,
        role_session_name: &str,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        let _ = (role_arn, role_session_name);
        Err(CredentialError::Invalid(
            "per-identity role sessions need [aws] source = \"roles_anywhere\"".into(),
        ))
    }
}

pub mod clock;
mod credentials;
// Its SDK interceptor serves the Redshift clients, which only `aws-sdk` builds have.
#[cfg_attr(not(feature = "aws-sdk"), allow(dead_code))]
pub mod observe;
pub mod roles_anywhere;
mod sdk_sources;

#[cfg(any(test, feature = "test-util"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use credentials::{AwsCredentials, CredentialSummary};
pub use observe::{
    AwsApi, AwsCallObserver, AwsCallOutcome, CredentialHealth, CredentialState, NoObserver,
};
