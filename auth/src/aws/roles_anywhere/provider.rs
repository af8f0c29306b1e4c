//! Refreshing Roles Anywhere credentials, one [`RolesAnywhereProvider`] per IAM role, all
//! sharing one [`RolesAnywhere`] (certificate, key, profile, trust anchor, HTTP client).
//!
//! - Credentials are refreshed in the background `refresh_before` ahead of expiry (with a
//!   little jitter so many roles or proxies do not refresh in lockstep).
//! - Expiry is judged on the wall clock at the moment of use (see [`crate::aws::clock`]).
//!   A caller finding credentials about to expire (after a laptop sleep, or when background
//!   refreshes keep failing) fetches new ones itself.
//! - Concurrent callers share one CreateSession call.
//! - Throttling, 5xx, connection failures and timeouts are retried with jittered exponential
//!   backoff.

use super::session::{SessionClient, SessionCredentials, SessionError, SessionRequest};
use super::signer::X509Signer;
use crate::aws::clock::{Clock, SystemClock};
use crate::aws::observe::{
    no_observer, AwsApi, AwsCallObserver, AwsCallOutcome, CredentialState, RefreshRecord,
};
use crate::db_credentials::CredentialError;
use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use rand::Rng as _;
use secrecy::ExposeSecret;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// Name reported by the credentials to the AWS SDK (shows up in SDK debug logs).
const PROVIDER_NAME: &str = "RolesAnywhere";
/// Callers accept cached credentials until this close to expiry (or half of
/// `refresh_before`, if smaller), then fetch new ones themselves.
const MIN_REMAINING: Duration = Duration::from_secs(60);
/// Upper bound of the background jitter.
const MAX_JITTER: Duration = Duration::from_secs(60);
/// Default timeout of one CreateSession call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Retries of retryable CreateSession failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, first one included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A delay drawn uniformly from `[delay / 2, delay]` ("equal jitter"): retries from many
/// callers spread out, while the backoff still grows.
fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let extra_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::rng().random_range(0..=extra_ms))
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

/// Where the signer comes from: fixed (tests) or the configured files, re-read before each
/// CreateSession so that a renewed certificate is picked up without a restart.
enum SignerSource {
    Fixed(Arc<X509Signer>),
    Files {
        config: Box<proxy_config::RolesAnywhereConfig>,
        current: Mutex<Arc<X509Signer>>,
    },
}

impl SignerSource {
    async fn current(&self) -> Arc<X509Signer> {
        match self {
            SignerSource::Fixed(signer) => signer.clone(),
            SignerSource::Files { config, current } => {
                let config = config.as_ref().clone();
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
    }
}

pub(crate) fn format_time(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}

/// Everything shared by the providers of one `[aws.roles_anywhere]` configuration.
pub struct RolesAnywhere {
    client: SessionClient,
    signer: SignerSource,
    profile_arn: String,
    trust_anchor_arn: String,
    duration: Duration,
    role_session_name: Option<String>,
    refresh_before: Duration,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    /// Longest background sleep: the wall clock is re-read at least this often, so a
    /// machine waking from sleep refreshes promptly.
    poll_interval: Duration,
    observer: Arc<dyn AwsCallObserver>,
}

impl fmt::Debug for RolesAnywhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolesAnywhere")
            .field("client", &self.client)
            .field("profile_arn", &self.profile_arn)
            .field("trust_anchor_arn", &self.trust_anchor_arn)
            .field("duration", &self.duration)
            .field("refresh_before", &self.refresh_before)
            .finish_non_exhaustive()
    }
}

impl RolesAnywhere {
    /// Loads the certificate and key (failing fast on any problem with them) and prepares
    /// the client. The region is `config.region`, else the trust anchor ARN's.
    pub fn from_config(
        config: &proxy_config::RolesAnywhereConfig,
        refresh_before: Duration,
    ) -> Result<Self, CredentialError> {
        let invalid =
            |what: String| CredentialError::Invalid(format!("[aws.roles_anywhere] {what}"));
        // The ARNs were parsed (and their kinds checked) when the file was read.
        let region = config.region();
        let signer = X509Signer::from_config(config).map_err(|e| invalid(e.to_string()))?;
        tracing::info!(
            serial = signer.serial_decimal(),
            subject = signer.subject(),
            algorithm = signer.algorithm(),
            not_after = %format_time(signer.not_after()),
            "loaded the Roles Anywhere certificate"
        );
        let client =
            SessionClient::new(region, config.endpoint_url.as_deref(), DEFAULT_CALL_TIMEOUT)
                .map_err(|e| invalid(e.to_string()))?;
        Ok(RolesAnywhere {
            client,
            signer: SignerSource::Files {
                config: Box::new(config.clone()),
                current: Mutex::new(Arc::new(signer)),
            },
            profile_arn: config.profile_arn.to_string(),
            trust_anchor_arn: config.trust_anchor_arn.to_string(),
            duration: config.session_duration,
            role_session_name: config.role_session_name.clone(),
            refresh_before,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
            poll_interval: Duration::from_secs(60),
            observer: no_observer(),
        })
    }

