//! PostgreSQL's md5 password challenge (auth code 5), server side, and the verifiers
//! `hash-password --method md5` writes.
//!
//! ```text
//! proxy:  AuthenticationMD5Password salt(4 random bytes)
//! client: PasswordMessage "md5" + hex(md5(hex(md5(password ‖ user)) ‖ salt))
//! ```
//!
//! The verifier is `md5(password ‖ user)`: bound to the user name and password-equivalent.
//! TLS keeps the exchange from eavesdroppers; the salt only keeps a recorded answer from
//! being replayed.

use super::{judge, PasswordError};
use ::md5::{Digest as _, Md5};
use proxy_config::Md5Verifier;
use std::fmt;
use subtle::ConstantTimeEq;

/// The verifier PostgreSQL stores for `password` of `user`.
pub fn hash_password(user: &str, password: &str) -> Md5Verifier {
    let digest = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    Md5Verifier {
        digest: digest.into(),
    }
}

/// The answer a client holding `verifier` gives to `salt`: `"md5" + 32 hex digits`.
pub fn response(verifier: &[u8; 16], salt: [u8; 4]) -> [u8; 35] {
    let inner = hex::encode(verifier);
    let outer = Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    let mut out = [0u8; 35];
    out[..3].copy_from_slice(b"md5");
    hex::encode_to_slice(outer, &mut out[3..]).expect("16 bytes are 32 hex digits");
    out
}

/// One md5 challenge.
pub struct Md5Challenge {
    salt: [u8; 4],
    /// `None` for a user that does not exist.
    verifier: Option<[u8; 16]>,
    locked: bool,
}

impl fmt::Debug for Md5Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Md5Challenge").finish_non_exhaustive()
    }
}

impl Md5Challenge {
    pub(crate) fn new(verifier: Option<[u8; 16]>) -> Md5Challenge {
        Md5Challenge {
            salt: rand::random(),
            verifier,
            locked: false,
        }
    }

    /// The salt to send in AuthenticationMD5Password.
    pub fn salt(&self) -> [u8; 4] {
        self.salt
    }

    pub(crate) fn lock(&mut self) {
        self.locked = true;
    }

    /// Checks the client's PasswordMessage (its string, without the terminating NUL).
    pub fn verify(&self, answer: &[u8]) -> Result<(), PasswordError> {
        if answer.len() != 35 || !answer.starts_with(b"md5") {
            return Err(PasswordError::Malformed {
                method: "md5",
                detail: "The password is not an md5 response.",
            });
        }
        // A mock user compares against a random verifier, taking the same time.
        let verifier = self.verifier.unwrap_or_else(rand::random);
        let expected = response(&verifier, self.salt);
        // Hex from clients may be upper-case; PostgreSQL compares lower-case text.
        let answer = answer.to_ascii_lowercase();
        let proof_ok: bool = expected.ct_eq(&answer[..]).into();
        judge(proof_ok, self.verifier.is_some(), self.locked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresqls_own_client_computation_is_accepted() {
        let verifier = hash_password("etl", "pencil");
        let challenge = Md5Challenge::new(Some(verifier.digest));
        // tokio-postgres's client side, independent of this module.
        let answer =
            postgres_protocol::authentication::md5_hash(b"etl", b"pencil", challenge.salt());
        assert_eq!(challenge.verify(answer.as_bytes()), Ok(()));
    }

    #[test]
    fn the_verifier_is_postgresqls_rolpassword() {
        // md5('pencil' || 'etl'), what PostgreSQL stores with password_encryption = md5.
        assert_eq!(
            hash_password("etl", "pencil").to_text(),
            "md5b287cfdd4fdfbce9ca5e821ced1f044c"
        );
    }

    #[test]
    fn wrong_passwords_other_users_and_unknown_users_fail() {
        let verifier = hash_password("etl", "pencil");
        let challenge = Md5Challenge::new(Some(verifier.digest));
        let salt = challenge.salt();
        let wrong = postgres_protocol::authentication::md5_hash(b"etl", b"pen", salt);
        assert_eq!(
            challenge.verify(wrong.as_bytes()),
            Err(PasswordError::WrongPassword)
        );
        // The same password under another name is another verifier.
        let other_user = postgres_protocol::authentication::md5_hash(b"bi", b"pencil", salt);
        assert_eq!(
            challenge.verify(other_user.as_bytes()),
            Err(PasswordError::WrongPassword)
        );
        let unknown = Md5Challenge::new(None);
        let answer = postgres_protocol::authentication::md5_hash(b"etl", b"pencil", unknown.salt());
        assert_eq!(
            unknown.verify(answer.as_bytes()),
            Err(PasswordError::UnknownUser)
        );
    }

    #[test]
    fn a_locked_login_fails_even_with_the_right_password() {
        let verifier = hash_password("etl", "pencil");
        let mut challenge = Md5Challenge::new(Some(verifier.digest));
        challenge.lock();
        let answer =
            postgres_protocol::authentication::md5_hash(b"etl", b"pencil", challenge.salt());
        assert_eq!(
            challenge.verify(answer.as_bytes()),
            Err(PasswordError::Locked)
        );
    }

    #[test]
    fn a_cleartext_password_or_garbage_is_malformed() {
        let challenge = Md5Challenge::new(Some(hash_password("etl", "pencil").digest));
        for answer in [&b"pencil"[..], b"", b"md5", &[0xff; 35]] {
            assert!(matches!(
                challenge.verify(answer),
                Err(PasswordError::Malformed { .. })
            ));
        }
    }
}
