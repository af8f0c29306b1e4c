//! The SDK-backed fetcher against a canned local HTTP endpoint: what goes on the wire, how
//! responses become credentials and how failures are classified.

use super::endpoint::{ResolvedTarget, ResourceName, TargetApi};
use super::{AwsCredentialFetcher, FetchDbCredential};
use crate::aws::{AwsApi, AwsCallObserver, AwsCallOutcome, AwsCredentialsForRole};
use crate::db_credentials::{CredentialError, DbCredentialRequest};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use proxy_config::Arn;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the endpoint received it.
#[derive(Debug, Clone)]
struct Recorded {
    /// Header names lowercased.
    headers: HashMap<String, String>,
    body: String,
}

impl Recorded {
    /// The form fields of a query-protocol body.
    fn form(&self) -> HashMap<String, String> {
        self.body
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// An HTTP endpoint answering every request with the same canned response.
struct CannedEndpoint {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl CannedEndpoint {
    /// An endpoint answering with a Redshift query-protocol error.
    async fn redshift_error(status: u16, request_id: &str, code: &str, message: &str) -> Self {
        let body = redshift_error_xml(code, message);
        Self::start(status, &[("x-amzn-RequestId", request_id)], &body).await
    }

    async fn start(status: u16, headers: &[(&str, &str)], body: &str) -> CannedEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut response = format!(
            "HTTP/1.1 {status} Canned\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(body);
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                let response = response.clone();
                tokio::spawn(async move {
                    if let Some(request) = read_request(&mut stream).await {
                        recorded.lock().unwrap().push(request);
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        });
        CannedEndpoint { url, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request");
        requests.into_iter().next().expect("one request")
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        headers,
        body: String::from_utf8_lossy(&buf[header_end..header_end + length]).into_owned(),
    })
}

/// Static AWS credentials for every role; counts provider look-ups.
#[derive(Default)]
struct StaticAws {
    lookups: AtomicUsize,
    roles: Mutex<Vec<Option<Arn>>>,
}

impl AwsCredentialsForRole for StaticAws {
    fn provider(
        &self,
        role_arn: Option<&Arn>,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.roles.lock().unwrap().push(role_arn.cloned());
        Ok(SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )))
    }

    /// Each named session signs with a key of its own name.
    fn session_provider(
        &self,
        _: Option<&Arn>,
        name: &str,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        Ok(SharedCredentialsProvider::new(Credentials::new(
            format!("ASIA{}", name.to_uppercase()),
            "session-secret",
            Some("session-token".into()),
            None,
            "test",
        )))
    }
}

/// A role whose credential source refuses at look-up time.
struct NoRole;

impl AwsCredentialsForRole for NoRole {
    fn provider(&self, _: Option<&Arn>) -> Result<SharedCredentialsProvider, CredentialError> {
        Err(CredentialError::Denied(
            "role not allowed for this proxy".into(),
        ))
    }
}

/// A credential source that fails when the SDK asks it for credentials.
#[derive(Debug)]
struct RefusingProvider;

impl ProvideCredentials for RefusingProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::provider_error(
            CredentialError::Denied("Roles Anywhere: untrusted certificate".into()),
        )))
    }
}

struct RefusingAws;

impl AwsCredentialsForRole for RefusingAws {
    fn provider(&self, _: Option<&Arn>) -> Result<SharedCredentialsProvider, CredentialError> {
        Ok(SharedCredentialsProvider::new(RefusingProvider))
    }
}

fn provisioned(
    url: &str,
    cluster: ResourceName,
    with_iam: bool,
    auto_create: bool,
) -> ResolvedTarget {
    ResolvedTarget {
        name: "t1".into(),
        region: "us-east-1".into(),
        api: TargetApi::Provisioned {
            cluster,
            with_iam,
            auto_create,
        },
        credential_duration: Duration::from_secs(900),
        aws_endpoint_url: Some(url.into()),
    }
}

/// Cluster `c1` by identifier, without `WithIAM` or auto-create: the plain provisioned target.
fn cluster_c1(url: &str) -> ResolvedTarget {
    provisioned(url, ResourceName::Identifier("c1".into()), false, false)
}

