//! Redshift Serverless workgroups: `GetCredentials`.

use super::endpoint::{ResolvedTarget, ResourceName};
use super::issued::{issued_output, log_call, outcome_of, retry_config, timeout_config};
use crate::aws::observe::{code_of, AwsApi, AwsCallObserver, SdkCallInterceptor};
use crate::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_redshiftserverless::config::{BehaviorVersion, Region};
use aws_sdk_redshiftserverless::operation::get_credentials::{
    GetCredentialsError, GetCredentialsOutput,
};
use aws_sdk_redshiftserverless::operation::RequestId;
use aws_sdk_redshiftserverless::Client;
use std::sync::Arc;
use std::time::Instant;

const GET_CREDENTIALS: &str = "GetCredentials";

issued_output!(GetCredentialsOutput);

/// An SDK client for `target` signing with `provider`.
pub(crate) fn client(
    target: &ResolvedTarget,
    provider: SharedCredentialsProvider,
    observer: &Arc<dyn AwsCallObserver>,
) -> Client {
    let mut config = aws_sdk_redshiftserverless::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(target.region.clone()))
        .timeout_config(timeout_config())
        .retry_config(retry_config())
        .interceptor(SdkCallInterceptor::new(
            AwsApi::GetCredentials,
            observer.clone(),
            code_of::<GetCredentialsError>,
        ));
    config.set_credentials_provider(Some(provider));
    if let Some(url) = &target.aws_endpoint_url {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// One `GetCredentials` call for `request` against `target`, the serverless `workgroup`.
/// The database user follows the IAM identity (`IAMR:<role>`), so `request.db_user` and
/// the groups are not sent.
pub(crate) async fn fetch(
    client: &Client,
    target: &ResolvedTarget,
    workgroup: &ResourceName,
    request: &DbCredentialRequest,
    session: Option<SharedCredentialsProvider>,
) -> Result<DbCredential, CredentialError> {
    let started = Instant::now();
    let call = client
        .get_credentials()
        .db_name(&request.db_name)
        .duration_seconds(target.duration_seconds());
    let call = match workgroup {
        ResourceName::Identifier(name) => call.workgroup_name(name),
        ResourceName::CustomDomain(domain) => call.custom_domain_name(domain),
    };
    let call = call.customize();
    // See `provisioned::fetch`: the session's provider caches, the SDK must not.
    let call = match session {
        Some(provider) => call.config_override(
            aws_sdk_redshiftserverless::config::Builder::default()
                .credentials_provider(provider)
                .identity_cache(aws_sdk_redshiftserverless::config::IdentityCache::no_cache()),
        ),
        None => call,
    };
    let outcome = outcome_of(GET_CREDENTIALS, &target.name, call.send().await);
    log_call(GET_CREDENTIALS, request, started, &outcome);
    outcome.map_err(|failure| failure.error)
}
