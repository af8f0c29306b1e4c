//! Protocol negotiation end to end, with a raw TLS client that builds every startup packet
//! by hand (independent of the proxy's own encoders): PostgreSQL 17 direct SSL with and
//! without ALPN, protocol 3.2 and greased 3.9999 startups with `_pq_` options,
//! GSSENCRequest before SSLRequest, a CancelRequest sent inside TLS after an SSLRequest,
//! and the Redshift JDBC driver's startup parameters (that driver is not installable here,
//! so its StartupMessage is simulated).

use proxy_testkit::adversary::{request, startup_text, with_length, PROTOCOL_3_0};
use proxy_testkit::client::client_tls;
use proxy_testkit::observe::wait_for_query;
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{TestProxy, World};
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const STEP: Duration = Duration::from_secs(10);

/// A StartupMessage for protocol 3.`minor`.
fn startup_message(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    startup_text(PROTOCOL_3_0 | i32::from(minor), params)
}

fn query(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&(i32::try_from(sql.len() + 5).unwrap()).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

/// One backend message.
struct Message {
    tag: u8,
    body: Vec<u8>,
}

impl Message {
    fn i32_at(&self, at: usize) -> i32 {
        i32::from_be_bytes(self.body[at..at + 4].try_into().unwrap())
    }

    /// NUL-terminated strings starting at `at`.
    fn strings_from(&self, at: usize) -> Vec<String> {
        self.body[at..]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    /// ErrorResponse / NoticeResponse fields by code.
    fn fields(&self) -> BTreeMap<char, String> {
        self.body
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| (f[0] as char, String::from_utf8_lossy(&f[1..]).into_owned()))
            .collect()
    }
}

/// Reads one message, or `None` at end of stream.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<Message> {
    let mut header = [0u8; 5];
    match tokio::time::timeout(STEP, s.read_exact(&mut header)).await {
        Err(_) => panic!("no message from the proxy within {STEP:?}"),
        Ok(Err(_)) => return None,
        Ok(Ok(_)) => {}
    }
    let len = usize::try_from(i32::from_be_bytes(header[1..5].try_into().unwrap())).unwrap();
    assert!((4..1 << 20).contains(&len), "message length {len}");
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.expect("message body");
    Some(Message {
        tag: header[0],
        body,
    })
}

/// Everything the proxy sent from the StartupMessage up to ReadyForQuery.
#[derive(Debug, Default)]
struct Login {
    /// `(version, unsupported options)` of a NegotiateProtocolVersion.
    negotiated: Option<(i32, Vec<String>)>,
    auth_ok: bool,
    parameters: BTreeMap<String, String>,
    /// BackendKeyData: pid and secret key.
    backend_key: Option<(i32, Vec<u8>)>,
    /// Message tags in order, e.g. `v R S S ... K Z`.
    tags: String,
}

async fn read_login<S: AsyncRead + Unpin>(s: &mut S) -> Login {
    let mut login = Login::default();
    loop {
        let m = read_message(s)
            .await
            .unwrap_or_else(|| panic!("connection closed during login: {login:?}"));
        login.tags.push(m.tag as char);
        match m.tag {
            b'v' => {
                let count = usize::try_from(m.i32_at(4)).unwrap();
                let options = m.strings_from(8);
                assert_eq!(options.len(), count, "option count");
                login.negotiated = Some((m.i32_at(0), options));
            }
            b'R' => {
                assert_eq!(m.i32_at(0), 0, "AuthenticationOk, nothing else");
                login.auth_ok = true;
            }
            b'S' => {
                let kv = m.strings_from(0);
                login
                    .parameters
                    .insert(kv[0].clone(), kv.get(1).cloned().unwrap_or_default());
            }
            b'K' => login.backend_key = Some((m.i32_at(0), m.body[4..].to_vec())),
            b'Z' => return login,
            b'E' => panic!("login refused: {:?}", m.fields()),
            b'N' => {}
            other => panic!("unexpected message {:?} during login", other as char),
        }
    }
}

/// Sends a simple Query and returns its rows (text values) up to ReadyForQuery; panics on
/// an ErrorResponse.
async fn simple_query<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, sql: &str) -> Vec<Vec<String>> {
    s.write_all(&query(sql)).await.unwrap();
    s.flush().await.unwrap();
    let mut rows = Vec::new();
    loop {
        let m = read_message(s).await.expect("query reply");
        match m.tag {
            b'D' => rows.push(data_row(&m)),
            b'E' => panic!("{sql}: {:?}", m.fields()),
            b'Z' => return rows,
            _ => {}
        }
    }
}

fn data_row(m: &Message) -> Vec<String> {
    let columns = u16::from_be_bytes([m.body[0], m.body[1]]);
    let mut at = 2;
    let mut values = Vec::new();
    for _ in 0..columns {
        let len = m.i32_at(at);
        at += 4;
        if len < 0 {
            values.push(String::new());
            continue;
        }
        let len = usize::try_from(len).unwrap();
        values.push(String::from_utf8_lossy(&m.body[at..at + len]).into_owned());
        at += len;
    }
    values
}

