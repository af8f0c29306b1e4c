//! The AWS emulator verifies what real AWS verifies, authorizes like IAM, and hands out
//! credentials that log in through its Redshift stand-ins the way Redshift's do.
//!
//! Roles Anywhere requests are signed by a small signer written here (independent of the
//! emulator's verifier, which is additionally pinned by a published known-answer vector in
//! its unit tests) and, for interoperability, by the proxy's own signer. Redshift calls go
//! through the real `aws-sdk-redshift` / `aws-sdk-redshiftserverless` clients.

use crate::emulated::{
    one_role_config, profile_arn, proxy_signer, trust_anchor_arn, ACCOUNT, CLUSTER, REGION,
    WORKGROUP, WORKGROUP_ID,
};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, RSA_PKCS1_SHA256,
};
use aws_sdk_redshift::config::http::HttpResponse;
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::operation::get_cluster_credentials::GetClusterCredentialsError;
use aws_sdk_redshift::operation::RequestId as _;
use aws_sdk_redshiftserverless::operation::get_credentials::GetCredentialsError;
use base64::Engine as _;
use proxy_testkit::emulator::{
    allow_all_redshift_policy, Api, AwsEmulator, ClusterSpec, EmulatorConfig, PgAdmin, StandInSpec,
};
use proxy_testkit::pg::{quote_ident, PgServer};
use proxy_testkit::pki::{ClientCert, ClientCertSpec, KeyAlgorithm, TestPki};
use proxy_testkit::standin::{self, pg_role_name, LoginOutcome};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- fixture ---------------------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    pki: TestPki,
    emulator: AwsEmulator,
    /// Unique per fixture, so that `IAMR:<role>` users of concurrent tests don't collide.
    role_arn: String,
}

impl Fixture {
    /// An emulator whose clusters/workgroups are stand-ins in front of `pg` (or of nothing
    /// reachable); the role may do everything on Redshift.
    async fn new(pg: Option<&PgServer>) -> Fixture {
        Self::with(pg, |_| {}).await
    }

    /// Like [`Fixture::new`]; `adjust` edits the configuration first (the role's ARN is in
    /// `role_arns[0]`).
    async fn with(pg: Option<&PgServer>, adjust: impl FnOnce(&mut EmulatorConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        let role_arn = format!(
            "arn:aws:iam::{ACCOUNT}:role/team/{}",
            PgServer::unique_name("Analyst")
        );
        let admin = match pg {
            Some(pg) => PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser()),
            None => PgAdmin::new("/nonexistent", 1, "nobody"),
        };
        let mut config = one_role_config(&pki, &role_arn, admin);
        config.clusters[0].custom_domain_name = Some("warehouse.example.com".to_owned());
        adjust(&mut config);
        let emulator = AwsEmulator::start(config).await.unwrap();
        Fixture {
            _dir: dir,
            pki,
            emulator,
            role_arn,
        }
    }

    fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap()
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
        self.session_as(ClientCertSpec::new("etl-job")).await
    }

    /// A valid session for the fixture's role, signed with a certificate made from `spec`.
    async fn session_as(&self, spec: ClientCertSpec) -> SessionCredentials {
        let response = self.create_session(&self.identity(spec)).await;
        assert_eq!(response.status, 201, "{}", response.text());
        SessionCredentials::from_response(&response)
    }

    /// Sends a CreateSession for the fixture's role, signed by `identity`.
    async fn create_session(&self, identity: &TestIdentity) -> Response {
        let request = identity.sign(self, SignOptions::new(self.create_session_body()));
        send(&self.emulator, &request).await
    }

    /// GetClusterCredentials for `alice` on the cluster, expected to be refused.
    async fn refused_cluster_call(
        &self,
        creds: &SessionCredentials,
    ) -> SdkError<GetClusterCredentialsError, HttpResponse> {
        self.redshift(creds)
            .get_cluster_credentials()
            .cluster_identifier(CLUSTER)
            .db_user("alice")
            .send()
            .await
            .unwrap_err()
    }

    /// GetCredentials on the workgroup, expected to be refused.
    async fn refused_workgroup_call(
        &self,
        creds: &SessionCredentials,
    ) -> SdkError<GetCredentialsError, HttpResponse> {
        self.serverless(creds)
            .get_credentials()
            .workgroup_name(WORKGROUP)
            .send()
            .await
            .unwrap_err()
    }

    /// The stand-in of the cluster.
    fn cluster(&self) -> &standin::StandIn {
        self.emulator.standin(CLUSTER).unwrap()
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
    /// `assumedRoleUser.arn`: `arn:aws:sts::<account>:assumed-role/<Role>/<session>`.
    assumed_role_arn: String,
    /// `assumedRoleUser.assumedRoleId`: `<role id>:<session>`.
    assumed_role_id: String,
}

