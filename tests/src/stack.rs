//! The whole stack the proxy lives in, on one machine: a PostgreSQL server standing in for
//! a Redshift cluster and a serverless workgroup, the AWS emulator (IAM Roles Anywhere and
//! the Redshift credential APIs), a per-run PKI, and the `redshift-iam-proxy` binary with a
//! generated configuration.
//!
//! [`StackLayout`] is the pure part: it issues the certificates and writes the proxy's and
//! the emulator's configuration for given ports. [`Stack`] runs it (PostgreSQL shared or
//! its own, the emulator in-process, the proxy as a child process) for tests; the sandbox
//! and the benchmark reuse the layout with their own processes.

use crate::emulator::{AwsEmulator, ClusterSpec, EmulatorConfig, PgAdmin, WorkgroupSpec};
use crate::pg::{quote_ident, PgOptions, PgServer};
use crate::pki::{CertAuthority, ClientCert, ClientCertSpec, KeyAlgorithm, TestPki};
use crate::ports::free_port;
use crate::proxy::ProxyProcess;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const CLUSTER: &str = "examplecluster";
pub const WORKGROUP: &str = "sandbox-wg";
pub const DATABASE: &str = "dev";

pub fn trust_anchor_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/sandbox-trust-anchor")
}
pub fn profile_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/sandbox-profile")
}
/// The proxy's default role (the blog's `RedshiftAccessRoleArn`).
pub fn access_role_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/RedshiftAccess")
}
/// A second role, granted to the BI rule, to show one Roles Anywhere session per role.
pub fn bi_role_arn() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/RedshiftBiReader")
}

/// Where the PostgreSQL stand-in is and how the emulator administers it.
#[derive(Debug, Clone)]
pub struct PgEndpoint {
    pub port: u16,
    pub socket_dir: PathBuf,
    pub superuser: String,
    /// CA that issued the server's certificate (for `localhost` and 127.0.0.1).
    pub ca_cert: PathBuf,
}

impl PgEndpoint {
    pub fn of(pg: &PgServer) -> Self {
        PgEndpoint {
            port: pg.port(),
            socket_dir: pg.socket_dir().to_path_buf(),
            superuser: pg.superuser().to_string(),
            ca_cert: pg.ca_cert_path().to_path_buf(),
        }
    }
}

/// The proxy's three listeners, one per target.
#[derive(Debug, Clone, Copy)]
pub struct ListenerPorts {
    /// Target `cluster`: GetClusterCredentials with AutoCreate and DbGroups.
    pub cluster: u16,
    /// Target `cluster-iam`: GetClusterCredentialsWithIAM (user `IAMR:<role>`).
    pub cluster_iam: u16,
    /// Target `serverless`: redshift-serverless GetCredentials.
    pub serverless: u16,
}

impl ListenerPorts {
    pub fn free() -> Self {
        ListenerPorts {
            cluster: free_port(),
            cluster_iam: free_port(),
            serverless: free_port(),
        }
    }
}

/// Certificates and configuration of a stack, written under one directory.
pub struct StackLayout {
    pub dir: PathBuf,
    /// Issues the proxy's listener certificate and the client certificates.
    pub pki: TestPki,
    /// The Roles Anywhere trust anchor CA.
    pub trust_anchor: CertAuthority,
    /// The proxy's own certificate for Roles Anywhere (issued by `trust_anchor`).
    pub proxy_identity: ClientCert,
    /// `alice`: an analyst (rule `analysts`, group `analysts`, default role).
    pub alice: ClientCert,
    /// `bob`: a BI service with a SPIFFE ID (rule `bi`, role `RedshiftBiReader`).
    pub bob: ClientCert,
    pub ports: ListenerPorts,
    pub proxy_config: String,
    pub emulator: EmulatorConfig,
}

