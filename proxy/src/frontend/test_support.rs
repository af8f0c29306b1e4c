//! Test helpers for the client side: a per-test PKI generated with rcgen, a loopback
//! listener running [`negotiate`], and hand-driven clients (raw bytes and tokio-rustls).

use crate::frontend::{negotiate, FrontendError, FrontendSettings, Negotiated};
use crate::net::framing::{read_message, Message};
use crate::net::messages::ErrorResponse;
use crate::net::messages::{Decode, Encode, StartupMessage, StartupPacket};
use crate::refusal::frontend_refusal;
use proxy_config::ListenerConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream as ClientTlsStream;
use tokio_rustls::TlsConnector;

/// Serial number of the client certificate the test CRL revokes.
const REVOKED_SERIAL: u64 = 0x0bad;

/// Which client certificate a test presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCert {
    None,
    Valid,
    Expired,
    NotYetValid,
    Revoked,
    OtherCa,
    ServerAuthOnly,
}

/// A server CA and server certificate, a client CA with a CRL, and an unrelated CA, all
/// written to a temporary directory as a listener's files.
pub struct TestPki {
    /// Keeps the files alive for the test.
    _dir: tempfile::TempDir,
    pub listener: ListenerConfig,
    server_ca: CertificateDer<'static>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
    other_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = ca("Test Server CA");
        let client_ca = ca("Test Client CA");
        let other_ca = ca("Unrelated CA");

        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = sp.signed_by(&server_key, &*server_ca).unwrap();

        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - days(1),
            next_update: now + days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(REVOKED_SERIAL),
                revocation_time: now - days(1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&*client_ca)
        .unwrap();

        let write = |name: &str, pem: String| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        let listener = ListenerConfig {
            name: Some("test".into()),
            bind: "127.0.0.1:0".parse().unwrap(),
            target: None,
            tls_cert: Some(write("server.pem", server_cert.pem() + &server_ca.pem())),
            tls_key: Some(write("server.key", server_key.serialize_pem())),
            client_ca: Some(write("client-ca.pem", client_ca.pem())),
            client_crls: vec![write("client-ca.crl", crl.pem().unwrap())],
            login_timeout: Duration::from_secs(10),
            allow_options: false,
            max_connections: None,
            certificates: Vec::new(),
            strict_sni: false,
            client_auth: Default::default(),
            allow_plaintext: false,
            users: Vec::new(),
            trust_user: None,
            unix_socket_mode: None,
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
        };
        TestPki {
            _dir: dir,
            listener,
            server_ca: server_ca.der().clone(),
            client_ca,
            other_ca,
        }
    }

    pub fn settings(&self) -> FrontendSettings {
        FrontendSettings::from_listener(&self.listener).unwrap()
    }

    /// A client certificate chain and key of the given kind (CN `alice`).
    pub fn client_cert(
        &self,
        kind: ClientCert,
    ) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::new(vec!["alice.example".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "alice");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now - days(1);
        p.not_after = now + days(30);
        p.serial_number = Some(SerialNumber::from(0x1234u64));
        let mut issuer = &self.client_ca;
        match kind {
            ClientCert::None => return None,
            ClientCert::Valid => {}
            ClientCert::Expired => {
                p.not_before = now - days(60);
                p.not_after = now - days(30);
            }
            ClientCert::NotYetValid => {
                p.not_before = now + days(30);
                p.not_after = now + days(60);
            }
            ClientCert::Revoked => p.serial_number = Some(SerialNumber::from(REVOKED_SERIAL)),
            ClientCert::OtherCa => issuer = &self.other_ca,
            ClientCert::ServerAuthOnly => {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
            }
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &**issuer).unwrap();
        Some((
            vec![cert.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        ))
    }

    /// A TLS client trusting the test server CA.
    pub fn connector(
        &self,
        cert: ClientCert,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match self.client_cert(cert) {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

pub const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// Accepts one connection on a loopback port and runs [`negotiate`] on it; a failure is
/// reported to the client as a session reports it (the error comes back without its
/// stream).
pub async fn serve_one(
    settings: FrontendSettings,
) -> (SocketAddr, JoinHandle<Result<Negotiated, FrontendError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut result = negotiate(tcp, &settings).await;
        if let Err(e) = &mut result {
            if let (Some(stream), Some(response)) =
                (e.stream.take(), frontend_refusal(&e.kind).response)
            {
                crate::session::report(stream, &response).await;
            }
        }
        result
    });
    (addr, task)
}

/// The SQLSTATE a client is told for `error`, if it is told at all.
pub fn told(error: &FrontendError) -> Option<String> {
    frontend_refusal(&error.kind).sqlstate().map(str::to_string)
}

/// The server's outcome, bounded so a stuck negotiation fails the test instead of hanging.
pub async fn outcome(
    task: JoinHandle<Result<Negotiated, FrontendError>>,
) -> Result<Negotiated, FrontendError> {
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("negotiate did not finish")
        .expect("negotiate panicked")
}

/// SSLRequest on `tcp`, expects `S`, then the TLS handshake.
pub async fn start_tls(
    mut tcp: TcpStream,
    connector: &TlsConnector,
) -> std::io::Result<ClientTlsStream<TcpStream>> {
    tcp.write_all(&StartupPacket::SslRequest.encode()).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    assert_eq!(answer[0], b'S', "server must accept the SSLRequest");
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub fn startup(minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    StartupMessage {
        major: 3,
        minor,
        params: params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
    .encode()
    .to_vec()
}

/// Reads one typed message, bounded in time.
pub async fn read_msg<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Message {
    tokio::time::timeout(Duration::from_secs(20), read_message(r, 64 * 1024))
        .await
        .expect("no message from the server")
        .expect("readable message")
}

/// Reads an ErrorResponse and returns it.
pub async fn read_error<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> ErrorResponse {
    let m = read_msg(r).await;
    assert_eq!(
        m.tag, b'E',
        "expected an ErrorResponse, got {:?}",
        m.tag as char
    );
    ErrorResponse::decode(&m.body).expect("well-formed ErrorResponse")
}

/// Asserts that the server closes the connection without sending anything.
pub async fn expect_eof<R: tokio::io::AsyncRead + Unpin>(r: &mut R) {
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(20), r.read(&mut buf))
        .await
        .expect("server did not close")
        .unwrap_or(0);
    assert_eq!(n, 0, "expected no reply, got byte {:?}", buf[0] as char);
}
