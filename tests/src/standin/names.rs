//! Redshift user and group names as PostgreSQL role names.
//!
//! Redshift allows database users of up to 64 characters (`DbUser`, API_GetClusterCredentials),
//! and the API returns them with an `IAM:`/`IAMA:`/`IAMR:` prefix, so a login name can be 69
//! characters long. PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN − 1), which
//! would silently turn two long names into one role. The stand-in therefore maps a longer
//! name to a deterministic, shortened role name: its first bytes, `~`, and 16 hex digits of
//! the SHA-256 of the whole name. The emulator creates auto-created users under the same
//! name, and in such a session `select current_user` shows the mapped name, not the Redshift
//! one (the one visible difference to Redshift).

use sha2::{Digest, Sha256};

/// PostgreSQL's longest role name in bytes (NAMEDATALEN − 1).
pub const MAX_ROLE_NAME_BYTES: usize = 63;

/// Hex digits of the hash in a mapped name.
const HASH_HEX: usize = 16;

/// The PostgreSQL role that plays the Redshift user or group `name`: `name` itself when it
/// fits in 63 bytes, else `<prefix>~<16 hex digits of SHA-256(name)>` (exactly 63 bytes or
/// fewer when the prefix ends inside a multi-byte character).
pub fn pg_role_name(name: &str) -> String {
    if name.len() <= MAX_ROLE_NAME_BYTES {
        return name.to_owned();
    }
    let mut prefix_len = MAX_ROLE_NAME_BYTES - HASH_HEX - 1;
    while !name.is_char_boundary(prefix_len) {
        prefix_len -= 1;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}~{}", &name[..prefix_len], &digest[..HASH_HEX])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(pg_role_name("IAMA:alice"), "IAMA:alice");
        let exactly = "a".repeat(63);
        assert_eq!(pg_role_name(&exactly), exactly);
    }

    #[test]
    fn long_names_map_to_distinct_63_byte_names() {
        let a = format!("IAMA:{}", "a".repeat(64));
        let b = format!("IAMA:{}b", "a".repeat(63));
        let (ma, mb) = (pg_role_name(&a), pg_role_name(&b));
        assert_eq!(ma.len(), 63);
        assert_eq!(mb.len(), 63);
        assert_ne!(ma, mb);
        assert!(ma.starts_with("IAMA:aaaa"));
        assert_eq!(pg_role_name(&a), ma, "deterministic");
    }

    #[test]
    fn multibyte_prefix_is_cut_at_a_character_boundary() {
        let name = "é".repeat(40);
        let mapped = pg_role_name(&name);
        assert!(mapped.len() <= 63);
        assert!(mapped.contains('~'));
    }
}
