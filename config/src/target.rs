//! `[[target]]`: Redshift clusters and serverless workgroups, and how to get database
//! credentials for them.

use crate::address::check_endpoint_url;
use crate::problems::{KeyPath, Problems};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
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
    /// How long a login keeps retrying, with backoff, an upstream that refuses, drops or
    /// stalls connections the way a resuming serverless workgroup does. Default `30s` for
    /// serverless targets, `0s` (no retries) for provisioned ones; see
    /// [`TargetConfig::resume_wait`].
    #[serde(default, with = "humantime_serde")]
    pub resume_wait: Option<Duration>,
    /// Template of the `application_name` sent upstream, so Redshift's connection log
    /// (STL_CONNECTION_LOG, SYS_CONNECTION_LOG) names who is behind each session, e.g.
    /// `"{client_application} via redshift-iam-proxy for {identity}"`. Absent: the
    /// client's own `application_name` goes up unchanged. See [`ATTRIBUTION_PLACEHOLDERS`].
    #[serde(default)]
    pub application_name: Option<String>,
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
    /// Override of the Redshift / Redshift Serverless API endpoint URL (VPC endpoints,
    /// tests): `https://`, or `http://` to a loopback host.
    #[serde(default)]
    pub aws_endpoint_url: Option<String>,
    /// Upstream connections kept ready, TCP and verify-full TLS done, before any login
    /// (0: none).
    #[serde(default = "default_warm_connections")]
    pub warm_connections: usize,
    /// A warm connection not used within this is closed and replaced: servers close
    /// connections that have not logged in (PostgreSQL's `authentication_timeout`, 60 s).
    #[serde(default = "default_warm_connection_max_age", with = "humantime_serde")]
    pub warm_connection_max_age: Duration,
    /// Keep the logged-in upstream session of a client that left cleanly, for the next
    /// client with the same identity, user, database, groups and startup parameters.
    #[serde(default)]
    pub session_reuse: bool,
    /// How long a kept session waits for its next client.
    #[serde(
        default = "default_session_reuse_idle_timeout",
        with = "humantime_serde"
    )]
    pub session_reuse_idle_timeout: Duration,
    /// Sessions logged in longer ago than this are closed instead of kept.
    #[serde(default = "default_session_reuse_max_age", with = "humantime_serde")]
    pub session_reuse_max_age: Duration,
    /// Clients one upstream session serves at most.
    #[serde(default = "default_session_reuse_max_uses")]
    pub session_reuse_max_uses: u32,
    /// Sessions kept at once for one identity, user, database, groups and parameters.
    #[serde(default = "default_session_reuse_per_key")]
    pub session_reuse_per_key: usize,
    /// Sessions kept at once for this target.
    #[serde(default = "default_session_reuse_max_sessions")]
    pub session_reuse_max_sessions: usize,
    /// Statements run before a kept session is handed to its next client.
    #[serde(default = "default_session_reset")]
    pub session_reset: Vec<String>,
}

/// Most warm connections one target may keep.
pub const MAX_WARM_CONNECTIONS: usize = 64;

