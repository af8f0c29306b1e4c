//! The TOML schema. Field docs are the reference; `docs/configuration.md` mirrors them.

use crate::verifier::ScramVerifierText;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    /// `[[listener]]`: where clients connect.
    #[serde(rename = "listener", default)]
    pub listeners: Vec<ListenerConfig>,
    /// `[[target]]`: Redshift clusters and serverless workgroups.
    #[serde(rename = "target", default)]
    pub targets: Vec<TargetConfig>,
    /// `[policy]` and `[[policy.rule]]`: who may log in as whom, where.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[aws]`: where the proxy's own AWS credentials come from.
    #[serde(default)]
    pub aws: AwsConfig,
    /// `[db_credentials]`: caching of temporary database credentials.
    #[serde(default)]
    pub db_credentials: DbCredentialsConfig,
    /// `[admin]`: the HTTP listener for metrics, health and reload (off by default).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[audit]`: one JSON line per session.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[limits]`: connection limits, timeouts and TCP keepalive.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[shutdown]`: graceful shutdown on SIGTERM/SIGINT.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[security]`: process-wide hardening switches.
    #[serde(default)]
    pub security: SecurityConfig,
}

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Refuse to load the configuration when a private-key file it names (a listener's
    /// `tls_key`, a `certificates` entry's `tls_key`, `[aws.roles_anywhere] private_key`) is
    /// readable by group or others, instead of logging a warning (default `false`). Checked
    /// whenever the file is loaded: at startup, on reload and by `check-config`.
    #[serde(default)]
    pub strict_key_permissions: bool,
    /// Re-read the listeners' `client_crls` this often (a reload also re-reads them);
    /// default: only on reload.
    #[serde(default, with = "humantime_serde")]
    pub crl_reload_interval: Option<Duration>,
    /// Password listeners: after each failed attempt for a user or from a source
    /// address, the next failure of either is answered this much later, doubling per
    /// failure up to `password_failure_delay_max`.
    #[serde(default = "default_password_failure_delay", with = "humantime_serde")]
    pub password_failure_delay: Duration,
    #[serde(
        default = "default_password_failure_delay_max",
        with = "humantime_serde"
    )]
    pub password_failure_delay_max: Duration,
    /// Failed attempts (per user, or per source address) within `password_lockout` that
    /// lock it for `password_lockout`; `0` never locks.
    #[serde(default = "default_password_lockout_after")]
    pub password_lockout_after: u32,
    #[serde(default = "default_password_lockout", with = "humantime_serde")]
    pub password_lockout: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            strict_key_permissions: false,
            crl_reload_interval: None,
            password_failure_delay: default_password_failure_delay(),
            password_failure_delay_max: default_password_failure_delay_max(),
            password_lockout_after: default_password_lockout_after(),
            password_lockout: default_password_lockout(),
        }
    }
}

fn default_password_failure_delay() -> Duration {
    Duration::from_millis(250)
}
fn default_password_failure_delay_max() -> Duration {
    Duration::from_secs(5)
}
fn default_password_lockout_after() -> u32 {
    10
}
fn default_password_lockout() -> Duration {
    Duration::from_secs(300)
}

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

/// A listener for PostgreSQL clients: TCP, or a Unix-domain socket. By default clients
/// authenticate with TLS and a client certificate (`client_auth`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name used in logs; defaults to the bind address.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` to bind, e.g. `127.0.0.1:5439` or `[::]:5439`; or `unix:/absolute/path`
    /// for a Unix-domain socket (libpq clients name the directory as `host` and find
    /// `.s.PGSQL.<port>` in it).
    pub bind: String,
    /// Target this listener routes to. May be omitted when exactly one target exists.
    #[serde(default)]
    pub target: Option<String>,
    /// PEM certificate chain the proxy presents to clients (leaf first). Required for
    /// `client_auth = "certificate"`; for `password` and `trust` it turns TLS on.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of CAs that issue client certificates (`client_auth = "certificate"`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// PEM CRL files checked against client certificates.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
    /// Time a client has from TCP accept to a complete startup message.
    #[serde(default = "default_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Forward the client's `options` startup parameter (untrusted input; off by default).
    #[serde(default)]
    pub allow_options: bool,
    /// Open connections this listener accepts at once (any phase); overrides
    /// `[limits] max_connections_per_listener` for this listener.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// `[[listener.certificates]]`: more server certificates, chosen by the server name
    /// (SNI) the client asks for. `tls_cert`/`tls_key` stay the default certificate.
    #[serde(default)]
    pub certificates: Vec<ListenerCertificateConfig>,
    /// Refuse clients whose server name matches no `certificates` entry, or that send none,
    /// instead of serving them the default certificate and the listener's target.
    #[serde(default)]
    pub strict_sni: bool,
    /// How clients authenticate: `certificate` (default), `password` (SCRAM-SHA-256 against
    /// `users`) or `trust` (loopback and Unix sockets only: everyone is `trust_user`).
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// `password`/`trust`: also accept clients that do not use TLS. Only on loopback
    /// addresses and Unix sockets.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// `[[listener.users]]`: the local users of a `password` listener.
    #[serde(default)]
    pub users: Vec<LocalUserConfig>,
    /// `trust`: the local user every client of this listener is.
    #[serde(default)]
    pub trust_user: Option<String>,
    /// Permission bits of a Unix socket (default `0o660`: owner and group may connect).
    #[serde(default)]
    pub unix_socket_mode: Option<u32>,
}

