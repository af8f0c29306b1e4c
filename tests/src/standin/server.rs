//! Connections of the stand-in: negotiation, login, and the relay.

use super::auth::{Answer, Challenge};
use super::burst;
use super::names::pg_role_name;
use super::params::{classify, Classified};
use super::protocol::{
    self, read_message, read_startup_packet, Message, ServerError, StartupPacket, MAX_LOGIN_MESSAGE,
};
use super::{AuthMethod, LoginOutcome, LoginRecord, Shared, StandInTls};
use anyhow::Context as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinSet;

/// Everything up to the relay must finish within this by default, as PostgreSQL's
/// `authentication_timeout` (see [`super::StandIn::set_authentication_timeout`]).
pub(crate) const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes PostgreSQL may send between AuthenticationOk and ReadyForQuery.
const MAX_BURST: usize = 1 << 20;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = Box<dyn Io>;

pub(crate) fn tls_acceptor(tls: &StandInTls) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_chain)
        .with_context(|| format!("reading {}", tls.cert_chain.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", tls.cert_chain.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    // Owned here: aborting the loop (dropping the stand-in) ends every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve(Arc::clone(&shared), tcp));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "stand-in accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A logged-in session, ready to relay.
struct Session {
    client: Stream,
    pg: UnixStream,
    role: String,
    groups: Vec<String>,
}

async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let timeout = shared.authentication_timeout();
    let session = match tokio::time::timeout(timeout, negotiate(&shared, tcp)).await {
        Ok(Some(session)) => session,
        Ok(None) | Err(_) => return,
    };
    shared.active.send_modify(|n| *n += 1);
    let Session {
        mut client,
        mut pg,
        role,
        groups,
    } = session;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut pg).await;
    drop(client);
    drop(pg);
    shared.groups.leave(&role, &groups).await;
    shared.active.send_modify(|n| *n -= 1);
}

/// SSLRequest / GSSENCRequest / CancelRequest handling up to the StartupMessage.
async fn negotiate(shared: &Shared, mut tcp: TcpStream) -> Option<Session> {
    let mut gss_answered = false;
    loop {
        match read_startup_packet(&mut tcp).await.ok()? {
            StartupPacket::SslRequest => {
                // Bytes the client sent after the SSLRequest without waiting for the answer
                // would be read as if they came through TLS: PostgreSQL refuses them
                // (CVE-2021-23214; PgBouncer CVE-2021-3935). The stand-in reads the
                // request unbuffered, so anything already readable now was pipelined.
                let mut probe = [0u8; 1];
                match tcp.try_read(&mut probe) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {
                        // Read what else is there, so that closing sends FIN, not a reset
                        // that could destroy the error before the client reads it.
                        let mut sink = [0u8; 1024];
                        while matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {}
                        let error = ServerError::fatal(
                            "08P01",
                            "received unencrypted data after SSL request",
                        );
                        let _ = tcp.write_all(&error.encode()).await;
                        let _ = tcp.shutdown().await;
                        return None;
                    }
                }
                tcp.write_all(b"S").await.ok()?;
                let tls = shared.tls.accept(tcp).await.ok()?;
                return after_tls(shared, Box::new(tls)).await;
            }
            // No GSSAPI encryption: 'N', then the client goes on (once).
            StartupPacket::GssEncRequest if !gss_answered => {
                tcp.write_all(b"N").await.ok()?;
                gss_answered = true;
            }
            StartupPacket::GssEncRequest => return None,
            StartupPacket::Cancel { raw, pid } => {
                forward_cancel(shared, &raw, pid).await;
                return None;
            }
            StartupPacket::Startup {
                major,
                minor,
                params,
            } => return login(shared, Box::new(tcp), false, major, minor, params).await,
        }
    }
}

async fn after_tls(shared: &Shared, mut stream: Stream) -> Option<Session> {
    match read_startup_packet(&mut stream).await.ok()? {
        StartupPacket::Startup {
            major,
            minor,
            params,
        } => login(shared, stream, true, major, minor, params).await,
        // libpq 17 sends its cancel inside TLS.
        StartupPacket::Cancel { raw, pid } => {
            forward_cancel(shared, &raw, pid).await;
            None
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            let error = ServerError::fatal("08P01", "unsupported frontend protocol");
            let _ = stream.write_all(&error.encode()).await;
            None
        }
    }
}

/// Forwards a CancelRequest to PostgreSQL (whose key the client holds); nobody answers.
async fn forward_cancel(shared: &Shared, raw: &[u8], pid: u32) {
    shared.cancels.fetch_add(1, Ordering::SeqCst);
    match UnixStream::connect(socket_path(shared)).await {
        Ok(mut pg) => {
            let _ = pg.write_all(raw).await;
            let _ = pg.shutdown().await;
            tracing::debug!(pid, "stand-in forwarded a cancel request");
        }
        Err(err) => tracing::warn!(error = %err, "stand-in cannot forward a cancel request"),
    }
}

fn socket_path(shared: &Shared) -> std::path::PathBuf {
    Path::new(&shared.config.pg.host).join(format!(".s.PGSQL.{}", shared.config.pg.port))
}

