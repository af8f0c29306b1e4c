//! The contract between the proxy and whatever issues temporary database credentials.
//!
//! The proxy asks a [`DbCredentialSource`] for a user and password for a [`DbCredentialRequest`]
//! (what the policy granted) and logs in upstream with them. Implementations call Redshift
//! (`GetClusterCredentials`, `GetClusterCredentialsWithIAM`, serverless `GetCredentials`) and
//! cache; tests may implement it with a user they created themselves. The product ships no
//! static-password source.

use async_trait::async_trait;
use proxy_config::Arn;
use secrecy::SecretString;
use std::fmt;
use std::time::SystemTime;

/// What the policy granted, i.e. which credential to obtain. Also the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DbCredentialRequest {
    /// `[[target]] name`.
    pub target: String,
    /// IAM role to act as (Roles Anywhere); `None` for the configured default.
    pub role_arn: Option<Arn>,
    /// Database user the policy granted (`DbUser`; ignored by IAM-identity APIs).
    pub db_user: String,
    pub db_name: String,
    /// Database groups, sorted and de-duplicated so equal grants share a cache entry.
    pub db_groups: Vec<String>,
    /// The client's own AWS role session (Roles Anywhere, `role_session_name` template);
    /// `None`: the role's shared session.
    pub role_session_name: Option<String>,
}

/// A temporary database login. `Debug` never shows the password.
#[derive(Clone)]
pub struct DbCredential {
    /// The user name to log in with, exactly as issued (e.g. `IAM:alice`).
    pub user: String,
    pub password: SecretString,
    /// When the password stops working.
    pub expiration: SystemTime,
    /// AWS request ids of the calls that produced this credential (CloudTrail correlation).
    pub aws_request_ids: Vec<String>,
}

impl fmt::Debug for DbCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbCredential")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("aws_request_ids", &self.aws_request_ids)
            .finish()
    }
}

/// Why no credential could be had. Messages are safe to show to clients and operators:
/// they never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// AWS (or the source) refused: the role may not issue this credential.
    #[error("credentials denied: {0}")]
    Denied(String),
    /// AWS could not be reached or failed; retrying later may help.
    #[error("credential service unavailable: {0}")]
    Unavailable(String),
    /// The request or configuration is wrong (unknown cluster, bad user name, ...).
    #[error("invalid credential request: {0}")]
    Invalid(String),
    /// The client identity spent its budget of credential calls; it may try again later.
    #[error("credential calls throttled: {0}")]
    Throttled(String),
}

impl From<crate::refresh::FetchAborted> for CredentialError {
    fn from(e: crate::refresh::FetchAborted) -> Self {
        CredentialError::Unavailable(e.to_string())
    }
}

/// Issues temporary database credentials.
#[async_trait]
pub trait DbCredentialSource: Send + Sync + 'static {
    /// A credential valid for at least a login's duration, from cache when possible.
    /// `requester` names the client identity asking (it is charged for any AWS call).
    async fn credential(
        &self,
        request: &DbCredentialRequest,
        requester: &str,
    ) -> Result<DbCredential, CredentialError>;

    /// The upstream refused `refused`, a credential this source returned for `request`:
    /// forget it so the next call obtains a fresh one. Sessions refused at the same time
    /// all report the same credential; only it is forgotten, never a newer one.
    fn invalidate(&self, request: &DbCredentialRequest, refused: &DbCredential);

    /// The upstream refused a credential fetched fresh for this login too (the user may
    /// not exist, or was altered): a new credential would only be refused again, so the
    /// source should not ask AWS for `request` until it has backed off. `reason` is for the
    /// operator.
    fn refused_again(&self, request: &DbCredentialRequest, reason: &str) {
        let _ = (request, reason);
    }
}
