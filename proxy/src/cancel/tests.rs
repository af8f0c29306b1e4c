use super::*;
use crate::net::proxy_header::{read_header, ProxyHeader};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn from(addr: &str) -> Requester {
    let addr: SocketAddr = addr.parse().unwrap();
    Requester {
        rate_limit_key: addr.ip(),
        addr: Some(addr),
    }
}

/// An upstream nobody listens on: a matched key ends `upstream_failed`, an unmatched one
/// `unknown_key`.
fn dead_upstream() -> Arc<UpstreamEndpoint> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: proxy_config::TargetConfig = toml::from_str(&format!(
        "name = \"t\"\nkind = \"provisioned\"\nhost = \"localhost\"\nport = {port}\n\
         dial = \"127.0.0.1\"\nconnect_timeout = \"1s\""
    ))
    .unwrap();
    Arc::new(UpstreamEndpoint::from_config(&target).unwrap())
}

fn upstream_key() -> Option<BackendKey> {
    Some(BackendKey {
        pid: 4242,
        key: vec![1, 2, 3, 4],
    })
}

fn peering(text: &str) -> PeeringConfig {
    toml::from_str(text).unwrap()
}

#[tokio::test]
async fn guessed_keys_cost_only_their_own_address() {
    let registry = CancelRegistry::new(None);
    // Far more guesses than the global budget holds, from many addresses.
    for i in 0..2000u32 {
        let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let requester = Requester {
            rate_limit_key: peer,
            addr: None,
        };
        let outcome = registry
            .cancel(requester, 7, &[1, 2, 3, 4], &PeeringConfig::default())
            .await;
        assert_eq!(outcome, CancelOutcome::UnknownKey);
    }
    assert!(
        registry.limiter().allow_global(Instant::now()),
        "the global budget is untouched"
    );
}

#[tokio::test]
async fn peered_keys_share_pids_without_mixing_up_sessions() {
    let registry = Arc::new(CancelRegistry::new(Some(1)));
    let endpoint = dead_upstream();
    let sessions: Vec<_> = (0..20_000)
        .map(|_| registry.register(endpoint.clone(), upstream_key()))
        .collect();
    assert_eq!(registry.len(), 20_000);
    let (key, _) = &sessions[123];
    let none = PeeringConfig::default();
    let who = from("10.0.0.1:5000");
    assert_eq!(
        registry.cancel(who, key.pid, &key.secret, &none).await,
        CancelOutcome::UpstreamFailed,
        "our own key is matched (the upstream is down)"
    );
    let mut wrong = key.secret;
    wrong[0] ^= 0xff;
    assert_eq!(
        registry.cancel(who, key.pid, &wrong, &none).await,
        CancelOutcome::UnknownKey
    );
    // A key forwarded once (TTL 2) is still ours.
    let forwarded = ProxyKey::forwarded(&key.secret);
    assert_eq!(
        registry.cancel(who, key.pid, &forwarded, &none).await,
        CancelOutcome::UpstreamFailed
    );
    drop(sessions);
    assert!(
        registry.is_empty(),
        "every registration removed its own entry"
    );
}

/// A peer that records what it receives: the PROXY header (when sent) and the request.
async fn recording_peer() -> (
    SocketAddr,
    tokio::task::JoinHandle<(Option<ProxyHeader>, Vec<u8>)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 1];
        tcp.peek(&mut first).await.unwrap();
        let header = match first[0] {
            b'\r' => Some(read_header(&mut tcp).await.unwrap()),
            _ => None,
        };
        let mut request = Vec::new();
        tcp.read_to_end(&mut request).await.unwrap();
        (header, request)
    });
    (addr, task)
}

#[tokio::test]
async fn a_key_of_another_instance_goes_to_that_peer_with_one_hop_less() {
    let registry = CancelRegistry::new(Some(1));
    let key = ProxyKey::random(Some(2), &mut rand::rng());
    let (addr, peer) = recording_peer().await;
    let peers = peering(&format!(
        "id = 1\n[[peer]]\nid = 2\naddress = \"{addr}\"\nproxy_protocol = true\n"
    ));
    let client = from("203.0.113.7:40000");
    let outcome = registry.cancel(client, key.pid, &key.secret, &peers).await;
    assert_eq!(outcome, CancelOutcome::ForwardedToPeer(2));
    assert_eq!(outcome.peer(), Some(2));
    let (header, request) = peer.await.unwrap();
    match header {
        Some(ProxyHeader::Proxied { source, .. }) => assert_eq!(source, client.addr.unwrap()),
        other => panic!("expected the client's address, got {other:?}"),
    }
    let expected = crate::net::messages::Encode::encode(&crate::net::messages::CancelRequest {
        pid: key.pid,
        key: ProxyKey::forwarded(&key.secret).to_vec(),
    });
    assert_eq!(
        request,
        expected.to_vec(),
        "a plain CancelRequest, TTL lowered"
    );
}

#[tokio::test]
async fn unknown_unreachable_and_exhausted_peers_are_outcomes_not_failures() {
    let registry = CancelRegistry::new(Some(1));
    let key = ProxyKey::random(Some(9), &mut rand::rng());
    let peers = peering("id = 1\n");
    let who = from("10.0.0.1:5000");
    assert_eq!(
        registry.cancel(who, key.pid, &key.secret, &peers).await,
        CancelOutcome::UnknownPeer(9)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let peers = peering(&format!(
        "id = 1\n[[peer]]\nid = 9\naddress = \"{closed}\"\n"
    ));
    let started = Instant::now();
    assert_eq!(
        registry.cancel(who, key.pid, &key.secret, &peers).await,
        CancelOutcome::PeerFailed(9)
    );
    assert!(started.elapsed() < PEER_TIMEOUT + Duration::from_secs(1));
    let spent = ProxyKey::forwarded(&ProxyKey::forwarded(&ProxyKey::forwarded(&key.secret)));
    assert_eq!(
        registry.cancel(who, key.pid, &spent, &peers).await,
        CancelOutcome::TtlExhausted(9),
        "a request bounced three times is not sent on"
    );
}
