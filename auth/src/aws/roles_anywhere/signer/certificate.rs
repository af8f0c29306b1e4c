//! The certificate side: the leaf's public key (to match the private key against) and the
//! certificates sent as `X-Amz-X509` and `X-Amz-X509-Chain`.

use super::key_type::KeyType;
use super::SignerError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::X509Certificate;

/// The certificate's public key, as needed for matching.
pub(super) struct CertificateKey {
    pub(super) key_type: KeyType,
    pub(super) rsa_modulus: Vec<u8>,
    pub(super) rsa_exponent: Vec<u8>,
    pub(super) ec_point: Vec<u8>,
}

pub(super) fn parse_certificates(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, SignerError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SignerError::Certificate {
            what: what.to_owned(),
            reason: format!("invalid PEM: {e}"),
        })
}

pub(super) fn certificate_public_key(
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
