//! Client-facing TLS: the proxy's server certificate and mutual TLS with *deferred*
//! client-certificate verification.
//!
//! The handshake asks for a client certificate (sending the CA names) but never fails
//! because of one: [`DeferredClientVerifier`] accepts any chain at handshake time while still
//! making the client prove possession of the key (signature checks are delegated to
//! rustls's `WebPkiClientVerifier`). Once the handshake is done, [`ClientTls::verify_peer`]
//! checks the chain with that same verifier, so the client is told *why* it was refused with
//! an ErrorResponse (SQLSTATE 28000) instead of an opaque TLS alert, and a CancelRequest
//! sent inside TLS works without any certificate.

use crate::frontend::sni::{covered_by, SniCertificates, SniEntry};
use proxy_config::ListenerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::TrustAnchor;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// ALPN protocol name PostgreSQL 17 uses; required for direct TLS connections.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The listener's TLS setup could not be built. Each variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("no server certificate configured (tls_cert and tls_key)")]
    NoServerCertificate,
    #[error("cannot read {what} from {}: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} contains no {what}", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error("client CA certificate in {} is not usable: {source}", path.display())]
    BadClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("client certificate verifier (CAs {}, CRLs {crls:?}) cannot be built: {source}", client_ca.display())]
    Verifier {
        client_ca: PathBuf,
        crls: Vec<PathBuf>,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("server certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    CertifiedKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("server certificate {} cannot be parsed: {reason}", cert.display())]
    BadServerCert { cert: PathBuf, reason: String },
    #[error(
        "server certificate {} does not cover server name {name:?} (its DNS names: {sans:?}); \
         issue it with that name as a subject alternative name, or remove the name",
        cert.display()
    )]
    NameNotCovered {
        cert: PathBuf,
        name: String,
        sans: Vec<String>,
    },
    #[error("TLS server configuration cannot be built: {0}")]
    ServerConfig(#[source] rustls::Error),
}

/// Why a client certificate was not accepted. Each maps to a clear message for the client
/// (SQLSTATE 28000) and for the operator log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    #[error("a client certificate is required")]
    Missing,
    #[error("the client certificate has expired")]
    Expired,
    #[error("the client certificate is not yet valid")]
    NotYetValid,
    #[error("the client certificate has been revoked")]
    Revoked,
    #[error("the client certificate's revocation status is unknown (no CRL from its issuer)")]
    RevocationStatusUnknown,
    /// The CRL of the certificate's issuer is past its nextUpdate: revocation cannot be
    /// judged, so the proxy fails closed.
    #[error("the certificate revocation list of the client certificate's issuer has expired")]
    RevocationListExpired,
    #[error("the client certificate was not issued by a trusted certificate authority")]
    UnknownIssuer,
    #[error("the client certificate is not valid for client authentication (extended key usage)")]
    WrongUsage,
    #[error("the client certificate is malformed")]
    BadEncoding,
    #[error("the client certificate has an invalid or unsupported signature")]
    BadSignature,
    /// Anything else the verifier reported; the text is for the operator log.
    #[error("the client certificate was rejected: {0}")]
    Other(String),
}

impl ClientCertError {
    // rustls still produces the deprecated context-free variants in some paths.
    #[allow(deprecated)]
    fn from_rustls(e: rustls::Error) -> Self {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::Expired | C::ExpiredContext { .. } => Self::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Self::NotYetValid,
                C::Revoked => Self::Revoked,
                C::UnknownRevocationStatus => Self::RevocationStatusUnknown,
                C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
                    Self::RevocationListExpired
                }
                C::UnknownIssuer => Self::UnknownIssuer,
                C::InvalidPurpose | C::InvalidPurposeContext { .. } => Self::WrongUsage,
                C::BadEncoding => Self::BadEncoding,
                C::BadSignature
                | C::UnsupportedSignatureAlgorithm
                | C::UnsupportedSignatureAlgorithmContext { .. }
                | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Self::BadSignature,
                other => Self::Other(other.to_string()),
            },
            other => Self::Other(other.to_string()),
        }
    }
}

