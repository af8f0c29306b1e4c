//! Faults and load, bounded for CI: many concurrent sessions moving data both ways with
//! every byte verified, sessions churning alongside, no leaked sockets or tasks; an upstream
//! restart mid-session; a client vanishing mid-query. Through the real chain: one identity's
//! credential from the AWS emulator, sessions at the Redshift stand-in.

use futures::{SinkExt, StreamExt};
use proxy_testkit::adversary::{message, raw_login};
use proxy_testkit::observe::{open_sockets_on, wait_for_backends, wait_for_query};
use proxy_testkit::pg::{PgOptions, PgServer};
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{sqlstate, TestProxy, World, WorldOptions};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Concurrent COPY sessions (the test kit's PostgreSQL allows 300 connections; the stand-in
/// holds one per session).
const SESSIONS: usize = 200;
/// Bytes each session sends with COPY IN and receives back with COPY OUT.
const BYTES_PER_DIRECTION: usize = 256 * 1024;
/// Sessions opening and closing in a loop while the load runs.
const CHURNERS: usize = 4;

/// Tasks of this test's runtime (each test has its own: the proxy, the emulator and the
/// stand-in of this test run on it, nothing of the other tests).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Deterministic COPY text for session `n`: lines of printable bytes, different per session
/// so a cross-wired relay would show up as a checksum mismatch.
fn payload(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(BYTES_PER_DIRECTION);
    let mut line = 0usize;
    while out.len() < BYTES_PER_DIRECTION {
        let text = format!("s{n:03}-l{line:06}-");
        out.extend_from_slice(text.as_bytes());
        // Fill with a session- and line-dependent run of printable ASCII (no tab,
        // backslash or newline, which COPY text format would transform).
        for i in 0..(100 - text.len()) {
            let c = b' ' + ((n * 7 + line * 13 + i) % 94) as u8;
            out.push(if c == b'\\' { b'/' } else { c });
        }
        out.push(b'\n');
        line += 1;
    }
    out.truncate(BYTES_PER_DIRECTION - BYTES_PER_DIRECTION % 101);
    out
}

/// Logins in flight at once. TLS handshakes cost CPU on both sides; 200 logins at the same
/// instant on 2 cores would test the machine, not the proxy.
const CONCURRENT_LOGINS: usize = 16;

/// One session: log in (at most [`CONCURRENT_LOGINS`] at a time), wait until every session
/// is open, then COPY IN the payload, COPY OUT it back and compare. Returns bytes verified.
async fn copy_round_trip(
    h: &TestProxy,
    alice: &ClientCert,
    n: usize,
    logins: &tokio::sync::Semaphore,
    all_open: &tokio::sync::Barrier,
) -> usize {
    let client = {
        let _slot = logins.acquire().await.expect("semaphore");
        h.login(alice)
            .await
            .unwrap_or_else(|e| panic!("session {n}: login failed: {e:?}"))
    };
    all_open.wait().await;
    client
        .batch_execute("create temp table blob (line text)")
        .await
        .unwrap();
    let data = payload(n);
    let sent = Sha256::digest(&data);
    let sink = client.copy_in("copy blob from stdin").await.unwrap();
    futures::pin_mut!(sink);
    for chunk in data.chunks(16 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    sink.finish().await.unwrap();

    let stream = client.copy_out("copy blob to stdout").await.unwrap();
    futures::pin_mut!(stream);
    let mut received = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        received.update(&chunk);
    }
    assert_eq!(len, data.len(), "session {n}: bytes lost");
    assert_eq!(received.finalize(), sent, "session {n}: bytes corrupted");
    len * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copy_sessions_lose_nothing_and_leak_nothing() {
    let _heavy = proxy_testkit::world::heavy().await;
    let world = World::start().await;
    let h = Arc::new(world.proxy(world.config()).await);
    let alice = Arc::new(world.client("alice"));
    // The sockets this test's proxy holds: client connections on its listener, upstream
    // connections to its stand-in (other tests' sockets in this process are not counted).
    let ports = [h.addr().port(), world.standin().endpoint().port()];
    // Warm up once so lazily created state (TLS configs, the credential, AWS clients)
    // exists before the baseline is taken.
    copy_round_trip(
        &h,
        &alice,
        999,
        &tokio::sync::Semaphore::new(1),
        &tokio::sync::Barrier::new(1),
    )
    .await;
    world.standin().wait_for_active_sessions(0).await;
    let sockets_before = open_sockets_on(&ports);
    let tasks_before = alive_tasks();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let (h, alice, stop, churned) =
                (h.clone(), alice.clone(), stop.clone(), churned.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let client = h
                        .login(&alice)
                        .await
                        .unwrap_or_else(|e| panic!("churn login: {e:?}"));
                    let _: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
                    drop(client);
                    churned.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Configuration reloads (what SIGHUP triggers) while the load runs: every session
    // must still verify all of its bytes below.
    let reloader = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut reloads = 0;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                h.running.reload().await.expect("reload under load");
                reloads += 1;
            }
            reloads
        })
    };

    let logins = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LOGINS));
    let all_open = Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let (h, alice, logins, all_open) =
                (h.clone(), alice.clone(), logins.clone(), all_open.clone());
            tokio::spawn(async move { copy_round_trip(&h, &alice, n, &logins, &all_open).await })
        })
        .collect();
    let mut verified = 0usize;
    for s in sessions {
        verified += s.await.expect("session task");
    }
    stop.store(true, Ordering::SeqCst);
    for c in churners {
        c.await.expect("churner");
    }
    assert_eq!(reloader.await.expect("reloader"), 5);
    let elapsed = started.elapsed();
    eprintln!(
        "{SESSIONS} sessions verified {verified} bytes ({} churn sessions) in {elapsed:?}",
        churned.load(Ordering::SeqCst)
    );
    assert_eq!(verified, SESSIONS * 2 * payload(0).len());
    assert!(churned.load(Ordering::SeqCst) > 0);

    // Every session is closed: nothing may remain open once the proxy has noticed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (sockets, tasks) = (open_sockets_on(&ports), alive_tasks());
        if sockets <= sockets_before && tasks <= tasks_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {sockets} sockets (before {sockets_before}), {tasks} tasks (before {tasks_before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.running.shared().cancels.len(),
        0,
        "cancel registrations leaked"
    );
}

