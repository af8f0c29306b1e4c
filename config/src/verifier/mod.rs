//! Password verifiers of `[[listener.users]]`: what the proxy stores to check a local
//! user's password, never the password. The text's format selects the login method the
//! proxy runs with that user:
//!
//! | text | method | clients that speak it |
//! |---|---|---|
//! | `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` | SCRAM-SHA-256 (SASL) | libpq ≥ 10, pgjdbc, psqlODBC, psycopg, tokio-postgres |
//! | `md5<32 hex>` | md5 (auth code 5) | every PostgreSQL and Redshift driver |
//! | `sha256\|<64 hex digest>\|<64 hex salt>` | Redshift's SHA-256 digest (auth code 13) | the Redshift JDBC, ODBC and Python drivers |
//!
//! The first two are PostgreSQL's `pg_authid.rolpassword` forms, the third Redshift's
//! `CREATE USER ... PASSWORD 'sha256|<digest>|<salt>'` form
//! (https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_USER.html). None of them is
//! ever shown in `Debug` output, logs or errors.

mod md5;
mod scram;
mod sha256;

pub use md5::{Md5Verifier, Md5VerifierError};
pub use scram::{ScramVerifier, ScramVerifierError, MAX_SCRAM_ITERATIONS, MIN_SCRAM_ITERATIONS};
pub use sha256::{RedshiftSha256Verifier, RedshiftSha256VerifierError, REDSHIFT_SALT_LEN};

use serde::Deserialize;
use std::fmt;

/// How a local user proves its password to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordMethod {
    ScramSha256,
    Md5,
    /// Redshift's AUTH_REQ_DIGEST with SHA-256.
    RedshiftSha256,
}

impl PasswordMethod {
    /// The name `hash-password --method` takes, logs and the audit use.
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordMethod::ScramSha256 => "scram-sha-256",
            PasswordMethod::Md5 => "md5",
            PasswordMethod::RedshiftSha256 => "sha256",
        }
    }
}

impl fmt::Display for PasswordMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed verifier.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordVerifier {
    ScramSha256(ScramVerifier),
    Md5(Md5Verifier),
    RedshiftSha256(RedshiftSha256Verifier),
}

impl PasswordVerifier {
    /// Parses any of the three forms; the prefix decides which.
    pub fn parse(text: &str) -> Result<PasswordVerifier, PasswordVerifierError> {
        if text.starts_with(scram::PREFIX) {
            Ok(PasswordVerifier::ScramSha256(ScramVerifier::parse(text)?))
        } else if text.starts_with(sha256::PREFIX) {
            Ok(PasswordVerifier::RedshiftSha256(
                RedshiftSha256Verifier::parse(text)?,
            ))
        } else if text.starts_with(md5::PREFIX) {
            Ok(PasswordVerifier::Md5(Md5Verifier::parse(text)?))
        } else {
            Err(PasswordVerifierError::Format)
        }
    }

    pub fn method(&self) -> PasswordMethod {
        match self {
            PasswordVerifier::ScramSha256(_) => PasswordMethod::ScramSha256,
            PasswordVerifier::Md5(_) => PasswordMethod::Md5,
            PasswordVerifier::RedshiftSha256(_) => PasswordMethod::RedshiftSha256,
        }
    }

    /// The text form `parse` reads.
    pub fn to_text(&self) -> String {
        match self {
            PasswordVerifier::ScramSha256(v) => v.to_text(),
            PasswordVerifier::Md5(v) => v.to_text(),
            PasswordVerifier::RedshiftSha256(v) => v.to_text(),
        }
    }
}

impl fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordVerifier({}, <redacted>)", self.method())
    }
}

/// Why a text is not a usable verifier. Never contains the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordVerifierError {
    #[error(
        "not a password verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, \
         md5<32 hex digits> or sha256|<64 hex digits>|<64 hex digits>, as printed by \
         `redshift-iam-proxy hash-password`)"
    )]
    Format,
    #[error("SCRAM-SHA-256 verifier: {0}")]
    Scram(#[from] ScramVerifierError),
    #[error("md5 verifier: {0}")]
    Md5(#[from] Md5VerifierError),
    #[error("sha256 verifier: {0}")]
    RedshiftSha256(#[from] RedshiftSha256VerifierError),
}

/// A verifier as written in the configuration file. Parsed by validation rather than by
/// the TOML reader, whose errors quote the offending line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PasswordVerifierText(String);

impl PasswordVerifierText {
    pub fn new(text: impl Into<String>) -> Self {
        PasswordVerifierText(text.into())
    }

    pub fn parse(&self) -> Result<PasswordVerifier, PasswordVerifierError> {
        PasswordVerifier::parse(&self.0)
    }
}

impl fmt::Debug for PasswordVerifierText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordVerifierText(<redacted>)")
    }
}

/// Decodes exactly `N` bytes of hex (either case).
fn fixed_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

    #[test]
    fn the_prefix_selects_the_method() {
        let md5 = format!("md5{}", "0a".repeat(16));
        let sha = format!("sha256|{}|{}", "1b".repeat(32), "2c".repeat(32));
        for (text, method) in [
            (SCRAM, PasswordMethod::ScramSha256),
            (md5.as_str(), PasswordMethod::Md5),
            (sha.as_str(), PasswordMethod::RedshiftSha256),
        ] {
            let v = PasswordVerifier::parse(text).unwrap();
            assert_eq!(v.method(), method);
            assert_eq!(v.to_text(), text);
        }
    }

    #[test]
    fn unknown_forms_and_bad_halves_are_refused_without_echoing_them() {
        let cases = [
            ("hunter2", PasswordVerifierError::Format),
            ("", PasswordVerifierError::Format),
            ("md5abc", Md5VerifierError::Length.into()),
            ("sha256|hunter2", RedshiftSha256VerifierError::Format.into()),
            (
                "SCRAM-SHA-256$x:c2FsdA==$a:b",
                ScramVerifierError::Iterations.into(),
            ),
        ];
        for (text, expected) in cases {
            let err = PasswordVerifier::parse(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            if !text.is_empty() {
                assert!(!err.to_string().contains(text), "{err}");
            }
        }
    }

    #[test]
    fn debug_output_is_redacted() {
        let v = PasswordVerifier::parse(SCRAM).unwrap();
        assert_eq!(
            format!("{v:?}"),
            "PasswordVerifier(scram-sha-256, <redacted>)"
        );
        let t = PasswordVerifierText::new(SCRAM);
        assert_eq!(format!("{t:?}"), "PasswordVerifierText(<redacted>)");
    }
}
