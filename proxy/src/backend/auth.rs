//! Password-derived answers to the upstream's authentication requests, and the
//! `tls-server-end-point` channel binding for SCRAM-SHA-256-PLUS.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use std::fmt;

/// How the upstream authenticated the proxy (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// The server sent AuthenticationOk without asking for a password.
    None,
    Cleartext,
    Md5,
    ScramSha256,
    /// SCRAM with `tls-server-end-point` channel binding.
    ScramSha256Plus,
    /// Redshift's AUTH_REQ_DIGEST (code 13) with SHA-256.
    RedshiftDigestSha256,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::None => "none",
            AuthMethod::Cleartext => "password",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "SCRAM-SHA-256",
            AuthMethod::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            AuthMethod::RedshiftDigestSha256 => "redshift-digest-sha256",
        })
    }
}

/// `"md5" + md5hex(md5hex(password + user) + salt)`.
pub(crate) fn md5_password(user: &str, password: &[u8], salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password, salt)
}

/// The client nonce Redshift drivers send: current Unix time in milliseconds, in ASCII.
pub(crate) fn redshift_client_nonce() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    ms.to_string()
}

/// `tls-server-end-point` channel binding data (RFC 5929 §4.1): the hash of the server's
/// leaf certificate, with the hash function of its signature algorithm, except MD5 and
/// SHA-1 which are replaced by SHA-256. `None` when the algorithm has no single hash
/// (e.g. Ed25519) or the certificate cannot be parsed; the caller then does without
/// channel binding, as PostgreSQL itself cannot bind such certificates.
pub(crate) fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::signature_algorithm::SignatureAlgorithm;

    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let sig_oid = cert.signature_algorithm.algorithm.to_id_string();
    let hash = match sig_oid.as_str() {
        // RSASSA-PSS: the hash is in the parameters.
        "1.2.840.113549.1.1.10" => {
            match SignatureAlgorithm::try_from(&cert.signature_algorithm).ok()? {
                SignatureAlgorithm::RSASSA_PSS(params) => {
                    hash_for_digest_oid(&params.hash_algorithm_oid().to_id_string())?
                }
                _ => return None,
            }
        }
        oid => hash_for_signature_oid(oid)?,
    };
    Some(hash.digest(cert_der))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl BindingHash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            BindingHash::Sha224 => Sha224::digest(data).to_vec(),
            BindingHash::Sha256 => Sha256::digest(data).to_vec(),
            BindingHash::Sha384 => Sha384::digest(data).to_vec(),
            BindingHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

fn hash_for_signature_oid(oid: &str) -> Option<BindingHash> {
    Some(match oid {
        // md5WithRSA, sha1WithRSA (PKCS#1 and OIW), ecdsa-with-SHA1, dsa-with-sha1: SHA-256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.3.14.3.2.29"
        | "1.2.840.10045.4.1"
        | "1.2.840.10040.4.3" => BindingHash::Sha256,
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" | "2.16.840.1.101.3.4.3.1" => {
            BindingHash::Sha224
        }
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" | "2.16.840.1.101.3.4.3.2" => {
            BindingHash::Sha256
        }
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => BindingHash::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => BindingHash::Sha512,
        _ => return None,
    })
}

fn hash_for_digest_oid(oid: &str) -> Option<BindingHash> {
    Some(match oid {
        // SHA-1 (the PSS default) and MD5 are upgraded to SHA-256 as for other signatures.
        "1.3.14.3.2.26" | "1.2.840.113549.2.5" | "2.16.840.1.101.3.4.2.1" => BindingHash::Sha256,
        "2.16.840.1.101.3.4.2.4" => BindingHash::Sha224,
        "2.16.840.1.101.3.4.2.2" => BindingHash::Sha384,
        "2.16.840.1.101.3.4.2.3" => BindingHash::Sha512,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_documented_formula() {
        // Computed independently: md5hex(md5hex("secret" + "alice") + salt).
        use md5::{Digest as _, Md5};
        let inner = hex::encode(Md5::digest(b"secretalice"));
        let mut outer = Md5::new();
        outer.update(inner.as_bytes());
        outer.update([1, 2, 3, 4]);
        let expected = format!("md5{}", hex::encode(outer.finalize()));
        assert_eq!(md5_password("alice", b"secret", [1, 2, 3, 4]), expected);
    }

    #[test]
    fn redshift_client_nonce_is_unix_millis() {
        let nonce = redshift_client_nonce();
        let ms: u128 = nonce.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(now >= ms && now - ms < 10_000, "{nonce}");
    }

    fn cert_with(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn channel_binding_hash_follows_the_signature_algorithm() {
        let p256 = cert_with(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = cert_with(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&p384),
            Some(Sha384::digest(&p384).to_vec())
        );
        // Ed25519 has no separate hash: no tls-server-end-point binding is defined.
        let ed = cert_with(&rcgen::PKCS_ED25519);
        assert_eq!(tls_server_end_point(&ed), None);
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
        assert_eq!(
            hash_for_signature_oid("1.2.840.113549.1.1.5"),
            Some(BindingHash::Sha256),
            "sha1WithRSA upgrades to SHA-256"
        );
        assert_eq!(
            hash_for_signature_oid("1.2.840.113549.1.1.13"),
            Some(BindingHash::Sha512)
        );
    }
}
