//! The AWS emulator verifies what real AWS verifies and provisions real PostgreSQL users.
//!
//! Roles Anywhere requests are signed by a small signer written here (independent of the
//! emulator's verifier, which is additionally pinned by a published known-answer vector in
//! its unit tests) and, for interoperability, by the proxy's own signer. Redshift calls go
//! through the real `aws-sdk-redshift` / `aws-sdk-redshiftserverless` clients.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, RSA_PKCS1_SHA256,
};
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_redshift::error::ProvideErrorMetadata;
use aws_sdk_redshift::operation::RequestId as _;
use base64::Engine as _;
use proxy_testkit::emulator::{
    Api, AwsEmulator, ClusterSpec, EmulatorConfig, PasswordHash, PgAdmin, WorkgroupSpec,
};
use proxy_testkit::pg::{PgServer, MD5_USERS_ROLE};
use proxy_testkit::pki::{ClientCert, ClientCertSpec, KeyAlgorithm, TestPki};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const CLUSTER: &str = "analytics";
const WORKGROUP: &str = "adhoc-wg";

fn trust_anchor_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/ta-1")
}

fn profile_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/p-1")
}

// ---- fixture ---------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    pki: TestPki,
    emulator: AwsEmulator,
    /// Unique per fixture, so that `IAMR:<role>` users of concurrent tests don't collide.
    role_arn: String,
}

impl Fixture {
    /// An emulator whose clusters/workgroups point at `pg` (or at nothing reachable).
    async fn new(pg: Option<(&PgServer, PasswordHash)>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        let role_arn = format!(
            "arn:aws:iam::{ACCOUNT}:role/team/{}",
            PgServer::unique_name("Analyst")
        );
        let admin = match pg {
            Some((pg, hash)) => {
                let mut admin =
                    PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser());
                admin.password_hash = hash;
                if hash == PasswordHash::Md5 {
                    admin.grant_roles = vec![MD5_USERS_ROLE.to_owned()];
                }
                admin
            }
            None => PgAdmin::new("/nonexistent", 1, "nobody"),
        };
        let config = EmulatorConfig {
            trust_anchor_arn: trust_anchor_arn(),
            trust_anchor_ca_pem: Some(std::fs::read_to_string(pki.ca_cert_path()).unwrap()),
            trust_anchor_ca_file: None,
            profile_arn: profile_arn(),
            role_arns: vec![role_arn.clone()],
            max_session_duration: Duration::from_secs(3600),
            clusters: vec![ClusterSpec {
                identifier: CLUSTER.to_owned(),
                region: REGION.to_owned(),
                custom_domain_name: Some("warehouse.example.com".to_owned()),
                admin: admin.clone(),
            }],
            workgroups: vec![WorkgroupSpec {
                name: WORKGROUP.to_owned(),
                region: REGION.to_owned(),
                custom_domain_name: None,
                admin,
            }],
        };
        let emulator = AwsEmulator::start(config).await.unwrap();
        Fixture {
            _dir: dir,
            pki,
            emulator,
            role_arn,
        }
    }

    fn identity(&self, spec: ClientCertSpec) -> TestIdentity {
        TestIdentity::load(&self.pki.client_cert(spec).unwrap())
    }

    fn create_session_body(&self) -> String {
        serde_json::json!({
            "trustAnchorArn": trust_anchor_arn(),
            "profileArn": profile_arn(),
            "roleArn": self.role_arn,
            "durationSeconds": 900,
        })
        .to_string()
    }

    /// A valid session for the fixture's role.
    async fn session(&self) -> SessionCredentials {
        let identity = self.identity(ClientCertSpec::new("etl-job"));
        let request = identity.sign(self, SignOptions::new(self.create_session_body()));
        let response = send(&self.emulator, &request).await;
        assert_eq!(response.status, 201, "{}", response.text());
        SessionCredentials::from_response(&response)
    }

    fn redshift(&self, creds: &SessionCredentials) -> aws_sdk_redshift::Client {
        let config = aws_sdk_redshift::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.emulator.url())
            .credentials_provider(creds.sdk())
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_redshift::Client::from_conf(config)
    }

    fn serverless(&self, creds: &SessionCredentials) -> aws_sdk_redshiftserverless::Client {
        let config = aws_sdk_redshiftserverless::Config::builder()
            .behavior_version(aws_sdk_redshiftserverless::config::BehaviorVersion::latest())
            .region(aws_sdk_redshiftserverless::config::Region::new(REGION))
            .endpoint_url(self.emulator.url())
            .credentials_provider(creds.sdk())
            .retry_config(aws_sdk_redshiftserverless::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_redshiftserverless::Client::from_conf(config)
    }
}

