//! Redshift's SHA-256 verifier, as `CREATE USER ... PASSWORD 'sha256|<digest>|<salt>'`
//! takes it: the digest is the hex SHA-256 of the password bytes followed by the binary
//! salt, the salt 64 hex characters (256 bits)
//! (https://docs.aws.amazon.com/redshift/latest/dg/r_CREATE_USER.html). The digest is what
//! the auth-code-13 exchange hashes with the two nonces, so, like md5, it is
//! password-equivalent.

use super::fixed_hex;
use std::fmt;

pub(super) const PREFIX: &str = "sha256|";
/// Salt length of Redshift's documented form.
pub const REDSHIFT_SALT_LEN: usize = 32;

/// A parsed Redshift SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct RedshiftSha256Verifier {
    /// `SHA-256(password ‖ salt)`.
    pub digest: [u8; 32],
    pub salt: [u8; REDSHIFT_SALT_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedshiftSha256VerifierError {
    #[error("expected sha256|<digest: 64 hex digits>|<salt: 64 hex digits>")]
    Format,
    #[error("the digest is not 64 hexadecimal digits")]
    Digest,
    #[error("the salt is not 64 hexadecimal digits (Redshift's salts are 256 bits)")]
    Salt,
}

impl RedshiftSha256Verifier {
    pub fn parse(text: &str) -> Result<RedshiftSha256Verifier, RedshiftSha256VerifierError> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(RedshiftSha256VerifierError::Format)?;
        // The other documented form, `sha256|<cleartext>`, has no second bar: a password,
        // which is never accepted in the configuration.
        let (digest, salt) = rest
            .split_once('|')
            .ok_or(RedshiftSha256VerifierError::Format)?;
        Ok(RedshiftSha256Verifier {
            digest: fixed_hex(digest).ok_or(RedshiftSha256VerifierError::Digest)?,
            salt: fixed_hex(salt).ok_or(RedshiftSha256VerifierError::Salt)?,
        })
    }

    /// `sha256|<digest>|<salt>` in lower-case hex.
    pub fn to_text(&self) -> String {
        format!(
            "{PREFIX}{}|{}",
            hex::encode(self.digest),
            hex::encode(self.salt)
        )
    }
}

impl fmt::Debug for RedshiftSha256Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedshiftSha256Verifier(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_prints_redshifts_form() {
        let text = format!("sha256|{}|{}", "ab".repeat(32), "cd".repeat(32));
        let v = RedshiftSha256Verifier::parse(&text).unwrap();
        assert_eq!(v.salt, [0xcd; 32]);
        assert_eq!(v.to_text(), text);
    }

    #[test]
    fn a_cleartext_form_is_refused() {
        assert_eq!(
            RedshiftSha256Verifier::parse("sha256|Mypassword1").unwrap_err(),
            RedshiftSha256VerifierError::Format
        );
    }

    #[test]
    fn short_salts_and_digests_are_refused() {
        let short_salt = format!("sha256|{}|{}", "ab".repeat(32), "cd".repeat(16));
        assert_eq!(
            RedshiftSha256Verifier::parse(&short_salt).unwrap_err(),
            RedshiftSha256VerifierError::Salt
        );
        let bad_digest = format!("sha256|{}|{}", "xy".repeat(32), "cd".repeat(32));
        assert_eq!(
            RedshiftSha256Verifier::parse(&bad_digest).unwrap_err(),
            RedshiftSha256VerifierError::Digest
        );
    }
}
