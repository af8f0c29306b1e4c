//! Per-run test PKI: certificate authorities, server and client certificates, CRLs.
//!
//! Everything is generated with `rcgen` (aws-lc-rs backend) and written as files, because
//! every consumer under test (PostgreSQL, psql, the proxy, JDBC) takes file paths.
//! Private keys are written with mode 0600: libpq refuses client keys readable by others.
//!
//! ```no_run
//! # fn main() -> Result<(), proxy_testkit::pki::PkiError> {
//! use proxy_testkit::pki::{ClientCertSpec, KeyAlgorithm, TestPki};
//! let dir = tempfile::tempdir().unwrap();
//! let pki = TestPki::new(dir.path())?;
//! let server = pki.server_cert(&["localhost", "127.0.0.1"])?;
//! let alice = pki.client_cert(ClientCertSpec::new("alice").uri("spiffe://corp/ns/bi/alice"))?;
//! let expired = pki.client_cert(ClientCertSpec::new("old").expired())?;
//! let rogue = pki.new_root_ca("Rogue CA", KeyAlgorithm::EcdsaP256)?;
//! let mallory = rogue.client_cert(ClientCertSpec::new("mallory"))?;
//! let sub = pki.root().intermediate("Sub CA", KeyAlgorithm::Rsa2048)?;
//! let bob = sub.client_cert(ClientCertSpec::new("bob").revoked())?; // bob.crl_pem is Some
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Organization put in every subject, so issuer DNs read `CN=...,O=Redshift IAM Proxy Tests`.
pub const TEST_ORGANIZATION: &str = "Redshift IAM Proxy Tests";

/// Errors of the test PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} for {subject:?}: {source}")]
    Rcgen {
        action: &'static str,
        subject: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid {what} {value:?}: {source}")]
    InvalidName {
        what: &'static str,
        value: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Key algorithm of a generated key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (the default: fast to generate).
    #[default]
    EcdsaP256,
    /// ECDSA P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures (aws-lc-rs generates RSA keys; takes
    /// tens of milliseconds).
    Rsa2048,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// A generated certificate serial number (positive, 16 bytes, random).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    fn random() -> Self {
        let mut bytes: [u8; 16] = rand::random();
        // Positive (high bit clear) and without a leading zero byte, so the DER INTEGER is
        // exactly these 16 bytes and every parser prints the same value.
        bytes[0] = (bytes[0] & 0x7f) | 0x40;
        Serial(bytes.to_vec())
    }

    /// Big-endian bytes as encoded in the certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex without separators, e.g. `4f0a...`.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Decimal representation (how AWS Roles Anywhere reports `x509Serial`).
    pub fn to_decimal(&self) -> String {
        // 16-byte serials fit in u128.
        let mut buf = [0u8; 16];
        buf[16 - self.0.len()..].copy_from_slice(&self.0);
        u128::from_be_bytes(buf).to_string()
    }

    fn to_rcgen(&self) -> SerialNumber {
        SerialNumber::from_slice(&self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Shared state of one PKI directory: where files go and how they are named uniquely.
#[derive(Debug)]
struct Store {
    dir: PathBuf,
    counter: AtomicU64,
}

impl Store {
    /// A unique file stem such as `003-alice` (the counter keeps same-named subjects apart).
    fn stem(&self, label: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let label: String = sanitize(label).chars().take(40).collect();
        format!("{n:03}-{label}")
    }

    fn write_public(&self, name: &str, contents: &[u8]) -> Result<PathBuf, PkiError> {
        self.write(name, contents, 0o644)
    }

    fn write_secret(&self, name: &str, contents: &[u8]) -> Result<PathBuf, PkiError> {
        self.write(name, contents, 0o600)
    }

    fn write(&self, name: &str, contents: &[u8], mode: u32) -> Result<PathBuf, PkiError> {
        let path = self.dir.join(name);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)?;
            // `mode` only applies on creation; rewriting a CRL must not keep a stale mode.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.write_all(contents)?;
            file.sync_all()
        })();
        result.map_err(|source| PkiError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

/// The per-run PKI: a root CA plus helpers issuing from it. Other CAs (independent roots,
/// intermediates) are [`CertAuthority`] values created from here.
pub struct TestPki {
    store: Arc<Store>,
    root: CertAuthority,
}

impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.store.dir)
            .field("root", &self.root)
            .finish()
    }
}

