//! The store of database credentials the AWS emulator issued, shared with the Redshift
//! stand-ins that check them at login.
//!
//! Like Redshift, every `GetClusterCredentials` / `GetClusterCredentialsWithIAM` / serverless
//! `GetCredentials` call hands out a new random password that is valid on its own until its
//! expiration: passwords are never reused or extended, and an earlier, unexpired password
//! keeps working after a later call. A credential remembers the database it was issued for
//! (`DbName`) and the groups (`DbGroups`) its sessions join.

use secrecy::SecretString;
use std::sync::{Mutex, MutexGuard, PoisonError};
use time::OffsetDateTime;

/// How long an expired credential is remembered, so that a login with it is refused as
/// *expired* rather than as a wrong password.
const KEEP_EXPIRED: time::Duration = time::Duration::hours(2);

/// What kind of Redshift resource a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A provisioned cluster (`GetClusterCredentials[WithIAM]`).
    Cluster,
    /// A serverless workgroup (`GetCredentials`).
    Workgroup,
}

/// A cluster or workgroup, by kind and name (cluster identifier / workgroup name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetId {
    pub kind: TargetKind,
    pub name: String,
}

impl TargetId {
    pub fn cluster(name: impl Into<String>) -> Self {
        TargetId {
            kind: TargetKind::Cluster,
            name: name.into(),
        }
    }

    pub fn workgroup(name: impl Into<String>) -> Self {
        TargetId {
            kind: TargetKind::Workgroup,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            TargetKind::Cluster => "cluster",
            TargetKind::Workgroup => "workgroup",
        };
        write!(f, "{kind} {}", self.name)
    }
}

/// One issued credential. `Debug` redacts the password (`SecretString`).
#[derive(Debug, Clone)]
pub struct IssuedCredential {
    pub target: TargetId,
    /// The database user as the API returned it (`IAMA:alice`, `IAMR:Role`).
    pub user: String,
    /// `DbName` of the call: the only database the password opens. `None`: any database
    /// (API_GetClusterCredentials: without DbName, "DbUser can log on to any existing
    /// database").
    pub db_name: Option<String>,
    /// `DbGroups` of the call: joined for each session opened with this password.
    pub groups: Vec<String>,
    pub password: SecretString,
    pub issued_at: OffsetDateTime,
    pub expiration: OffsetDateTime,
    /// The AWS request id of the call that issued it.
    pub request_id: String,
}

/// What a new credential is for (everything but the password, which the store makes).
#[derive(Debug, Clone)]
pub struct CredentialRequest {
    pub target: TargetId,
    pub user: String,
    pub db_name: Option<String>,
    pub groups: Vec<String>,
    pub issued_at: OffsetDateTime,
    pub expiration: OffsetDateTime,
    pub request_id: String,
}

/// Issued credentials of every target, shared by the emulator (which adds) and the
/// stand-ins (which check).
#[derive(Debug, Default)]
pub struct IssuedCredentials {
    entries: Mutex<Vec<IssuedCredential>>,
}

impl IssuedCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new credential with a fresh random password and returns the password.
    pub fn issue(&self, request: CredentialRequest) -> SecretString {
        let password = random_password();
        let mut entries = self.lock();
        let forget_before = request.issued_at - KEEP_EXPIRED;
        entries.retain(|e| e.expiration > forget_before);
        entries.push(IssuedCredential {
            target: request.target,
            user: request.user,
            db_name: request.db_name,
            groups: request.groups,
            password: password.clone(),
            issued_at: request.issued_at,
            expiration: request.expiration,
            request_id: request.request_id,
        });
        password
    }

    /// Every remembered credential of `user` on `target`, expired ones included, newest
    /// first.
    pub fn for_user(&self, target: &TargetId, user: &str) -> Vec<IssuedCredential> {
        let mut found: Vec<IssuedCredential> = self
            .lock()
            .iter()
            .filter(|e| &e.target == target && e.user == user)
            .cloned()
            .collect();
        found.reverse();
        found
    }

    /// Every remembered credential of every target, oldest first.
    pub fn all(&self) -> Vec<IssuedCredential> {
        self.lock().clone()
    }

    /// Makes every credential issued so far expire at `now` (simulates the passage of time).
    pub fn expire_all(&self, now: OffsetDateTime) {
        for entry in self.lock().iter_mut() {
            entry.expiration = entry.expiration.min(now);
        }
    }

    /// Number of remembered credentials.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Vec<IssuedCredential>> {
        // Single pushes and field updates: a panic elsewhere cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A random password satisfying Redshift's rules (8–64 printable characters with upper- and
/// lowercase letters and a digit; DG r_CREATE_USER): 32 alphanumerics.
pub fn random_password() -> SecretString {
    use rand::distr::{Alphanumeric, SampleString};
    loop {
        let candidate = Alphanumeric.sample_string(&mut rand::rng(), 32);
        let classes = [
            candidate.bytes().any(|b| b.is_ascii_uppercase()),
            candidate.bytes().any(|b| b.is_ascii_lowercase()),
            candidate.bytes().any(|b| b.is_ascii_digit()),
        ];
        if classes.iter().all(|&ok| ok) {
            return SecretString::from(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn request(user: &str, now: OffsetDateTime, secs: i64) -> CredentialRequest {
        CredentialRequest {
            target: TargetId::cluster("c"),
            user: user.to_owned(),
            db_name: Some("dev".to_owned()),
            groups: vec![],
            issued_at: now,
            expiration: now + time::Duration::seconds(secs),
            request_id: "r".to_owned(),
        }
    }

    #[test]
    fn every_call_gets_its_own_password_and_all_are_kept() {
        let store = IssuedCredentials::new();
        let now = OffsetDateTime::now_utc();
        let a = store.issue(request("IAMA:alice", now, 900));
        let b = store.issue(request("IAMA:alice", now, 900));
        store.issue(request("IAMA:bob", now, 900));
        assert_ne!(a.expose_secret(), b.expose_secret());
        let found = store.for_user(&TargetId::cluster("c"), "IAMA:alice");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].password.expose_secret(), b.expose_secret());
        assert!(store
            .for_user(&TargetId::workgroup("c"), "IAMA:alice")
            .is_empty());
    }

    #[test]
    fn expire_all_and_forgetting_long_expired_ones() {
        let store = IssuedCredentials::new();
        let now = OffsetDateTime::now_utc();
        store.issue(request("u", now - time::Duration::hours(5), 900));
        store.issue(request("u", now, 900));
        // The first one expired more than KEEP_EXPIRED ago: forgotten on the next issue.
        assert_eq!(store.len(), 1);
        store.expire_all(now);
        assert!(store
            .for_user(&TargetId::cluster("c"), "u")
            .iter()
            .all(|e| e.expiration <= now));
    }

    #[test]
    fn passwords_have_all_character_classes() {
        for _ in 0..100 {
            let password = random_password();
            let p = password.expose_secret();
            assert_eq!(p.len(), 32);
            assert!(p.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(p.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(p.bytes().any(|b| b.is_ascii_digit()));
        }
    }
}
