//! An in-process proxy for end-to-end tests of the session path.
//!
//! The proxy runs inside the test process with a [`TestCredentials`] source: database
//! logins for PostgreSQL users the test created itself (the product ships no such source;
//! Redshift credentials are tested against the AWS emulator). Everything else is real: the
//! proxy's listeners, client TLS with certificates from a per-run CA, verify-full TLS to a
//! real PostgreSQL server, and real clients (psql, tokio-postgres).

use crate::pg::PgServer;
use crate::pki::{ClientCert, ClientCertSpec, TestPki};
use async_trait::async_trait;
use proxy_auth::db_credentials::{
    CredentialError, DbCredential, DbCredentialRequest, DbCredentialSource,
};
use redshift_iam_proxy::server::{Proxy, RunningProxy};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Database logins the test provisioned, served by granted database user.
#[derive(Default)]
pub struct TestCredentials {
    logins: Mutex<HashMap<String, (String, VecDeque<String>)>>,
    calls: AtomicUsize,
    invalidations: AtomicUsize,
    /// Injected failures and delays by database user (fault injection for the
    /// adversarial suite: what a real source reports when AWS throttles, fails or hangs).
    faults: Mutex<HashMap<String, CredentialFault>>,
}

/// A fault [`TestCredentials`] injects for one database user.
#[derive(Debug, Clone)]
pub enum CredentialFault {
    /// Every request fails with this error.
    Fail(CredentialError),
    /// Every request waits this long before being answered normally.
    Delay(Duration),
}

impl TestCredentials {
    /// Grants named `db_user` log in upstream as `pg_user` with `password`.
    pub fn set(&self, db_user: &str, pg_user: &str, password: &str) {
        self.logins.lock().unwrap().insert(
            db_user.to_string(),
            (pg_user.to_string(), VecDeque::from([password.to_string()])),
        );
    }

    /// The next credential for `db_user` carries `stale`; after the proxy invalidates it,
    /// the real password is served again (a rotated password behind a cache).
    pub fn serve_stale_once(&self, db_user: &str, stale: &str) {
        if let Some((_, passwords)) = self.logins.lock().unwrap().get_mut(db_user) {
            passwords.push_front(stale.to_string());
        }
    }

    /// Injects `fault` for every later request for `db_user` (until [`Self::clear_fault`]).
    pub fn inject(&self, db_user: &str, fault: CredentialFault) {
        self.faults
            .lock()
            .unwrap()
            .insert(db_user.to_string(), fault);
    }