/// TLS for one listener: the acceptor, the verifier used after the handshake, and the
/// server certificates by server name.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
    /// `None`: the listener requests no client certificate (`client_auth = "password"`).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The `client_ca` certificates as trust anchors, with their SHA-256 fingerprints (for
    /// naming the CA that verified a chain).
    anchors: Arc<Vec<(TrustAnchor<'static>, String)>>,
    sni: Arc<SniCertificates>,
}

impl std::fmt::Debug for ClientTls {
    // The server config holds the private key; print nothing from it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads `tls_cert`, `tls_key`, `client_ca`, `client_crls` and the `certificates`
    /// entries of a listener, and checks that each entry's certificate covers its names.
    pub fn from_config(listener: &ListenerConfig) -> Result<ClientTls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

        // Validation guarantees both for listeners that use TLS; `password`/`trust`
        // listeners without them never build a `ClientTls`.
        let (Some(tls_cert), Some(tls_key)) = (&listener.tls_cert, &listener.tls_key) else {
            return Err(TlsSetupError::NoServerCertificate);
        };
        let default = load_certified_key(&provider, listener, tls_cert, tls_key)?;
        let mut entries = Vec::with_capacity(listener.certificates.len());
        for entry in &listener.certificates {
            let key = load_certified_key(&provider, listener, &entry.tls_cert, &entry.tls_key)?;
            let names: Vec<String> = entry
                .server_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            check_names_covered(&entry.tls_cert, &key, &names)?;
            entries.push(SniEntry { names, key });
        }
        let sni = Arc::new(SniCertificates::new(default, entries));

        // No `client_ca` (`password` listeners): no client certificate is requested.
        let (verifier, anchors) = match &listener.client_ca {
            Some(client_ca) => (
                Some(client_verifier(&provider, listener, client_ca)?),
                trust_anchors(client_ca)?,
            ),
            None => (None, Vec::new()),
        };

        let config = server_config(provider, verifier.clone(), sni.clone())
            .map_err(TlsSetupError::ServerConfig)?;
        Ok(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifier,
            anchors: Arc::new(anchors),
            sni,
        })
    }
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The server configuration handshakes run with (after the ClientHello arrived).
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        self.acceptor.config()
    }

    /// The server certificates by name; `lookup` gives the `certificates` entry a client's
    /// server name selected.
    pub fn sni(&self) -> &SniCertificates {
        &self.sni
    }

    /// Verifies the chain a client presented during the handshake (leaf first), against
    /// the client CAs and CRLs, for client authentication, at the current time.
    pub fn verify_peer(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<(), ClientCertError> {
        let Some((leaf, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Err(ClientCertError::Missing);
        };
        let Some(verifier) = &self.verifier else {
            return Err(ClientCertError::Other(
                "this listener does not verify client certificates".into(),
            ));
        };
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(ClientCertError::from_rustls)
    }

    /// SHA-256 fingerprints of the CA certificates on the path that verifies a chain
    /// [`verify_peer`](Self::verify_peer) accepted: its intermediates, then the trust
    /// anchor. Policy rules match `issuer_sha256` against them.
    pub fn verified_by(&self, chain: &[CertificateDer<'_>]) -> Vec<String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Vec::new();
        };
        let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
            return Vec::new();
        };
        let anchors: Vec<TrustAnchor<'_>> = self.anchors.iter().map(|(a, _)| a.clone()).collect();
        let algorithms = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all;
        // Revocation was already checked by `verify_peer`; this only finds the path.
        let Ok(path) = leaf.verify_for_usage(
            algorithms,
            &anchors,
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        ) else {
            return Vec::new();
        };
        let mut out: Vec<String> = path
            .intermediate_certificates()
            .map(|c| hex::encode(Sha256::digest(c.der())))
            .collect();
        let anchor = path.anchor();
        if let Some((_, fingerprint)) = self.anchors.iter().find(|(a, _)| {
            a.subject == anchor.subject
                && a.subject_public_key_info == anchor.subject_public_key_info
        }) {
            out.push(fingerprint.clone());
        }
        out
    }
}

