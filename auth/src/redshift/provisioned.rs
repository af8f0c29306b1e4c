//! Provisioned clusters: `GetClusterCredentials` and `GetClusterCredentialsWithIAM`.

use super::endpoint::{ResolvedTarget, ResourceName, TargetApi};
use super::issued::{issued_output, log_call, outcome_of, retry_config, timeout_config};
use crate::aws::observe::{code_of, AwsApi, AwsCallObserver, SdkCallInterceptor};
use crate::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_redshift::client::customize::CustomizableOperation;
use aws_sdk_redshift::config::{BehaviorVersion, Region};
use aws_sdk_redshift::operation::get_cluster_credentials::{
    GetClusterCredentialsError, GetClusterCredentialsOutput,
};
use aws_sdk_redshift::operation::get_cluster_credentials_with_iam::{
    GetClusterCredentialsWithIAMError, GetClusterCredentialsWithIamOutput,
};
use aws_sdk_redshift::operation::RequestId;
use aws_sdk_redshift::Client;
use aws_smithy_runtime_api::client::interceptors::context::Error;
use std::sync::Arc;
use std::time::Instant;

const GET_CLUSTER_CREDENTIALS: &str = "GetClusterCredentials";
const GET_CLUSTER_CREDENTIALS_WITH_IAM: &str = "GetClusterCredentialsWithIAM";

issued_output!(
    GetClusterCredentialsOutput,
    GetClusterCredentialsWithIamOutput
);

/// An SDK client for `target` signing with `provider`. The SDK signs (SigV4), retries and
/// times out on its own.
pub(crate) fn client(
    target: &ResolvedTarget,
    provider: SharedCredentialsProvider,
    observer: &Arc<dyn AwsCallObserver>,
) -> Client {
    let api = match target.api {
        TargetApi::Provisioned { with_iam: true, .. } => AwsApi::GetClusterCredentialsWithIam,
        _ => AwsApi::GetClusterCredentials,
    };
    let mut config = aws_sdk_redshift::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(target.region.clone()))
        .timeout_config(timeout_config())
        .retry_config(retry_config())
        .interceptor(SdkCallInterceptor::new(api, observer.clone(), error_code));
    config.set_credentials_provider(Some(provider));
    if let Some(url) = &target.aws_endpoint_url {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// `call`, made with the credentials of `session` when given.
fn in_session<T, E, B>(
    call: CustomizableOperation<T, E, B>,
    session: &Option<aws_sdk_redshift::config::Builder>,
) -> CustomizableOperation<T, E, B> {
    match session {
        Some(config) => call.config_override(config.clone()),
        None => call,
    }
}

/// The AWS error code of a failed provisioned credential call.
fn error_code(error: &Error) -> Option<String> {
    code_of::<GetClusterCredentialsError>(error)
        .or_else(|| code_of::<GetClusterCredentialsWithIAMError>(error))
}

/// One credential call for `request` against `target`, the provisioned `cluster`.
pub(crate) async fn fetch(
    client: &Client,
    target: &ResolvedTarget,
    cluster: &ResourceName,
    with_iam: bool,
    auto_create: bool,
    request: &DbCredentialRequest,
    session: Option<SharedCredentialsProvider>,
) -> Result<DbCredential, CredentialError> {
    let session = session.map(|provider| {
        // The provider caches and refreshes its session itself: an SDK cache in front of it
        // would keep one entry per provider ever passed.
        aws_sdk_redshift::config::Builder::default()
            .credentials_provider(provider)
            .identity_cache(aws_sdk_redshift::config::IdentityCache::no_cache())
    });
    let started = Instant::now();
    let (api, outcome) = if with_iam {
        let call = client
            .get_cluster_credentials_with_iam()
            .db_name(&request.db_name)
            .duration_seconds(target.duration_seconds());
        let call = match cluster {
            ResourceName::Identifier(id) => call.cluster_identifier(id),
            ResourceName::CustomDomain(domain) => call.custom_domain_name(domain),
        };
        let api = GET_CLUSTER_CREDENTIALS_WITH_IAM;
        let result = in_session(call.customize(), &session).send().await;
        (api, outcome_of(api, &target.name, result))
    } else {
        let call = client
            .get_cluster_credentials()
            .db_user(&request.db_user)
            .db_name(&request.db_name)
            .duration_seconds(target.duration_seconds())
            .auto_create(auto_create)
            // `None` omits DbGroups entirely: an empty list is not the same request.
            .set_db_groups((!request.db_groups.is_empty()).then(|| request.db_groups.clone()));
        let call = match cluster {
            ResourceName::Identifier(id) => call.cluster_identifier(id),
            ResourceName::CustomDomain(domain) => call.custom_domain_name(domain),
        };
        let api = GET_CLUSTER_CREDENTIALS;
        let result = in_session(call.customize(), &session).send().await;
        (api, outcome_of(api, &target.name, result))
    };
    log_call(api, request, started, &outcome);
    outcome.map_err(|failure| failure.error)
}
