//! The whole stack the proxy lives in, on one machine: a PostgreSQL server behind two
//! Redshift stand-ins (a provisioned cluster and a serverless workgroup, see
//! [`crate::standin`]), the AWS emulator (IAM Roles Anywhere and the Redshift credential
//! APIs, which runs the stand-ins), a per-run PKI, and the `redshift-iam-proxy` binary with
//! a generated configuration.
//!
//! The roles get the README's IAM policy ([`iam_policy`]), adapted to the stack's account,
//! region, cluster and workgroup ID.
//!
//! [`StackLayout`] is the pure part: it issues the certificates and writes the proxy's and
//! the emulator's configuration for given ports. [`Stack`] runs it (PostgreSQL shared or
//! its own, the emulator in-process, the proxy as a child process) for tests; the sandbox
//! and the benchmark reuse the layout with their own processes.

use crate::emulator::{
    AwsEmulator, ClusterSpec, EmulatorConfig, PgAdmin, StandInSpec, WorkgroupSpec,
};
use crate::pg::{quote_ident, PgOptions, PgServer};
use crate::pki::{CertAuthority, ClientCert, ClientCertSpec, KeyAlgorithm, ServerCert, TestPki};
use crate::ports::free_port;
use crate::proxy::ProxyProcess;
use crate::standin::StandInTls;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const CLUSTER: &str = "examplecluster";
pub const WORKGROUP: &str = "sandbox-wg";
/// The workgroup's ID: IAM names serverless workgroups by ID.
pub const WORKGROUP_ID: &str = "5f0c2a9e-7b41-4d3c-9e8a-2b6d1c4f8a37";
pub const DATABASE: &str = "dev";
/// The database group of the `analysts` rule (it must exist: DbGroups name existing groups).
pub const GROUP: &str = "analysts";

/// The IAM policy of the roles: exactly the README's example ("The IAM policy of the role")
/// with the stack's region, account, cluster and workgroup ID (which happen to equal the
/// README's, except the workgroup ID). `tests/tests/testkit/emulator.rs` checks that the two agree.
pub fn iam_policy() -> String {
    let dbuser = format!("arn:aws:redshift:{REGION}:{ACCOUNT}:dbuser:{CLUSTER}/*");
    let dbname = format!("arn:aws:redshift:{REGION}:{ACCOUNT}:dbname:{CLUSTER}/{DATABASE}");
    let dbgroup = format!("arn:aws:redshift:{REGION}:{ACCOUNT}:dbgroup:{CLUSTER}/{GROUP}");
    let workgroup =
        format!("arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/{WORKGROUP_ID}");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ProvisionedTemporaryCredentials",
                "Effect": "Allow",
                "Action": "redshift:GetClusterCredentials",
                "Resource": [dbuser, dbname, dbgroup]
            },
            {
                "Sid": "ProvisionedJoinGroups",
                "Effect": "Allow",
                "Action": "redshift:JoinGroup",
                "Resource": dbgroup
            },
            {
                "Sid": "ProvisionedAutoCreate",
                "Effect": "Allow",
                "Action": "redshift:CreateClusterUser",
                "Resource": dbuser
            },
            {
                "Sid": "ProvisionedWithIAM",
                "Effect": "Allow",
                "Action": "redshift:GetClusterCredentialsWithIAM",
                "Resource": dbname
            },
            {
                "Sid": "ServerlessTemporaryCredentials",
                "Effect": "Allow",
                "Action": "redshift-serverless:GetCredentials",
                "Resource": workgroup
            }
        ]
    });
    serde_json::to_string_pretty(&policy).expect("a JSON value serializes")
}

/// The emulator of the stack's cluster and workgroup (stand-ins `standins`, both on
/// `admin`'s PostgreSQL) trusting `trust_anchor`, the access and BI roles allowed `policy`.
pub fn emulator_config(
    trust_anchor: &CertAuthority,
    admin: PgAdmin,
    [cluster, workgroup]: [StandInSpec; 2],
    policy: &str,
) -> EmulatorConfig {
    EmulatorConfig {
        trust_anchor_arn: trust_anchor_arn(),
        trust_anchor_ca_pem: None,
        trust_anchor_ca_file: Some(trust_anchor.cert_pem.clone()),
        profile_arn: profile_arn(),
        accept_role_session_name: false,
        role_arns: vec![access_role_arn(), bi_role_arn()],
        max_session_duration: Duration::from_secs(12 * 3600),
        cloudtrail_file: None,
        clusters: vec![ClusterSpec {
            identifier: CLUSTER.into(),
            region: REGION.into(),
            custom_domain_name: None,
            admin: admin.clone(),
            standin: cluster,
        }],
        workgroups: vec![WorkgroupSpec {
            name: WORKGROUP.into(),
            id: WORKGROUP_ID.into(),
            region: REGION.into(),
            custom_domain_name: None,
            admin,
            standin: workgroup,
        }],
        role_policies: BTreeMap::from([
            (access_role_arn(), policy.to_owned()),
            (bi_role_arn(), policy.to_owned()),
        ]),
    }
}

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

/// Where the PostgreSQL server is and how the emulator and the stand-ins administer it.
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

