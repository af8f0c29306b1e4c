use super::*;
use crate::aws::clock::ManualClock;
use crate::aws::observe::{AwsApi, AwsCallObserver, AwsCallOutcome, CredentialState};
use crate::aws::roles_anywhere::signer::SignerPem;
use crate::aws::roles_anywhere::test_support::{FakeRolesAnywhere, Reply, TestIdentity};
use rcgen::PKCS_ECDSA_P256_SHA256;

const ROLE: &str = "arn:aws:iam::123456789012:role/proxy";
const HOUR: Duration = Duration::from_secs(3600);
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Fixed start of the manual clock: the server's answers are relative to it.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    }
}

fn roles_anywhere(server: &FakeRolesAnywhere, clock: &ManualClock) -> Arc<RolesAnywhere> {
    Arc::new(unshared(server, clock))
}

fn unshared(server: &FakeRolesAnywhere, clock: &ManualClock) -> RolesAnywhere {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let signer = X509Signer::from_pem(SignerPem {
        certificate: identity.cert_pem.as_bytes(),
        private_key: identity.key_pkcs8_pem().as_bytes(),
        ..SignerPem::default()
    })
    .unwrap();
    let client =
        SessionClient::new("eu-west-1", Some(&server.endpoint), Duration::from_secs(5)).unwrap();
    RolesAnywhere::new(
        client,
        signer,
        "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p",
        "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t",
        HOUR,
        REFRESH_BEFORE,
    )
    .with_clock(Arc::new(clock.clone()))
    .with_retry_policy(quick_retries())
    .with_poll_interval(Duration::from_millis(20))
}

/// Every session lasts one hour from the manual clock's start, plus `n` hours for the n-th.
fn hourly(n: usize) -> Reply {
    Reply::Success {
        expiration: t0() + HOUR * (n as u32 + 1),
    }
}

async fn wait_for_calls(server: &FakeRolesAnywhere, calls: usize) {
    for _ in 0..300 {
        if server.calls() >= calls {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {calls} calls, saw {}", server.calls());
}

#[tokio::test]
async fn concurrent_callers_share_one_create_session() {
    let server = FakeRolesAnywhere::start(|n| Reply::SlowSuccess {
        expiration: t0() + HOUR * (n as u32 + 1),
        delay: Duration::from_millis(200),
    })
    .await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.credentials().await })
        })
        .collect();
    for caller in callers {
        let credentials = caller.await.unwrap().unwrap();
        assert_eq!(credentials.access_key_id(), "AKID0");
    }
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn cached_credentials_are_reused_until_the_refresh_window() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let first = provider.credentials().await.unwrap();
    assert_eq!(first.access_key_id(), "AKID0");
    assert_eq!(first.session_token(), Some("token0"));
    assert_eq!(first.expiry(), Some(t0() + HOUR));
    clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn expiry_is_judged_on_the_wall_clock_at_use() {
    // The machine sleeps past expiry: no timer has fired, but the next use must not hand
    // out the expired credentials.
    let server = FakeRolesAnywhere::start(|n| Reply::Success {
        expiration: t0() + HOUR * 3 + HOUR * (n as u32),
    })
    .await;
    let clock = ManualClock::new(t0() + HOUR * 2);
    let ra = roles_anywhere(&server, &clock);
    let provider = ra.provider(ROLE);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
    clock.advance(HOUR + Duration::from_secs(1));
    let after_sleep = provider.credentials().await.unwrap();
    assert_eq!(after_sleep.access_key_id(), "AKID1");
    assert!(after_sleep.expiry().unwrap() > clock.now());
}

#[tokio::test]
async fn background_refresh_runs_ahead_of_expiry() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
    // Inside the refresh window (5 min + up to 60 s jitter before expiry), still valid.
    clock.set(t0() + HOUR - Duration::from_secs(240));
    wait_for_calls(&server, 2).await;
    // The refreshed credentials are served without another call.
    for _ in 0..100 {
        if provider.current_session().unwrap().request_id.as_deref() == Some("req-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID1"
    );
    assert_eq!(server.calls(), 2);
}

/// Throttles the first call, answers the second with a 503, then issues hourly sessions.
async fn throttled_then_busy_then_hourly() -> FakeRolesAnywhere {
    FakeRolesAnywhere::start(|n| match n {
        0 => Reply::Error {
            status: 429,
            code: "ThrottlingException",
            message: "Rate exceeded",
        },
        1 => Reply::Error {
            status: 503,
            code: "ServiceUnavailable",
            message: "busy",
        },
        _ => hourly(0),
    })
    .await
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_then_succeeds() {
    let server = throttled_then_busy_then_hourly().await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let started = std::time::Instant::now();
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID2"
    );
    assert_eq!(server.calls(), 3);
    // Two backoffs: at least half of 10 ms and half of 20 ms.
    assert!(started.elapsed() >= Duration::from_millis(15));
}

