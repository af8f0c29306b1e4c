//! Logging in to the upstream: StartupMessage, authentication, and the messages up to
//! ReadyForQuery.

use super::auth::{self, AuthMethod};
use super::endpoint::UpstreamEndpoint;
use super::error::{Phase, UpstreamError};
use super::scram::{self, ChannelBinding, SaltedPasswordCache, ScramClient, ScramError};
use super::transport::{self, UpstreamStream};
use crate::net::framing::{encode_into, read_message, Message};
use crate::net::messages::{
    AuthenticationRequest, BackendKeyData, Decode, DigestResponse, Encode, ErrorResponse,
    NegotiateProtocolVersion, PasswordMessage, ReadyForQuery, SaslInitialResponse, SaslResponse,
    StartupMessage,
};
use bytes::BytesMut;
use proxy_auth::password::redshift_digest;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// The upstream's cancel key (pid and secret key; `Debug` redacts the key).
pub type BackendKey = BackendKeyData;

/// Largest message body accepted while logging in. Covers every legitimate
/// authentication request, ErrorResponse and ParameterStatus, and bounds SCRAM data.
pub const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

/// Most bytes collected between AuthenticationOk and ReadyForQuery (ParameterStatus,
/// notices, ...). A server that sends more is broken or hostile.
pub const MAX_AFTER_AUTH: usize = 1024 * 1024;

/// What to log in as. `Debug` redacts the password.
#[derive(Debug, Clone, Copy)]
pub struct LoginRequest<'a> {
    pub user: &'a str,
    pub password: &'a SecretString,
    pub database: &'a str,
    /// Further startup parameters, sent literally after `user` and `database`.
    pub params: &'a [(String, String)],
}

/// A logged-in upstream connection, ready for queries.
pub struct UpstreamSession {
    pub stream: UpstreamStream,
    /// The upstream's BackendKeyData, if it sent one.
    pub backend_key: Option<BackendKey>,
    /// Every message the server sent after AuthenticationOk up to and including
    /// ReadyForQuery, in order and byte-exact, except BackendKeyData (the proxy
    /// substitutes its own key).
    pub after_auth: BytesMut,
    pub tls_version: String,
    pub tls_cipher: String,
    pub auth_method: AuthMethod,
    /// Where the upstream connection came from.
    pub origin: UpstreamOrigin,
    /// TCP connect plus the verify-full TLS handshake (zero when it was done ahead).
    pub connect_time: std::time::Duration,
    /// StartupMessage to ReadyForQuery.
    pub auth_time: std::time::Duration,
    /// When the upstream session logged in (a reused session: its first login).
    pub logged_in_at: std::time::Instant,
}

/// How a session's upstream connection came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOrigin {
    /// Connected and logged in for this client.
    Dialled,
    /// Logged in for this client on a connection whose TCP and TLS were ready.
    Warm,
    /// A logged-in session a previous client of the same identity left; `uses` counts the
    /// clients it has served, this one included.
    Reused { uses: u32 },
}

impl UpstreamOrigin {
    /// As the audit record and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOrigin::Dialled => "dialled",
            UpstreamOrigin::Warm => "warm",
            UpstreamOrigin::Reused { .. } => "reused",
        }
    }
}

impl std::fmt::Debug for UpstreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSession")
            .field("backend_key", &self.backend_key)
            .field("after_auth_len", &self.after_auth.len())
            .field("tls_version", &self.tls_version)
            .field("tls_cipher", &self.tls_cipher)
            .field("auth_method", &self.auth_method)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Connects to the upstream (within `connect_timeout`), negotiates verify-full TLS and logs
/// in (both within `login_timeout`).
pub async fn connect_and_login(
    ep: &UpstreamEndpoint,
    req: &LoginRequest<'_>,
) -> Result<UpstreamSession, UpstreamError> {
    // Encode first: a parameter we refuse to send should not cost a connection.
    let startup = encode_startup(req)?;
    let started = std::time::Instant::now();
    let tcp = transport::dial(ep).await?;
    let login = async {
        let stream = transport::start_tls(ep, tcp).await?;
        let connect_time = started.elapsed();
        let mut session = login_on(ep, stream, &startup, req).await?;
        session.connect_time = connect_time;
        session.auth_time = started.elapsed().saturating_sub(connect_time);
        Ok(session)
    };
    within_login_timeout(ep, login).await
}

