//! The IAM Roles Anywhere request signer: SigV4's canonical request, signed with an X.509
//! certificate's private key instead of an HMAC secret (`AWS4-X509-RSA-SHA256`,
//! `AWS4-X509-ECDSA-SHA256`). No AWS SDK implements it, hence this hand-written module.
//!
//! Private keys never appear in errors, `Debug` output or logs; errors describe *what* is
//! wrong with a key (format, type, size), never its bytes.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use p384::ecdsa::signature::hazmat::PrehashSigner;
use p384::pkcs8::DecodePrivateKey as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// `AWS4-X509-RSA-SHA256`: RSA PKCS#1 v1.5 over SHA-256.
pub const ALG_RSA: &str = "AWS4-X509-RSA-SHA256";
/// `AWS4-X509-ECDSA-SHA256`: ECDSA over SHA-256 (for P-384 too), DER `SEQUENCE{r,s}`.
pub const ALG_ECDSA: &str = "AWS4-X509-ECDSA-SHA256";

pub const HEADER_X_AMZ_DATE: &str = "x-amz-date";
pub const HEADER_X_AMZ_X509: &str = "x-amz-x509";
pub const HEADER_X_AMZ_X509_CHAIN: &str = "x-amz-x509-chain";

/// Headers never signed: they are added or rewritten by HTTP layers after signing (the
/// same list the AWS SDKs exclude), or are the signature itself.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "expect",
    "transfer-encoding",
    "user-agent",
    "x-amzn-trace-id",
];

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Path encoding: like [`RFC3986`] but `/` separates segments.
const RFC3986_PATH: &AsciiSet = &RFC3986.remove(b'/');

/// The kind of a public or private key, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Rsa {
        bits: usize,
    },
    EcP256,
    EcP384,
    /// A key this signer cannot use, described by its algorithm (e.g. an OID).
    Unsupported(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA ({bits} bits)"),
            KeyType::EcP256 => f.write_str("EC P-256"),
            KeyType::EcP384 => f.write_str("EC P-384"),
            KeyType::Unsupported(what) => write!(f, "unsupported ({what})"),
        }
    }
}

impl KeyType {
    fn same_family(&self, other: &KeyType) -> bool {
        matches!(
            (self, other),
            (KeyType::Rsa { .. }, KeyType::Rsa { .. })
                | (KeyType::EcP256, KeyType::EcP256)
                | (KeyType::EcP384, KeyType::EcP384)
        )
    }
}

/// Why a signer could not be built or a request not signed. Never contains key material or
/// passphrases.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot read {what} {path:?}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Certificate { what: String, reason: String },
    #[error("private key {what}: {reason}")]
    Key { what: String, reason: String },
    #[error("private key passphrase: {0}")]
    Passphrase(String),
    #[error("private key {what} is {key} but the certificate's public key is {certificate}")]
    KeyTypeMismatch {
        what: String,
        key: KeyType,
        certificate: KeyType,
    },
    #[error("private key {what} does not belong to the certificate (the public keys differ)")]
    KeyCertificateMismatch { what: String },
    #[error("cannot sign request: {0}")]
    Request(String),
    #[error("signing failed")]
    Crypto,
}

/// The loaded private key. Deliberately no `Debug` derive: only the key type is shown.
enum SigningKey {
    Rsa(RsaKeyPair),
    EcP256(EcdsaKeyPair),
    /// aws-lc-rs has no P-384 signer over a SHA-256 digest, which this protocol requires.
    EcP384(p384::ecdsa::SigningKey),
}