/// A fetcher for one target whose roles all have static AWS credentials.
fn fetcher_for(target: ResolvedTarget) -> AwsCredentialFetcher {
    AwsCredentialFetcher::with_targets([target], Arc::new(StaticAws::default()))
}

/// Cluster `c1` with `WithIAM`, and an endpoint issuing `IAMR:bi` for it.
async fn with_iam_cluster() -> (CannedEndpoint, ResolvedTarget) {
    let endpoint = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-2")],
        &cluster_credentials_xml("GetClusterCredentialsWithIAM", "IAMR:bi"),
    )
    .await;
    let target = provisioned(
        &endpoint.url,
        ResourceName::Identifier("c1".into()),
        true,
        false,
    );
    (endpoint, target)
}

fn serverless(url: &str, workgroup: ResourceName) -> ResolvedTarget {
    ResolvedTarget {
        name: "t1".into(),
        region: "eu-west-1".into(),
        api: TargetApi::Serverless { workgroup },
        credential_duration: Duration::from_secs(1800),
        aws_endpoint_url: Some(url.into()),
    }
}

fn request(groups: &[&str]) -> DbCredentialRequest {
    DbCredentialRequest {
        target: "t1".into(),
        role_arn: Some(Arn::iam_role("arn:aws:iam::123456789012:role/bi").unwrap()),
        db_user: "alice".into(),
        db_name: "dev".into(),
        db_groups: groups.iter().map(|g| g.to_string()).collect(),
        role_session_name: None,
    }
}

fn cluster_credentials_xml(action: &str, user: &str) -> String {
    format!(
        "<{action}Response xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\">\
         <{action}Result><DbUser>{user}</DbUser><DbPassword>p@ss+word/1</DbPassword>\
         <Expiration>2030-01-01T00:15:00Z</Expiration></{action}Result>\
         <ResponseMetadata><RequestId>rid-xml</RequestId></ResponseMetadata></{action}Response>"
    )
}

fn redshift_error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\">\
         <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>rid-err</RequestId></ErrorResponse>"
    )
}

fn expiration_2030() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000 + 900)
}

#[tokio::test]
async fn get_cluster_credentials_sends_the_grant_and_keeps_the_issued_user() {
    let endpoint = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-1"), ("Content-Type", "text/xml")],
        &cluster_credentials_xml("GetClusterCredentials", "IAMA:alice"),
    )
    .await;
    let aws = Arc::new(StaticAws::default());
    let target = provisioned(
        &endpoint.url,
        ResourceName::Identifier("c1".into()),
        false,
        true,
    );
    let fetcher = AwsCredentialFetcher::with_targets([target], aws.clone());

    let credential = fetcher
        .fetch(&request(&["analysts", "readers"]))
        .await
        .expect("credential");
    assert_eq!(credential.user, "IAMA:alice");
    assert_eq!(credential.password.expose_secret(), "p@ss+word/1");
    assert_eq!(credential.expiration, expiration_2030());
    assert_eq!(credential.aws_request_ids, vec!["rid-1".to_owned()]);

    let sent = endpoint.only_request();
    let form = sent.form();
    assert_eq!(form["Action"], "GetClusterCredentials");
    assert_eq!(form["Version"], "2012-12-01");
    assert_eq!(form["DbUser"], "alice");
    assert_eq!(form["DbName"], "dev");
    assert_eq!(form["ClusterIdentifier"], "c1");
    assert_eq!(form["DurationSeconds"], "900");
    assert_eq!(form["AutoCreate"], "true");
    assert_eq!(form["DbGroups.DbGroup.1"], "analysts");
    assert_eq!(form["DbGroups.DbGroup.2"], "readers");
    let authorization = &sent.headers["authorization"];
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && authorization.contains("/us-east-1/redshift/aws4_request"),
        "{authorization}"
    );
    assert_eq!(
        aws.roles.lock().unwrap().as_slice(),
        &[Some(
            Arn::iam_role("arn:aws:iam::123456789012:role/bi").unwrap()
        )]
    );
}

