//! The engine on its own, with a counting fetcher of plain values. The credential cache's
//! tests (`redshift/cache/tests.rs`) cover the same behaviours through its API.

use super::*;
use crate::aws::clock::ManualClock;
use std::sync::atomic::AtomicUsize;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    n: usize,
    expiration: SystemTime,
}

impl Expiring for Token {
    fn expiration(&self) -> SystemTime {
        self.expiration
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl From<FetchAborted> for Failed {
    fn from(e: FetchAborted) -> Self {
        Failed(e.to_string())
    }
}

struct Counter {
    clock: Arc<ManualClock>,
    calls: AtomicUsize,
    fail: Mutex<bool>,
}

#[async_trait]
impl Fetch<&'static str, Token, Failed> for Counter {
    async fn fetch(&self, _key: &&'static str) -> Result<Token, Failed> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if *self.fail.lock().unwrap() {
            return Err(Failed(format!("call {n} failed")));
        }
        Ok(Token {
            n,
            expiration: self.clock.now() + Duration::from_secs(3600),
        })
    }
}

fn engine() -> (
    RefreshAhead<&'static str, Token, Failed>,
    Arc<Counter>,
    Arc<ManualClock>,
) {
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let counter = Arc::new(Counter {
        clock: clock.clone(),
        calls: AtomicUsize::new(0),
        fail: Mutex::new(false),
    });
    let policy = RefreshPolicy {
        refresh_before: Duration::from_secs(300),
        backoff_max: Duration::from_secs(8),
    };
    (
        RefreshAhead::new(counter.clone(), clock.clone(), policy),
        counter,
        clock,
    )
}

#[tokio::test]
async fn serves_from_cache_then_refreshes_in_the_soft_window() {
    let (engine, counter, clock) = engine();
    assert_eq!(engine.get(&"k").await.unwrap().n, 1);
    clock.advance(Duration::from_secs(2999));
    assert_eq!(engine.get(&"k").await.unwrap().n, 1);
    clock.advance(Duration::from_secs(1));
    // Still the cached value, while a refresh runs behind it.
    assert_eq!(engine.get(&"k").await.unwrap().n, 1);
    engine.settle(&"k").await;
    assert_eq!(engine.get(&"k").await.unwrap().n, 2);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
    assert_eq!(engine.peek(&"k").map(|t| t.n), Some(2));
}

#[tokio::test]
async fn backoff_doubles_per_failure_up_to_its_maximum_and_resets_on_success() {
    let (engine, counter, clock) = engine();
    *counter.fail.lock().unwrap() = true;
    let calls = || counter.calls.load(Ordering::SeqCst);
    let mut waits = Vec::new();
    for _ in 0..6 {
        engine.get(&"k").await.unwrap_err();
        let before = calls();
        let mut waited = Duration::ZERO;
        // Step in whole seconds until the next call is made.
        while calls() == before {
            clock.advance(Duration::from_secs(1));
            waited += Duration::from_secs(1);
            let _ = engine.get(&"k").await;
        }
        waits.push(waited.as_secs());
    }
    assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    *counter.fail.lock().unwrap() = false;
    clock.advance(Duration::from_secs(8));
    assert!(engine.get(&"k").await.is_ok());
    *counter.fail.lock().unwrap() = true;
    engine.fail(&"k", Failed("refused by its user".into()));
    assert_eq!(
        engine.get(&"k").await.unwrap_err(),
        Failed("refused by its user".into())
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        engine.get(&"k").await.is_err(),
        "one second after a first failure"
    );
}

