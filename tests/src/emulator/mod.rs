//! Local AWS emulator: IAM Roles Anywhere `CreateSession`, Redshift
//! `GetClusterCredentials[WithIAM]` and Redshift Serverless `GetCredentials`, served over
//! plain HTTP on 127.0.0.1 (clients use endpoint overrides).
//!
//! It is faithful where it matters for the proxy's tests: signatures are verified for real
//! (X.509 for Roles Anywhere, SigV4 with the issued session credentials for Redshift), bad
//! ones are rejected with AWS's error codes, and database passwords are real PostgreSQL
//! passwords with `VALID UNTIL` set to the returned expiration.
//!
//! Other processes (sandbox, benchmarks) use the control endpoints:
//! - `GET /_emulator/calls` → `{"CreateSession": n, ...}`
//! - `POST /_emulator/faults` with a [`FaultsRequest`] JSON body; `DELETE /_emulator/faults`
//! - `POST /_emulator/expire-sessions`, `POST /_emulator/expire-db-credentials`
//! - `GET /_emulator/health`

mod auth_header;
mod config;
mod db;
mod errors;
mod faults;
mod redshift;
mod roles_anywhere;
mod server;
mod sessions;
mod sigv4;
mod x509_auth;

pub use config::{ClusterSpec, EmulatorConfig, PasswordHash, PgAdmin, WorkgroupSpec};
pub use faults::{Api, Faults, FaultsRequest};

use anyhow::Context as _;
use redshift::Target;
use rustls_pki_types::TrustAnchor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;

/// Shared state of a running emulator.
#[derive(Debug)]
pub(crate) struct EmulatorState {
    pub(crate) config: EmulatorConfig,
    pub(crate) trust_anchors: Vec<TrustAnchor<'static>>,
    /// Region of the trust anchor: the Roles Anywhere endpoint's region.
    pub(crate) rolesanywhere_region: String,
    pub(crate) sessions: sessions::SessionStore,
    pub(crate) clusters: Vec<Target>,
    pub(crate) workgroups: Vec<Target>,
    pub(crate) counters: faults::CallCounters,
    pub(crate) faults: Faults,
    /// Lifetime of issued database credentials instead of the requested `DurationSeconds`
    /// (see [`AwsEmulator::set_db_credential_lifetime`]).
    db_credential_lifetime: Mutex<Option<Duration>>,
}

impl EmulatorState {
    fn new(config: EmulatorConfig) -> anyhow::Result<Self> {
        let ca_pem = match (&config.trust_anchor_ca_pem, &config.trust_anchor_ca_file) {
            (Some(pem), None) => pem.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading trust anchor CA {}", path.display()))?,
            _ => anyhow::bail!(
                "exactly one of trust_anchor_ca_pem and trust_anchor_ca_file must be set"
            ),
        };
        let trust_anchors = x509_auth::trust_anchors_from_pem(&ca_pem)?;
        anyhow::ensure!(
            config
                .trust_anchor_arn
                .starts_with("arn:aws:rolesanywhere:")
                && config.trust_anchor_arn.contains(":trust-anchor/"),
            "trust_anchor_arn must look like arn:aws:rolesanywhere:REGION:ACCOUNT:trust-anchor/ID"
        );
        let rolesanywhere_region = roles_anywhere::arn_region(&config.trust_anchor_arn)
            .context("trust_anchor_arn has no region")?
            .to_owned();
        anyhow::ensure!(
            config.profile_arn.starts_with("arn:aws:rolesanywhere:")
                && config.profile_arn.contains(":profile/"),
            "profile_arn must look like arn:aws:rolesanywhere:REGION:ACCOUNT:profile/ID"
        );
        for role in &config.role_arns {
            anyhow::ensure!(
                role.starts_with("arn:aws:iam::") && role.contains(":role/"),
                "role ARN {role} must look like arn:aws:iam::ACCOUNT:role/NAME"
            );
        }
        anyhow::ensure!(
            config.max_session_duration >= Duration::from_secs(900),
            "max_session_duration must be at least 15 minutes"
        );

        let clusters = config
            .clusters
            .iter()
            .map(|c| Target {
                name: c.identifier.clone(),
                region: c.region.clone(),
                custom_domain_name: c.custom_domain_name.clone(),
                db: db::DbTarget::new(c.admin.clone()),
            })
            .collect();
        let workgroups = config
            .workgroups
            .iter()
            .map(|w| Target {
                name: w.name.clone(),
                region: w.region.clone(),
                custom_domain_name: w.custom_domain_name.clone(),
                db: db::DbTarget::new(w.admin.clone()),
            })
            .collect();
        Ok(Self {
            config,
            trust_anchors,
            rolesanywhere_region,
            sessions: sessions::SessionStore::default(),
            clusters,
            workgroups,
            counters: faults::CallCounters::default(),
            faults: Faults::default(),
            db_credential_lifetime: Mutex::new(None),
        })
    }

