//! What the proxy learns about its AWS calls and its own AWS credentials, without this
//! crate knowing how it is exported.
//!
//! - [`AwsCallObserver`]: told of every HTTP request sent to AWS (each retry attempt is a
//!   call of its own, as AWS and CloudTrail count them), with its outcome and latency. The
//!   proxy turns these into Prometheus metrics.
//! - [`CredentialHealth`]: whether the proxy's AWS credentials are usable or refreshable,
//!   for the readiness probe. Judged from the last refresh and the cached expiry only: it
//!   never calls AWS.

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, Error, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// The AWS operations the proxy performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsApi {
    /// IAM Roles Anywhere `CreateSession`.
    CreateSession,
    /// Redshift `GetClusterCredentials`.
    GetClusterCredentials,
    /// Redshift `GetClusterCredentialsWithIAM`.
    GetClusterCredentialsWithIam,
    /// Redshift Serverless `GetCredentials`.
    GetCredentials,
    /// A refresh of the `[aws] source = "profile"` credentials (`credential_process`, SSO,
    /// assume-role...): whatever calls the profile makes, counted as one.
    ProfileCredentials,
    /// A refresh of the default credential chain (environment, web identity, ECS, IMDS),
    /// counted as one.
    DefaultChainCredentials,
}

impl AwsApi {
    /// The operation's AWS name (a stable metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            AwsApi::CreateSession => "CreateSession",
            AwsApi::GetClusterCredentials => "GetClusterCredentials",
            AwsApi::GetClusterCredentialsWithIam => "GetClusterCredentialsWithIAM",
            AwsApi::GetCredentials => "GetCredentials",
            AwsApi::ProfileCredentials => "ProfileCredentials",
            AwsApi::DefaultChainCredentials => "DefaultChainCredentials",
        }
    }
}

impl fmt::Display for AwsApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsCallOutcome {
    /// A success status (even if the answer then turned out to be unusable).
    Success,
    /// Throttling: HTTP 429 or a throttling error code.
    Throttled,
    /// Another 4xx answer: denied, invalid, not found.
    ClientError,
    /// A 5xx answer.
    ServerError,
    /// No answer in time.
    Timeout,
    /// The connection could not be made or broke (no HTTP answer).
    Transport,
}

impl AwsCallOutcome {
    /// A stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AwsCallOutcome::Success => "success",
            AwsCallOutcome::Throttled => "throttled",
            AwsCallOutcome::ClientError => "client_error",
            AwsCallOutcome::ServerError => "server_error",
            AwsCallOutcome::Timeout => "timeout",
            AwsCallOutcome::Transport => "transport",
        }
    }

    /// The outcome of an HTTP answer with `status` and, for errors, AWS error `code`.
    pub fn from_status(status: u16, code: Option<&str>) -> Self {
        if (200..300).contains(&status) {
            AwsCallOutcome::Success
        } else if status == 429 || code.is_some_and(is_throttling_code) {
            AwsCallOutcome::Throttled
        } else if status >= 500 {
            AwsCallOutcome::ServerError
        } else {
            AwsCallOutcome::ClientError
        }
    }
}

/// AWS error codes that mean "slow down", across the query, JSON and REST protocols.
pub fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "ProvisionedThroughputExceededException"
    )
}

/// Told of every call the proxy makes to AWS. Called on the request path: keep it cheap
/// (a counter increment) and never block.
pub trait AwsCallObserver: Send + Sync + 'static {
    fn aws_call(&self, api: AwsApi, outcome: AwsCallOutcome, elapsed: Duration);
}

/// Observes nothing (tools and tests that export no metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl AwsCallObserver for NoObserver {
    fn aws_call(&self, _: AwsApi, _: AwsCallOutcome, _: Duration) {}
}

/// The shared "observe nothing" observer.
pub fn no_observer() -> Arc<dyn AwsCallObserver> {
    Arc::new(NoObserver)
}

// ---- AWS SDK clients ------------------------------------------------------------------------

/// When the current attempt's request was handed to the HTTP client (absent when the
/// attempt failed before sending, e.g. while resolving the proxy's own credentials).
#[derive(Debug, Clone, Copy)]
struct TransmitStarted(Option<Instant>);

impl Storable for TransmitStarted {
    type Storer = StoreReplace<Self>;
}

/// An SDK interceptor reporting each attempt that reached the network as one call.
pub(crate) struct SdkCallInterceptor {
    api: AwsApi,
    observer: Arc<dyn AwsCallObserver>,
    /// The operation's error code, read from its typed error (the interceptor only sees a
    /// type-erased one).
    error_code: fn(&Error) -> Option<String>,
}

impl SdkCallInterceptor {
    pub(crate) fn new(
        api: AwsApi,
        observer: Arc<dyn AwsCallObserver>,
        error_code: fn(&Error) -> Option<String>,
    ) -> Self {
        SdkCallInterceptor {
            api,
            observer,
            error_code,
        }
    }
}

