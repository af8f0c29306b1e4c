//! Cancel routing: the proxy hands each client its own random BackendKeyData and maps it
//! to the upstream session's real key, so a CancelRequest (which arrives on a new,
//! unauthenticated connection) reaches exactly the right upstream backend.
//!
//! Behind a load balancer the request may reach another instance than the session's:
//! with `[peering]`, keys name their instance ([`key`]) and a request for another one is
//! forwarded to it ([`peers`]).

mod key;
mod limiter;
mod peers;

pub use key::ProxyKey;
pub use peers::PEER_TIMEOUT;

use crate::backend::{BackendKey, UpstreamEndpoint};
use limiter::{RateLimiter, BURST, RATE_PER_SECOND};
use proxy_config::PeeringConfig;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::warn;

struct Entry {
    secret: [u8; 4],
    endpoint: Arc<UpstreamEndpoint>,
    upstream: BackendKey,
}

/// Live sessions by proxy pid, plus the rate limiter for cancel requests.
pub struct CancelRegistry {
    /// `[peering] id`: what this instance's keys carry (fixed for the process's life).
    instance: Option<u8>,
    /// Peered keys share their pid among several sessions (it carries fewer random
    /// bits), so each pid holds the sessions whose keys have it.
    sessions: Mutex<HashMap<i32, Vec<Entry>>>,
    limiter: Mutex<RateLimiter>,
    /// Cancels being forwarded upstream or to peers at once (clients' and the proxy's own).
    in_flight: Semaphore,
}

/// Most cancels forwarded at once; beyond it a cancel is dropped (rate-limited).
const MAX_IN_FLIGHT: usize = 64;

/// Removes the session's entry when the session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    key: ProxyKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.registry.lock_sessions();
        if let Some(entries) = sessions.get_mut(&self.key.pid) {
            entries.retain(|e| e.secret != self.key.secret);
            if entries.is_empty() {
                sessions.remove(&self.key.pid);
            }
        }
    }
}

/// What became of a cancel request. Never reported to the requester (PostgreSQL sends no
/// reply to a CancelRequest), only logged, counted and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Forwarded,
    UnknownKey,
    RateLimited,
    UpstreamFailed,
    /// Handed to the peer instance that issued the key.
    ForwardedToPeer(u8),
    /// The key names an instance that is not among `[[peering.peer]]`.
    UnknownPeer(u8),
    /// The peer could not be reached, or did not take the request in time.
    PeerFailed(u8),
    /// The request was already forwarded as often as its key allows (peer tables that
    /// point in a circle).
    TtlExhausted(u8),
}

impl CancelOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::UnknownKey => "unknown_key",
            CancelOutcome::RateLimited => "rate_limited",
            CancelOutcome::UpstreamFailed => "upstream_failed",
            CancelOutcome::ForwardedToPeer(_) => "forwarded_to_peer",
            CancelOutcome::UnknownPeer(_) => "unknown_peer",
            CancelOutcome::PeerFailed(_) => "peer_failed",
            CancelOutcome::TtlExhausted(_) => "ttl_exhausted",
        }
    }

    /// The peer instance the request was for, when it was not this one.
    pub fn peer(self) -> Option<u8> {
        match self {
            CancelOutcome::ForwardedToPeer(id)
            | CancelOutcome::UnknownPeer(id)
            | CancelOutcome::PeerFailed(id)
            | CancelOutcome::TtlExhausted(id) => Some(id),
            _ => None,
        }
    }
}

/// Who sent a cancel request: the address it is rate-limited by, and the client address a
/// peer is told (`None` for a Unix-socket client).
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    pub rate_limit_key: IpAddr,
    pub addr: Option<SocketAddr>,
}

impl Default for CancelRegistry {
    fn default() -> Self {
        Self::new(None)
    }
}