#[tokio::test]
async fn get_cluster_credentials_omits_empty_groups_and_uses_custom_domain() {
    let endpoint = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-1")],
        &cluster_credentials_xml("GetClusterCredentials", "IAM:alice"),
    )
    .await;
    let target = provisioned(
        &endpoint.url,
        ResourceName::CustomDomain("db.example.com".into()),
        false,
        false,
    );
    let fetcher = fetcher_for(target);
    let credential = fetcher.fetch(&request(&[])).await.expect("credential");
    assert_eq!(credential.user, "IAM:alice");

    let form = endpoint.only_request().form();
    assert!(!form.keys().any(|k| k.starts_with("DbGroups")), "{form:?}");
    assert!(!form.contains_key("ClusterIdentifier"));
    assert_eq!(form["CustomDomainName"], "db.example.com");
    assert_eq!(form["AutoCreate"], "false");
}

#[tokio::test]
async fn with_iam_sends_no_db_user() {
    let (endpoint, target) = with_iam_cluster().await;
    let fetcher = fetcher_for(target);
    let credential = fetcher
        .fetch(&request(&["ignored"]))
        .await
        .expect("credential");
    assert_eq!(credential.user, "IAMR:bi");

    let form = endpoint.only_request().form();
    assert_eq!(form["Action"], "GetClusterCredentialsWithIAM");
    assert_eq!(form["ClusterIdentifier"], "c1");
    assert_eq!(form["DbName"], "dev");
    assert_eq!(form["DurationSeconds"], "900");
    assert!(!form.contains_key("DbUser") && !form.contains_key("AutoCreate"));
}

#[tokio::test]
async fn serverless_get_credentials_names_the_workgroup() {
    let endpoint = CannedEndpoint::start(
        200,
        &[
            ("x-amzn-RequestId", "rid-3"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        r#"{"dbUser":"IAMR:bi","dbPassword":"pw","expiration":1893456900,"nextRefreshTime":1893457000}"#,
    )
    .await;
    let target = serverless(&endpoint.url, ResourceName::Identifier("wg1".into()));
    let fetcher = fetcher_for(target);
    let credential = fetcher.fetch(&request(&[])).await.expect("credential");
    assert_eq!(credential.user, "IAMR:bi");
    assert_eq!(credential.password.expose_secret(), "pw");
    assert_eq!(credential.expiration, expiration_2030());
    assert_eq!(credential.aws_request_ids, vec!["rid-3".to_owned()]);

    let sent = endpoint.only_request();
    assert_eq!(
        sent.headers["x-amz-target"],
        "RedshiftServerless.GetCredentials"
    );
    assert!(sent.headers["authorization"].contains("/eu-west-1/redshift-serverless/aws4_request"));
    assert_eq!(
        sent.json(),
        serde_json::json!({"workgroupName": "wg1", "dbName": "dev", "durationSeconds": 1800})
    );
}

#[tokio::test]
async fn serverless_custom_domain_replaces_the_workgroup() {
    let endpoint = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-3")],
        r#"{"dbUser":"IAMR:bi","dbPassword":"pw","expiration":1893456900}"#,
    )
    .await;
    let target = serverless(
        &endpoint.url,
        ResourceName::CustomDomain("db.example.com".into()),
    );
    let fetcher = fetcher_for(target);
    fetcher.fetch(&request(&[])).await.expect("credential");
    let body = endpoint.only_request().json();
    assert_eq!(body["customDomainName"], "db.example.com");
    assert!(body.get("workgroupName").is_none());
}

#[tokio::test]
async fn cluster_not_found_is_invalid_and_names_code_and_request() {
    let endpoint =
        CannedEndpoint::redshift_error(404, "rid-404", "ClusterNotFound", "Cluster c1 not found.")
            .await;
    let target = cluster_c1(&endpoint.url);
    let fetcher = fetcher_for(target);
    let err = fetcher.fetch(&request(&[])).await.expect_err("not found");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::Invalid(_)), "{msg}");
    assert!(
        msg.contains("ClusterNotFound")
            && msg.contains("Cluster c1 not found.")
            && msg.contains("rid-404")
            && msg.contains("\"t1\""),
        "{msg}"
    );
    assert_eq!(endpoint.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn access_denied_is_denied() {
    let endpoint = CannedEndpoint::redshift_error(
        403,
        "rid-403",
        "AccessDenied",
        "User is not authorized to perform redshift:GetClusterCredentials",
    )
    .await;
    let target = cluster_c1(&endpoint.url);
    let fetcher = fetcher_for(target);
    let err = fetcher.fetch(&request(&[])).await.expect_err("denied");
    assert!(matches!(err, CredentialError::Denied(_)), "{err}");
}

#[tokio::test]
async fn serverless_validation_error_is_invalid() {
    let endpoint = CannedEndpoint::start(
        400,
        &[("x-amzn-RequestId", "rid-400")],
        r#"{"__type":"ValidationException","message":"workgroup name is invalid"}"#,
    )
    .await;
    let target = serverless(&endpoint.url, ResourceName::Identifier("wg1".into()));
    let fetcher = fetcher_for(target);
    let err = fetcher.fetch(&request(&[])).await.expect_err("invalid");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::Invalid(_)), "{msg}");
    assert!(msg.contains("workgroup name is invalid"), "{msg}");
}

