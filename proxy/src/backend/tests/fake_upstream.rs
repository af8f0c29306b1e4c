//! The fake upstream the backend tests script: a test PKI and endpoint, the server's side
//! of the wire protocol (TLS with an rcgen certificate for `localhost`, the startup
//! packet, authentication requests, a SCRAM server) and the client's side of one login.

use crate::backend::*;
use crate::net::framing::{read_message, Message};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream as ServerTls;

pub(super) const PASSWORD: &str = "IAM:pw-Do-Not-Leak-7f3a";

// ---------------------------------------------------------------------------------------
// Test PKI and endpoint
// ---------------------------------------------------------------------------------------

/// A CA, a server certificate it issued for `names`, and the CA as a PEM file.
pub(in crate::backend) struct Pki {
    pub(in crate::backend) ca_file: tempfile::NamedTempFile,
    pub(in crate::backend) server: Arc<rustls::ServerConfig>,
    pub(super) leaf_der: Vec<u8>,
}

pub(in crate::backend) fn pki_for(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A distinct name per CA, so that "another CA" really is another issuer.
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Fake Upstream CA {n}"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut leaf_params = rcgen::CertificateParams::new(names).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake upstream");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca_cert.pem().as_bytes()).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_file,
        server: Arc::new(server),
        leaf_der: leaf.der().to_vec(),
    }
}

pub(in crate::backend) fn target(
    host: &str,
    port: u16,
    ca: &std::path::Path,
) -> proxy_config::TargetConfig {
    proxy_config::TargetConfig {
        // The certificate is verified for `host` while we dial loopback.
        dial: Some(format!("127.0.0.1:{port}")),
        ca_bundle: Some(ca.to_path_buf()),
        connect_timeout: Duration::from_secs(5),
        login_timeout: Duration::from_secs(10),
        credential_duration: Duration::from_secs(900),
        ..proxy_config::TargetConfig::new("test", proxy_config::TargetKind::Provisioned, host)
    }
}

pub(in crate::backend) fn endpoint(pki: &Pki, port: u16) -> UpstreamEndpoint {
    UpstreamEndpoint::from_config(&target("localhost", port, pki.ca_file.path())).unwrap()
}

pub(in crate::backend) fn password() -> SecretString {
    SecretString::from(PASSWORD)
}

pub(in crate::backend) fn request<'a>(
    pw: &'a SecretString,
    params: &'a [(String, String)],
) -> LoginRequest<'a> {
    LoginRequest {
        user: "IAM:alice",
        password: pw,
        database: "dev",
        params,
    }
}

// ---------------------------------------------------------------------------------------
// The fake server's side of the protocol
// ---------------------------------------------------------------------------------------

/// Reads the SSLRequest and checks it is the well-known packet.
async fn expect_ssl_request(tcp: &mut TcpStream) {
    let mut req = [0u8; 8];
    tcp.read_exact(&mut req).await.unwrap();
    assert_eq!(req, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "SSLRequest");
}

/// SSLRequest, `S`, TLS handshake.
pub(in crate::backend) async fn accept_tls(
    mut tcp: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
) -> ServerTls<TcpStream> {
    expect_ssl_request(&mut tcp).await;
    tcp.write_all(b"S").await.unwrap();
    tokio_rustls::TlsAcceptor::from(cfg)
        .accept(tcp)
        .await
        .unwrap()
}

/// Reads the StartupMessage and returns its protocol version and parameters.
pub(in crate::backend) async fn read_startup(
    s: &mut ServerTls<TcpStream>,
) -> (i32, Vec<(String, String)>) {
    let len = s.read_i32().await.unwrap() as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.unwrap();
    let version = i32::from_be_bytes(body[..4].try_into().unwrap());
    let mut parts = body[4..].split(|&b| b == 0);
    let mut params = Vec::new();
    loop {
        let name = parts.next().unwrap();
        if name.is_empty() {
            break;
        }
        let value = parts.next().unwrap();
        params.push((
            String::from_utf8(name.to_vec()).unwrap(),
            String::from_utf8(value.to_vec()).unwrap(),
        ));
    }
    (version, params)
}

pub(in crate::backend) use crate::net::framing::message as msg;

pub(in crate::backend) fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(rest);
    msg(b'R', &body)
}