    pub fn clear_fault(&self, db_user: &str) {
        self.faults.lock().unwrap().remove(db_user);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn invalidations(&self) -> usize {
        self.invalidations.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl DbCredentialSource for TestCredentials {
    async fn credential(
        &self,
        request: &DbCredentialRequest,
        _requester: &str,
    ) -> Result<DbCredential, CredentialError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fault = self.faults.lock().unwrap().get(&request.db_user).cloned();
        match fault {
            Some(CredentialFault::Fail(e)) => return Err(e),
            Some(CredentialFault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        let logins = self.logins.lock().unwrap();
        let (user, passwords) = logins.get(&request.db_user).ok_or_else(|| {
            CredentialError::Denied(format!("no test login for {:?}", request.db_user))
        })?;
        Ok(DbCredential {
            user: user.clone(),
            password: SecretString::from(passwords.front().cloned().unwrap_or_default()),
            expiration: SystemTime::now() + Duration::from_secs(900),
            aws_request_ids: vec!["test-request".into()],
        })
    }

    fn invalidate(&self, request: &DbCredentialRequest, _refused: &DbCredential) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        if let Some((_, passwords)) = self.logins.lock().unwrap().get_mut(&request.db_user) {
            if passwords.len() > 1 {
                passwords.pop_front();
            }
        }
    }
}

/// The client certificates every harness issues before the proxy loads its CRL.
pub struct Clients {
    pub alice: ClientCert,
    pub bob: ClientCert,
    pub expired: ClientCert,
    pub not_yet_valid: ClientCert,
    pub revoked: ClientCert,
    pub server_auth_only: ClientCert,
    pub other_ca: ClientCert,
}

/// Default policy: `alice*` may be `{cn}` or `reporting` on any database; `bob` only `bob`
/// on `analytics`.
pub const DEFAULT_RULES: &str = r#"
[[policy.rule]]
name = "analysts"
match = { cn = "alice*" }
targets = ["*"]
users = ["{cn}", "reporting"]
default_user = "{cn}"
databases = ["*"]
groups = ["analysts"]

[[policy.rule]]
name = "bob"
match = { cn = "bob" }
targets = ["pg"]
users = ["bob"]
databases = ["analytics"]
"#;

/// What to vary between harnesses.
pub struct HarnessOptions {
    /// `[[policy.rule]]` tables.
    pub rules: String,
    /// Extra keys appended to the `[[target]]` table.
    pub target_extra: String,
    /// Upstream CA bundle; default: the PostgreSQL server's CA.
    pub upstream_ca: Option<PathBuf>,
    /// Host name the upstream certificate is verified against.
    pub upstream_host: String,
    pub login_timeout: Duration,
    /// Upstream PostgreSQL server; default: the shared one. Tests that stop or restart
    /// their upstream need a dedicated server of their own.
    pub pg: Option<&'static PgServer>,
    /// Port the proxy dials instead of the PostgreSQL server's: a scripted fake upstream
    /// on 127.0.0.1 (pair with `upstream_ca`).
    pub upstream_port: Option<u16>,
    /// Extra top-level tables (`[limits]`, `[admin]`, `[shutdown]`, `[audit]`). Without an
    /// `[audit]` table, audit records go to [`ProxyHarness::audit_path`].
    pub extra_config: String,
    /// Extra keys and sub-tables (`[[listener.certificates]]`) appended to the `[[listener]]`.
    pub listener_extra: String,
    /// More `[[listener]]` tables after the `test` listener. `{tls_cert}` and `{tls_key}`
    /// in the text become the (quoted) paths of the proxy's server certificate and key.
    pub extra_listeners: String,
    /// The proxy's database credential source instead of [`ProxyHarness::credentials`]
    /// (e.g. the Redshift credential cache against the AWS emulator).
    pub credentials: Option<Arc<dyn DbCredentialSource>>,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            rules: DEFAULT_RULES.to_string(),
            target_extra: String::new(),
            upstream_ca: None,
            upstream_host: "localhost".into(),
            login_timeout: Duration::from_secs(5),
            pg: None,
            upstream_port: None,
            extra_config: String::new(),
            listener_extra: String::new(),
            extra_listeners: String::new(),
            credentials: None,
        }
    }
}

/// A running in-process proxy in front of the shared PostgreSQL server.
pub struct ProxyHarness {
    pub pg: &'static PgServer,
    pub pki: TestPki,
    pub clients: Clients,
    pub credentials: Arc<TestCredentials>,
    pub running: RunningProxy,
    pub config_path: PathBuf,
    /// Where the audit records go unless `extra_config` has its own `[audit]` table.
    pub audit_path: PathBuf,
    /// The proxy's server certificate and key (rewrite them, then reload).
    pub server_cert: crate::pki::ServerCert,
    _dir: tempfile::TempDir,
}

impl ProxyHarness {
    pub async fn start() -> ProxyHarness {
        Self::start_with(HarnessOptions::default()).await
    }

