//! One Roles Anywhere session for the refresh engine: CreateSession signed with the current
//! certificate, retried on throttling and transient failures, each attempt reported to the
//! [`AwsCallObserver`].

use super::super::session::{SessionClient, SessionCredentials, SessionError, SessionRequest};
use super::super::signer::X509Signer;
use super::{format_time, SessionKey};
use crate::aws::clock::Clock;
use crate::aws::observe::{AwsApi, AwsCallObserver, AwsCallOutcome};
use crate::db_credentials::CredentialError;
use crate::refresh::{Expiring, Fetch, RetryPolicy};
use async_trait::async_trait;
use aws_credential_types::Credentials;
use secrecy::ExposeSecret;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Name reported by the credentials to the AWS SDK (shows up in SDK debug logs).
const PROVIDER_NAME: &str = "RolesAnywhere";

/// A session's credentials as the engine caches them.
#[derive(Clone)]
pub(super) struct Session {
    pub credentials: Credentials,
    pub expiration: SystemTime,
    pub request_id: Option<String>,
}

impl Expiring for Session {
    fn expiration(&self) -> SystemTime {
        self.expiration
    }
}

/// Where the signer comes from: fixed (tests) or the configured files, re-read before each
/// CreateSession so that a renewed certificate is picked up without a restart.
pub(super) enum SignerSource {
    Fixed(Arc<X509Signer>),
    Files {
        config: Box<proxy_config::RolesAnywhereConfig>,
        current: Mutex<Arc<X509Signer>>,
    },
}

impl SignerSource {
    pub(super) async fn current(&self) -> Arc<X509Signer> {
        let (config, current) = match self {
            SignerSource::Fixed(signer) => return signer.clone(),
            SignerSource::Files { config, current } => (config.as_ref().clone(), current),
        };
        // File reads and (for encrypted keys) PBKDF2 are blocking work.
        let loaded = tokio::task::spawn_blocking(move || X509Signer::from_config(&config))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(signer) => {
                if signer.serial_decimal() != current.serial_decimal() {
                    tracing::info!(
                        serial = signer.serial_decimal(),
                        subject = signer.subject(),
                        not_after = %format_time(signer.not_after()),
                        "Roles Anywhere certificate changed on disk; using the new one"
                    );
                }
                *current = Arc::new(signer);
            }
            Err(error) => tracing::warn!(
                %error,
                serial = current.serial_decimal(),
                "cannot reload the Roles Anywhere certificate or key; keeping the loaded one"
            ),
        }
        current.clone()
    }
}

/// Everything one CreateSession call needs besides the role and the session name.
#[derive(Clone)]
pub(super) struct SessionCreator {
    pub client: SessionClient,
    pub signer: Arc<SignerSource>,
    pub profile_arn: String,
    pub trust_anchor_arn: String,
    pub duration: std::time::Duration,
    /// For keys that name no session (`[aws.roles_anywhere] role_session_name` when it is
    /// a plain name rather than a template).
    pub default_session_name: Option<String>,
    pub retry: RetryPolicy,
    pub clock: Arc<dyn Clock>,
    pub observer: Arc<dyn AwsCallObserver>,
}

/// How one CreateSession call ended, for [`AwsCallObserver`]; `None` when no request was
/// sent (it could not be built or signed).
fn call_outcome(result: &Result<SessionCredentials, SessionError>) -> Option<AwsCallOutcome> {
    match result {
        // A success status with an unusable body still reached AWS and succeeded there.
        Ok(_) | Err(SessionError::MalformedResponse { .. }) => Some(AwsCallOutcome::Success),
        Err(SessionError::Service { status, code, .. }) => {
            Some(AwsCallOutcome::from_status(*status, code.as_deref()))
        }
        Err(SessionError::Transport { .. }) => Some(AwsCallOutcome::Transport),
        Err(SessionError::Timeout { .. }) => Some(AwsCallOutcome::Timeout),
        Err(SessionError::Request(_)) => None,
    }
}

#[async_trait]
impl Fetch<SessionKey, Session, CredentialError> for SessionCreator {
    /// Calls CreateSession, retrying retryable failures with the [`RetryPolicy`].
    async fn fetch(&self, key: &SessionKey) -> Result<Session, CredentialError> {
        let request = SessionRequest {
            profile_arn: self.profile_arn.clone(),
            role_arn: key.role_arn.clone(),
            trust_anchor_arn: self.trust_anchor_arn.clone(),
            duration: self.duration,
            role_session_name: key
                .role_session_name
                .clone()
                .or_else(|| self.default_session_name.clone()),
        };
        let mut failed = 0;
        loop {
            let signer = self.signer.current().await;
            let now = self.clock.now();
            let started = std::time::Instant::now();
            let result = self.client.create_session(&signer, &request, now).await;
            if let Some(outcome) = call_outcome(&result) {
                self.observer
                    .aws_call(AwsApi::CreateSession, outcome, started.elapsed());
            }
            let error = match result {
                Ok(session) => return accept(key, session, now),
                Err(error) => error,
            };
            failed += 1;
            let retry_in = error
                .is_retryable()
                .then(|| self.retry.wait_after(failed))
                .flatten();
            let Some(wait) = retry_in else {
                tracing::warn!(
                    role_arn = %key.role_arn,
                    role_session_name = key.role_session_name.as_deref().unwrap_or("-"),
                    attempt = failed,
                    request_id = error.request_id(),
                    %error,
                    "Roles Anywhere CreateSession failed"
                );
                return Err(error.to_credential_error(&key.to_string()));
            };
            tracing::warn!(
                role_arn = %key.role_arn,
                role_session_name = key.role_session_name.as_deref().unwrap_or("-"),
                attempt = failed,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                request_id = error.request_id(),
                %error,
                "Roles Anywhere CreateSession failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// The session as the engine caches it, unless it is already expired.
fn accept(
    key: &SessionKey,
    session: SessionCredentials,
    now: SystemTime,
) -> Result<Session, CredentialError> {
    if session.expiration <= now {
        // Caching these would make every caller fetch again at once.
        return Err(SessionError::MalformedResponse {
            reason: format!(
                "credentials expire at {}, which is not in the future: check the system clock",
                format_time(session.expiration)
            ),
            request_id: session.request_id,
        }
        .to_credential_error(&key.to_string()));
    }
    tracing::info!(
        role_arn = %key.role_arn,
        role_session_name = key.role_session_name.as_deref().unwrap_or("-"),
        expiration = %format_time(session.expiration),
        request_id = session.request_id.as_deref().unwrap_or("-"),
        assumed_role = session.assumed_role_arn.as_deref().unwrap_or("-"),
        "Roles Anywhere session created"
    );
    Ok(Session {
        credentials: Credentials::new(
            session.access_key_id,
            session.secret_access_key.expose_secret(),
            Some(session.session_token.expose_secret().to_owned()),
            Some(session.expiration),
            PROVIDER_NAME,
        ),
        expiration: session.expiration,
        request_id: session.request_id,
    })
}