/// A connection ready for its StartupMessage: TCP within `connect_timeout`, then SSLRequest
/// and the verify-full TLS handshake within `login_timeout`.
pub(crate) async fn connect(ep: &UpstreamEndpoint) -> Result<UpstreamStream, UpstreamError> {
    let tcp = transport::dial(ep).await?;
    within_login_timeout(ep, transport::start_tls(ep, tcp)).await
}

pub(crate) async fn within_login_timeout<T>(
    ep: &UpstreamEndpoint,
    work: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(ep.login_timeout, work)
        .await
        .map_err(|_| UpstreamError::Timeout {
            phase: Phase::Login,
            after: ep.login_timeout,
        })?
}

/// Logs in on a connection whose TLS is up: `startup` (see [`encode_startup`]),
/// authentication, and the messages up to ReadyForQuery. Not bounded in time: callers
/// are. The session's timings are left at zero for the caller to fill in.
pub(crate) async fn login_on(
    ep: &UpstreamEndpoint,
    mut stream: UpstreamStream,
    startup: &[u8],
    req: &LoginRequest<'_>,
) -> Result<UpstreamSession, UpstreamError> {
    let (tls_version, tls_cipher) = crate::net::tls_names(stream.get_ref().1);
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.to_vec());
    write_flush(&mut stream, startup).await?;
    let auth_method = authenticate(&mut stream, req, leaf.as_deref(), &ep.scram_cache).await?;
    let (backend_key, after_auth) = read_until_ready(&mut stream).await?;
    tracing::debug!(
        host = %ep.host,
        user = req.user,
        %auth_method,
        tls_version,
        "upstream login complete"
    );
    Ok(UpstreamSession {
        stream,
        backend_key,
        after_auth,
        tls_version,
        tls_cipher,
        auth_method,
        origin: UpstreamOrigin::Dialled,
        connect_time: std::time::Duration::ZERO,
        auth_time: std::time::Duration::ZERO,
        logged_in_at: std::time::Instant::now(),
    })
}

pub(crate) fn encode_startup(req: &LoginRequest<'_>) -> Result<BytesMut, UpstreamError> {
    let params = [("user", req.user), ("database", req.database)]
        .into_iter()
        .chain(req.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(StartupMessage::new(params)?.encode())
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Result<(), UpstreamError> {
    s.write_all(bytes)
        .await
        .map_err(|e| UpstreamError::io(Phase::Login, e))?;
    s.flush()
        .await
        .map_err(|e| UpstreamError::io(Phase::Login, e))
}

async fn next_message<S: AsyncRead + Unpin>(s: &mut S) -> Result<Message, UpstreamError> {
    read_message(s, MAX_LOGIN_MESSAGE)
        .await
        .map_err(|e| UpstreamError::framing(Phase::Login, e))
}

fn server_error(body: &[u8]) -> UpstreamError {
    match ErrorResponse::decode(body) {
        Ok(e) => UpstreamError::from_error_response(e),
        Err(e) => UpstreamError::protocol(Phase::Login, e.to_string()),
    }
}

/// Where the authentication exchange stands.
enum AuthState {
    /// Nothing sent yet but the StartupMessage.
    Start,
    /// A password answer was sent; only AuthenticationOk (or an error) may follow.
    AwaitOk(AuthMethod),
    /// SASLInitialResponse sent; waiting for the server-first-message.
    ScramContinue(Box<ScramClient>, AuthMethod),
    /// SASLResponse sent; waiting for the server-final-message.
    ScramFinal(Box<scram::ClientFinal>, AuthMethod),
}

/// What the exchange needs to answer a request.
struct Answering<'a> {
    user: &'a str,
    password: &'a [u8],
    server_leaf_cert: Option<&'a [u8]>,
    scram_cache: &'a SaltedPasswordCache,
}

/// After one request: the exchange goes on, or the server said AuthenticationOk.
enum Step {
    Continue(AuthState),
    Authenticated(AuthMethod),
}

/// Runs the authentication exchange up to AuthenticationOk and returns the method used.
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &LoginRequest<'_>,
    server_leaf_cert: Option<&[u8]>,
    scram_cache: &SaltedPasswordCache,
) -> Result<AuthMethod, UpstreamError> {
    let ctx = Answering {
        user: req.user,
        password: req.password.expose_secret().as_bytes(),
        server_leaf_cert,
        scram_cache,
    };
    let mut state = AuthState::Start;
    loop {
        let msg = next_request(s).await?;
        let request = AuthenticationRequest::decode(&msg.body)
            .map_err(|e| UpstreamError::protocol(Phase::Login, e.to_string()))?;
        let mut out = BytesMut::new();
        state = match answer(&ctx, state, request, &mut out).await? {
            Step::Continue(next) => next,
            Step::Authenticated(method) => return Ok(method),
        };
        if !out.is_empty() {
            write_flush(s, &out).await?;
        }
    }
}