#[tokio::test]
async fn access_denied_is_not_retried() {
    let server = FakeRolesAnywhere::start(|_| Reply::Error {
        status: 403,
        code: "AccessDeniedException",
        message: "Unable to assume role",
    })
    .await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let err = provider.credentials().await.unwrap_err();
    assert!(
        matches!(&err, CredentialError::Denied(m) if m.contains("Unable to assume role") && m.contains(ROLE)),
        "{err}"
    );
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let server = FakeRolesAnywhere::start(|_| Reply::Error {
        status: 500,
        code: "InternalServerException",
        message: "oops",
    })
    .await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let err = provider.credentials().await.unwrap_err();
    assert!(matches!(err, CredentialError::Unavailable(_)), "{err}");
    assert_eq!(server.calls(), quick_retries().max_attempts as usize);
}

#[tokio::test]
async fn credentials_already_expired_on_arrival_are_refused() {
    let server = FakeRolesAnywhere::start(|_| Reply::Success {
        expiration: t0() - Duration::from_secs(1),
    })
    .await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    let err = provider.credentials().await.unwrap_err();
    assert!(err.to_string().contains("check the system clock"), "{err}");
    assert!(provider.current_session().is_none());
}

#[tokio::test]
async fn short_sessions_are_not_refreshed_continuously() {
    // A 4-minute session with a 5-minute refresh_before: refresh at half its lifetime.
    let server = FakeRolesAnywhere::start(|_| Reply::Success {
        expiration: t0() + Duration::from_secs(240),
    })
    .await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    provider.credentials().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.calls(), 1);
    assert_eq!(
        provider.credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
}

#[tokio::test]
async fn each_role_has_its_own_session() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let ra = roles_anywhere(&server, &clock);
    let other_role = "arn:aws:iam::123456789012:role/analyst";
    ra.provider(ROLE).credentials().await.unwrap();
    ra.provider(other_role).credentials().await.unwrap();
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body["roleArn"], ROLE);
    assert_eq!(requests[1].body["roleArn"], other_role);
}

#[tokio::test]
async fn refresh_now_bypasses_the_cache_and_reports_no_secrets() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    provider.credentials().await.unwrap();
    let summary = provider.refresh_now().await.unwrap();
    assert_eq!(
        summary,
        SessionSummary {
            role_arn: ROLE.into(),
            expiration: t0() + HOUR * 2,
            request_id: Some("req-1".into()),
        }
    );
    assert_eq!(server.calls(), 2);
    let debug = format!("{provider:?}");
    assert!(
        !debug.contains("secret1") && !debug.contains("token1"),
        "{debug}"
    );
}

#[tokio::test]
async fn works_as_an_aws_sdk_credentials_provider() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    assert!(provider.fallback_on_interrupt().is_none());
    let shared = aws_credential_types::provider::SharedCredentialsProvider::new(provider.clone());
    let credentials = shared.provide_credentials().await.unwrap();
    assert_eq!(credentials.access_key_id(), "AKID0");
    assert_eq!(credentials.secret_access_key(), "secret0");
    assert_eq!(
        provider.fallback_on_interrupt().unwrap().access_key_id(),
        "AKID0"
    );

    let denied = FakeRolesAnywhere::start(|_| Reply::Error {
        status: 403,
        code: "AccessDeniedException",
        message: "no",
    })
    .await;
    let provider = roles_anywhere(&denied, &clock).provider(ROLE);
    let err = provider.provide_credentials().await.unwrap_err();
    assert!(matches!(err, CredentialsError::ProviderError(_)), "{err:?}");
}

#[tokio::test]
async fn dropping_the_provider_stops_its_refresher() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    provider.credentials().await.unwrap();
    drop(provider);
    clock.set(t0() + HOUR - Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(server.calls(), 1);
}

/// The calls an observer was told of.
#[derive(Default)]
struct Seen(Mutex<Vec<(AwsApi, AwsCallOutcome)>>);

impl AwsCallObserver for Seen {
    fn aws_call(&self, api: AwsApi, outcome: AwsCallOutcome, _elapsed: Duration) {
        self.0.lock().unwrap().push((api, outcome));
    }
}

