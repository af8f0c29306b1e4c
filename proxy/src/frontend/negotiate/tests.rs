use super::*;
use crate::frontend::test_support::*;
use crate::net::messages::{CancelRequest, Decode, Encode, StartupPacket};
use rustls::pki_types::ServerName;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

fn cancel(pid: i32, key: &[u8]) -> bytes::BytesMut {
    CancelRequest {
        pid,
        key: key.to_vec(),
    }
    .encode()
}

fn session(n: Negotiated) -> ClientSession {
    match n {
        Negotiated::Session(s) => *s,
        Negotiated::Cancel(c) => panic!("expected a session, got {c:?}"),
    }
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;
type Server = JoinHandle<Result<Negotiated, FrontendError>>;

/// A client connected, still in plaintext, to a server negotiating with `settings`.
async fn plaintext_client(settings: FrontendSettings) -> (TcpStream, Server) {
    let (addr, task) = serve_one(settings).await;
    (TcpStream::connect(addr).await.unwrap(), task)
}

/// A client that has sent the SSLRequest and completed the handshake with `connector`.
async fn tls_client(settings: FrontendSettings, connector: &TlsConnector) -> (ClientTls, Server) {
    let (tcp, task) = plaintext_client(settings).await;
    (start_tls(tcp, connector).await.unwrap(), task)
}

/// A client that opens with the TLS handshake itself (direct TLS), offering `alpn`.
async fn direct_tls_client(pki: &TestPki, alpn: &[&[u8]]) -> (ClientTls, Server) {
    let (tcp, task) = plaintext_client(pki.settings()).await;
    let connector = pki.connector(ClientCert::Valid, TLS13, alpn);
    let name = ServerName::try_from("localhost").unwrap();
    (connector.connect(name, tcp).await.unwrap(), task)
}

/// A TLS client with `cert` sends `startup_msg`; returns the client stream and outcome.
async fn tls_login(
    pki: &TestPki,
    cert: ClientCert,
    startup_msg: &[u8],
) -> (ClientTls, Result<Negotiated, FrontendError>) {
    let (mut tls, task) = tls_client(pki.settings(), &pki.connector(cert, TLS13, &[])).await;
    tls.write_all(startup_msg).await.unwrap();
    let result = outcome(task).await;
    (tls, result)
}

/// Sends the smallest valid StartupMessage on `client`; returns the server's session.
async fn logged_in<S: AsyncWrite + Unpin>(client: &mut S, task: Server) -> ClientSession {
    client
        .write_all(&startup(0, &[("user", "u")]))
        .await
        .unwrap();
    session(outcome(task).await.unwrap())
}

/// Asks for GSSAPI encryption and expects to be declined with `N`.
async fn gssenc_declined(tcp: &mut TcpStream) {
    tcp.write_all(&StartupPacket::GssEncRequest.encode())
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'N');
}

/// Asserts a refused login: the client read `sqlstate` with a message containing
/// `message`, and the server reports the same and that the client was told.
async fn assert_refused<R: AsyncRead + Unpin>(
    client: &mut R,
    result: Result<Negotiated, FrontendError>,
    sqlstate: &str,
    message: &str,
) -> FrontendError {
    let e = read_error(client).await;
    assert_eq!(e.code, sqlstate, "{e:?}");
    assert_eq!(e.severity, "FATAL");
    assert!(
        e.message.contains(message),
        "{:?} lacks {message:?}",
        e.message
    );
    let err = result.expect_err("negotiation must fail");
    assert_eq!(told(&err).as_deref(), Some(sqlstate), "{err}");
    err
}