impl SigningKey {
    fn key_type(&self) -> KeyType {
        match self {
            SigningKey::Rsa(key) => KeyType::Rsa {
                bits: key.public_modulus_len() * 8,
            },
            SigningKey::EcP256(_) => KeyType::EcP256,
            SigningKey::EcP384(_) => KeyType::EcP384,
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => ALG_RSA,
            SigningKey::EcP256(_) | SigningKey::EcP384(_) => ALG_ECDSA,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        match self {
            SigningKey::Rsa(key) => {
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| SignerError::Crypto)?;
                Ok(signature)
            }
            SigningKey::EcP256(key) => key
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| SignerError::Crypto),
            SigningKey::EcP384(key) => {
                let digest = Sha256::digest(message);
                let signature: p384::ecdsa::Signature =
                    key.sign_prehash(&digest).map_err(|_| SignerError::Crypto)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }
        }
    }

    /// Whether this key's public half is `certificate`'s public key.
    fn matches(&self, certificate: &CertificateKey) -> bool {
        match self {
            SigningKey::Rsa(key) => {
                let public = key.public_key();
                let modulus = public.modulus();
                let exponent = public.exponent();
                strip_leading_zeros(modulus.big_endian_without_leading_zero())
                    == strip_leading_zeros(&certificate.rsa_modulus)
                    && strip_leading_zeros(exponent.big_endian_without_leading_zero())
                        == strip_leading_zeros(&certificate.rsa_exponent)
            }
            SigningKey::EcP256(key) => {
                ec_points_equal(key.public_key().as_ref(), &certificate.ec_point)
            }
            SigningKey::EcP384(key) => ec_points_equal(
                key.verifying_key().to_encoded_point(false).as_bytes(),
                &certificate.ec_point,
            ),
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Compares an uncompressed SEC1 point (`04 || X || Y`) with a certificate's point, which
/// may be uncompressed or compressed (`02|03 || X`, the prefix giving Y's parity).
fn ec_points_equal(uncompressed: &[u8], certificate_point: &[u8]) -> bool {
    if uncompressed == certificate_point {
        return true;
    }
    let (Some((&0x04, xy)), Some((&prefix, x))) =
        (uncompressed.split_first(), certificate_point.split_first())
    else {
        return false;
    };
    if xy.len() % 2 != 0 || x.len() != xy.len() / 2 || !(prefix == 0x02 || prefix == 0x03) {
        return false;
    }
    let (own_x, own_y) = xy.split_at(x.len());
    let y_is_odd = own_y.last().is_some_and(|b| b & 1 == 1);
    own_x == x && (prefix == 0x03) == y_is_odd
}

/// The certificate's public key, as needed for matching.
struct CertificateKey {
    key_type: KeyType,
    rsa_modulus: Vec<u8>,
    rsa_exponent: Vec<u8>,
    ec_point: Vec<u8>,
}

/// Where key material came from, for error messages (a path, or "(in memory)").
fn describe(path: Option<&Path>) -> String {
    path.map_or_else(|| "(in memory)".to_owned(), |p| format!("{p:?}"))
}

/// A certificate, its intermediates and its private key: everything needed to sign Roles
/// Anywhere requests.
pub struct X509Signer {
    key: SigningKey,
    /// Base64 of the leaf's DER (`X-Amz-X509`).
    leaf_b64: String,
    /// Comma-separated base64 DER of the intermediates (`X-Amz-X509-Chain`), if any.
    chain_b64: Option<String>,
    chain_len: usize,
    /// The leaf's serial number in decimal, the "access key" of the credential scope.
    serial_decimal: String,
    subject: String,
    not_after: SystemTime,
}

impl fmt::Debug for X509Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Signer")
            .field("algorithm", &self.algorithm())
            .field("key_type", &self.key.key_type())
            .field("serial", &self.serial_decimal)
            .field("subject", &self.subject)
            .field("intermediates", &self.chain_len)
            .finish_non_exhaustive()
    }
}

/// Inputs for [`X509Signer::from_pem`].
#[derive(Default)]
pub struct SignerPem<'a> {
    /// PEM with the leaf certificate first; further certificates are treated as intermediates.
    pub certificate: &'a [u8],
    pub private_key: &'a [u8],
    /// PEM intermediates (appended after any in `certificate`).
    pub chain: Option<&'a [u8]>,
    /// Passphrase for an `ENCRYPTED PRIVATE KEY`.
    pub passphrase: Option<&'a SecretString>,
    /// File names for messages only.
    pub certificate_path: Option<&'a Path>,
    pub private_key_path: Option<&'a Path>,
    pub chain_path: Option<&'a Path>,
}

