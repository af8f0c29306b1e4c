//! The world every end-to-end test runs in: the real chain from client to database.
//!
//! ```text
//! client ──TLS──▶ proxy ──Roles Anywhere──▶ emulator ──GetClusterCredentials──▶ emulator
//!                   └──verify-full TLS, md5 / SHA-256 digest──▶ Redshift stand-in ──▶ PostgreSQL
//! ```
//!
//! A [`World`] is a per-test PKI (the proxy's server certificate, the client CA and its
//! CRL, the Roles Anywhere trust anchor and the proxy's own identity), the AWS emulator
//! with its stand-ins for a provisioned cluster and a serverless workgroup (roles carry
//! the README's IAM policy), over the PostgreSQL server shared by the test binary. Its
//! [`World::config`] is a complete configuration of the proxy for that world, which a
//! test adjusts with the typed builder ([`crate::config`]) and starts in-process
//! ([`World::proxy`], with the production credential chain) or as the binary
//! ([`World::proxy_process`]).
//!
//! Names are unique per world (client certificates get a suffix), so worlds share the
//! PostgreSQL server without seeing each other's users.

use crate::config::{path, Listener, ProxyConfig, Rule, Target};
use crate::emulator::{AwsEmulator, EmulatorConfig, PgAdmin, StandInSpec};
use crate::pg::{quote_ident, PgServer};
use crate::pki::{CertAuthority, ClientCert, ClientCertSpec, KeyAlgorithm, ServerCert, TestPki};
use crate::proxy::{ProxyBuilder, ProxyProcess};
use crate::stack::{
    access_role_arn, iam_policy, profile_arn, trust_anchor_arn, ACCOUNT, CLUSTER, DATABASE, GROUP,
    REGION, WORKGROUP,
};
use crate::standin::{pg_role_name, StandIn};
use proxy_auth::aws::{AwsCredentials, Clock};
use proxy_auth::redshift::{
    refresh_policy, AwsCredentialFetcher, IdentityBudget, RedshiftCredentials,
};
use redshift_iam_proxy::metrics::AwsCallMetrics;
use redshift_iam_proxy::runtime::ReloadError;
use redshift_iam_proxy::server::{Proxy, RunningProxy};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

pub use crate::client::{current_user, error_response, sqlstate};
pub use crate::observe::audit_records;

/// What a world's emulator may differ in.
#[derive(Clone)]
pub struct WorldOptions {
    /// IAM policy of every role (default: the README's).
    pub policy: String,
    /// Roles Anywhere profile accepts role session names.
    pub accept_role_session_name: bool,
    /// Login names the stand-ins challenge with Redshift's SHA-256 digest (code 13).
    pub sha256_users: Vec<String>,
    /// The PostgreSQL server behind the stand-ins; default: the one shared by the test
    /// binary. A test that stops or restarts its server needs one of its own.
    pub pg: Option<&'static PgServer>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            policy: iam_policy(),
            accept_role_session_name: false,
            sha256_users: Vec::new(),
            pg: None,
        }
    }
}

/// See the module documentation.
pub struct World {
    pub pg: &'static PgServer,
    pub pki: TestPki,
    /// The proxy's listener certificate (`localhost`, `127.0.0.1`), issued by `pki`.
    pub server: ServerCert,
    /// The CRL of `pki`'s root, which the default listener checks.
    pub crl: PathBuf,
    pub trust_anchor: CertAuthority,
    /// The proxy's own certificate for Roles Anywhere.
    pub proxy_identity: ClientCert,
    pub emulator: AwsEmulator,
    /// Suffix of this world's names.
    pub tag: String,
    dir: tempfile::TempDir,
}

/// The `dev` database and the `analysts` group, created once on the shared PostgreSQL
/// server, and on a world's own server when it starts.
async fn shared_objects(pg: &'static PgServer) {
    static CREATED: OnceCell<()> = OnceCell::const_new();
    if std::ptr::eq(pg, PgServer::shared()) {
        CREATED.get_or_init(|| create_objects(pg)).await;
    } else {
        create_objects(pg).await;
    }
}

async fn create_objects(pg: &PgServer) {
    let admin = pg.admin().await.expect("PostgreSQL admin session");
    let exists = admin
        .query_opt("select 1 from pg_database where datname = $1", &[&DATABASE])
        .await
        .expect("query databases")
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("create database {}", quote_ident(DATABASE)))
            .await
            .expect("create the dev database");
    }
    admin
        .batch_execute(&format!(
            "do $$ begin create role {} nologin; exception when duplicate_object then \
             null; end $$",
            quote_ident(GROUP)
        ))
        .await
        .expect("create the analysts group");
}