/// The PostgreSQL behind the stand-in stops mid-session and comes back: sessions end
/// cleanly, logins during the outage fail promptly with an ErrorResponse, and afterwards
/// new sessions work without restarting the proxy.
///
/// The upstream is the stand-in, which stays reachable while its PostgreSQL is down: the
/// proxy relays the stand-in's refusal instead of failing to connect (the 08001 of an
/// unreachable upstream is `redshift-iam-proxy`'s `an_unreachable_upstream_is_08001`).
#[tokio::test(flavor = "multi_thread")]
async fn upstream_restart_cuts_sessions_cleanly_and_the_proxy_recovers() {
    // A server of its own: this test stops it.
    let pg: &'static PgServer = Box::leak(Box::new(
        PgServer::start(PgOptions::default()).expect("dedicated pg"),
    ));
    let world = World::start_with(WorldOptions {
        pg: Some(pg),
        ..WorldOptions::default()
    })
    .await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(h.login(&alice).await.unwrap());
    }
    let busy = {
        let c = h.login(&alice).await.unwrap();
        tokio::spawn(async move { c.query("select pg_sleep(60)", &[]).await })
    };
    wait_for_query(pg, &world.role(&alice), "pg_sleep(60)").await;

    pg.shutdown();

    // The running query ends with the server's shutdown error or a closed connection.
    let err = tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .expect("the busy session learns promptly")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(sqlstate(&err).as_deref(), Some("57P01") | None),
        "{err}"
    );
    for c in &clients {
        assert!(c.query_one("select 1", &[]).await.is_err());
    }
    // While it is down, logins fail promptly, with the upstream's error.
    let started = Instant::now();
    let err = h.login(&alice).await.unwrap_err();
    assert!(sqlstate(&err).is_some(), "an ErrorResponse: {err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    pg.start_again().expect("restart");
    let client = h
        .login(&alice)
        .await
        .expect("new sessions work once the upstream is back");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    pg.stop();
}

/// A client that disappears without a Terminate message while its query runs: the proxy
/// cancels the query, so the upstream session ends too (a server notices a closed
/// connection only when it next reads or writes).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_vanishes_mid_query_stops_the_upstream_query() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let role = world.role(&alice);
    let mut s = raw_login(&h, &alice, &alice.common_name, "dev").await;
    s.write_all(&message(b'Q', b"select pg_sleep(60)\0"))
        .await
        .unwrap();
    s.flush().await.unwrap();
    wait_for_query(world.pg, &role, "pg_sleep(60)").await;

    // The client disappears without a Terminate message.
    let gone = Instant::now();
    drop(s);
    wait_for_backends(world.pg, &role, 0).await;
    assert!(
        gone.elapsed() < Duration::from_secs(5),
        "the upstream session outlived its client by {:?}",
        gone.elapsed()
    );
}
