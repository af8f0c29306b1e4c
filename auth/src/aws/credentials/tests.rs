use super::*;
use crate::aws::roles_anywhere::test_support::{FakeRolesAnywhere, Reply, TestIdentity};
use proxy_config::RolesAnywhereConfig;
use rcgen::PKCS_ECDSA_P256_SHA256;
use std::path::Path;
use std::time::Duration;

const ROLE: &str = "arn:aws:iam::123456789012:role/proxy";
const OTHER_ROLE: &str = "arn:aws:iam::123456789012:role/analyst";

fn role(text: &str) -> Arn {
    Arn::iam_role(text).unwrap()
}

fn roles_anywhere_config(dir: &Path, endpoint: Option<String>) -> (AwsConfig, TestIdentity) {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let ra = RolesAnywhereConfig {
        certificate: write("proxy.crt", &identity.cert_pem),
        private_key: write("proxy-key.txt", &identity.key_pkcs8_pem()),
        chain: None,
        private_key_passphrase_env: None,
        private_key_passphrase_file: None,
        trust_anchor_arn: Arn::trust_anchor(
            "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t",
        )
        .unwrap(),
        profile_arn: Arn::roles_anywhere_profile(
            "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p",
        )
        .unwrap(),
        role_arn: role(ROLE),
        region: None,
        session_duration: Duration::from_secs(3600),
        role_session_name: None,
        max_sessions: 1000,
        endpoint_url: endpoint,
    };
    let config = AwsConfig {
        source: AwsCredentialSource::RolesAnywhere,
        roles_anywhere: Some(ra),
        ..AwsConfig::default()
    };
    (config, identity)
}

fn hourly(_: usize) -> Reply {
    Reply::Success {
        expiration: SystemTime::now() + Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn roles_anywhere_gives_one_provider_per_role() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = roles_anywhere_config(dir.path(), Some(server.endpoint.clone()));
    let credentials = AwsCredentials::from_config(&config).await.unwrap();
    assert_eq!(credentials.source(), AwsCredentialSource::RolesAnywhere);

    // The default role, twice (through `None` and by name): one session.
    let default = credentials.provider(None).unwrap();
    let same = credentials.provider(Some(&role(ROLE))).unwrap();
    assert_eq!(
        default.provide_credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
    assert_eq!(
        same.provide_credentials().await.unwrap().access_key_id(),
        "AKID0"
    );
    assert_eq!(server.calls(), 1);

    // A rule's own role: its own session, same certificate, profile and trust anchor.
    let other = credentials.provider(Some(&role(OTHER_ROLE))).unwrap();
    assert_eq!(
        other.provide_credentials().await.unwrap().access_key_id(),
        "AKID1"
    );
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests[0].body["roleArn"], ROLE);
    assert_eq!(requests[1].body["roleArn"], OTHER_ROLE);
    assert_eq!(
        requests[0].body["profileArn"],
        requests[1].body["profileArn"]
    );
    assert!(requests.iter().all(|r| r.verified.is_ok()));
}

#[tokio::test]
async fn check_reports_expiration_request_id_and_certificate() {
    let server = FakeRolesAnywhere::start(hourly).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, identity) = roles_anywhere_config(dir.path(), Some(server.endpoint.clone()));
    let credentials = AwsCredentials::from_config(&config).await.unwrap();
    let summary = credentials.check(None).await.unwrap();
    assert_eq!(summary.source, AwsCredentialSource::RolesAnywhere);
    assert_eq!(summary.role_arn.as_deref(), Some(ROLE));
    assert_eq!(summary.request_id.as_deref(), Some("req-0"));
    assert!(summary.expiration.unwrap() > SystemTime::now());
    let (_, cert) = x509_parser::parse_x509_certificate(&identity.cert_der).unwrap();
    assert_eq!(
        summary.certificate_serial,
        Some(cert.serial.to_str_radix(10))
    );
    let text = summary.to_string();
    assert!(
        text.starts_with("source=roles_anywhere role=arn:aws:iam::123456789012:role/proxy"),
        "{text}"
    );
    assert!(
        !text.contains("secret0") && !text.contains("token0") && !text.contains("AKID0"),
        "{text}"
    );
}

