use super::*;
use crate::aws::clock::ManualClock;
use crate::refresh::{Deadlines, INITIAL_BACKOFF, MIN_SWEEP_THRESHOLD};
use secrecy::SecretString;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

type FetchResult = Result<DbCredential, CredentialError>;

/// The identity every test asks as, unless it is about identities.
const ALICE_CERT: &str = "cert\nCN=CA\nCN=alice";

const HOUR: Duration = Duration::from_secs(3600);
const FIVE_MIN: Duration = Duration::from_secs(300);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

/// Issues `pw-<n>` for the n-th call, valid for `lifetime` from the fake clock's now.
/// Calls for `gated_user` wait for a permit on `gate`; queued errors are returned first.
struct FakeFetcher {
    clock: Arc<ManualClock>,
    lifetime: Duration,
    calls: AtomicUsize,
    /// Calls that have returned their result.
    answered: AtomicUsize,
    gated_user: Mutex<Option<String>>,
    gate: Semaphore,
    errors: Mutex<VecDeque<CredentialError>>,
}

impl FakeFetcher {
    fn new(clock: &Arc<ManualClock>, lifetime: Duration) -> Arc<Self> {
        Arc::new(FakeFetcher {
            clock: Arc::clone(clock),
            lifetime,
            calls: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            gated_user: Mutex::new(None),
            gate: Semaphore::new(0),
            errors: Mutex::new(VecDeque::new()),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
    fn hold(&self, user: &str) {
        *self.gated_user.lock().unwrap() = Some(user.to_owned());
    }
    /// Later calls pass the gate; calls already waiting stay until [`Self::release`].
    fn stop_holding(&self) {
        *self.gated_user.lock().unwrap() = None;
    }
    fn release(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
    fn fail_next(&self, error: CredentialError) {
        self.errors.lock().unwrap().push_back(error);
    }
}

#[async_trait]
impl FetchDbCredential for FakeFetcher {
    async fn fetch(&self, request: &DbCredentialRequest) -> FetchResult {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let gated = self.gated_user.lock().unwrap().as_deref() == Some(&request.db_user);
        if gated {
            self.gate.acquire().await.expect("gate open").forget();
        }
        // The cache handles the result before its task next yields, so a test that
        // sees the call answered sees the cache updated.
        self.answered.fetch_add(1, Ordering::SeqCst);
        if let Some(error) = self.errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        Ok(DbCredential {
            user: format!("IAM:{}", request.db_user),
            password: SecretString::from(format!("pw-{n}")),
            expiration: self.clock.now() + self.lifetime,
            aws_request_ids: vec![format!("req-{n}")],
        })
    }
}

fn request(user: &str) -> DbCredentialRequest {
    DbCredentialRequest {
        target: "t1".into(),
        role_arn: None,
        db_user: user.into(),
        db_name: "dev".into(),
        db_groups: vec![],
        role_session_name: None,
    }
}

fn policy(refresh_before: Duration) -> RefreshPolicy {
    RefreshPolicy {
        refresh_before,
        backoff_max: Duration::from_secs(60),
    }
}

fn cache(fetcher: &Arc<FakeFetcher>, clock: &Arc<ManualClock>) -> RedshiftCredentials {
    cache_with(fetcher, clock, IdentityBudget::default())
}

fn cache_with(
    fetcher: &Arc<FakeFetcher>,
    clock: &Arc<ManualClock>,
    budget: IdentityBudget,
) -> RedshiftCredentials {
    RedshiftCredentials::with_fetcher(fetcher.clone(), clock.clone(), policy(FIVE_MIN), budget)
}

impl RedshiftCredentials {
    async fn settle(&self, request: &DbCredentialRequest) {
        self.engine.settle(&self.fetcher.cache_key(request)).await;
    }
}

/// A cache on a fake clock whose fetcher issues credentials valid for an hour.
fn hour_cache() -> (Arc<ManualClock>, Arc<FakeFetcher>, RedshiftCredentials) {
    let clock = clock();
    let fetcher = FakeFetcher::new(&clock, HOUR);
    let source = cache(&fetcher, &clock);
    (clock, fetcher, source)
}

/// Alice's credential, as a session asks for it.
async fn alice(source: &RedshiftCredentials) -> FetchResult {
    source.credential(&request("alice"), ALICE_CERT).await
}

async fn password(source: &RedshiftCredentials, user: &str) -> String {
    let credential = source
        .credential(&request(user), ALICE_CERT)
        .await
        .expect("credential");
    credential.password.expose_secret().to_owned()
}

/// Waits (bounded) until `cond` holds; background tasks need a few scheduler turns.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn deadlines_for_a_one_hour_credential() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let d = Deadlines::new(t0, t0 + HOUR, FIVE_MIN);
    assert_eq!(d.hard, t0 + Duration::from_secs(3300));
    assert_eq!(d.soft, t0 + Duration::from_secs(3000));
}

#[test]
fn deadlines_keep_short_credentials_useful_for_half_their_life() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    // refresh_before larger than the whole lifetime
    let d = Deadlines::new(t0, t0 + Duration::from_secs(900), Duration::from_secs(1200));
    assert_eq!(d.hard, t0 + Duration::from_secs(450));
    assert_eq!(d.soft, t0 + Duration::from_secs(225));
}

#[test]
fn deadlines_of_an_already_expired_credential_are_past() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let d = Deadlines::new(t0, t0 - Duration::from_secs(10), FIVE_MIN);
    assert!(d.hard <= t0 && d.soft <= t0);
}

#[tokio::test]
async fn second_request_is_served_from_cache() {
    let (clock, fetcher, source) = hour_cache();
    let first = alice(&source).await.expect("credential");
    assert_eq!(first.user, "IAM:alice");
    assert_eq!(first.aws_request_ids, vec!["req-1".to_owned()]);
    clock.advance(Duration::from_secs(60));
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(fetcher.calls(), 1);
    let stats = source.stats();
    assert_eq!((stats.hits, stats.misses, stats.fetches), (1, 1, 1));
    assert_eq!(stats.entries, 1);
}

#[tokio::test]
async fn different_keys_are_cached_separately() {
    let (_, fetcher, source) = hour_cache();
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(password(&source, "bob").await, "pw-2");
    let mut other_db = request("alice");
    other_db.db_name = "prod".into();
    let c = source
        .credential(&other_db, ALICE_CERT)
        .await
        .expect("credential");
    assert_eq!(c.password.expose_secret(), "pw-3");
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(fetcher.calls(), 3);
}

#[tokio::test]
async fn group_order_and_duplicates_do_not_split_the_cache() {
    let (_, fetcher, source) = hour_cache();
    let mut a = request("alice");
    a.db_groups = vec!["b".into(), "a".into(), "b".into()];
    let mut b = request("alice");
    b.db_groups = vec!["a".into(), "b".into()];
    source.credential(&a, ALICE_CERT).await.expect("credential");
    source.credential(&b, ALICE_CERT).await.expect("credential");
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test]
async fn soft_window_serves_current_and_refreshes_in_background() {
    let (clock, fetcher, source) = hour_cache();
    assert_eq!(password(&source, "alice").await, "pw-1");

    fetcher.hold("alice");
    clock.advance(Duration::from_secs(3000)); // soft deadline of a 1 h credential
    let served = tokio::time::timeout(Duration::from_secs(2), password(&source, "alice"))
        .await
        .expect("served without waiting for AWS");
    assert_eq!(served, "pw-1");
    eventually("background fetch to start", || fetcher.calls() == 2).await;
    // Further uses while the refresh is in flight neither wait nor start another one.
    for _ in 0..10 {
        assert_eq!(password(&source, "alice").await, "pw-1");
    }
    assert_eq!(fetcher.calls(), 2);

    fetcher.release();
    source.settle(&request("alice")).await;
    assert_eq!(password(&source, "alice").await, "pw-2");
    let stats = source.stats();
    assert_eq!((stats.refreshes, stats.fetches, stats.misses), (1, 2, 1));
}

#[tokio::test]
async fn before_the_soft_window_nothing_is_refreshed() {
    let (clock, fetcher, source) = hour_cache();
    password(&source, "alice").await;
    clock.advance(Duration::from_secs(2999));
    assert_eq!(password(&source, "alice").await, "pw-1");
    tokio::task::yield_now().await;
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(source.stats().refreshes, 0);
}

#[tokio::test]
async fn credential_past_the_hard_deadline_is_never_served() {
    let (clock, fetcher, source) = hour_cache();
    password(&source, "alice").await;
    clock.advance(Duration::from_secs(3300)); // expiration - refresh_before
    fetcher.hold("alice");
    let waiting = tokio::time::timeout(Duration::from_millis(50), password(&source, "alice"));
    assert!(waiting.await.is_err(), "must wait for a fresh credential");
    fetcher.release();
    assert_eq!(password(&source, "alice").await, "pw-2");
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn short_lived_credentials_are_replaced_at_half_life() {
    let clock = clock();
    let fetcher = FakeFetcher::new(&clock, Duration::from_secs(900));
    let source = RedshiftCredentials::with_fetcher(
        fetcher.clone(),
        clock.clone(),
        policy(Duration::from_secs(1200)),
        IdentityBudget::default(),
    );
    assert_eq!(password(&source, "alice").await, "pw-1");
    fetcher.hold("alice"); // keep the background refresh from landing
    clock.advance(Duration::from_secs(449));
    assert_eq!(password(&source, "alice").await, "pw-1");
    clock.advance(Duration::from_secs(1));
    fetcher.release();
    // The background refresh started at 449 s is joined, not duplicated.
    assert_eq!(password(&source, "alice").await, "pw-2");
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_misses_make_one_fetch() {
    let (_, fetcher, source) = hour_cache();
    fetcher.hold("alice");
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { password(&source, "alice").await })
        })
        .collect();
    eventually("the fetch to start", || fetcher.calls() == 1).await;
    fetcher.release();
    for caller in callers {
        assert_eq!(caller.await.expect("caller"), "pw-1");
    }
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(source.stats().hits + source.stats().misses, 100);
}