impl fmt::Debug for SdkCallInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkCallInterceptor")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The error code of a typed SDK error `E`, if `error` is one.
pub(crate) fn code_of<E>(error: &Error) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + fmt::Debug + 'static,
{
    error
        .downcast_ref::<E>()
        .and_then(|e| e.code())
        .map(str::to_owned)
}

impl Intercept for SdkCallInterceptor {
    fn name(&self) -> &'static str {
        "AwsCallObserver"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(TransmitStarted(None));
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(TransmitStarted(Some(Instant::now())));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Attempts that never sent a request are not AWS calls.
        let Some(TransmitStarted(Some(started))) = cfg.load::<TransmitStarted>().copied() else {
            return Ok(());
        };
        let status = context.response().map(|r| r.status().as_u16());
        let outcome = match (context.output_or_error(), status) {
            (Some(Ok(_)), _) => AwsCallOutcome::Success,
            (Some(Err(error)), status) => self.classify(error, status),
            (None, Some(status)) => AwsCallOutcome::from_status(status, None),
            (None, None) => AwsCallOutcome::Transport,
        };
        self.observer.aws_call(self.api, outcome, started.elapsed());
        Ok(())
    }
}

impl SdkCallInterceptor {
    fn classify(&self, error: &OrchestratorError<Error>, status: Option<u16>) -> AwsCallOutcome {
        if error.is_timeout_error() {
            return AwsCallOutcome::Timeout;
        }
        if let Some(connector) = error.as_connector_error() {
            return if connector.is_timeout() {
                AwsCallOutcome::Timeout
            } else {
                AwsCallOutcome::Transport
            };
        }
        let code = error.as_operation_error().and_then(self.error_code);
        match status {
            Some(status) => AwsCallOutcome::from_status(status, code.as_deref()),
            None => AwsCallOutcome::Transport,
        }
    }
}

// ---- credential health --------------------------------------------------------------------

/// The state of one set of the proxy's AWS credentials (one role, or the single identity
/// of a profile / the default chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialState {
    /// Credentials are held and not expired (a refresh may have failed since: they still
    /// work until they expire).
    Usable { expiration: Option<SystemTime> },
    /// The last refresh failed and no unexpired credentials are held.
    Failing { reason: String },
    /// Not fetched yet, or expired without a failed refresh: the next use fetches them.
    Unknown,
}

/// The state of every set of AWS credentials the proxy has used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialHealth {
    /// `(role ARN or source name, state)`.
    pub identities: Vec<(String, CredentialState)>,
}

impl CredentialHealth {
    /// `Err(reason)` when the proxy cannot obtain AWS credentials at all: at least one
    /// identity is failing and none is usable.
    ///
    /// One failing role among working ones keeps the proxy ready: that is a configuration
    /// problem of one policy rule, which every replica shares, and taking replicas out of
    /// service would only widen the outage to everyone else.
    pub fn readiness(&self) -> Result<(), String> {
        let usable = self
            .identities
            .iter()
            .any(|(_, s)| matches!(s, CredentialState::Usable { .. }));
        let failing: Vec<String> = self
            .identities
            .iter()
            .filter_map(|(who, s)| match s {
                CredentialState::Failing { reason } => Some(format!("{who}: {reason}")),
                _ => None,
            })
            .collect();
        if usable || failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("; "))
        }
    }
}

/// The last refresh of one set of credentials, for [`CredentialHealth`].
#[derive(Debug, Default)]
pub(crate) struct RefreshRecord {
    state: Mutex<RefreshState>,
}

#[derive(Debug, Default)]
struct RefreshState {
    /// Set by a successful refresh: the credentials' expiry (`None`: they do not expire).
    expiration: Option<Option<SystemTime>>,
    /// Set by a failed refresh, cleared by a successful one.
    failure: Option<String>,
}

impl RefreshRecord {
    pub(crate) fn succeeded(&self, expiration: Option<SystemTime>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.expiration = Some(expiration);
        s.failure = None;
    }

    pub(crate) fn failed(&self, reason: String) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure = Some(reason);
    }

    /// The state at `now`.
    pub(crate) fn state(&self, now: SystemTime) -> CredentialState {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (s.expiration, &s.failure) {
            (Some(None), _) => CredentialState::Usable { expiration: None },
            (Some(Some(at)), _) if now < at => CredentialState::Usable {
                expiration: Some(at),
            },
            (_, Some(reason)) => CredentialState::Failing {
                reason: reason.clone(),
            },
            _ => CredentialState::Unknown,
        }
    }
}

// ---- profile and default-chain credentials --------------------------------------------------

/// A credentials provider that reports each refresh as a call of `api` and remembers the
/// last outcome. The SDK clients cache what it returns, so it is only asked when the
/// cached credentials near expiry: every call here is a real refresh.
#[derive(Clone)]
pub(crate) struct ObservedProvider {
    inner: SharedCredentialsProvider,
    api: AwsApi,
    observer: Arc<dyn AwsCallObserver>,
    pub(crate) record: Arc<RefreshRecord>,
    /// A background retry after a failed refresh is running.
    retrying: Arc<AtomicBool>,
}

