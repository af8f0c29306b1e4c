//! PostgreSQL's md5 verifier: `md5` followed by the hex MD5 of the password and then the
//! user name (`pg_authid.rolpassword`). It is bound to the user name, and it is
//! password-equivalent: whoever holds it can answer the md5 challenge without the password.

use super::fixed_hex;
use std::fmt;

pub(super) const PREFIX: &str = "md5";

/// A parsed md5 verifier: `md5(password ‖ user)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Verifier {
    /// The 16-byte digest.
    pub digest: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Md5VerifierError {
    #[error("expected md5 followed by 32 hexadecimal digits")]
    Length,
    #[error("the digest is not hexadecimal")]
    Hex,
}

impl Md5Verifier {
    pub fn parse(text: &str) -> Result<Md5Verifier, Md5VerifierError> {
        let hex_digits = text.strip_prefix(PREFIX).ok_or(Md5VerifierError::Length)?;
        if hex_digits.len() != 32 {
            return Err(Md5VerifierError::Length);
        }
        let digest = fixed_hex(hex_digits).ok_or(Md5VerifierError::Hex)?;
        Ok(Md5Verifier { digest })
    }

    /// `md5<32 lower-case hex digits>`, what PostgreSQL stores.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", hex::encode(self.digest))
    }
}

impl fmt::Debug for Md5Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Md5Verifier(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgresqls_form_in_either_case() {
        // md5('pencil' || 'etl'), as `CREATE ROLE etl PASSWORD 'pencil'` stores it with
        // password_encryption = md5.
        let v = Md5Verifier::parse("md5B287CFDD4FDFBCE9CA5E821CED1F044C").unwrap();
        assert_eq!(v.to_text(), "md5b287cfdd4fdfbce9ca5e821ced1f044c");
    }

    #[test]
    fn refuses_other_lengths_and_non_hex() {
        assert_eq!(
            Md5Verifier::parse("md5abc").unwrap_err(),
            Md5VerifierError::Length
        );
        assert_eq!(
            Md5Verifier::parse(&format!("md5{}", "zz".repeat(16))).unwrap_err(),
            Md5VerifierError::Hex
        );
    }
}