impl X509Signer {
    /// Loads the certificate, chain, key and passphrase named by `[aws.roles_anywhere]`.
    pub fn from_config(config: &proxy_config::RolesAnywhereConfig) -> Result<Self, SignerError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| SignerError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let certificate = read("certificate", &config.certificate)?;
        let private_key = read("private key", &config.private_key)?;
        // Loaded either way: a readable key is pointed out, not refused (see
        // `proxy_config::keyfile` for why).
        if let Ok(Some(warning)) = proxy_config::keyfile::check_permissions(&config.private_key) {
            tracing::warn!("Roles Anywhere {warning}");
        }
        let chain = config
            .chain
            .as_deref()
            .map(|path| read("certificate chain", path))
            .transpose()?;
        let passphrase = read_passphrase(
            config.private_key_passphrase_env.as_deref(),
            config.private_key_passphrase_file.as_deref(),
        )?;
        X509Signer::from_pem(SignerPem {
            certificate: &certificate,
            private_key: &private_key,
            chain: chain.as_deref(),
            passphrase: passphrase.as_ref(),
            certificate_path: Some(&config.certificate),
            private_key_path: Some(&config.private_key),
            chain_path: config.chain.as_deref(),
        })
    }

    /// Builds a signer from PEM data, checking that the key belongs to the certificate.
    pub fn from_pem(input: SignerPem<'_>) -> Result<Self, SignerError> {
        let cert_what = describe(input.certificate_path);
        let mut certificates = parse_certificates(input.certificate, &cert_what)?;
        if certificates.is_empty() {
            return Err(SignerError::Certificate {
                what: cert_what,
                reason: "no PEM CERTIFICATE found".into(),
            });
        }
        let leaf = certificates.remove(0);
        if let Some(chain) = input.chain {
            let chain_what = describe(input.chain_path);
            let extra = parse_certificates(chain, &chain_what)?;
            if extra.is_empty() {
                return Err(SignerError::Certificate {
                    what: chain_what,
                    reason: "no PEM CERTIFICATE found".into(),
                });
            }
            certificates.extend(extra);
        }

        let (_, parsed) =
            X509Certificate::from_der(&leaf).map_err(|e| SignerError::Certificate {
                what: cert_what.clone(),
                reason: format!("not a valid X.509 certificate: {e}"),
            })?;
        let certificate_key = certificate_public_key(&parsed, &cert_what)?;
        let serial_decimal = parsed.serial.to_str_radix(10);
        let subject = parsed.subject().to_string();
        let not_after = unix_to_system_time(parsed.validity().not_after.timestamp());

        let key_what = describe(input.private_key_path);
        let key = load_private_key(input.private_key, input.passphrase, &key_what)?;
        let key_type = key.key_type();
        if !key_type.same_family(&certificate_key.key_type) {
            return Err(SignerError::KeyTypeMismatch {
                what: key_what,
                key: key_type,
                certificate: certificate_key.key_type,
            });
        }
        if !key.matches(&certificate_key) {
            return Err(SignerError::KeyCertificateMismatch { what: key_what });
        }

        let b64 = base64::engine::general_purpose::STANDARD;
        let chain_b64 = (!certificates.is_empty()).then(|| {
            certificates
                .iter()
                .map(|der| b64.encode(der.as_ref()))
                .collect::<Vec<_>>()
                .join(",")
        });
        Ok(X509Signer {
            key,
            leaf_b64: b64.encode(leaf.as_ref()),
            chain_b64,
            chain_len: certificates.len(),
            serial_decimal,
            subject,
            not_after,
        })
    }

    /// `AWS4-X509-RSA-SHA256` or `AWS4-X509-ECDSA-SHA256`.
    pub fn algorithm(&self) -> &'static str {
        self.key.algorithm()
    }

    pub fn key_type(&self) -> KeyType {
        self.key.key_type()
    }

    /// The certificate serial number in decimal.
    pub fn serial_decimal(&self) -> &str {
        &self.serial_decimal
    }

    /// The certificate subject as RFC 4514 text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the certificate expires; Roles Anywhere refuses it afterwards.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Number of intermediates sent in `X-Amz-X509-Chain`.
    pub fn intermediates(&self) -> usize {
        self.chain_len
    }

    /// Signs `request` in place for `service` in `region` at time `now`: sets `Host` (when
    /// missing), `X-Amz-Date`, `X-Amz-X509`, `X-Amz-X509-Chain` (when there are
    /// intermediates) and `Authorization`. Every header present, except the few that HTTP
    /// layers rewrite (`User-Agent`, `Content-Length`, ...), is signed.
    pub fn sign<B: AsRef<[u8]>>(
        &self,
        request: &mut http::Request<B>,
        region: &str,
        service: &str,
        now: SystemTime,
    ) -> Result<(), SignerError> {
        let (amz_date, date) = amz_date(now)?;
        let headers = request.headers_mut();
        headers.remove(http::header::AUTHORIZATION);
        set_header(headers, HEADER_X_AMZ_DATE, &amz_date)?;
        set_header(headers, HEADER_X_AMZ_X509, &self.leaf_b64)?;
        match &self.chain_b64 {
            Some(chain) => set_header(headers, HEADER_X_AMZ_X509_CHAIN, chain)?,
            None => {
                headers.remove(HEADER_X_AMZ_X509_CHAIN);
            }
        }
        if !request.headers().contains_key(http::header::HOST) {
            let authority = request
                .uri()
                .authority()
                .ok_or_else(|| SignerError::Request("request URI has no host".into()))?;
            if authority.as_str().contains('@') {
                return Err(SignerError::Request(
                    "request URI must not contain user information".into(),
                ));
            }
            let host = authority.as_str().to_owned();
            set_header(request.headers_mut(), "host", &host)?;
        }

        let canonical = canonical_request(
            request.method().as_str(),
            request.uri(),
            request.headers(),
            request.body().as_ref(),
        )?;
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = string_to_sign(self.algorithm(), &amz_date, &scope, &canonical.canonical);
        let signature = hex::encode(self.key.sign(to_sign.as_bytes())?);
        let authorization = format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
            self.algorithm(),
            self.serial_decimal,
            canonical.signed_headers,
        );
        let mut value = http::HeaderValue::try_from(authorization)
            .map_err(|_| SignerError::Request("authorization header is not valid".into()))?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
        Ok(())
    }
}

