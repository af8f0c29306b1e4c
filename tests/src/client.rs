//! Clients of the proxy as the tests use them: tokio-postgres over rustls with an optional
//! client certificate (verify-full for `localhost`), the TLS configuration behind it, and
//! the SQLSTATE of what failed.

use crate::pki::ClientCert;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;

/// tokio-postgres to a proxy listener on 127.0.0.1:`port`, verifying the proxy's
/// certificate for `localhost` against `ca`; `cert = None` presents no client certificate.
/// The connection task is spawned on the current runtime.
pub async fn connect(
    port: u16,
    ca: &Path,
    cert: Option<&ClientCert>,
    user: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = connect_config(port, user, database)
        .connect(tls_connector(ca, cert))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// [`connect`], returning the connection task too: its result shows a FATAL the proxy sends
/// outside any query (idle timeout, shutdown).
pub async fn connect_watched(
    port: u16,
    ca: &Path,
    cert: Option<&ClientCert>,
    user: &str,
    database: &str,
) -> Result<
    (
        tokio_postgres::Client,
        JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    tokio_postgres::Error,
> {
    let (client, connection) = connect_config(port, user, database)
        .connect(tls_connector(ca, cert))
        .await?;
    Ok((client, tokio::spawn(connection)))
}

/// The tokio-postgres configuration [`connect`] uses: `localhost` dialled at 127.0.0.1,
/// TLS required, a 20 s connect timeout.
pub fn connect_config(port: u16, user: &str, database: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(port)
        .user(user)
        .dbname(database)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    config
}

/// The TLS connector of [`connect`] (also what cancel tokens need).
pub fn tls_connector(
    ca: &Path,
    cert: Option<&ClientCert>,
) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(ca, cert))
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

/// The SQLSTATE and message of the ErrorResponse `e` carries (panics when it carries none).
pub fn error_response(e: &tokio_postgres::Error) -> (&str, &str) {
    let db = e.as_db_error().expect("an ErrorResponse");
    (db.code().code(), db.message())
}

/// `select current_user` on `client`.
pub async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("select current_user::text", &[])
        .await
        .expect("select current_user")
        .get(0)
}
