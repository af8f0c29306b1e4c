//! Database credentials that expire, or whose expiry the proxy's clock misjudges, while
//! clients keep logging in. The in-process proxy runs the production credential path (the
//! Redshift credential cache over the AWS SDK fetcher, with the proxy's AWS credentials from
//! a Roles Anywhere session) against the AWS emulator, whose passwords its Redshift stand-in
//! refuses once they have expired ("IAM Authentication token has expired"). Only the cache's
//! clock may be the test's.

use proxy_auth::aws::{Clock, ManualClock};
use proxy_testkit::emulator::Api;
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{sqlstate, TestProxy, World};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Barrier;

/// Longer than any login may take, even on a busy machine: reaching it means a hang.
const LOGIN_LIMIT: Duration = Duration::from_secs(30);

struct Fixture {
    world: World,
    proxy: TestProxy,
    alice: ClientCert,
}

/// How one login through the proxy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Logged in and `current_user` was the issued user.
    Ok,
    /// Refused or failed with this SQLSTATE.
    Error(String),
    /// Failed without an ErrorResponse (a dropped connection).
    Unclean(String),
    Hung,
}

impl Fixture {
    /// The world's proxy; its credential cache reads `clock` when given, the system's
    /// otherwise.
    async fn start(clock: Option<Arc<dyn Clock>>) -> Fixture {
        let world = World::start().await;
        // Logins queue for CPU during a storm; the proxy must not give up on them. Database
        // credentials are asked for 15 minutes (refreshed from 10 on: `refresh_before` is
        // 5 minutes by default).
        let config = world
            .config()
            .edit_listener("main", |l| l.set("login_timeout", "20s"))
            .edit_target("cluster", |t| t.set("credential_duration", "15m"));
        let proxy = match clock {
            Some(clock) => world.proxy_with_clock(config, clock).await,
            None => world.proxy(config).await,
        };
        let alice = world.client("alice");
        Fixture {
            world,
            proxy,
            alice,
        }
    }

    fn credential_calls(&self) -> u64 {
        self.world.emulator.calls(Api::GetClusterCredentials)
    }

    /// Logs in as alice and checks who PostgreSQL says she is.
    async fn login(&self) -> Outcome {
        let attempt = async {
            let client = self.proxy.login(&self.alice).await?;
            let user: String = client.query_one("select current_user", &[]).await?.get(0);
            Ok::<_, tokio_postgres::Error>(user)
        };
        match tokio::time::timeout(LOGIN_LIMIT, attempt).await {
            Err(_) => Outcome::Hung,
            Ok(Ok(user)) => {
                assert_eq!(user, self.world.iam_user(&self.alice));
                Outcome::Ok
            }
            Ok(Err(e)) => match sqlstate(&e) {
                Some(code) => Outcome::Error(code),
                None => Outcome::Unclean(e.to_string()),
            },
        }
    }

    /// `clients` logins started at the same moment.
    async fn logins_at_once(self: &Arc<Self>, clients: usize) -> Vec<Outcome> {
        let barrier = Arc::new(Barrier::new(clients));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (fx, barrier) = (Arc::clone(self), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    fx.login().await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    }
}

fn assert_all_ok(what: &str, outcomes: &[Outcome]) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| **o != Outcome::Ok).collect();
    assert!(failed.is_empty(), "{what}: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_expiring_during_a_login_storm_are_refreshed_without_a_herd() {
    let _heavy = proxy_testkit::world::heavy().await;
    const CLIENTS: usize = 64;
    const LIFETIME: Duration = Duration::from_secs(4);
    const STORM: Duration = Duration::from_secs(8);

    let fx = Arc::new(Fixture::start(None).await);
    fx.world.emulator.set_db_credential_lifetime(Some(LIFETIME));
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(fx.credential_calls(), 1);

    // 64 clients log in again and again for two credential lifetimes. Halfway, every
    // issued password expires at the stand-in ahead of its announced expiration, as after a
    // clock step on the proxy's host: the sessions holding it are refused and retry.
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (fx, barrier) = (Arc::clone(&fx), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut outcomes = Vec::new();
                while started.elapsed() < STORM {
                    outcomes.push(fx.login().await);
                }
                outcomes
            })
        })
        .collect();
    barrier.wait().await;
    tokio::time::sleep(STORM / 2).await;
    let calls_before_expiry = fx.credential_calls();
    fx.world.emulator.expire_db_credentials().await.unwrap();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    let calls = fx.credential_calls();

    // Every login ended, and nearly all worked: one refused with the expired password
    // retries once with a fresh one. A login slowed down past its credential's real expiry
    // twice in a row (a busy machine) may fail, but with an ErrorResponse.
    let ok = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| **o != Outcome::Ok).collect();
    eprintln!(
        "{ok} logins in {elapsed:?}, {} failed, {calls} GetClusterCredentials calls \
         ({calls_before_expiry} before the early expiry)",
        failed.len()
    );
    assert!(
        failed.iter().all(|o| matches!(o, Outcome::Error(_))),
        "{failed:?}"
    );
    assert!(failed.len() * 100 <= outcomes.len(), "{failed:?}");

    // The cache refreshes a credential once a quarter of its lifetime has passed (whole
    // seconds: at least LIFETIME - 1s), so AWS sees a few calls per lifetime, plus the
    // warm-up and one for the early expiry, not one per login or per refused session.
    let min_lifetime = LIFETIME - Duration::from_secs(1);
    let bound = 2 + (elapsed.as_secs_f64() / (min_lifetime.as_secs_f64() / 4.0)).ceil() as u64;
    assert!(
        calls <= bound,
        "{calls} credential calls for {ok} logins in {elapsed:?} (at most {bound})"
    );
    assert_eq!(fx.world.emulator.calls(Api::CreateSession), 1);

    // Later logins work, from a fresh credential.
    tokio::time::sleep(LIFETIME).await;
    assert_eq!(fx.login().await, Outcome::Ok);
    assert!(fx.credential_calls() > calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_jumps_forward_and_backward_keep_logins_working() {
    let _heavy = proxy_testkit::world::heavy().await;
    const CLIENTS: usize = 32;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let fx = Arc::new(Fixture::start(Some(clock.clone())).await);
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(
        fx.credential_calls(),
        1,
        "the second login is served from cache"
    );

    // Forward past the refresh margin of the 15-minute credential (suspend and resume, an
    // NTP step): it is no longer served; the logins share one fetch.
    clock.advance(Duration::from_secs(700));
    assert_all_ok("after a forward jump", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 2);

    // Backward by two hours: the cached credential looks young and is still served...
    clock.set(clock.now() - Duration::from_secs(2 * 3600));
    assert_all_ok("after a backward jump", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 2);

    // ...also once it has really expired: the stand-in refuses it, every login in flight
    // retries once with a fresh credential, and those share one fetch.
    fx.world.emulator.expire_db_credentials().await.unwrap();
    assert_all_ok("after the real expiry", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 3);
    assert_all_ok("afterwards", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 3);
}