#[tokio::test]
async fn a_slow_key_does_not_block_other_keys() {
    let (_, fetcher, source) = hour_cache();
    fetcher.hold("slow");
    let slow = {
        let source = source.clone();
        tokio::spawn(async move { password(&source, "slow").await })
    };
    eventually("the slow fetch to start", || fetcher.calls() == 1).await;
    let fast = tokio::time::timeout(Duration::from_secs(2), password(&source, "fast"))
        .await
        .expect("other key not blocked");
    assert_eq!(fast, "pw-2");
    fetcher.release();
    assert_eq!(slow.await.expect("slow caller"), "pw-1");
}

#[tokio::test]
async fn invalidate_forces_a_fresh_credential() {
    let (_, fetcher, source) = hour_cache();
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(password(&source, "bob").await, "pw-2");
    let refused = alice(&source).await.unwrap();
    source.invalidate(&request("alice"), &refused);
    assert_eq!(password(&source, "alice").await, "pw-3");
    // Other keys are untouched.
    assert_eq!(password(&source, "bob").await, "pw-2");
    assert_eq!(fetcher.calls(), 3);
}

#[tokio::test]
async fn sessions_refused_with_one_credential_share_one_fetch() {
    let (_, fetcher, source) = hour_cache();
    let refused = alice(&source).await.unwrap();
    // Ten sessions got pw-1 and are refused together; each reports it, then retries.
    let retries: Vec<_> = (0..10)
        .map(|_| {
            let (source, refused) = (source.clone(), refused.clone());
            tokio::spawn(async move {
                source.invalidate(&request("alice"), &refused);
                password(&source, "alice").await
            })
        })
        .collect();
    for retry in retries {
        assert_eq!(retry.await.unwrap(), "pw-2");
    }
    assert_eq!(fetcher.calls(), 2);
    // A late report of pw-1 leaves its replacement alone.
    source.invalidate(&request("alice"), &refused);
    assert_eq!(password(&source, "alice").await, "pw-2");
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test]
async fn a_refresh_started_before_a_refusal_is_not_cached() {
    let (clock, fetcher, source) = hour_cache();
    let refused = alice(&source).await.unwrap();
    // Past the soft deadline: this use starts a background refresh, held at AWS.
    clock.advance(HOUR - 2 * FIVE_MIN + Duration::from_secs(1));
    fetcher.hold("alice");
    assert_eq!(password(&source, "alice").await, "pw-1");
    eventually("the refresh to start", || fetcher.calls() == 2).await;
    fetcher.stop_holding();
    // The upstream refuses pw-1: the retry does not wait for the refresh...
    source.invalidate(&request("alice"), &refused);
    assert_eq!(password(&source, "alice").await, "pw-3");
    // ...and the refresh's late answer does not replace what the retry fetched.
    fetcher.release();
    eventually("the refresh to answer", || fetcher.answered() == 3).await;
    assert_eq!(password(&source, "alice").await, "pw-3");
    assert_eq!(fetcher.calls(), 3);
}