impl TestPki {
    /// Creates `dir` if needed and a root CA `Test Root CA` (ECDSA P-256) in it.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, PkiError> {
        Self::with_root(dir, "Test Root CA", KeyAlgorithm::EcdsaP256)
    }

    /// Like [`TestPki::new`] with a chosen root CA name and key algorithm.
    pub fn with_root(
        dir: impl AsRef<Path>,
        root_common_name: &str,
        key: KeyAlgorithm,
    ) -> Result<Self, PkiError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| PkiError::Write {
            path: dir.clone(),
            source,
        })?;
        let store = Arc::new(Store {
            dir,
            counter: AtomicU64::new(0),
        });
        let root = CertAuthority::new_root(&store, root_common_name, key)?;
        Ok(TestPki { store, root })
    }

    /// Directory holding all files of this PKI.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// The root CA.
    pub fn root(&self) -> &CertAuthority {
        &self.root
    }

    /// PEM file of the root CA certificate (the trust anchor to configure).
    pub fn ca_cert_path(&self) -> &Path {
        &self.root.cert_pem
    }

    /// A server certificate from the root CA for DNS names and/or IP addresses.
    pub fn server_cert(&self, names: &[&str]) -> Result<ServerCert, PkiError> {
        self.root.server_cert(names)
    }

    /// A client certificate from the root CA.
    pub fn client_cert(&self, spec: ClientCertSpec) -> Result<ClientCert, PkiError> {
        self.root.client_cert(spec)
    }

    /// Another, unrelated self-signed root CA writing into the same directory (for
    /// "issued by an untrusted CA" cases).
    pub fn new_root_ca(
        &self,
        common_name: &str,
        key: KeyAlgorithm,
    ) -> Result<CertAuthority, PkiError> {
        CertAuthority::new_root(&self.store, common_name, key)
    }

    /// Writes `certs` concatenated into one PEM bundle file (e.g. a `client_ca` with
    /// several CAs) and returns its path.
    pub fn bundle(&self, label: &str, cert_pems: &[&Path]) -> Result<PathBuf, PkiError> {
        let mut bundle = Vec::new();
        for path in cert_pems {
            let pem = fs::read(path).map_err(|source| PkiError::Write {
                path: path.to_path_buf(),
                source,
            })?;
            bundle.extend_from_slice(&pem);
        }
        self.store
            .write_public(&format!("{}.bundle.pem", self.store.stem(label)), &bundle)
    }
}

/// A certificate authority that can issue certificates and CRLs.
pub struct CertAuthority {
    common_name: String,
    key_algorithm: KeyAlgorithm,
    /// PEM of this CA's certificate.
    pub cert_pem: PathBuf,
    /// PEM of this CA's private key (0600).
    pub key_pem: PathBuf,
    /// PEMs of this CA and its issuing intermediates, excluding the self-signed root: what
    /// a leaf it issues appends to form its presented chain.
    chain: Vec<String>,
    issuer: CertifiedIssuer<'static, KeyPair>,
    store: Arc<Store>,
    revoked: Mutex<RevocationState>,
}

#[derive(Debug, Default)]
struct RevocationState {
    serials: Vec<Serial>,
    crl_number: u64,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key is deliberately not printed.
        f.debug_struct("CertAuthority")
            .field("common_name", &self.common_name)
            .field("key_algorithm", &self.key_algorithm)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    fn new_root(
        store: &Arc<Store>,
        common_name: &str,
        key: KeyAlgorithm,
    ) -> Result<Self, PkiError> {
        let key_pair = generate_key(key, common_name)?;
        let params = ca_params(common_name, None);
        let issuer =
            CertifiedIssuer::self_signed(params, key_pair).map_err(|source| PkiError::Rcgen {
                action: "self-sign the CA certificate",
                subject: common_name.to_owned(),
                source,
            })?;
        Self::finish(store, common_name, key, issuer, Vec::new())
    }

    /// An intermediate CA signed by this CA (path length 0: it issues leaves only).
    pub fn intermediate(
        &self,
        common_name: &str,
        key: KeyAlgorithm,
    ) -> Result<CertAuthority, PkiError> {
        let key_pair = generate_key(key, common_name)?;
        let params = ca_params(common_name, Some(BasicConstraints::Constrained(0)));
        let issuer =
            CertifiedIssuer::signed_by(params, key_pair, &self.issuer).map_err(|source| {
                PkiError::Rcgen {
                    action: "sign the intermediate CA certificate",
                    subject: common_name.to_owned(),
                    source,
                }
            })?;
        let mut chain = vec![issuer.pem()];
        chain.extend(self.chain.iter().cloned());
        Self::finish(&self.store, common_name, key, issuer, chain)
    }

