//! The AWS SDK side of the credential cache: [`AwsCredentialFetcher`] obtains one database
//! credential from Redshift, without caching, and [`RedshiftCredentials::new`] puts the
//! cache in front of it. Built with the `aws-sdk` feature only.

use super::cache::{FetchDbCredential, RedshiftCredentials};
use super::endpoint::{ResolvedTarget, TargetApi};
use super::{provisioned, serverless};
use crate::aws::clock::SystemClock;
use crate::aws::observe::{no_observer, AwsCallObserver};
use crate::aws::AwsCredentialsForRole;
use crate::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_smithy_types::DateTime;
use proxy_config::Arn;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Time to open a TCP+TLS connection to the Redshift API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to wait for response bytes once the request is sent.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt, including connecting and reading.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// All attempts together: a client is waiting for its login, so give up well before a
/// typical client login timeout rather than retrying indefinitely.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// Timeouts for the Redshift API clients.
pub(crate) fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK's standard retries (3 attempts, exponential backoff with jitter; throttling and
/// transient errors only).
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig::standard()
}

/// An SDK client for one (target, role).
#[derive(Clone)]
enum ApiClient {
    Provisioned(aws_sdk_redshift::Client),
    Serverless(aws_sdk_redshiftserverless::Client),
}

impl RedshiftCredentials {
    /// The production source: calls Redshift / Redshift Serverless with the AWS credentials
    /// `aws` hands out per role. Resolves every target (region, cluster or workgroup) now,
    /// so configuration mistakes fail start-up.
    pub fn new(
        config: &proxy_config::Config,
        aws: Arc<dyn AwsCredentialsForRole>,
    ) -> Result<Self, CredentialError> {
        Self::new_observed(config, aws, no_observer())
    }

    /// [`new`](Self::new), reporting every credential API call to `observer`.
    pub fn new_observed(
        config: &proxy_config::Config,
        aws: Arc<dyn AwsCredentialsForRole>,
        observer: Arc<dyn AwsCallObserver>,
    ) -> Result<Self, CredentialError> {
        let fetcher = AwsCredentialFetcher::new(config, aws)?.with_observer(observer);
        Ok(Self::with_fetcher(
            Arc::new(fetcher),
            Arc::new(SystemClock),
            config.db_credentials.refresh_before,
        ))
    }
}

/// Fetches credentials from Redshift / Redshift Serverless with the AWS SDK, acting as the
/// IAM role of each request.
pub struct AwsCredentialFetcher {
    targets: HashMap<String, ResolvedTarget>,
    aws: Arc<dyn AwsCredentialsForRole>,
    /// SDK clients by (target, role), built on first use. A client holds its credentials
    /// provider and connection pool, so it is reused for every call of that pair.
    clients: Mutex<HashMap<(String, Option<Arn>), ApiClient>>,
    /// Told of every credential API call (each SDK attempt).
    observer: Arc<dyn AwsCallObserver>,
}

impl AwsCredentialFetcher {
    /// Resolves every target of `config` (region, cluster or workgroup) up front so a
    /// configuration mistake shows at start-up, not at the first login.
    pub fn new(
        config: &proxy_config::Config,
        aws: Arc<dyn AwsCredentialsForRole>,
    ) -> Result<Self, CredentialError> {
        let default_region = config.aws.region.as_deref();
        let targets = config
            .targets
            .iter()
            .map(|t| ResolvedTarget::resolve(t, default_region).map_err(CredentialError::from))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_targets(targets, aws))
    }

    /// A fetcher for already resolved targets.
    pub fn with_targets(
        targets: impl IntoIterator<Item = ResolvedTarget>,
        aws: Arc<dyn AwsCredentialsForRole>,
    ) -> Self {
        AwsCredentialFetcher {
            targets: targets.into_iter().map(|t| (t.name.clone(), t)).collect(),
            aws,
            clients: Mutex::new(HashMap::new()),
            observer: no_observer(),
        }
    }

    /// Reports every credential API call (each attempt, retries included) to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn AwsCallObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The resolved target named `name`.
    pub fn target(&self, name: &str) -> Option<&ResolvedTarget> {
        self.targets.get(name)
    }

    fn client(
        &self,
        target: &ResolvedTarget,
        role_arn: Option<&Arn>,
    ) -> Result<ApiClient, CredentialError> {
        let key = (target.name.clone(), role_arn.cloned());
        // The map only ever gains complete clients, so a poisoned lock holds no torn state.
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        // Not cached on failure: the role's credential source may recover.
        let provider: SharedCredentialsProvider = self.aws.provider(role_arn)?;
        let client = match target.api {
            TargetApi::Provisioned { .. } => {
                ApiClient::Provisioned(provisioned::client(target, provider, &self.observer))
            }
            TargetApi::Serverless { .. } => {
                ApiClient::Serverless(serverless::client(target, provider, &self.observer))
            }
        };
        clients.insert(key, client.clone());
        Ok(client)
    }
}

