//! The SCRAM-SHA-256 building blocks (RFC 5802 §2.2) shared by the proxy's two SCRAM
//! roles: the server side for `password` listeners (and `hash-password`), and the client
//! side of the upstream login.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::num::NonZeroU32;
use zeroize::Zeroizing;

/// `HMAC(key, data)` with SHA-256.
pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256 with one output block (`i` >= 1).
///
/// aws-lc's PBKDF2 (the TLS stack's crypto library) keys the HMAC once and uses the CPU's
/// SHA extensions: several times faster than HMAC rebuilt per round, in every build
/// profile.
pub fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out[..],
    );
    out
}

/// SASLprep where the password is valid UTF-8 and passes it, the raw bytes otherwise:
/// what PostgreSQL's server and libpq do, since PostgreSQL passwords need not be either.
pub fn normalize(password: &[u8]) -> Zeroizing<Vec<u8>> {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|p| stringprep::saslprep(p).ok())
        .map(|p| p.into_owned().into_bytes());
    Zeroizing::new(prepared.unwrap_or_else(|| password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_matches_pbkdf2_test_vectors() {
        // RFC 7914 §11 (PBKDF2-HMAC-SHA-256), first 32 bytes.
        assert_eq!(
            hex::encode(*hi(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        assert_eq!(
            hex::encode(*hi(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn normalize_applies_saslprep_and_keeps_bytes_it_cannot_prepare() {
        // U+00AD (soft hyphen) is mapped to nothing by SASLprep.
        assert_eq!(&normalize("pass\u{AD}word".as_bytes())[..], b"password");
        // Not UTF-8: used as is.
        assert_eq!(&normalize(b"\xffpw")[..], b"\xffpw");
    }
}
