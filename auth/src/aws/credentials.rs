//! [`AwsCredentials`]: the proxy's AWS credentials as configured in `[aws]`.

use super::observe::{
    no_observer, AwsApi, AwsCallObserver, CredentialHealth, CredentialState, ObservedProvider,
    RefreshRecord,
};
use super::roles_anywhere::{RolesAnywhere, RolesAnywhereProvider};
use super::sdk_sources;
use super::AwsCredentialsForRole;
use crate::db_credentials::CredentialError;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use proxy_config::{Arn, AwsConfig, AwsCredentialSource};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// What an operator `check` learns about the proxy's AWS credentials. No secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSummary {
    pub source: AwsCredentialSource,
    /// The role the credentials are for (Roles Anywhere only).
    pub role_arn: Option<String>,
    /// When the credentials expire, if they do.
    pub expiration: Option<SystemTime>,
    /// `x-amzn-requestid` of the CreateSession call (Roles Anywhere only).
    pub request_id: Option<String>,
    /// Serial (decimal) and expiry of the Roles Anywhere certificate.
    pub certificate_serial: Option<String>,
    pub certificate_not_after: Option<SystemTime>,
}

impl fmt::Display for CredentialSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: Option<SystemTime>| {
            t.map(super::roles_anywhere::provider::format_time)
                .unwrap_or_else(|| "-".into())
        };
        write!(
            f,
            "source={} role={} expiration={} request_id={}",
            source_name(self.source),
            self.role_arn.as_deref().unwrap_or("-"),
            time(self.expiration),
            self.request_id.as_deref().unwrap_or("-"),
        )?;
        if let Some(serial) = &self.certificate_serial {
            write!(
                f,
                " certificate_serial={serial} certificate_not_after={}",
                time(self.certificate_not_after)
            )?;
        }
        Ok(())
    }
}

fn source_name(source: AwsCredentialSource) -> &'static str {
    match source {
        AwsCredentialSource::Default => "default",
        AwsCredentialSource::Profile => "profile",
        AwsCredentialSource::RolesAnywhere => "roles_anywhere",
    }
}

enum Source {
    RolesAnywhere {
        shared: Arc<RolesAnywhere>,
        default_role: Arn,
    },
    /// A profile or the default chain: one identity, no explicit roles.
    Single {
        source: AwsCredentialSource,
        provider: SharedCredentialsProvider,
        /// Refreshes seen through `provider` (absent for providers given by tests).
        refresh: Option<Arc<RefreshRecord>>,
    },
}

/// The proxy's AWS credentials: an [`AwsCredentialsForRole`] built from `[aws]`.
pub struct AwsCredentials {
    source: Source,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::RolesAnywhere {
                shared,
                default_role,
                ..
            } => f
                .debug_struct("AwsCredentials")
                .field("source", &"roles_anywhere")
                .field("roles_anywhere", shared)
                .field("default_role", &default_role.to_string())
                .finish(),
            Source::Single { source, .. } => f
                .debug_struct("AwsCredentials")
                .field("source", &source_name(*source))
                .finish(),
        }
    }
}

impl AwsCredentials {
    /// Builds the configured source. Roles Anywhere loads (and checks) its certificate and
    /// key here, so configuration mistakes surface at startup; no AWS call is made.
    pub async fn from_config(config: &AwsConfig) -> Result<Self, CredentialError> {
        Self::from_config_observed(config, no_observer()).await
    }

    /// [`from_config`](Self::from_config), reporting every call made for the proxy's own
    /// credentials (CreateSession attempts, profile or default-chain refreshes) to
    /// `observer`.
    pub async fn from_config_observed(
        config: &AwsConfig,
        observer: Arc<dyn AwsCallObserver>,
    ) -> Result<Self, CredentialError> {
        match config.source {
            AwsCredentialSource::RolesAnywhere => {
                let ra = config.roles_anywhere.as_ref().ok_or_else(|| {
                    CredentialError::Invalid(
                        "[aws] source = \"roles_anywhere\" needs an [aws.roles_anywhere] table"
                            .into(),
                    )
                })?;
                let shared = RolesAnywhere::from_config(ra, config.refresh_before())?
                    .with_observer(observer);
                Ok(AwsCredentials::from_roles_anywhere(
                    Arc::new(shared),
                    ra.role_arn.clone(),
                ))
            }
            AwsCredentialSource::Profile => Ok(AwsCredentials::observed(
                AwsCredentialSource::Profile,
                sdk_sources::profile(config)?,
                AwsApi::ProfileCredentials,
                observer,
            )),
            AwsCredentialSource::Default => Ok(AwsCredentials::observed(
                AwsCredentialSource::Default,
                sdk_sources::default_chain(config).await?,
                AwsApi::DefaultChainCredentials,
                observer,
            )),
        }
    }

    /// Roles Anywhere with `default_role` for requests that name no role.
    pub fn from_roles_anywhere(shared: Arc<RolesAnywhere>, default_role: Arn) -> Self {
        AwsCredentials {
            source: Source::RolesAnywhere {
                shared,
                default_role,
            },
        }
    }

