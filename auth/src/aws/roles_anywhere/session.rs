//! The IAM Roles Anywhere `CreateSession` call: `POST /sessions`, signed with
//! [`X509Signer`], answered with temporary AWS credentials.

use super::signer::X509Signer;
use crate::db_credentials::CredentialError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// SigV4 service name of IAM Roles Anywhere.
pub const SERVICE: &str = "rolesanywhere";

/// Bodies larger than this are not a CreateSession answer.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// AWS error messages are short; anything longer is cut for logs and clients.
const MAX_MESSAGE_CHARS: usize = 512;

/// The default endpoint for `region`.
pub fn default_endpoint(region: &str) -> String {
    // The China partition has its own domain.
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://rolesanywhere.{region}.{domain}")
}

/// What to ask CreateSession for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub profile_arn: String,
    pub role_arn: String,
    pub trust_anchor_arn: String,
    pub duration: Duration,
    pub role_session_name: Option<String>,
}

/// Temporary AWS credentials from CreateSession. `Debug` never shows the secrets.
#[derive(Clone)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: SecretString,
    pub expiration: SystemTime,
    /// `x-amzn-requestid` of the CreateSession response (CloudTrail correlation).
    pub request_id: Option<String>,
    /// `assumedRoleUser.arn`, when returned.
    pub assumed_role_arn: Option<String>,
}

impl fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("request_id", &self.request_id)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

/// Why CreateSession failed. Messages come from AWS (which never echoes secrets) or describe
/// the transport; response bodies are never quoted beyond the AWS `message`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// AWS answered with an error.
    #[error("{} (HTTP {status}{}): {message}{}", code.as_deref().unwrap_or("error"), if *retryable { ", retryable" } else { "" }, request_id_suffix(request_id))]
    Service {
        status: u16,
        code: Option<String>,
        message: String,
        request_id: Option<String>,
        retryable: bool,
    },
    /// The endpoint could not be reached or the connection failed.
    #[error("cannot reach {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("no answer from {endpoint} within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    /// The request could not be built or signed.
    #[error("cannot build request: {0}")]
    Request(String),
    /// A success status with a body that is not a CreateSession answer.
    #[error(
        "malformed CreateSession response: {reason}{}",
        request_id_suffix(request_id)
    )]
    MalformedResponse {
        reason: String,
        request_id: Option<String>,
    },
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