fn set_header(
    headers: &mut http::HeaderMap,
    name: &'static str,
    value: &str,
) -> Result<(), SignerError> {
    let value = http::HeaderValue::try_from(value).map_err(|_| {
        SignerError::Request(format!("value for {name} is not a valid header value"))
    })?;
    headers.insert(http::HeaderName::from_static(name), value);
    Ok(())
}

/// `(YYYYMMDDTHHMMSSZ, YYYYMMDD)` in UTC.
fn amz_date(now: SystemTime) -> Result<(String, String), SignerError> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let amz = time::OffsetDateTime::from(now)
        .format(&format)
        .map_err(|_| SignerError::Request("time cannot be formatted".into()))?;
    let date = amz.get(..8).unwrap_or_default().to_owned();
    Ok((amz, date))
}

fn unix_to_system_time(seconds: i64) -> SystemTime {
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

/// A SigV4 canonical request and its signed-headers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The full canonical request text (hashed into the string to sign).
    pub canonical: String,
    /// `content-type;host;...`: lowercase names, sorted, `;`-separated.
    pub signed_headers: String,
}

/// Builds the SigV4 canonical request: method, URI path, canonical query string, canonical
/// headers, signed headers and the hex SHA-256 of the payload, separated by newlines.
pub fn canonical_request(
    method: &str,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<CanonicalRequest, SignerError> {
    let path = match uri.path() {
        "" => "/".to_owned(),
        path => canonical_path(path),
    };
    let query = canonical_query_string(uri.query().unwrap_or(""));

    // Collect values per lowercase name; repeated headers are joined with commas in order.
    let mut by_name: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (name, value) in headers {
        // `http::HeaderName` is already lowercase.
        let name = name.as_str();
        if UNSIGNED_HEADERS.contains(&name) {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            SignerError::Request(format!(
                "header {name} is not visible ASCII and cannot be signed"
            ))
        })?;
        by_name
            .entry(name)
            .or_default()
            .push(canonical_header_value(value));
    }
    let mut canonical_headers = String::new();
    for (name, values) in &by_name {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = by_name.keys().copied().collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex_sha256(body)
    );
    Ok(CanonicalRequest {
        canonical,
        signed_headers,
    })
}

/// The string to sign: algorithm, time, credential scope, hex SHA-256 of the canonical
/// request.
pub fn string_to_sign(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The URI path with every byte outside RFC 3986's unreserved set (and `/`) percent-encoded.
/// As in SigV4 for every service but S3, an already-encoded path is encoded again (`%2F`
/// becomes `%252F`).
pub fn canonical_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, RFC3986_PATH).to_string()
}

