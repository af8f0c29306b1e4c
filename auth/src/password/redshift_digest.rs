//! Redshift's SHA-256 digest challenge (AUTH_REQ_DIGEST, auth code 13), both sides, and
//! the verifiers `hash-password --method sha256` writes.
//!
//! ```text
//! server: R 13, algorithm 0 (SHA-256), salt, server nonce   (each length-prefixed)
//! client: 'd' digest(32), client nonce                      (each length-prefixed)
//! digest = SHA-256( SHA-256(password ‖ salt) ‖ server nonce ‖ client nonce )
//! ```
//!
//! The three AWS drivers agree on the computation (every step raw bytes, never hex; the
//! user name is not hashed): Redshift JDBC `ConnectionFactoryImpl` and
//! `util/ExtensibleDigest.java`, redshift_connector `core.py` and
//! `utils/extensible_digest.py`, the ODBC driver's `fe-auth.c`. Their client nonces differ
//! (JDBC and Python: milliseconds since the epoch in ASCII; ODBC: 16 random bytes), so any
//! length is accepted.

use super::{judge, PasswordError};
use proxy_config::{RedshiftSha256Verifier, REDSHIFT_SALT_LEN};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// The only algorithm id the drivers implement (1 and 2 name scrypt and argon2, which
/// they refuse or crash on).
pub const ALGORITHM_SHA256: i32 = 0;
/// Random bytes in the server nonce. The drivers take any length; Redshift's own is
/// UNCONFIRMED (research: redshift-server.md §1).
pub const SERVER_NONCE_LEN: usize = 32;
/// Longest client nonce accepted: real ones are 13 to 16 bytes.
pub const MAX_CLIENT_NONCE: usize = 256;

/// `SHA-256(password ‖ salt)`: what the server stores.
pub fn salted_password(password: &[u8], salt: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(password)
        .chain_update(salt)
        .finalize()
        .into()
}

/// The client's answer: `SHA-256(salted ‖ server nonce ‖ client nonce)`.
pub fn digest(salted: &[u8; 32], server_nonce: &[u8], client_nonce: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(salted)
        .chain_update(server_nonce)
        .chain_update(client_nonce)
        .finalize()
        .into()
}

/// A new verifier for `password` with a random 256-bit salt, in Redshift's
/// `sha256|<digest>|<salt>` form.
pub fn hash_password(password: &str) -> RedshiftSha256Verifier {
    let salt: [u8; REDSHIFT_SALT_LEN] = rand::random();
    RedshiftSha256Verifier {
        digest: salted_password(password.as_bytes(), &salt),
        salt,
    }
}

/// One digest challenge.
pub struct DigestChallenge {
    salt: [u8; REDSHIFT_SALT_LEN],
    server_nonce: [u8; SERVER_NONCE_LEN],
    salted: [u8; 32],
    known: bool,
    locked: bool,
}

impl fmt::Debug for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestChallenge").finish_non_exhaustive()
    }
}