impl SessionError {
    /// Worth retrying with backoff: throttling, server errors, transport failures, timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Service { retryable, .. } => *retryable,
            SessionError::Transport { .. } | SessionError::Timeout { .. } => true,
            SessionError::Request(_) | SessionError::MalformedResponse { .. } => false,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            SessionError::Service { request_id, .. }
            | SessionError::MalformedResponse { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The proxy-wide error for this failure, prefixed with `context` (e.g. the role).
    pub fn to_credential_error(&self, context: &str) -> CredentialError {
        let message = format!("{context}: Roles Anywhere CreateSession failed: {self}");
        match self {
            SessionError::Service { status, code, .. } => match code.as_deref() {
                Some("AccessDeniedException") => CredentialError::Denied(message),
                _ if self.is_retryable() => CredentialError::Unavailable(message),
                _ if *status == 401 || *status == 403 => CredentialError::Denied(message),
                _ => CredentialError::Invalid(message),
            },
            SessionError::Transport { .. }
            | SessionError::Timeout { .. }
            | SessionError::MalformedResponse { .. } => CredentialError::Unavailable(message),
            SessionError::Request(_) => CredentialError::Invalid(message),
        }
    }
}

fn is_throttling_or_transient(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalServerException"
            | "InternalFailure"
            | "RequestTimeout"
            | "RequestTimeoutException"
    )
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Calls CreateSession on one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct SessionClient {
    http: HttpClient,
    /// Endpoint base without a trailing slash, e.g. `https://rolesanywhere.eu-west-1.amazonaws.com`.
    endpoint: Arc<str>,
    region: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for SessionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SessionClient {
    /// A client for `region`, at `endpoint_url` when given (`http://` is allowed for tests
    /// and local emulators), else at the region's public endpoint. `timeout` bounds each
    /// call, connection included.
    pub fn new(
        region: &str,
        endpoint_url: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let endpoint = endpoint_url
            .map(str::to_owned)
            .unwrap_or_else(|| default_endpoint(region));
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| SessionError::Request(format!("endpoint {endpoint:?} is not a URL")))?;
        match uri.scheme_str() {
            Some("https") | Some("http") => {}
            _ => {
                return Err(SessionError::Request(format!(
                    "endpoint {endpoint:?} must start with https:// (or http:// for testing)"
                )))
            }
        }
        if uri.host().is_none() || uri.query().is_some() {
            return Err(SessionError::Request(format!(
                "endpoint {endpoint:?} must be scheme://host[:port][/path]"
            )));
        }

        // One TLS stack everywhere: rustls with aws-lc-rs and the bundled Mozilla roots
        // (which include the Amazon roots).
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SessionError::Request(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(SessionClient {
            http: client,
            endpoint: endpoint.into(),
            region: region.into(),
            timeout,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// One CreateSession call (no retries), signed at `now`.
    pub async fn create_session(
        &self,
        signer: &X509Signer,
        request: &SessionRequest,
        now: SystemTime,
    ) -> Result<SessionCredentials, SessionError> {
        let http_request = self.build_request(signer, request, now)?;
        let endpoint = self.endpoint.to_string();
        let exchange = async {
            let response =
                self.http
                    .request(http_request)
                    .await
                    .map_err(|e| SessionError::Transport {
                        endpoint: endpoint.clone(),
                        reason: error_chain(&e),
                    })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| SessionError::Transport {
                    endpoint: endpoint.clone(),
                    reason: format!("reading response: {e}"),
                })?
                .to_bytes();
            Ok::<_, SessionError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SessionError::Timeout {
                endpoint: endpoint.clone(),
                timeout: self.timeout,
            })??;
        let request_id = parts
            .headers
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if parts.status.is_success() {
            parse_success(&body, request_id)
        } else {
            Err(parse_error(parts.status, &parts.headers, &body, request_id))
        }
    }

    fn build_request(
        &self,
        signer: &X509Signer,
        request: &SessionRequest,
        now: SystemTime,
    ) -> Result<http::Request<Full<Bytes>>, SessionError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            profile_arn: &'a str,
            role_arn: &'a str,
            trust_anchor_arn: &'a str,
            duration_seconds: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            role_session_name: Option<&'a str>,
        }
        let body = serde_json::to_vec(&Body {
            profile_arn: &request.profile_arn,
            role_arn: &request.role_arn,
            trust_anchor_arn: &request.trust_anchor_arn,
            duration_seconds: request.duration.as_secs(),
            role_session_name: request.role_session_name.as_deref(),
        })
        .map_err(|e| SessionError::Request(e.to_string()))?;
        let mut signed = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}/sessions", self.endpoint))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        signer
            .sign(&mut signed, &self.region, SERVICE, now)
            .map_err(|e| SessionError::Request(e.to_string()))?;
        Ok(signed.map(|body| Full::new(Bytes::from(body))))
    }
}

/// `error` and its sources, e.g. "client error (Connect): tcp connect error: Connection refused".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn parse_success(
    body: &[u8],
    request_id: Option<String>,
) -> Result<SessionCredentials, SessionError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        credential_set: Vec<CredentialSet>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CredentialSet {
        credentials: Credentials,
        #[serde(default)]
        assumed_role_user: Option<AssumedRoleUser>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Credentials {
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expiration: String,
    }
    #[derive(Deserialize)]
    struct AssumedRoleUser {
        arn: Option<String>,
    }
    let malformed = |reason: String| SessionError::MalformedResponse {
        reason,
        request_id: request_id.clone(),
    };
    // serde_json's messages can quote input (e.g. "invalid type: string \"...\""), which may
    // be a secret: report only the position and category.
    let response: Response = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "invalid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let set = response
        .credential_set
        .into_iter()
        .next()
        .ok_or_else(|| malformed("empty credentialSet".into()))?;
    let expiration = time::OffsetDateTime::parse(
        &set.credentials.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        malformed(format!(
            "expiration {:?} is not RFC 3339",
            set.credentials.expiration
        ))
    })?;
    Ok(SessionCredentials {
        access_key_id: set.credentials.access_key_id,
        secret_access_key: SecretString::from(set.credentials.secret_access_key),
        session_token: SecretString::from(set.credentials.session_token),
        expiration: expiration.into(),
        request_id,
        assumed_role_arn: set.assumed_role_user.and_then(|user| user.arn),
    })
}

fn parse_error(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &[u8],
    request_id: Option<String>,
) -> SessionError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let object = json.as_ref()?.as_object()?;
        names
            .iter()
            .find_map(|name| object.get(*name)?.as_str().map(str::to_owned))
    };
    // `x-amzn-errortype: AccessDeniedException:http://internal.amazon.com/...`, or a body
    // `__type` such as `com.amazonaws.rolesanywhere#AccessDeniedException`.
    let code = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| field(&["__type", "code", "Code"]))
        .map(|raw| {
            let raw = raw.split(':').next().unwrap_or(&raw);
            raw.rsplit('#').next().unwrap_or(raw).to_owned()
        })
        .filter(|code| !code.is_empty());
    let message = field(&["message", "Message"])
        .map(|m| truncate(&m))
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no error message")
                .to_owned()
        });
    let retryable = status.as_u16() == 429
        || status.is_server_error()
        || code.as_deref().is_some_and(is_throttling_or_transient);
    SessionError::Service {
        status: status.as_u16(),
        code,
        message,
        request_id,
        retryable,
    }
}

#[cfg(test)]
mod tests;
