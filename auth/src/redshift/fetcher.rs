//! The AWS SDK side of the credential cache: [`AwsCredentialFetcher`] obtains one database
//! credential from Redshift, without caching, and [`RedshiftCredentials::new`] puts the
//! cache in front of it. Built with the `aws-sdk` feature only.

use super::cache::{refresh_policy, FetchDbCredential, IdentityBudget, RedshiftCredentials};
use super::endpoint::{ResolvedTarget, TargetApi};
use super::{provisioned, serverless};
use crate::aws::clock::SystemClock;
use crate::aws::observe::{no_observer, AwsCallObserver};
use crate::aws::AwsCredentialsForRole;
use crate::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use proxy_config::Arn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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
            refresh_policy(&config.db_credentials),
            IdentityBudget::from_config(&config.db_credentials),
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
        let client = self.client(target, request.role_arn.as_ref())?;
        // A per-identity session stands in for the client's own (per-role) credentials for
        // this one call, so the clients stay one per (target, role) however many identities
        // call through them.
        let session = request
            .role_session_name
            .as_deref()
            .map(|name| self.aws.session_provider(request.role_arn.as_ref(), name))
            .transpose()?;
        match (client, &target.api) {
            (
                ApiClient::Provisioned(client),
                TargetApi::Provisioned {
                    cluster,
                    with_iam,
                    auto_create,
                },
            ) => {
                provisioned::fetch(
                    &client,
                    target,
                    cluster,
                    *with_iam,
                    *auto_create,
                    request,
                    session,
                )
                .await
            }
            (ApiClient::Serverless(client), TargetApi::Serverless { workgroup }) => {
                serverless::fetch(&client, target, workgroup, request, session).await
            }
            // `client` builds each target's client for its kind.
            _ => Err(CredentialError::Invalid(format!(
                "target {:?}: its API client is not of its kind",
                target.name
            ))),
        }
    }

    /// GetCredentials (serverless) and GetClusterCredentialsWithIAM log in as the IAM role
    /// whatever user or groups were granted: such grants share one credential.
    fn cache_key(&self, request: &DbCredentialRequest) -> DbCredentialRequest {
        let mut key = request.clone();
        key.db_groups.sort();
        key.db_groups.dedup();
        let ignores_user = self.targets.get(&request.target).is_some_and(|t| {
            matches!(
                t.api,
                TargetApi::Serverless { .. } | TargetApi::Provisioned { with_iam: true, .. }
            )
        });
        if ignores_user {
            key.db_user.clear();
            key.db_groups.clear();
        }
        key
    }
}