impl StackLayout {
    /// Issues every certificate under `dir` and generates both configurations. The AWS
    /// emulator is expected at `emulator_url`.
    pub fn generate(
        dir: &Path,
        pg: &PgEndpoint,
        emulator_url: &str,
        ports: ListenerPorts,
    ) -> anyhow::Result<StackLayout> {
        std::fs::create_dir_all(dir)?;
        let pki = TestPki::new(dir.join("pki"))?;
        let server = pki.server_cert(&["localhost", "127.0.0.1"])?;
        let trust_anchor = pki.new_root_ca("Sandbox Roles Anywhere CA", KeyAlgorithm::EcdsaP256)?;
        let proxy_identity = trust_anchor
            .client_cert(ClientCertSpec::new("redshift-iam-proxy").key(KeyAlgorithm::Rsa2048))?;
        let alice = pki.client_cert(
            ClientCertSpec::new("alice")
                .email("alice@corp.example")
                .organizational_unit("analytics"),
        )?;
        let bob =
            pki.client_cert(ClientCertSpec::new("bob").uri("spiffe://corp.example/ns/bi/sa/bob"))?;
        let crl = pki.root().crl_pem()?;

        let admin = PgAdmin::new(
            pg.socket_dir.to_string_lossy(),
            pg.port,
            pg.superuser.clone(),
        );
        let emulator = EmulatorConfig {
            trust_anchor_arn: trust_anchor_arn(),
            trust_anchor_ca_pem: None,
            trust_anchor_ca_file: Some(trust_anchor.cert_pem.clone()),
            profile_arn: profile_arn(),
            role_arns: vec![access_role_arn(), bi_role_arn()],
            max_session_duration: Duration::from_secs(12 * 3600),
            clusters: vec![ClusterSpec {
                identifier: CLUSTER.into(),
                region: REGION.into(),
                custom_domain_name: None,
                admin: admin.clone(),
            }],
            workgroups: vec![WorkgroupSpec {
                name: WORKGROUP.into(),
                region: REGION.into(),
                custom_domain_name: None,
                admin,
            }],
        };

        let proxy_config = format!(
            r#"# redshift-iam-proxy configuration generated by the test kit's stack.
# Every key is documented in docs/configuration.md.

[log]
level = "info"

# --- Where clients connect -------------------------------------------------------------
# One listener per target: clients pick a target by port. Each requires TLS and a client
# certificate issued by `client_ca` (and not revoked in `client_crls`).
{listeners}
# --- Upstreams ---------------------------------------------------------------------------
# The PostgreSQL stand-in plays both a provisioned cluster and a serverless workgroup. Its
# certificate names `localhost`: the proxy dials 127.0.0.1 and verifies `host` (verify-full).
# In production `host` is the cluster endpoint and `dial` an optional VPC endpoint.
[[target]]
name = "cluster"
kind = "provisioned"
host = "localhost"
port = {pg_port}
dial = "127.0.0.1"
ca_bundle = {pg_ca:?}
cluster_identifier = "{CLUSTER}"
region = "{REGION}"
auto_create = true
aws_endpoint_url = "{emulator_url}"

[[target]]
name = "cluster-iam"
kind = "provisioned"
host = "localhost"
port = {pg_port}
dial = "127.0.0.1"
ca_bundle = {pg_ca:?}
cluster_identifier = "{CLUSTER}"
region = "{REGION}"
with_iam = true
aws_endpoint_url = "{emulator_url}"

[[target]]
name = "serverless"
kind = "serverless"
host = "localhost"
port = {pg_port}
dial = "127.0.0.1"
ca_bundle = {pg_ca:?}
workgroup = "{WORKGROUP}"
region = "{REGION}"
aws_endpoint_url = "{emulator_url}"

# --- Who may log in as whom --------------------------------------------------------------
# First rule that matches the certificate and grants the target wins.
[[policy.rule]]
name = "analysts"
match = {{ cn = "alice*" }}
targets = ["*"]
users = ["{{cn}}"]
default_user = "{{cn}}"
databases = ["{DATABASE}", "postgres"]
groups = ["analysts"]

[[policy.rule]]
name = "bi"
match = {{ san_uri = "spiffe://corp.example/ns/bi/*" }}
targets = ["*"]
users = ["{{san_uri_path}}", "bi_reader"]
default_user = "{{san_uri_path}}"
databases = ["{DATABASE}"]
role_arn = "{bi_role}"

# --- The proxy's own AWS identity: IAM Roles Anywhere -------------------------------------
[aws]
source = "roles_anywhere"

[aws.roles_anywhere]
certificate = {ra_cert:?}
private_key = {ra_key:?}
trust_anchor_arn = "{ta}"
profile_arn = "{profile}"
role_arn = "{role}"
endpoint_url = "{emulator_url}"
"#,
            listeners = [
                ("cluster", ports.cluster),
                ("cluster-iam", ports.cluster_iam),
                ("serverless", ports.serverless),
            ]
            .iter()
            .map(|(target, port)| format!(
                "[[listener]]\nname = {target:?}\nbind = \"127.0.0.1:{port}\"\ntarget = {target:?}\n\
                 tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\nclient_crls = [{crl:?}]\n",
                server.chain_pem,
                server.key_pem,
                pki.ca_cert_path(),
            ))
            .collect::<Vec<_>>()
            .join("\n"),
            pg_port = pg.port,
            pg_ca = pg.ca_cert,
            bi_role = bi_role_arn(),
            ra_cert = proxy_identity.cert_pem,
            ra_key = proxy_identity.key_pem,
            ta = trust_anchor_arn(),
            profile = profile_arn(),
            role = access_role_arn(),
        );
        Ok(StackLayout {
            dir: dir.to_path_buf(),
            pki,
            trust_anchor,
            proxy_identity,
            alice,
            bob,
            ports,
            proxy_config,
            emulator,
        })
    }