#[derive(Debug, Clone)]
struct SessionCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

impl SessionCredentials {
    fn from_response(response: &Response) -> Self {
        let json = response.json();
        let creds = &json["credentialSet"][0]["credentials"];
        SessionCredentials {
            access_key_id: creds["accessKeyId"].as_str().unwrap().to_owned(),
            secret_access_key: creds["secretAccessKey"].as_str().unwrap().to_owned(),
            session_token: creds["sessionToken"].as_str().unwrap().to_owned(),
        }
    }

    fn sdk(&self) -> Credentials {
        Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            Some(self.session_token.clone()),
            None,
            "emulator-test",
        )
    }
}

// ---- an independent Roles Anywhere test signer ------------------------------------------------

enum Key {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

impl Key {
    fn load(cert: &ClientCert) -> Key {
        let der = std::fs::read(&cert.key_pk8_der).unwrap();
        match cert.key_algorithm {
            KeyAlgorithm::Rsa2048 => Key::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
            KeyAlgorithm::EcdsaP256 => {
                Key::Ecdsa(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der).unwrap())
            }
            other => panic!("test signer does not support {other:?}"),
        }
    }

    fn algorithm(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "AWS4-X509-RSA-SHA256",
            Key::Ecdsa(_) => "AWS4-X509-ECDSA-SHA256",
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .unwrap();
                signature
            }
            Key::Ecdsa(key) => key.sign(&rng, message).unwrap().as_ref().to_vec(),
        }
    }
}

struct TestIdentity {
    cert_der: Vec<u8>,
    serial: String,
    key: Key,
}

impl TestIdentity {
    fn load(cert: &ClientCert) -> TestIdentity {
        TestIdentity {
            cert_der: cert.cert_der.clone(),
            serial: cert.serial.to_decimal(),
            key: Key::load(cert),
        }
    }

    /// A `POST /sessions` signed as `AWS4-X509-*-SHA256`, with the knobs the negative tests
    /// turn.
    fn sign(&self, fixture: &Fixture, options: SignOptions) -> RawRequest {
        let host = fixture.emulator.local_addr().to_string();
        let amz_date = options
            .time
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap();
        let date = &amz_date[..8];
        let x509 = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("host".into(), host),
            ("x-amz-date".into(), amz_date.clone()),
            ("x-amz-x509".into(), x509),
        ];
        if let Some(chain) = &options.chain {
            headers.push((
                "x-amz-x509-chain".into(),
                chain
                    .iter()
                    .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        }
        headers.sort();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut query_pairs: Vec<(String, String)> = options
            .query
            .iter()
            .map(|(k, v)| (uri_encode(k), uri_encode(v)))
            .collect();
        query_pairs.sort();
        let query = query_pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical = format!(
            "POST\n/sessions\n{query}\n{}\n{signed_headers}\n{}",
            headers
                .iter()
                .map(|(k, v)| format!("{k}:{v}\n"))
                .collect::<String>(),
            hex::encode(Sha256::digest(options.body.as_bytes())),
        );
        let key = options.signing_key.as_ref().unwrap_or(&self.key);
        let scope = format!("{date}/{}/rolesanywhere/aws4_request", options.region);
        let string_to_sign = format!(
            "{}\n{amz_date}\n{scope}\n{}",
            key.algorithm(),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let signature = hex::encode(key.sign(string_to_sign.as_bytes()));
        let serial = options.serial.as_deref().unwrap_or(&self.serial);
        headers.push((
            "authorization".into(),
            format!(
                "{} Credential={serial}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                key.algorithm()
            ),
        ));
        RawRequest {
            path_and_query: if query.is_empty() {
                "/sessions".to_owned()
            } else {
                format!("/sessions?{query}")
            },
            headers,
            body: options.body.into_bytes(),
        }
    }
}

fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct SignOptions {
    body: String,
    query: Vec<(String, String)>,
    time: OffsetDateTime,
    region: String,
    serial: Option<String>,
    signing_key: Option<Key>,
    chain: Option<Vec<Vec<u8>>>,
}

impl SignOptions {
    fn new(body: String) -> Self {
        SignOptions {
            body,
            query: Vec::new(),
            time: OffsetDateTime::now_utc(),
            region: REGION.to_owned(),
            serial: None,
            signing_key: None,
            chain: None,
        }
    }
}

// ---- a minimal HTTP/1.1 client (one request per connection) ---------------------------------

struct RawRequest {
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// `x-amzn-errortype` of a failed Roles Anywhere call, checked against the body shape.
    fn error_type(&self) -> String {
        assert!(self.json()["message"].is_string(), "{}", self.text());
        assert!(self.headers.contains_key("x-amzn-requestid"));
        self.headers
            .get("x-amzn-errortype")
            .cloned()
            .unwrap_or_default()
    }
}

async fn send_raw(addr: std::net::SocketAddr, request: &RawRequest) -> std::io::Result<Response> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("POST {} HTTP/1.1\r\n", request.path_and_query);
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&request.body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

async fn send(emulator: &AwsEmulator, request: &RawRequest) -> Response {
    send_raw(emulator.local_addr(), request).await.unwrap()
}

// ---- Roles Anywhere CreateSession ---------------------------------------------------------

#[tokio::test]
async fn create_session_with_rsa_certificate_is_accepted() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("rsa-job").key(KeyAlgorithm::Rsa2048));
    let response = send(
        &fx.emulator,
        &identity.sign(&fx, SignOptions::new(fx.create_session_body())),
    )
    .await;

