//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for the upstream login, and a
//! cache of salted passwords.
//!
//! `SaltedPassword = Hi(password, salt, iterations)` is PBKDF2 with, against PostgreSQL,
//! 4096 rounds of HMAC-SHA-256: about a millisecond of CPU, on every login, for a value
//! that only changes with the password or the server's salt. Every login with the same
//! temporary credential gets the same salt from the server, so [`SaltedPasswordCache`]
//! keeps the result per (password, salt, iteration count) and later logins skip the
//! PBKDF2. The cache holds a pure function of its key, so nothing a server sends can make
//! it return a wrong value, and a new credential (a new password) never matches an old
//! entry.
//!
//! A salted password lets whoever holds it log in as that user (until the password
//! changes), like the password itself: entries are zeroized when dropped, never logged
//! (`Debug` shows only the number of entries), and bounded in number and age.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// `Hi()`, for callers of the client (and the upstream_auth fuzz target).
pub use proxy_auth::password::scram::primitives::hi;
use proxy_auth::password::scram::primitives::{hmac, normalize};

type HmacSha256 = Hmac<Sha256>;

/// Highest iteration count accepted from a server: the count drives the PBKDF2 loop, so a
/// hostile server could otherwise make each login burn seconds of CPU. 100,000 is the cap
/// of postgres-protocol and pgjdbc (CVE-2026-42198), about 24 times PostgreSQL's default.
pub const MAX_ITERATIONS: u32 = 100_000;

/// Salted passwords kept per upstream endpoint: one per live credential is needed.
pub(crate) const CACHE_CAPACITY: usize = 1024;

/// Entries unused this long are dropped: temporary credentials last at most an hour before
/// the proxy fetches a new one (with a new password).
pub(crate) const CACHE_IDLE: Duration = Duration::from_secs(3600);

/// Why a SCRAM exchange failed, in words for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("server-first-message rejected: {0}")]
    ServerFirst(&'static str),
    #[error("server-first-message rejected: iteration count {0} exceeds {MAX_ITERATIONS}")]
    TooManyIterations(u32),
    #[error("server-final-message rejected: {0}")]
    ServerFinal(&'static str),
    /// The server sent `e=...` instead of its signature.
    #[error("server-final-message rejected: server reported error {0:?}")]
    ServerReported(String),
    #[error("server-final-message rejected: the server signature does not match")]
    BadServerSignature,
}

/// The channel binding the client announces in its gs2 header.
#[derive(Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// `n`: the client cannot bind (the server offered binding for a certificate the
    /// client has no `tls-server-end-point` hash for).
    Unsupported,
    /// `y`: the client could bind, but the server did not offer it (so a stripped
    /// SCRAM-SHA-256-PLUS offer is detected by the server).
    NotOffered,
    /// `p=tls-server-end-point`, with the hash of the server's certificate.
    TlsServerEndPoint(Vec<u8>),
}

impl ChannelBinding {
    fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBinding::Unsupported => "n,,",
            ChannelBinding::NotOffered => "y,,",
            ChannelBinding::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            ChannelBinding::TlsServerEndPoint(hash) => hash,
            _ => &[],
        }
    }
}

/// One SCRAM exchange, from the client-first-message to checking the server's signature.
pub struct ScramClient {
    binding: ChannelBinding,
    nonce: String,
    /// SASLprep-normalized where possible, as PostgreSQL does.
    password: Zeroizing<Vec<u8>>,
}

/// A parsed and checked server-first-message.
pub struct ServerFirst {
    message: String,
    nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// What the client sends last, and the signature the server must answer with.
pub struct ClientFinal {
    pub message: String,
    server_signature: [u8; 32],
}

impl ScramClient {
    pub fn new(password: &[u8], binding: ChannelBinding) -> Self {
        let mut raw = [0u8; 18];
        rand::rng().fill_bytes(&mut raw);
        // Base64 is printable and has no ',' as the nonce grammar requires.
        Self::with_nonce(password, binding, B64.encode(raw))
    }

