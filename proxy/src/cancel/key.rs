//! The cancel keys the proxy hands its clients (BackendKeyData: a 4-byte "process id" and
//! a 4-byte secret), and what they tell an instance about where a session lives.
//!
//! Alone, an instance's keys are wholly random. With `[peering] id`, they follow
//! PgBouncer's peering layout (pgbouncer `src/objects.c`, `accept_cancel_request` and
//! `accept_cancel_request_for_peer`; `include/bouncer.h`, `CANCELLATION_TTL_MASK`):
//!
//! ```text
//! pid    byte 0: random, sign bit clear (clients expect a positive pid)
//!        byte 1: the instance id
//!        bytes 2-3: random
//! secret bytes 0-2: random
//!        byte 3: random, its two low bits the TTL: 3 as issued, one less per forward
//! ```
//!
//! An instance that receives a key naming another id forwards it with the TTL lowered; at
//! TTL 0 it drops it, so peer tables that point in a circle cannot bounce a request
//! forever. The owner compares keys with the TTL bits set back to 3. That leaves 53 random
//! bits (PgBouncer's 8-byte layout keeps 45), guessed at most 20 times a second per
//! address.

use rand::Rng;

/// The key a client received from the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyKey {
    pub pid: i32,
    pub secret: [u8; 4],
}

/// Low bits of the secret's last byte: how many more times a request may be forwarded.
const TTL_MASK: u8 = 0b11;

impl ProxyKey {
    /// A fresh key; with an instance id, one that names it.
    pub fn random(instance: Option<u8>, rng: &mut impl Rng) -> ProxyKey {
        let Some(id) = instance else {
            return ProxyKey {
                pid: rng.random_range(1..i32::MAX),
                secret: rng.random(),
            };
        };
        let mut pid: [u8; 4] = rng.random();
        pid[0] &= 0x7f;
        pid[1] = id;
        let mut secret: [u8; 4] = rng.random();
        secret[3] |= TTL_MASK;
        ProxyKey {
            pid: i32::from_be_bytes(pid),
            secret,
        }
    }

    /// The instance a peered key names.
    pub fn instance(pid: i32) -> u8 {
        pid.to_be_bytes()[1]
    }

    /// How many more times a request with this secret may be forwarded.
    pub fn ttl(secret: &[u8]) -> u8 {
        secret.last().map_or(0, |b| b & TTL_MASK)
    }

    /// The secret as the owner issued it (TTL bits set back), for comparison.
    pub fn as_issued(secret: &[u8]) -> Vec<u8> {
        let mut issued = secret.to_vec();
        if let Some(last) = issued.last_mut() {
            *last |= TTL_MASK;
        }
        issued
    }

    /// The secret with its TTL one lower (`ttl` must be above 0).
    pub fn forwarded(secret: &[u8]) -> Vec<u8> {
        let mut next = secret.to_vec();
        if let Some(last) = next.last_mut() {
            let ttl = *last & TTL_MASK;
            *last = (*last & !TTL_MASK) | ttl.saturating_sub(1);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peered_keys_name_their_instance_and_start_with_the_full_ttl() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let key = ProxyKey::random(Some(7), &mut rng);
            assert!(key.pid > 0, "pids stay positive");
            assert_eq!(ProxyKey::instance(key.pid), 7);
            assert_eq!(ProxyKey::ttl(&key.secret), 3);
        }
        let alone = ProxyKey::random(None, &mut rng);
        assert!(alone.pid > 0);
    }

    #[test]
    fn forwarding_lowers_the_ttl_and_the_owner_still_recognises_the_key() {
        let key = ProxyKey::random(Some(2), &mut rand::rng());
        let once = ProxyKey::forwarded(&key.secret);
        let twice = ProxyKey::forwarded(&once);
        let thrice = ProxyKey::forwarded(&twice);
        assert_eq!(
            [&once, &twice, &thrice].map(|s| ProxyKey::ttl(s)),
            [2, 1, 0]
        );
        assert_eq!(ProxyKey::forwarded(&thrice), thrice, "0 stays 0");
        assert_eq!(ProxyKey::as_issued(&thrice), key.secret);
        assert_eq!(&once[..3], &key.secret[..3], "only the TTL bits change");
    }
}