/// The ports of a stack: the proxy's three listeners (one per target) and the two
/// Redshift stand-ins (the proxy's configuration names them before they run).
#[derive(Debug, Clone, Copy)]
pub struct ListenerPorts {
    /// Target `cluster`: GetClusterCredentials with AutoCreate and DbGroups.
    pub cluster: u16,
    /// Target `cluster-iam`: GetClusterCredentialsWithIAM (user `IAMR:<role>`).
    pub cluster_iam: u16,
    /// Target `serverless`: redshift-serverless GetCredentials.
    pub serverless: u16,
    /// The stand-in of the cluster (targets `cluster` and `cluster-iam`).
    pub standin_cluster: u16,
    /// The stand-in of the serverless workgroup.
    pub standin_serverless: u16,
}

impl ListenerPorts {
    pub fn free() -> Self {
        ListenerPorts {
            cluster: free_port(),
            cluster_iam: free_port(),
            serverless: free_port(),
            standin_cluster: free_port(),
            standin_serverless: free_port(),
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
    /// TLS of the stand-ins: a certificate for `localhost`/127.0.0.1 from their own CA
    /// (the proxy's targets trust exactly that CA).
    pub standin_tls: StandInTls,
    /// The proxy's listener certificate (`localhost`, 127.0.0.1) and the client CRL every
    /// listener checks.
    pub server: ServerCert,
    pub crl: PathBuf,
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
        let standin_ca = pki.new_root_ca("Redshift stand-in CA", KeyAlgorithm::EcdsaP256)?;
        let standin_cert = standin_ca.server_cert(&["localhost", "127.0.0.1"])?;
        let standin_tls = StandInTls {
            cert_chain: standin_cert.chain_pem.clone(),
            key: standin_cert.key_pem.clone(),
            ca_cert: standin_ca.cert_pem.clone(),
        };

        let admin = PgAdmin::new(
            pg.socket_dir.to_string_lossy(),
            pg.port,
            pg.superuser.clone(),
        );
        let standin = |port: u16| StandInSpec {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            tls: Some(standin_tls.clone()),
            ..StandInSpec::default()
        };
        let emulator = emulator_config(
            &trust_anchor,
            admin,
            [
                standin(ports.standin_cluster),
                standin(ports.standin_serverless),
            ],
            &iam_policy(),
        );

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
# Two Redshift stand-ins (run by the AWS emulator, in front of one PostgreSQL) play a
# provisioned cluster and a serverless workgroup: TLS, md5 logins with the temporary
# passwords, Redshift's startup parameters and errors. Their certificate names `localhost`:
# the proxy dials 127.0.0.1 and verifies `host` (verify-full) against their CA.
# In production `host` is the cluster endpoint and `dial` an optional VPC endpoint.
[[target]]
name = "cluster"
{the_cluster}
auto_create = true
aws_endpoint_url = "{emulator_url}"

[[target]]
name = "cluster-iam"
{the_cluster}
with_iam = true
aws_endpoint_url = "{emulator_url}"

[[target]]
name = "serverless"
kind = "serverless"
host = "localhost"
port = {serverless_port}
dial = "127.0.0.1"
ca_bundle = {standin_ca:?}
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
groups = ["{GROUP}"]

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
            .map(|(target, port)| listener_toml(target, *port, target, &server, &pki, &crl))
            .collect::<Vec<_>>()
            .join("\n"),
            // Both cluster targets are the one cluster, through its stand-in.
            the_cluster = format!(
                "kind = \"provisioned\"\nhost = \"localhost\"\nport = {}\ndial = \"127.0.0.1\"\n\
                 ca_bundle = {:?}\ncluster_identifier = \"{CLUSTER}\"\nregion = \"{REGION}\"",
                ports.standin_cluster, standin_tls.ca_cert
            ),
            serverless_port = ports.standin_serverless,
            standin_ca = standin_tls.ca_cert,
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
            standin_tls,
            server,
            crl,
            ports,
            proxy_config,
            emulator,
        })
    }

    /// A `[[listener]]` table like the generated ones (the same certificate, client CA and
    /// CRL) named `name`, on `port`, to `target`.
    pub fn listener_toml(&self, name: &str, port: u16, target: &str) -> String {
        listener_toml(name, port, target, &self.server, &self.pki, &self.crl)
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

fn listener_toml(
    name: &str,
    port: u16,
    target: &str,
    server: &ServerCert,
    pki: &TestPki,
    crl: &Path,
) -> String {
    format!(
        "[[listener]]\nname = {name:?}\nbind = \"127.0.0.1:{port}\"\ntarget = {target:?}\n\
         tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\nclient_crls = [{crl:?}]\n",
        server.chain_pem,
        server.key_pem,
        pki.ca_cert_path(),
    )
}

/// Creates the `dev` database Redshift clusters come with, and the stack's database group
/// (`analysts`; DbGroups name existing groups).
pub async fn create_dev_database(pg: &PgServer) -> anyhow::Result<()> {
    let admin = pg.admin().await?;
    // Two statements: CREATE DATABASE cannot run inside the implicit transaction of a
    // multi-statement query.
    admin
        .batch_execute(&format!("create database {}", quote_ident(DATABASE)))
        .await?;
    admin
        .batch_execute(&format!("create role {} nologin", quote_ident(GROUP)))
        .await?;
    Ok(())
}

/// A running stack for tests: its own PostgreSQL (roles such as `IAMA:alice` and their
/// session groups live there, so stacks running in parallel must not share a server), the
/// emulator and its stand-ins in this process (so tests read its counters and records and
/// inject faults directly), and the proxy binary.
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
