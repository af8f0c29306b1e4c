//! One client connection from accept to close, as a pipeline of typed phases:
//!
//! ```text
//! accepted ─negotiate─▶ ClientSession ─admit─▶ Admitted ─authorize─▶ Authorized
//!    │                                                                    │
//!    └─▶ CancelRequest (forwarded, audited)              login (credentials + upstream)
//!                                                                         ▼
//!                                       closed ◀─relay─ Relaying ◀─greet─ LoggedIn
//! ```
//!
//! On a `proxy_protocol` listener the load balancer's header comes first ([`proxied`]):
//! it names the client the rest of the pipeline sees.
//!
//! Each phase consumes the previous one and returns the next or a [`Refused`]; whatever
//! it learned goes into the connection's [`Trail`] (the audit record under construction).
//! A refusal from any phase ends in [`Trail::refuse`], the one sink that tells the client
//! (as [`crate::refusal`] maps it), counts, logs and audits. Never panics on client input.

mod admit;
mod attribution;
mod authorize;
mod cancel;
mod login;
mod negotiation;
mod proxied;
mod relaying;
mod trail;

pub use trail::{report, Refused};

use crate::frontend::{ClientPeer, ClientSocket, Negotiated};
use crate::refusal::LimitExceeded;
use crate::runtime::{ConnectionGuard, ListenerContext, Shared, State};
use std::sync::Arc;
use tokio::sync::watch;
use trail::Trail;

/// What every phase of one connection reads.
pub(crate) struct Connection {
    pub shared: Arc<Shared>,
    pub state: Arc<State>,
    pub listener: Arc<ListenerContext>,
    pub peer: ClientPeer,
    /// Becomes `true` when the drain timeout expired and the connection must end.
    pub terminate: watch::Receiver<bool>,
    /// Holds the connection's place in the connection counts until it ends.
    _counted: ConnectionGuard,
}

/// Resolves once the proxy must end every connection (drain timeout expired).
pub(crate) async fn terminated(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|t| *t).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one accepted connection (TCP or Unix socket) to completion.
pub async fn serve_connection(
    mut socket: ClientSocket,
    peer: ClientPeer,
    listener_name: String,
    state: Arc<State>,
    shared: Arc<Shared>,
) {
    if let ClientSocket::Tcp(tcp) = &socket {
        let _ = tcp.set_nodelay(true);
    }
    let Some(listener) = state.listeners.get(&listener_name).cloned() else {
        // The listener set never changes while running (reloads that change it are
        // refused), so every accepted connection finds its listener.
        return;
    };
    let (counted, over_limit) =
        shared
            .admission
            .admit(&listener.name, listener.max_connections, &state.limits);
    // Behind a balancer, the client is who its PROXY header says, for everything below.
    let Some(arrival) = proxied::arrive(&mut socket, peer, &listener, &state, &shared).await else {
        return;
    };
    let peer = arrival.peer;
    // Unix-socket clients are local processes; only network sources are capped.
    let pending = match &peer {
        ClientPeer::Tcp(addr) => Some(shared.admission.admit_pending(addr.ip(), &state.limits)),
        ClientPeer::Unix { .. } => None,
    };
    let refuse = over_limit.or(match &pending {
        Some((_, true)) => Some(LimitExceeded::Source),
        _ => None,
    });
    let mut trail = Trail::new(&listener, &peer, shared.clone());
    trail.record.via = arrival.via.map(|a| a.to_string());
    let mut conn = Connection {
        terminate: shared.terminate_signal(),
        shared,
        state,
        listener,
        peer,
        _counted: counted,
    };
    let negotiated = negotiation::negotiate(&mut conn, &mut trail, socket, refuse).await;
    // Authenticated (or refused): no longer pending for its source address.
    drop(pending);
    let client = match negotiated {
        Ok(Negotiated::Session(client)) => *client,
        Ok(Negotiated::Cancel(target)) => return cancel::forward(&conn, trail, target).await,
        Err(refused) => return trail.refuse(refused).await,
    };
    let logged_in = async {
        let admitted = admit::admit(&conn, &mut trail, client)?;
        let authorized = authorize::authorize(&conn, &mut trail, admitted)?;
        login::login(&conn, &mut trail, authorized).await
    };
    match logged_in.await {
        Ok(session) => relaying::run(conn, trail, session).await,
        Err(refused) => trail.refuse(refused).await,
    }
}