#[tokio::test]
async fn a_clock_set_back_does_not_extend_a_backoff() {
    let (engine, counter, clock) = engine();
    *counter.fail.lock().unwrap() = true;
    engine.get(&"k").await.unwrap_err();
    clock.set(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    engine.get(&"k").await.unwrap_err();
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
}

/// An engine over `counter` with `options`, fetching per key.
fn engine_with(
    options: EngineOptions<&'static str>,
) -> (
    RefreshAhead<&'static str, Token, Failed>,
    Arc<Counter>,
    Arc<ManualClock>,
) {
    let (_, counter, clock) = engine();
    let policy = RefreshPolicy {
        refresh_before: Duration::from_secs(300),
        backoff_max: Duration::from_secs(8),
    };
    let engine = RefreshAhead::with_options(counter.clone(), clock.clone(), policy, options);
    (engine, counter, clock)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_background_keeps_warm_keys_fresh_and_retries_their_failures() {
    let (engine, counter, clock) = engine_with(EngineOptions {
        background: Some(Background::new(Duration::from_millis(10), |k: &&str| {
            k.starts_with("warm")
        })),
        ..EngineOptions::default()
    });
    let calls = || counter.calls.load(Ordering::SeqCst);
    engine.get(&"warm").await.unwrap();
    engine.get(&"cold").await.unwrap();
    assert_eq!(calls(), 2);
    // Past the soft deadline, nobody asking: only the warm key is refreshed.
    clock.advance(Duration::from_secs(3000));
    wait_for("a background refresh", || calls() == 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls(), 3);
    assert_eq!(engine.stats().refreshes, 1);
    wait_for("the refreshed value", || {
        engine.peek(&"warm").is_some_and(|t| t.n == 3)
    })
    .await;

    // A failed first fetch of a warm key is retried once its backoff passes.
    *counter.fail.lock().unwrap() = true;
    engine.get(&"warm-2").await.unwrap_err();
    let failed = calls();
    *counter.fail.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls(), failed, "still backing off");
    clock.advance(INITIAL_BACKOFF);
    wait_for("the retry", || engine.peek(&"warm-2").is_some()).await;
    assert_eq!(calls(), failed + 1);
}

#[tokio::test]
async fn dropping_the_engine_stops_its_background() {
    let (engine, counter, clock) = engine_with(EngineOptions {
        background: Some(Background::new(Duration::from_millis(10), |_: &&str| true)),
        ..EngineOptions::default()
    });
    engine.get(&"k").await.unwrap();
    drop(engine);
    clock.advance(Duration::from_secs(3300));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(counter.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn beyond_its_capacity_the_least_recently_used_key_gives_way() {
    let (engine, counter, _clock) = engine_with(EngineOptions {
        capacity: Some(2),
        ..EngineOptions::default()
    });
    engine.get(&"a").await.unwrap();
    engine.get(&"b").await.unwrap();
    engine.get(&"a").await.unwrap();
    engine.get(&"c").await.unwrap();
    assert_eq!(engine.stats().evicted, 1);
    assert!(engine.peek(&"b").is_none(), "b was used longest ago");
    assert!(engine.peek(&"a").is_some() && engine.peek(&"c").is_some());
    assert_eq!(engine.stats().entries, 2);
    assert_eq!(counter.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn margins_place_the_deadlines_and_standing_reports_without_fetching() {
    let (engine, counter, clock) = engine_with(EngineOptions {
        margins: Some(Margins {
            hard: Duration::from_secs(60),
            soft: Duration::from_secs(300),
            jitter: Duration::ZERO,
        }),
        ..EngineOptions::default()
    });
    engine.get(&"k").await.unwrap();
    // Past the default hard deadline (e - 300 s), before this one (e - 60 s).
    clock.advance(Duration::from_secs(3600 - 120));
    assert_eq!(engine.get(&"k").await.unwrap().n, 1);
    engine.settle(&"k").await;
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2);
    // A failure keeps the held value in the standing until a success replaces it.
    *counter.fail.lock().unwrap() = true;
    clock.advance(Duration::from_secs(3600));
    engine.get(&"k").await.unwrap_err();
    let standing = engine.standing(&"k").unwrap();
    assert_eq!(standing.value.map(|t| t.n), Some(2));
    assert_eq!(standing.failure, Some(Failed("call 3 failed".into())));
    assert!(engine.standing(&"other").is_none());
    assert_eq!(engine.standings().len(), 1);
}

#[tokio::test]
async fn fetch_now_ignores_the_cache_and_the_backoff() {
    let (engine, counter, _clock) = engine();
    engine.get(&"k").await.unwrap();
    assert_eq!(engine.fetch_now(&"k").await.unwrap().n, 2);
    *counter.fail.lock().unwrap() = true;
    engine.fetch_now(&"k").await.unwrap_err();
    *counter.fail.lock().unwrap() = false;
    assert_eq!(engine.fetch_now(&"k").await.unwrap().n, 4);
}
