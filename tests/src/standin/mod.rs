//! A Redshift stand-in: a small server in front of a real PostgreSQL that behaves toward
//! its clients (the proxy, drivers) the way Amazon Redshift does at login, then relays the
//! session byte for byte.
//!
//! What it does like Redshift (sources in `/work/research/redshift-server.md`, cited where
//! each behaviour is implemented):
//! - TLS after SSLRequest (certificate from the test PKI), with PostgreSQL's rule against
//!   bytes pipelined after the SSLRequest; a plaintext login of an IAM user fails with the
//!   password failure (node-postgres#1528). CancelRequest, plain or inside TLS, is forwarded
//!   to PostgreSQL (the BackendKeyData the client holds is PostgreSQL's own) and answered
//!   with nothing.
//! - Startup parameters: Redshift's closed list; anything else is FATAL 42704 (see
//!   `params.rs`).
//! - The startup burst reports Redshift's `server_version` (8.0.2), `padb_version` and
//!   `padb_revision`, and answers `client_protocol_version` with `server_protocol_version`
//!   = min(requested, 0) = `0` just before BackendKeyData (see `burst.rs`).
//! - Authentication: md5 (code 5) for IAM users and Redshift's SHA-256 digest (code 13) for
//!   the users configured so; never SCRAM. Every unexpired password the AWS emulator issued
//!   for that user and database works on its own ([`issued`]); an expired one fails with
//!   `IAM Authentication token has expired`, anything else with FATAL 28000
//!   `password authentication failed for user "<name>"`.
//! - DbGroups apply to the session only (GRANT at start, REVOKE when the last session of
//!   that user and group ends).
//! - Redshift user names longer than PostgreSQL's 63 bytes are mapped ([`names`]).
//!
//! Then it logs in to PostgreSQL over its unix socket (trust) as the user itself, so
//! `select current_user` shows e.g. `IAMA:alice`, relays PostgreSQL's ParameterStatus /
//! BackendKeyData / ReadyForQuery, and relays bytes both ways until either side closes.
//!
//! Every login attempt is recorded ([`StandIn::logins`]). [`StandIn::set_unavailable`]
//! plays a resuming serverless workgroup (research §8: the handshake is torn down).

mod auth;
mod burst;
mod groups;
pub mod issued;
pub mod names;
mod params;
mod protocol;
mod server;

pub use auth::{AuthMethod, StoredVerifier};
pub use issued::{CredentialRequest, IssuedCredential, IssuedCredentials, TargetId, TargetKind};
pub use names::pg_role_name;
pub use params::JDBC_DRIVER_PARAMETERS;
pub use protocol::ServerError;

use crate::emulator::PgAdmin;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Host name the stand-in's certificate is issued for (with `127.0.0.1`).
pub const HOST: &str = "localhost";

/// TLS material of a stand-in: its certificate chain and key, and the CA that issued them
/// (what clients put in their trust store, e.g. the proxy's `ca_bundle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandInTls {
    /// PEM chain (leaf first) for `localhost` and `127.0.0.1`.
    pub cert_chain: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM certificate of the issuing CA.
    pub ca_cert: PathBuf,
}

/// A user with a stored password, like one made with `CREATE USER ... PASSWORD`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    pub name: String,
    /// `md5<md5hex(password + name)>` or `sha256|<hex D1>|<64-hex salt>` (DG
    /// r_CREATE_USER); see [`StoredVerifier`].
    pub verifier: String,
}

/// Configuration of one stand-in (one cluster or workgroup).
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// The cluster or workgroup it plays: it accepts the credentials issued for it.
    pub target: TargetId,
    /// Where it listens (port 0: an ephemeral port).
    pub listen: SocketAddr,
    pub tls: StandInTls,
    /// The PostgreSQL behind it: its unix socket directory (`host`) and port; `user` is the
    /// superuser that grants session groups.
    pub pg: PgAdmin,
    /// Users (exact names or globs with `*` and `?`, matched against the login name, e.g.
    /// `IAMA:digest_*`) who are challenged with the SHA-256 digest (code 13) instead of
    /// md5.
    pub sha256_users: Vec<String>,
    /// Users with a stored password (they log in without the AWS emulator).
    pub static_users: Vec<StaticUser>,
}

/// How one login attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginOutcome {
    /// Logged in; the session was relayed.
    Ok,
    /// Refused with this FATAL ErrorResponse.
    Refused { sqlstate: String, message: String },
    /// Closed right after the startup message ([`StandIn::set_unavailable`]).
    Unavailable,
    /// The client went away (or broke the protocol) before the login was decided.
    Abandoned,
}

/// One login attempt as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginRecord {
    /// `user` as sent (empty when missing).
    pub user: String,
    /// `database` as sent, or the user name by default.
    pub database: String,
    /// Every startup parameter received, names and values as sent (`user` and `database`
    /// included).
    pub params: Vec<(String, String)>,
    /// Whether the login came over TLS.
    pub tls: bool,
    /// The authentication method offered, if it got that far.
    pub auth_method: Option<AuthMethod>,
    /// The PostgreSQL role the session ran as (after name mapping), when it logged in.
    pub pg_role: Option<String>,
    pub outcome: LoginOutcome,
}

impl LoginRecord {
    /// The value of startup parameter `name` (exact name), if received.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where clients reach a stand-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name to verify the certificate for (`localhost`).
    pub host: String,
    /// Address it listens on (127.0.0.1 and a port).
    pub addr: SocketAddr,
    /// CA certificate to trust (the proxy's `ca_bundle`).
    pub ca_cert: PathBuf,
}