#[tokio::test]
async fn a_failure_stands_in_for_new_calls_until_the_backoff_passes() {
    let (clock, fetcher, source) = hour_cache();
    fetcher.fail_next(CredentialError::Denied("not allowed".into()));
    fetcher.fail_next(CredentialError::Denied("still not allowed".into()));
    let err = alice(&source).await.expect_err("denied");
    assert!(matches!(err, CredentialError::Denied(_)));
    // Within the backoff: the same failure, and AWS is not asked again.
    let again = alice(&source).await.expect_err("backed off");
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(fetcher.calls(), 1);
    assert_eq!(source.stats().backed_off, 1);
    // After it, one new call; a second failure doubles the wait.
    clock.advance(INITIAL_BACKOFF);
    alice(&source).await.expect_err("denied again");
    clock.advance(INITIAL_BACKOFF);
    alice(&source).await.expect_err("still backing off");
    assert_eq!(fetcher.calls(), 2);
    clock.advance(INITIAL_BACKOFF);
    assert_eq!(password(&source, "alice").await, "pw-3");
    // Other keys were never affected.
    assert_eq!(password(&source, "bob").await, "pw-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_waiters_share_one_failure() {
    let (_, fetcher, source) = hour_cache();
    fetcher.hold("alice");
    fetcher.fail_next(CredentialError::Unavailable("throttled".into()));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.credential(&request("alice"), ALICE_CERT).await })
        })
        .collect();
    eventually("all callers to join the flight", || {
        source.stats().misses == 10
    })
    .await;
    fetcher.release();
    for caller in callers {
        let err = caller.await.expect("caller").expect_err("shared failure");
        assert!(matches!(err, CredentialError::Unavailable(_)));
    }
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test]
async fn failed_background_refresh_keeps_serving_and_backs_off() {
    let (clock, fetcher, source) = hour_cache();
    password(&source, "alice").await;

    clock.advance(Duration::from_secs(3000));
    fetcher.fail_next(CredentialError::Unavailable("throttled".into()));
    assert_eq!(password(&source, "alice").await, "pw-1");
    source.settle(&request("alice")).await;
    assert_eq!(fetcher.calls(), 2);

    // Within the backoff the cached credential is served without another attempt.
    clock.advance(INITIAL_BACKOFF - Duration::from_millis(500));
    assert_eq!(password(&source, "alice").await, "pw-1");
    tokio::task::yield_now().await;
    assert_eq!(fetcher.calls(), 2);

    clock.advance(Duration::from_millis(500));
    assert_eq!(password(&source, "alice").await, "pw-1");
    source.settle(&request("alice")).await;
    assert_eq!(password(&source, "alice").await, "pw-3");
}

