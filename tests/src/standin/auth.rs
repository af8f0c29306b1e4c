//! The password exchanges Redshift offers: md5 (code 5) and its SHA-256 digest (code 13).
//! Never SCRAM: Redshift offers none, and the ODBC driver's libpq numbers 10/11/12 as GSS /
//! SSPI, so offering SASL would start GSSAPI there (research redshift-server.md §2).

use md5::Md5;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The method the stand-in asked a client for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// AuthenticationMD5Password (code 5): `"md5" + md5hex(md5hex(password + user) + salt)`.
    Md5,
    /// Redshift's AUTH_REQ_DIGEST (code 13), algorithm 0 (SHA-256).
    Sha256Digest,
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::Sha256Digest => "sha256-digest",
        })
    }
}

/// A stored password of a static user, in Redshift's forms (DG r_CREATE_USER):
/// `md5<md5hex(password + user)>` or `sha256|<hex D1>|<64-hex salt>` with
/// `D1 = SHA-256(password ‖ salt)`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredVerifier {
    /// `md5hex(password + user)` (32 hex digits, without the `md5` prefix).
    Md5(String),
    /// D1 and the salt, raw.
    Sha256 { d1: [u8; 32], salt: Vec<u8> },
}

impl std::fmt::Debug for StoredVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoredVerifier::Md5(_) => "StoredVerifier::Md5(..)",
            StoredVerifier::Sha256 { .. } => "StoredVerifier::Sha256(..)",
        })
    }
}

impl StoredVerifier {
    /// Parses `md5…` or `sha256|…|…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(hex_part) = text.strip_prefix("md5") {
            if hex_part.len() == 32 && hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(StoredVerifier::Md5(hex_part.to_ascii_lowercase()));
            }
            return Err("an md5 verifier is `md5` and 32 hex digits".to_owned());
        }
        let mut parts = text.split('|');
        if let (Some("sha256"), Some(d1), Some(salt), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            let d1: [u8; 32] = hex::decode(d1)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or("the sha256 digest must be 64 hex digits")?;
            // DG r_CREATE_USER: "the salt is 64 hex characters (256 bits)".
            let salt = hex::decode(salt)
                .ok()
                .filter(|s| s.len() == 32)
                .ok_or("the sha256 salt must be 64 hex digits")?;
            return Ok(StoredVerifier::Sha256 { d1, salt });
        }
        Err("a verifier is `md5<32 hex>` or `sha256|<64 hex digest>|<64 hex salt>`".to_owned())
    }

    /// `md5` + md5hex(password + user), as Redshift stores a plaintext password.
    pub fn md5_for(user: &str, password: &str) -> String {
        format!("md5{}", md5_hex(&[password.as_bytes(), user.as_bytes()]))
    }

    /// `sha256|<hex D1>|<hex salt>` for `password` and `salt` (32 bytes).
    pub fn sha256_for(password: &str, salt: &[u8; 32]) -> String {
        format!(
            "sha256|{}|{}",
            hex::encode(d1(password.as_bytes(), salt)),
            hex::encode(salt)
        )
    }

    /// The method a user with this verifier is challenged with (INFERRED, research §1: a
    /// user stored as sha256 gets code 13, an md5 user code 5).
    pub fn method(&self) -> AuthMethod {
        match self {
            StoredVerifier::Md5(_) => AuthMethod::Md5,
            StoredVerifier::Sha256 { .. } => AuthMethod::Sha256Digest,
        }
    }
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// D1 = SHA-256(password ‖ salt).
pub(crate) fn d1(password: &[u8], salt: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(password)
        .chain_update(salt)
        .finalize()
        .into()
}

/// D2 = SHA-256(D1 ‖ serverNonce ‖ clientNonce), what the client sends (raw bytes
/// throughout; research §1, identical in JDBC, PY and ODBC).
pub(crate) fn d2(d1: &[u8; 32], server_nonce: &[u8], client_nonce: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(d1)
        .chain_update(server_nonce)
        .chain_update(client_nonce)
        .finalize()
        .into()
}

/// The client's answer to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// PasswordMessage of an md5 exchange: `md5` + 32 hex digits.
    Md5(String),
    /// Message `'d'`: the digest and the client's nonce (any length, any bytes: JDBC and PY
    /// send the time in milliseconds as ASCII, ODBC 16 random bytes).
    Digest {
        digest: Vec<u8>,
        client_nonce: Vec<u8>,
    },
}

impl Answer {
    /// Parses the answer message (`'p'` for md5, `'d'` for the digest).
    pub(crate) fn parse(method: AuthMethod, tag: u8, body: &[u8]) -> Option<Answer> {
        match (method, tag) {
            (AuthMethod::Md5, b'p') => {
                let text = body.strip_suffix(&[0])?;
                Some(Answer::Md5(String::from_utf8(text.to_vec()).ok()?))
            }
            (AuthMethod::Sha256Digest, b'd') => {
                let take = |at: usize| -> Option<(Vec<u8>, usize)> {
                    let len = u32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
                    Some((body.get(at + 4..at + 4 + len)?.to_vec(), at + 4 + len))
                };
                let (digest, next) = take(0)?;
                let (client_nonce, end) = take(next)?;
                (end == body.len()).then_some(Answer::Digest {
                    digest,
                    client_nonce,
                })
            }
            _ => None,
        }
    }
}

