//! Tools for the adversarial and load suites: a raw wire client that can send what no
//! well-behaved driver would, and a scripted fake upstream server that misbehaves on
//! purpose.
//!
//! The client side decodes replies with its own few lines of code (not the proxy's
//! parsers), so a test never checks the proxy against itself.

use crate::client::client_tls;
use crate::pki::{ClientCert, TestPki};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A proxy a raw client connects to: its first TCP listener and the CA its certificate
/// chains to.
pub trait ProxyUnderTest {
    fn addr(&self) -> SocketAddr;
    fn ca(&self) -> &Path;
}

impl ProxyUnderTest for crate::world::TestProxy {
    fn addr(&self) -> SocketAddr {
        crate::world::TestProxy::addr(self)
    }
    fn ca(&self) -> &Path {
        &self.ca
    }
}

/// How long any single read of a reply may take before the test calls it a hang.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// `1234.5679`
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
/// `1234.5680`
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;
/// `1234.5678`
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// An 8-byte special request (SSLRequest, GSSENCRequest).
pub fn request(code: i32) -> Vec<u8> {
    let mut out = 8i32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// A StartupMessage with raw parameter bytes (so tests can put NULs where they like):
/// length, `version`, `name\0value\0`..., `\0`.
pub fn startup(version: i32, params: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name);
        body.push(0);
        body.extend_from_slice(value);
        body.push(0);
    }
    body.push(0);
    with_length(&body)
}

/// A StartupMessage of protocol `version` with text parameters.
pub fn startup_text<N: AsRef<str>, V: AsRef<str>>(version: i32, params: &[(N, V)]) -> Vec<u8> {
    let params: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(name, value)| (name.as_ref().as_bytes(), value.as_ref().as_bytes()))
        .collect();
    startup(version, &params)
}

/// `body` prefixed with its length word (which counts itself).
pub fn with_length(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A typed message: `tag`, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&with_length(body));
    out
}

/// A CancelRequest in wire form.
pub fn cancel_request(pid: i32, key: &[u8]) -> Vec<u8> {
    let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(key);
    with_length(&body)
}

/// A decoded ErrorResponse (or NoticeResponse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl WireError {
    pub fn parse(body: &[u8]) -> WireError {
        let mut e = WireError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
        };
        let mut rest = body;
        while let Some((&field, after)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0).unwrap_or(after.len());
            let value = String::from_utf8_lossy(&after[..end]).into_owned();
            match field {
                b'S' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                _ => {}
            }
            rest = after.get(end + 1..).unwrap_or_default();
        }
        e
    }
}

/// What the peer did next.
#[derive(Debug)]
pub enum Reply {
    /// An ErrorResponse.
    Error(WireError),
    /// Another typed message.
    Message { tag: u8, body: Vec<u8> },
    /// The connection ended (EOF or reset) before a whole message arrived. (`S`/`N`
    /// answers to SSLRequest are read with [`read_byte`] instead.)
    Closed,
}

impl Reply {
    /// The ErrorResponse, or a panic describing what came instead.
    pub fn expect_error(self) -> WireError {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an ErrorResponse, got {other:?}"),
        }
    }
}

/// Reads one typed message (or the close) within [`REPLY_TIMEOUT`]. A reset counts as a
/// close: both are what "the connection ended" looks like to a client.
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Reply {
    tokio::time::timeout(REPLY_TIMEOUT, read_reply_inner(r))
        .await
        .expect("the peer neither replied nor closed in time")
}

async fn read_reply_inner<R: AsyncRead + Unpin>(r: &mut R) -> Reply {
    let mut header = [0u8; 5];
    if r.read_exact(&mut header).await.is_err() {
        return Reply::Closed;
    }
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    assert!(
        (4..=1 << 24).contains(&len),
        "implausible message length {len} (tag {:?})",
        header[0] as char
    );
    let mut body = vec![0u8; len as usize - 4];
    if r.read_exact(&mut body).await.is_err() {
        return Reply::Closed;
    }
    match header[0] {
        b'E' => Reply::Error(WireError::parse(&body)),
        tag => Reply::Message { tag, body },
    }
}

/// Reads replies until the stream ends, returning them (bounded by [`REPLY_TIMEOUT`] each).
pub async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<Reply> {
    let mut out = Vec::new();
    loop {
        match read_reply(r).await {
            Reply::Closed => return out,
            reply => out.push(reply),
        }
        assert!(out.len() < 10_000, "endless replies");
    }
}

/// Reads one byte (the answer to SSLRequest/GSSENCRequest); `None` on close.
pub async fn read_byte<R: AsyncRead + Unpin>(r: &mut R) -> Option<u8> {
    let mut b = [0u8; 1];
    match tokio::time::timeout(REPLY_TIMEOUT, r.read_exact(&mut b))
        .await
        .expect("no answer in time")
    {
        Ok(_) => Some(b[0]),
        Err(_) => None,
    }
}