    /// A single-identity source from any provider (tests: feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn from_provider(source: AwsCredentialSource, provider: SharedCredentialsProvider) -> Self {
        AwsCredentials {
            source: Source::Single {
                source,
                provider,
                refresh: None,
            },
        }
    }

    fn observed(
        source: AwsCredentialSource,
        provider: SharedCredentialsProvider,
        api: AwsApi,
        observer: Arc<dyn AwsCallObserver>,
    ) -> Self {
        let observed = ObservedProvider::new(provider, api, observer);
        let refresh = observed.record.clone();
        AwsCredentials {
            source: Source::Single {
                source,
                provider: SharedCredentialsProvider::new(observed),
                refresh: Some(refresh),
            },
        }
    }

    /// The state of every set of credentials used so far (one per Roles Anywhere session,
    /// or the profile / default chain), judged from their last refresh: no call to AWS.
    pub fn health(&self) -> CredentialHealth {
        let identities: Vec<(String, CredentialState)> = match &self.source {
            Source::RolesAnywhere { shared, .. } => shared.health(),
            Source::Single {
                source, refresh, ..
            } => refresh
                .iter()
                .map(|r| {
                    (
                        format!("{} credentials", source_name(*source)),
                        r.state(SystemTime::now()),
                    )
                })
                .collect(),
        };
        CredentialHealth { identities }
    }

    pub fn source(&self) -> AwsCredentialSource {
        match &self.source {
            Source::RolesAnywhere { .. } => AwsCredentialSource::RolesAnywhere,
            Source::Single { source, .. } => *source,
        }
    }

    /// The Roles Anywhere provider for `role_arn` (or the default role).
    fn roles_anywhere_provider(&self, role_arn: Option<&Arn>) -> Option<RolesAnywhereProvider> {
        let Source::RolesAnywhere {
            shared,
            default_role,
        } = &self.source
        else {
            return None;
        };
        Some(shared.provider(role_arn.unwrap_or(default_role).to_string()))
    }

    /// Obtains credentials now (a fresh Roles Anywhere session, or the profile / default
    /// chain's credentials) and describes them without secrets.
    pub async fn check(
        &self,
        role_arn: Option<&Arn>,
    ) -> Result<CredentialSummary, CredentialError> {
        match &self.source {
            Source::RolesAnywhere { shared, .. } => {
                let provider = self
                    .roles_anywhere_provider(role_arn)
                    .ok_or_else(|| CredentialError::Invalid("no Roles Anywhere provider".into()))?;
                let session = provider.refresh_now().await?;
                let signer = shared.signer().await;
                Ok(CredentialSummary {
                    source: AwsCredentialSource::RolesAnywhere,
                    role_arn: Some(session.role_arn),
                    expiration: Some(session.expiration),
                    request_id: session.request_id,
                    certificate_serial: Some(signer.serial_decimal().to_owned()),
                    certificate_not_after: Some(signer.not_after()),
                })
            }
            Source::Single {
                source, provider, ..
            } => {
                refuse_role(*source, role_arn)?;
                let credentials = provider
                    .provide_credentials()
                    .await
                    .map_err(|e| sdk_error_to_credential_error(*source, &e))?;
                Ok(CredentialSummary {
                    source: *source,
                    role_arn: None,
                    expiration: credentials.expiry(),
                    request_id: None,
                    certificate_serial: None,
                    certificate_not_after: None,
                })
            }
        }
    }
}

fn refuse_role(source: AwsCredentialSource, role_arn: Option<&Arn>) -> Result<(), CredentialError> {
    match role_arn {
        None => Ok(()),
        Some(role) => Err(CredentialError::Invalid(format!(
            "role {role} cannot be used with [aws] source = \"{}\": per-rule roles need \
             source = \"roles_anywhere\"",
            source_name(source)
        ))),
    }
}

fn sdk_error_to_credential_error(
    source: AwsCredentialSource,
    error: &CredentialsError,
) -> CredentialError {
    let message = format!(
        "AWS credentials from the {} source: {}",
        source_name(source),
        aws_smithy_types::error::display::DisplayErrorContext(error)
    );
    match error {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            CredentialError::Invalid(message)
        }
        _ => CredentialError::Unavailable(message),
    }
}

impl AwsCredentialsForRole for AwsCredentials {
    fn provider(
        &self,
        role_arn: Option<&Arn>,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        match &self.source {
            Source::RolesAnywhere { .. } => self
                .roles_anywhere_provider(role_arn)
                .map(SharedCredentialsProvider::new)
                .ok_or_else(|| CredentialError::Invalid("no Roles Anywhere provider".into())),
            Source::Single {
                source, provider, ..
            } => {
                refuse_role(*source, role_arn)?;
                Ok(provider.clone())
            }
        }
    }

    fn session_provider(
        &self,
        role_arn: Option<&Arn>,
        role_session_name: &str,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        match &self.source {
            Source::RolesAnywhere {
                shared,
                default_role,
            } => Ok(SharedCredentialsProvider::new(shared.session_provider(
                role_arn.unwrap_or(default_role).to_string(),
                role_session_name,
            ))),
            Source::Single { source, .. } => Err(CredentialError::Invalid(format!(
                "a role session name needs [aws] source = \"roles_anywhere\", not \"{}\"",
                source_name(*source)
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