    fn finish(
        store: &Arc<Store>,
        common_name: &str,
        key_algorithm: KeyAlgorithm,
        issuer: CertifiedIssuer<'static, KeyPair>,
        chain: Vec<String>,
    ) -> Result<Self, PkiError> {
        let stem = store.stem(common_name);
        let cert_pem = store.write_public(&format!("{stem}.ca.pem"), issuer.pem().as_bytes())?;
        let key_pem = store.write_secret(
            &format!("{stem}.ca.key"),
            issuer.key().serialize_pem().as_bytes(),
        )?;
        Ok(CertAuthority {
            common_name: common_name.to_owned(),
            key_algorithm,
            cert_pem,
            key_pem,
            chain,
            issuer,
            store: Arc::clone(store),
            revoked: Mutex::new(RevocationState::default()),
        })
    }

    /// Subject common name of this CA.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Subject DN as RFC 4514 text, e.g. `CN=Test Root CA,O=Redshift IAM Proxy Tests`.
    pub fn subject_dn(&self) -> String {
        format!("CN={},O={TEST_ORGANIZATION}", self.common_name)
    }

    /// Key algorithm of this CA.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }

    /// DER of this CA's certificate.
    pub fn cert_der(&self) -> &[u8] {
        self.issuer.der()
    }

    /// A server certificate (EKU serverAuth) for DNS names and/or IP addresses; the first
    /// name is also the subject CN.
    pub fn server_cert(&self, names: &[&str]) -> Result<ServerCert, PkiError> {
        self.server_cert_with_key(names, KeyAlgorithm::EcdsaP256)
    }

    /// [`CertAuthority::server_cert`] with a chosen key algorithm.
    pub fn server_cert_with_key(
        &self,
        names: &[&str],
        key: KeyAlgorithm,
    ) -> Result<ServerCert, PkiError> {
        let cn = names.first().copied().unwrap_or("server");
        let key_pair = generate_key(key, cn)?;
        let serial = Serial::random();
        let mut params = leaf_params(cn, None, &serial, now_minus_hour(), now_plus_days(30));
        for name in names {
            params.subject_alt_names.push(san_dns_or_ip(name)?);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key_pair, &self.issuer)
            .map_err(|source| PkiError::Rcgen {
                action: "sign the server certificate",
                subject: cn.to_owned(),
                source,
            })?;
        let files = self.write_leaf(cn, "server", &cert.pem(), &key_pair)?;
        Ok(ServerCert {
            cert_pem: files.cert_pem,
            key_pem: files.key_pem,
            chain_pem: files.chain_pem,
            serial,
        })
    }

