//! Self-test of the test kit: the PostgreSQL stand-in behaves like Redshift where the proxy
//! relies on it, and the test PKI issues certificates with the properties it claims.

use std::sync::Arc;

use proxy_testkit::pg::PgServer;
use proxy_testkit::pki::{ClientCert, ClientCertSpec, KeyAlgorithm, TestPki};
use proxy_testkit::ports::free_port;
use proxy_testkit::proxy::{find_proxy_binary, ProxyError, ProxyProcess, BINARY_NAME};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

const PASSWORD: &str = "correct horse battery staple";

async fn scram_user(pg: &PgServer) -> String {
    let user = PgServer::unique_name("scram");
    pg.create_scram_user(&user, PASSWORD).await.unwrap();
    user
}

#[tokio::test]
async fn scram_user_logs_in_over_tls() {
    let pg = PgServer::shared();
    let user = scram_user(pg).await;

    let client = pg.connect_tls(&user, PASSWORD, "postgres").await.unwrap();
    let row = client
        .query_one(
            "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    assert!(row.get::<_, bool>(1), "session is not encrypted");

    let stored: String = pg
        .admin()
        .await
        .unwrap()
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
}

#[tokio::test]
async fn md5_user_logs_in_over_tls_with_md5_auth() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("md5");
    pg.create_md5_user(&user, PASSWORD).await.unwrap();

    let client = pg.connect_tls(&user, PASSWORD, "postgres").await.unwrap();
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, user);

    let stored: String = pg
        .admin()
        .await
        .unwrap()
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"), "{stored}");

    let wrong = pg.connect_tls(&user, "wrong password", "postgres").await;
    assert!(wrong.is_err(), "a wrong md5 password was accepted");
}

#[tokio::test]
async fn psql_logs_in_with_verify_full() {
    let pg = PgServer::shared();
    let scram = scram_user(pg).await;
    let md5 = PgServer::unique_name("md5psql");
    pg.create_md5_user(&md5, PASSWORD).await.unwrap();
    let db = PgServer::unique_name("db");
    pg.create_database(&db).await.unwrap();

    for user in [&scram, &md5] {
        let out = pg
            .psql()
            .user(user)
            .dbname(&db)
            .password(PASSWORD)
            .run("SELECT current_user, current_database(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert!(out.success(), "psql as {user} failed: {}", out.stderr);
        assert_eq!(out.rows(), vec![format!("{user}|{db}|t")]);
    }
}

#[tokio::test]
async fn psql_verify_full_rejects_a_server_from_another_ca() {
    let pg = PgServer::shared();
    let user = scram_user(pg).await;
    let dir = tempfile::tempdir().unwrap();
    let other = TestPki::new(dir.path()).unwrap();

    let out = pg
        .psql()
        .root_cert(other.ca_cert_path())
        .user(&user)
        .dbname("postgres")
        .password(PASSWORD)
        .run("SELECT 1")
        .await
        .unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("certificate verify failed"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn plaintext_tcp_is_refused() {
    let pg = PgServer::shared();
    let user = scram_user(pg).await;

    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pg.port())
        .user(&user)
        .password(PASSWORD)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let Err(err) = config.connect(tokio_postgres::NoTls).await else {
        panic!("a plaintext login was accepted");
    };
    let db_error = err.as_db_error().expect("a server error");
    assert_eq!(
        db_error.code(),
        &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    assert!(
        db_error.message().contains("no encryption"),
        "{}",
        db_error.message()
    );
}

#[tokio::test]
async fn password_valid_until_in_the_past_refuses_login() {
    let pg = PgServer::shared();
    let user = PgServer::unique_name("expired");
    pg.create_md5_user(&user, PASSWORD).await.unwrap();
    pg.connect_tls(&user, PASSWORD, "postgres").await.unwrap();

    pg.admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER ROLE {} VALID UNTIL '2000-01-01 00:00:00+00'",
            proxy_testkit::pg::quote_ident(&user)
        ))
        .await
        .unwrap();

    let err = pg
        .connect_tls(&user, PASSWORD, "postgres")
        .await
        .unwrap_err();
    let source = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
        .expect("a server error");
    assert_eq!(
        source.code(),
        &tokio_postgres::error::SqlState::INVALID_PASSWORD
    );
}

/// Verifies client certificates the way the proxy will: rustls' WebPKI verifier with the
/// root CA as trust anchor and optional CRLs.
fn verify_client(
    pki: &TestPki,
    cert: &ClientCert,
    crls: &[&std::path::Path],
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_cert_path()).unwrap())
        .unwrap();
    let crls = crls
        .iter()
        .map(|path| CertificateRevocationListDer::from_pem_file(path).unwrap())
        .collect::<Vec<_>>();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .build()
        .unwrap();
    let mut chain = CertificateDer::pem_file_iter(&cert.chain_pem)
        .unwrap()
        .map(Result::unwrap);
    let leaf = chain.next().unwrap();
    let intermediates: Vec<_> = chain.collect();
    verifier
        .verify_client_cert(&leaf, &intermediates, UnixTime::now())
        .map(|_| ())
}