/// A world's proxy (its default configuration) and alice.
struct Setup {
    world: World,
    h: TestProxy,
    alice: ClientCert,
}

async fn start() -> Setup {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    Setup { world, h, alice }
}

impl Setup {
    /// alice's startup parameters: her own user, database `dev`.
    fn alice(&self) -> Vec<(&str, &str)> {
        vec![
            ("user", self.alice.common_name.as_str()),
            ("database", "dev"),
        ]
    }

    /// What `current_user` says for alice.
    fn alice_user(&self) -> String {
        self.world.iam_user(&self.alice)
    }
}

/// TLS client configuration trusting the proxy's CA, presenting `cert`, offering `alpn`.
fn tls_config(
    h: &TestProxy,
    cert: Option<&ClientCert>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut config = client_tls(&h.ca, cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_handshake(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        STEP,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("TLS handshake finishes")
}

/// Sends `code` and reads the one-byte answer.
async fn negotiate_byte(tcp: &mut TcpStream, code: i32) -> u8 {
    tcp.write_all(&request(code)).await.unwrap();
    let mut answer = [0u8; 1];
    tokio::time::timeout(STEP, tcp.read_exact(&mut answer))
        .await
        .expect("answer to the negotiation request")
        .expect("answer byte");
    answer[0]
}

/// The classic path: SSLRequest, `S`, TLS with alice's certificate.
async fn ssl_request_session(s: &Setup) -> TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(s.h.addr()).await.unwrap();
    assert_eq!(negotiate_byte(&mut tcp, SSL_REQUEST).await, b'S');
    tls_handshake(tcp, tls_config(&s.h, Some(&s.alice), &[]))
        .await
        .expect("TLS after SSLRequest")
}

async fn direct_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_handshake(TcpStream::connect(addr).await.unwrap(), config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_ssl_with_alpn_postgresql_gets_a_working_session() {
    let s = start().await;
    let mut tls = direct_tls(
        s.h.addr(),
        tls_config(&s.h, Some(&s.alice), &[b"postgresql"]),
    )
    .await
    .expect("direct TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup_message(0, &s.alice()))
        .await
        .unwrap();
    let login = read_login(&mut tls).await;
    assert!(login.auth_ok && login.negotiated.is_none(), "{login:?}");
    assert_eq!(
        simple_query(&mut tls, "select current_user").await,
        [[s.alice_user()]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_ssl_without_alpn_postgresql_is_refused() {
    let s = start().await;
    let h = &s.h;

    // No ALPN at all: the handshake completes, then the proxy refuses before reading a
    // StartupMessage, as PostgreSQL 17 does.
    let mut tls = direct_tls(h.addr(), tls_config(h, Some(&s.alice), &[]))
        .await
        .expect("the handshake itself succeeds");
    let m = read_message(&mut tls).await.expect("an ErrorResponse");
    assert_eq!(m.tag, b'E');
    let fields = m.fields();
    assert_eq!(fields[&'C'], "08P01", "{fields:?}");
    assert!(fields[&'M'].contains("ALPN"), "{fields:?}");
    assert!(
        read_message(&mut tls).await.is_none(),
        "then the connection closes"
    );

    // Only some other protocol: no common ALPN protocol, so no handshake.
    let refused = direct_tls(h.addr(), tls_config(h, Some(&s.alice), &[b"http/1.1"])).await;
    assert!(
        refused.is_err(),
        "the handshake fails without ALPN \"postgresql\""
    );

    assert!(
        s.world.emulator.cloudtrail().is_empty(),
        "no login was attempted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn newer_protocol_versions_with_pq_options_are_negotiated_down_to_3_0() {
    let s = start().await;
    let pg_user = s.alice_user();
    // PostgreSQL 18's 3.2, and the greased version and option newer libpq sends to check
    // that servers and proxies negotiate properly.
    for (minor, option) in [
        (2u16, "_pq_.some_future_option"),
        (9999, "_pq_.test_protocol_negotiation"),
    ] {
        let mut tls = ssl_request_session(&s).await;
        let mut params = s.alice();
        params.push((option, "on"));
        tls.write_all(&startup_message(minor, &params))
            .await
            .unwrap();
        let login = read_login(&mut tls).await;
        assert!(login.tags.starts_with("vR"), "3.{minor}: {login:?}");
        assert_eq!(
            login.negotiated,
            Some((PROTOCOL_3_0, vec![option.to_string()])),
            "3.{minor}: the newest version the proxy speaks, and the options it ignored"
        );
        assert!(login.auth_ok);
        let (_, key) = login.backend_key.expect("BackendKeyData");
        assert_eq!(key.len(), 4, "a protocol 3.0 cancel key");
        assert_eq!(
            simple_query(&mut tls, "select current_user").await,
            [[pg_user.clone()]],
            "3.{minor}: the session continues at 3.0"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gssenc_request_then_ssl_request_gets_a_working_session() {
    let s = start().await;
    let mut tcp = TcpStream::connect(s.h.addr()).await.unwrap();
    assert_eq!(negotiate_byte(&mut tcp, GSSENC_REQUEST).await, b'N');
    assert_eq!(negotiate_byte(&mut tcp, SSL_REQUEST).await, b'S');
    let mut tls = tls_handshake(tcp, tls_config(&s.h, Some(&s.alice), &[]))
        .await
        .unwrap();
    tls.write_all(&startup_message(0, &s.alice()))
        .await
        .unwrap();
    assert!(read_login(&mut tls).await.auth_ok);
    assert_eq!(
        simple_query(&mut tls, "select current_user").await,
        [[s.alice_user()]]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_request_after_ssl_request_cancels_a_running_query() {
    let s = start().await;
    let h = &s.h;
    let mut session = ssl_request_session(&s).await;
    session
        .write_all(&startup_message(0, &s.alice()))
        .await
        .unwrap();
    let (pid, key) = read_login(&mut session)
        .await
        .backend_key
        .expect("BackendKeyData");
    session
        .write_all(&query("select pg_sleep(30)"))
        .await
        .unwrap();
    session.flush().await.unwrap();
    wait_for_query(s.world.pg, &s.world.role(&s.alice), "pg_sleep(30)").await;

    // As libpq 17 does: SSLRequest, TLS, then the CancelRequest inside TLS. The cancel
    // connection presents no certificate: the secret key is its authorisation.
    let started = Instant::now();
    let mut cancel = TcpStream::connect(h.addr()).await.unwrap();
    assert_eq!(negotiate_byte(&mut cancel, SSL_REQUEST).await, b'S');
    let mut cancel = tls_handshake(cancel, tls_config(h, None, &[]))
        .await
        .unwrap();
    let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(&key);
    cancel.write_all(&with_length(&body)).await.unwrap();
    cancel.flush().await.unwrap();
    assert!(
        read_message(&mut cancel).await.is_none(),
        "no reply to a CancelRequest, just a close"
    );

    let mut sqlstate = None;
    loop {
        let m = read_message(&mut session).await.expect("query reply");
        match m.tag {
            b'E' => sqlstate = m.fields().get(&'C').cloned(),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(sqlstate.as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.world.standin().cancel_requests(), 1);
}

/// Through the real chain: Redshift (the stand-in) refuses parameters it does not know, so
/// this is where the Redshift driver's startup packet must work.
#[tokio::test(flavor = "multi_thread")]
async fn redshift_jdbc_startup_parameters_get_a_working_session() {
    let s = start().await;
    let pg_user = s.alice_user();
    let mut tls = ssl_request_session(&s).await;
    // What the Redshift JDBC driver 2.x sends, in its order, at protocol 3.0.
    let params = [
        ("user", s.alice.common_name.as_str()),
        ("database", "dev"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "Europe/Berlin"),
        ("application_name", "Redshift JDBC Driver matrix"),
        ("extra_float_digits", "3"),
        ("driver_version", "Redshift JDBC Driver 2.1.0.30"),
        ("os_version", "Linux 6.1.0-28-amd64 amd64"),
        (
            "plugin_name",
            "com.amazon.redshift.plugin.BrowserAzureOAuth2CredentialsProvider",
        ),
        ("client_protocol_version", "2"),
        ("idp_type", "AzureAD"),
        ("provider_name", "corp-idp"),
        ("token_type", "ACCESS_TOKEN"),
        ("identity_namespace", "corp"),
        ("_pq_.compression", "lz4"),
    ];
    tls.write_all(&startup_message(0, &params)).await.unwrap();
    let login = read_login(&mut tls).await;
    // No NegotiateProtocolVersion at 3.0: the driver does not expect one.
    assert!(login.tags.starts_with('R') && login.auth_ok, "{login:?}");
    assert!(login.negotiated.is_none(), "{login:?}");
    assert_eq!(login.parameters["client_encoding"], "UTF8");
    assert_eq!(login.parameters["TimeZone"], "Europe/Berlin");
    assert_eq!(
        login.parameters["application_name"],
        "Redshift JDBC Driver matrix"
    );
    // Redshift's answers pass through: its version and its protocol level.
    assert_eq!(login.parameters["server_version"], "8.0.2");
    assert_eq!(login.parameters["server_protocol_version"], "0");
    // The JDBC driver refuses a BackendKeyData of any other length than 12.
    assert_eq!(
        login.backend_key.as_ref().map(|(_, key)| key.len()),
        Some(4)
    );
    // The settings reached the server; the IdP keys were dropped, not refused.
    let rows = simple_query(
        &mut tls,
        "select current_user, current_setting('DateStyle'), current_setting('extra_float_digits')",
    )
    .await;
    assert_eq!(rows, [[pg_user, "ISO, MDY".into(), "3".into()]]);
    let seen = s
        .world
        .standin()
        .logins()
        .pop()
        .expect("the stand-in's record");
    assert_eq!(seen.param("client_protocol_version"), Some("2"));
    assert_eq!(
        seen.param("plugin_name").map(|p| p.contains("Azure")),
        Some(true)
    );
    assert_eq!(seen.param("idp_type"), None);
}