/// The server's next authentication request (`R`), skipping what may come between.
async fn next_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Message, UpstreamError> {
    loop {
        let msg = next_message(s).await?;
        match msg.tag {
            AuthenticationRequest::TAG => return Ok(msg),
            ErrorResponse::TAG => return Err(server_error(&msg.body)),
            // Notices before AuthenticationOk carry nothing the client needs.
            ErrorResponse::NOTICE_TAG => continue,
            // We ask for 3.0 without `_pq_` options of our own; a server listing options it
            // does not know is informational only.
            NegotiateProtocolVersion::TAG => continue,
            other => {
                return Err(UpstreamError::protocol(
                    Phase::Login,
                    format!(
                        "unexpected message '{}' during authentication",
                        other as char
                    ),
                ))
            }
        }
    }
}

/// Answers one request into `out`, as `state` allows.
async fn answer(
    ctx: &Answering<'_>,
    state: AuthState,
    request: AuthenticationRequest<'_>,
    out: &mut BytesMut,
) -> Result<Step, UpstreamError> {
    let password = ctx.password;
    let next = match (state, request) {
        (AuthState::Start, AuthenticationRequest::Ok) => {
            return Ok(Step::Authenticated(AuthMethod::None))
        }
        (AuthState::AwaitOk(method), AuthenticationRequest::Ok) => {
            return Ok(Step::Authenticated(method))
        }
        (AuthState::Start, AuthenticationRequest::CleartextPassword) => {
            PasswordMessage::new(password)
                .map_err(|_| UpstreamError::UnusableCredential {
                    reason: "the password contains a NUL byte",
                })?
                .encode_into(out);
            AuthState::AwaitOk(AuthMethod::Cleartext)
        }
        (AuthState::Start, AuthenticationRequest::Md5Password { salt }) => {
            let hash = auth::md5_password(ctx.user, password, salt);
            PasswordMessage::new(hash.as_bytes())
                .map_err(|_| UpstreamError::protocol(Phase::Login, "bad md5 hash"))?
                .encode_into(out);
            AuthState::AwaitOk(AuthMethod::Md5)
        }
        (
            AuthState::Start,
            AuthenticationRequest::Digest {
                algorithm,
                salt,
                server_nonce,
            },
        ) => {
            if algorithm != redshift_digest::ALGORITHM_SHA256 {
                return Err(UpstreamError::UnsupportedDigest { algorithm });
            }
            let client_nonce = auth::redshift_client_nonce();
            let salted = redshift_digest::salted_password(password, salt);
            let digest = redshift_digest::digest(&salted, server_nonce, client_nonce.as_bytes());
            DigestResponse::new(&digest, client_nonce.as_bytes())
                .map_err(|e| UpstreamError::protocol(Phase::Login, e.to_string()))?
                .encode_into(out);
            AuthState::AwaitOk(AuthMethod::RedshiftDigestSha256)
        }
        (AuthState::Start, AuthenticationRequest::Sasl { mechanisms }) => {
            let (mechanism, method, binding) = choose_sasl(&mechanisms, ctx.server_leaf_cert)?;
            let scram = ScramClient::new(password, binding);
            SaslInitialResponse::new(mechanism, scram.client_first().as_bytes())
                .map_err(|e| UpstreamError::protocol(Phase::Login, e.to_string()))?
                .encode_into(out);
            AuthState::ScramContinue(Box::new(scram), method)
        }
        (AuthState::ScramContinue(scram, method), AuthenticationRequest::SaslContinue { data }) => {
            let first = scram.server_first(data).map_err(scram_failure)?;
            let salted = salted_password(ctx.scram_cache, &scram, &first).await?;
            let last = scram.client_final(&first, &salted);
            SaslResponse {
                data: last.message.as_bytes(),
            }
            .encode_into(out);
            AuthState::ScramFinal(Box::new(last), method)
        }
        (AuthState::ScramFinal(last, method), AuthenticationRequest::SaslFinal { data }) => {
            // The server proves it knows the password (or its verifier). Without this
            // check a man in the middle holding a valid certificate could complete the
            // login by itself.
            last.verify(data).map_err(scram_failure)?;
            AuthState::AwaitOk(method)
        }
        // Redshift's AUTH_REQ_IDP (research: redshift-server.md §2).
        (_, AuthenticationRequest::Unsupported { code: 14 }) => {
            return Err(UpstreamError::IdentityTokenRequested)
        }
        (_, AuthenticationRequest::Unsupported { code }) => {
            return Err(UpstreamError::UnsupportedAuth { code })
        }
        (_, request) => {
            return Err(UpstreamError::protocol(
                Phase::Login,
                format!("unexpected authentication request {}", request.code()),
            ))
        }
    };
    Ok(Step::Continue(next))
}