#[tokio::test]
async fn throttling_is_unavailable_after_the_sdk_retries() {
    let endpoint =
        CannedEndpoint::redshift_error(400, "rid-429", "Throttling", "Rate exceeded").await;
    let target = cluster_c1(&endpoint.url);
    let fetcher = fetcher_for(target);
    let err = fetcher.fetch(&request(&[])).await.expect_err("throttled");
    assert!(matches!(err, CredentialError::Unavailable(_)), "{err}");
    assert_eq!(
        endpoint.requests().len(),
        3,
        "standard retry mode makes 3 attempts"
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    // Bind then drop: the port is (almost certainly) closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let target = cluster_c1(&format!("http://{addr}"));
    let fetcher = fetcher_for(target);
    let err = fetcher.fetch(&request(&[])).await.expect_err("unreachable");
    assert!(matches!(err, CredentialError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn a_role_without_aws_credentials_keeps_its_error_class() {
    let target = cluster_c1("http://127.0.0.1:9");
    let fetcher = AwsCredentialFetcher::with_targets([target], Arc::new(NoRole));
    let err = fetcher.fetch(&request(&[])).await.expect_err("no role");
    assert!(matches!(err, CredentialError::Denied(_)), "{err}");
}

#[tokio::test]
async fn aws_credentials_refused_while_signing_keep_their_class() {
    let endpoint = CannedEndpoint::start(200, &[], "").await;
    let target = cluster_c1(&endpoint.url);
    let fetcher = AwsCredentialFetcher::with_targets([target], Arc::new(RefusingAws));
    let err = fetcher.fetch(&request(&[])).await.expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, CredentialError::Denied(_)), "{msg}");
    assert!(msg.contains("untrusted certificate"), "{msg}");
    assert!(endpoint.requests().is_empty(), "nothing unsigned is sent");
}

#[tokio::test]
async fn one_client_per_target_and_role() {
    let endpoint = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-1")],
        &cluster_credentials_xml("GetClusterCredentials", "IAM:alice"),
    )
    .await;
    let aws = Arc::new(StaticAws::default());
    let target = cluster_c1(&endpoint.url);
    let fetcher = AwsCredentialFetcher::with_targets([target], aws.clone());
    fetcher.fetch(&request(&[])).await.expect("credential");
    fetcher.fetch(&request(&[])).await.expect("credential");
    assert_eq!(aws.lookups.load(Ordering::SeqCst), 1);
    let mut other_role = request(&[]);
    other_role.role_arn = None;
    fetcher.fetch(&other_role).await.expect("credential");
    assert_eq!(aws.lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_target_is_invalid() {
    let fetcher = AwsCredentialFetcher::with_targets([], Arc::new(StaticAws::default()));
    let err = fetcher.fetch(&request(&[])).await.expect_err("unknown");
    assert!(matches!(err, CredentialError::Invalid(_)), "{err}");
}

/// The AWS calls an observer was told of.
#[derive(Default)]
struct Seen(Mutex<Vec<(AwsApi, AwsCallOutcome)>>);

impl AwsCallObserver for Seen {
    fn aws_call(&self, api: AwsApi, outcome: AwsCallOutcome, _elapsed: Duration) {
        self.0.lock().unwrap().push((api, outcome));
    }
}

/// A fetcher with static AWS credentials and the observer that sees its calls.
fn observed(target: ResolvedTarget) -> (AwsCredentialFetcher, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let fetcher = fetcher_for(target).with_observer(seen.clone());
    (fetcher, seen)
}

#[tokio::test]
async fn each_sdk_attempt_is_reported_with_its_api_and_outcome() {
    // Redshift's query protocol throttles with HTTP 400: only the error code says so.
    let endpoint =
        CannedEndpoint::redshift_error(400, "rid-429", "Throttling", "Rate exceeded").await;
    let target = cluster_c1(&endpoint.url);
    let (fetcher, seen) = observed(target);
    fetcher.fetch(&request(&[])).await.expect_err("throttled");
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![(AwsApi::GetClusterCredentials, AwsCallOutcome::Throttled); 3],
        "one report per attempt: {:?}",
        endpoint.requests()
    );

    let (_endpoint, target) = with_iam_cluster().await;
    let (fetcher, seen) = observed(target);
    fetcher.fetch(&request(&[])).await.expect("credential");
    assert_eq!(
        *seen.0.lock().unwrap(),
        vec![(
            AwsApi::GetClusterCredentialsWithIam,
            AwsCallOutcome::Success
        )]
    );
}

#[tokio::test]
async fn calls_abandoned_before_sending_are_not_reported() {
    let endpoint = CannedEndpoint::start(200, &[], "").await;
    let target = serverless(&endpoint.url, ResourceName::Identifier("wg".into()));
    let seen = Arc::new(Seen::default());
    let fetcher = AwsCredentialFetcher::with_targets([target], Arc::new(RefusingAws))
        .with_observer(seen.clone());
    fetcher.fetch(&request(&[])).await.expect_err("refused");
    assert!(endpoint.requests().is_empty());
    assert!(seen.0.lock().unwrap().is_empty(), "{:?}", seen.0);
}

/// A request naming a role session is signed with that session's credentials, through the
/// one client of its (target, role); the others keep the role's own.
#[tokio::test]
async fn named_role_sessions_sign_their_own_calls() {
    let cluster = CannedEndpoint::start(
        200,
        &[("x-amzn-RequestId", "rid-1")],
        &cluster_credentials_xml("GetClusterCredentials", "IAMA:alice"),
    )
    .await;
    let workgroup = CannedEndpoint::start(
        200,
        &[("Content-Type", "application/x-amz-json-1.1")],
        r#"{"dbUser":"IAMR:bi","dbPassword":"pw","expiration":1893456900}"#,
    )
    .await;
    let aws = Arc::new(StaticAws::default());
    let mut target_wg = serverless(&workgroup.url, ResourceName::Identifier("wg1".into()));
    target_wg.name = "t2".into();
    let fetcher = AwsCredentialFetcher::with_targets(
        [
            provisioned(
                &cluster.url,
                ResourceName::Identifier("c1".into()),
                false,
                true,
            ),
            target_wg,
        ],
        aws.clone(),
    );
    let named = |target: &str, name: Option<&str>| DbCredentialRequest {
        target: target.into(),
        role_session_name: name.map(str::to_owned),
        ..request(&[])
    };
    for target in ["t1", "t2"] {
        for name in [Some("alice"), Some("bob"), None] {
            fetcher
                .fetch(&named(target, name))
                .await
                .expect("credential");
        }
    }
    for endpoint in [&cluster, &workgroup] {
        let keys: Vec<String> = endpoint
            .requests()
            .iter()
            .map(|r| {
                let auth = &r.headers["authorization"];
                let credential = auth.split("Credential=").nth(1).unwrap();
                credential.split('/').next().unwrap().to_owned()
            })
            .collect();
        assert_eq!(keys, ["ASIAALICE", "ASIABOB", "AKIDEXAMPLE"]);
        assert!(endpoint.requests()[0].headers["x-amz-security-token"] == "session-token");
    }
    assert_eq!(
        aws.lookups.load(Ordering::SeqCst),
        2,
        "one client per target and role"
    );
    // Distinct sessions are distinct credentials, whatever the API ignores.
    let key = |name| fetcher.cache_key(&named("t2", name));
    assert_ne!(key(Some("alice")), key(Some("bob")));
    assert_eq!(key(Some("alice")).db_user, "");
}