impl SessionCredentials {
    fn from_response(response: &Response) -> Self {
        let json = response.json();
        let set = &json["credentialSet"][0];
        let creds = &set["credentials"];
        SessionCredentials {
            access_key_id: creds["accessKeyId"].as_str().unwrap().to_owned(),
            secret_access_key: creds["secretAccessKey"].as_str().unwrap().to_owned(),
            session_token: creds["sessionToken"].as_str().unwrap().to_owned(),
            assumed_role_arn: set["assumedRoleUser"]["arn"].as_str().unwrap().to_owned(),
            assumed_role_id: set["assumedRoleUser"]["assumedRoleId"]
                .as_str()
                .unwrap()
                .to_owned(),
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
    let response = fx.create_session(&identity).await;

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
    let response = fx.create_session(&identity).await;
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
    let response = fx.create_session(&identity).await;
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
        let signer = proxy_signer(&cert);
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
        assumed_role_arn: String::new(),
        assumed_role_id: String::new(),
    };
    let err = fx.refused_cluster_call(&creds).await;
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err:?}");
}

#[tokio::test]
async fn redshift_call_with_wrong_secret_or_token_is_rejected() {
    let fx = Fixture::new(None).await;
    let good = fx.session().await;

    let mut wrong_secret = good.clone();
    wrong_secret.secret_access_key = "y".repeat(40);
    let err = fx.refused_cluster_call(&wrong_secret).await;
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");

    let mut wrong_token = good;
    wrong_token.session_token.push('x');
    let err = fx.refused_cluster_call(&wrong_token).await;
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err:?}");
}

#[tokio::test]
async fn redshift_call_with_expired_session_is_rejected() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    fx.emulator.expire_sessions();
    let err = fx.refused_cluster_call(&creds).await;
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
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
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
    let response = fx.create_session(&identity).await;
    assert_eq!(
        (response.status, response.error_type().as_str()),
        (429, "ThrottlingException")
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

// ---- credentials that log in through the stand-ins ------------------------------------------

/// The shared test PostgreSQL behind the stand-ins.
fn pg() -> &'static PgServer {
    // A missing PostgreSQL fails loudly (CI installs it); it never skips.
    PgServer::shared()
}

async fn create_role(role: &str, login: bool) {
    pg().admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE {} {}",
            quote_ident(role),
            if login { "LOGIN" } else { "NOLOGIN" }
        ))
        .await
        .unwrap();
}

/// tokio-postgres (md5) through the stand-in of `target`, verify-full.
async fn login(
    fx: &Fixture,
    target: &str,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    standin::connect(
        &fx.emulator.endpoint(target).unwrap(),
        user,
        password,
        database,
    )
    .await
}