pub(in crate::backend) fn error_response(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in fields {
        body.push(*t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    msg(b'E', &body)
}

pub(in crate::backend) async fn read_client(s: &mut ServerTls<TcpStream>) -> Message {
    read_message(s, 1 << 16).await.unwrap()
}

/// The usual tail of a successful login: AuthenticationOk, ParameterStatus,
/// BackendKeyData, ReadyForQuery.
pub(in crate::backend) fn ok_and_ready() -> Vec<u8> {
    [
        auth(0, b""),
        msg(b'S', b"server_version\x008.0.2\0"),
        msg(b'K', &[0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef]),
        msg(b'Z', b"I"),
    ]
    .concat()
}

/// A fake upstream waiting on loopback for one connection, and the task playing its part.
pub(super) struct Upstream {
    pub(super) port: u16,
    pub(super) server: JoinHandle<()>,
}

/// Accepts one connection on loopback and runs `script` on it.
async fn fake_server<F, Fut>(script: F) -> Upstream
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        script(tcp).await;
    });
    Upstream { port, server }
}

/// Reads the client's SSLRequest, then runs `script` on the still unencrypted connection.
pub(super) async fn before_tls<F, Fut>(script: F) -> Upstream
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    fake_server(|mut tcp| async move {
        expect_ssl_request(&mut tcp).await;
        script(tcp).await;
    })
    .await
}

/// Completes TLS with `pki`'s certificate, then runs `script`.
pub(super) async fn after_tls<F, Fut>(pki: &Pki, script: F) -> Upstream
where
    F: FnOnce(ServerTls<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let cfg = pki.server.clone();
    fake_server(move |tcp| async move { script(accept_tls(tcp, cfg).await).await }).await
}

/// Completes TLS and reads the startup packet, then runs `script`: the login's exchange.
pub(super) async fn after_startup<F, Fut>(pki: &Pki, script: F) -> Upstream
where
    F: FnOnce(ServerTls<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    after_tls(pki, |mut s| async move {
        read_startup(&mut s).await;
        script(s).await;
    })
    .await
}

/// Answers `S` to the SSLRequest and expects the client to abort the TLS handshake.
pub(super) async fn handshake_aborted_by_client(pki: &Pki) -> Upstream {
    let cfg = pki.server.clone();
    before_tls(|mut tcp| async move {
        tcp.write_all(b"S").await.unwrap();
        assert!(tokio_rustls::TlsAcceptor::from(cfg)
            .accept(tcp)
            .await
            .is_err());
    })
    .await
}

/// Answers `N` to the SSLRequest: the client must not go on in plaintext.
pub(super) async fn decline_tls(mut tcp: TcpStream) {
    tcp.write_all(b"N").await.unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "client sent {rest:?} in plaintext");
}

/// Keeps the connection open until the client closes it.
pub(super) async fn until_client_leaves(mut s: ServerTls<TcpStream>) {
    let _ = s.read_u8().await;
}

/// Sends `request` and returns the client's answer.
pub(super) async fn exchange(s: &mut ServerTls<TcpStream>, request: &[u8]) -> Message {
    s.write_all(request).await.unwrap();
    read_client(s).await
}

/// Ends a login the client answered: AuthenticationOk up to ReadyForQuery, then the session
/// stays open until the client leaves.
pub(super) async fn welcome(mut s: ServerTls<TcpStream>) {
    s.write_all(&ok_and_ready()).await.unwrap();
    until_client_leaves(s).await;
}

/// AuthenticationRedshiftDigest: the algorithm, then the salt and the server nonce, each
/// after its length.
pub(super) fn digest_request(algorithm: i32, salt: &[u8], server_nonce: &[u8]) -> Vec<u8> {
    let mut rest = algorithm.to_be_bytes().to_vec();
    for part in [salt, server_nonce] {
        rest.extend_from_slice(&(part.len() as i32).to_be_bytes());
        rest.extend_from_slice(part);
    }
    auth(13, &rest)
}

// ---------------------------------------------------------------------------------------
// The client's side: one login, then the server's verdict
// ---------------------------------------------------------------------------------------

/// A test PKI whose server certificate is for `localhost`, the name the client expects.
pub(super) fn localhost() -> Pki {
    pki_for(&["localhost"])
}