#[tokio::test]
async fn roles_anywhere_configuration_problems_surface_at_startup() {
    // (Malformed ARNs cannot get this far: they are refused when the file is parsed.)
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = roles_anywhere_config(dir.path(), None);
    let other = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    std::fs::write(
        &config.roles_anywhere.as_ref().unwrap().private_key,
        other.key_pkcs8_pem(),
    )
    .unwrap();
    let err = AwsCredentials::from_config(&config).await.unwrap_err();
    assert!(
        matches!(&err, CredentialError::Invalid(m) if m.contains("does not belong to the certificate")),
        "{err}"
    );

    config.roles_anywhere = None;
    assert!(AwsCredentials::from_config(&config).await.is_err());
}

#[tokio::test]
async fn region_defaults_to_the_trust_anchor_and_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = roles_anywhere_config(dir.path(), None);
    let ra = config.roles_anywhere.as_ref().unwrap();
    let shared = RolesAnywhere::from_config(ra, Duration::from_secs(300)).unwrap();
    assert_eq!(shared.region(), "eu-west-1");
    config.roles_anywhere.as_mut().unwrap().region = Some("us-east-2".into());
    let shared = RolesAnywhere::from_config(
        config.roles_anywhere.as_ref().unwrap(),
        Duration::from_secs(300),
    )
    .unwrap();
    assert_eq!(shared.region(), "us-east-2");
}

#[tokio::test]
async fn profile_and_default_sources_refuse_explicit_roles() {
    for source in [AwsCredentialSource::Profile, AwsCredentialSource::Default] {
        let config = AwsConfig {
            source,
            profile: Some("proxy".into()),
            region: Some("eu-west-1".into()),
            ..AwsConfig::default()
        };
        let credentials = AwsCredentials::from_config(&config).await.unwrap();
        assert_eq!(credentials.source(), source);
        assert!(credentials.provider(None).is_ok());
        let err = credentials.provider(Some(&role(ROLE))).unwrap_err();
        assert!(
            matches!(&err, CredentialError::Invalid(m) if m.contains("roles_anywhere")),
            "{err}"
        );
        assert!(matches!(
            credentials.check(Some(&role(ROLE))).await,
            Err(CredentialError::Invalid(_))
        ));
    }
}

/// The credentials of profile `proxy`, read from an AWS config file with `config` only.
// `ProfileFiles` is a deprecated alias of an `aws-runtime` type, which is not a dependency.
#[allow(deprecated)]
fn proxy_profile(config: &str) -> (tempfile::TempDir, AwsCredentials) {
    use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config");
    std::fs::write(&config_file, config).unwrap();
    let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .profile_files(
            ProfileFiles::builder()
                .with_file(ProfileFileKind::Config, &config_file)
                .build(),
        )
        .profile_name("proxy")
        .build();
    let credentials = AwsCredentials::from_provider(
        AwsCredentialSource::Profile,
        SharedCredentialsProvider::new(provider),
    );
    (dir, credentials)
}

#[tokio::test]
async fn profile_with_credential_process_is_checked_without_secrets() {
    let output = r#"{"Version":1,"AccessKeyId":"ASIAPROCESS","SecretAccessKey":"procsecret","SessionToken":"proctoken","Expiration":"2099-01-01T00:00:00Z"}"#;
    let (_dir, credentials) = proxy_profile(&format!(
        "[profile proxy]\ncredential_process = echo '{output}'\n"
    ));
    let summary = credentials.check(None).await.unwrap();
    assert_eq!(summary.source, AwsCredentialSource::Profile);
    assert_eq!(
        summary.expiration,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4_070_908_800))
    );
    let text = format!("{summary} {summary:?}");
    assert!(
        !text.contains("procsecret") && !text.contains("proctoken"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_profile_is_an_invalid_configuration() {
    let (_dir, credentials) = proxy_profile("[profile other]\nregion = eu-west-1\n");
    let err = credentials.check(None).await.unwrap_err();
    assert!(matches!(err, CredentialError::Invalid(_)), "{err}");
}
