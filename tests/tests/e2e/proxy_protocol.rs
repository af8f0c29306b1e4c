//! A `proxy_protocol` listener (issue 16): the client a trusted balancer names is the
//! client everywhere (audit, per-address limits), and nothing else gets in: untrusted
//! sources, missing, malformed, oversized or stalled headers are closed unanswered, each
//! counted by reason.

use proxy_testkit::adversary::{request, SSL_REQUEST_CODE};
use proxy_testkit::balancer::http_get;
use proxy_testkit::config::strings;
use proxy_testkit::fleet::tcp_from;
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{TestProxy, World};
use redshift_iam_proxy::net::proxy_header::encode_v2;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;

const BALANCER: [u8; 4] = [127, 0, 0, 1];
const STRANGER: [u8; 4] = [127, 0, 17, 5];

async fn proxy(world: &World, pending_per_source: usize) -> TestProxy {
    let config = world
        .config()
        .edit_listener("main", |l| {
            l.set("proxy_protocol", true)
                .set("proxy_protocol_from", strings(["127.0.0.1/32"]))
        })
        .set("admin", "bind", "127.0.0.1:0")
        .set("limits", "handshake_timeout", "1s")
        .set(
            "limits",
            "max_pending_per_source",
            pending_per_source as i64,
        );
    world.proxy(config).await
}

/// A connection from the balancer's address that starts with `header`.
async fn with_header(proxy: &TestProxy, header: &[u8]) -> TcpStream {
    let mut tcp = tcp_from(IpAddr::from(BALANCER), proxy.addr()).await;
    tcp.write_all(header).await.unwrap();
    tcp
}

fn v2(client: &str, proxy: &TestProxy) -> Vec<u8> {
    encode_v2(client.parse().unwrap(), proxy.addr())
}

/// Logs in as `cert` over `stream` (whatever was written on it before stays in front).
async fn login(proxy: &TestProxy, stream: TcpStream, cert: &ClientCert) -> String {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .user(&cert.common_name)
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let mut tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::client::client_tls(
        &proxy.ca,
        Some(cert),
    ));
    let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(&mut tls, "localhost").unwrap();
    let (client, connection) = config.connect_raw(stream, tls).await.expect("login");
    tokio::spawn(connection);
    client
        .query_one("select current_user", &[])
        .await
        .unwrap()
        .get(0)
}

/// The proxy closes `tcp` without sending a byte.
async fn closed_unanswered(mut tcp: TcpStream, within: Duration) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(within, tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the proxy answered {:?}", &buf[..n]),
        Err(_) => panic!("the connection was still open after {within:?}"),
    }
}