    assert_eq!(response.status, 201, "{}", response.text());
    let json = response.json();
    let set = &json["credentialSet"][0];
    let key_id = set["credentials"]["accessKeyId"].as_str().unwrap();
    assert!(key_id.starts_with("ASIA") && key_id.len() == 20, "{key_id}");
    assert_eq!(set["roleArn"], fx.role_arn.as_str());
    assert_eq!(set["sourceIdentity"], "rsa-job");
    let expiration = OffsetDateTime::parse(
        set["credentials"]["expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = expiration - OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::seconds(890) && lifetime <= time::Duration::seconds(900));
    assert_eq!(fx.emulator.calls(Api::CreateSession), 1);
}

#[tokio::test]
async fn create_session_with_ecdsa_p256_certificate_and_arns_in_query_is_accepted() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("ec-job"));
    let mut options = SignOptions::new(r#"{"durationSeconds":3600}"#.to_owned());
    options.query = vec![
        ("profileArn".into(), profile_arn()),
        ("roleArn".into(), fx.role_arn.clone()),
        ("trustAnchorArn".into(), trust_anchor_arn()),
    ];
    let response = send(&fx.emulator, &identity.sign(&fx, options)).await;
    assert_eq!(response.status, 201, "{}", response.text());
}

#[tokio::test]
async fn certificate_issued_by_an_intermediate_is_accepted_with_its_chain() {
    let fx = Fixture::new(None).await;
    let intermediate = fx
        .pki
        .root()
        .intermediate("Issuing CA", KeyAlgorithm::EcdsaP256)
        .unwrap();
    let cert = intermediate
        .client_cert(ClientCertSpec::new("chained"))
        .unwrap();
    let identity = TestIdentity::load(&cert);
    let mut without_chain = SignOptions::new(fx.create_session_body());
    without_chain.chain = None;
    let response = send(&fx.emulator, &identity.sign(&fx, without_chain)).await;
    assert_eq!(
        response.status,
        403,
        "the intermediate is needed: {}",
        response.text()
    );

    let mut with_chain = SignOptions::new(fx.create_session_body());
    with_chain.chain = Some(vec![intermediate.cert_der().to_vec()]);
    let response = send(&fx.emulator, &identity.sign(&fx, with_chain)).await;
    assert_eq!(response.status, 201, "{}", response.text());
}

#[tokio::test]
async fn signature_made_with_another_key_is_rejected() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("victim"));
    let attacker = fx.identity(ClientCertSpec::new("attacker"));
    let mut options = SignOptions::new(fx.create_session_body());
    options.signing_key = Some(attacker.key);
    let response = send(&fx.emulator, &identity.sign(&fx, options)).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.error_type(), "AccessDeniedException");
}