/// Whether the peer closes the connection (EOF or reset) within [`REPLY_TIMEOUT`],
/// discarding anything it sends first.
pub async fn closes<R: AsyncRead + Unpin>(r: &mut R) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(REPLY_TIMEOUT, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A TCP connection to the proxy.
pub async fn tcp(h: &impl ProxyUnderTest) -> TcpStream {
    let s = TcpStream::connect(h.addr())
        .await
        .expect("connect to proxy");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// What a client over a connection limit reads: the proxy answers its SSLRequest with an
/// ErrorResponse instead of `S`, before any handshake. `None` if it answered `S`.
pub async fn refused_at_ssl_request(addr: std::net::SocketAddr) -> Option<WireError> {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(&request(SSL_REQUEST_CODE)).await.expect("send");
    let mut first = [0u8; 1];
    tokio::time::timeout(REPLY_TIMEOUT, s.read_exact(&mut first))
        .await
        .expect("an answer in time")
        .expect("an answer");
    if first[0] == b'S' {
        return None;
    }
    assert_eq!(first[0], b'E', "expected S or an ErrorResponse");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("length");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize - 4];
    s.read_exact(&mut body).await.expect("body");
    Some(WireError::parse(&body))
}

/// A client that asks for TLS, sends a complete ClientHello and then says nothing more:
/// the proxy has started its handshake (and holds a handshake slot) until its handshake
/// timeout. The returned socket keeps the connection open.
pub async fn stall_after_client_hello(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(&request(SSL_REQUEST_CODE)).await.expect("send");
    assert_eq!(read_byte(&mut s).await, Some(b'S'));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).expect("ClientHello");
    s.write_all(&hello).await.expect("send ClientHello");
    s
}

/// A plaintext TCP connection to the proxy from the loopback address `source` (any of
/// 127.0.0.0/8 on Linux): several clients, as the proxy sees them, from one machine.
pub async fn tcp_from(h: &impl ProxyUnderTest, source: std::net::Ipv4Addr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let s = socket.connect(h.addr()).await.expect("connect to proxy");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// How a raw TLS client reaches TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStart {
    /// SSLRequest, `S`, handshake.
    SslRequest,
    /// Handshake right away (PostgreSQL 17 `sslnegotiation=direct`).
    Direct,
}

/// A TLS connection to the proxy presenting `cert` and offering `alpn`.
pub async fn tls(
    h: &impl ProxyUnderTest,
    cert: Option<&ClientCert>,
    alpn: &[&[u8]],
    start: TlsStart,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = client_tls(h.ca(), cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut s = tcp(h).await;
    if start == TlsStart::SslRequest {
        s.write_all(&request(SSL_REQUEST_CODE)).await?;
        let answer = read_byte(&mut s).await;
        if answer != Some(b'S') {
            return Err(std::io::Error::other(format!(
                "SSLRequest answered with {answer:?}"
            )));
        }
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from("localhost").expect("name"), s)
        .await
}

/// Logs in as `user` on `database` over TLS with `cert` by hand and returns the stream
/// after ReadyForQuery. Panics (with the reply) if the login does not succeed.
pub async fn raw_login(
    h: &impl ProxyUnderTest,
    cert: &ClientCert,
    user: &str,
    database: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = tls(h, Some(cert), &[], TlsStart::SslRequest)
        .await
        .expect("TLS to the proxy");
    s.write_all(&startup(
        PROTOCOL_3_0,
        &[
            (b"user", user.as_bytes()),
            (b"database", database.as_bytes()),
        ],
    ))
    .await
    .expect("send startup");
    loop {
        match read_reply(&mut s).await {
            Reply::Message { tag: b'Z', .. } => return s,
            Reply::Message { .. } => {}
            other => panic!("login failed: {other:?}"),
        }
    }
}

/// Sends the StartupMessage `startup` (built by hand: any parameters) over TLS with `cert`
/// and reads the login's outcome: `None` once ReadyForQuery arrives, else the first
/// ErrorResponse's SQLSTATE and message. Panics if the connection ends without either.
pub async fn raw_login_outcome(
    h: &impl ProxyUnderTest,
    cert: &ClientCert,
    startup: &[u8],
) -> Option<(String, String)> {
    let mut s = tls(h, Some(cert), &[], TlsStart::SslRequest)
        .await
        .expect("TLS to the proxy");
    s.write_all(startup).await.expect("send startup");
    loop {
        match read_reply(&mut s).await {
            Reply::Message { tag: b'Z', .. } => return None,
            Reply::Error(e) => return Some((e.code, e.message)),
            Reply::Message { .. } => {}
            Reply::Closed => panic!("the login ended without an answer"),
        }
    }
}

/// What a [`FakeUpstream`] does with one incoming connection.
#[derive(Debug, Clone)]
pub enum UpstreamScript {
    /// Relays the raw TCP bytes to the real upstream (a healthy upstream).
    Forward,
    /// Answers SSLRequest with `N`.
    RefuseTls,
    /// Answers SSLRequest with an `E` message carrying this text.
    ErrorBeforeTls(String),
    /// Answers `S` and, in the same segment, bytes that pretend to be a server message.
    BytesAfterS,
    /// TLS with the given certificate, then the given behaviour.
    Tls(FakeCert, AfterTls),
}

/// The certificate a TLS-speaking fake upstream presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeCert {
    /// Trusted CA, right name (`localhost`).
    Good,
    /// Trusted CA, certificate for `db.other.example`.
    OtherName,
    /// Right name, issued by a CA the proxy does not trust.
    UntrustedCa,
}

