//! HTTP plumbing: one axum server for all three services, routed by path and headers, with
//! call counting, fault injection (including dropping a connection without a response) and
//! the `/_emulator/*` control endpoints.

use super::errors::{insert_request_id, ApiError, Protocol};
use super::faults::{Api, Fault, FaultsRequest};
use super::redshift::ClusterOperation;
use super::{new_request_id, redshift, roles_anywhere, sigv4, EmulatorState};
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::{Json, Router};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MAX_BODY_BYTES: usize = 1 << 20;

/// Handle of the server task; aborts it on drop.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub(crate) async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for open connections; keep-alive clients may hold them.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves the emulator until shut down.
pub(crate) async fn serve(
    state: Arc<EmulatorState>,
    addr: SocketAddr,
) -> anyhow::Result<(ServerHandle, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = Router::new()
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/calls", get(calls))
        .route("/_emulator/faults", post(set_faults).delete(clear_faults))
        .route("/_emulator/expire-sessions", post(expire_sessions))
        .route(
            "/_emulator/expire-db-credentials",
            post(expire_db_credentials),
        )
        .fallback(dispatch)
        .with_state(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<ConnHandle>();
        let result = axum::serve(KillableListener(listener), service)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "AWS emulator server failed");
        }
    });
    Ok((
        ServerHandle {
            shutdown: Some(tx),
            task,
        },
        local,
    ))
}

// ---- control endpoints -------------------------------------------------------------------

async fn calls(State(state): State<Arc<EmulatorState>>) -> Json<serde_json::Value> {
    let map: serde_json::Map<String, serde_json::Value> = Api::ALL
        .iter()
        .map(|api| (api.name().to_owned(), state.counters.get(*api).into()))
        .collect();
    Json(serde_json::Value::Object(map))
}

async fn set_faults(
    State(state): State<Arc<EmulatorState>>,
    Json(request): Json<FaultsRequest>,
) -> StatusCode {
    request.apply(&state.faults);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): State<Arc<EmulatorState>>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn expire_sessions(State(state): State<Arc<EmulatorState>>) -> StatusCode {
    state.sessions.expire_all(OffsetDateTime::now_utc());
    StatusCode::NO_CONTENT
}

async fn expire_db_credentials(State(state): State<Arc<EmulatorState>>) -> Response {
    match state.expire_db_credentials().await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}")).into_response(),
    }
}

// ---- AWS APIs ------------------------------------------------------------------------------

/// Which operation a request is, decided before authentication (like AWS's front ends).
enum Route {
    CreateSession,
    Cluster(ClusterOperation, Vec<(String, String)>),
    ServerlessGetCredentials,
}

impl Route {
    fn api(&self) -> Api {
        match self {
            Route::CreateSession => Api::CreateSession,
            Route::Cluster(ClusterOperation::GetClusterCredentials, _) => {
                Api::GetClusterCredentials
            }
            Route::Cluster(ClusterOperation::GetClusterCredentialsWithIam, _) => {
                Api::GetClusterCredentialsWithIam
            }
            Route::ServerlessGetCredentials => Api::GetCredentials,
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Route::CreateSession => Protocol::RestJson,
            Route::Cluster(..) => Protocol::Query,
            Route::ServerlessGetCredentials => Protocol::Json11,
        }
    }
}

