//! The admin HTTP listener: `/metrics`, `/livez`, `/readyz`, `/startupz` and `POST /reload`.
//!
//! Off by default and loopback-only unless `[admin] allow_remote = true`. The read-only
//! endpoints are unauthenticated; `POST /reload` changes state, so on a TCP admin listener
//! it needs the bearer token of `[admin] reload_token_file` / `reload_token_env` (a
//! Unix-socket admin listener is guarded by its file permissions instead). Requests whose
//! `Host` is neither an IP literal, `localhost` nor one of `[admin] allowed_hosts` are
//! refused, so a browser tricked by DNS rebinding cannot reach the endpoints.
//!
//! A TCP admin listener accepts (and ignores) a PROXY protocol header in front of a request,
//! which an AWS NLB with proxy protocol v2 sends with its health checks (see `balanced`).
//!
//! Probes never dial Redshift or AWS (a health check that depends on a
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

mod balanced;

use crate::listen::BoundListener;
use crate::runtime::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// The Prometheus text format content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Who may use the admin endpoints, beyond reaching the socket.
#[derive(Clone, Default)]
pub struct AdminAccess {
    /// The bearer token `POST /reload` needs; `None`: reloads are refused (TCP) or need
    /// none (Unix socket, see `unix`).
    pub reload_token: Option<Arc<SecretString>>,
    /// The listener is a Unix socket: its permissions are the access control.
    pub unix: bool,
    /// `Host` names accepted besides IP literals and `localhost`.
    pub allowed_hosts: Arc<Vec<String>>,
}

impl AdminAccess {
    /// Reads the reload token from `[admin] reload_token_file` or `reload_token_env`.
    pub fn from_config(config: &proxy_config::AdminConfig, unix: bool) -> Result<Self, String> {
        let token = match (&config.reload_token_file, &config.reload_token_env) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("admin.reload_token_file {}: {e}", path.display()))?,
            ),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .map_err(|_| format!("admin.reload_token_env: ${var} is not set"))?,
            ),
            (None, None) => None,
        };
        let token = token.map(|t| t.trim().to_owned());
        if token.as_deref() == Some("") {
            return Err("the admin reload token is empty".into());
        }
        Ok(AdminAccess {
            reload_token: token.map(|t| Arc::new(SecretString::from(t))),
            unix,
            allowed_hosts: Arc::new(config.allowed_hosts.clone()),
        })
    }
}

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    access: AdminAccess,
}

/// The admin routes over `shared`.
pub fn router(shared: Arc<Shared>, access: AdminAccess) -> Router {
    let state = AdminState { shared, access };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .route("/reload", post(reload))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host_check,
        ))
        .with_state(state)
}

/// Permission bits of a Unix-socket admin listener (`[admin] bind = "unix:/path"`): the
/// proxy's own user only.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// Serves the admin routes on `socket` until `stop` turns true.
pub async fn serve(
    socket: BoundListener,
    shared: Arc<Shared>,
    access: AdminAccess,
    stop: watch::Receiver<bool>,
) {
    let app = router(shared, access);
    match socket {
        BoundListener::Tcp(listener) => {
            serve_on(balanced::HeaderTolerant::new(listener), app, stop).await
        }
        // `_file` removes the socket file once serving ends.
        BoundListener::Unix {
            listener,
            file: _file,
        } => serve_on(listener, app, stop).await,
    }
}

async fn serve_on<L>(listener: L, app: Router, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        error!(error = %e, "admin listener failed");
    }
}

/// Refuses requests for a host name the admin listener does not answer to (DNS
/// rebinding): IP literals, `localhost` and `[admin] allowed_hosts` are accepted.
async fn host_check(
    State(admin): State<AdminState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if admin.access.unix {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if host_allowed(host, &admin.access.allowed_hosts) {
        next.run(request).await
    } else {
        warn!(host = ?host, "admin request for a host this listener does not serve refused");
        (StatusCode::FORBIDDEN, "host not allowed\n").into_response()
    }
}

/// `host[:port]` is an IP literal, `localhost`, or an allowed name.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[v6]:port`
        Some(rest) => {
            return rest
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

async fn metrics(State(admin): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        admin.shared.metrics.encode(),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<AdminState>) -> (StatusCode, String) {
    match admin.shared.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn startupz(State(admin): State<AdminState>) -> (StatusCode, &'static str) {
    if admin.shared.is_started() {
        (StatusCode::OK, "started\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn reload(
    State(admin): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, String) {
    if let Err(refused) = reload_allowed(&admin.access, &headers) {
        warn!("admin reload refused: {refused}");
        return (StatusCode::FORBIDDEN, format!("{refused}\n"));
    }
    info!("reload requested via the admin listener");
    match admin.shared.reload().await {
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

/// A Unix-socket admin listener may reload; a TCP one only with the configured bearer
/// token (compared in constant time).
fn reload_allowed(
    access: &AdminAccess,
    headers: &axum::http::HeaderMap,
) -> Result<(), &'static str> {
    if access.unix {
        return Ok(());
    }
    let Some(token) = &access.reload_token else {
        return Err(
            "reload over TCP needs [admin] reload_token_file or reload_token_env \
                    (or a Unix-socket admin listener)",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = token.expose_secret().as_bytes();
    let matches = presented.len() == expected.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            expected,
        ));
    if matches {
        Ok(())
    } else {
        Err("missing or wrong bearer token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literals_localhost_and_allowed_names_are_served() {
        let allowed = vec!["proxy-admin.corp.example".to_string()];
        for ok in [
            "127.0.0.1:9187",
            "10.0.0.5",
            "[::1]:9187",
            "localhost:9187",
            "LOCALHOST",
            "proxy-admin.corp.example:9187",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in [
            "evil.example:9187",
            "",
            "127.0.0.1.evil.example",
            "[nonsense]:1",
        ] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
    }

    #[test]
    fn reload_needs_the_token_over_tcp() {
        let mut headers = axum::http::HeaderMap::new();
        let tcp = AdminAccess {
            reload_token: Some(Arc::new(SecretString::from("s3cret"))),
            ..AdminAccess::default()
        };
        assert!(reload_allowed(&tcp, &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(reload_allowed(&tcp, &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(reload_allowed(&tcp, &headers).is_ok());
        assert!(
            reload_allowed(&AdminAccess::default(), &headers).is_err(),
            "no token configured"
        );
        let unix = AdminAccess {
            unix: true,
            ..AdminAccess::default()
        };
        assert!(reload_allowed(&unix, &axum::http::HeaderMap::new()).is_ok());
    }
}