/// How the clients of a listener authenticate to the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// TLS with a client certificate verified against `client_ca`.
    #[default]
    Certificate,
    /// SCRAM-SHA-256 against the verifiers in `[[listener.users]]`.
    Password,
    /// No authentication: every client is `trust_user`.
    Trust,
}

impl ClientAuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMode::Certificate => "certificate",
            ClientAuthMode::Password => "password",
            ClientAuthMode::Trust => "trust",
        }
    }
}

/// A local user of a `password` listener. Only the SCRAM verifier is stored, never the
/// password (`redshift-iam-proxy hash-password` makes one).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUserConfig {
    /// The user name clients log in with (their startup `user`).
    pub name: String,
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, PostgreSQL's format
    /// (checked by validation).
    pub scram_verifier: ScramVerifierText,
}

impl std::fmt::Debug for LocalUserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUserConfig")
            .field("name", &self.name)
            .field("scram_verifier", &self.scram_verifier)
            .finish()
    }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// Default permission bits of a Unix-socket listener.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;

/// A server certificate presented to clients that ask for one of `server_names`, and
/// optionally the target those clients are routed to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerCertificateConfig {
    /// DNS names matched case-insensitively against the client's SNI: exact names, or
    /// `*.domain` for any single label under `domain`. Each must be covered by the
    /// certificate's subject alternative names.
    pub server_names: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key for `tls_cert`.
    pub tls_key: PathBuf,
    /// Target for clients that asked for one of these names (default: the listener's).
    #[serde(default)]
    pub target: Option<String>,
}

impl ListenerConfig {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.bind)
    }

    /// The parsed `bind`; `None` when it is neither `host:port` nor `unix:/path` (a loaded
    /// configuration has been validated, so it is always `Some` there).
    pub fn address(&self) -> Option<ListenAddress> {
        match self.bind.strip_prefix("unix:") {
            Some(path) => Some(ListenAddress::Unix(PathBuf::from(path))),
            None => self.bind.parse().ok().map(ListenAddress::Tcp),
        }
    }

    /// A Unix socket, or a TCP address on the loopback interface: only local processes
    /// can connect.
    pub fn is_local_only(&self) -> bool {
        match self.address() {
            Some(ListenAddress::Unix(_)) => true,
            Some(ListenAddress::Tcp(addr)) => addr.ip().is_loopback(),
            None => false,
        }
    }

    /// The permission bits of a Unix-socket listener.
    pub fn unix_socket_mode(&self) -> u32 {
        self.unix_socket_mode.unwrap_or(DEFAULT_UNIX_SOCKET_MODE)
    }

    /// Whether clients may connect without TLS: a Unix socket (which never carries TLS,
    /// and for `password` needs `allow_plaintext`), or `allow_plaintext`.
    pub fn accepts_plaintext(&self) -> bool {
        match self.client_auth {
            ClientAuthMode::Certificate => false,
            ClientAuthMode::Password => self.allow_plaintext,
            ClientAuthMode::Trust => {
                self.allow_plaintext || matches!(self.address(), Some(ListenAddress::Unix(_)))
            }
        }
    }
}

fn default_login_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A provisioned cluster: GetClusterCredentials(WithIAM).
    Provisioned,
    /// A serverless workgroup: redshift-serverless GetCredentials.
    Serverless,
}