fn default_redshift_port() -> u16 {
    5439
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_login_timeout() -> Duration {
    Duration::from_secs(15)
}
/// What an `application_name` template may name: the client's certificate CN, its local
/// user, either one (`identity`), the application name the client sent, and the proxy's
/// session id (which the audit record carries too).
pub const ATTRIBUTION_PLACEHOLDERS: &[&str] = &[
    "cn",
    "local_user",
    "identity",
    "client_application",
    "session_id",
];

/// Longest `application_name` template accepted (the rendered name is cut to what
/// Redshift keeps anyway).
const MAX_APPLICATION_NAME_TEMPLATE: usize = 256;

/// Longest `resume_wait` accepted: clients give up long before.
pub const MAX_RESUME_WAIT: Duration = Duration::from_secs(300);

fn default_db_credential_duration() -> Duration {
    Duration::from_secs(3600)
}
fn default_warm_connections() -> usize {
    2
}
fn default_warm_connection_max_age() -> Duration {
    Duration::from_secs(30)
}
fn default_session_reuse_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_session_reuse_max_age() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_session_reuse_max_uses() -> u32 {
    100
}
fn default_session_reuse_per_key() -> usize {
    4
}
fn default_session_reuse_max_sessions() -> usize {
    64
}
/// What Redshift can undo of a session (research redshift-server.md §10: no `DISCARD`, no
/// `DEALLOCATE ALL`): the session user, then every runtime parameter.
pub fn default_session_reset() -> Vec<String> {
    vec![
        "SET SESSION AUTHORIZATION DEFAULT".into(),
        "RESET ALL".into(),
    ]
}

impl TargetConfig {
    /// A target with only its required keys, every other key at the default a file that
    /// leaves it out gets.
    pub fn new(name: impl Into<String>, kind: TargetKind, host: impl Into<String>) -> Self {
        TargetConfig {
            name: name.into(),
            kind,
            host: host.into(),
            port: default_redshift_port(),
            dial: None,
            ca_bundle: None,
            connect_timeout: default_connect_timeout(),
            login_timeout: default_upstream_login_timeout(),
            resume_wait: None,
            application_name: None,
            region: None,
            cluster_identifier: None,
            workgroup: None,
            custom_domain_name: None,
            with_iam: false,
            auto_create: false,
            credential_duration: default_db_credential_duration(),
            aws_endpoint_url: None,
            warm_connections: default_warm_connections(),
            warm_connection_max_age: default_warm_connection_max_age(),
            session_reuse: false,
            session_reuse_idle_timeout: default_session_reuse_idle_timeout(),
            session_reuse_max_age: default_session_reuse_max_age(),
            session_reuse_max_uses: default_session_reuse_max_uses(),
            session_reuse_per_key: default_session_reuse_per_key(),
            session_reuse_max_sessions: default_session_reuse_max_sessions(),
            session_reset: default_session_reset(),
        }
    }

    /// Whether the credential call logs in as the IAM identity (`IAMR:<role>`) rather than
    /// as the database user the policy granted, and so ignores the granted user and
    /// groups: serverless GetCredentials and GetClusterCredentialsWithIAM.
    pub fn logs_in_as_iam_identity(&self) -> bool {
        self.kind == TargetKind::Serverless || self.with_iam
    }

    /// Why this target ignores the database user and groups a rule grants (it logs in as
    /// the IAM identity), or `None` when it honours them.
    pub fn why_grants_are_ignored(&self) -> Option<&'static str> {
        if !self.logs_in_as_iam_identity() {
            None
        } else if self.with_iam {
            Some(
                "uses GetClusterCredentialsWithIAM (with_iam = true), which logs in as the IAM \
                 role (IAMR:<role>) and takes no database user or groups",
            )
        } else {
            Some(
                "is serverless: GetCredentials logs in as the IAM role (IAMR:<role>) and \
                 takes no database user or groups",
            )
        }
    }

    /// How long logins retry an upstream that looks like it is resuming. A serverless
    /// workgroup that was idle resumes on first contact and refuses, drops or holds the
    /// first connections meanwhile (research: redshift-server.md §8); a paused provisioned
    /// cluster does not resume by itself, so retrying it only delays the error.
    pub fn resume_wait(&self) -> Duration {
        self.resume_wait.unwrap_or(match self.kind {
            TargetKind::Serverless => Duration::from_secs(30),
            TargetKind::Provisioned => Duration::ZERO,
        })
    }

    /// The credential API, as messages name it.
    pub fn credential_api(&self) -> &'static str {
        match (self.kind, self.with_iam) {
            (TargetKind::Serverless, _) => "redshift-serverless GetCredentials",
            (TargetKind::Provisioned, true) => "GetClusterCredentialsWithIAM",
            (TargetKind::Provisioned, false) => "GetClusterCredentials",
        }
    }

    /// Every problem of this target on its own, as `path` (`target[0]`). Unique names are
    /// checked by [`crate::Config`].
    pub(crate) fn check(&self, path: &KeyPath, p: &mut Problems) {
        let key = |k: &str| path.key(k);
        if self.name.is_empty() {
            p.add(key("name"), "must not be empty");
        }
        if self.host.is_empty() {
            p.add(key("host"), "must not be empty");
        }
        if self.port == 0 {
            p.add(key("port"), "must not be 0");
        }
        let d = self.credential_duration;
        if d < Duration::from_secs(900) || d > Duration::from_secs(3600) {
            p.add(
                key("credential_duration"),
                format!("must be between 15m and 1h (got {}s)", d.as_secs()),
            );
        }
        match self.kind {
            TargetKind::Serverless => {
                for (field, given) in [
                    ("cluster_identifier", self.cluster_identifier.is_some()),
                    ("with_iam", self.with_iam),
                    ("auto_create", self.auto_create),
                ] {
                    if given {
                        p.add(key(field), "only applies to kind = \"provisioned\"");
                    }
                }
            }
            TargetKind::Provisioned => {
                if self.workgroup.is_some() {
                    p.add(key("workgroup"), "only applies to kind = \"serverless\"");
                }
                if self.with_iam && self.auto_create {
                    p.add(
                        key("auto_create"),
                        "GetClusterCredentialsWithIAM has no AutoCreate; remove it or with_iam",
                    );
                }
            }
        }
        if let Some(url) = &self.aws_endpoint_url {
            p.check(key("aws_endpoint_url"), check_endpoint_url(url));
        }
        if let Some(template) = &self.application_name {
            p.check(
                key("application_name"),
                check_attribution_template(template),
            );
        }
        if self.resume_wait.is_some_and(|w| w > MAX_RESUME_WAIT) {
            p.add(
                key("resume_wait"),
                format!(
                    "must be at most {}s: clients give up their logins long before",
                    MAX_RESUME_WAIT.as_secs()
                ),
            );
        }
        self.check_pools(path, p);
    }

    /// `warm_connections` and the `session_reuse_*` keys.
    fn check_pools(&self, path: &KeyPath, p: &mut Problems) {
        let key = |k: &str| path.key(k);
        if self.warm_connections > MAX_WARM_CONNECTIONS {
            p.add(
                key("warm_connections"),
                format!("must be at most {MAX_WARM_CONNECTIONS}"),
            );
        }
        if self.warm_connection_max_age < Duration::from_secs(1) {
            p.add(key("warm_connection_max_age"), "must be at least 1s");
        }
        for (field, d) in [
            (
                "session_reuse_idle_timeout",
                self.session_reuse_idle_timeout,
            ),
            ("session_reuse_max_age", self.session_reuse_max_age),
        ] {
            if d.is_zero() {
                p.add(key(field), "must be greater than 0");
            }
        }
        for (field, n) in [
            (
                "session_reuse_max_uses",
                self.session_reuse_max_uses as usize,
            ),
            ("session_reuse_per_key", self.session_reuse_per_key),
            (
                "session_reuse_max_sessions",
                self.session_reuse_max_sessions,
            ),
        ] {
            if n == 0 {
                p.add(key(field), "must be at least 1");
            }
        }
        for (i, statement) in self.session_reset.iter().enumerate() {
            if statement.trim().is_empty() || statement.contains('\0') {
                p.add(
                    key("session_reset").index(i),
                    "must be a statement (not empty, no NUL)",
                );
            }
        }
    }
}

