//! Password logins of local users (`password` listeners): the server side of the three
//! methods a user's verifier can select (see [`proxy_config::PasswordVerifier`]).
//!
//! - [`scram`]: SCRAM-SHA-256 in PostgreSQL's SASL messages.
//! - [`md5`]: PostgreSQL's md5 challenge (auth code 5).
//! - [`redshift_digest`]: Redshift's SHA-256 digest challenge (auth code 13).
//!
//! The exchanges are pure computation; the wire messages around them are the frontend's.
//! What all three hold to:
//!
//! - **Unknown users look like wrong passwords.** An unknown user is challenged with the
//!   listener's most common method, against a mock verifier whose salt is derived from the
//!   user name with a key made from the listener's verifiers (stable across restarts,
//!   unpredictable to clients), and fails at the proof like a wrong password. Only when a
//!   listener mixes methods can a client tell from the challenge that a name exists.
//! - **Constant-time comparison** of whatever the client proves.
//! - **Locked users and addresses** run the whole exchange and fail at its end, exactly
//!   like a wrong password.

mod error;
pub mod md5;
pub mod redshift_digest;
pub mod scram;

pub use error::PasswordError;

use proxy_config::{
    ListenerConfig, PasswordMethod, PasswordVerifier, RedshiftSha256Verifier, ScramVerifier,
    REDSHIFT_SALT_LEN,
};
use scram::primitives::hmac;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;

/// The local users of one `password` listener and their verifiers.
pub struct LocalUsers {
    users: HashMap<String, PasswordVerifier>,
    /// Key for the salts of users that do not exist.
    mock_key: [u8; 32],
    /// How users that do not exist are challenged.
    mock_method: PasswordMethod,
    mock_iterations: u32,
}

impl fmt::Debug for LocalUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalUsers")
            .field("users", &self.users.len())
            .field("mock_method", &self.mock_method)
            .finish_non_exhaustive()
    }
}

impl LocalUsers {
    /// The `[[listener.users]]` of `listener` (validated, so names are unique).
    pub fn from_listener(listener: &ListenerConfig) -> LocalUsers {
        // Validation parsed every verifier; one that does not parse lets nobody in.
        LocalUsers::new(listener.users.iter().filter_map(|u| {
            u.password_verifier
                .parse()
                .ok()
                .map(|v| (u.name.clone(), v))
        }))
    }