    /// Parts given directly (tests, tools): a fixed signer that is never reloaded.
    pub fn new(
        client: SessionClient,
        signer: X509Signer,
        profile_arn: impl Into<String>,
        trust_anchor_arn: impl Into<String>,
        duration: Duration,
        refresh_before: Duration,
    ) -> Self {
        RolesAnywhere {
            client,
            signer: SignerSource::Fixed(Arc::new(signer)),
            profile_arn: profile_arn.into(),
            trust_anchor_arn: trust_anchor_arn.into(),
            duration,
            role_session_name: None,
            refresh_before,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
            poll_interval: Duration::from_secs(60),
            observer: no_observer(),
        }
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where each CreateSession call (every attempt) is reported.
    pub fn with_observer(mut self, observer: Arc<dyn AwsCallObserver>) -> Self {
        self.observer = observer;
        self
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn with_role_session_name(mut self, name: Option<String>) -> Self {
        self.role_session_name = name;
        self
    }

    /// How often, at most, the background refresher sleeps before re-reading the clock.
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    pub fn region(&self) -> &str {
        self.client.region()
    }

    /// The certificate currently in use.
    pub async fn signer(&self) -> Arc<X509Signer> {
        self.signer.current().await
    }

    /// A new provider for `role_arn` (each has its own session and refresh).
    pub fn provider(self: &Arc<Self>, role_arn: impl Into<String>) -> RolesAnywhereProvider {
        RolesAnywhereProvider {
            inner: Arc::new(ProviderInner {
                shared: self.clone(),
                role_arn: role_arn.into(),
                cache: Mutex::new(None),
                fetch: tokio::sync::Mutex::new(()),
                refresher: Mutex::new(None),
                wake: Arc::new(Notify::new()),
                refresh: RefreshRecord::default(),
            }),
        }
    }
}

#[derive(Clone)]
struct Cached {
    credentials: Credentials,
    expiration: SystemTime,
    /// When the background refresher replaces these credentials.
    refresh_at: SystemTime,
    request_id: Option<String>,
}

struct ProviderInner {
    shared: Arc<RolesAnywhere>,
    role_arn: String,
    cache: Mutex<Option<Cached>>,
    /// Held while calling CreateSession: one call at a time, whoever else needs new
    /// credentials waits for it and uses its result.
    fetch: tokio::sync::Mutex<()>,
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
    /// Wakes the refresher early (stale credentials seen by a caller).
    wake: Arc<Notify>,
    /// The outcome of the last CreateSession round, for readiness.
    refresh: RefreshRecord,
}

impl Drop for ProviderInner {
    fn drop(&mut self) {
        if let Some(task) = self
            .refresher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// What `check` reports about a session: no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub role_arn: String,
    pub expiration: SystemTime,
    pub request_id: Option<String>,
}

/// AWS credentials for one IAM role through Roles Anywhere. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RolesAnywhereProvider {
    inner: Arc<ProviderInner>,
}

impl fmt::Debug for RolesAnywhereProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiration = self.cached().map(|c| format_time(c.expiration));
        f.debug_struct("RolesAnywhereProvider")
            .field("role_arn", &self.inner.role_arn)
            .field("expiration", &expiration)
            .finish()
    }
}

impl RolesAnywhereProvider {
    pub fn role_arn(&self) -> &str {
        &self.inner.role_arn
    }

    fn now(&self) -> SystemTime {
        self.inner.shared.clock.now()
    }

    fn cached(&self) -> Option<Cached> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Still fine to hand out at `now` (even if a refresh is due).
    fn usable(&self, cached: &Cached, now: SystemTime) -> bool {
        let margin = MIN_REMAINING.min(self.inner.shared.refresh_before / 2);
        now + margin < cached.expiration
    }

