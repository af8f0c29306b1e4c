//! Three instances behind a real HAProxy (issue 16): logins spread over them, Ctrl-C of a
//! running query cancels it wherever the cancel request lands, an instance drained with
//! SIGTERM loses no login, and the audit records carry the client's own address.

use proxy_testkit::fleet::Fleet;
use proxy_testkit::world::World;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Loopback sources of the three parts, so each part's records are told apart (and from
/// HAProxy's own address, 127.0.0.1).
const SPREAD_SOURCE: [u8; 4] = [127, 0, 16, 1];
const CANCEL_SOURCE: [u8; 4] = [127, 0, 16, 2];
const DRAIN_SOURCE: [u8; 4] = [127, 0, 16, 3];

fn ip(source: [u8; 4]) -> IpAddr {
    IpAddr::from(source)
}

fn from_source(record: &Value, source: [u8; 4]) -> bool {
    record["client_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with(&format!("{}:", ip(source))))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_behind_haproxy() {
    let world = World::start().await;
    let fleet = Fleet::start(&world, 3, |config| {
        // HAProxy checks every 250 ms and takes an instance out after two failures: well
        // within the unready time before the listeners close, even on a loaded machine.
        config
            .set("shutdown", "listener_close_delay", "2500ms")
            .set("shutdown", "drain_timeout", "30s")
    })
    .await;
    let alice = world.client("alice");

    logins_spread_and_carry_the_client_address(&fleet, &alice).await;
    cancels_reach_the_query_wherever_they_land(&fleet, &alice).await;
    a_drained_instance_loses_no_login(&fleet, &alice).await;
}

async fn logins_spread_and_carry_the_client_address(
    fleet: &Fleet,
    alice: &proxy_testkit::pki::ClientCert,
) {
    for _ in 0..6 {
        let c = fleet
            .connect_from(ip(SPREAD_SOURCE), alice)
            .await
            .expect("login through HAProxy");
        let user: String = c
            .client
            .query_one("select current_user", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, format!("IAMA:{}", alice.common_name));
        drop(c.client);
        let _ = c.connection.await;
    }
    let sessions = wait_for_records(fleet, 6, |r| {
        r["outcome"] == "closed" && from_source(r, SPREAD_SOURCE)
    })
    .await;
    let per_instance = count_by_instance(&sessions);
    assert!(
        per_instance.len() >= 2,
        "logins spread over at least two instances: {per_instance:?}"
    );
    for (_, r) in &sessions {
        assert!(
            r["via"]
                .as_str()
                .is_some_and(|v| v.starts_with("127.0.0.1:")),
            "the record names the balancer it came through: {r}"
        );
    }
}

/// psql's Ctrl-C is a CancelRequest on a new connection, which HAProxy sends to whichever
/// instance is next. Spacer connections between login and cancel move the cancel onto
/// each instance in turn: the session's own, and both of the others.
async fn cancels_reach_the_query_wherever_they_land(
    fleet: &Fleet,
    alice: &proxy_testkit::pki::ClientCert,
) {
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let session = fleet
            .connect_from(ip(CANCEL_SOURCE), alice)
            .await
            .expect("login");
        let started = Instant::now();
        let sleeping = session.client.simple_query("select pg_sleep(60)");
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for _ in 0..round % 3 {
                spacer(fleet).await;
            }
            session
                .cancel_from(ip(CANCEL_SOURCE), fleet.addr())
                .await
                .expect("the cancel request is sent");
        };
        let (result, ()) = tokio::join!(sleeping, cancel);
        let err = result.expect_err("pg_sleep(60) was cancelled");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("57014"),
            "round {round}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(15), "round {round}");
    }
    let cancels = wait_for_records(fleet, ROUNDS, |r| {
        r["kind"] == "cancel" && r["cancel_outcome"] == "forwarded" && from_source(r, CANCEL_SOURCE)
    })
    .await;
    assert_eq!(
        cancels.len(),
        ROUNDS,
        "each query cancelled upstream by its own instance"
    );
    let hops = fleet
        .all_audit()
        .into_iter()
        .filter(|(_, r)| {
            r["cancel_outcome"] == "forwarded_to_peer" && from_source(r, CANCEL_SOURCE)
        })
        .count();
    assert_eq!(
        hops,
        ROUNDS / 3 * 2,
        "two rounds in three landed on another instance and were forwarded to the owner"
    );
}

/// A connection that HAProxy sends to the next instance, which answers an SSLRequest and
/// is closed: it moves the round robin on by one.
async fn spacer(fleet: &Fleet) {
    let mut tcp = proxy_testkit::fleet::tcp_from(ip(CANCEL_SOURCE), fleet.addr()).await;
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
}

/// Clients log in continuously while one instance gets SIGTERM: `/readyz` turns 503 at
/// once, HAProxy stops sending it connections within two checks, its listeners close
/// after `listener_close_delay`, and not one login fails, nor is any connection retried
/// or redispatched by HAProxy.
async fn a_drained_instance_loses_no_login(fleet: &Fleet, alice: &proxy_testkit::pki::ClientCert) {
    let drained = &fleet.instances[0];
    let run_for = Duration::from_secs(6);
    let clients = (0..2).map(|_| async {
        let mut ok = 0;
        let mut failures = Vec::new();
        let end = Instant::now() + run_for;
        while Instant::now() < end {
            match fleet.connect_from(ip(DRAIN_SOURCE), alice).await {
                Ok(c) => match c.client.query_one("select 1", &[]).await {
                    Ok(_) => ok += 1,
                    Err(e) => failures.push(e.to_string()),
                },
                Err(e) => failures.push(e.to_string()),
            }
        }
        (ok, failures)
    });
    let terminate = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drained
            .process
            .signal(nix::sys::signal::Signal::SIGTERM)
            .unwrap();
    };
    let (results, ()) = tokio::join!(futures::future::join_all(clients), terminate);
    let logins: usize = results.iter().map(|(ok, _)| ok).sum();
    let failures: Vec<&String> = results.iter().flat_map(|(_, f)| f).collect();
    assert!(
        failures.is_empty(),
        "{} failed logins: {failures:?}",
        failures.len()
    );
    assert!(logins >= 10, "clients kept logging in: {logins}");
    let status = drained
        .process
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap()
        .expect("the drained instance exits");
    assert!(status.success(), "{status}\n{}", drained.process.logs());
    assert_eq!(
        fleet.balancer.status(&drained.name).as_deref(),
        Some("DOWN")
    );
    let stats = fleet.balancer.stats().unwrap();
    for s in &stats {
        assert_eq!(
            (s.retries, s.redispatches),
            (0, 0),
            "no connection met a closed listener: {stats:?}"
        );
    }
}

/// Records of every instance that satisfy `wanted`, waiting (up to 10 s) for `n` of them:
/// instances write a session's record when it ends.
async fn wait_for_records(
    fleet: &Fleet,
    n: usize,
    wanted: impl Fn(&Value) -> bool,
) -> Vec<(usize, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<(usize, Value)> = fleet
            .all_audit()
            .into_iter()
            .filter(|(_, r)| wanted(r))
            .collect();
        if found.len() >= n || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_by_instance(records: &[(usize, Value)]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for (i, _) in records {
        *counts.entry(*i).or_default() += 1;
    }
    counts
}