/// First wait of the background retry after a failed profile / default-chain refresh;
/// doubled after each failure up to [`MAX_RETRY_WAIT`].
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(5);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

impl ObservedProvider {
    pub(crate) fn new(
        inner: SharedCredentialsProvider,
        api: AwsApi,
        observer: Arc<dyn AwsCallObserver>,
    ) -> Self {
        ObservedProvider {
            inner,
            api,
            observer,
            record: Arc::default(),
            retrying: Arc::default(),
        }
    }

    /// After a failed refresh, keeps refreshing in the background until one succeeds: a
    /// proxy without AWS credentials reports itself unready and gets no traffic, so no
    /// credential call would ever ask again. The SDK clients still fetch their own on the
    /// next call; this only keeps the health state (and readiness) current.
    fn retry_in_background(&self) {
        if self.retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.retrying.store(false, Ordering::SeqCst);
            return;
        };
        let provider = self.clone();
        runtime.spawn(async move {
            let mut wait = FIRST_RETRY_WAIT;
            loop {
                tokio::time::sleep(wait).await;
                // A credential call may have refreshed them meanwhile.
                if matches!(
                    provider.record.state(SystemTime::now()),
                    CredentialState::Usable { .. }
                ) || provider.provide_credentials().await.is_ok()
                {
                    break;
                }
                wait = (wait * 2).min(MAX_RETRY_WAIT);
            }
            provider.retrying.store(false, Ordering::SeqCst);
        });
    }
}

impl fmt::Debug for ObservedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedProvider")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// The outcome of a provider refresh. Providers report no HTTP status, so this is coarse:
/// missing or invalid configuration is the caller's fault, a timeout is a timeout, and any
/// other failure is counted against the service.
fn provider_outcome(error: &CredentialsError) -> AwsCallOutcome {
    match error {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            AwsCallOutcome::ClientError
        }
        CredentialsError::ProviderTimedOut(_) => AwsCallOutcome::Timeout,
        _ => AwsCallOutcome::ServerError,
    }
}

impl ProvideCredentials for ObservedProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let started = Instant::now();
            let result = self.inner.provide_credentials().await;
            let outcome = match &result {
                Ok(credentials) => {
                    self.record.succeeded(credentials.expiry());
                    AwsCallOutcome::Success
                }
                Err(error) => {
                    self.record.failed(
                        aws_smithy_types::error::display::DisplayErrorContext(error).to_string(),
                    );
                    self.retry_in_background();
                    provider_outcome(error)
                }
            };
            self.observer.aws_call(self.api, outcome, started.elapsed());
            result
        })
    }

    fn fallback_on_interrupt(&self) -> Option<aws_credential_types::Credentials> {
        self.inner.fallback_on_interrupt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_status_and_code() {
        use AwsCallOutcome as O;
        assert_eq!(O::from_status(200, None), O::Success);
        assert_eq!(O::from_status(400, Some("Throttling")), O::Throttled);
        assert_eq!(O::from_status(429, None), O::Throttled);
        assert_eq!(O::from_status(403, Some("AccessDenied")), O::ClientError);
        assert_eq!(
            O::from_status(503, Some("ServiceUnavailable")),
            O::ServerError
        );
    }

    #[test]
    fn one_failing_role_among_usable_ones_keeps_the_proxy_ready() {
        let later = SystemTime::now() + Duration::from_secs(600);
        let failing = |who: &str| {
            (
                who.to_string(),
                CredentialState::Failing {
                    reason: "AccessDeniedException".into(),
                },
            )
        };
        let mixed = CredentialHealth {
            identities: vec![
                failing("role/a"),
                (
                    "role/b".into(),
                    CredentialState::Usable {
                        expiration: Some(later),
                    },
                ),
            ],
        };
        assert_eq!(mixed.readiness(), Ok(()));
        let all_failing = CredentialHealth {
            identities: vec![
                failing("role/a"),
                ("role/c".into(), CredentialState::Unknown),
            ],
        };
        let reason = all_failing.readiness().unwrap_err();
        assert!(
            reason.contains("role/a") && reason.contains("AccessDenied"),
            "{reason}"
        );
        assert_eq!(CredentialHealth::default().readiness(), Ok(()));
    }

    #[test]
    fn unexpired_credentials_stay_usable_after_a_failed_refresh() {
        let now = SystemTime::now();
        let record = RefreshRecord::default();
        assert_eq!(record.state(now), CredentialState::Unknown);
        record.succeeded(Some(now + Duration::from_secs(60)));
        record.failed("throttled".into());
        assert!(matches!(record.state(now), CredentialState::Usable { .. }));
        assert_eq!(
            record.state(now + Duration::from_secs(61)),
            CredentialState::Failing {
                reason: "throttled".into()
            }
        );
        record.succeeded(None);
        assert_eq!(
            record.state(now + Duration::from_secs(3600)),
            CredentialState::Usable { expiration: None }
        );
    }
}
