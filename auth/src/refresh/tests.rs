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
