//! HTTP plumbing: one axum server for all three services, routed by path and headers, with
//! call counting, fault injection (including dropping a connection without a response) and
//! the `/_emulator/*` control endpoints.

use super::errors::{insert_request_id, ApiError, Protocol};
use super::faults::{Api, Fault, FaultsRequest};
use super::redshift::ClusterOperation;
use super::{cloudtrail, new_request_id, redshift, roles_anywhere, sigv4, EmulatorState};
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
        .route("/_emulator/revoke-sessions", post(revoke_sessions))
        .route("/_emulator/cloudtrail", get(cloudtrail))
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

async fn revoke_sessions(State(state): State<Arc<EmulatorState>>) -> StatusCode {
    state.sessions.revoke_all();
    StatusCode::NO_CONTENT
}

async fn cloudtrail(State(state): State<Arc<EmulatorState>>) -> Json<serde_json::Value> {
    Json(serde_json::Value::Array(state.cloudtrail.all()))
}

async fn expire_db_credentials(State(state): State<Arc<EmulatorState>>) -> StatusCode {
    state.expire_db_credentials();
    StatusCode::NO_CONTENT
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
    let now = OffsetDateTime::now_utc();
    let trail = Trail {
        state: &state,
        api,
        parts: &parts,
        peer: conn.peer,
        request_parameters: match &route {
            Route::Cluster(_, params) => cloudtrail::query_parameters(params),
            Route::CreateSession => create_session_parameters(&parts, &body),
            Route::ServerlessGetCredentials => cloudtrail::json_parameters(&body),
        },
        request_id: &request_id,
        now,
    };

    let latency = state.faults.latency_of(api);
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
            let err = ApiError::throttled(protocol);
            trail.record(None, Err(&err));
            return err.into_response(protocol, &request_id);
        }
        Some(Fault::ServerError) => {
            let err = ApiError::server_error(protocol);
            trail.record(None, Err(&err));
            return err.into_response(protocol, &request_id);
        }
        Some(Fault::Malformed) => {
            tracing::debug!(%api, "fault injection: a malformed response");
            return (
                StatusCode::OK,
                [("x-amzn-requestid", request_id.as_str())],
                "<<< not the service's response format",
            )
                .into_response();
        }
        None => {}
    }

    let (caller, result) = match route {
        Route::CreateSession => (
            None,
            roles_anywhere::create_session(&state, &parts, &body, now),
        ),
        Route::Cluster(operation, params) => {
            match sigv4::verify(&state.sessions, protocol, "redshift", &parts, &body, now) {
                Ok(caller) => {
                    let result = redshift::get_cluster_credentials(
                        &state,
                        &caller,
                        operation,
                        &params,
                        &request_id,
                        now,
                    )
                    .await;
                    (Some(caller), result)
                }
                Err(err) => (None, Err(err)),
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
                Ok(caller) => {
                    let result =
                        redshift::get_credentials(&state, &caller, &body, &request_id, now).await;
                    (Some(caller), result)
                }
                Err(err) => (None, Err(err)),
            }
        }
    };
    match result {
        Ok(success) => {
            tracing::debug!(%api, %request_id, "AWS call succeeded");
            trail.record(caller.as_ref(), Ok(&success.response_elements));
            let mut response = success.response;
            insert_request_id(response.headers_mut(), &request_id);
            response
        }
        Err(err) => {
            tracing::info!(%api, %request_id, code = err.code, message = %err.message, "AWS call rejected");
            trail.record(caller.as_ref(), Err(&err));
            err.into_response(protocol, &request_id)
        }
    }
}

/// What a call's CloudTrail record is made of, collected as the call proceeds.
struct Trail<'a> {
    state: &'a EmulatorState,
    api: Api,
    parts: &'a Parts,
    peer: Option<SocketAddr>,
    request_parameters: serde_json::Value,
    request_id: &'a str,
    now: OffsetDateTime,
}

impl Trail<'_> {
    fn record(
        &self,
        caller: Option<&sigv4::Caller>,
        outcome: Result<&serde_json::Value, &ApiError>,
    ) {
        let (event_source, region) = match self.api {
            Api::CreateSession => (
                "rolesanywhere.amazonaws.com",
                self.state.rolesanywhere_region.as_str(),
            ),
            Api::GetCredentials => (
                "redshift-serverless.amazonaws.com",
                caller.map_or(self.state.rolesanywhere_region.as_str(), |c| {
                    c.region.as_str()
                }),
            ),
            _ => (
                "redshift.amazonaws.com",
                caller.map_or(self.state.rolesanywhere_region.as_str(), |c| {
                    c.region.as_str()
                }),
            ),
        };
        let account = caller.map_or_else(
            || {
                roles_anywhere::arn_account(&self.state.config.profile_arn)
                    .unwrap_or("000000000000")
                    .to_owned()
            },
            |c| c.session.account().to_owned(),
        );
        let (response_elements, error) = match outcome {
            Ok(elements) => (elements.clone(), None),
            Err(err) => (
                serde_json::Value::Null,
                Some((err.code, err.message.as_str())),
            ),
        };
        let user_agent = self
            .parts
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let event = cloudtrail::Event {
            event_source,
            event_name: self.api.name(),
            region,
            source_ip: self.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            user_agent,
            session: caller.map(|c| &c.session),
            account: &account,
            request_parameters: self.request_parameters.clone(),
            response_elements,
            error,
            request_id: self.request_id,
            time: self.now,
        };
        self.state.cloudtrail.record(event.to_json());
    }
}

/// `requestParameters` of CreateSession: the JSON body plus the ARNs the official helper
/// sends as query parameters.
fn create_session_parameters(parts: &Parts, body: &[u8]) -> serde_json::Value {
    let mut params = match cloudtrail::json_parameters(body) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    for (key, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        params.insert(
            key.into_owned(),
            serde_json::Value::String(value.into_owned()),
        );
    }
    serde_json::Value::Object(params)
}

// ---- connections that fault injection can kill --------------------------------------------

/// Per-connection handle given to handlers (as `ConnectInfo`) so they can kill their
/// connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnHandle {
    killed: Arc<AtomicBool>,
    peer: Option<SocketAddr>,
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
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handle = ConnHandle {
                        killed: Arc::default(),
                        peer: Some(peer),
                    };
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