/// SQLSTATE and message of a refused login.
fn refusal(result: Result<tokio_postgres::Client, tokio_postgres::Error>) -> (String, String) {
    let err = result.expect_err("the login was refused");
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("no server error: {err}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

async fn current_user(client: &tokio_postgres::Client) -> String {
    client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

async fn is_member(role: &str, group: &str) -> bool {
    pg().admin()
        .await
        .unwrap()
        .query_one(
            "select pg_has_role($1, $2, 'MEMBER')",
            &[&pg_role_name(role), &group],
        )
        .await
        .unwrap()
        .get(0)
}

/// GetClusterCredentials for `db_user` on the fixture's cluster (AutoCreate).
async fn cluster_credentials(
    fx: &Fixture,
    creds: &SessionCredentials,
    db_user: &str,
    db_name: Option<&str>,
    groups: &[&str],
) -> (String, String) {
    let out = fx
        .redshift(creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(db_user)
        .set_db_name(db_name.map(str::to_owned))
        .auto_create(true)
        .set_db_groups(
            (!groups.is_empty()).then(|| groups.iter().map(|g| (*g).to_owned()).collect()),
        )
        .send()
        .await
        .unwrap();
    (
        out.db_user().unwrap().to_owned(),
        out.db_password().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn get_cluster_credentials_log_in_through_the_stand_in_as_the_auto_created_user() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("alice");
    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .db_name("postgres")
        .auto_create(true)
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let user = out.db_user().unwrap().to_owned();
    let password = out.db_password().unwrap().to_owned();
    assert_eq!(user, format!("IAMA:{db_user}"));
    assert!(out.request_id().is_some());

    let client = login(&fx, CLUSTER, &user, &password, "postgres")
        .await
        .unwrap();
    assert_eq!(current_user(&client).await, user);
    // The password is the stand-in's business: PostgreSQL's role has none.
    let stored: Option<String> = pg()
        .admin()
        .await
        .unwrap()
        .query_one(
            "select rolpassword from pg_authid where rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, None);
    assert_eq!(
        refusal(login(&fx, CLUSTER, &user, "wrong-password", "postgres").await),
        (
            "28000".to_owned(),
            format!("password authentication failed for user \"{user}\"")
        )
    );
    let records: Vec<_> = fx
        .cluster()
        .logins()
        .into_iter()
        .filter(|r| r.user == user)
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].outcome, LoginOutcome::Ok);
    assert_eq!(records[0].auth_method, Some(standin::AuthMethod::Md5));
    assert_eq!(records[0].pg_role.as_deref(), Some(user.as_str()));
    assert_eq!(records[0].database, "postgres");
    assert!(
        matches!(records[1].outcome, LoginOutcome::Refused { ref sqlstate, .. } if sqlstate == "28000")
    );
}

#[tokio::test]
async fn every_call_issues_its_own_password_valid_until_it_expires() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let db_user = PgServer::unique_name("shared");
    let (user, first) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    let (_, second) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    assert_ne!(first, second, "a new password per call");
    // Both work on their own: the first is superseded but has not expired.
    for password in [&first, &second] {
        let client = login(&fx, CLUSTER, &user, password, "postgres")
            .await
            .unwrap();
        assert_eq!(current_user(&client).await, user);
    }

    // A credential that expires at once: refused as expired; the others still work.
    fx.emulator.set_db_credential_lifetime(Some(Duration::ZERO));
    let (_, expired) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    fx.emulator.set_db_credential_lifetime(None);
    let expired_message = (
        "28000".to_owned(),
        "IAM Authentication token has expired".to_owned(),
    );
    assert_eq!(
        refusal(login(&fx, CLUSTER, &user, &expired, "postgres").await),
        expired_message
    );
    login(&fx, CLUSTER, &user, &first, "postgres")
        .await
        .unwrap();

    // Time passes for everything issued so far.
    fx.emulator.expire_db_credentials().await.unwrap();
    for password in [&first, &second] {
        assert_eq!(
            refusal(login(&fx, CLUSTER, &user, password, "postgres").await),
            expired_message
        );
    }
    let (_, fresh) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    login(&fx, CLUSTER, &user, &fresh, "postgres")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_credential_for_a_database_opens_only_that_database() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let other = PgServer::unique_name("otherdb");
    pg().create_database(&other).await.unwrap();
    let db_user = PgServer::unique_name("bound");
    let (user, bound) = cluster_credentials(&fx, &creds, &db_user, Some("postgres"), &[]).await;
    login(&fx, CLUSTER, &user, &bound, "postgres")
        .await
        .unwrap();
    // Redshift's text for another database is UNCONFIRMED; the stand-in refuses it as a
    // password failure.
    assert_eq!(
        refusal(login(&fx, CLUSTER, &user, &bound, &other).await).0,
        "28000"
    );
    // Without DbName, any database.
    let (_, unbound) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    login(&fx, CLUSTER, &user, &unbound, "postgres")
        .await
        .unwrap();
    login(&fx, CLUSTER, &user, &unbound, &other).await.unwrap();
}

#[tokio::test]
async fn db_groups_apply_to_the_session_only_and_must_exist() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let readers = PgServer::unique_name("readers");
    let auditors = PgServer::unique_name("auditors");
    create_role(&readers, false).await;
    create_role(&auditors, false).await;
    let db_user = PgServer::unique_name("grouped");
    let (user, password) =
        cluster_credentials(&fx, &creds, &db_user, None, &[&readers, &auditors]).await;
    // A membership the user already had is not the session's to take away.
    pg().admin()
        .await
        .unwrap()
        .batch_execute(&format!(
            "GRANT {} TO {}",
            quote_ident(&auditors),
            quote_ident(&user)
        ))
        .await
        .unwrap();
    assert!(!is_member(&user, &readers).await);

    let client = login(&fx, CLUSTER, &user, &password, "postgres")
        .await
        .unwrap();
    let in_session: bool = client
        .query_one(
            "select pg_has_role(current_user, $1, 'MEMBER')",
            &[&readers],
        )
        .await
        .unwrap()
        .get(0);
    assert!(in_session);
    assert_eq!(fx.cluster().active_sessions(), 1);
    drop(client);
    fx.cluster().wait_for_active_sessions(0).await;
    assert!(
        !is_member(&user, &readers).await,
        "the session's group outlived it"
    );
    assert!(
        is_member(&user, &auditors).await,
        "a standing membership was revoked"
    );

    // A group that does not exist: the API call succeeds, the login fails.
    let missing = PgServer::unique_name("missing");
    let (_, password) = cluster_credentials(&fx, &creds, &db_user, None, &[&missing]).await;
    assert_eq!(
        refusal(login(&fx, CLUSTER, &user, &password, "postgres").await),
        (
            "42704".to_owned(),
            format!("group \"{missing}\" does not exist")
        )
    );
}

#[tokio::test]
async fn without_auto_create_the_call_succeeds_and_the_login_fails_until_the_user_exists() {
    let fx = Fixture::new(Some(pg())).await;
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
    let user = out.db_user().unwrap().to_owned();
    let password = out.db_password().unwrap().to_owned();
    assert_eq!(user, format!("IAM:{db_user}"));
    assert_eq!(
        refusal(login(&fx, CLUSTER, &user, &password, "postgres").await),
        (
            "28000".to_owned(),
            format!("password authentication failed for user \"{user}\"")
        )
    );
    let exists = pg()
        .admin()
        .await
        .unwrap()
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap();
    assert!(exists.is_none(), "the emulator must not create the user");

    // Once the user exists, the same credential logs in.
    create_role(&user, true).await;
    let client = login(&fx, CLUSTER, &user, &password, "postgres")
        .await
        .unwrap();
    assert_eq!(current_user(&client).await, user);
}

#[tokio::test]
async fn a_64_character_db_user_logs_in_under_a_mapped_role_name() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let prefix = PgServer::unique_name("long");
    let db_user = format!("{prefix}{}", "x".repeat(64 - prefix.len()));
    assert_eq!(db_user.len(), 64);
    let (user, password) = cluster_credentials(&fx, &creds, &db_user, None, &[]).await;
    assert_eq!(
        user.len(),
        69,
        "IAMA: and the 64 characters, as Redshift returns it"
    );
    let client = login(&fx, CLUSTER, &user, &password, "postgres")
        .await
        .unwrap();
    let who = current_user(&client).await;
    assert_eq!(who, pg_role_name(&user));
    assert_eq!(who.len(), 63);
    // 65 characters are beyond the documented limit.
    let err = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(format!("{db_user}y"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn iam_derived_users_for_cluster_and_serverless() {
    let fx = Fixture::new(Some(pg())).await;
    let creds = fx.session().await;
    let role_name = fx.role_name().to_owned();

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
    let client = login(
        &fx,
        CLUSTER,
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();
    assert_eq!(current_user(&client).await, format!("IAMR:{role_name}"));

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
    login(
        &fx,
        WORKGROUP,
        out.db_user().unwrap(),
        out.db_password().unwrap(),
        "postgres",
    )
    .await
    .unwrap();
    // A workgroup's credential is not the cluster's.
    assert_eq!(
        refusal(
            login(
                &fx,
                CLUSTER,
                out.db_user().unwrap(),
                out.db_password().unwrap(),
                "postgres"
            )
            .await
        )
        .0,
        "28000"
    );
    assert_eq!(fx.emulator.calls(Api::GetCredentials), 1);
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentialsWithIam), 1);
}

// ---- IAM authorization ----------------------------------------------------------------------

fn cluster_arn(kind: &str, name: &str) -> String {
    format!("arn:aws:redshift:{REGION}:{ACCOUNT}:{kind}:{CLUSTER}/{name}")
}

/// Code, HTTP status and message of a failed SDK call.
fn denial<E, R>(err: &SdkError<E, R>) -> (String, u16, String)
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: HasStatus + std::fmt::Debug,
{
    (
        err.code().unwrap_or_default().to_owned(),
        err.raw_response().map_or(0, HasStatus::status),
        err.message().unwrap_or_default().to_owned(),
    )
}

trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[tokio::test]
async fn policies_decide_which_users_databases_groups_and_actions_a_role_may_use() {
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["redshift:GetClusterCredentials", "redshift:CreateClusterUser"],
                "Resource": [cluster_arn("dbuser", "alice_*"), cluster_arn("dbname", "postgres")]
            },
            {"Effect": "Allow", "Action": "redshift:JoinGroup", "Resource": cluster_arn("dbgroup", "readers")},
            {"Effect": "Deny", "Action": "redshift:*", "Resource": cluster_arn("dbuser", "alice_admin")}
        ]
    })
    .to_string();
    let fx = Fixture::with(Some(pg()), |c| {
        c.role_policies = BTreeMap::from([(c.role_arns[0].clone(), policy)]);
    })
    .await;
    let creds = fx.session().await;
    let client = fx.redshift(&creds);
    let db_user = format!("alice_{}", PgServer::unique_name("x"));
    let call = |user: &str, db: &str, group: Option<&str>, auto_create: bool, cluster: &str| {
        client
            .get_cluster_credentials()
            .cluster_identifier(cluster)
            .db_user(user)
            .db_name(db)
            .auto_create(auto_create)
            .set_db_groups(group.map(|g| vec![g.to_owned()]))
            .send()
    };
    call(&db_user, "postgres", Some("readers"), true, CLUSTER)
        .await
        .unwrap();
    let who = &creds.assumed_role_arn;
    let gcc = "redshift:GetClusterCredentials";
    let implicit = |action: &str, resource: String| {
        (
            "AccessDenied".to_owned(),
            403,
            format!(
                "User: {who} is not authorized to perform: {action} on resource: {resource} \
                 because no identity-based policy allows the {action} action"
            ),
        )
    };
    assert_eq!(
        denial(
            &call(&db_user, "prod", None, true, CLUSTER)
                .await
                .unwrap_err()
        ),
        implicit(gcc, cluster_arn("dbname", "prod"))
    );
    assert_eq!(
        denial(
            &call(&db_user, "postgres", Some("writers"), true, CLUSTER)
                .await
                .unwrap_err()
        ),
        implicit("redshift:JoinGroup", cluster_arn("dbgroup", "writers"))
    );
    assert_eq!(
        denial(
            &call("bob", "postgres", None, false, CLUSTER)
                .await
                .unwrap_err()
        ),
        implicit(gcc, cluster_arn("dbuser", "bob"))
    );
    assert_eq!(
        denial(
            &call("alice_admin", "postgres", None, false, CLUSTER)
                .await
                .unwrap_err()
        ),
        (
            "AccessDenied".to_owned(),
            403,
            format!(
                "User: {who} is not authorized to perform: {gcc} on resource: {} with an \
                 explicit deny in an identity-based policy",
                cluster_arn("dbuser", "alice_admin")
            )
        )
    );
    // Authorization comes before the cluster lookup: another cluster is AccessDenied, not
    // ClusterNotFound (the DbUser in the ARN exactly as passed, colon included).
    let (code, status, message) = denial(
        &call("IAM:alice_1", "postgres", None, false, "nosuch")
            .await
            .unwrap_err(),
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    assert!(message.contains(":dbuser:nosuch/IAM:alice_1 "), "{message}");
    // Not granted at all: WithIAM and serverless.
    let err = client
        .get_cluster_credentials_with_iam()
        .cluster_identifier(CLUSTER)
        .db_name("postgres")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        denial(&err),
        implicit(
            "redshift:GetClusterCredentialsWithIAM",
            cluster_arn("dbname", "postgres")
        )
    );
    let err = fx.refused_workgroup_call(&creds).await;
    assert_eq!(err.code(), Some("AccessDeniedException"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    assert!(
        err.message().unwrap().contains(&format!(
            "redshift-serverless:GetCredentials on resource: arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/{WORKGROUP_ID}"
        )),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_role_without_a_policy_may_do_nothing() {
    let fx = Fixture::with(None, |c| c.role_policies.clear()).await;
    let creds = fx.session().await;
    let err = fx.refused_cluster_call(&creds).await;
    assert_eq!(err.code(), Some("AccessDenied"));
    let err = fx.refused_workgroup_call(&creds).await;
    assert_eq!(err.code(), Some("AccessDeniedException"));
}

#[tokio::test]
async fn conditions_and_variables_bind_the_db_user_to_the_role_session_name() {
    // The documented pattern (research aws-iam.md §1, example 4): the session name must be
    // the DbUser plus a domain, and DurationSeconds is capped.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow",
            "Action": "redshift:GetClusterCredentials",
            "Resource": format!("arn:aws:redshift:{REGION}:{ACCOUNT}:dbuser:*/${{redshift:DbUser}}"),
            "Condition": {
                "StringLike": {"aws:userid": "AROA*:${redshift:DbUser}@example.com"},
                "NumericLessThanEqualsIfExists": {"redshift:DurationSeconds": 1800}
            }
        }
    })
    .to_string();
    let fx = Fixture::with(None, |c| {
        c.accept_role_session_name = true;
        c.role_policies = BTreeMap::from([(c.role_arns[0].clone(), policy)]);
    })
    .await;
    let creds = fx.named_session("carol@example.com").await;
    assert!(creds.assumed_role_id.ends_with(":carol@example.com"));
    let client = fx.redshift(&creds);
    let call = |user: &str, duration: Option<i32>| {
        client
            .get_cluster_credentials()
            .cluster_identifier("nosuch")
            .db_user(user)
            .set_duration_seconds(duration)
            .send()
    };
    // Allowed: the cluster lookup then fails, which shows authorization passed.
    assert_eq!(
        call("carol", None).await.unwrap_err().code(),
        Some("ClusterNotFound")
    );
    assert_eq!(
        call("carol", Some(900)).await.unwrap_err().code(),
        Some("ClusterNotFound")
    );
    assert_eq!(
        call("carol", Some(3600)).await.unwrap_err().code(),
        Some("AccessDenied")
    );
    assert_eq!(
        call("dave", None).await.unwrap_err().code(),
        Some("AccessDenied")
    );
    // A DbUser with a wildcard character is literal text in the ARN and the condition.
    assert_eq!(
        call("*", None).await.unwrap_err().code(),
        Some("AccessDenied")
    );
}

