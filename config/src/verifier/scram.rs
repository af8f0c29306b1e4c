//! SCRAM-SHA-256 verifiers in PostgreSQL's text form, as stored in `pg_authid.rolpassword`:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64, RFC 5803).
//!
//! A verifier is not a password, but it is what an offline dictionary attack needs, and
//! together its two keys let someone pose as the proxy to a client: it never appears in
//! `Debug` output, logs or errors.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;

pub(super) const PREFIX: &str = "SCRAM-SHA-256$";

/// Fewest PBKDF2 iterations accepted: PostgreSQL's default.
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// Most PBKDF2 iterations accepted. Clients bound what a server may ask of them
/// (tokio-postgres and pgjdbc refuse more than 100000), so a verifier above that would lock
/// those clients out.
pub const MAX_SCRAM_ITERATIONS: u32 = 100_000;

/// Length of StoredKey and ServerKey (SHA-256).
const KEY_LEN: usize = 32;

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

/// Why a text is not a usable verifier. Never contains the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramVerifierError {
    #[error(
        "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, \
         as printed by `redshift-iam-proxy hash-password`)"
    )]
    Format,
    #[error("the iteration count is not a number")]
    Iterations,
    #[error(
        "{0} iterations is outside {MIN_SCRAM_ITERATIONS}..={MAX_SCRAM_ITERATIONS} (clients refuse \
         more than {MAX_SCRAM_ITERATIONS})"
    )]
    IterationRange(u32),
    #[error("the {0} is not valid base64")]
    Base64(&'static str),
    #[error("the salt is empty")]
    EmptySalt,
    #[error("the {0} is not 32 bytes long")]
    KeyLength(&'static str),
}

impl ScramVerifier {
    /// Parses PostgreSQL's text form.
    pub fn parse(text: &str) -> Result<ScramVerifier, ScramVerifierError> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(ScramVerifierError::Format)?;
        let (params, keys) = rest.split_once('$').ok_or(ScramVerifierError::Format)?;
        let (iterations, salt) = params.split_once(':').ok_or(ScramVerifierError::Format)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(ScramVerifierError::Format)?;
        if !iterations.bytes().all(|b| b.is_ascii_digit()) || iterations.is_empty() {
            return Err(ScramVerifierError::Iterations);
        }
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramVerifierError::Iterations)?;
        if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&iterations) {
            return Err(ScramVerifierError::IterationRange(iterations));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramVerifierError::Base64("salt"))?;
        if salt.is_empty() {
            return Err(ScramVerifierError::EmptySalt);
        }
        let key = |text: &str, what: &'static str| -> Result<[u8; KEY_LEN], ScramVerifierError> {
            STANDARD
                .decode(text)
                .map_err(|_| ScramVerifierError::Base64(what))?
                .try_into()
                .map_err(|_| ScramVerifierError::KeyLength(what))
        };
        Ok(ScramVerifier {
            iterations,
            stored_key: key(stored_key, "StoredKey")?,
            server_key: key(server_key, "ServerKey")?,
            salt,
        })
    }

    /// PostgreSQL's text form (what `parse` reads and `CREATE ROLE ... PASSWORD` accepts).
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramVerifier(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT rolpassword FROM pg_authid` for a role created with PASSWORD 'pencil' on
    /// PostgreSQL 15.
    const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

    #[test]
    fn parses_and_prints_postgresqls_form() {
        let v = ScramVerifier::parse(PG_VERIFIER).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(v.to_text(), PG_VERIFIER);
    }

    #[test]
    fn refuses_malformed_verifiers_without_echoing_them() {
        let cases = [
            ("SCRAM-SHA-256$4096:c2FsdA==", ScramVerifierError::Format),
            (
                "SCRAM-SHA-256$x:c2FsdA==$a:b",
                ScramVerifierError::Iterations,
            ),
            (
                "SCRAM-SHA-256$+4096:c2FsdA==$a:b",
                ScramVerifierError::Iterations,
            ),
            (
                "SCRAM-SHA-256$1000:c2FsdA==$a:b",
                ScramVerifierError::IterationRange(1000),
            ),
            (
                "SCRAM-SHA-256$4096:!!$a:b",
                ScramVerifierError::Base64("salt"),
            ),
            ("SCRAM-SHA-256$4096:$a:b", ScramVerifierError::EmptySalt),
            (
                "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=",
                ScramVerifierError::KeyLength("StoredKey"),
            ),
        ];
        for (text, expected) in cases {
            let err = ScramVerifier::parse(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let v = ScramVerifier::parse(PG_VERIFIER).unwrap();
        assert_eq!(format!("{v:?}"), "ScramVerifier(<redacted>)");
    }
}
