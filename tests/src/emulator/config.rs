//! Configuration of the emulator: the Roles Anywhere trust anchor/profile/roles it knows and
//! the Redshift clusters and serverless workgroups it fronts (each backed by a real PostgreSQL).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the emulator knows about "its" AWS account.
///
/// Deserializable from TOML (the `aws-emulator` binary reads it from a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// `arn:aws:rolesanywhere:<region>:<account>:trust-anchor/<id>`. Its region is the region
    /// requests must be signed for, like the real regional endpoint.
    pub trust_anchor_arn: String,
    /// PEM certificate(s) of the trust anchor CA. Exactly one of this and
    /// `trust_anchor_ca_file` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchor_ca_pem: Option<String>,
    /// File holding the PEM certificate(s) of the trust anchor CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchor_ca_file: Option<PathBuf>,
    /// `arn:aws:rolesanywhere:<region>:<account>:profile/<id>`.
    pub profile_arn: String,
    /// Roles the profile may hand out (`arn:aws:iam::<account>:role/<path/>name`).
    pub role_arns: Vec<String>,
    /// Upper bound of `durationSeconds` (the profile's/role's maximum session duration).
    #[serde(with = "humantime_serde", default = "default_max_session_duration")]
    pub max_session_duration: Duration,
    /// Provisioned clusters (`GetClusterCredentials[WithIAM]`).
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// Serverless workgroups (`GetCredentials`).
    #[serde(default)]
    pub workgroups: Vec<WorkgroupSpec>,
}

fn default_max_session_duration() -> Duration {
    Duration::from_secs(12 * 3600)
}

/// A provisioned cluster, backed by a PostgreSQL server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub identifier: String,
    pub region: String,
    /// Optional custom domain name (`CustomDomainName` parameter) mapped to this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain_name: Option<String>,
    pub admin: PgAdmin,
}

/// A serverless workgroup, backed by a PostgreSQL server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkgroupSpec {
    pub name: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_domain_name: Option<String>,
    pub admin: PgAdmin,
}

/// How the emulator reaches the backing PostgreSQL as a superuser (or a role with
/// CREATEROLE) to provision users. Authentication must not need a password (trust/peer over
/// the unix socket), so no secret ever sits in the emulator's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgAdmin {
    /// Unix socket directory (starts with `/`) or TCP host name.
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub user: String,
    #[serde(default = "default_pg_dbname")]
    pub dbname: String,
    /// How issued passwords are stored. Redshift authenticates IAM users with `md5`; with
    /// [`PasswordHash::Md5`] the server's `pg_hba.conf` must use `md5` for them (see
    /// `grant_roles`), since a `scram-sha-256` rule cannot verify an MD5-stored password.
    #[serde(default)]
    pub password_hash: PasswordHash,
    /// Roles granted to every provisioned user, e.g. the testkit's `md5_users` whose members
    /// `pg_hba.conf` authenticates with `md5`.
    #[serde(default)]
    pub grant_roles: Vec<String>,
}

impl PgAdmin {
    /// Superuser access over a unix socket directory, SCRAM storage, no extra roles.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        PgAdmin {
            host: host.into(),
            port,
            user: user.into(),
            dbname: default_pg_dbname(),
            password_hash: PasswordHash::default(),
            grant_roles: Vec::new(),
        }
    }
}

/// Storage format of issued passwords (hashed by the emulator: the plaintext never reaches
/// PostgreSQL or its logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordHash {
    /// SCRAM-SHA-256 verifier (works with `scram-sha-256` and `md5` hba methods).
    #[default]
    ScramSha256,
    /// `md5(password || user)` (works with the `md5` hba method only).
    Md5,
}

fn default_pg_port() -> u16 {
    5432
}

fn default_pg_dbname() -> String {
    "postgres".to_owned()
}