/// Sends `error`, records the refusal and ends the login.
async fn refuse(
    shared: &Shared,
    stream: &mut Stream,
    record: LoginRecord,
    error: ServerError,
) -> Option<Session> {
    refuse_after(shared, stream, record, &[], error).await
}

/// Sends `before` (AuthenticationOk, when the client already authenticated) and `error`,
/// records the refusal and ends the login.
async fn refuse_after(
    shared: &Shared,
    stream: &mut Stream,
    mut record: LoginRecord,
    before: &[u8],
    error: ServerError,
) -> Option<Session> {
    let mut reply = before.to_vec();
    reply.extend(error.encode());
    let _ = stream.write_all(&reply).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    record.outcome = LoginOutcome::Refused {
        sqlstate: error.code,
        message: error.message,
    };
    shared.record(record);
    None
}

async fn login(
    shared: &Shared,
    mut stream: Stream,
    tls: bool,
    major: u16,
    minor: u16,
    params: Vec<(String, String)>,
) -> Option<Session> {
    let classified = classify(&params);
    let user = classified.user.clone().unwrap_or_default();
    let database = classified
        .database
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    let mut record = LoginRecord {
        user: user.clone(),
        database: database.clone(),
        params,
        tls,
        auth_method: None,
        pg_role: None,
        outcome: LoginOutcome::Abandoned,
    };
    if shared.unavailable() {
        record.outcome = LoginOutcome::Unavailable;
        shared.record(record);
        return None;
    }
    if major != 3 || minor != 0 {
        // Redshift is PostgreSQL 8.0 on the wire: protocol 3.0 only, and no
        // NegotiateProtocolVersion, which would break JDBC (research §6). Wording of 8.0.
        let error = ServerError::fatal(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: server supports 1.0 to 3.0"),
        );
        return refuse(shared, &mut stream, record, error).await;
    }
    if user.is_empty() {
        let error = ServerError::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        );
        return refuse(shared, &mut stream, record, error).await;
    }

    // The challenge: a static user's stored form decides; else md5, or the digest for the
    // users configured so.
    let stored = shared.static_user(&user).cloned();
    let method = match &stored {
        Some(v) => v.method(),
        None if shared.wants_sha256(&user) => AuthMethod::Sha256Digest,
        None => AuthMethod::Md5,
    };
    record.auth_method = Some(method);
    let fixed_salt = match &stored {
        Some(super::StoredVerifier::Sha256 { salt, .. }) => Some(salt.clone()),
        _ => None,
    };
    let challenge = Challenge::new(method, fixed_salt.as_deref());
    if stream.write_all(&challenge.encode()).await.is_err() || stream.flush().await.is_err() {
        shared.record(record);
        return None;
    }
    let Ok(reply) = read_message(&mut stream, MAX_LOGIN_MESSAGE).await else {
        shared.record(record);
        return None;
    };
    let Some(answer) = Answer::parse(method, reply.tag, &reply.body) else {
        let error = ServerError::fatal(
            "08P01",
            format!("expected password response, got message type {}", reply.tag),
        );
        return refuse(shared, &mut stream, record, error).await;
    };

    let groups = match &stored {
        Some(verifier) => {
            if !challenge.verify_stored(&answer, verifier) {
                let error = ServerError::password_failed(&user);
                return refuse(shared, &mut stream, record, error).await;
            }
            Vec::new()
        }
        None => {
            if !tls {
                // An IAM temporary password sent without TLS fails as a wrong password and
                // works once SSL is on (node-postgres#1528; PY: "SSL must be enabled when
                // authenticating using IAM").
                let error = ServerError::password_failed(&user);
                return refuse(shared, &mut stream, record, error).await;
            }
            match check_issued(shared, &challenge, &answer, &user, &database) {
                Ok(groups) => groups,
                Err(error) => return refuse(shared, &mut stream, record, *error).await,
            }
        }
    };

    // The user must exist: one that was never created (AutoCreate=false) gets credentials
    // from the API, but "the connection attempt will fail" (API_GetClusterCredentials), as
    // a password failure (what a missing role gets from PostgreSQL's md5 too).
    let role = pg_role_name(&user);
    match shared.groups.role_exists(&role).await {
        Ok(true) => {}
        Ok(false) => {
            let error = ServerError::password_failed(&user);
            return refuse(shared, &mut stream, record, error).await;
        }
        Err(err) => {
            let error = ServerError::fatal("XX000", format!("stand-in: {err}"));
            return refuse(shared, &mut stream, record, error).await;
        }
    }

    // Authenticated. As in PostgreSQL, AuthenticationOk comes first and what fails while
    // the session is set up follows it: startup parameters (process_startup_options runs
    // after the password check; INFERRED for Redshift), groups, the database. It is sent
    // with the rest of the startup burst, in one write (some drivers break on split writes).
    let authenticated = protocol::auth_ok();
    if let Some(name) = &classified.unrecognized {
        let error = ServerError::unrecognized_parameter(name);
        return refuse_after(shared, &mut stream, record, &authenticated, error).await;
    }
    match shared.groups.first_missing(&groups).await {
        Ok(None) => {}
        Ok(Some(group)) => {
            // DbGroups must already exist (API_GetClusterCredentials: "existing database
            // groups"). Redshift's text and SQLSTATE for a missing one are UNCONFIRMED;
            // 42704 (undefined_object) with ALTER GROUP's wording.
            let error = ServerError::fatal("42704", format!("group \"{group}\" does not exist"));
            return refuse_after(shared, &mut stream, record, &authenticated, error).await;
        }
        Err(err) => {
            let error = ServerError::fatal("XX000", format!("stand-in: {err}"));
            return refuse_after(shared, &mut stream, record, &authenticated, error).await;
        }
    }
    if let Err(err) = shared.groups.join(&role, &groups).await {
        let error = ServerError::fatal("XX000", format!("stand-in: {err}"));
        return refuse_after(shared, &mut stream, record, &authenticated, error).await;
    }

    match connect_postgres(shared, &role, &database, &classified).await {
        Ok((pg, burst)) => {
            let mut reply = authenticated;
            reply.extend(burst::redshift_burst(
                &burst,
                classified.client_protocol_version(),
            ));
            if stream.write_all(&reply).await.is_err() || stream.flush().await.is_err() {
                shared.groups.leave(&role, &groups).await;
                shared.record(record);
                return None;
            }
            record.pg_role = Some(role.clone());
            record.outcome = LoginOutcome::Ok;
            shared.record(record);
            Some(Session {
                client: stream,
                pg,
                role,
                groups,
            })
        }
        Err(error) => {
            shared.groups.leave(&role, &groups).await;
            let error = match error {
                PgLogin::Refused(body) => {
                    let error = ServerError::from_postgres(&body);
                    if error.code.starts_with("28") {
                        // The role vanished since the check above.
                        ServerError::password_failed(&user)
                    } else {
                        error
                    }
                }
                PgLogin::Failed(detail) => {
                    ServerError::fatal("XX000", format!("stand-in: {detail}"))
                }
            };
            refuse_after(shared, &mut stream, record, &authenticated, error).await
        }
    }
}