/// The certificates of `client_ca` as trust anchors, each with its SHA-256 fingerprint.
fn trust_anchors(client_ca: &Path) -> Result<Vec<(TrustAnchor<'static>, String)>, TlsSetupError> {
    load_all::<CertificateDer<'static>>(client_ca, "certificates")?
        .iter()
        .map(|der| {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map(|a| a.to_owned())
                .map_err(|e| TlsSetupError::BadClientCa {
                    path: client_ca.to_path_buf(),
                    source: rustls::Error::General(e.to_string()),
                })?;
            Ok((anchor, hex::encode(Sha256::digest(der))))
        })
        .collect()
}

/// The verifier for client certificates issued by `client_ca`, with the listener's CRLs.
fn client_verifier(
    provider: &Arc<CryptoProvider>,
    listener: &ListenerConfig,
    client_ca: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for ca in load_all::<CertificateDer<'static>>(client_ca, "certificates")? {
        roots.add(ca).map_err(|source| TlsSetupError::BadClientCa {
            path: client_ca.to_path_buf(),
            source,
        })?;
    }
    let mut crls = Vec::new();
    for path in &listener.client_crls {
        crls.extend(load_all::<CertificateRevocationListDer<'static>>(
            path, "CRLs",
        )?);
    }

    // Defaults kept on purpose: revocation is checked for the whole chain and an
    // unknown status is a refusal once CRLs are configured (PostgreSQL's
    // `ssl_crl_file` behaves the same way with OpenSSL's CRL_CHECK_ALL).
    // An expired CRL fails closed: past its nextUpdate it no longer says whether a
    // certificate was revoked since.
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|source| TlsSetupError::Verifier {
            client_ca: client_ca.to_path_buf(),
            crls: listener.client_crls.clone(),
            source,
        })
}

/// A certificate chain and its private key, checked to belong together.
fn load_certified_key(
    provider: &CryptoProvider,
    listener: &ListenerConfig,
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let chain = load_all::<CertificateDer<'static>>(cert, "certificates")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Pem {
        what: "a private key",
        path: key.to_path_buf(),
        source,
    })?;
    // Loaded either way: a readable key is pointed out, not refused (see
    // `proxy_config::keyfile` for why).
    if let Ok(Some(warning)) = proxy_config::keyfile::check_permissions(key) {
        tracing::warn!(listener = %listener.display_name(), "{warning}");
    }
    CertifiedKey::from_der(chain, der, provider)
        .map(Arc::new)
        .map_err(|source| TlsSetupError::CertifiedKey {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })
}

/// Every configured server name must be one the certificate is valid for: otherwise
/// clients verifying the name (verify-full) would fail, long after the configuration was
/// accepted.
fn check_names_covered(
    cert: &Path,
    key: &CertifiedKey,
    names: &[String],
) -> Result<(), TlsSetupError> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer;
    let bad = |reason: String| TlsSetupError::BadServerCert {
        cert: cert.to_path_buf(),
        reason,
    };
    let leaf = key.end_entity_cert().map_err(|e| bad(e.to_string()))?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf)
        .map_err(|e| bad(e.to_string()))?;
    let sans: Vec<String> = parsed
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match names.iter().find(|name| !covered_by(name, &sans)) {
        Some(name) => Err(TlsSetupError::NameNotCovered {
            cert: cert.to_path_buf(),
            name: name.clone(),
            sans,
        }),
        None => Ok(()),
    }
}