fn denied() -> Reply {
    Reply::Error {
        status: 403,
        code: "AccessDeniedException",
        message: "Untrusted certificate",
    }
}

#[tokio::test]
async fn every_attempt_is_reported_to_the_observer_with_its_outcome() {
    let server = throttled_then_busy_then_hourly().await;
    let clock = ManualClock::new(t0());
    let seen = Arc::new(Seen::default());
    let ra = Arc::new(unshared(&server, &clock).with_observer(seen.clone()));
    ra.provider(ROLE).credentials().await.unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![
            (AwsApi::CreateSession, AwsCallOutcome::Throttled),
            (AwsApi::CreateSession, AwsCallOutcome::ServerError),
            (AwsApi::CreateSession, AwsCallOutcome::Success),
        ]
    );
}

#[tokio::test]
async fn credentials_fail_readiness_only_once_expired_after_a_failed_refresh() {
    let server = FakeRolesAnywhere::start(|n| if n == 0 { hourly(0) } else { denied() }).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    assert_eq!(provider.state(), CredentialState::Unknown);
    provider.credentials().await.unwrap();
    assert_eq!(
        provider.state(),
        CredentialState::Usable {
            expiration: Some(t0() + HOUR)
        }
    );
    // The background refresh is refused, but the session it would replace still works.
    clock.set(t0() + HOUR - Duration::from_secs(240));
    wait_for_calls(&server, 2).await;
    assert!(matches!(provider.state(), CredentialState::Usable { .. }));
    // Expired and not refreshed: failing, with AWS's reason (once the refused answer,
    // which the server has sent, has been recorded).
    clock.set(t0() + HOUR + Duration::from_secs(1));
    for _ in 0..300 {
        if matches!(provider.state(), CredentialState::Failing { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match provider.state() {
        CredentialState::Failing { reason } => {
            assert!(
                reason.contains("AccessDeniedException") && reason.contains(ROLE),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_failed_first_session_is_retried_in_the_background_until_it_works() {
    let server = FakeRolesAnywhere::start(|n| if n == 0 { denied() } else { hourly(0) }).await;
    let clock = ManualClock::new(t0());
    let provider = roles_anywhere(&server, &clock).provider(ROLE);
    provider.credentials().await.unwrap_err();
    assert!(matches!(provider.state(), CredentialState::Failing { .. }));
    // Nobody asks again (an unready proxy gets no logins), yet the role recovers once the
    // failure's backoff (judged on the wall clock) has passed.
    clock.advance(crate::refresh::INITIAL_BACKOFF);
    wait_for_calls(&server, 2).await;
    for _ in 0..300 {
        if matches!(provider.state(), CredentialState::Usable { .. }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("still {:?}", provider.state());
}

#[tokio::test]
async fn named_sessions_are_one_per_name_and_bounded_least_recently_used_first() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let ra = Arc::new(unshared(&server, &clock).with_max_sessions(2));
    let get = |name: &str| {
        let provider = ra.session_provider(ROLE, name);
        async move {
            provider
                .credentials()
                .await
                .unwrap()
                .access_key_id()
                .to_owned()
        }
    };
    assert_eq!(get("alice").await, "AKID0");
    assert_eq!(get("bob").await, "AKID1");
    assert_eq!(get("alice").await, "AKID0", "cached per name");
    // A third name evicts the least recently used one (bob), whose next use fetches anew.
    assert_eq!(get("carol").await, "AKID2");
    assert_eq!(get("alice").await, "AKID0");
    assert_eq!(get("bob").await, "AKID3");
    let names: Vec<_> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body["roleSessionName"].clone())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol", "bob"]);
    let health = ra.health();
    assert_eq!(health.len(), 2, "{health:?}");
    assert!(
        health[0].0.contains(ROLE) && health[0].0.contains("role session"),
        "{health:?}"
    );
}

#[tokio::test]
async fn named_sessions_refresh_when_used_and_lapse_when_not() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let clock = ManualClock::new(t0());
    let ra = roles_anywhere(&server, &clock);
    let alice = ra.session_provider(ROLE, "alice");
    alice.credentials().await.unwrap();
    // In the refresh window nobody uses it: no background refresh, unlike a role session.
    clock.set(t0() + HOUR - Duration::from_secs(240));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.calls(), 1);
    // Its next use still gets the valid session and starts the refresh behind it.
    assert_eq!(alice.credentials().await.unwrap().access_key_id(), "AKID0");
    wait_for_calls(&server, 2).await;
}