/// Finds the issued credential the answer proves; its groups on success.
fn check_issued(
    shared: &Shared,
    challenge: &Challenge,
    answer: &Answer,
    user: &str,
    database: &str,
) -> Result<Vec<String>, Box<ServerError>> {
    let now = OffsetDateTime::now_utc();
    let mut expired = false;
    for credential in shared.issued.for_user(&shared.config.target, user) {
        if !challenge.verify_password(answer, user, &credential.password) {
            continue;
        }
        if credential.expiration <= now {
            expired = true;
            continue;
        }
        if credential
            .db_name
            .as_deref()
            .is_some_and(|db| db != database)
        {
            // Issued with DbName=X: opens X only. Redshift's wire text for another database
            // is UNCONFIRMED (research §3); refused as a password failure.
            return Err(Box::new(ServerError::password_failed(user)));
        }
        return Ok(credential.groups);
    }
    if expired {
        Err(Box::new(ServerError::token_expired()))
    } else {
        Err(Box::new(ServerError::password_failed(user)))
    }
}

enum PgLogin {
    /// PostgreSQL's ErrorResponse body.
    Refused(Vec<u8>),
    Failed(String),
}

/// Logs in to PostgreSQL over its unix socket (trust) as `role`; returns the connection and
/// every message after AuthenticationOk up to and including ReadyForQuery.
async fn connect_postgres(
    shared: &Shared,
    role: &str,
    database: &str,
    classified: &Classified,
) -> Result<(UnixStream, Vec<Message>), PgLogin> {
    let mut pg = UnixStream::connect(socket_path(shared))
        .await
        .map_err(|e| PgLogin::Failed(format!("cannot reach PostgreSQL: {e}")))?;
    let mut params = vec![
        ("user".to_owned(), role.to_owned()),
        ("database".to_owned(), database.to_owned()),
    ];
    params.extend(classified.forwarded.iter().cloned());
    pg.write_all(&protocol::startup_message(&params))
        .await
        .map_err(|e| PgLogin::Failed(format!("PostgreSQL: {e}")))?;
    let mut burst = Vec::new();
    let mut size = 0;
    loop {
        let message = read_message(&mut pg, MAX_BURST)
            .await
            .map_err(|e| PgLogin::Failed(format!("PostgreSQL login: {e}")))?;
        size += message.body.len();
        if size > MAX_BURST {
            return Err(PgLogin::Failed(
                "PostgreSQL sent too much at login".to_owned(),
            ));
        }
        match message.tag {
            b'R' if message.body == [0, 0, 0, 0] => {}
            b'R' => {
                return Err(PgLogin::Failed(
                    "PostgreSQL asked the stand-in for a password (its unix socket must use trust)"
                        .to_owned(),
                ))
            }
            b'E' => return Err(PgLogin::Refused(message.body)),
            b'Z' => {
                burst.push(message);
                return Ok((pg, burst));
            }
            _ => burst.push(message),
        }
    }
}
