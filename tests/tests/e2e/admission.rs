//! No unauthenticated client can hold the door (issue 11).

use proxy_testkit::adversary::{request, SSL_REQUEST_CODE};
use proxy_testkit::world::{current_user, World};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends an SSLRequest, reads the `S`, goes silent.
async fn silent_after_ssl_request(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let mut s = connect_from(addr, source).await;
    s.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    s
}

/// The attack of issue 11: 300 connections that send an SSLRequest, read `S` and go
/// silent (or send a single 0x16 byte) held every handshake slot until the login timeout;
/// a legitimate psql then timed out. Now a slot is taken only once a whole ClientHello has
/// arrived, and the handshake itself times out after 5 s.
#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_do_not_starve_a_legitimate_psql() {
    let world = World::start().await;
    let proxy = world
        .proxy(world.config().set("limits", "max_handshakes", 8))
        .await;
    let alice = world.client("alice");
    let addr = proxy.addr();
    let mut silent = Vec::new();
    // Two attacking addresses, each well below the per-source cap.
    for i in 0..300u32 {
        let source = Ipv4Addr::new(127, 0, 2, 1 + (i % 2) as u8);
        if i % 3 == 0 {
            let mut s = connect_from(addr, source).await;
            s.write_all(&[0x16]).await.unwrap();
            silent.push(s);
        } else {
            silent.push(silent_after_ssl_request(addr, source).await);
        }
    }
    let started = Instant::now();
    let out = proxy
        .psql(&alice)
        .user(&alice.common_name)
        .timeout(Duration::from_secs(10))
        .run("select current_user")
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.value(), format!("IAMA:{}", alice.common_name));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the login took {:?} behind 300 silent sockets",
        started.elapsed()
    );
    // Their handshakes time out after 5 s, with an audit record each.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let records = proxy.audit(301).await;
    let timed_out = records
        .iter()
        .filter(|r| r["refusal"]["reason"] == "handshake_timeout")
        .count();
    assert_eq!(
        timed_out, 300,
        "every silent socket was ended by the handshake timeout"
    );
    drop(silent);
}

/// One address cannot hold more than `max_pending_per_source` connections that have not
/// authenticated: the next ones are refused at their SSLRequest (53300), and other
/// addresses are unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn pending_connections_are_capped_per_source_address() {
    let world = World::start().await;
    let proxy = world
        .proxy(world.config().set("limits", "max_pending_per_source", 20))
        .await;
    let addr = proxy.addr();
    let attacker = Ipv4Addr::new(127, 0, 3, 1);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(silent_after_ssl_request(addr, attacker).await);
    }
    let mut over = connect_from(addr, attacker).await;
    over.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    let mut first = [0u8; 1];
    over.read_exact(&mut first).await.unwrap();
    assert_eq!(
        &first, b"E",
        "refused at the SSLRequest, before any handshake"
    );

    let alice = world.client("alice");
    let client = proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .expect("another address logs in");
    assert_eq!(
        current_user(&client).await,
        format!("IAMA:{}", alice.common_name)
    );
    let records = proxy.audit(1).await;
    assert!(records
        .iter()
        .any(|r| r["refusal"]["reason"] == "max_pending_per_source"
            && r["refusal"]["sqlstate"] == "53300"));
    drop(held);
}