    /// psql through the proxy listener on `port` with `cert`, verify-full.
    pub fn psql(&self, port: u16, cert: &ClientCert) -> crate::psql::Psql {
        crate::psql::Psql::new("localhost", port)
            .hostaddr("127.0.0.1")
            .root_cert(self.pki.ca_cert_path())
            .client(cert)
            .dbname(DATABASE)
    }
}

/// Creates the `dev` database Redshift clusters come with.
pub async fn create_dev_database(pg: &PgServer) -> anyhow::Result<()> {
    pg.admin()
        .await?
        .batch_execute(&format!("create database {}", quote_ident(DATABASE)))
        .await?;
    Ok(())
}

/// A running stack for tests: its own PostgreSQL (the emulator sets passwords of roles
/// such as `IAMA:alice`, so stacks running in parallel must not share a server), the
/// emulator in this process (so tests read its counters and inject faults directly), and
/// the proxy binary.
pub struct Stack {
    pub layout: StackLayout,
    pub emulator: AwsEmulator,
    pub proxy: ProxyProcess,
    pub pg: PgServer,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack; `adjust` may edit the generated proxy configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut String)) -> anyhow::Result<Stack> {
        let pg = PgServer::start(PgOptions::default())?;
        create_dev_database(&pg).await?;
        let dir = tempfile::tempdir()?;
        let endpoint = PgEndpoint::of(&pg);
        // The emulator's URL goes into the proxy's configuration: pick its port first.
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut layout = StackLayout::generate(dir.path(), &endpoint, &url, ListenerPorts::free())?;
        let emulator =
            AwsEmulator::start_on(layout.emulator.clone(), ([127, 0, 0, 1], port).into()).await?;
        adjust(&mut layout.proxy_config);
        let proxy = ProxyProcess::builder(layout.proxy_config.clone(), dir.path())
            .wait_for_port(layout.ports.cluster)
            .startup_timeout(Duration::from_secs(20))
            .start()
            .await?;
        Ok(Stack {
            layout,
            emulator,
            proxy,
            pg,
            _dir: dir,
        })
    }

    /// psql through the listener on `port` as `cert`.
    pub fn psql(&self, port: u16, cert: &ClientCert) -> crate::psql::Psql {
        self.layout.psql(port, cert)
    }
}
