//! The warm pool against fake upstreams that accept many connections: logins take ready
//! connections, the keeper refills and recycles, and dead connections are discarded while
//! the login still succeeds.

use super::tests::{accept_tls, auth, endpoint, password, pki_for, read_client, read_startup};
use super::tests::{ok_and_ready, request, Pki};
use super::*;
use crate::metrics::{UpstreamPoolMetrics, WarmCounters};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream as ServerTls;

/// Accepts connections forever; runs `script(n, tls)` on the n-th (from 0) after its TLS
/// handshake. Returns the port and the number of connections accepted so far.
async fn fake_servers<F, Fut>(pki: &Pki, script: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(usize, ServerTls<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let cfg = pki.server.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let n = count.fetch_add(1, Ordering::SeqCst);
            let (cfg, script) = (cfg.clone(), script.clone());
            tokio::spawn(async move {
                let tls = accept_tls(tcp, cfg).await;
                script(n, tls).await;
            });
        }
    });
    (port, accepted)
}

/// A cleartext login answered with success, then the session held open.
async fn serve_login(mut s: ServerTls<TcpStream>) {
    read_startup(&mut s).await;
    s.write_all(&auth(3, b"")).await.unwrap();
    read_client(&mut s).await;
    s.write_all(&ok_and_ready()).await.unwrap();
    hold(s).await;
}

async fn hold(s: ServerTls<TcpStream>) {
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(s);
}

fn pool(pki: &Pki, port: u16, size: usize, max_age: Duration) -> (WarmPool, WarmCounters) {
    let pool = WarmPool::new(Arc::new(endpoint(pki, port)), size, max_age);
    let counters = UpstreamPoolMetrics::default().warm("t");
    pool.start(counters.clone());
    (pool, counters)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_login_takes_a_ready_connection_and_the_keeper_refills() {
    let pki = pki_for(&["localhost"]);
    let (port, accepted) = fake_servers(&pki, |_, s| serve_login(s)).await;
    let (pool, counters) = pool(&pki, port, 2, Duration::from_secs(30));
    eventually("two ready", || pool.ready() == 2).await;
    let pw = password();
    let session = pool.connect_and_login(&request(&pw, &[])).await.unwrap();
    assert_eq!(session.origin, UpstreamOrigin::Warm);
    assert_eq!(session.connect_time, Duration::ZERO);
    assert_eq!((counters.hits(), counters.misses()), (1, 0));
    eventually("refilled", || pool.ready() == 2).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    pool.stop();
    assert_eq!(pool.ready(), 0);
    assert_eq!(counters.discards("stopped"), 2);
    // A stopped pool dials.
    let session = pool.connect_and_login(&request(&pw, &[])).await.unwrap();
    assert_eq!(session.origin, UpstreamOrigin::Dialled);
}

#[tokio::test]
async fn connections_are_recycled_at_their_maximum_age() {
    let pki = pki_for(&["localhost"]);
    let (port, accepted) = fake_servers(&pki, |_, s| hold(s)).await;
    let (pool, counters) = pool(&pki, port, 1, Duration::from_millis(300));
    eventually("recycled twice", || counters.discards("age") >= 2).await;
    assert!(accepted.load(Ordering::SeqCst) >= 3);
    eventually("one ready", || pool.ready() == 1).await;
}

/// The server closes the first connection before any login (as PostgreSQL does after
/// `authentication_timeout`): it is discarded at once, replaced, and logins still work.
#[tokio::test]
async fn a_connection_the_server_closed_is_discarded_and_replaced() {
    let pki = pki_for(&["localhost"]);
    let (port, accepted) = fake_servers(&pki, |n, mut s| async move {
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = s.shutdown().await;
            return;
        }
        serve_login(s).await;
    })
    .await;
    let (pool, counters) = pool(&pki, port, 1, Duration::from_secs(30));
    eventually("the closed one discarded", || {
        counters.discards("closed") == 1
    })
    .await;
    eventually("replaced", || pool.ready() == 1).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let pw = password();
    let session = pool.connect_and_login(&request(&pw, &[])).await.unwrap();
    assert_eq!(session.origin, UpstreamOrigin::Warm);
}

/// A connection that dies once the login is under way (here: closed at the StartupMessage)
/// is discarded and the login runs again on a dialled connection.
#[tokio::test]
async fn a_warm_connection_lost_at_login_is_discarded_and_the_login_dials() {
    let pki = pki_for(&["localhost"]);
    let (port, _) = fake_servers(&pki, |n, mut s| async move {
        if n == 0 {
            read_startup(&mut s).await;
            drop(s);
            return;
        }
        serve_login(s).await;
    })
    .await;
    let (pool, counters) = pool(&pki, port, 1, Duration::from_secs(30));
    eventually("one ready", || pool.ready() == 1).await;
    let pw = password();
    let session = pool.connect_and_login(&request(&pw, &[])).await.unwrap();
    assert_eq!(session.origin, UpstreamOrigin::Dialled);
    assert_eq!(counters.hits(), 1);
    assert_eq!(counters.discards("failed_login"), 1);
}

/// A refusal on a warm connection is the server's answer, not a lost connection: it is
/// returned as is, without a second attempt.
#[tokio::test]
async fn a_refused_login_on_a_warm_connection_is_not_retried() {
    let pki = pki_for(&["localhost"]);
    let (port, accepted) = fake_servers(&pki, |_, mut s| async move {
        read_startup(&mut s).await;
        let refusal = super::tests::error_response(&[
            (b'S', "FATAL"),
            (b'C', "28000"),
            (b'M', "password authentication failed"),
        ]);
        s.write_all(&refusal).await.unwrap();
        hold(s).await;
    })
    .await;
    let (pool, _) = pool(&pki, port, 1, Duration::from_secs(30));
    eventually("one ready", || pool.ready() == 1).await;
    let pw = password();
    let err = pool
        .connect_and_login(&request(&pw, &[]))
        .await
        .unwrap_err();
    assert!(err.is_auth_failure(), "{err}");
    // The one taken, and the keeper's replacement: no dial for a second attempt.
    eventually("replaced", || pool.ready() == 1).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pool_of_size_zero_never_dials_ahead() {
    let pki = pki_for(&["localhost"]);
    let (port, accepted) = fake_servers(&pki, |_, s| serve_login(s)).await;
    let (pool, counters) = pool(&pki, port, 0, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
    let pw = password();
    let session = pool.connect_and_login(&request(&pw, &[])).await.unwrap();
    assert_eq!(session.origin, UpstreamOrigin::Dialled);
    assert_eq!((counters.hits(), counters.misses()), (0, 0));
}