impl World {
    pub async fn start() -> World {
        World::start_with(WorldOptions::default()).await
    }

    pub async fn start_with(options: WorldOptions) -> World {
        // Every proxy of the process logs into one capture (see `observe::captured_logs`).
        crate::observe::captured_logs();
        let pg = options.pg.unwrap_or_else(PgServer::shared);
        shared_objects(pg).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(dir.path().join("pki")).expect("test PKI");
        let server = pki
            .server_cert(&["localhost", "127.0.0.1"])
            .expect("proxy server certificate");
        let crl = pki.root().crl_pem().expect("CRL");
        let trust_anchor = pki
            .new_root_ca("World Roles Anywhere CA", KeyAlgorithm::EcdsaP256)
            .expect("trust anchor");
        let proxy_identity = trust_anchor
            .client_cert(ClientCertSpec::new("redshift-iam-proxy").key(KeyAlgorithm::Rsa2048))
            .expect("proxy identity");
        let emulator = AwsEmulator::start(emulator_config(pg, &trust_anchor, &options))
            .await
            .expect("AWS emulator");
        let tag = PgServer::unique_name("w")
            .trim_start_matches("w_")
            .replace('_', "-");
        World {
            pg,
            pki,
            server,
            crl,
            trust_anchor,
            proxy_identity,
            emulator,
            tag,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client certificate issued by the world's CA with the CN `<name>-<tag>` (see
    /// [`ClientCertSpec`] for SANs and validity; its CN is replaced).
    pub fn client(&self, name: &str) -> ClientCert {
        self.client_with(ClientCertSpec::new(name))
    }

    /// Client certificates the proxy must refuse, each with words its refusal names: none,
    /// expired, not yet valid, revoked, from a CA the proxy does not trust, and one for
    /// server authentication only. Call it before starting the proxy, which loads the
    /// world's CRL (with the revoked one) at start.
    pub fn refused_client_certs(&self) -> Vec<(Option<ClientCert>, &'static str)> {
        let other = self
            .pki
            .new_root_ca("Other Client CA", Default::default())
            .unwrap()
            .client_cert(ClientCertSpec::new(self.name("other")))
            .unwrap();
        vec![
            (None, "certificate is required"),
            (
                Some(self.client_with(ClientCertSpec::new("expired").expired())),
                "expired",
            ),
            (
                Some(self.client_with(ClientCertSpec::new("early").not_yet_valid())),
                "not yet valid",
            ),
            (
                Some(self.client_with(ClientCertSpec::new("revoked").revoked())),
                "revoked",
            ),
            (Some(other), "trusted certificate authority"),
            (
                Some(self.client_with(ClientCertSpec::new("server").server_auth_only())),
                "client authentication",
            ),
        ]
    }

    /// [`World::client`] from a full spec; the CN gets the world's tag appended.
    pub fn client_with(&self, spec: ClientCertSpec) -> ClientCert {
        let cn = format!("{}-{}", spec.cn(), self.tag);
        let spec = spec.common_name(cn);
        self.pki.client_cert(spec).expect("client certificate")
    }

    /// The database user Redshift's `GetClusterCredentials` (AutoCreate) gives `cert`'s
    /// CN: `IAMA:<cn>`.
    pub fn iam_user(&self, cert: &ClientCert) -> String {
        format!("IAMA:{}", cert.common_name)
    }

    /// The PostgreSQL role the stand-in runs `cert`'s `IAMA:<cn>` sessions as (what
    /// `pg_stat_activity` shows).
    pub fn role(&self, cert: &ClientCert) -> String {
        pg_role_name(&self.iam_user(cert))
    }

    /// The stand-in of the provisioned cluster (targets `cluster` and `cluster-iam`).
    pub fn standin(&self) -> &StandIn {
        self.emulator.standin(CLUSTER).expect("cluster stand-in")
    }

    /// The stand-in of the serverless workgroup (target `serverless`).
    pub fn serverless_standin(&self) -> &StandIn {
        self.emulator
            .standin(WORKGROUP)
            .expect("workgroup stand-in")
    }

    /// A name unique to this world, `<prefix>-<tag>` (database users, local users).
    pub fn name(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.tag)
    }

    /// A complete configuration: listener `main` (certificates of the world's CA, its CRL)
    /// to target `cluster` (GetClusterCredentials with AutoCreate); targets `cluster-iam`
    /// (WithIAM) and `serverless` too; rule `people` granting `{cn}` on `dev`; Roles
    /// Anywhere through the emulator; audit records in the world's directory.
    pub fn config(&self) -> ProxyConfig {
        let url = self.emulator.url();
        let cluster = self.emulator.endpoint(CLUSTER).expect("cluster stand-in");
        let workgroup = self
            .emulator
            .endpoint(WORKGROUP)
            .expect("workgroup stand-in");
        let target = |t: Target, ca: &Path| self.through_emulator(t, ca);
        ProxyConfig::new()
            .set("log", "level", "debug")
            .set("audit", "path", path(self.audit_path()))
            .listener(self.listener("main", "cluster"))
            .target(self.cluster_target("cluster"))
            .target(
                target(
                    Target::provisioned("cluster-iam", &cluster.host, cluster.port()),
                    &cluster.ca_cert,
                )
                .set("cluster_identifier", CLUSTER)
                .set("with_iam", true),
            )
            .target(
                target(
                    Target::serverless("serverless", &workgroup.host, workgroup.port()),
                    &workgroup.ca_cert,
                )
                .set("workgroup", WORKGROUP),
            )
            .rule(
                Rule::new("people")
                    .matching("cn", "*")
                    .targets(["cluster"])
                    .users(["{cn}"])
                    .default_user("{cn}")
                    .databases([DATABASE]),
            )
            .set("aws", "source", "roles_anywhere")
            .set(
                "aws.roles_anywhere",
                "certificate",
                path(&self.proxy_identity.cert_pem),
            )
            .set(
                "aws.roles_anywhere",
                "private_key",
                path(&self.proxy_identity.key_pem),
            )
            .set("aws.roles_anywhere", "trust_anchor_arn", trust_anchor_arn())
            .set("aws.roles_anywhere", "profile_arn", profile_arn())
            .set("aws.roles_anywhere", "role_arn", access_role_arn())
            .set("aws.roles_anywhere", "endpoint_url", url)
    }

    /// A target named `name` like [`World::config`]'s `cluster`: the cluster's stand-in,
    /// GetClusterCredentials with AutoCreate (another name for the same cluster, as a
    /// second endpoint of it would be).
    pub fn cluster_target(&self, name: &str) -> Target {
        let cluster = self.emulator.endpoint(CLUSTER).expect("cluster stand-in");
        self.through_emulator(
            Target::provisioned(name, &cluster.host, cluster.port()),
            &cluster.ca_cert,
        )
        .set("cluster_identifier", CLUSTER)
        .set("auto_create", true)
    }

    /// `t` dialled at 127.0.0.1, verified against `ca`, its credentials from the emulator.
    fn through_emulator(&self, t: Target, ca: &Path) -> Target {
        t.set("dial", "127.0.0.1")
            .set("ca_bundle", path(ca))
            .set("region", REGION)
            .set("aws_endpoint_url", self.emulator.url())
            .set("connect_timeout", "5s")
            .set("login_timeout", "10s")
    }

    /// A listener like [`World::config`]'s `main` (the world's server certificate, client
    /// CA and CRL) named `name`, on an ephemeral port, for `target`.
    pub fn listener(&self, name: &str, target: &str) -> Listener {
        Listener::new(name, "127.0.0.1:0")
            .target(target)
            .tls(&self.server.chain_pem, &self.server.key_pem)
            .client_ca(self.pki.ca_cert_path(), &[&self.crl])
            .set("login_timeout", "10s")
    }

    /// Where [`World::config`] sends audit records.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Starts `config` in this process with the production credential chain (Roles
    /// Anywhere and Redshift through the emulator), exactly as `redshift-iam-proxy run`
    /// builds it.
    pub async fn proxy(&self, config: ProxyConfig) -> TestProxy {
        self.try_proxy(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`World::proxy`], returning what failed.
    pub async fn try_proxy(&self, config: ProxyConfig) -> Result<TestProxy, String> {
        self.start_proxy(config, None).await
    }

    /// [`World::proxy`] whose database credential cache reads `clock` instead of the
    /// system's (the production chain otherwise: Roles Anywhere, the AWS SDK fetcher, the
    /// configured refresh policy and budgets).
    pub async fn proxy_with_clock(&self, config: ProxyConfig, clock: Arc<dyn Clock>) -> TestProxy {
        self.start_proxy(config, Some(clock))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn start_proxy(
        &self,
        config: ProxyConfig,
        clock: Option<Arc<dyn Clock>>,
    ) -> Result<TestProxy, String> {
        let file = config.write(self.dir.path());
        let parsed =
            proxy_config::Config::load(&file).map_err(|e| format!("{e}\n{}", config.to_toml()))?;
        let aws_calls = AwsCallMetrics::default();
        let (aws, credentials) = match clock {
            None => {
                redshift_iam_proxy::commands::credential_source_observed(
                    &parsed,
                    Arc::new(aws_calls.clone()),
                )
                .await?
            }
            Some(clock) => {
                let observer = Arc::new(aws_calls.clone());
                let aws = Arc::new(
                    AwsCredentials::from_config_observed(&parsed.aws, observer.clone())
                        .await
                        .map_err(|e| format!("AWS credentials: {e}"))?,
                );
                let fetcher = AwsCredentialFetcher::new(&parsed, aws.clone())
                    .map_err(|e| format!("Redshift credentials: {e}"))?
                    .with_observer(observer);
                let credentials = RedshiftCredentials::with_fetcher(
                    Arc::new(fetcher),
                    clock,
                    refresh_policy(&parsed.db_credentials),
                    IdentityBudget::from_config(&parsed.db_credentials),
                );
                (aws, Arc::new(credentials))
            }
        };
        let running = Proxy::new(&parsed, credentials.clone())
            .map_err(|e| e.to_string())?
            .with_config_path(&file, Default::default())
            .with_credential_stats(credentials)
            .with_aws_credentials(aws)
            .with_aws_call_metrics(aws_calls)
            .bind()
            .await
            .map_err(|e| e.to_string())?;
        Ok(TestProxy {
            running,
            config,
            file,
            audit_path: self.audit_path(),
            ca: self.pki.ca_cert_path().to_path_buf(),
        })
    }

    /// Starts `config` as the `redshift-iam-proxy` binary and waits until it is ready.
    /// Listeners may bind port 0: where they landed is read from the binary's log (which
    /// is JSON for that).
    pub async fn proxy_process(&self, config: &ProxyConfig) -> BinaryProxy {
        self.proxy_process_with(config, |b| b).await
    }

    /// [`World::proxy_process`], with what `adjust` adds to the launch (environment,
    /// arguments).
    pub async fn proxy_process_with(
        &self,
        config: &ProxyConfig,
        adjust: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
    ) -> BinaryProxy {
        let config = config.clone().set("log", "format", "json");
        let builder = ProxyProcess::builder(config.to_toml(), self.dir.path())
            .startup_timeout(Duration::from_secs(20));
        let process = adjust(builder)
            .start()
            .await
            .expect("the proxy binary starts");
        let ready = process
            .wait_for_log("redshift-iam-proxy ready", Duration::from_secs(20))
            .await;
        assert!(
            ready,
            "the proxy binary never got ready:\n{}",
            process.logs()
        );
        let mut listeners = Vec::new();
        let mut admin = None;
        for line in process.logs().lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let field = |name: &str| record[name].as_str().unwrap_or_default().to_owned();
            if field("message") == "listening" {
                if let Ok(addr) = field("address").parse() {
                    listeners.push((field("listener"), addr));
                }
            } else if field("message").starts_with("admin listener") {
                // `Some("127.0.0.1:1234")` (a Unix socket admin listener has none).
                let address = field("address");
                let inner = address
                    .trim_start_matches("Some(\"")
                    .trim_end_matches("\")");
                admin = inner.parse().ok();
            }
        }
        BinaryProxy {
            process,
            listeners,
            admin,
            ca: self.pki.ca_cert_path().to_path_buf(),
        }
    }
}

/// The `redshift-iam-proxy` binary running a world's configuration.
pub struct BinaryProxy {
    pub process: ProxyProcess,
    /// TCP listeners by name, where the binary reported them bound.
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin listener's TCP address, if it has one.
    pub admin: Option<SocketAddr>,
    /// The CA clients verify the proxy with.
    pub ca: PathBuf,
}

impl BinaryProxy {
    /// The first TCP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listeners.first().expect("a TCP listener").1
    }

    /// The address of the TCP listener named `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no TCP listener named {name:?}"))
    }

