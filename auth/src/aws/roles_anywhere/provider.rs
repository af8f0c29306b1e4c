//! Roles Anywhere credentials on the [refresh engine](crate::refresh): one session per IAM
//! role, or per (role, role session name) when `role_session_name` is an identity template,
//! all sharing one [`RolesAnywhere`] (certificate, key, profile, trust anchor, HTTP client).
//!
//! - A session is refreshed `refresh_before` ahead of expiry, plus up to a minute of jitter
//!   so that many roles or proxies do not refresh in lockstep; callers use it until a minute
//!   (at most half of `refresh_before`) before it expires, then wait for a new one.
//! - Role sessions are kept fresh in the background and, after a failure, retried there
//!   until one works: a proxy without AWS credentials reports itself unready, gets no
//!   logins, and must still recover on its own. Per-identity sessions are refreshed ahead
//!   when used and left to lapse when not; at most `max_sessions` are held, the least
//!   recently used giving way.
//! - Expiry is judged on the wall clock at the moment of use (see [`crate::aws::clock`]).
//! - Concurrent callers share one CreateSession call; failures back off (1 s doubling to a
//!   minute). Throttling, 5xx, connection failures and timeouts are retried within a call
//!   with jittered exponential backoff ([`RetryPolicy`]).

mod create;

use super::session::SessionClient;
use super::signer::X509Signer;
#[cfg(any(test, feature = "test-util"))]
use crate::aws::clock::Clock;
use crate::aws::clock::SystemClock;
use crate::aws::observe::{no_observer, AwsCallObserver, CredentialState};
use crate::db_credentials::CredentialError;
use crate::refresh::{Background, EngineOptions, Margins, RefreshAhead, RefreshPolicy, Standing};
use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use create::{Session, SessionCreator, SignerSource};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use crate::refresh::RetryPolicy;