#[async_trait]
impl FetchDbCredential for AwsCredentialFetcher {
    async fn fetch(&self, request: &DbCredentialRequest) -> Result<DbCredential, CredentialError> {
        let target = self.targets.get(&request.target).ok_or_else(|| {
            CredentialError::Invalid(format!("no [[target]] named {:?}", request.target))
        })?;
        match self.client(target, request.role_arn.as_ref())? {
            ApiClient::Provisioned(client) => provisioned::fetch(&client, target, request).await,
            ApiClient::Serverless(client) => serverless::fetch(&client, target, request).await,
        }
    }
}

/// The fields every credential API returns, borrowed from its output.
pub(crate) struct IssuedFields<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) expiration: Option<&'a DateTime>,
    pub(crate) request_id: Option<&'a str>,
}

/// Builds the [`DbCredential`] from an API output; a response lacking a field is a
/// service failure.
pub(crate) fn credential_from(
    api: &str,
    target: &str,
    fields: IssuedFields<'_>,
) -> Result<DbCredential, CredentialError> {
    let missing = |field: &str| {
        CredentialError::Unavailable(format!(
            "{api} for target {target:?} returned no {field}{}",
            fields
                .request_id
                .map(|id| format!(" (AWS request id {id})"))
                .unwrap_or_default()
        ))
    };
    let user = fields
        .user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing("user"))?;
    let password = fields
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| missing("password"))?;
    let expiration = fields
        .expiration
        .and_then(|e| SystemTime::try_from(*e).ok())
        .ok_or_else(|| missing("valid expiration"))?;
    Ok(DbCredential {
        user: user.to_owned(),
        password: SecretString::from(password),
        expiration,
        aws_request_ids: fields.request_id.map(str::to_owned).into_iter().collect(),
    })
}

/// A request's role in log lines: its ARN, or `default` for the configured default role.
struct RoleName<'a>(Option<&'a Arn>);

impl std::fmt::Display for RoleName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(arn) => write!(f, "{arn}"),
            None => f.write_str("default"),
        }
    }
}

/// Logs the outcome of one credential API call. Never logs the password.
pub(crate) fn log_call(
    api: &str,
    request: &DbCredentialRequest,
    started: Instant,
    outcome: &Result<DbCredential, super::aws_error::CallFailure>,
) {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(credential) => {
            let expiration = DateTime::from(credential.expiration)
                .fmt(Format::DateTime)
                .unwrap_or_default();
            tracing::info!(
                api,
                target = %request.target,
                role_arn = %RoleName(request.role_arn.as_ref()),
                db_user = %request.db_user,
                db_name = %request.db_name,
                issued_user = %credential.user,
                request_id = credential.aws_request_ids.first().map(String::as_str).unwrap_or("-"),
                expiration = %expiration,
                latency_ms,
                outcome = "ok",
                "issued database credential"
            );
        }
        Err(failure) => {
            let outcome = match failure.error {
                CredentialError::Denied(_) => "denied",
                CredentialError::Unavailable(_) => "unavailable",
                CredentialError::Invalid(_) => "invalid",
            };
            tracing::warn!(
                api,
                target = %request.target,
                role_arn = %RoleName(request.role_arn.as_ref()),
                db_user = %request.db_user,
                db_name = %request.db_name,
                request_id = failure.request_id.as_deref().unwrap_or("-"),
                code = %failure.code,
                latency_ms,
                outcome,
                error = %failure.error,
                "database credential request failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn credential_keeps_the_issued_user_exactly() {
        let exp = DateTime::from_secs(2_000_000_000);
        let c = credential_from(
            "GetClusterCredentials",
            "t1",
            IssuedFields {
                user: Some("IAMA:alice"),
                password: Some("s3cret"),
                expiration: Some(&exp),
                request_id: Some("rid-1"),
            },
        )
        .expect("credential");
        assert_eq!(c.user, "IAMA:alice");
        assert_eq!(c.password.expose_secret(), "s3cret");
        assert_eq!(
            c.expiration,
            SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        assert_eq!(c.aws_request_ids, vec!["rid-1".to_owned()]);
    }

    #[test]
    fn response_without_password_is_unavailable_and_names_the_request() {
        let exp = DateTime::from_secs(2_000_000_000);
        let err = credential_from(
            "GetCredentials",
            "t1",
            IssuedFields {
                user: Some("IAMR:role"),
                password: None,
                expiration: Some(&exp),
                request_id: Some("rid-2"),
            },
        )
        .expect_err("no password");
        assert!(matches!(err, CredentialError::Unavailable(_)));
        let msg = err.to_string();
        assert!(msg.contains("password") && msg.contains("rid-2"), "{msg}");
    }
}