/// One challenge the stand-in sent.
#[derive(Debug, Clone)]
pub(crate) enum Challenge {
    Md5 { salt: [u8; 4] },
    Digest { salt: Vec<u8>, nonce: Vec<u8> },
}

impl Challenge {
    /// A fresh challenge; the digest salt is `salt` when the user's verifier fixes it
    /// (a static sha256 user), else random 32 bytes (INFERRED: the stored salt is 256 bits,
    /// research §1). The server nonce length is UNCONFIRMED; 16 bytes.
    pub(crate) fn new(method: AuthMethod, salt: Option<&[u8]>) -> Challenge {
        match method {
            AuthMethod::Md5 => Challenge::Md5 {
                salt: rand::random(),
            },
            AuthMethod::Sha256Digest => Challenge::Digest {
                salt: salt.map_or_else(|| rand::random::<[u8; 32]>().to_vec(), <[u8]>::to_vec),
                nonce: rand::random::<[u8; 16]>().to_vec(),
            },
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Challenge::Md5 { salt } => super::protocol::auth_md5(*salt),
            Challenge::Digest { salt, nonce } => super::protocol::auth_digest(salt, nonce),
        }
    }

    /// Whether `answer` proves knowledge of the plaintext `password` of `user`.
    pub(crate) fn verify_password(
        &self,
        answer: &Answer,
        user: &str,
        password: &SecretString,
    ) -> bool {
        // What a verifier made from `password` for this challenge would store.
        let password = password.expose_secret().as_bytes();
        let stored = match self {
            Challenge::Md5 { .. } => StoredVerifier::Md5(md5_hex(&[password, user.as_bytes()])),
            Challenge::Digest { salt, .. } => StoredVerifier::Sha256 {
                d1: d1(password, salt),
                salt: salt.clone(),
            },
        };
        self.verify_stored(answer, &stored)
    }

    /// Whether `answer` matches a stored verifier.
    pub(crate) fn verify_stored(&self, answer: &Answer, stored: &StoredVerifier) -> bool {
        match (self, answer, stored) {
            (Challenge::Md5 { salt }, Answer::Md5(sent), StoredVerifier::Md5(inner)) => {
                let expected = format!("md5{}", md5_hex(&[inner.as_bytes(), salt]));
                bool::from(expected.as_bytes().ct_eq(sent.as_bytes()))
            }
            (
                Challenge::Digest { salt, nonce },
                Answer::Digest {
                    digest,
                    client_nonce,
                },
                StoredVerifier::Sha256 { d1, salt: stored },
            ) if salt == stored => {
                let expected = d2(d1, nonce, client_nonce);
                bool::from(expected.as_slice().ct_eq(digest))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_postgres_formula() {
        // postgres-protocol's own md5 hashing gives md5(password + user).
        let stored = postgres_protocol::password::md5(b"secret", "alice");
        assert_eq!(StoredVerifier::md5_for("alice", "secret"), stored);
        let challenge = Challenge::Md5 { salt: [1, 2, 3, 4] };
        let inner = &stored[3..];
        let answer = Answer::Md5(format!(
            "md5{}",
            md5_hex(&[inner.as_bytes(), &[1, 2, 3, 4]])
        ));
        assert!(challenge.verify_password(&answer, "alice", &SecretString::from("secret")));
        assert!(!challenge.verify_password(&answer, "alice", &SecretString::from("other")));
        assert!(challenge.verify_stored(&answer, &StoredVerifier::parse(&stored).unwrap()));
    }

    #[test]
    fn digest_answers_verify_against_password_and_stored_d1() {
        let salt = [5u8; 32];
        let challenge = Challenge::Digest {
            salt: salt.to_vec(),
            nonce: b"server-nonce".to_vec(),
        };
        let client_nonce = b"1700000000000".to_vec();
        let digest = d2(&d1(b"Passw0rd", &salt), b"server-nonce", &client_nonce).to_vec();
        let answer = Answer::Digest {
            digest,
            client_nonce,
        };
        assert!(challenge.verify_password(&answer, "ignored", &SecretString::from("Passw0rd")));
        let stored = StoredVerifier::parse(&StoredVerifier::sha256_for("Passw0rd", &salt)).unwrap();
        assert_eq!(stored.method(), AuthMethod::Sha256Digest);
        assert!(challenge.verify_stored(&answer, &stored));
        let other =
            StoredVerifier::parse(&StoredVerifier::sha256_for("Passw0rd", &[6u8; 32])).unwrap();
        assert!(!challenge.verify_stored(&answer, &other), "salt differs");
    }

    #[test]
    fn digest_answer_parsing_is_strict() {
        let mut body = 2u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"ab");
        body.extend_from_slice(&1u32.to_be_bytes());
        body.push(b'n');
        assert_eq!(
            Answer::parse(AuthMethod::Sha256Digest, b'd', &body),
            Some(Answer::Digest {
                digest: b"ab".to_vec(),
                client_nonce: b"n".to_vec()
            })
        );
        body.push(0);
        assert_eq!(Answer::parse(AuthMethod::Sha256Digest, b'd', &body), None);
        assert_eq!(Answer::parse(AuthMethod::Md5, b'd', &body), None);
    }

    #[test]
    fn bad_verifiers_are_refused() {
        for bad in ["md5xyz", "sha256|00|00", "plain", "sha256|a|b|c"] {
            assert!(StoredVerifier::parse(bad).is_err(), "{bad}");
        }
    }
}
