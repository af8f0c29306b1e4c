//! Phase 1: from the accepted socket to an authenticated client (or a cancel request).

use super::trail::{Refused, Trail};
use super::{terminated, Connection};
use crate::frontend::{negotiate_gated, ClientSocket, FrontendErrorKind, Gate, Negotiated};
use crate::metrics::Metrics;
use crate::refusal::{LimitExceeded, Refusal, ShutdownStage};
use prometheus_client::metrics::gauge::Gauge;

/// Runs the frontend negotiation under the listener's handshake gate, unless a shutdown
/// ends it first. Handshakes cost CPU: the TLS handshake runs holding one of a bounded
/// number of slots.
pub(super) async fn negotiate(
    conn: &mut Connection,
    trail: &mut Trail,
    socket: ClientSocket,
    refuse: Option<LimitExceeded>,
) -> Result<Negotiated, Refused> {
    let gate = Gate {
        handshakes: Some(&conn.state.handshakes),
        handshake_timeout: conn.state.limits.handshake_timeout,
        refuse_sessions: refuse.is_some(),
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
            if let FrontendErrorKind::Password { user, .. } = &e.kind {
                trail.record.requested_user = Some(user.clone());
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