impl CancelRegistry {
    /// A registry whose keys name `instance` (`[peering] id`), or are wholly random.
    pub fn new(instance: Option<u8>) -> Self {
        CancelRegistry {
            instance,
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(RateLimiter::new(RATE_PER_SECOND, BURST)),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is intact.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a session whose upstream key is `upstream`.
    pub fn register(
        self: &Arc<Self>,
        endpoint: Arc<UpstreamEndpoint>,
        upstream: Option<BackendKey>,
    ) -> (ProxyKey, Option<Registration>) {
        let mut rng = rand::rng();
        let mut sessions = self.lock_sessions();
        loop {
            let key = ProxyKey::random(self.instance, &mut rng);
            let Some(upstream) = &upstream else {
                // Nothing to cancel upstream; the client still gets a well-formed key.
                return (key, None);
            };
            let entries = sessions.entry(key.pid).or_default();
            if entries.iter().any(|e| e.secret == key.secret) {
                continue;
            }
            entries.push(Entry {
                secret: key.secret,
                endpoint: endpoint.clone(),
                upstream: upstream.clone(),
            });
            let registration = Registration {
                registry: self.clone(),
                key,
            };
            return (key, Some(registration));
        }
    }

    /// Number of sessions that can currently be cancelled.
    pub fn len(&self) -> usize {
        self.lock_sessions().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, RateLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles a CancelRequest: rate-limit the requester's address; then a key of another
    /// instance goes to that peer, and one of ours is matched in constant time and
    /// forwarded upstream over verify-full TLS. Both charge the global budget, but only
    /// once the request names a session or a peer: guessed keys cost only their own
    /// address's budget, so a flood of them cannot use up the cancels of everyone else.
    pub async fn cancel(
        &self,
        from: Requester,
        pid: i32,
        secret: &[u8],
        peering: &PeeringConfig,
    ) -> CancelOutcome {
        if !self
            .limiter()
            .allow_peer(from.rate_limit_key, Instant::now())
        {
            return CancelOutcome::RateLimited;
        }
        if let Some(own) = self.instance {
            let owner = ProxyKey::instance(pid);
            if owner != own {
                return self.to_peer(owner, from, pid, secret, peering).await;
            }
        }
        let secret = match self.instance {
            Some(_) => ProxyKey::as_issued(secret),
            None => secret.to_vec(),
        };
        let target = {
            let sessions = self.lock_sessions();
            sessions.get(&pid).and_then(|entries| {
                // Every entry is compared, so the time taken does not tell which matched.
                let mut found = None;
                for e in entries {
                    let matches =
                        secret.len() == e.secret.len() && bool::from(secret.ct_eq(&e.secret));
                    if matches {
                        found = Some((e.endpoint.clone(), e.upstream.clone()));
                    }
                }
                found
            })
        };
        let Some((endpoint, upstream)) = target else {
            return CancelOutcome::UnknownKey;
        };
        self.forward(&endpoint, &upstream).await
    }

    /// Forwards a request for instance `owner` to that peer, its TTL one lower.
    async fn to_peer(
        &self,
        owner: u8,
        from: Requester,
        pid: i32,
        secret: &[u8],
        peering: &PeeringConfig,
    ) -> CancelOutcome {
        let Some(peer) = peering.peer(owner) else {
            return CancelOutcome::UnknownPeer(owner);
        };
        if ProxyKey::ttl(secret) == 0 {
            return CancelOutcome::TtlExhausted(owner);
        }
        let Some(_slot) = self.budget() else {
            return CancelOutcome::RateLimited;
        };
        let secret = ProxyKey::forwarded(secret);
        match peers::send_to_peer(peer, from.addr, pid, &secret).await {
            Ok(()) => CancelOutcome::ForwardedToPeer(owner),
            Err(e) => {
                warn!(peer = owner, address = %peer.address, error = %e, "cancel request could not be forwarded to the peer");
                CancelOutcome::PeerFailed(owner)
            }
        }
    }

    /// Cancels a query on behalf of the proxy itself (a session it ended, or whose client
    /// vanished, while a query ran), within the same global budget and in-flight bound as
    /// clients' cancels.
    pub async fn cancel_for_proxy(
        &self,
        endpoint: &UpstreamEndpoint,
        upstream: &BackendKey,
    ) -> CancelOutcome {
        self.forward(endpoint, upstream).await
    }

    /// A place in the global budget and among the requests in flight.
    fn budget(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if !self.limiter().allow_global(Instant::now()) {
            return None;
        }
        self.in_flight.try_acquire().ok()
    }

    async fn forward(&self, endpoint: &UpstreamEndpoint, upstream: &BackendKey) -> CancelOutcome {
        let Some(_slot) = self.budget() else {
            return CancelOutcome::RateLimited;
        };
        match crate::backend::send_cancel(endpoint, upstream).await {
            Ok(()) => CancelOutcome::Forwarded,
            Err(e) => {
                warn!(upstream = %endpoint.host, error = %e, "cancel request could not be forwarded");
                CancelOutcome::UpstreamFailed
            }
        }
    }
}

#[cfg(test)]
mod tests;