#[test]
fn client_certificates_have_the_claimed_properties() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();

    let alice = pki
        .client_cert(
            ClientCertSpec::new("alice")
                .organizational_unit("bi")
                .uri("spiffe://corp.example/ns/bi/sa/alice")
                .dns("alice.corp.example")
                .email("alice@corp.example"),
        )
        .unwrap();
    verify_client(&pki, &alice, &[]).unwrap();
    let (_, parsed) = X509Certificate::from_der(&alice.cert_der).unwrap();
    assert_eq!(
        parsed.subject().to_string(),
        "O=Redshift IAM Proxy Tests, OU=bi, CN=alice"
    );
    assert_eq!(
        parsed.issuer().to_string(),
        "O=Redshift IAM Proxy Tests, CN=Test Root CA"
    );
    assert_eq!(parsed.raw_serial(), alice.serial.as_bytes());
    assert_eq!(parsed.serial.to_string(), alice.serial.to_decimal());
    let sans = parsed.subject_alternative_name().unwrap().unwrap();
    let sans: Vec<String> = sans
        .value
        .general_names
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        sans,
        [
            "DNSName(alice.corp.example)",
            "URI(spiffe://corp.example/ns/bi/sa/alice)",
            "RFC822Name(alice@corp.example)"
        ]
    );
    // The PKCS#8 DER copy is the same key as the PEM.
    let pem_key = rustls_pki_types::PrivateKeyDer::from_pem_file(&alice.key_pem).unwrap();
    assert_eq!(
        pem_key.secret_der(),
        std::fs::read(&alice.key_pk8_der).unwrap()
    );
    for key in [&alice.key_pem, &alice.key_pk8_der] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

#[test]
fn bad_client_certificates_are_rejected_for_the_claimed_reason() {
    use rustls::CertificateError as E;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let reject =
        |cert: &ClientCert, crls: &[&std::path::Path]| match verify_client(&pki, cert, crls) {
            Err(rustls::Error::InvalidCertificate(e)) => e,
            other => panic!("{} was not rejected: {other:?}", cert.common_name),
        };

    let expired = pki
        .client_cert(ClientCertSpec::new("old").expired())
        .unwrap();
    assert!(matches!(reject(&expired, &[]), E::ExpiredContext { .. }));

    let early = pki
        .client_cert(ClientCertSpec::new("early").not_yet_valid())
        .unwrap();
    assert!(matches!(reject(&early, &[]), E::NotValidYetContext { .. }));

    let server_only = pki
        .client_cert(ClientCertSpec::new("srv").server_auth_only())
        .unwrap();
    assert!(matches!(
        reject(&server_only, &[]),
        E::InvalidPurposeContext { .. }
    ));

    let rogue = pki
        .new_root_ca("Rogue CA", KeyAlgorithm::EcdsaP256)
        .unwrap();
    let mallory = rogue.client_cert(ClientCertSpec::new("mallory")).unwrap();
    assert_eq!(reject(&mallory, &[]), E::UnknownIssuer);

    let revoked = pki
        .client_cert(ClientCertSpec::new("gone").revoked())
        .unwrap();
    let crl = revoked.crl_pem.clone().expect("a CRL");
    assert_eq!(reject(&revoked, &[&crl]), E::Revoked);
    // Only the revoked serial is listed: another certificate passes the same CRL.
    let fine = pki.client_cert(ClientCertSpec::new("fine")).unwrap();
    verify_client(&pki, &fine, &[&crl]).unwrap();
}

#[test]
fn intermediate_ca_chains_and_key_algorithms_verify() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path()).unwrap();
    let sub = pki
        .root()
        .intermediate("Sub CA", KeyAlgorithm::EcdsaP384)
        .unwrap();
    for key in [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let cert = sub
            .client_cert(ClientCertSpec::new("bob").key(key))
            .unwrap();
        verify_client(&pki, &cert, &[]).unwrap_or_else(|e| panic!("{key:?}: {e}"));
        let chain = CertificateDer::pem_file_iter(&cert.chain_pem)
            .unwrap()
            .count();
        assert_eq!(chain, 2, "leaf + intermediate");
    }
    // Revocation by the intermediate is honoured too. The verifier checks every chain
    // link, so it also needs the root's (empty) CRL covering the intermediate.
    let carol = sub.client_cert(ClientCertSpec::new("carol")).unwrap();
    let root_crl = pki.root().crl_pem().unwrap();
    let sub_crl = sub.revoke(&carol.serial).unwrap();
    assert_eq!(
        verify_client(&pki, &carol, &[&root_crl, &sub_crl]),
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Revoked
        ))
    );
}

#[tokio::test]
async fn proxy_launcher_reports_a_proxy_that_exits_during_startup() {
    // `cargo test --workspace` builds the binary (the proxy package has integration tests).
    assert!(
        find_proxy_binary().is_some(),
        "{BINARY_NAME} is not built: run `cargo build -p redshift-iam-proxy`"
    );
    let dir = tempfile::tempdir().unwrap();
    let result = ProxyProcess::builder("this is = not [valid toml", dir.path())
        .wait_for_port(free_port())
        .startup_timeout(std::time::Duration::from_secs(10))
        .start()
        .await;
    match result {
        Err(ProxyError::Exited { .. }) => {}
        other => panic!("expected an exit during startup, got {other:?}"),
    }
}