#[tokio::test]
async fn valid_certificate_yields_a_session() {
    let pki = TestPki::new();
    let msg = startup(
        0,
        &[
            ("user", "a&user=b"),
            ("database", "dev"),
            ("application_name", "psql"),
            ("driver_version", "x"),
        ],
    );
    let (_client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
    let s = session(result.unwrap());
    assert_eq!(s.identity().unwrap().common_name.as_deref(), Some("alice"));
    assert_eq!(s.startup.user, "a&user=b");
    assert_eq!(s.startup.database, "dev");
    // Kept as sent; the target kind's table decides at login what goes upstream.
    assert_eq!(
        s.startup.params,
        [
            ("application_name".to_string(), "psql".to_string()),
            ("driver_version".to_string(), "x".to_string())
        ]
    );
    assert!(s.startup.dropped_params.is_empty());
    let tls = s.tls.unwrap();
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
}

#[tokio::test]
async fn tls12_client_with_certificate_works() {
    let pki = TestPki::new();
    let connector = pki.connector(ClientCert::Valid, TLS12, &[]);
    let (mut tls, task) = tls_client(pki.settings(), &connector).await;
    let s = logged_in(&mut tls, task).await;
    assert_eq!(s.tls.as_ref().unwrap().version, "TLSv1.2");
    assert_eq!(
        s.startup.database, "",
        "no database: the policy defaults it"
    );
}

#[tokio::test]
async fn ssl_request_client_offering_alpn_postgresql_works() {
    // libpq 17 offers ALPN "postgresql" even on the SSLRequest path.
    let pki = TestPki::new();
    let connector = pki.connector(ClientCert::Valid, TLS13, &[b"postgresql"]);
    let (mut tls, task) = tls_client(pki.settings(), &connector).await;
    logged_in(&mut tls, task).await;
}

#[tokio::test]
async fn newer_minor_versions_are_negotiated_down_to_3_0() {
    for minor in [2u16, 9999] {
        let pki = TestPki::new();
        let msg = startup(
            minor,
            &[("user", "u"), ("_pq_.test_protocol_negotiation", "")],
        );
        let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
        let m = read_msg(&mut client).await;
        assert_eq!(m.tag, b'v');
        assert_eq!(
            NegotiateProtocolVersion::decode(&m.body).unwrap(),
            NegotiateProtocolVersion {
                newest_minor: NEGOTIATED_PROTOCOL_VERSION,
                unsupported_options: vec!["_pq_.test_protocol_negotiation".into()],
            }
        );
        let s = session(result.unwrap());
        assert_eq!(s.startup.protocol_minor, 0);
        assert_eq!(s.startup.requested_protocol_minor, minor);
        assert!(
            s.startup.params.is_empty(),
            "_pq_ options are never forwarded"
        );
    }
}

#[tokio::test]
async fn protocol_options_at_3_0_are_dropped_without_negotiation() {
    // The Redshift JDBC driver sends `_pq_.compression` at 3.0 and cannot handle `v`.
    let pki = TestPki::new();
    let msg = startup(0, &[("user", "u"), ("_pq_.compression", "lz4")]);
    let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
    let s = session(result.unwrap());
    assert_eq!(s.startup.dropped_params, ["_pq_.compression"]);
    drop(s); // closes the server side: the client must see EOF, not a `v` message
    expect_eof(&mut client).await;
}

#[tokio::test]
async fn startup_packet_length_is_checked() {
    let pki = TestPki::new();
    for len in [0i32, 7, 10_001, -8] {
        let (mut tcp, task) = plaintext_client(pki.settings()).await;
        tcp.write_all(&len.to_be_bytes()).await.unwrap();
        tcp.write_all(&[0u8; 8]).await.unwrap();
        assert_refused(
            &mut tcp,
            outcome(task).await,
            "08P01",
            "invalid length of startup packet",
        )
        .await;
    }
}

#[tokio::test]
async fn plaintext_startup_message_is_told_tls_is_required() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    tcp.write_all(&startup(0, &[("user", "u")])).await.unwrap();
    let e = read_error(&mut tcp).await;
    assert_eq!(e.code, "28000");
    assert!(e.message.contains("requires TLS"), "{}", e.message);
    assert!(e.hint.unwrap().contains("sslmode=require"));
    let err = outcome(task).await.unwrap_err();
    assert!(matches!(err.kind, FrontendErrorKind::TlsRequired));
    assert_eq!(told(&err).as_deref(), Some("28000"));
}

