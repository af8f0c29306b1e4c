//! The three ways a client reaches PostgreSQL in the benchmark, and how each client
//! program (libpq through environment variables; tokio-postgres) is pointed at them.

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// TLS straight to PostgreSQL with a static SCRAM user.
    Direct,
    /// redshift-iam-proxy: client certificate in, temporary credentials out.
    Proxy,
    /// PgBouncer in session mode, TLS on both sides.
    Pgbouncer,
}

impl Target {
    /// Run order within a round (A B C A B C ...).
    pub const ALL: [Target; 3] = [Target::Direct, Target::Proxy, Target::Pgbouncer];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Proxy => "proxy",
            Target::Pgbouncer => "pgbouncer",
        }
    }
}

/// Where and as whom a client connects: always host `localhost` verified with
/// `sslmode=verify-full`, dialled at 127.0.0.1.
#[derive(Clone)]
pub struct Endpoint {
    pub target: Target,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// CA that issued the certificate of whatever listens on `port`.
    pub root_cert: PathBuf,
    /// Client certificate chain and key, when the endpoint wants one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub password: Option<SecretString>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("client_cert", &self.client_cert)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Endpoint {
    /// The same endpoint as another identity (client certificate and user name).
    pub fn as_identity(&self, user: &str, cert: (PathBuf, PathBuf)) -> Endpoint {
        Endpoint {
            user: user.to_string(),
            client_cert: Some(cert),
            ..self.clone()
        }
    }

    /// Points a libpq program (psql, pgbench) at this endpoint through `PG*` variables,
    /// after removing any the caller's shell set.
    pub fn libpq_env(&self, command: &mut tokio::process::Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        command
            .env("PGHOST", "localhost")
            .env("PGHOSTADDR", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGSSLMODE", "verify-full")
            .env("PGSSLROOTCERT", &self.root_cert)
            .env("PGCONNECT_TIMEOUT", "10")
            // Only what the benchmark configured may be sent.
            .env("PGPASSFILE", "/dev/null");
        match &self.client_cert {
            Some((cert, key)) => {
                command.env("PGSSLCERT", cert).env("PGSSLKEY", key);
            }
            None => {
                // Not ~/.postgresql/postgresql.crt either: libpq skips a missing file.
                command.env("PGSSLCERT", "/nonexistent/bench-no-client-cert.crt");
            }
        }
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password.expose_secret());
        }
    }

    /// A tokio-postgres client (rustls) for this endpoint.
    pub fn connector(&self) -> anyhow::Result<Connector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.root_cert)
            .with_context(|| format!("reading {}", self.root_cert.display()))?
        {
            roots.add(cert.context("parsing a CA certificate")?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let tls = match &self.client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading the key {}", key.display()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = tokio_postgres::Config::new();
        config
            .host("localhost")
            .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(20));
        if let Some(password) = &self.password {
            config.password(password.expose_secret());
        }
        Ok(Connector {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        })
    }
}

/// Opens tokio-postgres sessions to one endpoint.
#[derive(Clone)]
pub struct Connector {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Connector {
    /// Logs in (TCP, TLS, startup, authentication, up to ReadyForQuery). The connection
    /// task runs on the current runtime until the client is dropped.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}