    /// Credentials valid now: cached ones when usable, else from a new session.
    pub async fn credentials(&self) -> Result<Credentials, CredentialError> {
        let now = self.now();
        if let Some(cached) = self.cached() {
            if now < cached.refresh_at {
                return Ok(cached.credentials);
            }
            if self.usable(&cached, now) {
                // Due for refresh but still valid: hand them out and let the refresher work.
                self.ensure_refresher();
                self.inner.wake.notify_one();
                return Ok(cached.credentials);
            }
        }
        let _one_at_a_time = self.inner.fetch.lock().await;
        // Whoever held the lock before may have just fetched what is needed.
        if let Some(cached) = self.cached() {
            if self.usable(&cached, self.now()) {
                return Ok(cached.credentials);
            }
        }
        self.fetch_with_retries().await.map(|c| c.credentials)
    }

    /// A new session right now, regardless of the cache (operator `check`, tests).
    pub async fn refresh_now(&self) -> Result<SessionSummary, CredentialError> {
        let _one_at_a_time = self.inner.fetch.lock().await;
        let cached = self.fetch_with_retries().await?;
        Ok(SessionSummary {
            role_arn: self.inner.role_arn.clone(),
            expiration: cached.expiration,
            request_id: cached.request_id,
        })
    }

    /// Whether this role's credentials are usable, failing or not fetched yet, judged on
    /// the wall clock now (no call to AWS).
    pub fn state(&self) -> CredentialState {
        self.inner.refresh.state(self.now())
    }

    /// The cached session, if any (no call to AWS).
    #[cfg(any(test, feature = "test-util"))]
    pub fn current_session(&self) -> Option<SessionSummary> {
        self.cached().map(|c| SessionSummary {
            role_arn: self.inner.role_arn.clone(),
            expiration: c.expiration,
            request_id: c.request_id,
        })
    }

    /// Calls CreateSession, retrying retryable failures; caches and returns the result.
    /// The caller holds `fetch`.
    async fn fetch_with_retries(&self) -> Result<Cached, CredentialError> {
        let shared = &self.inner.shared;
        let request = SessionRequest {
            profile_arn: shared.profile_arn.clone(),
            role_arn: self.inner.role_arn.clone(),
            trust_anchor_arn: shared.trust_anchor_arn.clone(),
            duration: shared.duration,
            role_session_name: shared.role_session_name.clone(),
        };
        let mut delay = shared.retry.initial_backoff;
        let mut attempt = 1;
        loop {
            let signer = shared.signer.current().await;
            let now = self.now();
            let started = std::time::Instant::now();
            let result = shared.client.create_session(&signer, &request, now).await;
            if let Some(outcome) = call_outcome(&result) {
                shared
                    .observer
                    .aws_call(AwsApi::CreateSession, outcome, started.elapsed());
            }
            let error = match result {
                Ok(session) => {
                    let stored = self.store(session, now);
                    if let Err(error) = &stored {
                        self.failed(error);
                    }
                    return stored;
                }
                Err(error) => error,
            };
            if error.is_retryable() && attempt < shared.retry.max_attempts {
                let wait = jittered(delay);
                tracing::warn!(
                    role_arn = %self.inner.role_arn,
                    attempt,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    request_id = error.request_id(),
                    %error,
                    "Roles Anywhere CreateSession failed; retrying"
                );
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(shared.retry.max_backoff);
                attempt += 1;
                continue;
            }
            tracing::warn!(
                role_arn = %self.inner.role_arn,
                attempt,
                request_id = error.request_id(),
                %error,
                "Roles Anywhere CreateSession failed"
            );
            let error = error.to_credential_error(&self.inner.role_arn);
            self.failed(&error);
            return Err(error);
        }
    }

    /// Records a failed round and makes sure the refresher keeps trying in the background:
    /// a proxy without AWS credentials reports itself unready, gets no traffic, and must
    /// still recover on its own once AWS (or its certificate) is fixed.
    fn failed(&self, error: &CredentialError) {
        self.inner.refresh.failed(error.to_string());
        self.ensure_refresher();
    }