/// An upstream Redshift endpoint and how to get database credentials for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
    /// Endpoint host name; the upstream certificate is always verified against it.
    pub host: String,
    #[serde(default = "default_redshift_port")]
    pub port: u16,
    /// Address actually dialled (`host` or `host:port`), e.g. a VPC endpoint DNS name,
    /// while the certificate is still verified for `host`.
    #[serde(default)]
    pub dial: Option<String>,
    /// PEM CA bundle for the upstream; default: the bundled Mozilla roots (which include
    /// Amazon Root CA 1-4).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream TLS handshake and login after connecting.
    #[serde(default = "default_upstream_login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// AWS region of the cluster or workgroup; parsed from `host` when omitted.
    #[serde(default)]
    pub region: Option<String>,
    /// Provisioned: cluster identifier; parsed from `host` when omitted.
    #[serde(default)]
    pub cluster_identifier: Option<String>,
    /// Serverless: workgroup name; parsed from `host` when omitted.
    #[serde(default)]
    pub workgroup: Option<String>,
    /// Custom domain name registered for the cluster or workgroup (used instead of the
    /// identifier in credential calls).
    #[serde(default)]
    pub custom_domain_name: Option<String>,
    /// Provisioned: use GetClusterCredentialsWithIAM (the database user follows the IAM
    /// identity) instead of GetClusterCredentials.
    #[serde(default)]
    pub with_iam: bool,
    /// Provisioned GetClusterCredentials: create the database user if it does not exist.
    #[serde(default)]
    pub auto_create: bool,
    /// Lifetime requested for database credentials (900 s to 3600 s).
    #[serde(default = "default_db_credential_duration", with = "humantime_serde")]
    pub credential_duration: Duration,
    /// Override of the Redshift / Redshift Serverless API endpoint URL (VPC endpoints, tests).
    #[serde(default)]
    pub aws_endpoint_url: Option<String>,
}

fn default_redshift_port() -> u16 {
    5439
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_login_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_db_credential_duration() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Startup `user` values that mean "no particular user": the matched rule's
    /// `default_user` applies instead.
    #[serde(default = "default_placeholder_users")]
    pub placeholder_users: Vec<String>,
    /// Database users no rule may grant, compared case-insensitively, besides those
    /// Redshift reserves (`rdsdb`, `pg_*`, `padb_*`). Default: `awsuser`, the console's
    /// default admin user.
    #[serde(default = "default_deny_users")]
    pub deny_users: Vec<String>,
    /// Rules, first match wins.
    #[serde(rename = "rule", default)]
    pub rules: Vec<RuleConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            placeholder_users: default_placeholder_users(),
            deny_users: default_deny_users(),
            rules: Vec::new(),
        }
    }
}

fn default_deny_users() -> Vec<String> {
    vec!["awsuser".into()]
}

fn default_placeholder_users() -> Vec<String> {
    vec!["iam".into(), "default".into(), "-".into()]
}

/// One policy rule: which identities it matches and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Which client certificates this rule matches. Every given field must match.
    #[serde(rename = "match")]
    pub matches: MatchConfig,
    /// Target names this rule grants (`*` for all).
    pub targets: Vec<String>,
    /// Database users this rule grants: literal names or templates such as `{cn}`.
    pub users: Vec<String>,
    /// The user taken when the client's startup user is a placeholder.
    #[serde(default)]
    pub default_user: Option<String>,
    /// Databases this rule grants (glob patterns, `*` for all).
    pub databases: Vec<String>,
    /// Database groups joined for the session (GetClusterCredentials `DbGroups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// IAM role assumed through Roles Anywhere for this rule's logins (default: the
    /// `[aws.roles_anywhere]` role).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// What to do with a certificate carrying several values of a kind the rule matches on
    /// (several URI SANs for a `san_uri` rule, ...).
    #[serde(default)]
    pub multiple_sans: MultipleSans,
}

/// A certificate with several SANs (or CNs) of the kind a rule matches on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleSans {
    /// The rule does not match such a certificate.
    #[default]
    Refuse,
    /// Each value is tried on its own: the rule grants what any one matching value would.
    Each,
}

/// Glob patterns (`*`, `?`, `[...]`) over certificate fields, or over a local user name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Subject common name.
    #[serde(default)]
    pub cn: Option<String>,
    /// Any URI SAN, e.g. `spiffe://corp.example/ns/bi/*`.
    #[serde(default)]
    pub san_uri: Option<String>,
    /// Any DNS SAN.
    #[serde(default)]
    pub san_dns: Option<String>,
    /// Any email SAN.
    #[serde(default)]
    pub san_email: Option<String>,
    /// Issuer distinguished name as RFC 4514 text, e.g. `CN=Corp Client CA,O=Corp`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// A local user of a `password` or `trust` listener (never a certificate).
    #[serde(default)]
    pub local_user: Option<String>,
    /// SHA-256 fingerprint (hex, `:` separators allowed) of a CA certificate that verified
    /// the client's chain: the trust anchor in `client_ca` or an intermediate on the
    /// verified path. Unlike `issuer`, a DN another CA in the bundle could also carry.
    #[serde(default)]
    pub issuer_sha256: Option<String>,
    /// Only clients of these listeners (by name).
    #[serde(default)]
    pub listener: Vec<String>,
    /// Only clients that authenticated this way.
    #[serde(default)]
    pub auth: Vec<ClientAuthMode>,
}

