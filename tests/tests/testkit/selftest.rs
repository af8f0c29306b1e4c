//! Self-test of the test kit: the PostgreSQL server behaves as the direct-to-PostgreSQL tests
//! need, the Redshift stand-in behaves like Redshift at login (research
//! redshift-server.md), and the test PKI issues certificates with the properties it claims.

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

/// What PostgreSQL stores as `user`'s password (its verifier or md5 hash).
async fn stored_password(pg: &PgServer, user: &str) -> String {
    pg.admin()
        .await
        .unwrap()
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
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

    let stored = stored_password(pg, &user).await;
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

    let stored = stored_password(pg, &user).await;
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

// ---- the Redshift stand-in ----------------------------------------------------------------

mod standin {
    use super::PASSWORD;
    use proxy_testkit::adversary::{message, startup_text, PROTOCOL_3_0};
    use proxy_testkit::emulator::PgAdmin;
    use proxy_testkit::pg::{quote_ident, PgServer};
    use proxy_testkit::pki::TestPki;
    use proxy_testkit::standin::{
        AuthMethod, CredentialRequest, IssuedCredentials, LoginOutcome, StandIn, StandInConfig,
        StandInTls, StaticUser, StoredVerifier, TargetId,
    };
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::Arc;
    use time::OffsetDateTime;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    const CLUSTER: &str = "selftest";

    struct Fixture {
        standin: StandIn,
        issued: Arc<IssuedCredentials>,
        /// Static users: (name, md5 user, sha256 user).
        md5_user: String,
        sha256_user: String,
        _dir: tempfile::TempDir,
    }

    async fn create_role(pg: &PgServer, role: &str) {
        pg.admin()
            .await
            .unwrap()
            .batch_execute(&format!("CREATE ROLE {} LOGIN", quote_ident(role)))
            .await
            .unwrap();
    }

    impl Fixture {
        async fn start() -> Fixture {
            let pg = PgServer::shared();
            let dir = tempfile::tempdir().unwrap();
            let pki = TestPki::new(dir.path()).unwrap();
            let cert = pki.server_cert(&["localhost", "127.0.0.1"]).unwrap();
            let md5_user = PgServer::unique_name("static_md5");
            let sha256_user = PgServer::unique_name("static_sha");
            create_role(pg, &md5_user).await;
            create_role(pg, &sha256_user).await;
            let issued = Arc::new(IssuedCredentials::new());
            let standin = StandIn::start(
                StandInConfig {
                    target: TargetId::cluster(CLUSTER),
                    listen: "127.0.0.1:0".parse().unwrap(),
                    tls: StandInTls {
                        cert_chain: cert.chain_pem,
                        key: cert.key_pem,
                        ca_cert: pki.ca_cert_path().to_path_buf(),
                    },
                    pg: PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser()),
                    sha256_users: vec!["IAMA:digest_*".to_owned()],
                    static_users: vec![
                        StaticUser {
                            name: md5_user.clone(),
                            verifier: StoredVerifier::md5_for(&md5_user, PASSWORD),
                        },
                        StaticUser {
                            name: sha256_user.clone(),
                            verifier: StoredVerifier::sha256_for(PASSWORD, &rand::random()),
                        },
                    ],
                },
                Arc::clone(&issued),
            )
            .await
            .unwrap();
            Fixture {
                standin,
                issued,
                md5_user,
                sha256_user,
                _dir: dir,
            }
        }

        /// An emulator-style credential for a new auto-created user `IAMA:<prefix>_...`.
        async fn iam_user(&self, prefix: &str, db_name: Option<&str>) -> (String, String) {
            let user = format!("IAMA:{}", PgServer::unique_name(prefix));
            create_role(PgServer::shared(), &user).await;
            let now = OffsetDateTime::now_utc();
            let password = self.issued.issue(CredentialRequest {
                target: TargetId::cluster(CLUSTER),
                user: user.clone(),
                db_name: db_name.map(str::to_owned),
                groups: Vec::new(),
                issued_at: now,
                expiration: now + time::Duration::minutes(15),
                request_id: "selftest".to_owned(),
            });
            (user, password.expose_secret().to_owned())
        }

        async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
            let mut tcp = TcpStream::connect(self.standin.endpoint().addr)
                .await
                .unwrap();
            tcp.write_all(&SSL_REQUEST).await.unwrap();
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await.unwrap();
            assert_eq!(answer[0], b'S');
            let config = proxy_testkit::pg::tls_client_config(self.standin.ca_cert_path()).unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(
                    rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap()
        }

        /// tokio-postgres logged in as the md5 user to `postgres`.
        async fn connect_md5(&self) -> tokio_postgres::Client {
            proxy_testkit::standin::connect(
                self.standin.endpoint(),
                &self.md5_user,
                PASSWORD,
                "postgres",
            )
            .await
            .unwrap()
        }

        async fn login(&self, user: &str, password: &str, params: &[(&str, &str)]) -> Login {
            let mut stream = self.tls().await;
            let mut all = vec![("user", user), ("database", "postgres")];
            all.extend_from_slice(params);
            raw_login(&mut stream, &all, password).await
        }
    }

    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        startup_text(PROTOCOL_3_0, params)
    }

    async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
        let tag = s.read_u8().await.ok()?;
        let len = s.read_u32().await.ok()? as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.ok()?;
        Some((tag, body))
    }

    /// The fields of an ErrorResponse by their one-letter code.
    fn error_fields(body: &[u8]) -> HashMap<String, String> {
        body.split(|&b| b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| {
                (
                    char::from(f[0]).to_string(),
                    String::from_utf8_lossy(&f[1..]).into_owned(),
                )
            })
            .collect()
    }

    /// What a raw login saw: the authentication code asked for, then every message up to
    /// ReadyForQuery or an ErrorResponse.
    #[derive(Debug)]
    struct Login {
        auth_code: Option<u32>,
        /// AuthenticationOk arrived.
        authenticated: bool,
        messages: Vec<(u8, Vec<u8>)>,
    }

    impl Login {
        fn error(&self) -> Option<HashMap<String, String>> {
            self.messages
                .iter()
                .find(|(tag, _)| *tag == b'E')
                .map(|(_, body)| error_fields(body))
        }

        fn ok(&self) -> bool {
            self.messages.last().is_some_and(|(tag, _)| *tag == b'Z')
        }

        fn tags(&self) -> Vec<u8> {
            self.messages.iter().map(|(tag, _)| *tag).collect()
        }

        fn parameter(&self, name: &str) -> Option<String> {
            self.messages
                .iter()
                .filter(|(tag, _)| *tag == b'S')
                .find_map(|(_, body)| {
                    let mut parts = body.split(|&b| b == 0);
                    (parts.next()? == name.as_bytes()).then(|| {
                        String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned()
                    })
                })
        }
    }

    /// A tiny client for the stand-in's two password exchanges, written here from the
    /// research notes (not the proxy's code): md5 (code 5) and Redshift's SHA-256 digest
    /// (code 13: D1 = SHA-256(password ‖ salt), D2 = SHA-256(D1 ‖ server nonce ‖ client
    /// nonce), client nonce = the time in milliseconds as ASCII, like JDBC and PY).
    async fn raw_login<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        params: &[(&str, &str)],
        password: &str,
    ) -> Login {
        s.write_all(&startup(params)).await.unwrap();
        let user = params
            .iter()
            .find(|(n, _)| *n == "user")
            .map_or("", |(_, v)| v);
        let mut login = Login {
            auth_code: None,
            authenticated: false,
            messages: Vec::new(),
        };
        while let Some((tag, body)) = read_message(s).await {
            if tag == b'R' {
                let code = u32::from_be_bytes(body[0..4].try_into().unwrap());
                match code {
                    0 => login.authenticated = true,
                    5 => {
                        login.auth_code = Some(5);
                        let md5 = |data: &[u8]| hex::encode(md5::Md5::digest(data));
                        let inner = md5(format!("{password}{user}").as_bytes());
                        let mut outer = inner.into_bytes();
                        outer.extend_from_slice(&body[4..8]);
                        let mut answer = format!("md5{}", md5(&outer)).into_bytes();
                        answer.push(0);
                        s.write_all(&message(b'p', &answer)).await.unwrap();
                    }
                    13 => {
                        login.auth_code = Some(13);
                        let field = |at: usize| {
                            u32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize
                        };
                        assert_eq!(field(4), 0, "algorithm 0 = SHA-256");
                        let salt_len = field(8);
                        let salt = &body[12..12 + salt_len];
                        let nonce_len = field(12 + salt_len);
                        let nonce = &body[16 + salt_len..16 + salt_len + nonce_len];
                        assert_eq!(
                            body.len(),
                            16 + salt_len + nonce_len,
                            "exactly the documented fields"
                        );
                        let client_nonce = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis()
                            .to_string();
                        let d1 = Sha256::new()
                            .chain_update(password)
                            .chain_update(salt)
                            .finalize();
                        let d2 = Sha256::new()
                            .chain_update(d1)
                            .chain_update(nonce)
                            .chain_update(&client_nonce)
                            .finalize();
                        let mut reply = 32u32.to_be_bytes().to_vec();
                        reply.extend_from_slice(&d2);
                        reply.extend_from_slice(&(client_nonce.len() as u32).to_be_bytes());
                        reply.extend_from_slice(client_nonce.as_bytes());
                        s.write_all(&message(b'd', &reply)).await.unwrap();
                    }
                    other => panic!("the stand-in asked for authentication method {other}"),
                }
                continue;
            }
            login.messages.push((tag, body));
            if tag == b'Z' || tag == b'E' {
                break;
            }
        }
        login
    }

    #[tokio::test]
    async fn static_md5_user_logs_in_with_tokio_postgres_and_a_wrong_password_is_28000() {
        let fx = Fixture::start().await;
        let client = fx.connect_md5().await;
        let who: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, fx.md5_user);

        let login = fx.login(&fx.md5_user, "wrong password", &[]).await;
        assert_eq!(login.auth_code, Some(5));
        let error = login.error().expect("an ErrorResponse");
        // Redshift: 28000, not PostgreSQL's 28P01 (python-driver#237); fields S C M F L R.
        assert_eq!(error["S"], "FATAL");
        assert_eq!(error["C"], "28000");
        assert_eq!(
            error["M"],
            format!(
                "password authentication failed for user \"{}\"",
                fx.md5_user
            )
        );
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["C", "F", "L", "M", "R", "S"]);
        assert_eq!(error["R"], "auth_failed");
        assert!(!login.authenticated);

        // PostgreSQL's own refusals are relayed as FATAL, in Redshift's fields.
        let mut stream = fx.tls().await;
        let login = raw_login(
            &mut stream,
            &[("user", &fx.md5_user), ("database", "no_such_database")],
            PASSWORD,
        )
        .await;
        let error = login.error().expect("an ErrorResponse");
        assert_eq!(error["S"], "FATAL");
        assert_eq!(error["C"], "3D000");
        assert_eq!(error["M"], "database \"no_such_database\" does not exist");
        assert!(!error.contains_key("V"));
        // As in PostgreSQL: after AuthenticationOk.
        assert!(login.authenticated);
    }

    #[tokio::test]
    async fn sha256_digest_logins_for_static_and_configured_iam_users() {
        let fx = Fixture::start().await;
        let login = fx.login(&fx.sha256_user, PASSWORD, &[]).await;
        assert_eq!(login.auth_code, Some(13));
        assert!(login.ok(), "{login:?}");
        let wrong = fx.login(&fx.sha256_user, "not it", &[]).await;
        assert_eq!(wrong.error().unwrap()["C"], "28000");

        // An IAM user matching `sha256_users` gets code 13 with its temporary password; an
        // other IAM user gets md5.
        let (digest_user, password) = fx.iam_user("digest", None).await;
        let login = fx.login(&digest_user, &password, &[]).await;
        assert_eq!(login.auth_code, Some(13));
        assert!(login.ok(), "{login:?}");
        let (md5_user, password) = fx.iam_user("plain", None).await;
        let login = fx.login(&md5_user, &password, &[]).await;
        assert_eq!(login.auth_code, Some(5));
        assert!(login.ok(), "{login:?}");
        let methods: Vec<Option<AuthMethod>> = fx
            .standin
            .logins()
            .iter()
            .filter(|r| r.user == digest_user || r.user == md5_user)
            .map(|r| r.auth_method)
            .collect();
        assert_eq!(
            methods,
            [Some(AuthMethod::Sha256Digest), Some(AuthMethod::Md5)]
        );
    }

    #[tokio::test]
    async fn postgres_only_parameters_are_refused_with_42704_as_sent() {
        let fx = Fixture::start().await;
        for params in [
            [("IntervalStyle", "iso_8601")],
            [("options", "-c IntervalStyle=iso_8601")],
        ] {
            let login = fx.login(&fx.md5_user, PASSWORD, &params).await;
            let error = login.error().expect("an ErrorResponse");
            assert_eq!(error["S"], "FATAL");
            assert_eq!(error["C"], "42704");
            assert_eq!(
                error["M"],
                "unrecognized configuration parameter \"IntervalStyle\""
            );
            assert_eq!(error["R"], "set_config_option");
            // Applied after the password check, as PostgreSQL applies startup options.
            assert!(login.authenticated);
        }
        // A wrong password is refused first.
        let login = fx
            .login(&fx.md5_user, "wrong", &[("IntervalStyle", "iso_8601")])
            .await;
        assert_eq!(login.error().unwrap()["C"], "28000");
        for name in ["standard_conforming_strings", "jit", "geqo", "Made_Up"] {
            let login = fx.login(&fx.md5_user, PASSWORD, &[(name, "on")]).await;
            assert_eq!(
                login.error().expect("an ErrorResponse")["M"],
                format!("unrecognized configuration parameter \"{name}\"")
            );
        }
        let record = fx.standin.logins().pop().unwrap();
        assert_eq!(record.param("Made_Up"), Some("on"));
        assert!(
            matches!(record.outcome, LoginOutcome::Refused { ref sqlstate, .. } if sqlstate == "42704")
        );
    }

    #[tokio::test]
    async fn redshift_parameters_are_accepted_and_client_protocol_version_is_answered_with_0() {
        let fx = Fixture::start().await;
        let login = fx
            .login(
                &fx.md5_user,
                PASSWORD,
                &[
                    ("client_encoding", "UTF8"),
                    ("DateStyle", "ISO"),
                    ("TimeZone", "Europe/Berlin"),
                    ("extra_float_digits", "2"),
                    ("application_name", "selftest"),
                    ("driver_version", "Redshift JDBC Driver 2.2.6"),
                    ("os_version", "Linux"),
                    ("plugin_name", "none"),
                    ("client_protocol_version", "3"),
                    ("_pq_.compression", "off"),
                ],
            )
            .await;
        assert!(login.ok(), "{login:?}");
        assert_eq!(
            login.parameter("server_protocol_version").as_deref(),
            Some("0")
        );
        // Forwarded GUCs reach PostgreSQL; Redshift-only ones do not.
        assert_eq!(
            login.parameter("TimeZone").as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            login.parameter("application_name").as_deref(),
            Some("selftest")
        );
        // server_protocol_version comes just before BackendKeyData, then ReadyForQuery.
        let tags = login.tags();
        let key = tags.iter().position(|&t| t == b'K').unwrap();
        assert_eq!(&tags[key..], b"KZ");
        assert_eq!(
            login.messages[key - 1],
            (b'S', b"server_protocol_version\x000\x00".to_vec())
        );
        // Without client_protocol_version, no server_protocol_version.
        let plain = fx.login(&fx.md5_user, PASSWORD, &[]).await;
        assert!(plain.ok());
        assert_eq!(plain.parameter("server_protocol_version"), None);
        let record = fx.standin.logins().into_iter().rev().nth(1).unwrap();
        assert_eq!(
            record.param("driver_version"),
            Some("Redshift JDBC Driver 2.2.6")
        );
        assert_eq!(record.outcome, LoginOutcome::Ok);
        assert!(record.tls);
    }

    #[tokio::test]
    async fn plaintext_iam_logins_fail_like_redshift_and_pipelined_bytes_are_refused() {
        let fx = Fixture::start().await;
        let (user, password) = fx.iam_user("plaintext", None).await;
        let mut tcp = TcpStream::connect(fx.standin.endpoint().addr)
            .await
            .unwrap();
        let login = raw_login(
            &mut tcp,
            &[("user", &user), ("database", "postgres")],
            &password,
        )
        .await;
        assert_eq!(login.auth_code, Some(5));
        let error = login.error().expect("an ErrorResponse");
        assert_eq!(error["C"], "28000");
        assert_eq!(
            error["M"],
            format!("password authentication failed for user \"{user}\"")
        );
        // The same password works over TLS.
        assert!(fx.login(&user, &password, &[]).await.ok());

        // Bytes after the SSLRequest, before the answer: refused (CVE-2021-23214).
        let mut tcp = TcpStream::connect(fx.standin.endpoint().addr)
            .await
            .unwrap();
        let mut pipelined = SSL_REQUEST.to_vec();
        pipelined.extend(startup(&[("user", &user)]));
        tcp.write_all(&pipelined).await.unwrap();
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply[0], b'E', "{reply:?}");
        assert!(String::from_utf8_lossy(&reply).contains("08P01"));
    }

    #[tokio::test]
    async fn issued_credentials_are_checked_for_expiry_and_database() {
        let fx = Fixture::start().await;
        let (user, password) = fx.iam_user("bound", Some("postgres")).await;
        assert!(fx.login(&user, &password, &[]).await.ok());
        let mut stream = fx.tls().await;
        let other_db = raw_login(
            &mut stream,
            &[("user", &user), ("database", "template1")],
            &password,
        )
        .await;
        assert_eq!(
            other_db.error().unwrap()["M"],
            format!("password authentication failed for user \"{user}\"")
        );
        fx.issued.expire_all(OffsetDateTime::now_utc());
        let expired = fx.login(&user, &password, &[]).await;
        let error = expired.error().unwrap();
        assert_eq!(error["C"], "28000");
        assert_eq!(error["M"], "IAM Authentication token has expired");
        let unknown = fx.login("IAMA:nobody", &password, &[]).await;
        assert_eq!(
            unknown.error().unwrap()["M"],
            "password authentication failed for user \"IAMA:nobody\""
        );
    }

    /// Waits until PostgreSQL reports `query` running.
    async fn wait_until_running(query: &str) {
        let admin = PgServer::shared().admin().await.unwrap();
        loop {
            let running: i64 = admin
                .query_one(
                    "select count(*) from pg_stat_activity where query = $1 and state = 'active'",
                    &[&query],
                )
                .await
                .unwrap()
                .get(0);
            if running > 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn cancel_requests_reach_postgres_inside_tls_and_in_plaintext() {
        let fx = Fixture::start().await;
        // Inside TLS (SSLRequest first), as tokio-postgres and libpq 17 send it.
        let client = fx.connect_md5().await;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            proxy_testkit::pg::tls_client_config(fx.standin.ca_cert_path()).unwrap(),
        );
        let token = client.cancel_token();
        let query = format!("select pg_sleep(60) -- {}", PgServer::unique_name("tls"));
        let cancel = async {
            wait_until_running(&query).await;
            token.cancel_query(tls).await.unwrap();
        };
        let (result, ()) = tokio::join!(client.simple_query(&query), cancel);
        assert_eq!(
            result.unwrap_err().code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );

        // In plaintext on a fresh socket, as the Redshift JDBC driver sends it; the key is
        // PostgreSQL's own BackendKeyData, passed through.
        let mut stream = fx.tls().await;
        let login = raw_login(
            &mut stream,
            &[("user", &fx.md5_user), ("database", "postgres")],
            PASSWORD,
        )
        .await;
        assert!(login.ok(), "{login:?}");
        let (_, key) = login.messages.iter().find(|(tag, _)| *tag == b'K').unwrap();
        let pid = u32::from_be_bytes(key[0..4].try_into().unwrap());
        let backend: i32 = PgServer::shared()
            .admin()
            .await
            .unwrap()
            .query_one(
                "select count(*)::int from pg_stat_activity where pid = $1 and usename = $2",
                &[&(pid as i32), &fx.md5_user],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(backend, 1, "the BackendKeyData is PostgreSQL's");
        let query = format!("select pg_sleep(60) -- {}", PgServer::unique_name("plain"));
        let mut q = query.clone().into_bytes();
        q.push(0);
        stream.write_all(&message(b'Q', &q)).await.unwrap();
        wait_until_running(&query).await;
        let mut cancel = 16u32.to_be_bytes().to_vec();
        cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
        cancel.extend_from_slice(key);
        let mut plain = TcpStream::connect(fx.standin.endpoint().addr)
            .await
            .unwrap();
        plain.write_all(&cancel).await.unwrap();
        let mut nothing = Vec::new();
        plain.read_to_end(&mut nothing).await.unwrap();
        assert!(nothing.is_empty(), "a cancel request gets no reply");
        let error = loop {
            let (tag, body) = read_message(&mut stream).await.unwrap();
            if tag == b'E' {
                break error_fields(&body);
            }
        };
        assert_eq!(error["C"], "57014");
        assert_eq!(fx.standin.cancel_requests(), 2);
    }

    #[tokio::test]
    async fn an_unavailable_stand_in_closes_connections_after_the_startup_message() {
        let fx = Fixture::start().await;
        fx.standin
            .set_unavailable(std::time::Duration::from_secs(3600));
        let mut stream = fx.tls().await;
        let login = raw_login(&mut stream, &[("user", &fx.md5_user)], PASSWORD).await;
        assert!(
            login.messages.is_empty() && login.auth_code.is_none(),
            "{login:?}"
        );
        assert_eq!(
            fx.standin.logins().pop().unwrap().outcome,
            LoginOutcome::Unavailable
        );
    }
}