#[tokio::test]
async fn certificate_from_an_untrusted_ca_is_rejected() {
    let fx = Fixture::new(None).await;
    let other_pki = TestPki::new(fx._dir.path().join("other")).unwrap();
    let identity = TestIdentity::load(
        &other_pki
            .client_cert(ClientCertSpec::new("stranger"))
            .unwrap(),
    );
    let response = send(
        &fx.emulator,
        &identity.sign(&fx, SignOptions::new(fx.create_session_body())),
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.error_type(), "AccessDeniedException");
    assert!(response.json()["message"]
        .as_str()
        .unwrap()
        .contains("untrusted"));
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("old").expired());
    let response = send(
        &fx.emulator,
        &identity.sign(&fx, SignOptions::new(fx.create_session_body())),
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.error_type(), "AccessDeniedException");
}

#[tokio::test]
async fn serial_in_scope_must_be_the_certificates() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("job"));
    let mut options = SignOptions::new(fx.create_session_body());
    options.serial = Some("12345".to_owned());
    let response = send(&fx.emulator, &identity.sign(&fx, options)).await;
    assert_eq!(response.status, 403);
    assert!(response.json()["message"]
        .as_str()
        .unwrap()
        .contains("serial"));
}

#[tokio::test]
async fn request_dated_more_than_five_minutes_away_is_rejected() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("job"));
    for skew in [time::Duration::minutes(-6), time::Duration::minutes(6)] {
        let mut options = SignOptions::new(fx.create_session_body());
        options.time = OffsetDateTime::now_utc() + skew;
        let response = send(&fx.emulator, &identity.sign(&fx, options)).await;
        assert_eq!(response.status, 403, "skew {skew}");
        assert!(response.json()["message"]
            .as_str()
            .unwrap()
            .contains("expired"));
    }
    let mut options = SignOptions::new(fx.create_session_body());
    options.time = OffsetDateTime::now_utc() - time::Duration::minutes(4);
    assert_eq!(
        send(&fx.emulator, &identity.sign(&fx, options))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn request_signed_for_another_region_is_rejected() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("job"));
    let mut options = SignOptions::new(fx.create_session_body());
    options.region = "eu-west-1".to_owned();
    assert_eq!(
        send(&fx.emulator, &identity.sign(&fx, options))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn unknown_resources_and_bad_durations_are_refused() {
    let fx = Fixture::new(None).await;
    let identity = fx.identity(ClientCertSpec::new("job"));
    let body = |role: &str, profile: &str, duration: u64| {
        serde_json::json!({
            "trustAnchorArn": trust_anchor_arn(), "profileArn": profile,
            "roleArn": role, "durationSeconds": duration,
        })
        .to_string()
    };
    let cases = [
        (
            body(
                &format!("arn:aws:iam::{ACCOUNT}:role/Other"),
                &profile_arn(),
                900,
            ),
            403,
            "AccessDeniedException",
        ),
        (
            body(
                &fx.role_arn,
                &format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/nope"),
                900,
            ),
            404,
            "ResourceNotFoundException",
        ),
        (
            body(&fx.role_arn, &profile_arn(), 899),
            400,
            "ValidationException",
        ),
        // max_session_duration of the fixture is one hour
        (
            body(&fx.role_arn, &profile_arn(), 3601),
            400,
            "ValidationException",
        ),
        (
            r#"{"profileArn":"x"}"#.to_owned(),
            400,
            "ValidationException",
        ),
    ];
    for (body, status, code) in cases {
        let response = send(
            &fx.emulator,
            &identity.sign(&fx, SignOptions::new(body.clone())),
        )
        .await;
        assert_eq!(response.status, status, "{body}: {}", response.text());
        assert_eq!(response.error_type(), code, "{body}");
    }
}

#[tokio::test]
async fn proxy_signer_interoperates_with_the_emulator() {
    use proxy_auth::aws::roles_anywhere::signer::SignerPem;
    use proxy_auth::aws::roles_anywhere::X509Signer;

    let fx = Fixture::new(None).await;
    for key in [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
    ] {
        let cert = fx
            .pki
            .client_cert(ClientCertSpec::new("proxy").key(key))
            .unwrap();
        let certificate = std::fs::read(&cert.cert_pem).unwrap();
        let private_key = std::fs::read(&cert.key_pem).unwrap();
        let signer = X509Signer::from_pem(SignerPem {
            certificate: &certificate,
            private_key: &private_key,
            ..SignerPem::default()
        })
        .unwrap();
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri(format!("{}/sessions", fx.emulator.url()))
            .header("content-type", "application/json")
            .body(fx.create_session_body().into_bytes())
            .unwrap();
        signer
            .sign(
                &mut request,
                REGION,
                "rolesanywhere",
                std::time::SystemTime::now(),
            )
            .unwrap();
        let raw = RawRequest {
            path_and_query: "/sessions".to_owned(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect(),
            body: request.body().clone(),
        };
        let response = send(&fx.emulator, &raw).await;
        assert_eq!(response.status, 201, "{key:?}: {}", response.text());
    }
}

// ---- Redshift authentication (no database needed: rejected before provisioning) -------------

#[tokio::test]
async fn redshift_call_with_unknown_access_key_is_rejected() {
    let fx = Fixture::new(None).await;
    let creds = SessionCredentials {
        access_key_id: "ASIAUNKNOWNUNKNOWN00".to_owned(),
        secret_access_key: "x".repeat(40),
        session_token: "token".to_owned(),
    };
    let err = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("alice")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err:?}");
}

#[tokio::test]
async fn redshift_call_with_wrong_secret_or_token_is_rejected() {
    let fx = Fixture::new(None).await;
    let good = fx.session().await;

    let mut wrong_secret = good.clone();
    wrong_secret.secret_access_key = "y".repeat(40);
    let err = fx
        .redshift(&wrong_secret)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("alice")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");

    let mut wrong_token = good;
    wrong_token.session_token.push('x');
    let err = fx
        .redshift(&wrong_token)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("alice")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err:?}");
}