    fn with_nonce(password: &[u8], binding: ChannelBinding, nonce: String) -> Self {
        ScramClient {
            binding,
            nonce,
            password: normalize(password),
        }
    }

    /// The normalized password, the input of [`hi`] and of the cache.
    pub(crate) fn password(&self) -> &[u8] {
        &self.password
    }

    /// `client-first-message-bare`. The user name is empty: PostgreSQL takes it from the
    /// StartupMessage.
    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// The client-first-message (the SASLInitialResponse data).
    pub fn client_first(&self) -> String {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare())
    }

    /// Parses the server-first-message: `r=<client nonce><server nonce>,s=<salt>,i=<n>`.
    pub fn server_first(&self, data: &[u8]) -> Result<ServerFirst, ScramError> {
        let message = std::str::from_utf8(data)
            .map_err(|_| ScramError::ServerFirst("not UTF-8"))?
            .to_string();
        let mut parts = message.split(',');
        let mut field = |name: &'static str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .ok_or(ScramError::ServerFirst("malformed"))
        };
        let nonce = field("r=")?.to_string();
        let salt = field("s=")?;
        let iterations = field("i=")?;
        // Extensions would follow; PostgreSQL sends none and RFC 5802 defines none here.
        if parts.next().is_some() {
            return Err(ScramError::ServerFirst("unexpected attributes"));
        }
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::ServerFirst(
                "the nonce does not extend the client's",
            ));
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::ServerFirst("invalid nonce"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::ServerFirst("the salt is not base64"))?;
        if salt.is_empty() {
            return Err(ScramError::ServerFirst("empty salt"));
        }
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or(ScramError::ServerFirst("invalid iteration count"))?;
        if iterations > MAX_ITERATIONS {
            return Err(ScramError::TooManyIterations(iterations));
        }
        Ok(ServerFirst {
            message,
            nonce,
            salt,
            iterations,
        })
    }

    /// The client-final-message with its proof, from the salted password of `first`.
    pub fn client_final(&self, first: &ServerFirst, salted_password: &[u8; 32]) -> ClientFinal {
        let mut cbind = self.binding.gs2_header().as_bytes().to_vec();
        cbind.extend_from_slice(self.binding.data());
        let without_proof = format!("c={},r={}", B64.encode(cbind), first.nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare(),
            first.message,
            without_proof
        );
        let client_key = Zeroizing::new(hmac(salted_password, b"Client Key"));
        let stored_key: [u8; 32] = Sha256::digest(*client_key).into();
        let mut proof = hmac(&stored_key, auth_message.as_bytes());
        proof
            .iter_mut()
            .zip(client_key.iter())
            .for_each(|(p, k)| *p ^= k);
        let server_key = Zeroizing::new(hmac(salted_password, b"Server Key"));
        ClientFinal {
            message: format!("{without_proof},p={}", B64.encode(proof)),
            server_signature: hmac(&*server_key, auth_message.as_bytes()),
        }
    }
}

impl ClientFinal {
    /// Checks the server-final-message: the server proves it knows the password (or its
    /// verifier). Without this a man in the middle with a valid certificate could complete
    /// the login by itself.
    pub fn verify(&self, data: &[u8]) -> Result<(), ScramError> {
        let message =
            std::str::from_utf8(data).map_err(|_| ScramError::ServerFinal("not UTF-8"))?;
        if let Some(error) = message.strip_prefix("e=") {
            let shown: String = error.chars().take(100).collect();
            return Err(ScramError::ServerReported(shown));
        }
        let verifier = message
            .strip_prefix("v=")
            .map(|v| v.split(',').next().unwrap_or_default())
            .ok_or(ScramError::ServerFinal("malformed"))?;
        let verifier = B64
            .decode(verifier)
            .map_err(|_| ScramError::ServerFinal("the signature is not base64"))?;
        if bool::from(verifier.ct_eq(&self.server_signature)) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient").finish_non_exhaustive()
    }
}