/// What a reload cannot change of a target: what the credential fetcher resolved at start
/// (its AWS-facing settings). Where the proxy connects and how it verifies the upstream
/// are applied by a reload.
#[derive(Debug, PartialEq, Eq)]
pub struct TargetRestartOnly<'a> {
    pub name: &'a str,
    pub kind: TargetKind,
    pub host: &'a str,
    pub region: Option<&'a str>,
    pub cluster_identifier: Option<&'a str>,
    pub workgroup: Option<&'a str>,
    pub custom_domain_name: Option<&'a str>,
    pub with_iam: bool,
    pub auto_create: bool,
    pub credential_duration: Duration,
    pub aws_endpoint_url: Option<&'a str>,
}

impl TargetConfig {
    /// The restart-only part of this target. Every field is named here, so a new one does
    /// not compile until it is classified.
    pub fn restart_only(&self) -> TargetRestartOnly<'_> {
        let TargetConfig {
            name,
            kind,
            host,
            region,
            cluster_identifier,
            workgroup,
            custom_domain_name,
            with_iam,
            auto_create,
            credential_duration,
            aws_endpoint_url,
            // A reload builds new upstream endpoints from these.
            port: _,
            dial: _,
            ca_bundle: _,
            connect_timeout: _,
            login_timeout: _,
            resume_wait: _,
            application_name: _,
            // A reload builds new pools from these (sessions already kept are closed).
            warm_connections: _,
            warm_connection_max_age: _,
            session_reuse: _,
            session_reuse_idle_timeout: _,
            session_reuse_max_age: _,
            session_reuse_max_uses: _,
            session_reuse_per_key: _,
            session_reuse_max_sessions: _,
            session_reset: _,
        } = self;
        TargetRestartOnly {
            name,
            kind: *kind,
            host,
            region: region.as_deref(),
            cluster_identifier: cluster_identifier.as_deref(),
            workgroup: workgroup.as_deref(),
            custom_domain_name: custom_domain_name.as_deref(),
            with_iam: *with_iam,
            auto_create: *auto_create,
            credential_duration: *credential_duration,
            aws_endpoint_url: aws_endpoint_url.as_deref(),
        }
    }
}

/// An `application_name` template: printable text whose `{...}` name
/// [`ATTRIBUTION_PLACEHOLDERS`].
fn check_attribution_template(template: &str) -> Result<(), String> {
    if template.len() > MAX_APPLICATION_NAME_TEMPLATE {
        return Err(format!(
            "is longer than {MAX_APPLICATION_NAME_TEMPLATE} bytes"
        ));
    }
    if template.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a `{` without its `}`".to_string())?;
        let name = &after[..close];
        if !ATTRIBUTION_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                ATTRIBUTION_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') || template.matches('}').count() != template.matches('{').count() {
        return Err("has a `}` without its `{`".into());
    }
    Ok(())
}

#[cfg(test)]
mod attribution_tests {
    use super::check_attribution_template as check;

    #[test]
    fn templates_name_known_placeholders_only() {
        assert_eq!(
            check("{client_application} via redshift-iam-proxy for {identity}"),
            Ok(())
        );
        assert_eq!(check("proxy"), Ok(()));
        assert!(check("{password}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(check("{cn").is_err());
        assert!(check("cn}").is_err());
        assert!(check("a\nb").is_err());
        assert!(check(&"x".repeat(300)).is_err());
    }
}