#[tokio::test]
async fn revoked_sessions_are_denied_explicitly() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    let call = |creds: &SessionCredentials| {
        fx.redshift(creds)
            .get_cluster_credentials()
            .cluster_identifier("nosuch")
            .db_user("alice")
            .send()
    };
    assert_eq!(
        call(&creds).await.unwrap_err().code(),
        Some("ClusterNotFound")
    );
    fx.emulator.revoke_sessions();
    let err = call(&creds).await.unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"));
    assert!(
        err.message()
            .unwrap()
            .ends_with("with an explicit deny in an identity-based policy"),
        "{err:?}"
    );
    let fresh = fx.session().await;
    assert_eq!(
        call(&fresh).await.unwrap_err().code(),
        Some("ClusterNotFound")
    );
}

#[tokio::test]
async fn the_readmes_iam_policy_allows_what_it_names_and_nothing_else() {
    use proxy_testkit::emulator::iam::{evaluate, Decision, Policy, RequestContext};
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .unwrap();
    let section = &readme[readme.find("### The IAM policy of the role").unwrap()..];
    let start = section.find("```json\n").unwrap() + "```json\n".len();
    let json = &section[start..start + section[start..].find("\n```").unwrap()];
    let words: Vec<&str> = section[..start].split_whitespace().collect();
    assert!(
        words
            .join(" ")
            .contains("Replace region, account, cluster, users, groups and the workgroup ID"),
        "the README no longer says what operators replace"
    );
    // Only what the README tells operators to replace: region, account, cluster and
    // workgroup ID (its users and groups already fit).
    let adapt = |region: &str, account: &str, cluster: &str, workgroup_id: &str| {
        json.replace("us-east-1", region)
            .replace("123456789012", account)
            .replace("examplecluster", cluster)
            .replace("a1b2c3d4-5678-90ab-cdef-EXAMPLE33333", workgroup_id)
    };
    // The stack and the sandbox use exactly this policy.
    use proxy_testkit::stack;
    let for_stack = adapt(
        stack::REGION,
        stack::ACCOUNT,
        stack::CLUSTER,
        stack::WORKGROUP_ID,
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&for_stack).unwrap(),
        serde_json::from_str::<serde_json::Value>(&stack::iam_policy()).unwrap()
    );

    let policy = adapt(REGION, ACCOUNT, CLUSTER, WORKGROUP_ID);
    let fx = Fixture::with(Some(pg()), |c| {
        c.role_policies = BTreeMap::from([(c.role_arns[0].clone(), policy.clone())]);
        let mut other = c.workgroups[0].clone();
        other.name = "other-wg".to_owned();
        other.id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".to_owned();
        c.workgroups.push(other);
    })
    .await;
    let creds = fx.session().await;
    let client = fx.redshift(&creds);
    let call = |db: &str, group: &str| {
        client
            .get_cluster_credentials()
            .cluster_identifier(CLUSTER)
            .db_user(PgServer::unique_name("alice"))
            .db_name(db)
            .auto_create(true)
            .db_groups(group)
            .send()
    };
    call("dev", "analysts").await.unwrap();
    assert_eq!(
        call("prod", "analysts").await.unwrap_err().code(),
        Some("AccessDenied")
    );
    assert_eq!(
        call("dev", "writers").await.unwrap_err().code(),
        Some("AccessDenied")
    );
    let with_iam = |db: &str| {
        client
            .get_cluster_credentials_with_iam()
            .cluster_identifier(CLUSTER)
            .db_name(db)
            .send()
    };
    with_iam("dev").await.unwrap();
    assert_eq!(
        with_iam("prod").await.unwrap_err().code(),
        Some("AccessDenied")
    );
    let serverless = fx.serverless(&creds);
    serverless
        .get_credentials()
        .workgroup_name(WORKGROUP)
        .send()
        .await
        .unwrap();
    let err = serverless
        .get_credentials()
        .workgroup_name("other-wg")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDeniedException"));
    // An action the README does not grant.
    let parsed = Policy::parse(&policy).unwrap();
    let ctx = RequestContext::new();
    assert_eq!(
        evaluate(
            std::slice::from_ref(&parsed),
            "redshift:DescribeClusters",
            &format!("arn:aws:redshift:{REGION}:{ACCOUNT}:cluster:{CLUSTER}"),
            &ctx
        ),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(
            std::slice::from_ref(&parsed),
            "redshift:GetClusterCredentials",
            &cluster_arn("dbuser", "anyone"),
            &ctx
        ),
        Decision::Allow
    );
}

