//! Local AWS emulator: IAM Roles Anywhere `CreateSession`, Redshift
//! `GetClusterCredentials[WithIAM]` and Redshift Serverless `GetCredentials`, served over
//! plain HTTP on 127.0.0.1 (clients use endpoint overrides), and one Redshift stand-in
//! ([`crate::standin`]) per cluster and workgroup, where the issued credentials log in.
//!
//! It is strict where AWS is (sources in `/work/research/aws-iam.md`):
//! - signatures are verified for real (X.509 for Roles Anywhere, SigV4 with the issued
//!   session credentials for Redshift), bad ones are rejected with AWS's error codes;
//! - every Redshift call is authorized against the calling role's identity policy
//!   ([`iam`]; a role without a policy may do nothing) before the cluster is looked up;
//! - parameters follow the documented rules, no more, no less;
//! - every credential call issues a new random password, valid on its own until it
//!   expires, for the database it names, with the groups it names for each session;
//! - every call leaves a CloudTrail-style record without secrets.
//!
//! Other processes (sandbox, benchmarks) use the control endpoints:
//! - `GET /_emulator/calls` → `{"CreateSession": n, ...}`
//! - `POST /_emulator/faults` with a [`FaultsRequest`] JSON body; `DELETE /_emulator/faults`
//! - `POST /_emulator/expire-sessions`, `POST /_emulator/revoke-sessions`,
//!   `POST /_emulator/expire-db-credentials`
//! - `GET /_emulator/cloudtrail` → the records, oldest first
//! - `GET /_emulator/health`

mod auth_header;
mod cloudtrail;
mod config;
mod db;
mod errors;
mod faults;
pub mod iam;
mod redshift;
mod roles_anywhere;
mod server;
mod sessions;
mod sigv4;
mod x509_auth;

pub use config::{
    allow_all_redshift_policy, ClusterSpec, EmulatorConfig, PgAdmin, StandInSpec, WorkgroupSpec,
};
pub use faults::{Api, Faults, FaultsRequest};

use crate::pki::TestPki;
use crate::standin::{
    Endpoint, IssuedCredentials, StandIn, StandInConfig, StandInTls, TargetId, TargetKind,
};
use anyhow::Context as _;
use redshift::Target;
use rustls_pki_types::TrustAnchor;
use std::collections::HashMap;
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
    /// Identity policies by role ARN.
    pub(crate) policies: HashMap<String, iam::Policy>,
    /// Database credentials issued so far (shared with the stand-ins).
    pub(crate) issued: Arc<IssuedCredentials>,
    pub(crate) cloudtrail: cloudtrail::CloudTrail,
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
        let mut policies = HashMap::new();
        for (role, document) in &config.role_policies {
            anyhow::ensure!(
                config.role_arns.contains(role),
                "role_policies names {role}, which is not in role_arns"
            );
            let policy =
                iam::Policy::parse(document).with_context(|| format!("the policy of {role}"))?;
            policies.insert(role.clone(), policy);
        }
        for workgroup in &config.workgroups {
            anyhow::ensure!(
                !workgroup.id.is_empty(),
                "workgroup {} needs its id",
                workgroup.name
            );
        }

        let clusters = config
            .clusters
            .iter()
            .map(|c| Target {
                id: TargetId::cluster(&c.identifier),
                region: c.region.clone(),
                custom_domain_name: c.custom_domain_name.clone(),
                workgroup_id: None,
                db: db::DbTarget::new(c.admin.clone()),
            })
            .collect();
        let workgroups = config
            .workgroups
            .iter()
            .map(|w| Target {
                id: TargetId::workgroup(&w.name),
                region: w.region.clone(),
                custom_domain_name: w.custom_domain_name.clone(),
                workgroup_id: Some(w.id.clone()),
                db: db::DbTarget::new(w.admin.clone()),
            })
            .collect();
        let cloudtrail = cloudtrail::CloudTrail::new(config.cloudtrail_file.as_deref())?;
        Ok(Self {
            config,
            trust_anchors,
            rolesanywhere_region,
            sessions: sessions::SessionStore::default(),
            clusters,
            workgroups,
            counters: faults::CallCounters::default(),
            faults: Faults::default(),
            policies,
            issued: Arc::new(IssuedCredentials::new()),
            cloudtrail,
            db_credential_lifetime: Mutex::new(None),
        })
    }

    /// When a database credential issued at `now` for `duration_secs` expires (whole
    /// seconds, like AWS).
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

    fn expire_db_credentials(&self) {
        self.issued
            .expire_all(OffsetDateTime::now_utc() - time::Duration::seconds(1));
    }
}

/// Temporary AWS credentials issued by `CreateSession`. `Debug` redacts the secrets.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub access_key_id: String,
    pub secret_access_key: secrecy::SecretString,
    pub session_token: secrecy::SecretString,
    pub role_arn: String,
}

/// A running emulator and its stand-ins. Dropping it stops them.
#[derive(Debug)]
pub struct AwsEmulator {
    state: Arc<EmulatorState>,
    addr: SocketAddr,
    server: server::ServerHandle,
    standins: Vec<StandIn>,
    /// Generated TLS material of stand-ins configured without their own.
    _standin_pki: Option<tempfile::TempDir>,
}

