//! The IAM Roles Anywhere request signer: SigV4's canonical request, signed with an X.509
//! certificate's private key instead of an HMAC secret (`AWS4-X509-RSA-SHA256`,
//! `AWS4-X509-ECDSA-SHA256`). No AWS SDK implements it, hence this hand-written module.
//!
//! Private keys never appear in errors, `Debug` output or logs; errors describe *what* is
//! wrong with a key (format, type, size), never its bytes.

mod canonical;
mod certificate;
mod key;
mod key_type;

pub use canonical::{
    canonical_header_value, canonical_path, canonical_query_string, canonical_request, hex_sha256,
    string_to_sign, CanonicalRequest,
};
pub use key::read_passphrase;
pub use key_type::KeyType;

use base64::Engine as _;
use certificate::{certificate_public_key, parse_certificates};
use key::{load_private_key, SigningKey};
use secrecy::SecretString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// `AWS4-X509-RSA-SHA256`: RSA PKCS#1 v1.5 over SHA-256.
pub const ALG_RSA: &str = "AWS4-X509-RSA-SHA256";
/// `AWS4-X509-ECDSA-SHA256`: ECDSA over SHA-256 (for P-384 too), DER `SEQUENCE{r,s}`.
pub const ALG_ECDSA: &str = "AWS4-X509-ECDSA-SHA256";

pub const HEADER_X_AMZ_DATE: &str = "x-amz-date";
pub const HEADER_X_AMZ_X509: &str = "x-amz-x509";
pub const HEADER_X_AMZ_X509_CHAIN: &str = "x-amz-x509-chain";

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

#[cfg(test)]
mod tests;