#[tokio::test]
async fn bytes_pipelined_after_ssl_request_are_refused() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    let mut bytes = StartupPacket::SslRequest.encode().to_vec();
    bytes.extend_from_slice(&startup(0, &[("user", "injected")]));
    tcp.write_all(&bytes).await.unwrap();
    let err = assert_refused(
        &mut tcp,
        outcome(task).await,
        "08P01",
        "unencrypted data after SSL request",
    )
    .await;
    assert!(matches!(
        err.kind,
        FrontendErrorKind::PipelinedAfterSslRequest
    ));
}

#[tokio::test]
async fn second_ssl_request_inside_tls_is_a_protocol_violation() {
    let pki = TestPki::new();
    let (mut client, result) =
        tls_login(&pki, ClientCert::Valid, &StartupPacket::SslRequest.encode()).await;
    assert_refused(&mut client, result, "08P01", "SSL negotiation request").await;
}

#[tokio::test]
async fn gssenc_request_is_declined_once_then_tls_proceeds() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    gssenc_declined(&mut tcp).await;
    let mut tls = start_tls(tcp, &pki.connector(ClientCert::Valid, TLS13, &[]))
        .await
        .unwrap();
    logged_in(&mut tls, task).await;
}

#[tokio::test]
async fn second_gssenc_request_is_a_protocol_violation() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    gssenc_declined(&mut tcp).await;
    tcp.write_all(&StartupPacket::GssEncRequest.encode())
        .await
        .unwrap();
    assert_refused(&mut tcp, outcome(task).await, "08P01", "duplicate GSSAPI").await;
}

#[tokio::test]
async fn plaintext_cancel_request_gets_no_reply() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    tcp.write_all(&cancel(4242, &[9, 8, 7, 6])).await.unwrap();
    match outcome(task).await.unwrap() {
        Negotiated::Cancel(c) => assert_eq!(
            c,
            CancelTarget {
                pid: 4242,
                key: vec![9, 8, 7, 6]
            }
        ),
        Negotiated::Session(_) => panic!("expected a cancel"),
    }
    expect_eof(&mut tcp).await;
}

#[tokio::test]
async fn malformed_cancel_request_gets_no_reply() {
    let pki = TestPki::new();
    let (mut tcp, task) = plaintext_client(pki.settings()).await;
    tcp.write_all(&cancel(1, &[1, 2])).await.unwrap();
    let err = outcome(task).await.unwrap_err();
    assert_eq!(told(&err), None);
    expect_eof(&mut tcp).await;
}

#[tokio::test]
async fn cancel_request_inside_tls_needs_no_client_certificate() {
    let pki = TestPki::new();
    let key = [0x5au8; 32];
    let (mut client, result) = tls_login(&pki, ClientCert::None, &cancel(7, &key)).await;
    match result.unwrap() {
        Negotiated::Cancel(c) => assert_eq!((c.pid, c.key), (7, key.to_vec())),
        Negotiated::Session(_) => panic!("expected a cancel"),
    }
    expect_eof(&mut client).await;
}