// ---- Roles Anywhere session names -------------------------------------------------------------

impl Fixture {
    /// A session whose CreateSession names the role session.
    async fn named_session(&self, name: &str) -> SessionCredentials {
        let response = self.create_named_session(name).await;
        assert_eq!(response.status, 201, "{}", response.text());
        SessionCredentials::from_response(&response)
    }

    async fn create_named_session(&self, name: &str) -> Response {
        let identity = self.identity(ClientCertSpec::new("named-job"));
        let mut body: serde_json::Value =
            serde_json::from_str(&self.create_session_body()).unwrap();
        body["roleSessionName"] = serde_json::json!(name);
        send(
            &self.emulator,
            &identity.sign(self, SignOptions::new(body.to_string())),
        )
        .await
    }
}

#[tokio::test]
async fn role_session_names_need_a_profile_that_accepts_them() {
    let fx = Fixture::new(None).await;
    let response = fx.create_named_session("carol@example.com").await;
    assert_eq!(
        (response.status, response.error_type().as_str()),
        (403, "AccessDeniedException")
    );
    // Without a name: the certificate's serial in hex, under a stable role ID.
    let cert = fx
        .pki
        .client_cert(ClientCertSpec::new("serial-job"))
        .unwrap();
    let identity = TestIdentity::load(&cert);
    let response = fx.create_session(&identity).await;
    let creds = SessionCredentials::from_response(&response);
    let serial = cert.serial.to_hex();
    assert_eq!(
        creds.assumed_role_arn,
        format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{}/{serial}",
            fx.role_name()
        )
    );
    let (role_id, session) = creds.assumed_role_id.split_once(':').unwrap();
    assert_eq!(session, serial);
    assert!(
        role_id.starts_with("AROA") && role_id.len() == 21,
        "{role_id}"
    );
    let again = fx.session().await;
    assert!(again.assumed_role_id.starts_with(&format!("{role_id}:")));

    let fx = Fixture::with(None, |c| c.accept_role_session_name = true).await;
    let creds = fx.named_session("carol@example.com").await;
    assert!(creds.assumed_role_arn.ends_with("/carol@example.com"));
    let response = fx.create_named_session("c").await;
    assert_eq!(
        (response.status, response.error_type().as_str()),
        (400, "ValidationException")
    );
}