    /// tokio-postgres to the listener at `addr` (verify-full against the world's CA).
    pub async fn connect_to(
        &self,
        addr: SocketAddr,
        cert: Option<&ClientCert>,
        user: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        crate::client::connect(addr.port(), &self.ca, cert, user, database).await
    }

    /// psql to the listener at `addr` with `cert`, database `dev`.
    pub fn psql_to(&self, addr: SocketAddr, cert: &ClientCert) -> crate::psql::Psql {
        crate::psql::Psql::new("localhost", addr.port())
            .hostaddr("127.0.0.1")
            .root_cert(&self.ca)
            .client(cert)
            .dbname(DATABASE)
    }
}

fn emulator_config(
    pg: &PgServer,
    trust_anchor: &CertAuthority,
    options: &WorldOptions,
) -> EmulatorConfig {
    let admin = PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser());
    let standin = StandInSpec {
        sha256_users: options.sha256_users.clone(),
        ..StandInSpec::default()
    };
    EmulatorConfig {
        accept_role_session_name: options.accept_role_session_name,
        ..crate::stack::emulator_config(
            trust_anchor,
            admin,
            [standin.clone(), standin],
            &options.policy,
        )
    }
}

/// Taken by the tests that load the machine or bound times under load (hundreds of
/// sessions, login storms, seconds-long credentials): they run one at a time within a test
/// binary, so none of them measures another's load. Hold the guard for the whole test.
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// The account the world's ARNs live in.
pub fn account() -> &'static str {
    ACCOUNT
}

