//! The admin HTTP listener: `/metrics`, `/livez`, `/readyz`, `/startupz` and `POST /reload`.
//!
//! Off by default and loopback-only unless `[admin] allow_remote = true`: the endpoints are
//! unauthenticated. Probes never dial Redshift or AWS (a health check that depends on a
//! remote service turns that service's hiccup into an outage of every proxy at once):
//!
//! - `/livez`: the process serves HTTP, so its runtime is not wedged. Always 200.
//! - `/startupz`: 200 once every listener is bound.
//! - `/readyz`: 200 while listeners are bound, no shutdown has begun and the proxy's own
//!   AWS credentials are usable or refreshable; 503 with the reason otherwise. It turns 503
//!   from the first moment of a shutdown, so load balancers stop sending connections before
//!   the listeners close. The credential check reads the last refresh outcome and the cached
//!   expiry: a proxy is unready only when every set of AWS credentials it has used is
//!   expired or missing *and* its last refresh failed (the background refresher keeps
//!   retrying, so it turns ready again by itself once AWS or its certificate is fixed).

use crate::listen::BoundListener;
use crate::runtime::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{error, info};

/// The Prometheus text format content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The admin routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .route("/reload", post(reload))
        .with_state(shared)
}

/// Permission bits of a Unix-socket admin listener (`[admin] bind = "unix:/path"`): the
/// proxy's own user only.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// Serves the admin routes on `socket` until `stop` turns true.
pub async fn serve(socket: BoundListener, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    match socket {
        BoundListener::Tcp(listener) => serve_on(listener, shared, stop).await,
        // `_file` removes the socket file once serving ends.
        BoundListener::Unix {
            listener,
            file: _file,
        } => serve_on(listener, shared, stop).await,
    }
}

async fn serve_on<L>(listener: L, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let result = axum::serve(listener, router(shared))
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        error!(error = %e, "admin listener failed");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        shared.metrics.encode(),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    match shared.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn startupz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.is_started() {
        (StatusCode::OK, "started\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn reload(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    info!("reload requested via the admin listener");
    match shared.reload().await {
        Ok(generation) => (
            StatusCode::OK,
            format!("reloaded: configuration generation {generation}\n"),
        ),
        // The message names files and keys, never their contents.
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed, running configuration kept: {e}\n"),
        ),
    }
}