// ---- throttling and CloudTrail ---------------------------------------------------------------

#[tokio::test]
async fn throttling_answers_with_each_protocols_status() {
    let fx = Fixture::new(None).await;
    let creds = fx.session().await;
    fx.emulator
        .faults()
        .throttle_next(Some(Api::GetClusterCredentials), 1);
    let err = fx.refused_cluster_call(&creds).await;
    assert_eq!(
        (err.code(), err.raw_response().unwrap().status().as_u16()),
        (Some("Throttling"), 400)
    );
    fx.emulator
        .faults()
        .throttle_next(Some(Api::GetCredentials), 1);
    let err = fx.refused_workgroup_call(&creds).await;
    assert_eq!(
        (err.code(), err.raw_response().unwrap().status().as_u16()),
        (Some("ThrottlingException"), 429)
    );
    fx.emulator
        .faults()
        .throttle_next(Some(Api::CreateSession), 1);
    let identity = fx.identity(ClientCertSpec::new("job"));
    let response = fx.create_session(&identity).await;
    assert_eq!(
        (response.status, response.error_type().as_str()),
        (429, "ThrottlingException")
    );
}

#[tokio::test]
async fn cloudtrail_records_every_call_with_the_role_session_and_no_secrets() {
    let trail_dir = tempfile::tempdir().unwrap();
    let trail_file = trail_dir.path().join("cloudtrail.jsonl");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "redshift:*", "Resource": cluster_arn("dbuser", "alice_*")},
            {"Effect": "Allow", "Action": "redshift-serverless:GetCredentials", "Resource": "*"}
        ]
    })
    .to_string();
    let file = trail_file.clone();
    let fx = Fixture::with(Some(pg()), move |c| {
        c.cloudtrail_file = Some(file);
        c.role_policies = BTreeMap::from([(c.role_arns[0].clone(), policy)]);
    })
    .await;
    let creds = fx.session_as(ClientCertSpec::new("trail-job")).await;
    let db_user = format!("alice_{}", PgServer::unique_name("t"));
    let out = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user(&db_user)
        .auto_create(true)
        .send()
        .await
        .unwrap();
    let password = out.db_password().unwrap().to_owned();
    let request_id = out.request_id().unwrap().to_owned();
    let denied = fx
        .redshift(&creds)
        .get_cluster_credentials()
        .cluster_identifier(CLUSTER)
        .db_user("bob")
        .send()
        .await
        .unwrap_err();
    let serverless = fx
        .serverless(&creds)
        .get_credentials()
        .workgroup_name(WORKGROUP)
        .send()
        .await
        .unwrap();

    let records = fx.emulator.cloudtrail();
    assert_eq!(records.len(), 4, "{records:#?}");
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "CreateSession",
            "GetClusterCredentials",
            "GetClusterCredentials",
            "GetCredentials"
        ]
    );
    let ok = &records[1];
    assert_eq!(ok["eventVersion"], "1.08");
    assert_eq!(ok["eventSource"], "redshift.amazonaws.com");
    assert_eq!(ok["awsRegion"], REGION);
    assert_eq!(ok["requestID"], request_id.as_str());
    assert_ne!(ok["eventID"], ok["requestID"]);
    assert_eq!(ok["recipientAccountId"], ACCOUNT);
    assert_eq!(ok["sourceIPAddress"], "127.0.0.1");
    let identity = &ok["userIdentity"];
    assert_eq!(identity["type"], "AssumedRole");
    assert_eq!(identity["arn"], creds.assumed_role_arn.as_str());
    assert_eq!(identity["principalId"], creds.assumed_role_id.as_str());
    assert_eq!(identity["accessKeyId"], creds.access_key_id.as_str());
    assert_eq!(
        identity["sessionContext"]["sessionIssuer"]["arn"],
        fx.role_arn.as_str()
    );
    assert_eq!(identity["sessionContext"]["sourceIdentity"], "trail-job");
    assert_eq!(
        ok["requestParameters"],
        serde_json::json!({"clusterIdentifier": CLUSTER, "dbUser": db_user, "autoCreate": true})
    );
    assert_eq!(ok["responseElements"]["dbUser"], format!("IAMA:{db_user}"));
    assert_eq!(
        ok["responseElements"]["dbPassword"],
        "HIDDEN_DUE_TO_SECURITY_REASONS"
    );
    assert!(ok.get("errorCode").is_none());

    let no = &records[2];
    assert_eq!(no["errorCode"], "AccessDenied");
    assert_eq!(no["errorMessage"], denied.message().unwrap());
    assert!(no["errorMessage"]
        .as_str()
        .unwrap()
        .contains(&creds.assumed_role_arn));
    assert_eq!(no["userIdentity"]["arn"], creds.assumed_role_arn.as_str());
    assert!(no["responseElements"].is_null());
    assert_eq!(
        records[3]["eventSource"],
        "redshift-serverless.amazonaws.com"
    );
    assert_eq!(
        records[0]["responseElements"]["credentialSet"][0]["credentials"]["sessionToken"],
        "HIDDEN_DUE_TO_SECURITY_REASONS"
    );

    // No secret anywhere: not the database passwords, not the session's keys.
    let text = serde_json::to_string(&records).unwrap();
    for secret in [
        password.as_str(),
        serverless.db_password().unwrap(),
        creds.secret_access_key.as_str(),
        creds.session_token.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret is in the trail");
    }
    // The same records as JSON lines in the file, and at the control endpoint.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trail_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, records);
    let mut stream = tokio::net::TcpStream::connect(fx.emulator.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /_emulator/cloudtrail HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let served: serde_json::Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(served.as_array().unwrap().len(), 4);
}

