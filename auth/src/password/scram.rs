//! SCRAM-SHA-256 for local users: the server side of RFC 5802 / RFC 7677 as PostgreSQL
//! runs it (`SCRAM-SHA-256` in AuthenticationSASL), and the verifiers
//! `redshift-iam-proxy hash-password --method scram-sha-256` writes.
//!
//! - **No channel binding.** Only `SCRAM-SHA-256` is offered, never `-PLUS`, so a client
//!   that demands channel binding (`p=` flag) is refused rather than silently downgraded.
//!   A `y` flag ("I could bind, but the server cannot") is accepted because it is true here
//!   (RFC 5802 §6 makes it an error only for servers that support channel binding). The
//!   `c=` attribute of the final message must repeat the GS2 header exactly.
//! - Malformed messages are refused the same way whether or not the user exists.
//! - Passwords are SASLprep-normalised when hashed, as PostgreSQL and libpq do (falling
//!   back to the raw bytes when SASLprep refuses the string).

use super::{judge, PasswordError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use primitives::{hi, hmac, normalize};
use proxy_config::ScramVerifier;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// The only SASL mechanism offered.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count, and `hash-password`'s.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Salt length of new verifiers (PostgreSQL's).
pub(crate) const SALT_LEN: usize = 16;
/// Random bytes in the server's nonce part (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
const SERVER_NONCE_LEN: usize = 18;

/// A new verifier for `password` with a random salt.
pub fn hash_password(password: &str, iterations: u32) -> ScramVerifier {
    hash_password_with_salt(password, &rand::random::<[u8; SALT_LEN]>(), iterations)
}

fn hash_password_with_salt(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
    // As PostgreSQL's pg_be_scram_build_secret and libpq do: SASLprep when it applies,
    // the raw bytes when the string has prohibited characters.
    let salted = hi(&normalize(password.as_bytes()), salt, iterations);
    let client_key = hmac(&*salted, b"Client Key");
    ScramVerifier {
        iterations,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&*salted, b"Server Key"),
    }
}

enum Stage {
    AwaitingClientFirst,
    AwaitingClientFinal {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Done,
}

/// One SCRAM-SHA-256 exchange: client-first → server-first, client-final → server-final.
pub struct ScramExchange {
    verifier: ScramVerifier,
    known: bool,
    /// Refuse whatever the proof (the exchange itself looks like any other).
    locked: bool,
    stage: Stage,
}

impl ScramExchange {
    /// An exchange against `verifier`; `known` is false for the mock of a user that does
    /// not exist.
    pub(crate) fn new(verifier: ScramVerifier, known: bool) -> ScramExchange {
        ScramExchange {
            verifier,
            known,
            locked: false,
            stage: Stage::AwaitingClientFirst,
        }
    }
}

impl fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramExchange").finish_non_exhaustive()
    }
}

/// The message as text: SCRAM messages are UTF-8 without NUL bytes.
fn message_text(message: &[u8]) -> Result<&str, PasswordError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| PasswordError::scram("The message is not valid UTF-8."))?;
    if text.contains('\0') {
        return Err(PasswordError::scram("The message contains a NUL byte."));
    }
    Ok(text)
}

/// RFC 5802 `printable`: the characters a nonce may have.
fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An `attr=value` extension attribute (RFC 5802 `attr-val`).
fn is_attribute(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b'='
}

impl ScramExchange {
    /// Takes the client-first-message, returns the server-first-message.
    pub fn client_first(&mut self, message: &[u8]) -> Result<String, PasswordError> {
        let server_nonce = STANDARD.encode(rand::random::<[u8; SERVER_NONCE_LEN]>());
        self.client_first_with_nonce(message, &server_nonce)
    }