impl AwsEmulator {
    /// Starts the emulator on an ephemeral port of 127.0.0.1, and its stand-ins.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<AwsEmulator> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the emulator on `addr`, and its stand-ins.
    pub async fn start_on(config: EmulatorConfig, addr: SocketAddr) -> anyhow::Result<AwsEmulator> {
        let state = Arc::new(EmulatorState::new(config)?);
        let specs: Vec<(TargetId, &StandInSpec, &PgAdmin)> = state
            .config
            .clusters
            .iter()
            .map(|c| (TargetId::cluster(&c.identifier), &c.standin, &c.admin))
            .chain(
                state
                    .config
                    .workgroups
                    .iter()
                    .map(|w| (TargetId::workgroup(&w.name), &w.standin, &w.admin)),
            )
            .collect();
        let mut generated: Option<(tempfile::TempDir, StandInTls)> = None;
        let mut standins = Vec::new();
        for (target, spec, admin) in specs {
            let tls = match &spec.tls {
                Some(tls) => tls.clone(),
                None => {
                    if generated.is_none() {
                        generated = Some(generate_standin_tls()?);
                    }
                    generated
                        .as_ref()
                        .map(|(_, tls)| tls.clone())
                        .unwrap_or_else(|| unreachable!())
                }
            };
            let standin = StandIn::start(
                StandInConfig {
                    target,
                    listen: spec
                        .listen
                        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                    tls,
                    pg: admin.clone(),
                    sha256_users: spec.sha256_users.clone(),
                    static_users: spec.static_users.clone(),
                },
                Arc::clone(&state.issued),
            )
            .await?;
            standins.push(standin);
        }
        let (server, addr) = server::serve(Arc::clone(&state), addr).await?;
        Ok(AwsEmulator {
            state,
            addr,
            server,
            standins,
            _standin_pki: generated.map(|(dir, _)| dir),
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for all three services.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stand-in of the cluster (by identifier) or, failing that, the workgroup (by
    /// name) `name`.
    pub fn standin(&self, name: &str) -> Option<&StandIn> {
        let find = |kind: TargetKind| {
            self.standins
                .iter()
                .find(|s| s.target().kind == kind && s.target().name == name)
        };
        find(TargetKind::Cluster).or_else(|| find(TargetKind::Workgroup))
    }

    /// Where the stand-in of cluster or workgroup `name` listens, and the CA to trust.
    pub fn endpoint(&self, name: &str) -> Option<Endpoint> {
        self.standin(name).map(|s| s.endpoint().clone())
    }

    /// Every stand-in, clusters first.
    pub fn standins(&self) -> &[StandIn] {
        &self.standins
    }

    /// The store of issued database credentials.
    pub fn issued_credentials(&self) -> Arc<IssuedCredentials> {
        Arc::clone(&self.state.issued)
    }

    /// The temporary AWS credentials `CreateSession` issued so far (secrets included, for
    /// tests that check they never show up anywhere else).
    pub fn issued_sessions(&self) -> Vec<IssuedSession> {
        self.state
            .sessions
            .all()
            .into_iter()
            .map(|s| IssuedSession {
                access_key_id: s.access_key_id,
                secret_access_key: s.secret_access_key,
                session_token: s.session_token,
                role_arn: s.role_arn,
            })
            .collect()
    }

    /// Calls of `api` so far, successful and failed (including injected faults).
    pub fn calls(&self, api: Api) -> u64 {
        self.state.counters.get(api)
    }

    /// Runtime fault injection.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// The CloudTrail-style records of every call so far, oldest first.
    pub fn cloudtrail(&self) -> Vec<serde_json::Value> {
        self.state.cloudtrail.all()
    }

    /// Makes all AWS session credentials issued so far expire now: later SigV4 calls with
    /// them fail with `ExpiredToken`.
    pub fn expire_sessions(&self) {
        self.state.sessions.expire_all(OffsetDateTime::now_utc());
    }

    /// Revokes all AWS sessions issued so far (IAM's "revoke active sessions"): later calls
    /// with them are AccessDenied "with an explicit deny".
    pub fn revoke_sessions(&self) {
        self.state.sessions.revoke_all();
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

    /// Makes all database passwords issued so far expire now; the next credential call
    /// issues a fresh password.
    pub async fn expire_db_credentials(&self) -> anyhow::Result<()> {
        self.state.expire_db_credentials();
        Ok(())
    }

    /// Stops accepting connections and waits (briefly) for in-flight requests.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// A CA and a certificate for `localhost` and `127.0.0.1` in a temporary directory.
fn generate_standin_tls() -> anyhow::Result<(tempfile::TempDir, StandInTls)> {
    let dir = tempfile::Builder::new().prefix("standin-pki-").tempdir()?;
    let pki = TestPki::with_root(
        dir.path(),
        "Redshift stand-in CA",
        crate::pki::KeyAlgorithm::EcdsaP256,
    )?;
    let cert = pki.server_cert(&[crate::standin::HOST, "127.0.0.1"])?;
    let tls = StandInTls {
        cert_chain: cert.chain_pem,
        key: cert.key_pem,
        ca_cert: pki.ca_cert_path().to_path_buf(),
    };
    Ok((dir, tls))
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
