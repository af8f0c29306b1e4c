//! The benchmark's own stack: PostgreSQL with TLS, the AWS emulator in this process, the
//! proxy (release build) with the test kit's generated configuration, and PgBouncer.

use crate::bench::endpoint::{Endpoint, Target};
use crate::bench::link::DelayLink;
use crate::bench::pgbouncer::{PgBouncer, PgBouncerSpec};
use anyhow::Context as _;
use proxy_testkit::emulator::AwsEmulator;
use proxy_testkit::pg::{PgOptions, PgServer};
use proxy_testkit::pki::{ClientCert, ClientCertSpec};
use proxy_testkit::ports::free_port;
use proxy_testkit::proxy::ProxyProcess;
use proxy_testkit::stack::{
    create_dev_database, ListenerPorts, PgEndpoint, StackLayout, CLUSTER, DATABASE, REGION,
};
use proxy_testkit::standin::StaticUser;
use secrecy::SecretString;
use std::time::Duration;

/// Database user of the direct and PgBouncer paths.
pub const STATIC_USER: &str = "bench";
/// Identities `alice0` .. `alice9` (policy rule `analysts`: database user = CN).
pub const IDENTITIES: usize = 10;

/// How big the stack must be.
pub struct StackOptions {
    /// PostgreSQL `max_connections` (idle-session scale runs need thousands).
    pub max_connections: u32,
    /// Temporary credentials authenticate to the Redshift stand-in with Redshift's SHA-256
    /// digest (auth code 13) instead of md5 (the direct and PgBouncer paths stay md5).
    pub upstream_sha256: bool,
    /// Give the linked proxy path a second listener whose target has `session_reuse`
    /// (off for proxy binaries that predate the key).
    pub session_reuse_path: bool,
}

/// Which way a client crosses the delay link to the cluster's Redshift stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPath {
    /// Straight to the stand-in over the link: TLS verify-full, static md5 user.
    Direct,
    /// Through the proxy (default configuration of its target), which crosses the link.
    Proxy,
    /// Through the proxy to a target with `session_reuse = true`.
    ProxyReuse,
}

impl LinkPath {
    pub const ALL: [LinkPath; 3] = [LinkPath::Direct, LinkPath::Proxy, LinkPath::ProxyReuse];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkPath::Direct => "direct",
            LinkPath::Proxy => "proxy",
            LinkPath::ProxyReuse => "proxy, session reuse",
        }
    }
}

/// The proxy listeners whose targets dial the delay link.
struct LinkedListeners {
    proxy: u16,
    reuse: Option<u16>,
}

pub struct BenchStack {
    pub pg: PgServer,
    pub emulator: AwsEmulator,
    pub layout: StackLayout,
    proxy: Option<ProxyProcess>,
    pub pgbouncer: PgBouncer,
    /// The link between the middle and the cluster's stand-in (latency mode).
    pub link: DelayLink,
    linked: LinkedListeners,
    /// `alice0` .. `alice9`.
    pub identities: Vec<ClientCert>,
    password: SecretString,
    _dir: tempfile::TempDir,
}