impl DigestChallenge {
    /// A challenge against `verifier`; `known` is false for the mock of a user that does
    /// not exist.
    pub(crate) fn new(verifier: &RedshiftSha256Verifier, known: bool) -> DigestChallenge {
        DigestChallenge {
            salt: verifier.salt,
            server_nonce: rand::random(),
            salted: verifier.digest,
            known,
            locked: false,
        }
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    pub fn server_nonce(&self) -> &[u8] {
        &self.server_nonce
    }

    pub(crate) fn lock(&mut self) {
        self.locked = true;
    }

    /// Checks the client's digest and nonce (from its `d` message).
    pub fn verify(&self, answer: &[u8], client_nonce: &[u8]) -> Result<(), PasswordError> {
        let malformed = |detail| PasswordError::Malformed {
            method: "SHA-256 digest",
            detail,
        };
        let answer: &[u8; 32] = answer
            .try_into()
            .map_err(|_| malformed("The digest is not 32 bytes long."))?;
        if client_nonce.is_empty() || client_nonce.len() > MAX_CLIENT_NONCE {
            return Err(malformed("The client nonce is empty or too long."));
        }
        let expected = digest(&self.salted, &self.server_nonce, client_nonce);
        let proof_ok: bool = expected.ct_eq(answer).into();
        judge(proof_ok, self.known, self.locked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side as redshift_connector writes it (`utils/extensible_digest.py`):
    /// `sha256(sha256(password + salt).digest() + server_nonce + client_nonce).digest()`,
    /// re-stated here with the digest primitive directly.
    fn driver_answer(password: &str, salt: &[u8], server_nonce: &[u8], nonce: &[u8]) -> Vec<u8> {
        let inner = Sha256::digest([password.as_bytes(), salt].concat());
        Sha256::digest([&inner[..], server_nonce, nonce].concat()).to_vec()
    }

    #[test]
    fn a_driver_computed_answer_is_accepted() {
        let verifier = hash_password("Mypassword1");
        let challenge = DigestChallenge::new(&verifier, true);
        let nonce = b"1764979200000";
        let answer = driver_answer(
            "Mypassword1",
            challenge.salt(),
            challenge.server_nonce(),
            nonce,
        );
        assert_eq!(challenge.verify(&answer, nonce), Ok(()));
    }

    #[test]
    fn the_verifier_matches_redshifts_documented_sha2_expression() {
        // r_CREATE_USER: digest = SHA2(CONCAT(password, FROM_HEX(salt)), 0).
        let v = hash_password("Mypassword1");
        let expected = Sha256::digest([&b"Mypassword1"[..], &v.salt].concat());
        assert_eq!(v.digest[..], expected[..]);
        assert_eq!(v.to_text().len(), "sha256|".len() + 64 + 1 + 64);
    }

    #[test]
    fn wrong_passwords_unknown_users_and_locks_fail_alike_for_the_client() {
        let verifier = hash_password("Mypassword1");
        let challenge = DigestChallenge::new(&verifier, true);
        let nonce = &[7u8; 16];
        let wrong = driver_answer(
            "mypassword1",
            challenge.salt(),
            challenge.server_nonce(),
            nonce,
        );
        assert_eq!(
            challenge.verify(&wrong, nonce),
            Err(PasswordError::WrongPassword)
        );
        let unknown = DigestChallenge::new(&verifier, false);
        let right = driver_answer("Mypassword1", unknown.salt(), unknown.server_nonce(), nonce);
        assert_eq!(
            unknown.verify(&right, nonce),
            Err(PasswordError::UnknownUser)
        );
        let mut locked = DigestChallenge::new(&verifier, true);
        locked.lock();
        let right = driver_answer("Mypassword1", locked.salt(), locked.server_nonce(), nonce);
        assert_eq!(locked.verify(&right, nonce), Err(PasswordError::Locked));
    }

    #[test]
    fn the_nonces_bind_the_answer_to_this_challenge() {
        let verifier = hash_password("Mypassword1");
        let first = DigestChallenge::new(&verifier, true);
        let nonce = b"1764979200000";
        let answer = driver_answer("Mypassword1", first.salt(), first.server_nonce(), nonce);
        let replayed_to = DigestChallenge::new(&verifier, true);
        assert_eq!(
            replayed_to.verify(&answer, nonce),
            Err(PasswordError::WrongPassword)
        );
    }

    #[test]
    fn malformed_answers_are_refused() {
        let challenge = DigestChallenge::new(&hash_password("x"), true);
        assert!(matches!(
            challenge.verify(&[0; 31], b"n"),
            Err(PasswordError::Malformed { .. })
        ));
        assert!(matches!(
            challenge.verify(&[0; 32], b""),
            Err(PasswordError::Malformed { .. })
        ));
        assert!(matches!(
            challenge.verify(&[0; 32], &[1; MAX_CLIENT_NONCE + 1]),
            Err(PasswordError::Malformed { .. })
        ));
    }
}