fn route(parts: &Parts, body: &[u8]) -> Result<Route, (Protocol, ApiError)> {
    if parts.method != Method::POST {
        return Err((
            Protocol::RestJson,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "Unknown operation",
            ),
        ));
    }
    match parts.uri.path() {
        "/sessions" => Ok(Route::CreateSession),
        "/" | "" => {
            if let Some(target) = parts.headers.get("x-amz-target") {
                return match target.to_str() {
                    Ok("RedshiftServerless.GetCredentials") => Ok(Route::ServerlessGetCredentials),
                    _ => Err((
                        Protocol::Json11,
                        ApiError::bad_request(
                            "UnknownOperationException",
                            "The emulator only implements RedshiftServerless.GetCredentials",
                        ),
                    )),
                };
            }
            let params: Vec<(String, String)> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let action = params
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.as_str());
            let operation = match action {
                Some("GetClusterCredentials") => ClusterOperation::GetClusterCredentials,
                Some("GetClusterCredentialsWithIAM") => {
                    ClusterOperation::GetClusterCredentialsWithIam
                }
                Some(_) => {
                    return Err((
                        Protocol::Query,
                        ApiError::bad_request(
                            "InvalidAction",
                            "The action is not valid for this web service (emulator implements GetClusterCredentials[WithIAM])",
                        ),
                    ))
                }
                None => {
                    return Err((
                        Protocol::Query,
                        ApiError::bad_request("MissingAction", "The request must contain the parameter Action"),
                    ))
                }
            };
            Ok(Route::Cluster(operation, params))
        }
        _ => Err((
            Protocol::RestJson,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                "Unknown operation",
            ),
        )),
    }
}

async fn dispatch(
    State(state): State<Arc<EmulatorState>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    request: Request<Body>,
) -> Response {
    let request_id = new_request_id();
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SerializationException",
                "request body unreadable or larger than 1 MiB",
            )
            .into_response(Protocol::RestJson, &request_id)
        }
    };
    let route = match route(&parts, &body) {
        Ok(route) => route,
        Err((protocol, err)) => return err.into_response(protocol, &request_id),
    };
    let api = route.api();
    let protocol = route.protocol();
    state.counters.record(api);

    let latency = state.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match state.faults.take(api) {
        Some(Fault::DropConnection) => {
            tracing::debug!(%api, "fault injection: dropping the connection");
            conn.kill();
            // Never delivered: the connection fails on its next read/write.
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some(Fault::Throttle) => {
            return ApiError::throttled(protocol).into_response(protocol, &request_id)
        }
        Some(Fault::ServerError) => {
            return ApiError::server_error(protocol).into_response(protocol, &request_id)
        }
        None => {}
    }

    let now = OffsetDateTime::now_utc();
    let result = match route {
        Route::CreateSession => roles_anywhere::create_session(&state, &parts, &body, now),
        Route::Cluster(operation, params) => {
            match sigv4::verify(&state.sessions, protocol, "redshift", &parts, &body, now) {
                Ok(caller) => {
                    redshift::get_cluster_credentials(
                        &state,
                        &caller,
                        operation,
                        &params,
                        &request_id,
                        now,
                    )
                    .await
                }
                Err(err) => Err(err),
            }
        }
        Route::ServerlessGetCredentials => {
            match sigv4::verify(
                &state.sessions,
                protocol,
                "redshift-serverless",
                &parts,
                &body,
                now,
            ) {
                Ok(caller) => redshift::get_credentials(&state, &caller, &body, now).await,
                Err(err) => Err(err),
            }
        }
    };
    match result {
        Ok(mut response) => {
            tracing::debug!(%api, %request_id, "AWS call succeeded");
            insert_request_id(response.headers_mut(), &request_id);
            response
        }
        Err(err) => {
            tracing::info!(%api, %request_id, code = err.code, message = %err.message, "AWS call rejected");
            err.into_response(protocol, &request_id)
        }
    }
}

// ---- connections that fault injection can kill --------------------------------------------

/// Per-connection handle given to handlers (as `ConnectInfo`) so they can kill their
/// connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct KillableListener(TcpListener);

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let handle = ConnHandle::default();
                    let io = KillableStream {
                        inner: stream,
                        killed: Arc::clone(&handle.killed),
                    };
                    return (io, handle);
                }
                Err(err) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| ConnHandle::default())
    }
}

/// A TCP stream that fails all I/O once killed, so hyper drops the connection without
/// writing the pending response.
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