/// What a TLS fake upstream does after the handshake. A CancelRequest is always counted
/// (see [`FakeUpstream::cancels`]) and the connection closed, whatever the script.
#[derive(Debug, Clone)]
pub enum AfterTls {
    /// Reads the StartupMessage and closes (upstream dies during login).
    CloseAfterStartup,
    /// Answers the StartupMessage with an ErrorResponse carrying no SQLSTATE.
    ErrorWithoutSqlstate(String),
    /// Offers SCRAM-SHA-256, answers the client-first-message with a server-first-message
    /// whose nonce has this many extra bytes, and the client-final-message with a server
    /// signature that does not verify.
    OversizedScramNonce(usize),
    /// AuthenticationOk, BackendKeyData(pid, key), ReadyForQuery; then swallows input until
    /// the client leaves.
    LoginOk { pid: i32, key: [u8; 4] },
}

/// A scripted upstream on 127.0.0.1: connection *n* follows `scripts[n]`, later ones follow
/// the default script. [`UpstreamScript::Forward`] relays to a real upstream (a Redshift
/// stand-in), so a proxy pointed at the fake still logs in with real credentials.
pub struct FakeUpstream {
    pub port: u16,
    /// CA bundle for the proxy's target: the fake server's CA and the real upstream's CA
    /// (so [`UpstreamScript::Forward`] passes verify-full).
    pub ca_bundle: PathBuf,
    connections: Arc<AtomicUsize>,
    cancels: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _pki_dir: tempfile::TempDir,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct FakeTls {
    good: Arc<rustls::ServerConfig>,
    other_name: Arc<rustls::ServerConfig>,
    untrusted: Arc<rustls::ServerConfig>,
}

impl FakeUpstream {
    /// Starts the server. [`UpstreamScript::Forward`] relays to `forward`, whose
    /// certificate chains to `forward_ca`; the others present certificates for `localhost`.
    pub async fn start(
        forward: SocketAddr,
        forward_ca: &Path,
        scripts: Vec<UpstreamScript>,
        default: UpstreamScript,
    ) -> FakeUpstream {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(dir.path()).expect("fake upstream PKI");
        let untrusted = pki
            .new_root_ca("Untrusted Upstream CA", Default::default())
            .expect("untrusted CA");
        let config = |cert: crate::pki::ServerCert| {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&cert.chain_pem)
                    .expect("chain")
                    .collect::<Result<_, _>>()
                    .expect("chain");
            let key = PrivateKeyDer::from_pem_file(&cert.key_pem).expect("key");
            Arc::new(
                rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .expect("server config"),
            )
        };
        let tls = Arc::new(FakeTls {
            good: config(pki.server_cert(&["localhost", "127.0.0.1"]).unwrap()),
            other_name: config(pki.server_cert(&["db.other.example"]).unwrap()),
            untrusted: config(untrusted.server_cert(&["localhost", "127.0.0.1"]).unwrap()),
        });
        let ca_bundle = pki
            .bundle("upstream", &[pki.ca_cert_path(), forward_ca])
            .expect("bundle");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let cancels = Arc::new(AtomicUsize::new(0));
        let scripts = Arc::new(Mutex::new(std::collections::VecDeque::from(scripts)));
        let task = tokio::spawn({
            let connections = connections.clone();
            let cancels = cancels.clone();
            async move {
                while let Ok((sock, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let script = scripts
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or_else(|| default.clone());
                    let tls = tls.clone();
                    let cancels = cancels.clone();
                    tokio::spawn(async move {
                        let _ = serve(sock, script, &tls, forward, &cancels).await;
                    });
                }
            }
        });
        FakeUpstream {
            port,
            ca_bundle,
            connections,
            cancels,
            task,
            _pki_dir: dir,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// CancelRequests received so far.
    pub fn cancels(&self) -> usize {
        self.cancels.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut sock: TcpStream,
    script: UpstreamScript,
    tls: &FakeTls,
    forward: SocketAddr,
    cancels: &AtomicUsize,
) -> std::io::Result<()> {
    if let UpstreamScript::Forward = script {
        let mut upstream = TcpStream::connect(forward).await?;
        tokio::io::copy_bidirectional(&mut sock, &mut upstream).await?;
        return Ok(());
    }
    let mut ssl = [0u8; 8];
    sock.read_exact(&mut ssl).await?;
    let (cert, after) = match script {
        UpstreamScript::Forward => unreachable!("handled above"),
        UpstreamScript::RefuseTls => return sock.write_all(b"N").await,
        UpstreamScript::ErrorBeforeTls(text) => {
            let mut body = b"SFATAL\0C28000\0M".to_vec();
            body.extend_from_slice(text.as_bytes());
            body.extend_from_slice(b"\0\0");
            sock.write_all(&message(b'E', &body)).await?;
            return sock.shutdown().await;
        }
        UpstreamScript::BytesAfterS => {
            let mut out = b"S".to_vec();
            out.extend_from_slice(&message(b'R', &0i32.to_be_bytes()));
            sock.write_all(&out).await?;
            // Keep the socket open long enough for the proxy to see the extra bytes.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return Ok(());
        }
        UpstreamScript::Tls(cert, after) => (cert, after),
    };
    sock.write_all(b"S").await?;
    let config = match cert {
        FakeCert::Good => tls.good.clone(),
        FakeCert::OtherName => tls.other_name.clone(),
        FakeCert::UntrustedCa => tls.untrusted.clone(),
    };
    let mut s = tokio_rustls::TlsAcceptor::from(config).accept(sock).await?;
    let first = read_startup_packet(&mut s).await?;
    if first.get(..4) == Some(&CANCEL_REQUEST_CODE.to_be_bytes()[..]) {
        cancels.fetch_add(1, Ordering::SeqCst);
        return s.shutdown().await;
    }
    match after {
        AfterTls::CloseAfterStartup => s.shutdown().await,
        AfterTls::ErrorWithoutSqlstate(text) => {
            let mut body = b"SFATAL\0M".to_vec();
            body.extend_from_slice(text.as_bytes());
            body.extend_from_slice(b"\0\0");
            s.write_all(&message(b'E', &body)).await?;
            s.shutdown().await
        }
        AfterTls::OversizedScramNonce(len) => {
            let mut body = 10i32.to_be_bytes().to_vec();
            body.extend_from_slice(b"SCRAM-SHA-256\0\0");
            s.write_all(&message(b'R', &body)).await?;
            // client-first-message: p tag, length, mechanism, data.
            let mut header = [0u8; 5];
            s.read_exact(&mut header).await?;
            let len_word = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut rest = vec![0u8; (len_word.max(4) - 4) as usize];
            s.read_exact(&mut rest).await?;
            let client_first = String::from_utf8_lossy(&rest);
            let client_nonce = client_first
                .split(",r=")
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches('\0')
                .to_string();
            let nonce = format!("{client_nonce}{}", "x".repeat(len));
            let mut body = 11i32.to_be_bytes().to_vec();
            body.extend_from_slice(format!("r={nonce},s=c2FsdA==,i=4096").as_bytes());
            s.write_all(&message(b'R', &body)).await?;
            // client-final-message, answered with a server signature that cannot verify.
            s.read_exact(&mut header).await?;
            let len_word = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut rest = vec![0u8; (len_word.max(4) - 4) as usize];
            s.read_exact(&mut rest).await?;
            let mut body = 12i32.to_be_bytes().to_vec();
            body.extend_from_slice(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
            s.write_all(&message(b'R', &body)).await?;
            let mut sink = [0u8; 1024];
            while s.read(&mut sink).await? > 0 {}
            Ok(())
        }
        AfterTls::LoginOk { pid, key } => {
            let mut out = message(b'R', &0i32.to_be_bytes());
            let mut key_body = pid.to_be_bytes().to_vec();
            key_body.extend_from_slice(&key);
            out.extend_from_slice(&message(b'K', &key_body));
            out.extend_from_slice(&message(b'Z', b"I"));
            s.write_all(&out).await?;
            let mut sink = [0u8; 1024];
            while s.read(&mut sink).await? > 0 {}
            Ok(())
        }
    }
}

/// Reads one length-prefixed startup packet and returns what follows the length word.
async fn read_startup_packet<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = i32::from_be_bytes(len);
    if !(8..=10_000).contains(&len) {
        return Err(std::io::Error::other("bad startup length"));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).await?;
    Ok(body)
}