#[tokio::test]
async fn redshift_call_with_expired_session_is_rejected() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    fx.emulator.expire_sessions();
    let err = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("alice")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ExpiredToken"), "{err:?}");
}

/// Signs a GetClusterCredentials form body with `aws-sigv4` the way the SDK does.
fn sigv4_signed(fx: &Fixture, creds: &SessionCredentials, service: &str, body: &str) -> RawRequest {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let host = fx.emulator.local_addr().to_string();
    let headers = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("host", host.as_str()),
    ];
    let identity = creds.sdk().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    RawRequest {
        path_and_query: "/".to_owned(),
        headers: all,
        body: body.as_bytes().to_vec(),
    }
}

fn xml_code(response: &Response) -> String {
    let text = response.text();
    let start = text.find("<Code>").map(|i| i + 6).unwrap_or(0);
    let end = text.find("</Code>").unwrap_or(start);
    text[start..end].to_owned()
}

#[tokio::test]
async fn tampered_redshift_signature_or_body_is_rejected() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    let body =
        "Action=GetClusterCredentials&Version=2012-12-01&ClusterIdentifier=nosuch&DbUser=alice";

    // Untouched, the request authenticates and fails on the (unknown) cluster.
    let response = send(&fx.emulator, &sigv4_signed(&fx, &creds, "redshift", body)).await;
    assert_eq!(
        (response.status, xml_code(&response).as_str()),
        (404, "ClusterNotFound")
    );

    let mut tampered = sigv4_signed(&fx, &creds, "redshift", body);
    for (name, value) in &mut tampered.headers {
        if name == "authorization" {
            let last = value.pop().unwrap();
            value.push(if last == '0' { '1' } else { '0' });
        }
    }
    let response = send(&fx.emulator, &tampered).await;
    assert_eq!(
        (response.status, xml_code(&response).as_str()),
        (403, "SignatureDoesNotMatch")
    );

    let mut other_body = sigv4_signed(&fx, &creds, "redshift", body);
    other_body.body = body.replace("alice", "admin").into_bytes();
    let response = send(&fx.emulator, &other_body).await;
    assert_eq!(xml_code(&response), "SignatureDoesNotMatch");

    // Signed for the wrong service (the scope says redshift-serverless).
    let response = send(
        &fx.emulator,
        &sigv4_signed(&fx, &creds, "redshift-serverless", body),
    )
    .await;
    assert_eq!(xml_code(&response), "SignatureDoesNotMatch");
}

#[tokio::test]
async fn redshift_parameter_errors_have_redshift_codes() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    let client = fx.redshift(&creds);
    let err = client
        .get_cluster_credentials()
        .cluster_identifier("no-such-cluster")
        .db_user("alice")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error().unwrap().is_cluster_not_found_fault(),
        "{err:?}"
    );

    for bad_user in ["1alice", "PUBLIC", "a:b", "a/b"] {
        let err = client
            .get_cluster_credentials()
            .cluster_identifier(CLUSTER)
            .db_user(bad_user)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidParameterValue"), "{bad_user}");
    }
    let err = client
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("alice")
        .duration_seconds(3601)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));

    let err = fx
        .serverless(&creds)
        .get_credentials()
        .workgroup_name("Bad_Name")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error().unwrap().is_validation_exception(),
        "{err:?}"
    );
}