    fn client_first_with_nonce(
        &mut self,
        message: &[u8],
        server_nonce: &str,
    ) -> Result<String, PasswordError> {
        if !matches!(self.stage, Stage::AwaitingClientFirst) {
            return Err(PasswordError::OutOfOrder);
        }
        self.stage = Stage::Done;
        let text = message_text(message)?;

        let (flag, rest) = text.split_once(',').ok_or(PasswordError::scram(
            "Comma expected after the channel-binding flag.",
        ))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(PasswordError::ChannelBindingNotOffered),
            _ => {
                return Err(PasswordError::scram(
                    "Unexpected channel-binding flag in client-first-message.",
                ))
            }
        }
        let (authzid, bare) = rest.split_once(',').ok_or(PasswordError::scram(
            "Comma expected after the authorization identity.",
        ))?;
        if !authzid.is_empty() {
            return Err(if authzid.starts_with("a=") {
                PasswordError::AuthorizationIdentity
            } else {
                PasswordError::scram("Unexpected attribute in client-first-message.")
            });
        }
        let gs2_header = &text[..flag.len() + authzid.len() + 2];

        let mut attrs = bare.split(',');
        let username = attrs.next().unwrap_or_default();
        if username.starts_with("m=") {
            return Err(PasswordError::scram(
                "Mandatory extensions are not supported.",
            ));
        }
        // PostgreSQL ignores this name (libpq sends it empty): the startup `user` counts.
        if !username.starts_with("n=") {
            return Err(PasswordError::scram(
                "Expected the user name attribute \"n\".",
            ));
        }
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(PasswordError::scram("Expected the nonce attribute \"r\"."))?;
        if !is_printable_nonce(client_nonce) {
            return Err(PasswordError::scram("The client nonce is not printable."));
        }
        if !attrs.all(is_attribute) {
            return Err(PasswordError::scram(
                "Malformed extension in client-first-message.",
            ));
        }

        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.stage = Stage::AwaitingClientFinal {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first)
    }

    /// Refuses the exchange at its end whatever the client proves (a locked user or
    /// address); nothing before that differs from an open one.
    pub fn lock(&mut self) {
        self.locked = true;
    }

    /// Takes the client-final-message; returns the server-final-message when the client
    /// proved the password.
    pub fn client_final(&mut self, message: &[u8]) -> Result<String, PasswordError> {
        let Stage::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Err(PasswordError::OutOfOrder);
        };
        let text = message_text(message)?;

        let parts: Vec<&str> = text.split(',').collect();
        let channel_binding = parts[0].strip_prefix("c=").ok_or(PasswordError::scram(
            "Expected the channel binding attribute \"c\".",
        ))?;
        let client_nonce = parts
            .get(1)
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(PasswordError::scram("Expected the nonce attribute \"r\"."))?;
        let last = parts[parts.len() - 1];
        let proof = match (parts.len() >= 3, last.strip_prefix("p=")) {
            (true, Some(p)) => p,
            _ => {
                return Err(PasswordError::scram(
                    "Expected the proof attribute \"p\" at the end of client-final-message.",
                ))
            }
        };
        if !parts[2..parts.len() - 1].iter().all(|a| is_attribute(a)) {
            return Err(PasswordError::scram(
                "Malformed extension in client-final-message.",
            ));
        }
        let channel_binding = STANDARD.decode(channel_binding).map_err(|_| {
            PasswordError::scram("Invalid base64 in the channel binding attribute.")
        })?;
        let proof: [u8; 32] = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(PasswordError::scram(
                "Malformed proof in client-final-message.",
            ))?;
        if channel_binding != gs2_header.as_bytes() {
            return Err(PasswordError::ChannelBindingMismatch);
        }
        if client_nonce != nonce {
            return Err(PasswordError::NonceMismatch);
        }

        let without_proof = &text[..text.len() - last.len() - 1];
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        let proof_ok: bool = stored_key.ct_eq(&self.verifier.stored_key).into();
        judge(proof_ok, self.known, self.locked)?;
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

pub mod primitives;

#[cfg(test)]
mod tests;
