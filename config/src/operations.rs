//! How the proxy runs: `[log]`, `[admin]`, `[audit]`, `[limits]`, `[shutdown]`,
//! `[security]` and `[db_credentials]`.

use crate::address::{is_dns_name, ListenAddress};
use crate::problems::Problems;
use crate::size::ByteSize;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `redshift_iam_proxy=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

impl LogConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        p.check("log.level", check_level(&self.level));
    }
}

/// Minimal syntax check of a tracing filter directive list, so a typo fails at load time
/// rather than silently logging nothing.
fn check_level(s: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit('=').next().unwrap_or(directive);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) && directive.contains('=') {
            return Err(format!("{directive:?}: unknown level {level:?}"));
        }
        if !directive.contains('=')
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
            && !directive
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!(
                "{directive:?} is not a level or target=level directive"
            ));
        }
    }
    Ok(())
}

/// The admin HTTP listener: `/metrics`, `/livez`, `/readyz`, `/startupz`, `POST /reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:port` to bind, e.g. `127.0.0.1:9187`, or `unix:/path` for a Unix socket.
    /// Absent: no admin listener.
    #[serde(default)]
    pub bind: Option<ListenAddress>,
    /// Permit a non-loopback `bind`. The read-only endpoints are unauthenticated, so
    /// exposing them beyond the host is an explicit decision.
    #[serde(default)]
    pub allow_remote: bool,
    /// File holding the bearer token `POST /reload` requires on a TCP admin listener
    /// (`Authorization: Bearer <token>`). Without a token only a Unix-socket admin listener
    /// accepts reloads.
    #[serde(default)]
    pub reload_token_file: Option<PathBuf>,
    /// Environment variable holding that token (instead of a file).
    #[serde(default)]
    pub reload_token_env: Option<String>,
    /// Host names (`Host` header, without port) accepted besides IP literals and
    /// `localhost`; anything else is refused, so a browser tricked by DNS rebinding cannot
    /// reach the endpoints.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl AdminConfig {
    /// Every problem of `[admin]` on its own; that `bind` is no listener's address is
    /// checked by [`crate::Config`].
    pub(crate) fn check(&self, p: &mut Problems) {
        self.check_reload_token(p);
        for host in &self.allowed_hosts {
            p.check("admin.allowed_hosts", check_allowed_host(host));
        }
        let Some(bind) = &self.bind else {
            for (key, given) in [
                ("admin.allow_remote", self.allow_remote),
                ("admin.reload_token_file", self.reload_token_file.is_some()),
                ("admin.reload_token_env", self.reload_token_env.is_some()),
                ("admin.allowed_hosts", !self.allowed_hosts.is_empty()),
            ] {
                if given {
                    p.add(key, "only used with admin.bind");
                }
            }
            return;
        };
        p.check("admin.bind", bind.check_usable());
        if !bind.is_local_only() && !self.allow_remote {
            p.add(
                "admin.bind",
                format!(
                    "{:?} is not a loopback address; the admin endpoints are \
                     unauthenticated, set admin.allow_remote = true to expose them",
                    bind.to_string()
                ),
            );
        }
    }
}

impl AdminConfig {
    fn check_reload_token(&self, p: &mut Problems) {
        if self.reload_token_file.is_some() && self.reload_token_env.is_some() {
            p.add(
                "admin.reload_token_env",
                "give either reload_token_file or reload_token_env, not both",
            );
        }
        if self.reload_token_env.as_deref() == Some("") {
            p.add(
                "admin.reload_token_env",
                "must name an environment variable",
            );
        }
    }
}

/// An `allowed_hosts` entry: a host name as a `Host` header carries it, without port.
fn check_allowed_host(host: &str) -> Result<(), String> {
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "{host:?}: give the host name only, without scheme or path, e.g. \
             \"proxy.corp.example\""
        ));
    }
    if host.contains(':') && host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{host:?}: give the host name without a port (any port is accepted)"
        ));
    }
    if host.parse::<std::net::IpAddr>().is_ok() || is_dns_name(host) {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name"))
    }
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Write audit records at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// JSON-lines file, opened for append and reopened by every reload (SIGHUP), so an
    /// external rotator (logrotate) can rename it. Absent: standard output.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Records queued for the writer before new ones are dropped (and counted).
    #[serde(default = "default_audit_queue")]
    pub queue_capacity: usize,
    /// Rotate the file itself when it reaches this size: `path` becomes `path.1`, the
    /// older ones shift up. Absent: never (leave rotation to logrotate).
    #[serde(default)]
    pub max_file_size: Option<ByteSize>,
    /// Rotated files kept beside `path` (`path.1` .. `path.N`); older ones are deleted.
    #[serde(default = "default_audit_max_files")]
    pub max_files: usize,
    /// One record per statement a client sends (Query, Parse, Execute), besides the one
    /// per connection. Off by default.
    #[serde(default)]
    pub statements: bool,
    /// Statement text kept in a record; longer text is cut (on a UTF-8 boundary) and the
    /// record says so. The SHA-256 always covers the whole text.
    #[serde(default = "default_statement_max_length")]
    pub statement_max_length: ByteSize,
    /// Statement records queued for the writer before new ones are dropped (and counted);
    /// separate from `queue_capacity`, so a flood of statements never crowds out the
    /// records of connections.
    #[serde(default = "default_audit_queue")]
    pub statement_queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: None,
            queue_capacity: default_audit_queue(),
            max_file_size: None,
            max_files: default_audit_max_files(),
            statements: false,
            statement_max_length: default_statement_max_length(),
            statement_queue_capacity: default_audit_queue(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_audit_queue() -> usize {
    8192
}
fn default_audit_max_files() -> usize {
    10
}
fn default_statement_max_length() -> ByteSize {
    ByteSize(4096)
}

/// Largest `statement_max_length`: every record is one line the writer holds in memory
/// while it is queued.
const MAX_STATEMENT_LENGTH: u64 = 1 << 20;

/// Smallest `max_file_size`: below it a busy proxy would rotate every few records.
const MIN_AUDIT_FILE_SIZE: u64 = 64 * 1024;

impl AuditConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.queue_capacity == 0 {
            p.add("audit.queue_capacity", "must be greater than 0");
        }
        if self.path.is_some() && !self.enabled {
            p.add("audit.path", "set, but audit.enabled = false");
        }
        if let Some(size) = self.max_file_size {
            if self.path.is_none() {
                p.add(
                    "audit.max_file_size",
                    "needs audit.path (standard output is not rotated)",
                );
            }
            if size.0 < MIN_AUDIT_FILE_SIZE {
                p.add(
                    "audit.max_file_size",
                    format!("must be at least 64KiB (got {size})"),
                );
            }
        }
        if self.max_files == 0 {
            p.add(
                "audit.max_files",
                "must be at least 1 (rotating without keeping the old file loses records)",
            );
        }
        if self.statements && !self.enabled {
            p.add("audit.statements", "set, but audit.enabled = false");
        }
        if self.statement_max_length.0 > MAX_STATEMENT_LENGTH {
            p.add(
                "audit.statement_max_length",
                format!(
                    "must be at most 1MiB (got {}): longer text is still covered by the record's sha256",
                    self.statement_max_length
                ),
            );
        }
        if self.statement_queue_capacity == 0 {
            p.add("audit.statement_queue_capacity", "must be greater than 0");
        }
    }
}

/// Connection limits, session timeouts and TCP keepalive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most client connections the proxy holds at once, over all listeners.
    #[serde(default = "default_max_connections")]
    pub max_connections: Option<usize>,
    /// Most client connections each listener holds at once.
    #[serde(default)]
    pub max_connections_per_listener: Option<usize>,
    /// Most sessions one client identity (certificate issuer + subject, or local user)
    /// holds at once.
    #[serde(default)]
    pub max_connections_per_identity: Option<usize>,
    /// Most connections in the pre-authentication phase (TLS handshake up to a verified
    /// startup message) at once; further connections wait their turn within the login
    /// timeout.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Time from accept to a completed TLS handshake (or, on plaintext listeners, to the
    /// startup message). A handshake slot is taken only once a complete ClientHello has
    /// arrived.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Connections one source address may hold before it has authenticated.
    #[serde(default = "default_max_pending_per_source")]
    pub max_pending_per_source: usize,
    /// Close a session with no traffic in either direction for this long (default: off).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Close a session this long after login (default: off).
    #[serde(default, with = "humantime_serde")]
    pub max_session_lifetime: Option<Duration>,
    /// Close a session when its client certificate expires (default `true`).
    #[serde(default = "default_true")]
    pub session_lifetime_within_certificate: bool,
    /// Idle time before TCP keepalive probes, on client and upstream sockets (`0s`: off).
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    pub tcp_keepalive_interval: Duration,
    #[serde(default = "default_keepalive_retries")]
    pub tcp_keepalive_retries: u32,
    /// TCP_USER_TIMEOUT on client and upstream sockets: unacknowledged data for this long
    /// kills the connection (default: the OS default).
    #[serde(default, with = "humantime_serde")]
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            max_connections_per_listener: None,
            max_connections_per_identity: None,
            max_handshakes: default_max_handshakes(),
            handshake_timeout: default_handshake_timeout(),
            max_pending_per_source: default_max_pending_per_source(),
            idle_timeout: None,
            max_session_lifetime: None,
            session_lifetime_within_certificate: true,
            tcp_keepalive: default_keepalive(),
            tcp_keepalive_interval: default_keepalive_interval(),
            tcp_keepalive_retries: default_keepalive_retries(),
            tcp_user_timeout: None,
        }
    }
}

fn default_max_connections() -> Option<usize> {
    Some(10_000)
}
fn default_max_handshakes() -> usize {
    256
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_pending_per_source() -> usize {
    256
}
fn default_keepalive() -> Duration {
    Duration::from_secs(60)
}
fn default_keepalive_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_keepalive_retries() -> u32 {
    6
}

impl LimitsConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        for (key, v) in [
            ("limits.max_connections", self.max_connections),
            (
                "limits.max_connections_per_listener",
                self.max_connections_per_listener,
            ),
            (
                "limits.max_connections_per_identity",
                self.max_connections_per_identity,
            ),
        ] {
            if v == Some(0) {
                p.add(key, "must be greater than 0 (omit it for no limit)");
            }
        }
        if self.max_handshakes == 0 {
            p.add("limits.max_handshakes", "must be greater than 0");
        }
        if self.handshake_timeout.is_zero() {
            p.add("limits.handshake_timeout", "must be greater than 0");
        }
        if self.max_pending_per_source == 0 {
            p.add(
                "limits.max_pending_per_source",
                "must be greater than 0 (with 0 no client could connect)",
            );
        }
        for (key, v) in [
            ("limits.idle_timeout", self.idle_timeout),
            ("limits.max_session_lifetime", self.max_session_lifetime),
            ("limits.tcp_user_timeout", self.tcp_user_timeout),
        ] {
            if v.is_some_and(|d| d.is_zero()) {
                p.add(key, "must be greater than 0 (omit it to turn it off)");
            }
        }
        if !self.tcp_keepalive.is_zero() {
            if self.tcp_keepalive_interval.is_zero() {
                p.add("limits.tcp_keepalive_interval", "must be greater than 0");
            }
            if self.tcp_keepalive_retries == 0 {
                p.add("limits.tcp_keepalive_retries", "must be greater than 0");
            }
        }
    }
}

/// Graceful shutdown on SIGTERM/SIGINT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time between turning unready and closing the listeners, so load balancers stop
    /// sending new connections first (default 0s).
    #[serde(default, with = "humantime_serde")]
    pub listener_close_delay: Duration,
    /// Time established sessions get to finish before they are closed with SQLSTATE 57P01.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            listener_close_delay: Duration::ZERO,
            drain_timeout: default_drain_timeout(),
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

impl ShutdownConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.drain_timeout.is_zero() {
            p.add("shutdown.drain_timeout", "must be greater than 0");
        }
    }
}

/// Settings a reload does not apply but does not refuse either: the running values stay
/// until the next restart, and the reload says so in a warning.
#[derive(Debug, PartialEq, Eq)]
pub struct LogKept<'a> {
    pub format: LogFormat,
    pub level: &'a str,
}

/// `[admin]`: the admin listener is bound once at start.
#[derive(Debug, PartialEq, Eq)]
pub struct AdminKept<'a> {
    pub bind: Option<&'a ListenAddress>,
    pub allow_remote: bool,
    pub reload_token_file: Option<&'a std::path::Path>,
    pub reload_token_env: Option<&'a str>,
    pub allowed_hosts: &'a [String],
}

/// `[audit]`: the writer thread and its queue are created once at start.
#[derive(Debug, PartialEq, Eq)]
pub struct AuditKept {
    pub enabled: bool,
    pub queue_capacity: usize,
    pub statement_queue_capacity: usize,
}

impl LogConfig {
    /// The subscriber is installed once at start. Every field is named, so a new one does
    /// not compile until it is classified.
    pub fn kept_until_restart(&self) -> LogKept<'_> {
        let LogConfig { format, level } = self;
        LogKept {
            format: *format,
            level,
        }
    }
}

impl AdminConfig {
    /// Every field is named, so a new one does not compile until it is classified.
    pub fn kept_until_restart(&self) -> AdminKept<'_> {
        let AdminConfig {
            bind,
            allow_remote,
            reload_token_file,
            reload_token_env,
            allowed_hosts,
        } = self;
        AdminKept {
            bind: bind.as_ref(),
            allow_remote: *allow_remote,
            reload_token_file: reload_token_file.as_deref(),
            reload_token_env: reload_token_env.as_deref(),
            allowed_hosts,
        }
    }
}

impl AuditConfig {
    /// Every field is named, so a new one does not compile until it is classified.
    pub fn kept_until_restart(&self) -> AuditKept {
        let AuditConfig {
            enabled,
            queue_capacity,
            statement_queue_capacity,
            // A reload reopens the file with these (log rotation).
            path: _,
            max_file_size: _,
            max_files: _,
            // Read by each new session.
            statements: _,
            statement_max_length: _,
        } = self;
        AuditKept {
            enabled: *enabled,
            queue_capacity: *queue_capacity,
            statement_queue_capacity: *statement_queue_capacity,
        }
    }
}

impl LimitsConfig {
    /// A reload applies every limit to new connections (a new State). Every field is
    /// named, so a new one does not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let LimitsConfig {
            max_connections: _,
            max_connections_per_listener: _,
            max_connections_per_identity: _,
            max_handshakes: _,
            handshake_timeout: _,
            max_pending_per_source: _,
            idle_timeout: _,
            max_session_lifetime: _,
            session_lifetime_within_certificate: _,
            tcp_keepalive: _,
            tcp_keepalive_interval: _,
            tcp_keepalive_retries: _,
            tcp_user_timeout: _,
        } = self;
    }
}

impl ShutdownConfig {
    /// Read from the state current when shutdown begins. Every field is named, so a new
    /// one does not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let ShutdownConfig {
            listener_close_delay: _,
            drain_timeout: _,
        } = self;
    }
}
