use super::*;
use crate::aws::roles_anywhere::signer::SignerPem;
use crate::aws::roles_anywhere::test_support::{FakeRolesAnywhere, Reply, TestIdentity};
use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
use secrecy::ExposeSecret;

const ROLE: &str = "arn:aws:iam::123456789012:role/proxy";

fn request() -> SessionRequest {
    SessionRequest {
        profile_arn: "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p".into(),
        role_arn: ROLE.into(),
        trust_anchor_arn: "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t".into(),
        duration: Duration::from_secs(3600),
        role_session_name: None,
    }
}

fn signer(identity: &TestIdentity) -> X509Signer {
    let chain = identity.chain_pem_joined();
    X509Signer::from_pem(SignerPem {
        certificate: identity.cert_pem.as_bytes(),
        private_key: identity.key_pkcs8_pem().as_bytes(),
        chain: (!chain.is_empty()).then_some(chain.as_bytes()),
        ..SignerPem::default()
    })
    .unwrap()
}

fn client(server: &FakeRolesAnywhere) -> SessionClient {
    SessionClient::new("eu-west-1", Some(&server.endpoint), Duration::from_secs(5)).unwrap()
}

/// A CreateSession signed by a fresh self-signed identity, which must fail.
async fn failed_session(client: &SessionClient) -> SessionError {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    client
        .create_session(&signer(&identity), &request(), SystemTime::now())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn create_session_is_verified_by_the_server_and_returns_credentials() {
    let expiration = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let server = FakeRolesAnywhere::start(move |_| Reply::Success { expiration }).await;
    for identity in [
        TestIdentity::with_intermediate(&PKCS_RSA_SHA256),
        TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None),
        TestIdentity::self_signed(&PKCS_ECDSA_P384_SHA384, None),
    ] {
        let credentials = client(&server)
            .create_session(&signer(&identity), &request(), SystemTime::now())
            .await
            .unwrap();
        let index = server.calls() - 1;
        assert_eq!(credentials.access_key_id, format!("AKID{index}"));
        assert_eq!(
            credentials.secret_access_key.expose_secret(),
            format!("secret{index}")
        );
        assert_eq!(
            credentials.session_token.expose_secret(),
            format!("token{index}")
        );
        assert_eq!(credentials.expiration, expiration);
        assert_eq!(
            credentials.request_id.as_deref(),
            Some(format!("req-{index}").as_str())
        );
        assert_eq!(
            credentials.assumed_role_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/r/s")
        );
    }
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0].verified.as_deref(),
        Ok("content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain")
    );
    assert_eq!(
        requests[1].verified.as_deref(),
        Ok("content-type;host;x-amz-date;x-amz-x509")
    );
    assert!(requests[2].verified.is_ok());
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        requests[0].body,
        serde_json::json!({
            "profileArn": "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p",
            "roleArn": ROLE,
            "trustAnchorArn": "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t",
            "durationSeconds": 3600
        })
    );
}

#[tokio::test]
async fn role_session_name_is_sent_when_configured() {
    let server = FakeRolesAnywhere::start(|_| Reply::Success {
        expiration: SystemTime::now() + Duration::from_secs(3600),
    })
    .await;
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let mut req = request();
    req.role_session_name = Some("redshift-proxy".into());
    client(&server)
        .create_session(&signer(&identity), &req, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        server.requests.lock().unwrap()[0].body["roleSessionName"],
        "redshift-proxy"
    );
}

