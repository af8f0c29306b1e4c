//! Temporary AWS credentials issued by `CreateSession`, remembered so that later SigV4 calls
//! can be verified against them.

use rand::distr::{Alphanumeric, Distribution};
use rand::Rng;
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::Mutex;
use time::OffsetDateTime;

/// One issued set of temporary credentials.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: SecretString,
    pub(crate) session_token: SecretString,
    pub(crate) role_arn: String,
    /// The role session name (`assumed-role/<Role>/<session>`).
    pub(crate) session_name: String,
    pub(crate) issued_at: OffsetDateTime,
    pub(crate) expiration: OffsetDateTime,
    /// Certificate CN of the Roles Anywhere session.
    pub(crate) source_identity: Option<String>,
    /// Revoked (like IAM's "revoke active sessions"): later calls are denied explicitly.
    pub(crate) revoked: bool,
}

impl Session {
    /// The role's stable unique ID (`AROA…`).
    pub(crate) fn role_id(&self) -> String {
        role_id(&self.role_arn)
    }

    /// `aws:userid` and CloudTrail's `principalId` of an assumed role:
    /// `<role id>:<session name>` (research aws-iam.md §1).
    pub(crate) fn principal_id(&self) -> String {
        format!("{}:{}", self.role_id(), self.session_name)
    }

    /// `arn:aws:sts::<account>:assumed-role/<RoleName>/<session name>`.
    pub(crate) fn assumed_role_arn(&self) -> String {
        assumed_role_arn(&self.role_arn, &self.session_name)
    }

    /// The account of the role.
    pub(crate) fn account(&self) -> &str {
        super::roles_anywhere::arn_account(&self.role_arn).unwrap_or("000000000000")
    }
}

/// `arn:aws:sts::<account>:assumed-role/<RoleName>/<session name>` (the role's path is not
/// part of it).
pub(crate) fn assumed_role_arn(role_arn: &str, session_name: &str) -> String {
    format!(
        "arn:aws:sts::{}:assumed-role/{}/{session_name}",
        super::roles_anywhere::arn_account(role_arn).unwrap_or("000000000000"),
        super::roles_anywhere::role_name(role_arn)
    )
}

/// A role's unique ID as IAM makes them when the role is created: `AROA` and 17 characters
/// of the base32 alphabet. Stable per role ARN (research aws-iam.md §6: the role ID is the
/// role's, not derived from an access key).
pub(crate) fn role_id(role_arn: &str) -> String {
    use sha2::{Digest, Sha256};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(role_arn.as_bytes());
    let mut id = String::from("AROA");
    for byte in digest.iter().take(17) {
        id.push(char::from(ALPHABET[usize::from(byte % 32)]));
    }
    id
}

/// Issued sessions by access key id.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    sessions: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    /// Issues fresh random credentials for `role_arn` and `session_name`, valid from
    /// `issued_at` until `expiration`.
    pub(crate) fn issue(
        &self,
        role_arn: &str,
        session_name: &str,
        issued_at: OffsetDateTime,
        expiration: OffsetDateTime,
        source_identity: Option<String>,
    ) -> Session {
        let session = Session {
            access_key_id: random_access_key_id(),
            secret_access_key: SecretString::from(random_string(40)),
            session_token: SecretString::from(random_string(356)),
            role_arn: role_arn.to_owned(),
            session_name: session_name.to_owned(),
            issued_at,
            expiration,
            source_identity,
            revoked: false,
        };
        self.lock()
            .insert(session.access_key_id.clone(), session.clone());
        session
    }

    pub(crate) fn get(&self, access_key_id: &str) -> Option<Session> {
        self.lock().get(access_key_id).cloned()
    }

    /// Every session issued so far.
    pub(crate) fn all(&self) -> Vec<Session> {
        self.lock().values().cloned().collect()
    }

    /// Makes every issued session expire at `now` (simulates the passage of time).
    pub(crate) fn expire_all(&self, now: OffsetDateTime) {
        for session in self.lock().values_mut() {
            session.expiration = session.expiration.min(now);
        }
    }

    /// Revokes every session issued so far (IAM's "Revoke active sessions": an inline
    /// deny for tokens issued before now).
    pub(crate) fn revoke_all(&self) {
        for session in self.lock().values_mut() {
            session.revoked = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts),
        // so a poisoned lock is still usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `ASIA` + 16 characters of the base32 alphabet, like STS temporary keys.
fn random_access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    let mut id = String::from("ASIA");
    for _ in 0..16 {
        id.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    id
}

/// Random alphanumeric string.
pub(crate) fn random_string(len: usize) -> String {
    Alphanumeric
        .sample_iter(rand::rng())
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn issued_keys_look_like_sts_keys_and_are_remembered() {
        let store = SessionStore::default();
        let expiration = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let now = OffsetDateTime::now_utc();
        let session = store.issue("arn:aws:iam::1:role/r", "s", now, expiration, None);
        assert_eq!(session.access_key_id.len(), 20);
        assert!(session.access_key_id.starts_with("ASIA"));
        assert_eq!(session.secret_access_key.expose_secret().len(), 40);
        let found = store.get(&session.access_key_id).unwrap();
        assert_eq!(found.role_arn, "arn:aws:iam::1:role/r");
        assert!(store.get("ASIAUNKNOWN").is_none());
    }

    #[test]
    fn expire_all_moves_expiration_to_now() {
        let store = SessionStore::default();
        let now = OffsetDateTime::now_utc();
        let session = store.issue(
            "arn:aws:iam::1:role/r",
            "s",
            now,
            now + time::Duration::hours(1),
            None,
        );
        store.expire_all(now);
        assert_eq!(store.get(&session.access_key_id).unwrap().expiration, now);
        store.revoke_all();
        assert!(store.get(&session.access_key_id).unwrap().revoked);
    }

    #[test]
    fn role_ids_are_stable_per_role_and_look_like_iams() {
        let a = role_id("arn:aws:iam::123456789012:role/RedshiftAccess");
        assert_eq!(a.len(), 21);
        assert!(a.starts_with("AROA"));
        assert!(a[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(a, role_id("arn:aws:iam::123456789012:role/RedshiftAccess"));
        assert_ne!(a, role_id("arn:aws:iam::123456789012:role/Other"));
        assert_eq!(
            assumed_role_arn("arn:aws:iam::123456789012:role/path/Reader", "abc"),
            "arn:aws:sts::123456789012:assumed-role/Reader/abc"
        );
    }
}