    /// A client certificate as described by `spec`.
    pub fn client_cert(&self, spec: ClientCertSpec) -> Result<ClientCert, PkiError> {
        let key_pair = generate_key(spec.key, &spec.common_name)?;
        let serial = Serial::random();
        let mut params = leaf_params(
            &spec.common_name,
            spec.organizational_unit.as_deref(),
            &serial,
            spec.not_before,
            spec.not_after,
        );
        for dns in &spec.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(ia5("DNS SAN", dns)?));
        }
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(ia5("URI SAN", uri)?));
        }
        for email in &spec.emails {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(ia5("email SAN", email)?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = spec.extended_key_usages.clone();
        let cert = params
            .signed_by(&key_pair, &self.issuer)
            .map_err(|source| PkiError::Rcgen {
                action: "sign the client certificate",
                subject: spec.common_name.clone(),
                source,
            })?;
        let files = self.write_leaf(&spec.common_name, "client", &cert.pem(), &key_pair)?;
        let key_pk8_der = self.store.write_secret(
            &format!("{}.key.pk8.der", files.stem),
            key_pair.serialized_der(),
        )?;
        let mut client = ClientCert {
            common_name: spec.common_name,
            cert_pem: files.cert_pem,
            key_pem: files.key_pem,
            key_pk8_der,
            chain_pem: files.chain_pem,
            cert_der: cert.der().to_vec(),
            serial,
            not_before: spec.not_before,
            not_after: spec.not_after,
            key_algorithm: spec.key,
            crl_pem: None,
        };
        if spec.revoked {
            client.crl_pem = Some(self.revoke(&client.serial)?);
        }
        Ok(client)
    }

    /// Adds `serial` to this CA's revocation list and rewrites the CRL file, returning its
    /// path (the same path every time, so a configured `client_crls` entry sees updates).
    pub fn revoke(&self, serial: &Serial) -> Result<PathBuf, PkiError> {
        let mut state = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.serials.contains(serial) {
            state.serials.push(serial.clone());
        }
        self.write_crl(&mut state)
    }

    /// Writes this CA's current CRL (possibly listing nothing) and returns its path.
    pub fn crl_pem(&self) -> Result<PathBuf, PkiError> {
        let mut state = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_crl(&mut state)
    }

    /// Writes this CA's current CRL with the given thisUpdate and nextUpdate (e.g. one
    /// that expired) and returns its path.
    pub fn crl_pem_valid(
        &self,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<PathBuf, PkiError> {
        let mut state = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_crl_valid(&mut state, this_update, next_update)
    }

    fn write_crl(&self, state: &mut RevocationState) -> Result<PathBuf, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.write_crl_valid(state, now - Duration::hours(1), now + Duration::days(7))
    }

    fn write_crl_valid(
        &self,
        state: &mut RevocationState,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<PathBuf, PkiError> {
        state.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&state.crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: state
                .serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.to_rcgen(),
                    revocation_time: now - Duration::minutes(30),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let rcgen_err = |source| PkiError::Rcgen {
            action: "sign the CRL",
            subject: self.common_name.clone(),
            source,
        };
        let crl = params.signed_by(&self.issuer).map_err(rcgen_err)?;
        let pem = crl.pem().map_err(rcgen_err)?;
        let name = format!("{}.crl.pem", sanitize(&self.common_name));
        // CRL files are named per CA (not per call) so they can be rewritten in place.
        self.store.write_public(
            &format!("{}-{name}", ca_file_prefix(&self.cert_pem)),
            pem.as_bytes(),
        )
    }

    fn write_leaf(
        &self,
        cn: &str,
        kind: &str,
        cert_pem: &str,
        key_pair: &KeyPair,
    ) -> Result<LeafFiles, PkiError> {
        let stem = format!("{}.{kind}", self.store.stem(cn));
        let cert_path = self
            .store
            .write_public(&format!("{stem}.pem"), cert_pem.as_bytes())?;
        let key_pem = self
            .store
            .write_secret(&format!("{stem}.key"), key_pair.serialize_pem().as_bytes())?;
        let mut chain = cert_pem.to_owned();
        for pem in &self.chain {
            chain.push_str(pem);
        }
        let chain_pem = self
            .store
            .write_public(&format!("{stem}.chain.pem"), chain.as_bytes())?;
        Ok(LeafFiles {
            stem,
            cert_pem: cert_path,
            key_pem,
            chain_pem,
        })
    }
}

struct LeafFiles {
    stem: String,
    cert_pem: PathBuf,
    key_pem: PathBuf,
    chain_pem: PathBuf,
}

/// A server certificate and its key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// Leaf certificate only.
    pub cert_pem: PathBuf,
    /// Private key, PKCS#8 PEM, mode 0600.
    pub key_pem: PathBuf,
    /// Leaf followed by the issuing intermediates (what a server presents).
    pub chain_pem: PathBuf,
    pub serial: Serial,
}

/// An issued client certificate and its key files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub common_name: String,
    /// Leaf certificate only.
    pub cert_pem: PathBuf,
    /// Private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`), mode 0600.
    pub key_pem: PathBuf,
    /// The same key as unencrypted PKCS#8 DER (what the PostgreSQL JDBC driver wants), 0600.
    pub key_pk8_der: PathBuf,
    /// Leaf followed by the issuing intermediates (what a client presents).
    pub chain_pem: PathBuf,
    pub cert_der: Vec<u8>,
    pub serial: Serial,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub key_algorithm: KeyAlgorithm,
    /// The issuing CA's CRL listing this certificate, when issued with
    /// [`ClientCertSpec::revoked`].
    pub crl_pem: Option<PathBuf>,
}

/// What a client certificate should look like. Defaults: ECDSA P-256, valid from an hour
/// ago for a day, EKU clientAuth, no SANs.
#[derive(Debug, Clone)]
pub struct ClientCertSpec {
    common_name: String,
    organizational_unit: Option<String>,
    dns: Vec<String>,
    uris: Vec<String>,
    emails: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    key: KeyAlgorithm,
    revoked: bool,
}