#[tokio::test]
async fn clock_jumping_forward_past_expiry_fetches_again() {
    let (clock, _, source) = hour_cache();
    password(&source, "alice").await;
    clock.advance(2 * HOUR);
    assert_eq!(password(&source, "alice").await, "pw-2");
    assert_eq!(source.stats().misses, 2);
}

#[tokio::test]
async fn clock_jumping_backward_keeps_serving_the_cached_credential() {
    let (clock, fetcher, source) = hour_cache();
    password(&source, "alice").await;
    clock.set(clock.now() - 2 * HOUR);
    assert_eq!(password(&source, "alice").await, "pw-1");
    tokio::task::yield_now().await;
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test]
async fn a_fetch_completes_for_the_cache_even_if_its_caller_gives_up() {
    let (_, fetcher, source) = hour_cache();
    fetcher.hold("alice");
    let gave_up = tokio::time::timeout(Duration::from_millis(20), password(&source, "alice")).await;
    assert!(gave_up.is_err());
    fetcher.release();
    source.settle(&request("alice")).await;
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test]
async fn a_credential_issued_already_expired_goes_to_its_waiters_only() {
    let clock = clock();
    // Issued expiring at once by the local clock, as when it runs ahead of AWS's.
    let fetcher = FakeFetcher::new(&clock, Duration::ZERO);
    let source = cache(&fetcher, &clock);
    assert_eq!(password(&source, "alice").await, "pw-1");
    assert_eq!(password(&source, "alice").await, "pw-2");
}