fn server_config(
    provider: Arc<CryptoProvider>,
    inner: Option<Arc<dyn ClientCertVerifier>>,
    certificates: Arc<SniCertificates>,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match inner {
        Some(inner) => {
            builder.with_client_cert_verifier(Arc::new(DeferredClientVerifier { inner }))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificates);
    // Offered so PostgreSQL 17 direct-TLS clients can connect; clients that send no ALPN
    // (the classic SSLRequest path) are unaffected, and rustls refuses a client that
    // offers only other protocols, as PostgreSQL does.
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}

fn load_all<T: PemObject>(path: &Path, what: &'static str) -> Result<Vec<T>, TlsSetupError> {
    let pem_err = |source| TlsSetupError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let items = T::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<T>, _>>()
        .map_err(pem_err)?;
    if items.is_empty() {
        return Err(TlsSetupError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(items)
}

/// Requests a client certificate without letting the handshake depend on its validity.
///
/// Chain validation is deferred to [`ClientTls::verify_peer`]; handshake signatures are
/// still checked by the inner verifier, so a client cannot present someone else's
/// certificate without its private key.
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A missing certificate is reported after the handshake (and is fine for cancels).
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred: see the type's documentation.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::test_support::TestPki;

    fn write(pki: &TestPki, name: &str, contents: &str) -> PathBuf {
        let path = pki.listener.tls_cert.as_ref().unwrap().with_file_name(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn loads_the_listener_files() {
        let pki = TestPki::new();
        ClientTls::from_config(&pki.listener).unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let pki = TestPki::new();
        let mut listener = pki.listener.clone();
        listener.tls_key = Some(
            pki.listener
                .tls_key
                .as_ref()
                .unwrap()
                .with_file_name("absent.key"),
        );
        let err = ClientTls::from_config(&listener).unwrap_err().to_string();
        assert!(err.contains("absent.key"), "{err}");
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn a_file_without_the_expected_items_is_named() {
        let pki = TestPki::new();
        let mut listener = pki.listener.clone();
        listener.client_ca = Some(write(&pki, "empty-ca.pem", "not a certificate\n"));
        let err = ClientTls::from_config(&listener).unwrap_err();
        assert!(matches!(err, TlsSetupError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("empty-ca.pem"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let pki = TestPki::new();
        let mut listener = pki.listener.clone();
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        listener.tls_key = Some(write(&pki, "other.key", &other));
        let err = ClientTls::from_config(&listener).unwrap_err();
        assert!(matches!(err, TlsSetupError::CertifiedKey { .. }), "{err}");
        assert!(err.to_string().contains("other.key"), "{err}");
    }

    #[test]
    fn a_malformed_crl_is_refused() {
        let pki = TestPki::new();
        let mut listener = pki.listener.clone();
        listener.client_crls = vec![write(
            &pki,
            "bad.crl",
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )];
        let err = ClientTls::from_config(&listener).unwrap_err();
        assert!(matches!(err, TlsSetupError::Verifier { .. }), "{err}");
        assert!(err.to_string().contains("bad.crl"), "{err}");
    }

    #[test]
    fn debug_output_reveals_nothing_of_the_key() {
        let pki = TestPki::new();
        let tls = ClientTls::from_config(&pki.listener).unwrap();
        assert_eq!(format!("{tls:?}"), "ClientTls { .. }");
    }

    /// The test server certificate (SAN `localhost`) as a `certificates` entry for `names`.
    fn with_entry(pki: &TestPki, names: &[&str]) -> ListenerConfig {
        let mut listener = pki.listener.clone();
        listener.certificates = vec![proxy_config::ListenerCertificateConfig {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            tls_cert: listener.tls_cert.clone().unwrap(),
            tls_key: listener.tls_key.clone().unwrap(),
            target: None,
        }];
        listener
    }

    #[test]
    fn an_entry_loads_when_its_certificate_covers_its_names() {
        let pki = TestPki::new();
        let tls = ClientTls::from_config(&with_entry(&pki, &["LocalHost"])).unwrap();
        assert_eq!(tls.sni().lookup(Some("localhost")), Some(0));
        assert_eq!(tls.sni().lookup(Some("elsewhere")), None);
    }

    #[test]
    fn a_name_the_certificate_does_not_cover_is_refused_naming_file_name_and_sans() {
        let pki = TestPki::new();
        for name in ["db.corp.example", "*.localhost"] {
            let err = ClientTls::from_config(&with_entry(&pki, &["localhost", name])).unwrap_err();
            assert!(matches!(err, TlsSetupError::NameNotCovered { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("server.pem"), "{text}");
            assert!(text.contains(&format!("{name:?}")), "{text}");
            assert!(text.contains("[\"localhost\"]"), "{text}");
        }
    }

    #[test]
    fn an_entry_with_a_mismatched_key_is_refused() {
        let pki = TestPki::new();
        let mut listener = with_entry(&pki, &["localhost"]);
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        listener.certificates[0].tls_key = write(&pki, "entry.key", &other);
        let err = ClientTls::from_config(&listener).unwrap_err();
        assert!(matches!(err, TlsSetupError::CertifiedKey { .. }), "{err}");
        assert!(err.to_string().contains("entry.key"), "{err}");
    }
}