impl Endpoint {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// State shared by the accept loop and the connections.
pub(crate) struct Shared {
    config: StandInConfig,
    sha256_users: Vec<String>,
    static_users: Vec<(String, StoredVerifier)>,
    issued: Arc<IssuedCredentials>,
    groups: groups::Groups,
    tls: tokio_rustls::TlsAcceptor,
    logins: Mutex<Vec<LoginRecord>>,
    unavailable_until: Mutex<Option<Instant>>,
    /// Time a connection has to complete its login (PostgreSQL's `authentication_timeout`).
    authentication_timeout: Mutex<Duration>,
    active: watch::Sender<usize>,
    cancels: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn record(&self, record: LoginRecord) {
        tracing::debug!(
            target = %self.config.target,
            user = %record.user,
            database = %record.database,
            outcome = ?record.outcome,
            "stand-in login"
        );
        self.logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    fn authentication_timeout(&self) -> Duration {
        *self
            .authentication_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unavailable(&self) -> bool {
        self.unavailable_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn static_user(&self, name: &str) -> Option<&StoredVerifier> {
        self.static_users
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn wants_sha256(&self, user: &str) -> bool {
        self.sha256_users.iter().any(|g| wildcard_match(g, user))
    }
}

/// A running stand-in. Dropping it stops accepting and ends its connections.
pub struct StandIn {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("target", &self.shared.config.target)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Binds and starts serving. Credentials are checked against `issued`.
    pub async fn start(
        config: StandInConfig,
        issued: Arc<IssuedCredentials>,
    ) -> anyhow::Result<StandIn> {
        anyhow::ensure!(
            config.pg.host.starts_with('/'),
            "the stand-in reaches PostgreSQL over its unix socket: `host` must be the socket directory"
        );
        let static_users = config
            .static_users
            .iter()
            .map(|u| {
                StoredVerifier::parse(&u.verifier)
                    .map(|v| (u.name.clone(), v))
                    .map_err(|e| anyhow::anyhow!("static user {}: {e}", u.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tls = server::tls_acceptor(&config.tls)
            .with_context(|| format!("TLS material of the stand-in of {}", config.target))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "binding the stand-in of {} to {}",
                    config.target, config.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let endpoint = Endpoint {
            host: HOST.to_owned(),
            addr,
            ca_cert: config.tls.ca_cert.clone(),
        };
        let shared = Arc::new(Shared {
            sha256_users: config.sha256_users.clone(),
            static_users,
            issued,
            groups: groups::Groups::new(config.pg.clone()),
            tls,
            logins: Mutex::new(Vec::new()),
            unavailable_until: Mutex::new(None),
            authentication_timeout: Mutex::new(server::AUTHENTICATION_TIMEOUT),
            active: watch::Sender::new(0),
            cancels: std::sync::atomic::AtomicU64::new(0),
            config,
        });
        let task = tokio::spawn(server::accept_loop(Arc::clone(&shared), listener));
        tracing::info!(target = %shared.config.target, %addr, "Redshift stand-in listening");
        Ok(StandIn {
            shared,
            endpoint,
            task,
        })
    }

    /// Where clients connect.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The cluster or workgroup it plays.
    pub fn target(&self) -> &TargetId {
        &self.shared.config.target
    }

    /// The CA certificate clients must trust.
    pub fn ca_cert_path(&self) -> &Path {
        &self.endpoint.ca_cert
    }

    /// Every login attempt so far, oldest first.
    pub fn logins(&self) -> Vec<LoginRecord> {
        self.shared
            .logins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// For `duration` from now, new connections are closed right after their startup
    /// message, as a serverless workgroup resuming from idle tears handshakes down
    /// (research §8: dex#97, python#176). Sessions already open are not affected.
    pub fn set_unavailable(&self, duration: Duration) {
        *self
            .shared
            .unavailable_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + duration);
    }

    /// From now on, connections that have not completed their login within `timeout` of
    /// being accepted are closed, as PostgreSQL does after `authentication_timeout` (60 s
    /// by default, which is also the stand-in's default).
    pub fn set_authentication_timeout(&self, timeout: Duration) {
        *self
            .shared
            .authentication_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = timeout;
    }

    /// Sessions currently relayed.
    pub fn active_sessions(&self) -> usize {
        *self.shared.active.borrow()
    }

    /// Waits until exactly `n` sessions are relayed (a session counts until its groups
    /// have been revoked).
    pub async fn wait_for_active_sessions(&self, n: usize) {
        let mut rx = self.shared.active.subscribe();
        let _ = rx.wait_for(|&active| active == n).await;
    }

    /// CancelRequests forwarded to PostgreSQL so far.
    pub fn cancel_requests(&self) -> u64 {
        self.shared
            .cancels
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else literally.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// tokio-postgres to a stand-in with a password (md5), TLS verified for `localhost`
/// against its CA. The connection task is spawned on the current runtime. Panics if the
/// stand-in's CA certificate cannot be read.
pub async fn connect(
    endpoint: &Endpoint,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .hostaddr(endpoint.addr.ip())
        .port(endpoint.addr.port())
        .user(user)
        .password(password)
        .dbname(database)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    let tls = crate::pg::tls_client_config(&endpoint.ca_cert)
        .map(tokio_postgres_rustls::MakeRustlsConnect::new)
        .expect("the stand-in's CA certificate is readable");
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("IAMA:digest_*", "IAMA:digest_alice"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(wildcard_match("*b*", "aaabaaa"));
        assert!(!wildcard_match("IAMA:x", "IAMA:xy"));
    }
}