    fn store(
        &self,
        session: SessionCredentials,
        now: SystemTime,
    ) -> Result<Cached, CredentialError> {
        let shared = &self.inner.shared;
        if session.expiration <= now {
            // Storing these would make every caller fetch again at once.
            return Err(SessionError::MalformedResponse {
                reason: format!(
                    "credentials expire at {}, which is not in the future: check the system clock",
                    format_time(session.expiration)
                ),
                request_id: session.request_id,
            }
            .to_credential_error(&self.inner.role_arn));
        }
        let lifetime = session.expiration.duration_since(now).unwrap_or_default();
        let jitter_cap = MAX_JITTER.min(shared.refresh_before / 4);
        let jitter = Duration::from_millis(
            rand::rng().random_range(0..=u64::try_from(jitter_cap.as_millis()).unwrap_or(0)),
        );
        // Never plan a refresh before half the lifetime has passed, or a session shorter
        // than `refresh_before` would be refreshed continuously.
        let refresh_at = session
            .expiration
            .checked_sub(shared.refresh_before + jitter)
            .unwrap_or(now)
            .max(now + lifetime / 2);
        tracing::info!(
            role_arn = %self.inner.role_arn,
            expiration = %format_time(session.expiration),
            request_id = session.request_id.as_deref().unwrap_or("-"),
            assumed_role = session.assumed_role_arn.as_deref().unwrap_or("-"),
            "Roles Anywhere session created"
        );
        let cached = Cached {
            credentials: Credentials::new(
                session.access_key_id,
                session.secret_access_key.expose_secret(),
                Some(session.session_token.expose_secret().to_owned()),
                Some(session.expiration),
                PROVIDER_NAME,
            ),
            expiration: session.expiration,
            refresh_at,
            request_id: session.request_id,
        };
        *self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(cached.clone());
        self.inner.refresh.succeeded(Some(cached.expiration));
        self.ensure_refresher();
        Ok(cached)
    }

    /// Starts the background refresher unless it is running. Needs a Tokio runtime, which
    /// every caller of this (async) code has.
    fn ensure_refresher(&self) {
        let mut refresher = self
            .inner
            .refresher
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if refresher.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let task = runtime.spawn(refresh_loop(
            Arc::downgrade(&self.inner),
            self.inner.wake.clone(),
        ));
        *refresher = Some(task.abort_handle());
    }
}

/// Keeps one provider's credentials fresh until the provider is dropped. Holds only a weak
/// reference between rounds so it never keeps a provider alive.
async fn refresh_loop(provider: Weak<ProviderInner>, wake: Arc<Notify>) {
    let mut failures: u32 = 0;
    // Set once this task has waited out a caller's failed round.
    let mut waited_after_failure = false;
    loop {
        // `(how long to sleep, whether a stale-credentials signal may cut the sleep short)`.
        let (wait, wakeable) = {
            let Some(inner) = provider.upgrade() else {
                return;
            };
            let provider = RolesAnywhereProvider { inner };
            let shared = provider.inner.shared.clone();
            let cached = provider.cached();
            if cached.is_none() && failures == 0 && !waited_after_failure {
                // No credentials yet because a caller's round just failed: wait before
                // retrying, so that failure is not repeated at once.
                if !matches!(provider.state(), CredentialState::Failing { .. }) {
                    return;
                }
                waited_after_failure = true;
                let wait = shared.retry.max_backoff.min(shared.poll_interval);
                drop(provider);
                tokio::time::sleep(wait).await;
                continue;
            }
            let now = provider.now();
            if let Some(cached) = cached.filter(|c| now < c.refresh_at) {
                failures = 0;
                let until_due = cached.refresh_at.duration_since(now).unwrap_or_default();
                (until_due.min(shared.poll_interval), true)
            } else {
                let _one_at_a_time = provider.inner.fetch.lock().await;
                // A caller may have refreshed while we waited for the lock.
                let still_due = provider
                    .cached()
                    .is_none_or(|c| provider.now() >= c.refresh_at);
                if !still_due {
                    continue;
                }
                match provider.fetch_with_retries().await {
                    Ok(_) => {
                        failures = 0;
                        waited_after_failure = false;
                        continue;
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let usable = provider
                            .cached()
                            .is_some_and(|c| provider.usable(&c, provider.now()));
                        tracing::warn!(
                            role_arn = %provider.inner.role_arn,
                            failures,
                            still_usable = usable,
                            %error,
                            "background refresh of Roles Anywhere credentials failed"
                        );
                        // Back off without listening to callers, who would otherwise turn
                        // an outage into a tight retry loop.
                        (
                            (shared.retry.max_backoff * failures).min(shared.poll_interval),
                            false,
                        )
                    }
                }
            }
        };
        if wakeable {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
            }
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

impl ProvideCredentials for RolesAnywhereProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials().await.map_err(|error| match error {
                CredentialError::Invalid(_) => CredentialsError::invalid_configuration(error),
                _ => CredentialsError::provider_error(error),
            })
        })
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        let cached = self.cached()?;
        self.usable(&cached, self.now())
            .then_some(cached.credentials)
    }
}

#[cfg(test)]
mod tests;