/// Logs in as alice with `params` through `ep`, closes a session it got (so that a script
/// waiting for the client to leave ends), and waits for the server: a failed assertion in
/// its script fails the test.
pub(super) async fn log_in(
    ep: &UpstreamEndpoint,
    params: &[(String, String)],
    server: JoinHandle<()>,
) -> Result<UpstreamSession, UpstreamError> {
    let pw = password();
    let mut result = connect_and_login(ep, &request(&pw, params)).await;
    if let Ok(session) = &mut result {
        let _ = session.stream.shutdown().await;
    }
    server.await.unwrap();
    result
}

/// Logs in as alice, with no further parameters, to `upstream`.
pub(super) async fn login_to(
    pki: &Pki,
    upstream: Upstream,
) -> Result<UpstreamSession, UpstreamError> {
    log_in(&endpoint(pki, upstream.port), &[], upstream.server).await
}

/// Logs in to an upstream that plays `script` once TLS is up and the startup packet read.
pub(super) async fn login_after_startup<F, Fut>(
    pki: &Pki,
    script: F,
) -> Result<UpstreamSession, UpstreamError>
where
    F: FnOnce(ServerTls<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    login_to(pki, after_startup(pki, script).await).await
}

/// Sends a cancel for `pid` with `key` to `upstream` and waits for the server.
pub(super) async fn cancel_to(
    pki: &Pki,
    upstream: Upstream,
    pid: i32,
    key: &[u8],
) -> Result<(), UpstreamError> {
    let key = BackendKey {
        pid,
        key: key.to_vec(),
    };
    let result = send_cancel(&endpoint(pki, upstream.port), &key).await;
    upstream.server.await.unwrap();
    result
}

// ---------------------------------------------------------------------------------------
// SCRAM (server side implemented here from RFC 5802 / RFC 5929)
// ---------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802 `Hi`).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
}

fn attr<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split(',')
        .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {message}"))
}

/// Plays a SCRAM server offering `mechanisms`. Returns the mechanism and the decoded
/// channel-binding input the client sent. When `forge_signature` is set, the server
/// sends a wrong server signature (followed by AuthenticationOk regardless).
pub(super) async fn scram_server(
    s: &mut ServerTls<TcpStream>,
    mechanisms: &[&str],
    forge_signature: bool,
) -> (String, Vec<u8>) {
    let mut list = Vec::new();
    for m in mechanisms {
        list.extend_from_slice(m.as_bytes());
        list.push(0);
    }
    list.push(0);
    let initial = exchange(s, &auth(10, &list)).await;
    assert_eq!(initial.tag, b'p');
    let nul = initial.body.iter().position(|&b| b == 0).unwrap();
    let mechanism = String::from_utf8(initial.body[..nul].to_vec()).unwrap();
    let len = i32::from_be_bytes(initial.body[nul + 1..nul + 5].try_into().unwrap()) as usize;
    let client_first = std::str::from_utf8(&initial.body[nul + 5..])
        .unwrap()
        .to_string();
    assert_eq!(client_first.len(), len);
    // gs2-header is "<flag>,<authzid>," then client-first-message-bare.
    let bare_at = client_first.match_indices(',').nth(1).unwrap().0 + 1;
    let client_first_bare = &client_first[bare_at..];
    let client_nonce = attr(client_first_bare, "r");

    let salt = b"pepper-and-salt!";
    let iterations = 4096;
    let server_first = format!(
        "r={client_nonce}SRVNONCE,s={},i={iterations}",
        B64.encode(salt)
    );
    let resp = exchange(s, &auth(11, server_first.as_bytes())).await;
    assert_eq!(resp.tag, b'p');
    let client_final = std::str::from_utf8(&resp.body).unwrap().to_string();
    let cbind = B64.decode(attr(&client_final, "c")).unwrap();
    let proof = B64.decode(attr(&client_final, "p")).unwrap();
    let without_proof = &client_final[..client_final.rfind(",p=").unwrap()];
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");

    let salted = hi(PASSWORD.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let client_signature = hmac(&stored_key, auth_message.as_bytes());
    let recovered: Vec<u8> = proof
        .iter()
        .zip(client_signature)
        .map(|(p, s)| p ^ s)
        .collect();
    assert_eq!(
        Sha256::digest(&recovered)[..],
        stored_key[..],
        "client proof must verify"
    );
    let server_signature = if forge_signature {
        [0u8; 32]
    } else {
        hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes())
    };
    let server_final = format!("v={}", B64.encode(server_signature));
    let reply = [auth(12, server_final.as_bytes()), ok_and_ready()].concat();
    s.write_all(&reply).await.unwrap();
    (mechanism, cbind)
}