/// Sorts query parameters by name then value, each RFC 3986-encoded (`%20` for a space,
/// `+` in the input meaning a space as in form encoding); a name without `=` gets an empty
/// value.
pub fn canonical_query_string(query: &str) -> String {
    let decode = |s: &str| -> Vec<u8> {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).collect()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_encoding::percent_encode(&decode(name), RFC3986).to_string(),
                percent_encoding::percent_encode(&decode(value), RFC3986).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value with surrounding whitespace trimmed and inner runs of spaces and tabs
/// folded to one space.
pub fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, SignerError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SignerError::Certificate {
            what: what.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })
}

fn certificate_public_key(
    certificate: &X509Certificate<'_>,
    what: &str,
) -> Result<CertificateKey, SignerError> {
    let spki = certificate.public_key();
    let algorithm = &spki.algorithm.algorithm;
    let parsed = spki.parsed().map_err(|e| SignerError::Certificate {
        what: what.to_owned(),
        reason: format!("unreadable public key: {e}"),
    })?;
    let mut key = CertificateKey {
        key_type: KeyType::Unsupported(algorithm.to_id_string()),
        rsa_modulus: Vec::new(),
        rsa_exponent: Vec::new(),
        ec_point: Vec::new(),
    };
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        if let x509_parser::public_key::PublicKey::RSA(rsa) = &parsed {
            key.key_type = KeyType::Rsa {
                bits: rsa.key_size(),
            };
            key.rsa_modulus = rsa.modulus.to_vec();
            key.rsa_exponent = rsa.exponent.to_vec();
        }
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        key.key_type = match curve {
            Some(oid) if oid == OID_EC_P256 => KeyType::EcP256,
            Some(oid) if oid == OID_NIST_EC_P384 => KeyType::EcP384,
            Some(oid) => KeyType::Unsupported(format!("EC curve {}", oid.to_id_string())),
            None => KeyType::Unsupported("EC without a named curve".into()),
        };
        key.ec_point = spki.subject_public_key.data.to_vec();
    }
    if let KeyType::Unsupported(_) = key.key_type {
        return Err(SignerError::Certificate {
            what: what.to_owned(),
            reason: format!(
                "public key type {} is not supported by Roles Anywhere (RSA, EC P-256, EC P-384)",
                key.key_type
            ),
        });
    }
    Ok(key)
}