impl MatchConfig {
    /// Whether no field names who matches (`listener` and `auth` only scope).
    pub fn is_empty(&self) -> bool {
        !self.has_certificate_fields() && self.local_user.is_none()
    }

    /// Whether any field that matches client certificates is given.
    pub fn has_certificate_fields(&self) -> bool {
        self.cn.is_some()
            || self.san_uri.is_some()
            || self.san_dns.is_some()
            || self.san_email.is_some()
            || self.issuer.is_some()
            || self.issuer_sha256.is_some()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsCredentialSource {
    /// The standard AWS chain: environment, web identity, profile, IMDS, ...
    #[default]
    Default,
    /// A named AWS profile (e.g. one with `credential_process = aws_signing_helper ...`).
    Profile,
    /// Native IAM Roles Anywhere with the proxy's certificate and key.
    RolesAnywhere,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    #[serde(default)]
    pub source: AwsCredentialSource,
    /// Profile name for `source = "profile"`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Region for AWS calls when a target does not name one.
    #[serde(default)]
    pub region: Option<String>,
    /// Refresh AWS credentials this long before they expire (default 5 min).
    #[serde(default, with = "humantime_serde")]
    pub refresh_before: Option<Duration>,
    #[serde(default)]
    pub roles_anywhere: Option<RolesAnywhereConfig>,
}

impl AwsConfig {
    pub fn refresh_before(&self) -> Duration {
        self.refresh_before.unwrap_or(Duration::from_secs(300))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesAnywhereConfig {
    /// PEM end-entity certificate of the proxy.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#1, PKCS#8, SEC1, or encrypted PKCS#8).
    pub private_key: PathBuf,
    /// PEM intermediates sent as `X-Amz-X509-Chain`.
    #[serde(default)]
    pub chain: Option<PathBuf>,
    /// Environment variable holding the passphrase of an encrypted private key.
    #[serde(default)]
    pub private_key_passphrase_env: Option<String>,
    /// File holding the passphrase of an encrypted private key.
    #[serde(default)]
    pub private_key_passphrase_file: Option<PathBuf>,
    pub trust_anchor_arn: String,
    pub profile_arn: String,
    pub role_arn: String,
    /// Default: the trust anchor ARN's region.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_session_duration", with = "humantime_serde")]
    pub session_duration: Duration,
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Override of the Roles Anywhere endpoint URL (VPC endpoints, tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

fn default_session_duration() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCredentialsConfig {
    /// Refresh cached database credentials this long before they expire.
    #[serde(default = "default_db_refresh_before", with = "humantime_serde")]
    pub refresh_before: Duration,
    /// AWS credential calls one client identity may cause per minute (a burst of as many,
    /// then a steady rate); logins beyond it are refused until the budget refills.
    #[serde(default = "default_fetches_per_identity")]
    pub fetches_per_identity_per_minute: u32,
    /// Distinct cached credentials (user, database, groups) one identity may hold.
    #[serde(default = "default_cached_per_identity")]
    pub max_cached_per_identity: usize,
    /// After a failed credential call, or a fresh credential the upstream refused, the same
    /// request waits before AWS is asked again: 1 s, doubling up to this.
    #[serde(default = "default_failure_backoff_max", with = "humantime_serde")]
    pub failure_backoff_max: Duration,
}

impl Default for DbCredentialsConfig {
    fn default() -> Self {
        DbCredentialsConfig {
            refresh_before: default_db_refresh_before(),
            fetches_per_identity_per_minute: default_fetches_per_identity(),
            max_cached_per_identity: default_cached_per_identity(),
            failure_backoff_max: default_failure_backoff_max(),
        }
    }
}

fn default_fetches_per_identity() -> u32 {
    20
}
fn default_cached_per_identity() -> usize {
    16
}
fn default_failure_backoff_max() -> Duration {
    Duration::from_secs(60)
}

fn default_db_refresh_before() -> Duration {
    Duration::from_secs(300)
}

/// The admin HTTP listener: `/metrics`, `/livez`, `/readyz`, `/startupz`, `POST /reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` to bind, e.g. `127.0.0.1:9187`, or `unix:/path` for a Unix socket.
    /// Absent: no admin listener.
    #[serde(default)]
    pub bind: Option<String>,
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

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Write audit records at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// JSON-lines file, opened for append (and reopened on reload, for log rotation).
    /// Absent: standard output.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Records queued for the writer before new ones are dropped (and counted).
    #[serde(default = "default_audit_queue")]
    pub queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            path: None,
            queue_capacity: default_audit_queue(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_audit_queue() -> usize {
    8192
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