/// Salted passwords by (password, salt, iteration count); see the module documentation.
pub(crate) struct SaltedPasswordCache {
    /// Keys entries by an HMAC of their inputs under this random key, so the map holds
    /// neither the password nor an unkeyed hash of it.
    key: Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    capacity: usize,
    idle: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Entry {
    salted: Zeroizing<[u8; 32]>,
    used: Instant,
}

/// Where a salted password goes in the cache.
pub(crate) struct CacheKey([u8; 32]);

impl Default for SaltedPasswordCache {
    fn default() -> Self {
        Self::new(CACHE_CAPACITY, CACHE_IDLE)
    }
}

impl std::fmt::Debug for SaltedPasswordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaltedPasswordCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl SaltedPasswordCache {
    pub fn new(capacity: usize, idle: Duration) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut key[..]);
        SaltedPasswordCache {
            key,
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            idle,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn key(&self, password: &[u8], salt: &[u8], iterations: u32) -> CacheKey {
        let mut mac =
            HmacSha256::new_from_slice(&self.key[..]).expect("HMAC takes keys of any length");
        // Length-prefixed, so no two different inputs share an encoding.
        mac.update(&iterations.to_be_bytes());
        mac.update(&(salt.len() as u64).to_be_bytes());
        mac.update(salt);
        mac.update(password);
        CacheKey(mac.finalize().into_bytes().into())
    }

    /// The salted password for `key`, if cached and not idle for too long.
    pub fn get(&self, key: &CacheKey) -> Option<Zeroizing<[u8; 32]>> {
        let now = Instant::now();
        let mut entries = self.lock();
        let found = match entries.get_mut(&key.0) {
            Some(e) if now.duration_since(e.used) < self.idle => {
                e.used = now;
                Some(e.salted.clone())
            }
            Some(_) => {
                entries.remove(&key.0);
                None
            }
            None => None,
        };
        drop(entries);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a salted password, making room by dropping idle entries, then the least
    /// recently used one.
    pub fn insert(&self, key: CacheKey, salted: &[u8; 32]) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key.0) {
            entries.retain(|_, e| now.duration_since(e.used) < self.idle);
            if entries.len() >= self.capacity {
                let oldest = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key.0,
            Entry {
                salted: Zeroizing::new(*salted),
                used: now,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// (hits, misses) so far.
    #[cfg(test)]
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // Nothing can be left half-updated by a panic in the code above.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    #[test]
    fn rfc7677_example_exchange() {
        let client = ScramClient::with_nonce(
            b"pencil",
            ChannelBinding::Unsupported,
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(client.client_first(), "n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        let first = client
            .server_first(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        assert_eq!(first.iterations, 4096);
        // The RFC's exchange names the user ("n=user"), PostgreSQL's leaves it empty, so
        // the proof differs from the RFC's; recompute the RFC's with its bare message.
        let salted = hi(client.password(), &first.salt, first.iterations);
        let rfc_auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_key = hmac(&*salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let mut proof = hmac(&stored_key, rfc_auth_message.as_bytes());
        proof.iter_mut().zip(client_key).for_each(|(p, k)| *p ^= k);
        assert_eq!(
            B64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac(&hmac(&*salted, b"Server Key"), rfc_auth_message.as_bytes());
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        // And the message this client sends carries the same channel binding and nonce.
        let last = client.client_final(&first, &salted);
        assert!(last
            .message
            .starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="));
        let expected = B64.encode(last.server_signature);
        assert_eq!(last.verify(format!("v={expected}").as_bytes()), Ok(()));
        assert_eq!(
            last.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            last.verify(b"e=invalid-proof"),
            Err(ScramError::ServerReported("invalid-proof".into()))
        );
    }

    #[test]
    fn server_first_messages_that_are_refused() {
        let client = ScramClient::with_nonce(b"pw", ChannelBinding::NotOffered, "abc".into());
        let refused = |m: &str| client.server_first(m.as_bytes()).err();
        assert!(refused("r=abcdef,s=c2FsdA==,i=4096").is_none());
        assert_eq!(
            refused("r=abc,s=c2FsdA==,i=4096"),
            Some(ScramError::ServerFirst(
                "the nonce does not extend the client's"
            ))
        );
        assert!(refused("r=xyzdef,s=c2FsdA==,i=4096").is_some());
        assert!(refused("r=abcdef,s=!!,i=4096").is_some());
        assert!(refused("r=abcdef,s=,i=4096").is_some());
        assert!(refused("r=abcdef,s=c2FsdA==,i=0").is_some());
        assert!(refused("r=abcdef,s=c2FsdA==").is_some());
        assert!(refused("r=abcdef,s=c2FsdA==,i=4096,x=1").is_some());
        assert_eq!(
            refused("r=abcdef,s=c2FsdA==,i=100001"),
            Some(ScramError::TooManyIterations(100_001))
        );
    }

    #[test]
    fn cache_entries_are_per_password_salt_and_iterations() {
        let cache = SaltedPasswordCache::new(8, CACHE_IDLE);
        let key = cache.key(b"password-1", b"salt", 4096);
        assert!(cache.get(&key).is_none());
        cache.insert(key, &[1; 32]);
        let again = cache.key(b"password-1", b"salt", 4096);
        assert_eq!(*cache.get(&again).unwrap(), [1; 32]);
        // A new credential, a new salt, another iteration count: all misses.
        for other in [
            cache.key(b"password-2", b"salt", 4096),
            cache.key(b"password-1", b"pepper", 4096),
            cache.key(b"password-1", b"salt", 4097),
            // The length prefix keeps salt and password apart.
            cache.key(b"1", b"saltpassword-", 4096),
        ] {
            assert!(cache.get(&other).is_none());
        }
        assert_eq!(cache.stats(), (1, 5));
        // Another cache (another proxy run, another target) keys differently.
        let other_cache = SaltedPasswordCache::new(8, CACHE_IDLE);
        assert_ne!(
            other_cache.key(b"password-1", b"salt", 4096).0,
            cache.key(b"password-1", b"salt", 4096).0
        );
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_idle_entries() {
        let cache = SaltedPasswordCache::new(3, CACHE_IDLE);
        for i in 0..3u8 {
            cache.insert(cache.key(&[i], b"salt", 4096), &[i; 32]);
        }
        // Using entry 0 makes entry 1 the least recently used.
        assert!(cache.get(&cache.key(&[0], b"salt", 4096)).is_some());
        cache.insert(cache.key(&[3], b"salt", 4096), &[3; 32]);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&cache.key(&[1], b"salt", 4096)).is_none());
        assert!(cache.get(&cache.key(&[0], b"salt", 4096)).is_some());
        assert!(cache.get(&cache.key(&[3], b"salt", 4096)).is_some());

        let forgetful = SaltedPasswordCache::new(3, Duration::ZERO);
        forgetful.insert(forgetful.key(b"pw", b"salt", 4096), &[9; 32]);
        assert!(forgetful
            .get(&forgetful.key(b"pw", b"salt", 4096))
            .is_none());
        assert_eq!(forgetful.len(), 0);
    }

    #[test]
    fn debug_output_shows_no_secrets() {
        let cache = SaltedPasswordCache::default();
        cache.insert(cache.key(b"hunter2", b"salt", 4096), &[0xab; 32]);
        let shown = format!("{cache:?}");
        assert_eq!(shown, "SaltedPasswordCache { entries: 1, .. }");
        let client = ScramClient::new(b"hunter2", ChannelBinding::NotOffered);
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
