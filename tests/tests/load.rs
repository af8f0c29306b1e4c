//! Faults and load, bounded for CI: many concurrent sessions moving data both ways with
//! every byte verified, sessions churning alongside, no leaked file descriptors or tasks;
//! an upstream restart mid-session; a client vanishing mid-query.

use futures::{SinkExt, StreamExt};
use proxy_testkit::adversary::{message, raw_login};
use proxy_testkit::harness::{sqlstate, HarnessOptions, ProxyHarness};
use proxy_testkit::pg::{PgOptions, PgServer};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Concurrent COPY sessions (PostgreSQL in the test kit allows 300 connections).
const SESSIONS: usize = 200;
/// Bytes each session sends with COPY IN and receives back with COPY OUT.
const BYTES_PER_DIRECTION: usize = 256 * 1024;
/// Sessions opening and closing in a loop while the load runs.
const CHURNERS: usize = 4;

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

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

/// Logins in flight at once. SCRAM costs CPU on both sides; 200 logins at the same
/// instant on 2 cores would test the machine, not the proxy.
const CONCURRENT_LOGINS: usize = 16;

/// One session: log in (at most [`CONCURRENT_LOGINS`] at a time), wait until every session
/// is open, then COPY IN the payload, COPY OUT it back and compare. Returns bytes verified.
async fn copy_round_trip(
    h: &ProxyHarness,
    n: usize,
    logins: &tokio::sync::Semaphore,
    all_open: &tokio::sync::Barrier,
) -> usize {
    let client = {
        let _slot = logins.acquire().await.expect("semaphore");
        h.connect(Some(&h.clients.alice), "alice", "postgres")
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
    let h = Arc::new(ProxyHarness::start().await);
    h.provision("alice").await;
    // Warm up once so lazily created state (TLS configs, resolver threads) exists before
    // the baseline is taken.
    copy_round_trip(
        &h,
        999,
        &tokio::sync::Semaphore::new(1),
        &tokio::sync::Barrier::new(1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_before = open_fds();
    let tasks_before = alive_tasks();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let (h, stop, churned) = (h.clone(), stop.clone(), churned.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let client = h
                        .connect(Some(&h.clients.alice), "alice", "postgres")
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
            let (h, logins, all_open) = (h.clone(), logins.clone(), all_open.clone());
            tokio::spawn(async move { copy_round_trip(&h, n, &logins, &all_open).await })
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
        let (fds, tasks) = (open_fds(), alive_tasks());
        if fds <= fds_before && tasks <= tasks_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: {fds} fds (before {fds_before}), {tasks} tasks (before {tasks_before})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.running.shared().cancels.len(),
        0,
        "cancel registrations leaked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_restart_cuts_sessions_cleanly_and_the_proxy_recovers() {
    // A server of its own: this test stops it.
    let pg: &'static PgServer = Box::leak(Box::new(
        PgServer::start(PgOptions::default()).expect("dedicated pg"),
    ));
    let h = ProxyHarness::start_with(HarnessOptions {
        pg: Some(pg),
        ..Default::default()
    })
    .await;
    h.provision("alice").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            h.connect(Some(&h.clients.alice), "alice", "postgres")
                .await
                .unwrap(),
        );
    }
    let busy = {
        let c = h
            .connect(Some(&h.clients.alice), "alice", "postgres")
            .await
            .unwrap();
        tokio::spawn(async move { c.query("select pg_sleep(60)", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

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
    // While it is down, logins fail with 08001 (cannot connect), promptly.
    let started = Instant::now();
    let err = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    pg.start_again().expect("restart");
    let client = h
        .connect(Some(&h.clients.alice), "alice", "postgres")
        .await
        .expect("new sessions work once the upstream is back");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    pg.stop();
}

// Fails against the tree as of this writing: the relay shuts down the upstream side, but
// the server notices a closed client only when it next reads or writes, so the query runs
// to its end. See "Findings" in docs/hardening.md for the suggested fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_vanishes_mid_query_stops_the_upstream_query() {
    let h = ProxyHarness::start().await;
    let pg_user = h.provision("alice").await;
    let admin = h.pg.admin().await.unwrap();
    let mut s = raw_login(&h, &h.clients.alice, "alice", "postgres").await;
    s.write_all(&message(b'Q', b"select pg_sleep(60)\0"))
        .await
        .unwrap();
    s.flush().await.unwrap();

    let running = "select count(*) from pg_stat_activity \
                   where usename = $1 and query like 'select pg_sleep%'";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = admin.query_one(running, &[&pg_user]).await.unwrap().get(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the query never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The client disappears without a Terminate message.
    drop(s);
    let gone_by = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity where usename = $1",
                &[&pg_user],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < gone_by,
            "the upstream session outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
