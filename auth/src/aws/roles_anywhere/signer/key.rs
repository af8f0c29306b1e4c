//! The private key: loading it (PKCS#1, PKCS#8, SEC1, encrypted PKCS#8), matching it to
//! the certificate, and signing with the algorithm its type calls for.

use super::certificate::CertificateKey;
use super::key_type::KeyType;
use super::{SignerError, ALG_ECDSA, ALG_RSA};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use p384::ecdsa::signature::hazmat::PrehashSigner;
use p384::pkcs8::DecodePrivateKey as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The loaded private key. Deliberately no `Debug` derive: only the key type is shown.
pub(super) enum SigningKey {
    Rsa(RsaKeyPair),
    EcP256(EcdsaKeyPair),
    /// aws-lc-rs has no P-384 signer over a SHA-256 digest, which this protocol requires.
    EcP384(p384::ecdsa::SigningKey),
}

impl SigningKey {
    pub(super) fn key_type(&self) -> KeyType {
        match self {
            SigningKey::Rsa(key) => KeyType::Rsa {
                bits: key.public_modulus_len() * 8,
            },
            SigningKey::EcP256(_) => KeyType::EcP256,
            SigningKey::EcP384(_) => KeyType::EcP384,
        }
    }

    pub(super) fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => ALG_RSA,
            SigningKey::EcP256(_) | SigningKey::EcP384(_) => ALG_ECDSA,
        }
    }

    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
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
    pub(super) fn matches(&self, certificate: &CertificateKey) -> bool {
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
pub(super) fn ec_points_equal(uncompressed: &[u8], certificate_point: &[u8]) -> bool {
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

pub(super) fn load_private_key(
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