/// Callers use cached credentials until this close to expiry (or half of
/// `refresh_before`, if smaller), then wait for new ones.
const MIN_REMAINING: Duration = Duration::from_secs(60);
/// Upper bound of the jitter added to `refresh_before`.
const MAX_JITTER: Duration = Duration::from_secs(60);
/// Longest wait after failed CreateSession rounds before the next one.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Longest background sleep: the wall clock is re-read at least this often.
const POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Default timeout of one CreateSession call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Default bound of the sessions held at once (`[aws.roles_anywhere] max_sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 1000;

pub(crate) fn format_time(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}

/// Which session: a role, and the role session name when it is per identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub role_arn: String,
    /// `None`: the role's own session (named by a plain `role_session_name`, if any).
    pub role_session_name: Option<String>,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role_session_name {
            None => f.write_str(&self.role_arn),
            Some(name) => write!(f, "{} (role session {name})", self.role_arn),
        }
    }
}

type Engine = RefreshAhead<SessionKey, Session, CredentialError>;

/// Everything shared by the providers of one `[aws.roles_anywhere]` configuration.
pub struct RolesAnywhere {
    creator: Arc<SessionCreator>,
    refresh_before: Duration,
    poll_interval: Duration,
    max_sessions: usize,
    engine: Engine,
}

impl fmt::Debug for RolesAnywhere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RolesAnywhere")
            .field("client", &self.creator.client)
            .field("profile_arn", &self.creator.profile_arn)
            .field("trust_anchor_arn", &self.creator.trust_anchor_arn)
            .field("duration", &self.creator.duration)
            .field("refresh_before", &self.refresh_before)
            .finish_non_exhaustive()
    }
}

impl RolesAnywhere {
    /// Loads the certificate and key (failing fast on any problem with them) and prepares
    /// the client. The region is `config.region`, else the trust anchor ARN's. A
    /// `role_session_name` with placeholders names per-identity sessions (see
    /// [`Self::session_provider`]); a plain one names every role session.
    pub fn from_config(
        config: &proxy_config::RolesAnywhereConfig,
        refresh_before: Duration,
    ) -> Result<Self, CredentialError> {
        let invalid =
            |what: String| CredentialError::Invalid(format!("[aws.roles_anywhere] {what}"));
        // The ARNs were parsed (and their kinds checked) when the file was read.
        let signer = X509Signer::from_config(config).map_err(|e| invalid(e.to_string()))?;
        tracing::info!(
            serial = signer.serial_decimal(),
            subject = signer.subject(),
            algorithm = signer.algorithm(),
            not_after = %format_time(signer.not_after()),
            "loaded the Roles Anywhere certificate"
        );
        let client = SessionClient::new(
            config.region(),
            config.endpoint_url.as_deref(),
            DEFAULT_CALL_TIMEOUT,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let signer = SignerSource::Files {
            config: Box::new(config.clone()),
            current: Mutex::new(Arc::new(signer)),
        };
        // A template names per-identity sessions (their keys carry the rendered names).
        let plain_name = config
            .role_session_name
            .clone()
            .filter(|name| !proxy_config::is_template(name));
        Ok(Self::build(
            client,
            signer,
            config.profile_arn.to_string(),
            config.trust_anchor_arn.to_string(),
            config.session_duration,
            refresh_before,
        )
        .with_role_session_name(plain_name)
        .with_max_sessions(config.max_sessions))
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
        Self::build(
            client,
            SignerSource::Fixed(Arc::new(signer)),
            profile_arn.into(),
            trust_anchor_arn.into(),
            duration,
            refresh_before,
        )
    }

    fn build(
        client: SessionClient,
        signer: SignerSource,
        profile_arn: String,
        trust_anchor_arn: String,
        duration: Duration,
        refresh_before: Duration,
    ) -> Self {
        let creator = Arc::new(SessionCreator {
            client,
            signer: Arc::new(signer),
            profile_arn,
            trust_anchor_arn,
            duration,
            default_session_name: None,
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
            observer: no_observer(),
        });
        let engine = engine(
            &creator,
            refresh_before,
            POLL_INTERVAL,
            DEFAULT_MAX_SESSIONS,
        );
        RolesAnywhere {
            creator,
            refresh_before,
            poll_interval: POLL_INTERVAL,
            max_sessions: DEFAULT_MAX_SESSIONS,
            engine,
        }
    }

    /// A new engine for changed settings (the builders run before any use, so nothing
    /// cached is lost).
    fn rebuilt(mut self, change: impl FnOnce(&mut SessionCreator)) -> Self {
        let mut creator = (*self.creator).clone();
        change(&mut creator);
        self.creator = Arc::new(creator);
        self.engine = engine(
            &self.creator,
            self.refresh_before,
            self.poll_interval,
            self.max_sessions,
        );
        self
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.rebuilt(|c| c.clock = clock)
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn with_retry_policy(self, retry: RetryPolicy) -> Self {
        self.rebuilt(|c| c.retry = retry)
    }

    /// Where each CreateSession call (every attempt) is reported.
    pub fn with_observer(self, observer: Arc<dyn AwsCallObserver>) -> Self {
        self.rebuilt(|c| c.observer = observer)
    }

    /// The name of role sessions that name none themselves.
    pub fn with_role_session_name(self, name: Option<String>) -> Self {
        self.rebuilt(|c| c.default_session_name = name)
    }

    /// How often, at most, the background refresher sleeps before re-reading the clock.
    #[cfg(any(test, feature = "test-util"))]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self.rebuilt(|_| {})
    }

    /// Most sessions held at once; beyond it the least recently used one is forgotten.
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max.max(1);
        self.rebuilt(|_| {})
    }

    pub fn region(&self) -> &str {
        self.creator.client.region()
    }

    /// The certificate currently in use.
    pub async fn signer(&self) -> Arc<X509Signer> {
        self.creator.signer.current().await
    }

    /// The provider of `role_arn`'s own session.
    pub fn provider(self: &Arc<Self>, role_arn: impl Into<String>) -> RolesAnywhereProvider {
        self.provider_for(SessionKey {
            role_arn: role_arn.into(),
            role_session_name: None,
        })
    }

    /// The provider of the session of `role_arn` named `role_session_name`.
    pub fn session_provider(
        self: &Arc<Self>,
        role_arn: impl Into<String>,
        role_session_name: impl Into<String>,
    ) -> RolesAnywhereProvider {
        self.provider_for(SessionKey {
            role_arn: role_arn.into(),
            role_session_name: Some(role_session_name.into()),
        })
    }

    fn provider_for(self: &Arc<Self>, key: SessionKey) -> RolesAnywhereProvider {
        RolesAnywhereProvider {
            shared: self.clone(),
            key,
        }
    }

    /// The state of every session held, judged on the wall clock now (no call to AWS).
    pub fn health(&self) -> Vec<(String, CredentialState)> {
        let now = self.creator.clock.now();
        let mut states: Vec<_> = self
            .engine
            .standings()
            .into_iter()
            .map(|(key, standing)| (key.to_string(), state_of(Some(standing), now)))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

fn engine(
    creator: &Arc<SessionCreator>,
    refresh_before: Duration,
    poll_interval: Duration,
    max_sessions: usize,
) -> Engine {
    let options = EngineOptions {
        margins: Some(Margins {
            hard: MIN_REMAINING.min(refresh_before / 2),
            soft: refresh_before,
            jitter: MAX_JITTER.min(refresh_before / 4),
        }),
        background: Some(Background::new(poll_interval, |key: &SessionKey| {
            key.role_session_name.is_none()
        })),
        capacity: Some(max_sessions),
    };
    let policy = RefreshPolicy {
        refresh_before,
        backoff_max: BACKOFF_MAX,
    };
    RefreshAhead::with_options(creator.clone(), creator.clock.clone(), policy, options)
}

/// Usable while unexpired (even after a failed refresh), failing once a failure stands
/// and nothing unexpired is held, unknown before the first fetch.
fn state_of(
    standing: Option<Standing<Session, CredentialError>>,
    now: SystemTime,
) -> CredentialState {
    let Some(standing) = standing else {
        return CredentialState::Unknown;
    };
    match (standing.value, standing.failure) {
        (Some(session), _) if now < session.expiration => CredentialState::Usable {
            expiration: Some(session.expiration),
        },
        (_, Some(error)) => CredentialState::Failing {
            reason: error.to_string(),
        },
        _ => CredentialState::Unknown,
    }
}

/// What `check` reports about a session: no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub role_arn: String,
    pub expiration: SystemTime,
    pub request_id: Option<String>,
}

/// AWS credentials for one Roles Anywhere session. Cheap to clone (a handle on the shared
/// engine).
#[derive(Clone)]
pub struct RolesAnywhereProvider {
    shared: Arc<RolesAnywhere>,
    key: SessionKey,
}

impl fmt::Debug for RolesAnywhereProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expiration = self.current().map(|s| format_time(s.expiration));
        f.debug_struct("RolesAnywhereProvider")
            .field("role_arn", &self.key.role_arn)
            .field("role_session_name", &self.key.role_session_name)
            .field("expiration", &expiration)
            .finish()
    }
}

impl RolesAnywhereProvider {
    pub fn role_arn(&self) -> &str {
        &self.key.role_arn
    }

    fn current(&self) -> Option<Session> {
        self.shared.engine.standing(&self.key)?.value
    }

    /// Credentials valid now: cached ones when usable, else from a new session.
    pub async fn credentials(&self) -> Result<Credentials, CredentialError> {
        Ok(self.shared.engine.get(&self.key).await?.credentials)
    }

    /// A new session right now, regardless of the cache (operator `check`, tests).
    pub async fn refresh_now(&self) -> Result<SessionSummary, CredentialError> {
        let session = self.shared.engine.fetch_now(&self.key).await?;
        Ok(SessionSummary {
            role_arn: self.key.role_arn.clone(),
            expiration: session.expiration,
            request_id: session.request_id,
        })
    }

    /// Whether this session's credentials are usable, failing or not fetched yet, judged on
    /// the wall clock now (no call to AWS).
    pub fn state(&self) -> CredentialState {
        let now = self.shared.creator.clock.now();
        state_of(self.shared.engine.standing(&self.key), now)
    }

    /// The cached session, if any (no call to AWS).
    #[cfg(any(test, feature = "test-util"))]
    pub fn current_session(&self) -> Option<SessionSummary> {
        self.current().map(|s| SessionSummary {
            role_arn: self.key.role_arn.clone(),
            expiration: s.expiration,
            request_id: s.request_id,
        })
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
        self.shared
            .engine
            .peek(&self.key)
            .map(|session| session.credentials)
    }
}

#[cfg(test)]
mod tests;
