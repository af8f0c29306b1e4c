//! Phase 1: from the accepted socket to an authenticated client (or a cancel request).

use super::trail::{Refused, Trail};
use super::{terminated, Connection};
use crate::frontend::{negotiate_gated, ClientSocket, FrontendErrorKind, Gate, Negotiated};
use crate::metrics::{labels, Metrics};
use crate::refusal::{LimitExceeded, Refusal, ShutdownStage};
use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;

/// Runs the frontend negotiation under the listener's handshake gate, unless a shutdown
/// ends it first. Handshakes cost CPU: the TLS handshake runs holding one of a bounded
/// number of slots.
pub(super) async fn negotiate(
    conn: &mut Connection,
    trail: &mut Trail,
    socket: ClientSocket,
    refuse: Option<LimitExceeded>,
) -> Result<Negotiated, Refused> {
    let source = conn.peer.ip();
    let throttle = &conn.shared.password_throttle;
    let listener = conn.listener.name.as_str();
    let locked = |user: &str| throttle.locked(listener, user, source);
    let gate = Gate {
        handshakes: Some(&conn.state.handshakes),
        handshake_timeout: conn.state.limits.handshake_timeout,
        refuse_sessions: refuse.is_some(),
        password_locked: Some(&locked),
    };
    let negotiated = {
        let _active = GaugeGuard::new(conn.shared.metrics.handshakes_active.clone());
        tokio::select! {
            r = negotiate_gated(socket, &conn.listener.frontend, gate) => r,
            _ = terminated(&mut conn.terminate) => {
                return Err(Refused::new(Refusal::ShuttingDown(ShutdownStage::Negotiation), None));
            }
        }
    };
    match negotiated {
        Ok(negotiated) => {
            if let Negotiated::Session(client) = &negotiated {
                if let Some(user) = client.principal.local_user() {
                    throttle.succeeded(&conn.listener.name, &user.name, source);
                }
                Metrics::observe(
                    &conn.shared.metrics.client_handshake_seconds,
                    "listener",
                    &conn.listener.name,
                    trail.accepted.elapsed(),
                );
                trail.negotiated(client);
            }
            Ok(negotiated)
        }
        Err(e) => {
            // Who tried, even when their certificate was the reason for the refusal.
            if let Some(peer) = &e.peer {
                trail.refused_peer(peer);
            }
            // The startup user a password login was attempted for (never the password).
            if let FrontendErrorKind::Password { user, error, .. } = &e.kind {
                trail.record.requested_user = Some(user.clone());
                if error.is_authentication_failure() {
                    throttled(conn, user, source).await;
                }
            }
            match (e.kind, refuse) {
                (FrontendErrorKind::Busy, Some(limit)) => {
                    Err(Refused::new(Refusal::Limit(limit), e.stream))
                }
                (kind, _) => Err(Refused::new(kind, e.stream)),
            }
        }
    }
}

/// Counts a failed password attempt and waits out its growing delay before the refusal
/// is answered, so guessing costs time; the connection stays pending for its source
/// address meanwhile (bounded by `max_pending_per_source`).
async fn throttled(conn: &Connection, user: &str, source: Option<std::net::IpAddr>) {
    let settings = &conn.state.config().security;
    let verdict = conn
        .shared
        .password_throttle
        .failed(&conn.listener.name, user, source, settings);
    let metrics = &conn.shared.metrics;
    let listener = [("listener", conn.listener.name.as_str())];
    metrics
        .password_failures
        .get_or_create(&labels(&listener))
        .inc();
    if verdict.locked_now {
        metrics
            .password_lockouts
            .get_or_create(&labels(&listener))
            .inc();
        warn!(
            listener = %conn.listener.name, user = ?user, peer = %conn.peer,
            lockout = ?settings.password_lockout,
            "password logins locked after repeated failures"
        );
    }
    tokio::time::sleep(verdict.delay).await;
}

/// Decrements a gauge when dropped, so cancelled futures cannot leak a count.
pub(super) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(super) fn new(g: Gauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
