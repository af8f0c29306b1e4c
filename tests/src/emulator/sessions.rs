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
    pub(crate) expiration: OffsetDateTime,
    pub(crate) source_identity: Option<String>,
}

/// Issued sessions by access key id.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    sessions: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    /// Issues fresh random credentials for `role_arn`, valid until `expiration`.
    pub(crate) fn issue(
        &self,
        role_arn: &str,
        expiration: OffsetDateTime,
        source_identity: Option<String>,
    ) -> Session {
        let session = Session {
            access_key_id: random_access_key_id(),
            secret_access_key: SecretString::from(random_string(40)),
            session_token: SecretString::from(random_string(356)),
            role_arn: role_arn.to_owned(),
            expiration,
            source_identity,
        };
        self.lock()
            .insert(session.access_key_id.clone(), session.clone());
        session
    }

    pub(crate) fn get(&self, access_key_id: &str) -> Option<Session> {
        self.lock().get(access_key_id).cloned()
    }

    /// Makes every issued session expire at `now` (simulates the passage of time).
    pub(crate) fn expire_all(&self, now: OffsetDateTime) {
        for session in self.lock().values_mut() {
            session.expiration = session.expiration.min(now);
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

/// Random alphanumeric string (also used for database passwords, see `redshift`).
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
        let session = store.issue("arn:aws:iam::1:role/r", expiration, None);
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
            now + time::Duration::hours(1),
            None,
        );
        store.expire_all(now);
        assert_eq!(store.get(&session.access_key_id).unwrap().expiration, now);
    }
}