#[tokio::test]
async fn stats_report_the_earliest_expiry() {
    let (clock, _, source) = hour_cache();
    assert_eq!(source.stats().earliest_expiry, None);
    let first = alice(&source).await.expect("credential");
    clock.advance(Duration::from_secs(60));
    password(&source, "bob").await;
    assert_eq!(source.stats().earliest_expiry, Some(first.expiration));
}

#[tokio::test]
async fn expired_entries_are_swept_as_the_cache_grows() {
    let clock = clock();
    let fetcher = FakeFetcher::new(&clock, HOUR);
    let unlimited = IdentityBudget {
        fetches_per_minute: 10_000,
        max_cached: 10_000,
    };
    let source = cache_with(&fetcher, &clock, unlimited);
    for i in 0..MIN_SWEEP_THRESHOLD {
        password(&source, &format!("user{i}")).await;
    }
    clock.advance(2 * HOUR);
    password(&source, "newcomer").await;
    assert_eq!(source.stats().entries, 1);
}

#[tokio::test]
async fn each_identity_has_a_budget_of_aws_calls() {
    let clock = clock();
    let fetcher = FakeFetcher::new(&clock, HOUR);
    let budget = IdentityBudget {
        fetches_per_minute: 3,
        max_cached: 100,
    };
    let source = cache_with(&fetcher, &clock, budget);
    let mallory = "cert\nCN=CA\nCN=mallory";
    for db in ["a", "b", "c"] {
        let mut req = request("mallory");
        req.db_name = db.into();
        source
            .credential(&req, mallory)
            .await
            .expect("within budget");
    }
    let mut fourth = request("mallory");
    fourth.db_name = "d".into();
    let err = source.credential(&fourth, mallory).await.unwrap_err();
    assert!(matches!(err, CredentialError::Throttled(_)), "{err}");
    assert_eq!(fetcher.calls(), 3);
    // Cached credentials cost nothing, and other identities have their own budget.
    let mut first = request("mallory");
    first.db_name = "a".into();
    source.credential(&first, mallory).await.expect("cached");
    assert_eq!(password(&source, "alice").await, "pw-4");
}

#[tokio::test]
async fn an_identity_holds_a_bounded_number_of_cached_credentials() {
    let clock = clock();
    let fetcher = FakeFetcher::new(&clock, HOUR);
    let budget = IdentityBudget {
        fetches_per_minute: 100,
        max_cached: 2,
    };
    let source = cache_with(&fetcher, &clock, budget);
    let req = |db: &str| {
        let mut r = request("alice");
        r.db_name = db.into();
        r
    };
    for db in ["a", "b", "c"] {
        source.credential(&req(db), ALICE_CERT).await.unwrap();
    }
    assert_eq!(
        source.stats().entries,
        2,
        "the least recently used one was evicted"
    );
    source.credential(&req("b"), ALICE_CERT).await.unwrap();
    source.credential(&req("c"), ALICE_CERT).await.unwrap();
    assert_eq!(fetcher.calls(), 3);
    source.credential(&req("a"), ALICE_CERT).await.unwrap();
    assert_eq!(fetcher.calls(), 4, "evicted, so fetched again");
}

#[tokio::test]
async fn a_fresh_credential_the_upstream_refuses_backs_off_further_calls() {
    let (_, fetcher, source) = hour_cache();
    let cached = source
        .credential(&request("ghost"), ALICE_CERT)
        .await
        .unwrap();
    source.invalidate(&request("ghost"), &cached);
    let fresh = source
        .credential(&request("ghost"), ALICE_CERT)
        .await
        .unwrap();
    assert_ne!(
        fresh.password.expose_secret(),
        cached.password.expose_secret()
    );
    source.refused_again(&request("ghost"), "password authentication failed");
    let err = source
        .credential(&request("ghost"), ALICE_CERT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("freshly issued"), "{err}");
    assert_eq!(fetcher.calls(), 2);
}
