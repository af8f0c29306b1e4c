//! Which strings may become Redshift database user (and group) names.
//!
//! Certificates are attacker-influenced input: a CN such as `a:b` or `x/../y` must never turn
//! into a `DbUser` (Redshift treats `:` specially, e.g. `IAM:alice`). The rule is deliberately
//! narrower than what Redshift accepts (ASCII only, 64 characters) so that every name the
//! policy grants is unambiguous in logs, in `GetClusterCredentials` and in SQL.

/// Longest accepted name, in characters (`GetClusterCredentials` `DbUser` limit).
pub const MAX_NAME_LEN: usize = 64;

/// Why a string is not an acceptable database user or group name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("must start with an ASCII letter or '_'")]
    BadStart,
    #[error("contains {0:?}; only ASCII letters, digits, '_', '$', '.', '-' and '@' are allowed")]
    BadChar(char),
    #[error("\"public\" is reserved")]
    Reserved,
}

/// Checks a database user or group name: 1–64 characters, the first an ASCII letter or `_`,
/// the rest ASCII letters, digits, `_`, `$`, `.`, `-` or `@`; never `public` (in any case).
pub fn check_name(name: &str) -> Result<(), InvalidName> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(InvalidName::Empty)?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(if is_allowed(first) {
            InvalidName::BadStart
        } else {
            InvalidName::BadChar(first)
        });
    }
    if let Some(bad) = chars.find(|&c| !is_allowed(c)) {
        return Err(InvalidName::BadChar(bad));
    }
    // Only ASCII from here on, so bytes == characters.
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong);
    }
    if name.eq_ignore_ascii_case("public") {
        return Err(InvalidName::Reserved);
    }
    Ok(())
}

/// The name as Redshift sees an unquoted identifier: ASCII letters folded to lower case.
/// `Alice` and `alice` are one database user, so the policy compares and grants folded
/// names.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Users no policy may grant, whatever it says: Redshift's internal superuser `rdsdb`, and
/// the prefixes of system roles (`pg_`, `padb_`). `deny_users` adds the operator's own
/// (by default the console's admin user `awsuser`). Compared folded.
pub fn is_reserved(folded: &str, deny_users: &[String]) -> bool {
    folded == "rdsdb"
        || folded.starts_with("pg_")
        || folded.starts_with("padb_")
        || deny_users.iter().any(|d| fold(d) == folded)
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '-' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "alice",
            "_svc",
            "a",
            "svc_bi$1",
            "alice.smith@corp.example",
            "x-y",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn reserved_users_are_recognised_folded() {
        let deny = vec!["AwsUser".to_string()];
        for name in ["rdsdb", "pg_monitor", "padb_x", "awsuser"] {
            assert!(is_reserved(&fold(name), &deny), "{name}");
        }
        assert!(is_reserved(&fold("RDSDB"), &deny));
        assert!(!is_reserved("alice", &deny));
        assert!(!is_reserved("pgx", &deny));
    }

    #[test]
    fn rejects_hostile_and_malformed_names() {
        assert_eq!(check_name(""), Err(InvalidName::Empty));
        assert_eq!(check_name(&"a".repeat(65)), Err(InvalidName::TooLong));
        assert_eq!(check_name("1abc"), Err(InvalidName::BadStart));
        assert_eq!(check_name(".hidden"), Err(InvalidName::BadStart));
        assert_eq!(check_name("a:b"), Err(InvalidName::BadChar(':')));
        assert_eq!(check_name("IAM:admin"), Err(InvalidName::BadChar(':')));
        assert_eq!(check_name("x/../y"), Err(InvalidName::BadChar('/')));
        assert_eq!(check_name("a b"), Err(InvalidName::BadChar(' ')));
        assert_eq!(check_name("a\0b"), Err(InvalidName::BadChar('\0')));
        assert_eq!(check_name("a\"b"), Err(InvalidName::BadChar('"')));
        assert_eq!(check_name("zoë"), Err(InvalidName::BadChar('ë')));
        assert_eq!(check_name("/etc"), Err(InvalidName::BadChar('/')));
        assert_eq!(check_name("PUBLIC"), Err(InvalidName::Reserved));
        assert_eq!(check_name("public"), Err(InvalidName::Reserved));
    }
}