    /// Users in configuration order (the order decides ties of the mock method).
    pub fn new(users: impl IntoIterator<Item = (String, PasswordVerifier)>) -> LocalUsers {
        let users: Vec<(String, PasswordVerifier)> = users.into_iter().collect();
        let mock_iterations = users
            .iter()
            .find_map(|(_, v)| match v {
                PasswordVerifier::ScramSha256(s) => Some(s.iterations),
                _ => None,
            })
            .unwrap_or(scram::DEFAULT_ITERATIONS);
        LocalUsers {
            mock_key: mock_key(&users),
            mock_method: most_common_method(&users),
            mock_iterations,
            users: users.into_iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The method a login of `user` runs: its verifier's, or the mock's for an unknown
    /// user.
    pub fn method_for(&self, user: &str) -> PasswordMethod {
        self.users
            .get(user)
            .map_or(self.mock_method, PasswordVerifier::method)
    }

    /// Starts a login for the startup `user`, known or not, with the method its verifier
    /// selects.
    pub fn begin(&self, user: &str) -> PasswordLogin {
        match self.users.get(user) {
            Some(PasswordVerifier::ScramSha256(v)) => {
                PasswordLogin::Scram(scram::ScramExchange::new(v.clone(), true))
            }
            Some(PasswordVerifier::Md5(v)) => {
                PasswordLogin::Md5(md5::Md5Challenge::new(Some(v.digest)))
            }
            Some(PasswordVerifier::RedshiftSha256(v)) => {
                PasswordLogin::RedshiftSha256(redshift_digest::DigestChallenge::new(v, true))
            }
            None => self.mock(user),
        }
    }

    fn mock(&self, user: &str) -> PasswordLogin {
        let salt = |label: &[u8]| hmac(&self.mock_key, &[label, b"\0", user.as_bytes()].concat());
        match self.mock_method {
            PasswordMethod::ScramSha256 => PasswordLogin::Scram(scram::ScramExchange::new(
                ScramVerifier {
                    iterations: self.mock_iterations,
                    salt: salt(b"scram")[..scram::SALT_LEN].to_vec(),
                    stored_key: rand::random(),
                    server_key: rand::random(),
                },
                false,
            )),
            PasswordMethod::Md5 => PasswordLogin::Md5(md5::Md5Challenge::new(None)),
            PasswordMethod::RedshiftSha256 => {
                let verifier = RedshiftSha256Verifier {
                    digest: rand::random(),
                    salt: salt(b"sha256")[..REDSHIFT_SALT_LEN]
                        .try_into()
                        .expect("HMAC-SHA-256 is 32 bytes"),
                };
                PasswordLogin::RedshiftSha256(redshift_digest::DigestChallenge::new(
                    &verifier, false,
                ))
            }
        }
    }
}

/// Derived from secrets only the configuration holds, so mock salts stay the same across
/// restarts (a salt that changed would mark the user as unknown) and cannot be predicted
/// by a client.
fn mock_key(users: &[(String, PasswordVerifier)]) -> [u8; 32] {
    let mut sorted: Vec<&(String, PasswordVerifier)> = users.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(b"redshift-iam-proxy password mock salt\0");
    for (name, v) in &sorted {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(v.to_text().as_bytes());
        h.update([0]);
    }
    if sorted.is_empty() {
        h.update(rand::random::<[u8; 32]>());
    }
    h.finalize().into()
}

/// The method most users have; ties go to the one listed first. SCRAM when there are no
/// users.
fn most_common_method(users: &[(String, PasswordVerifier)]) -> PasswordMethod {
    let mut counts: Vec<(PasswordMethod, usize)> = Vec::new();
    for (_, v) in users {
        match counts.iter_mut().find(|(m, _)| *m == v.method()) {
            Some((_, n)) => *n += 1,
            None => counts.push((v.method(), 1)),
        }
    }
    // `max_by_key` keeps the last of equal maxima; reversed, that is the first listed.
    counts
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(m, _)| m)
        .unwrap_or(PasswordMethod::ScramSha256)
}

/// One login of a local user, in the method its verifier selects.
#[derive(Debug)]
pub enum PasswordLogin {
    Scram(scram::ScramExchange),
    Md5(md5::Md5Challenge),
    RedshiftSha256(redshift_digest::DigestChallenge),
}

impl PasswordLogin {
    pub fn method(&self) -> PasswordMethod {
        match self {
            PasswordLogin::Scram(_) => PasswordMethod::ScramSha256,
            PasswordLogin::Md5(_) => PasswordMethod::Md5,
            PasswordLogin::RedshiftSha256(_) => PasswordMethod::RedshiftSha256,
        }
    }

    /// Refuses the login at its end whatever the client proves (a locked user or
    /// address); nothing before that differs from an open one.
    pub fn lock(&mut self) {
        match self {
            PasswordLogin::Scram(e) => e.lock(),
            PasswordLogin::Md5(c) => c.lock(),
            PasswordLogin::RedshiftSha256(c) => c.lock(),
        }
    }
}

/// The outcome once the client's proof was checked: `known` and `locked` as the exchange
/// recorded them.
fn judge(proof_ok: bool, known: bool, locked: bool) -> Result<(), PasswordError> {
    match (proof_ok, known, locked) {
        (_, _, true) => Err(PasswordError::Locked),
        (true, true, false) => Ok(()),
        (_, false, false) => Err(PasswordError::UnknownUser),
        (false, true, false) => Err(PasswordError::WrongPassword),
    }
}

#[cfg(test)]
mod tests;