impl BenchStack {
    pub async fn start(options: &StackOptions) -> anyhow::Result<BenchStack> {
        let pg = PgServer::start(PgOptions {
            max_connections: options.max_connections,
            startup_timeout: Duration::from_secs(120),
            extra_config: Vec::new(),
        })
        .context("starting PostgreSQL")?;
        create_dev_database(&pg).await?;
        prepare_database(&pg).await?;
        let password = random_password();
        pg.create_md5_user(STATIC_USER, secrecy::ExposeSecret::expose_secret(&password))
            .await?;
        let md5_secret: String = pg
            .admin()
            .await?
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&STATIC_USER],
            )
            .await?
            .get(0);

        let dir = tempfile::Builder::new().prefix("proxy-bench-").tempdir()?;
        let emulator_port = free_port();
        let url = format!("http://127.0.0.1:{emulator_port}");
        let mut layout = StackLayout::generate(
            &dir.path().join("stack"),
            &PgEndpoint::of(&pg),
            &url,
            ListenerPorts::free(),
        )?;
        // The proxy logs in to the cluster's Redshift stand-in (in this process, in front of
        // the same PostgreSQL) with md5, as Redshift authenticates IAM users, like the static
        // user of the direct and PgBouncer paths; `--upstream-auth sha256` makes the
        // stand-ins ask for Redshift's SHA-256 digest instead. The proxy path thus crosses
        // the stand-in's relay, a hop the direct and PgBouncer paths do not have.
        if options.upstream_sha256 {
            for spec in layout
                .emulator
                .clusters
                .iter_mut()
                .map(|c| &mut c.standin)
                .chain(
                    layout
                        .emulator
                        .workgroups
                        .iter_mut()
                        .map(|w| &mut w.standin),
                )
            {
                spec.sha256_users = vec!["*".to_owned()];
            }
        }
        // The direct client of latency mode logs in to the stand-in itself, as `bench` with
        // the same md5 verifier PostgreSQL stores (the stand-in then logs in to PostgreSQL
        // as `bench` over its unix socket), so both linked paths cross the same stand-in.
        for cluster in &mut layout.emulator.clusters {
            cluster.standin.static_users.push(StaticUser {
                name: STATIC_USER.into(),
                verifier: md5_secret.clone(),
            });
        }
        let link = DelayLink::start(([127, 0, 0, 1], layout.ports.standin_cluster).into())
            .await
            .context("starting the delay link")?;
        let linked = LinkedListeners {
            proxy: free_port(),
            reuse: options.session_reuse_path.then(free_port),
        };
        layout
            .proxy_config
            .push_str(&linked_config(&layout, &url, &link, &linked));
        let emulator = AwsEmulator::start_on(
            layout.emulator.clone(),
            ([127, 0, 0, 1], emulator_port).into(),
        )
        .await?;
        let identities = (0..IDENTITIES)
            .map(|i| {
                layout
                    .pki
                    .client_cert(ClientCertSpec::new(format!("alice{i}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let bouncer_cert = layout.pki.server_cert(&["localhost", "127.0.0.1"])?;
        let pgbouncer = PgBouncer::start(&PgBouncerSpec {
            dir: &dir.path().join("pgbouncer"),
            pg_port: pg.port(),
            pg_ca: pg.ca_cert_path(),
            server_cert_chain: &bouncer_cert.chain_pem,
            server_key: &bouncer_cert.key_pem,
            client_ca: layout.pki.ca_cert_path(),
            database: DATABASE,
            user: STATIC_USER,
            md5_secret: &md5_secret,
            max_client_conn: 500,
            pool_size: 32,
        })?;

        let mut stack = BenchStack {
            pg,
            emulator,
            layout,
            proxy: None,
            pgbouncer,
            link,
            linked,
            identities,
            password,
            _dir: dir,
        };
        stack.restart_proxy().await?;
        Ok(stack)
    }

    /// Stops the proxy if it runs and starts a fresh one (empty credential caches).
    pub async fn restart_proxy(&mut self) -> anyhow::Result<()> {
        if let Some(proxy) = self.proxy.take() {
            proxy.stop()?;
        }
        let proxy = ProxyProcess::builder(self.layout.proxy_config.clone(), &self.layout.dir)
            .wait_for_port(self.layout.ports.cluster)
            .startup_timeout(Duration::from_secs(30))
            .start()
            .await?;
        self.proxy = Some(proxy);
        Ok(())
    }

    pub fn proxy_pid(&self) -> anyhow::Result<u32> {
        self.proxy
            .as_ref()
            .map(ProxyProcess::pid)
            .context("the proxy is not running")
    }

    pub fn proxy_logs(&self) -> String {
        self.proxy
            .as_ref()
            .map(ProxyProcess::logs)
            .unwrap_or_default()
    }

    /// The process doing the work between client and PostgreSQL, if any.
    pub fn middle_pid(&self, target: Target) -> anyhow::Result<Option<u32>> {
        match target {
            Target::Direct => Ok(None),
            Target::Proxy => self.proxy_pid().map(Some),
            Target::Pgbouncer => Ok(self.pgbouncer.pid()),
        }
    }

    /// How a client reaches PostgreSQL through `target`; proxy and PgBouncer clients
    /// present `alice0`'s certificate.
    pub fn endpoint(&self, target: Target) -> Endpoint {
        let alice = &self.identities[0];
        let cert = Some((alice.chain_pem.clone(), alice.key_pem.clone()));
        match target {
            Target::Direct => Endpoint {
                target,
                port: self.pg.port(),
                user: STATIC_USER.into(),
                database: DATABASE.into(),
                root_cert: self.pg.ca_cert_path().to_path_buf(),
                client_cert: None,
                password: Some(self.password.clone()),
            },
            Target::Proxy => Endpoint {
                target,
                port: self.layout.ports.cluster,
                user: alice.common_name.clone(),
                database: DATABASE.into(),
                root_cert: self.layout.pki.ca_cert_path().to_path_buf(),
                client_cert: cert,
                password: None,
            },
            Target::Pgbouncer => Endpoint {
                target,
                port: self.pgbouncer.port,
                user: STATIC_USER.into(),
                database: DATABASE.into(),
                root_cert: self.layout.pki.ca_cert_path().to_path_buf(),
                client_cert: cert,
                password: Some(self.password.clone()),
            },
        }
    }

    /// The proxy endpoint as identity `i` (`alice<i>`).
    pub fn proxy_endpoint_as(&self, i: usize) -> Endpoint {
        let cert = &self.identities[i % self.identities.len()];
        self.endpoint(Target::Proxy).as_identity(
            &cert.common_name,
            (cert.chain_pem.clone(), cert.key_pem.clone()),
        )
    }
}

impl BenchStack {
    /// How a client reaches the cluster's stand-in across the delay link; `None` for the
    /// session-reuse path when the stack has none. Proxy clients present `alice0`'s
    /// certificate.
    pub fn link_endpoint(&self, path: LinkPath) -> Option<Endpoint> {
        let proxy = self.endpoint(Target::Proxy);
        match path {
            LinkPath::Direct => Some(Endpoint {
                target: Target::Direct,
                port: self.link.addr().port(),
                user: STATIC_USER.into(),
                database: DATABASE.into(),
                root_cert: self.layout.standin_tls.ca_cert.clone(),
                client_cert: None,
                password: Some(self.password.clone()),
            }),
            LinkPath::Proxy => Some(Endpoint {
                port: self.linked.proxy,
                ..proxy
            }),
            LinkPath::ProxyReuse => self.linked.reuse.map(|port| Endpoint { port, ..proxy }),
        }
    }
}

/// Listeners and targets of latency mode, appended to the generated configuration: copies
/// of target `cluster` (same stand-in, same credentials) that dial the delay link, one
/// with its defaults and one with session reuse.
fn linked_config(
    layout: &StackLayout,
    emulator_url: &str,
    link: &DelayLink,
    linked: &LinkedListeners,
) -> String {
    let target = |name: &str, extra: &str| {
        format!(
            "\n[[target]]\nname = {name:?}\nkind = \"provisioned\"\nhost = \"localhost\"\n\
             port = {port}\ndial = \"{dial}\"\nca_bundle = {ca:?}\n\
             cluster_identifier = \"{CLUSTER}\"\nregion = \"{REGION}\"\nauto_create = true\n\
             aws_endpoint_url = \"{emulator_url}\"\n{extra}",
            port = layout.ports.standin_cluster,
            dial = link.addr(),
            ca = layout.standin_tls.ca_cert,
        )
    };
    let mut out =
        String::from("\n# --- Latency mode of the benchmark: targets across the delay link ---\n");
    out.push_str(&layout.listener_toml("linked", linked.proxy, "linked"));
    out.push_str(&target("linked", ""));
    if let Some(port) = linked.reuse {
        out.push('\n');
        out.push_str(&layout.listener_toml("linked-reuse", port, "linked-reuse"));
        out.push_str(&target("linked-reuse", "session_reuse = true\n"));
    }
    out
}

/// pgbench's tables (scale 1) in `dev`, readable by everyone: the proxy's database users
/// are created by the emulator on first login.
async fn prepare_database(pg: &PgServer) -> anyhow::Result<()> {
    let bindir = pg.bindir();
    let output = tokio::process::Command::new(bindir.join("pgbench"))
        .args(["-i", "-s", "1", "-q", "-h"])
        .arg(pg.socket_dir())
        .args(["-p", &pg.port().to_string(), "-U", pg.superuser(), DATABASE])
        .env("PGPASSFILE", "/dev/null")
        .output()
        .await
        .context("running pgbench -i")?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The superuser over the unix socket, in `dev` (PgServer::admin is in `postgres`).
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(pg.socket_dir())
        .port(pg.port())
        .user(pg.superuser())
        .dbname(DATABASE)
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to dev as the superuser")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC")
        .await?;
    // Its own statement: VACUUM cannot run in the implicit transaction of a batch.
    client.batch_execute("VACUUM ANALYZE").await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

fn random_password() -> SecretString {
    let bytes: [u8; 18] = rand::random();
    SecretString::from(hex::encode(bytes))
}