#[tokio::test]
async fn access_denied_maps_to_denied_with_request_id() {
    let server = FakeRolesAnywhere::start(|_| Reply::Error {
        status: 403,
        code: "AccessDeniedException",
        message: "Untrusted certificate. Insufficient certificate",
    })
    .await;
    let err = failed_session(&client(&server)).await;
    assert!(!err.is_retryable());
    assert_eq!(err.request_id(), Some("req-0"));
    match err.to_credential_error(ROLE) {
        CredentialError::Denied(message) => {
            assert!(message.contains("AccessDeniedException"), "{message}");
            assert!(message.contains("Untrusted certificate"), "{message}");
            assert!(message.contains("request id req-0"), "{message}");
            assert!(message.starts_with(ROLE), "{message}");
        }
        other => panic!("expected Denied, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused_by_the_verifying_server() {
    // Tamper with the body after signing: the server's independent verification must catch it.
    let server = FakeRolesAnywhere::start(|_| Reply::Success {
        expiration: SystemTime::now() + Duration::from_secs(3600),
    })
    .await;
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let session_client = client(&server);
    let mut http_request = session_client
        .build_request(&signer(&identity), &request(), SystemTime::now())
        .unwrap();
    *http_request.body_mut() = Full::new(Bytes::from_static(b"{\"roleArn\":\"other\"}"));
    let response = session_client.http.request(http_request).await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(server.requests.lock().unwrap()[0].verified.is_err());
}

#[tokio::test]
async fn throttling_server_errors_and_validation_are_classified() {
    let cases = [
        (429, "ThrottlingException", true, "Unavailable"),
        (400, "ThrottlingException", true, "Unavailable"),
        (503, "ServiceUnavailable", true, "Unavailable"),
        (500, "InternalServerException", true, "Unavailable"),
        (400, "ValidationException", false, "Invalid"),
        (404, "ResourceNotFoundException", false, "Invalid"),
        (403, "SomethingElse", false, "Denied"),
    ];
    for (status, code, retryable, kind) in cases {
        let server = FakeRolesAnywhere::start(move |_| Reply::Error {
            status,
            code,
            message: "m",
        })
        .await;
        let err = failed_session(&client(&server)).await;
        assert_eq!(err.is_retryable(), retryable, "{status} {code}");
        let mapped = match err.to_credential_error("role") {
            CredentialError::Denied(_) => "Denied",
            CredentialError::Unavailable(_) => "Unavailable",
            CredentialError::Invalid(_) => "Invalid",
            CredentialError::Throttled(_) => "Throttled",
        };
        assert_eq!(mapped, kind, "{status} {code}");
    }
}

#[tokio::test]
async fn unreachable_endpoint_is_a_retryable_transport_error() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = SessionClient::new(
        "eu-west-1",
        Some(&format!("http://127.0.0.1:{port}")),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = failed_session(&client).await;
    assert!(matches!(err, SessionError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(matches!(
        err.to_credential_error("r"),
        CredentialError::Unavailable(_)
    ));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = FakeRolesAnywhere::start(|_| Reply::Hang).await;
    let client = SessionClient::new(
        "eu-west-1",
        Some(&server.endpoint),
        Duration::from_millis(300),
    )
    .unwrap();
    let err = failed_session(&client).await;
    assert!(matches!(err, SessionError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
}

#[test]
fn malformed_success_bodies_never_echo_their_content() {
    let secret_looking = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":42,"sessionToken":"SUPERSECRET","expiration":"x"}}]}"#;
    let err = parse_success(secret_looking, Some("rid".into())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("malformed CreateSession response"), "{text}");
    assert!(text.contains("request id rid"), "{text}");
    assert!(
        !text.contains("SUPERSECRET") && !text.contains("42"),
        "{text}"
    );

    let err = parse_success(br#"{"credentialSet":[]}"#, None).unwrap_err();
    assert!(err.to_string().contains("empty credentialSet"));
    let bad_time = br#"{"credentialSet":[{"credentials":{"accessKeyId":"A","secretAccessKey":"s","sessionToken":"t","expiration":"tomorrow"}}]}"#;
    assert!(parse_success(bad_time, None)
        .unwrap_err()
        .to_string()
        .contains("RFC 3339"));
}

#[test]
fn error_type_is_read_from_header_or_body() {
    let mut headers = http::HeaderMap::new();
    let body =
        br#"{"__type":"com.amazonaws.rolesanywhere#ValidationException","message":"bad duration"}"#;
    let err = parse_error(http::StatusCode::BAD_REQUEST, &headers, body, None);
    assert!(
        matches!(&err, SessionError::Service { code: Some(c), message, .. } if c == "ValidationException" && message == "bad duration")
    );

    headers.insert(
        "x-amzn-errortype",
        "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/"
            .parse()
            .unwrap(),
    );
    let err = parse_error(
        http::StatusCode::FORBIDDEN,
        &headers,
        b"not json",
        Some("r".into()),
    );
    assert!(
        matches!(&err, SessionError::Service { code: Some(c), message, .. } if c == "AccessDeniedException" && message == "Forbidden")
    );

    let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
    let err = parse_error(
        http::StatusCode::BAD_REQUEST,
        &http::HeaderMap::new(),
        long.as_bytes(),
        None,
    );
    assert!(err.to_string().len() < 700);
}

#[test]
fn endpoints_default_per_partition_and_are_validated() {
    assert_eq!(
        default_endpoint("eu-west-1"),
        "https://rolesanywhere.eu-west-1.amazonaws.com"
    );
    assert_eq!(
        default_endpoint("cn-north-1"),
        "https://rolesanywhere.cn-north-1.amazonaws.com.cn"
    );
    let client = SessionClient::new("eu-west-1", None, Duration::from_secs(1)).unwrap();
    assert_eq!(
        client.endpoint(),
        "https://rolesanywhere.eu-west-1.amazonaws.com"
    );
    let client = SessionClient::new(
        "eu-west-1",
        Some("http://127.0.0.1:9/prefix/"),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(client.endpoint(), "http://127.0.0.1:9/prefix");
    for bad in ["ftp://x", "not a url", "https://h/?q=1", "/relative"] {
        assert!(
            SessionClient::new("r", Some(bad), Duration::from_secs(1)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn session_credentials_debug_redacts_secrets() {
    let credentials = SessionCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: SecretString::from("wJalrXUtnFEMI".to_owned()),
        session_token: SecretString::from("FwoGZXIvYXdzE".to_owned()),
        expiration: SystemTime::UNIX_EPOCH,
        request_id: None,
        assumed_role_arn: None,
    };
    let debug = format!("{credentials:?}");
    assert!(debug.contains("ASIAEXAMPLE"));
    assert!(!debug.contains("wJalrXUtnFEMI") && !debug.contains("FwoGZXIvYXdzE"));
}