/// A proxy running in the test process.
pub struct TestProxy {
    pub running: RunningProxy,
    pub config: ProxyConfig,
    /// The configuration file (rewrite it, then [`TestProxy::reload`]).
    pub file: PathBuf,
    pub audit_path: PathBuf,
    /// The CA clients verify the proxy with.
    pub ca: PathBuf,
}

impl TestProxy {
    /// The first TCP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// The address of the TCP listener named `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.running
            .local_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no TCP listener named {name:?}"))
    }

    /// psql to the first listener with `cert`, verify-full against the proxy's CA,
    /// database `dev`.
    pub fn psql(&self, cert: &ClientCert) -> crate::psql::Psql {
        self.psql_to(self.addr(), cert)
    }

    pub fn psql_to(&self, addr: SocketAddr, cert: &ClientCert) -> crate::psql::Psql {
        crate::psql::Psql::new("localhost", addr.port())
            .hostaddr("127.0.0.1")
            .root_cert(&self.ca)
            .client(cert)
            .dbname(DATABASE)
    }

    /// tokio-postgres to the first listener; `cert = None` presents no certificate.
    pub async fn connect(
        &self,
        cert: Option<&ClientCert>,
        user: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_to(self.addr(), cert, user, database).await
    }

    /// tokio-postgres to the listener at `addr` (see [`TestProxy::listener`]).
    pub async fn connect_to(
        &self,
        addr: SocketAddr,
        cert: Option<&ClientCert>,
        user: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        crate::client::connect(addr.port(), &self.ca, cert, user, database).await
    }

    /// [`TestProxy::connect`] on database `dev` as `cert`'s CN: the usual login.
    pub async fn login(
        &self,
        cert: &ClientCert,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect(Some(cert), &cert.common_name, DATABASE).await
    }

    /// [`crate::client::connect_watched`] to the first listener.
    pub async fn connect_watched(
        &self,
        cert: &ClientCert,
        user: &str,
        database: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    > {
        crate::client::connect_watched(self.addr().port(), &self.ca, Some(cert), user, database)
            .await
    }

    /// The TLS connector clients of this proxy use (cancel tokens need it).
    pub fn tls_connector(
        &self,
        cert: Option<&ClientCert>,
    ) -> tokio_postgres_rustls::MakeRustlsConnect {
        crate::client::tls_connector(&self.ca, cert)
    }

    /// The admin listener's TCP address.
    pub fn admin(&self) -> SocketAddr {
        self.running.admin_addr().expect("an [admin] TCP listener")
    }

    /// The metrics as `/metrics` serves them.
    pub fn metrics(&self) -> String {
        self.running.shared().metrics.encode()
    }

    /// One sample of [`TestProxy::metrics`] (see [`crate::observe::sample`]).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        crate::observe::sample(&self.metrics(), prefix)
    }

    /// Writes `config` to the file and reloads.
    pub async fn reload(&mut self, config: ProxyConfig) -> Result<u64, ReloadError> {
        std::fs::write(&self.file, config.to_toml()).expect("rewrite the configuration");
        self.config = config;
        self.running.reload().await
    }

    /// Audit records written so far, waiting (up to 10 s) until there are at least `n`.
    pub async fn audit(&self, n: usize) -> Vec<Value> {
        audit_records(&self.audit_path, n).await
    }
}