// ---- faults and control ---------------------------------------------------------------------

#[tokio::test]
async fn injected_faults_hit_the_next_calls_then_clear() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    let client = fx.redshift(&creds);
    let call = || {
        client
            .get_cluster_credentials()
            .cluster_identifier("no-such-cluster")
            .db_user("alice")
            .send()
    };

    fx.emulator
        .faults()
        .throttle_next(Some(Api::GetClusterCredentials), 1);
    assert_eq!(call().await.unwrap_err().code(), Some("Throttling"));
    fx.emulator.faults().fail_next(None, 1);
    let err = call().await.unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    fx.emulator
        .faults()
        .drop_next(Some(Api::GetClusterCredentials), 1);
    let err = call().await.unwrap_err();
    assert!(
        matches!(err, aws_sdk_redshift::error::SdkError::DispatchFailure(_)),
        "{err:?}"
    );
    // Back to normal: the call is processed (and fails on the unknown cluster).
    assert_eq!(call().await.unwrap_err().code(), Some("ClusterNotFound"));
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentials), 4);

    fx.emulator.faults().set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let _ = call().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    fx.emulator.faults().clear();
}

#[tokio::test]
async fn control_endpoint_reports_calls_and_sets_faults() {
    let fx = Fixture::new(None).await;
    let control = |path: &str, body: &str| RawRequest {
        path_and_query: path.to_owned(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    };
    let response = send(
        &fx.emulator,
        &control(
            "/_emulator/faults",
            r#"{"api":"CreateSession","throttle_next":1}"#,
        ),
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.text());

    let identity = fx.identity(ClientCertSpec::new("job"));
    let response = send(
        &fx.emulator,
        &identity.sign(&fx, SignOptions::new(fx.create_session_body())),
    )
    .await;
    assert_eq!(
        (response.status, response.error_type().as_str()),
        (400, "ThrottlingException")
    );

    let mut stream = tokio::net::TcpStream::connect(fx.emulator.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /_emulator/calls HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let json: serde_json::Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["CreateSession"], 1);
    assert_eq!(json["GetClusterCredentials"], 0);
}

// ---- PostgreSQL provisioning ----------------------------------------------------------------

/// The shared test PostgreSQL.
fn pg() -> Option<&'static PgServer> {
    // A missing PostgreSQL fails loudly (CI installs it); it never skips.
    Some(PgServer::shared())
}

async fn role_valid_until(pg: &PgServer, role: &str) -> Option<OffsetDateTime> {
    let admin = pg.admin().await.unwrap();
    let row = admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    row.get::<_, Option<i64>>(0)
        .map(|epoch| OffsetDateTime::from_unix_timestamp(epoch).unwrap())
}

#[tokio::test]
async fn get_cluster_credentials_creates_a_role_that_logs_in_until_expiry() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(Some((pg, PasswordHash::ScramSha256))).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("alice");
    let group = PgServer::unique_name("readers");

    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .db_name("postgres")
        .auto_create(true)
        .db_groups(&group)
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let user = out.db_user().unwrap().to_owned();
    let password = out.db_password().unwrap().to_owned();
    assert_eq!(user, format!("IAMA:{db_user}"));
    assert!(out.request_id().is_some());

    let client = pg.connect_tls(&user, &password, "postgres").await.unwrap();
    let in_group: bool = client
        .query_one("SELECT pg_has_role(current_user, $1, 'MEMBER')", &[&group])
        .await
        .unwrap()
        .get(0);
    assert!(in_group);
    assert!(pg
        .connect_tls(&user, "wrong-password", "postgres")
        .await
        .is_err());

    // PostgreSQL enforces the expiration that the API returned.
    let expiration = out.expiration().unwrap().secs();
    assert_eq!(
        role_valid_until(pg, &user)
            .await
            .map(|t| t.unix_timestamp()),
        Some(expiration)
    );
    fx.emulator.expire_db_credentials().await.unwrap();
    assert!(pg.connect_tls(&user, &password, "postgres").await.is_err());

    // A new call issues a fresh, working password.
    let again = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .custom_domain_name("warehouse.example.com")
        .db_user(&db_user)
        .auto_create(true)
        .send()
        .await
        .unwrap();
    assert_ne!(again.db_password().unwrap(), password);
    pg.connect_tls(&user, again.db_password().unwrap(), "postgres")
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_holders_of_credentials_for_one_user_all_stay_valid() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(Some((pg, PasswordHash::ScramSha256))).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("shared");
    let client = fx.redshift(&creds);
    let mut passwords = Vec::new();
    for _ in 0..2 {
        let out = client
            .get_cluster_credentials()
            .cluster_identifier(CLUSTER)
            .db_user(&db_user)
            .auto_create(true)
            .send()
            .await
            .unwrap();
        passwords.push((
            out.db_user().unwrap().to_owned(),
            out.db_password().unwrap().to_owned(),
        ));
    }
    for (user, password) in &passwords {
        pg.connect_tls(user, password, "postgres").await.unwrap();
    }
}