    /// When a database credential issued at `now` for `duration_secs` expires (whole
    /// seconds, like AWS and PostgreSQL's `VALID UNTIL`).
    pub(crate) fn db_credential_expiration(
        &self,
        now: OffsetDateTime,
        duration_secs: i64,
    ) -> OffsetDateTime {
        let lifetime = self
            .db_credential_lifetime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(time::Duration::seconds(duration_secs), |d| {
                time::Duration::seconds(d.as_secs().try_into().unwrap_or(i64::MAX))
            });
        redshift::truncate(now) + lifetime
    }

    async fn expire_db_credentials(&self) -> anyhow::Result<()> {
        for target in self.clusters.iter().chain(&self.workgroups) {
            target
                .db
                .expire_all()
                .await
                .with_context(|| format!("expiring passwords of {}", target.name))?;
        }
        Ok(())
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct AwsEmulator {
    state: Arc<EmulatorState>,
    addr: SocketAddr,
    server: server::ServerHandle,
}

impl AwsEmulator {
    /// Starts the emulator on an ephemeral port of 127.0.0.1.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<AwsEmulator> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the emulator on `addr`.
    pub async fn start_on(config: EmulatorConfig, addr: SocketAddr) -> anyhow::Result<AwsEmulator> {
        let state = Arc::new(EmulatorState::new(config)?);
        let (server, addr) = server::serve(Arc::clone(&state), addr).await?;
        Ok(AwsEmulator {
            state,
            addr,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for all three services.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls of `api` so far, successful and failed (including injected faults).
    pub fn calls(&self, api: Api) -> u64 {
        self.state.counters.get(api)
    }

    /// Runtime fault injection.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Makes all AWS session credentials issued so far expire now: later SigV4 calls with
    /// them fail with `ExpiredToken`.
    pub fn expire_sessions(&self) {
        self.state.sessions.expire_all(OffsetDateTime::now_utc());
    }

    /// Database credentials issued from now on expire `lifetime` (whole seconds) after they
    /// are issued, whatever `DurationSeconds` asked for (AWS allows 15–60 minutes): expiry
    /// within a test's run time. `None` restores the requested durations.
    pub fn set_db_credential_lifetime(&self, lifetime: Option<Duration>) {
        *self
            .state
            .db_credential_lifetime
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = lifetime;
    }

    /// Makes all database passwords issued so far expire now (in PostgreSQL too); the next
    /// credential call issues a fresh password.
    pub async fn expire_db_credentials(&self) -> anyhow::Result<()> {
        self.state.expire_db_credentials().await
    }

    /// Stops accepting connections and waits (briefly) for in-flight requests.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// RFC 3339 / ISO-8601 in UTC with whole seconds (`2024-01-02T03:04:05Z`).
pub(crate) fn iso8601(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A random UUID (v4) as AWS request ids look.
pub(crate) fn new_request_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_is_utc_whole_seconds() {
        let at = time::macros::datetime!(2024-01-02 03:04:05.678 +01:00);
        assert_eq!(iso8601(at), "2024-01-02T02:04:05Z");
    }

    #[test]
    fn request_ids_are_uuids() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
    }
}