/// Picks the SASL mechanism: SCRAM-SHA-256-PLUS with `tls-server-end-point` binding when
/// offered and the certificate allows it, else SCRAM-SHA-256.
fn choose_sasl(
    mechanisms: &[&str],
    server_leaf_cert: Option<&[u8]>,
) -> Result<(&'static str, AuthMethod, ChannelBinding), UpstreamError> {
    let plus_offered = mechanisms.contains(&"SCRAM-SHA-256-PLUS");
    if plus_offered {
        if let Some(hash) = server_leaf_cert.and_then(auth::tls_server_end_point) {
            return Ok((
                "SCRAM-SHA-256-PLUS",
                AuthMethod::ScramSha256Plus,
                ChannelBinding::TlsServerEndPoint(hash),
            ));
        }
    }
    if mechanisms.contains(&"SCRAM-SHA-256") {
        // gs2 header "y" tells the server we could bind but it did not offer to, so a
        // stripped PLUS offer is detected; "n" is honest when we cannot bind this cert.
        let binding = if plus_offered {
            ChannelBinding::Unsupported
        } else {
            ChannelBinding::NotOffered
        };
        return Ok(("SCRAM-SHA-256", AuthMethod::ScramSha256, binding));
    }
    let offered: String = mechanisms.join(", ").chars().take(200).collect();
    Err(UpstreamError::NoSaslMechanism { offered })
}

fn scram_failure(e: ScramError) -> UpstreamError {
    UpstreamError::Scram {
        detail: e.to_string(),
    }
}

/// The salted password for this exchange: from the endpoint's cache when this credential
/// already logged in with this salt, else PBKDF2 (up to 100,000 rounds) off the async
/// workers, then cached.
async fn salted_password(
    cache: &SaltedPasswordCache,
    scram: &ScramClient,
    first: &scram::ServerFirst,
) -> Result<Zeroizing<[u8; 32]>, UpstreamError> {
    let key = cache.key(scram.password(), &first.salt, first.iterations);
    if let Some(salted) = cache.get(&key) {
        return Ok(salted);
    }
    let password = Zeroizing::new(scram.password().to_vec());
    let (salt, iterations) = (first.salt.clone(), first.iterations);
    let salted = tokio::task::spawn_blocking(move || scram::hi(&password, &salt, iterations))
        .await
        .map_err(|e| UpstreamError::Scram {
            detail: format!("SCRAM task failed: {e}"),
        })?;
    cache.insert(key, &salted);
    Ok(salted)
}

/// After AuthenticationOk: collects messages up to ReadyForQuery, taking out BackendKeyData.
pub(crate) async fn read_until_ready<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(Option<BackendKey>, BytesMut), UpstreamError> {
    let mut key = None;
    let mut after_auth = BytesMut::new();
    loop {
        let msg = next_message(s).await?;
        match msg.tag {
            BackendKeyData::TAG => {
                if key.is_some() {
                    return Err(UpstreamError::protocol(
                        Phase::Login,
                        "more than one BackendKeyData",
                    ));
                }
                key = Some(
                    BackendKeyData::decode(&msg.body)
                        .map_err(|e| UpstreamError::protocol(Phase::Login, e.to_string()))?,
                );
                continue;
            }
            ErrorResponse::TAG => return Err(server_error(&msg.body)),
            AuthenticationRequest::TAG => {
                return Err(UpstreamError::protocol(
                    Phase::Login,
                    "authentication request after AuthenticationOk",
                ))
            }
            ReadyForQuery::TAG => {
                ReadyForQuery::decode(&msg.body)
                    .map_err(|e| UpstreamError::protocol(Phase::Login, e.to_string()))?;
            }
            _ => {}
        }
        if after_auth.len() + 5 + msg.body.len() > MAX_AFTER_AUTH {
            return Err(UpstreamError::protocol(
                Phase::Login,
                format!("more than {MAX_AFTER_AUTH} bytes before ReadyForQuery"),
            ));
        }
        encode_into(&mut after_auth, msg.tag, &msg.body);
        if msg.tag == ReadyForQuery::TAG {
            return Ok((key, after_auth));
        }
    }
}