// ---- the aws-emulator binary ----------------------------------------------------------------

#[tokio::test]
async fn binary_serves_the_configured_emulator_and_writes_the_ready_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path().join("pki")).unwrap();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/Reader");
    let config = EmulatorConfig {
        trust_anchor_arn: trust_anchor_arn(),
        trust_anchor_ca_pem: None,
        trust_anchor_ca_file: Some(pki.ca_cert_path().to_owned()),
        profile_arn: profile_arn(),
        accept_role_session_name: false,
        role_arns: vec![role.clone()],
        max_session_duration: Duration::from_secs(3600),
        cloudtrail_file: Some(dir.path().join("trail.jsonl")),
        clusters: vec![ClusterSpec {
            identifier: CLUSTER.to_owned(),
            region: REGION.to_owned(),
            custom_domain_name: None,
            admin: PgAdmin::new("/nonexistent", 1, "nobody"),
            standin: StandInSpec::default(),
        }],
        workgroups: Vec::new(),
        role_policies: BTreeMap::from([(role, allow_all_redshift_policy())]),
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
    let ready: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the emulator exited during startup"
        );
        assert!(std::time::Instant::now() < deadline, "no ready file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = ready["url"].as_str().unwrap();
    let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /_emulator/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

    // The cluster's stand-in listens and speaks TLS after an SSLRequest.
    let standin = &ready["standins"][0];
    assert_eq!(standin["kind"], "cluster");
    assert_eq!(standin["name"], CLUSTER);
    assert!(std::path::Path::new(standin["ca_cert"].as_str().unwrap()).is_file());
    let port = u16::try_from(standin["port"].as_u64().unwrap()).unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    child.kill().await.unwrap();
}