/// Reads the key passphrase from an environment variable or a file (one trailing newline
/// removed, as editors and `echo` add one).
pub fn read_passphrase(
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, SignerError> {
    if let Some(name) = env {
        return match std::env::var(name) {
            Ok(value) => Ok(Some(SecretString::from(value))),
            Err(std::env::VarError::NotPresent) => Err(SignerError::Passphrase(format!(
                "environment variable {name} is not set"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(SignerError::Passphrase(format!(
                "environment variable {name} is not valid UTF-8"
            ))),
        };
    }
    if let Some(path) = file {
        let mut text = std::fs::read_to_string(path).map_err(|source| SignerError::Read {
            what: "passphrase file",
            path: path.to_owned(),
            source,
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        return Ok(Some(SecretString::from(text)));
    }
    Ok(None)
}

const ENCRYPTED_PKCS8_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_PKCS8_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

fn key_error(what: &str, reason: impl Into<String>) -> SignerError {
    SignerError::Key {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

fn load_private_key(
    pem: &[u8],
    passphrase: Option<&SecretString>,
    what: &str,
) -> Result<SigningKey, SignerError> {
    let text = std::str::from_utf8(pem).map_err(|_| key_error(what, "is not PEM text"))?;
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(key_error(
            what,
            "uses legacy OpenSSL PEM encryption, which is not supported; convert it with \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc`",
        ));
    }
    if let Some(start) = text.find(ENCRYPTED_PKCS8_BEGIN) {
        let end = text[start..]
            .find(ENCRYPTED_PKCS8_END)
            .map(|i| start + i + ENCRYPTED_PKCS8_END.len())
            .ok_or_else(|| key_error(what, "ENCRYPTED PRIVATE KEY block is not terminated"))?;
        let passphrase = passphrase.ok_or_else(|| {
            key_error(
                what,
                "is encrypted but no passphrase is configured \
                 (private_key_passphrase_env or private_key_passphrase_file)",
            )
        })?;
        let (_, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[start..end])
            .map_err(|_| key_error(what, "ENCRYPTED PRIVATE KEY block is not valid PEM"))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|_| key_error(what, "ENCRYPTED PRIVATE KEY is not valid PKCS#8"))?;
        // The decryption error is deliberately not detailed: it only says "wrong passphrase
        // or unsupported scheme", which is all that is known without leaking anything.
        let decrypted = encrypted
            .decrypt(passphrase.expose_secret().as_bytes())
            .map_err(|_| {
                key_error(
                    what,
                    "cannot be decrypted: wrong passphrase or unsupported encryption scheme \
                     (PBES2 with PBKDF2 or scrypt and AES-CBC is supported)",
                )
            })?;
        // `SecretDocument` wipes itself on drop.
        return load_pkcs8(decrypted.as_bytes(), what);
    }

    // Wiped on drop, on every path out of this function.
    let der = zeroize::Zeroizing::new(PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => key_error(
            what,
            "no PEM private key found (expected RSA PRIVATE KEY, PRIVATE KEY, EC PRIVATE KEY \
             or ENCRYPTED PRIVATE KEY)",
        ),
        // Stay generic: PEM errors can quote the offending line.
        _ => key_error(what, "is not valid PEM"),
    })?);
    match &*der {
        PrivateKeyDer::Pkcs1(rsa) => RsaKeyPair::from_der(rsa.secret_pkcs1_der())
            .map(SigningKey::Rsa)
            .map_err(|e| {
                key_error(
                    what,
                    format!(
                        "is not a usable PKCS#1 RSA key ({e}); RSA keys must be 2048 to 8192 bits"
                    ),
                )
            }),
        PrivateKeyDer::Pkcs8(pkcs8) => load_pkcs8(pkcs8.secret_pkcs8_der(), what),
        PrivateKeyDer::Sec1(sec1) => load_sec1(sec1.secret_sec1_der(), what),
        _ => Err(key_error(what, "has an unsupported format")),
    }
}

fn load_pkcs8(der: &[u8], what: &str) -> Result<SigningKey, SignerError> {
    let info =
        pkcs8::PrivateKeyInfo::try_from(der).map_err(|_| key_error(what, "is not valid PKCS#8"))?;
    let oid = info.algorithm.oid;
    if oid == pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1") {
        return RsaKeyPair::from_pkcs8(der)
            .map(SigningKey::Rsa)
            .map_err(|e| {
                key_error(
                    what,
                    format!("is not a usable RSA key ({e}); RSA keys must be 2048 to 8192 bits"),
                )
            });
    }
    if oid == pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1") {
        let curve = info.algorithm.parameters_oid().ok();
        return match curve.map(|c| c.to_string()).as_deref() {
            Some("1.2.840.10045.3.1.7") => {
                EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, der)
                    .map(SigningKey::EcP256)
                    .map_err(|e| key_error(what, format!("is not a usable EC P-256 key ({e})")))
            }
            Some("1.3.132.0.34") => p384::SecretKey::from_pkcs8_der(der)
                .map(|secret| SigningKey::EcP384(secret.into()))
                .map_err(|_| key_error(what, "is not a usable EC P-384 key")),
            Some(other) => Err(key_error(
                what,
                format!("uses EC curve {other}; only P-256 and P-384 are supported"),
            )),
            None => Err(key_error(what, "is an EC key without a named curve")),
        };
    }
    Err(key_error(
        what,
        format!("has algorithm {oid}; only RSA and EC (P-256, P-384) keys are supported"),
    ))
}

fn load_sec1(der: &[u8], what: &str) -> Result<SigningKey, SignerError> {
    // The curve parameter of an ECPrivateKey is optional, so try both curves; each parser
    // rejects a key whose curve parameter or scalar length belongs to the other.
    if let Ok(key) = EcdsaKeyPair::from_private_key_der(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        der,
    ) {
        return Ok(SigningKey::EcP256(key));
    }
    if let Ok(secret) = p384::SecretKey::from_sec1_der(der) {
        return Ok(SigningKey::EcP384(secret.into()));
    }
    Err(key_error(
        what,
        "is not a usable SEC1 EC key (only P-256 and P-384 are supported)",
    ))
}

#[cfg(test)]
mod tests;