fn metric(proxy: &TestProxy, series: &str) -> f64 {
    let admin = proxy.running.admin_addr().expect("admin listener");
    let text = http_get(admin.port(), "/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_a_trusted_balancer_names_is_the_client() {
    let world = World::start().await;
    let proxy = proxy(&world, 64).await;
    let alice = world.client("alice");
    let expected = format!("IAMA:{}", alice.common_name);

    let v1 = format!(
        "PROXY TCP4 198.51.100.7 127.0.0.1 40001 {}\r\n",
        proxy.addr().port()
    );
    let tcp = with_header(&proxy, v1.as_bytes()).await;
    assert_eq!(login(&proxy, tcp, &alice).await, expected);
    let tcp = with_header(&proxy, &v2("[2001:db8::7]:40002", &proxy)).await;
    assert_eq!(login(&proxy, tcp, &alice).await, expected);
    // A LOCAL header (the balancer speaking for itself) keeps the connection's address.
    let local = [
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00,
        0x00,
    ];
    let tcp = with_header(&proxy, &local).await;
    let balancer_side = tcp.local_addr().unwrap();
    assert_eq!(login(&proxy, tcp, &alice).await, expected);

    let records = proxy.audit(3).await;
    let addrs: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r["client_addr"].as_str().unwrap(), r["via"].as_str()))
        .collect();
    assert!(
        addrs
            .iter()
            .any(|(a, v)| *a == "198.51.100.7:40001" && v.is_some()),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().any(|(a, _)| *a == "[2001:db8::7]:40002"),
        "{addrs:?}"
    );
    assert!(
        addrs
            .iter()
            .any(|(a, v)| *a == balancer_side.to_string() && v.is_none()),
        "{addrs:?}"
    );
    assert_eq!(
        metric(
            &proxy,
            "redshift_iam_proxy_proxy_protocol_local_total{listener=\"main\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_and_broken_headers_are_closed_unanswered() {
    let world = World::start().await;
    let proxy = proxy(&world, 64).await;
    let quick = Duration::from_secs(3);

    // A valid header from an address outside proxy_protocol_from.
    let mut tcp = tcp_from(IpAddr::from(STRANGER), proxy.addr()).await;
    tcp.write_all(&v2("198.51.100.7:1", &proxy)).await.unwrap();
    closed_unanswered(tcp, quick).await;
    // A client that skipped the balancer: its SSLRequest is no header.
    closed_unanswered(with_header(&proxy, &request(SSL_REQUEST_CODE)).await, quick).await;
    // Garbage after the signature.
    closed_unanswered(
        with_header(&proxy, b"PROXY TCP4 nonsense here\r\n").await,
        quick,
    )
    .await;
    let mut wrong_version = v2("198.51.100.7:1", &proxy);
    wrong_version[12] = 0x31;
    closed_unanswered(with_header(&proxy, &wrong_version).await, quick).await;
    // A v2 header announcing 4000 bytes.
    let mut oversized = v2("198.51.100.7:1", &proxy)[..12].to_vec();
    oversized.extend_from_slice(&[0x21, 0x11, 0x0f, 0xa0]);
    oversized.extend(std::iter::repeat_n(0u8, 4000));
    closed_unanswered(with_header(&proxy, &oversized).await, quick).await;
    // Half a header, then silence: closed by the handshake timeout (1 s).
    let started = Instant::now();
    let half = v2("198.51.100.7:1", &proxy);
    closed_unanswered(with_header(&proxy, &half[..20]).await, quick).await;
    assert!(started.elapsed() >= Duration::from_millis(900));

    let rejected = |reason: &str| {
        metric(
            &proxy,
            &format!(
                "redshift_iam_proxy_proxy_protocol_rejected_total{{listener=\"main\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(
        [
            "untrusted_source",
            "missing",
            "malformed",
            "oversized",
            "timeout"
        ]
        .map(rejected),
        [1.0, 1.0, 2.0, 1.0, 1.0]
    );
    // Nothing of that reached the PostgreSQL protocol, and a real client still logs in.
    let alice = world.client("alice");
    let tcp = with_header(&proxy, &v2("198.51.100.8:2", &proxy)).await;
    login(&proxy, tcp, &alice).await;
    let records = proxy.audit(1).await;
    assert_eq!(
        records.len(),
        1,
        "only the login has an audit record: {records:?}"
    );
}

/// `max_pending_per_source` counts the address the balancer names, not the balancer's.
#[tokio::test(flavor = "multi_thread")]
async fn per_address_limits_key_on_the_client_the_header_names() {
    let world = World::start().await;
    let proxy = proxy(&world, 2).await;
    let ssl_request = request(SSL_REQUEST_CODE);
    let answer = |client: &'static str| {
        let proxy = &proxy;
        let ssl_request = ssl_request.clone();
        async move {
            let mut bytes = v2(client, proxy);
            bytes.extend_from_slice(&ssl_request);
            let mut tcp = with_header(proxy, &bytes).await;
            let mut first = [0u8; 1];
            tcp.read_exact(&mut first).await.unwrap();
            (tcp, first[0])
        }
    };
    let (_held1, a) = answer("198.51.100.9:1").await;
    let (_held2, b) = answer("198.51.100.9:2").await;
    let (_over, c) = answer("198.51.100.9:3").await;
    let (_other, d) = answer("198.51.100.10:1").await;
    assert_eq!([a, b, c, d], [b'S', b'S', b'E', b'S']);
    let records = proxy.audit(1).await;
    let refused = records
        .iter()
        .find(|r| r["refusal"]["reason"] == "max_pending_per_source")
        .expect("the refusal is audited");
    assert_eq!(refused["client_addr"], "198.51.100.9:3");
    let balancer: SocketAddr = refused["via"].as_str().unwrap().parse().unwrap();
    assert_eq!(balancer.ip(), IpAddr::from(BALANCER));
}