impl ClientCertSpec {
    pub fn new(common_name: impl Into<String>) -> Self {
        ClientCertSpec {
            common_name: common_name.into(),
            organizational_unit: None,
            dns: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            not_before: now_minus_hour(),
            not_after: now_plus_days(1),
            extended_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            key: KeyAlgorithm::EcdsaP256,
            revoked: false,
        }
    }

    /// The subject CN.
    pub fn cn(&self) -> &str {
        &self.common_name
    }

    /// Replaces the subject CN.
    pub fn common_name(mut self, cn: impl Into<String>) -> Self {
        self.common_name = cn.into();
        self
    }

    /// Adds `OU=...` to the subject.
    pub fn organizational_unit(mut self, ou: impl Into<String>) -> Self {
        self.organizational_unit = Some(ou.into());
        self
    }

    /// Adds a DNS SAN.
    pub fn dns(mut self, name: impl Into<String>) -> Self {
        self.dns.push(name.into());
        self
    }

    /// Adds a URI SAN such as `spiffe://corp.example/ns/bi/sa/etl`.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uris.push(uri.into());
        self
    }

    /// Adds an email (rfc822Name) SAN.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.emails.push(email.into());
        self
    }

    /// Explicit validity window.
    pub fn validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Valid from two days ago until yesterday.
    pub fn expired(self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.validity(now - Duration::days(2), now - Duration::days(1))
    }

    /// Valid from tomorrow for a day.
    pub fn not_yet_valid(self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.validity(now + Duration::days(1), now + Duration::days(2))
    }

    /// Replaces the extended key usages (an empty list omits the extension).
    pub fn extended_key_usages(mut self, ekus: Vec<ExtendedKeyUsagePurpose>) -> Self {
        self.extended_key_usages = ekus;
        self
    }

    /// EKU serverAuth only: a certificate that must not be accepted for client auth.
    pub fn server_auth_only(self) -> Self {
        self.extended_key_usages(vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// Key algorithm of the certificate's key.
    pub fn key(mut self, key: KeyAlgorithm) -> Self {
        self.key = key;
        self
    }

    /// Revoke right after issuing; [`ClientCert::crl_pem`] is the CA's CRL listing it.
    pub fn revoked(mut self) -> Self {
        self.revoked = true;
        self
    }
}

fn generate_key(key: KeyAlgorithm, subject: &str) -> Result<KeyPair, PkiError> {
    key.generate().map_err(|source| PkiError::Rcgen {
        action: "generate a key pair",
        subject: subject.to_owned(),
        source,
    })
}

fn ca_params(common_name: &str, constraints: Option<BasicConstraints>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, None);
    params.is_ca = IsCa::Ca(constraints.unwrap_or(BasicConstraints::Unconstrained));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(Serial::random().to_rcgen());
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
    params.use_authority_key_identifier_extension = true;
    params
}

fn leaf_params(
    common_name: &str,
    organizational_unit: Option<&str>,
    serial: &Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, organizational_unit);
    params.is_ca = IsCa::ExplicitNoCa;
    params.serial_number = Some(serial.to_rcgen());
    params.not_before = not_before;
    params.not_after = not_after;
    // OpenSSL-based consumers (libpq, PostgreSQL) build chains by key identifier.
    params.use_authority_key_identifier_extension = true;
    params
}

fn distinguished_name(
    common_name: &str,
    organizational_unit: Option<&str>,
) -> rcgen::DistinguishedName {
    // RDNs are encoded in push order; RFC 4514 text lists them reversed, giving
    // `CN=...,OU=...,O=...`.
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, TEST_ORGANIZATION);
    if let Some(ou) = organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn san_dns_or_ip(name: &str) -> Result<SanType, PkiError> {
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(ia5("DNS SAN", name)?)),
    }
}

fn ia5(what: &'static str, value: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    rcgen::string::Ia5String::try_from(value).map_err(|source| PkiError::InvalidName {
        what,
        value: value.to_owned(),
        source,
    })
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The `NNN` counter prefix of a CA's certificate file, which makes its CRL file name unique
/// even when two CAs share a common name.
fn ca_file_prefix(cert_pem: &Path) -> String {
    cert_pem
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.split('-').next())
        .unwrap_or("ca")
        .to_owned()
}

fn now_minus_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::hours(1)
}

fn now_plus_days(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(days)
}