#[tokio::test]
async fn without_auto_create_a_missing_user_gets_credentials_that_cannot_log_in() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(Some((pg, PasswordHash::ScramSha256))).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("ghost");
    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .send()
        .await
        .unwrap();
    assert_eq!(out.db_user().unwrap(), format!("IAM:{db_user}"));
    assert!(pg
        .connect_tls(
            out.db_user().unwrap(),
            out.db_password().unwrap(),
            "postgres"
        )
        .await
        .is_err());
    let admin = pg.admin().await.unwrap();
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&out.db_user().unwrap()],
        )
        .await
        .unwrap();
    assert!(exists.is_none(), "the emulator must not create the user");

    // Once the user exists, the same call sets its password.
    admin
        .batch_execute(&format!("CREATE ROLE \"IAM:{db_user}\" LOGIN"))
        .await
        .unwrap();
    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .send()
        .await
        .unwrap();
    pg.connect_tls(
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn md5_passwords_log_in_through_the_md5_hba_rule() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(Some((pg, PasswordHash::Md5))).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("md5user");
    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .auto_create(true)
        .send()
        .await
        .unwrap();
    pg.connect_tls(
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn iam_derived_users_for_cluster_and_serverless() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(Some((pg, PasswordHash::ScramSha256))).await;
    let creds = fx.session().await;
    let role_name = fx.role_arn.rsplit('/').next().unwrap().to_owned();

    let out = fx
        .redshift(&creds)
        .get_cluster_credentials_with_iam()
        .cluster_identifier(CLUSTER)
        .db_name("postgres")
        .send()
        .await
        .unwrap();
    assert_eq!(out.db_user().unwrap(), format!("IAMR:{role_name}"));
    let expiration = out.expiration().unwrap().secs();
    let refresh = out.next_refresh_time().unwrap().secs();
    assert!(refresh < expiration);
    pg.connect_tls(
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();

    let out = fx
        .serverless(&creds)
        .get_credentials()
        .workgroup_name(WORKGROUP)
        .db_name("postgres")
        .duration_seconds(1800)
        .send()
        .await
        .unwrap();
    assert_eq!(out.db_user().unwrap(), format!("IAMR:{role_name}"));
    let lifetime = out.expiration().unwrap().secs() - OffsetDateTime::now_utc().unix_timestamp();
    assert!((1790..=1800).contains(&lifetime), "{lifetime}");
    pg.connect_tls(
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();
    assert_eq!(fx.emulator.calls(Api::GetCredentials), 1);
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentialsWithIam), 1);
}

// ---- the aws-emulator binary ----------------------------------------------------------------

#[tokio::test]
async fn binary_serves_the_configured_emulator_and_writes_the_ready_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path().join("pki")).unwrap();
    let config = EmulatorConfig {
        trust_anchor_arn: trust_anchor_arn(),
        trust_anchor_ca_pem: None,
        trust_anchor_ca_file: Some(pki.ca_cert_path().to_owned()),
        profile_arn: profile_arn(),
        role_arns: vec![format!("arn:aws:iam::{ACCOUNT}:role/Reader")],
        max_session_duration: Duration::from_secs(3600),
        clusters: Vec::new(),
        workgroups: Vec::new(),
    };
    let config_path = dir.path().join("emulator.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let ready = dir.path().join("ready");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aws-emulator"))
        .arg("--config")
        .arg(&config_path)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let url = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break text.trim().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no ready file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    child.kill().await.unwrap();
}