#[tokio::test]
async fn client_certificate_problems_are_reported_with_sqlstate_28000() {
    let cases = [
        (
            ClientCert::None,
            "a client certificate is required",
            ClientCertError::Missing,
        ),
        (ClientCert::Expired, "expired", ClientCertError::Expired),
        (
            ClientCert::NotYetValid,
            "not yet valid",
            ClientCertError::NotYetValid,
        ),
        (ClientCert::Revoked, "revoked", ClientCertError::Revoked),
        (
            ClientCert::OtherCa,
            "not issued by a trusted certificate authority",
            ClientCertError::UnknownIssuer,
        ),
        (
            ClientCert::ServerAuthOnly,
            "not valid for client authentication",
            ClientCertError::WrongUsage,
        ),
    ];
    let pki = TestPki::new();
    for (cert, message, expected) in cases {
        let (mut client, result) = tls_login(&pki, cert, &startup(0, &[("user", "u")])).await;
        let err = assert_refused(&mut client, result, "28000", message).await;
        match err.kind {
            FrontendErrorKind::ClientCert(got) => assert_eq!(got, expected, "{cert:?}"),
            other => panic!("{cert:?}: unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn protocol_major_other_than_3_is_refused() {
    let pki = TestPki::new();
    let mut msg = startup(0, &[("user", "u")]);
    msg[4..6].copy_from_slice(&2u16.to_be_bytes());
    let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
    assert_refused(
        &mut client,
        result,
        "08P01",
        "unsupported frontend protocol 2.0",
    )
    .await;
}

#[tokio::test]
async fn startup_message_contents_are_validated() {
    let pki = TestPki::new();
    let mut not_utf8 = startup(0, &[("user", "u"), ("application_name", "ab")]);
    let at = not_utf8.len() - 3;
    not_utf8[at] = 0xff;
    let mut no_terminator = startup(0, &[("user", "u")]);
    let last = no_terminator.len() - 1;
    no_terminator[last] = b'x';
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (not_utf8, "08P01", "invalid byte sequence"),
        (no_terminator, "08P01", "invalid startup packet layout"),
        (
            startup(0, &[("database", "d")]),
            "28000",
            "no user name specified",
        ),
        (
            startup(0, &[("user", "u"), ("replication", "database")]),
            "28000",
            "replication connections are not supported",
        ),
    ];
    for (msg, sqlstate, message) in cases {
        let (mut client, result) = tls_login(&pki, ClientCert::Valid, &msg).await;
        assert_refused(&mut client, result, sqlstate, message).await;
    }
}

#[tokio::test]
async fn login_timeout_before_and_after_tls() {
    let pki = TestPki::new();
    let mut settings = pki.settings();
    settings.login_timeout = Duration::from_millis(300);

    // Plaintext: the client connects and says nothing.
    let (mut tcp, task) = plaintext_client(settings.clone()).await;
    let err = assert_refused(&mut tcp, outcome(task).await, "08P01", "timeout").await;
    assert!(matches!(err.kind, FrontendErrorKind::LoginTimeout));

    // Inside TLS: the handshake completes, then a partial StartupMessage.
    let connector = pki.connector(ClientCert::Valid, TLS13, &[]);
    let (mut tls, task) = tls_client(settings, &connector).await;
    tls.write_all(&startup(0, &[("user", "u")])[..6])
        .await
        .unwrap();
    assert_refused(&mut tls, outcome(task).await, "08P01", "timeout").await;
}

#[tokio::test]
async fn direct_tls_requires_alpn_postgresql() {
    let pki = TestPki::new();

    let (mut tls, task) = direct_tls_client(&pki, &[b"postgresql"]).await;
    logged_in(&mut tls, task).await;

    let (mut tls, task) = direct_tls_client(&pki, &[]).await;
    assert_refused(&mut tls, outcome(task).await, "08P01", "ALPN").await;
}

#[tokio::test]
async fn random_input_never_panics_or_hangs() {
    use rand::{Rng, SeedableRng};
    let pki = TestPki::new();
    let mut settings = pki.settings();
    settings.login_timeout = Duration::from_secs(2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf022);
    for round in 0..150 {
        let inside_tls = round % 3 == 0;
        let len = rng.random_range(0..96);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Plausible length words and codes reach the deeper paths more often.
        if junk.len() >= 8 && rng.random_bool(0.6) {
            let declared = rng.random_range(8..=junk.len() as i32 + 2);
            junk[..4].copy_from_slice(&declared.to_be_bytes());
            let code =
                [3i32 << 16, (3 << 16) | 2, 80877102, 80877103, 80877104][rng.random_range(0..5)];
            junk[4..8].copy_from_slice(&code.to_be_bytes());
        }
        let task = if inside_tls {
            let connector = pki.connector(ClientCert::Valid, TLS13, &[]);
            let (mut tls, task) = tls_client(settings.clone(), &connector).await;
            let _ = tls.write_all(&junk).await;
            let _ = tls.shutdown().await;
            task
        } else {
            let (mut tcp, task) = plaintext_client(settings.clone()).await;
            let _ = tcp.write_all(&junk).await;
            let _ = tcp.shutdown().await;
            task
        };
        let _ = outcome(task).await;
    }
}