    pub async fn start_with(options: HarnessOptions) -> ProxyHarness {
        let pg = options.pg.unwrap_or_else(PgServer::shared);
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(dir.path().join("pki")).expect("test PKI");
        let server = pki
            .server_cert(&["localhost", "127.0.0.1"])
            .expect("proxy server certificate");
        let other = pki
            .new_root_ca("Other Client CA", Default::default())
            .expect("other CA");
        let clients = Clients {
            alice: pki
                .client_cert(
                    ClientCertSpec::new("alice")
                        .uri("spiffe://corp.example/ns/bi/sa/alice")
                        .email("alice@corp.example"),
                )
                .unwrap(),
            bob: pki.client_cert(ClientCertSpec::new("bob")).unwrap(),
            expired: pki
                .client_cert(ClientCertSpec::new("alice-expired").expired())
                .unwrap(),
            not_yet_valid: pki
                .client_cert(ClientCertSpec::new("alice-early").not_yet_valid())
                .unwrap(),
            revoked: pki
                .client_cert(ClientCertSpec::new("alice-revoked").revoked())
                .unwrap(),
            server_auth_only: pki
                .client_cert(ClientCertSpec::new("alice-server").server_auth_only())
                .unwrap(),
            other_ca: other
                .client_cert(ClientCertSpec::new("alice-other"))
                .unwrap(),
        };
        let crl = pki.root().crl_pem().expect("CRL");
        let upstream_ca = options
            .upstream_ca
            .clone()
            .unwrap_or_else(|| pg.ca_cert_path().to_path_buf());
        let audit_path = dir.path().join("audit.jsonl");
        let audit = if options.extra_config.contains("[audit]") {
            String::new()
        } else {
            format!("[audit]\npath = {audit_path:?}\n")
        };
        let config = format!(
            r#"
[log]
level = "debug"

{audit}
{extra_config}

[[listener]]
name = "test"
bind = "127.0.0.1:0"
tls_cert = {chain:?}
tls_key = {key:?}
client_ca = {ca:?}
client_crls = [{crl:?}]
login_timeout = "{login_timeout}ms"
{listener_extra}

{extra_listeners}

[[target]]
name = "pg"
kind = "provisioned"
host = {host:?}
port = {port}
dial = "127.0.0.1"
ca_bundle = {upstream_ca:?}
cluster_identifier = "test-cluster"
region = "us-east-1"
connect_timeout = "3s"
login_timeout = "5s"
{target_extra}

{rules}
"#,
            chain = server.chain_pem,
            key = server.key_pem,
            ca = pki.ca_cert_path(),
            login_timeout = options.login_timeout.as_millis(),
            host = options.upstream_host,
            port = options.upstream_port.unwrap_or_else(|| pg.port()),
            target_extra = options.target_extra,
            rules = options.rules,
            extra_config = options.extra_config,
            listener_extra = options.listener_extra,
            extra_listeners = options
                .extra_listeners
                .replace("{tls_cert}", &format!("{:?}", server.chain_pem))
                .replace("{tls_key}", &format!("{:?}", server.key_pem)),
        );
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, &config).unwrap();
        let parsed = proxy_config::Config::load(&config_path).expect("valid test config");
        let credentials = Arc::new(TestCredentials::default());
        let source = options
            .credentials
            .clone()
            .unwrap_or_else(|| credentials.clone());
        let proxy = Proxy::new(&parsed, source)
            .expect("proxy setup")
            .with_config_path(&config_path, Default::default());
        let running = proxy.bind().await.expect("proxy binds");
        ProxyHarness {
            pg,
            pki,
            clients,
            credentials,
            running,
            config_path,
            audit_path,
            server_cert: server,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// The address of the TCP listener named `name`.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.running
            .local_addrs()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no TCP listener named {name:?}"))
    }

    /// Creates a SCRAM user in PostgreSQL and lets the proxy use it for `db_user`.
    pub async fn provision(&self, db_user: &str) -> String {
        let pg_user = PgServer::unique_name(db_user);
        let password = PgServer::unique_name("pw");
        self.pg
            .create_scram_user(&pg_user, &password)
            .await
            .expect("create user");
        self.credentials.set(db_user, &pg_user, &password);
        pg_user
    }

    /// psql pointed at the proxy with `cert` (verify-full against the proxy's CA).
    pub fn psql(&self, cert: &ClientCert) -> crate::psql::Psql {
        crate::psql::Psql::new("localhost", self.addr().port())
            .hostaddr("127.0.0.1")
            .root_cert(self.pki.ca_cert_path())
            .client(cert)
    }

    /// tokio-postgres through the proxy; `cert = None` presents no client certificate.
    pub async fn connect(
        &self,
        cert: Option<&ClientCert>,
        user: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect_through_proxy(
            self.addr().port(),
            self.pki.ca_cert_path(),
            cert,
            user,
            database,
        )
        .await
    }

    /// The TLS connector clients use, for cancel tokens.
    pub fn tls_connector(
        &self,
        cert: Option<&ClientCert>,
    ) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(self.pki.ca_cert_path(), cert))
    }
}

/// tokio-postgres to a proxy listener on 127.0.0.1:`port`, verifying the proxy's
/// certificate for `localhost` against `ca`; `cert = None` presents no client certificate.
/// The connection task is spawned on the current runtime.
pub async fn connect_through_proxy(
    port: u16,
    ca: &Path,
    cert: Option<&ClientCert>,
    user: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(port)
        .user(user)
        .dbname(database)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(ca, cert));
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A rustls client configuration trusting `ca`, presenting `cert` if given.
pub fn client_tls(ca: &Path, cert: Option<&ClientCert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA certificate")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match cert {
        Some(cert) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&cert.chain_pem)
                    .expect("client chain")
                    .collect::<Result<_, _>>()
                    .expect("client chain");
            let key = PrivateKeyDer::from_pem_file(&cert.key_pem).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    }
}

/// The SQLSTATE of a failed connection or query, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

impl crate::adversary::ProxyUnderTest for ProxyHarness {
    fn addr(&self) -> SocketAddr {
        ProxyHarness::addr(self)
    }
    fn ca(&self) -> &Path {
        self.pki.ca_cert_path()
    }
}
