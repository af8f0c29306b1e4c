//! The proxy's Redshift credential fetchers and cache against the AWS emulator, whose
//! clusters and workgroups are Redshift stand-ins in front of a real PostgreSQL: the issued
//! credentials must log in there.
//!
//! The proxy's AWS credentials come from a real Roles Anywhere `CreateSession` (the
//! project's signer and session client) against the emulator, which verifies SigV4 with them.

use crate::emulated::{
    one_role_config, profile_arn, proxy_signer, trust_anchor_arn, ACCOUNT, CLUSTER, REGION,
    WORKGROUP,
};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use proxy_auth::aws::roles_anywhere::{SessionClient, SessionRequest};
use proxy_auth::aws::{AwsCredentialsForRole, SystemClock};
use proxy_auth::db_credentials::{CredentialError, DbCredentialRequest, DbCredentialSource};
use proxy_auth::redshift::{
    AwsCredentialFetcher, RedshiftCredentials, ResolvedTarget, ResourceName, TargetApi,
};
use proxy_testkit::emulator::{Api, AwsEmulator, PgAdmin};
use proxy_testkit::pg::{quote_ident, PgServer};
use proxy_testkit::pki::{ClientCertSpec, TestPki};
use proxy_testkit::standin;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn pg() -> Option<&'static PgServer> {
    // A missing PostgreSQL fails loudly (CI installs it); it never skips.
    Some(PgServer::shared())
}

/// One AWS identity (a Roles Anywhere session) for every role.
struct SessionAws(SharedCredentialsProvider);

impl AwsCredentialsForRole for SessionAws {
    fn provider(
        &self,
        _: Option<&proxy_config::Arn>,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        Ok(self.0.clone())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    emulator: AwsEmulator,
    /// Unique per fixture so `IAMR:<role>` users of concurrent tests don't collide.
    role_name: String,
    source: RedshiftCredentials,
}

impl Fixture {
    async fn new(pg: &PgServer) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path()).unwrap();
        let role_name = PgServer::unique_name("Analyst");
        let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/{role_name}");
        let admin = PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser());
        let emulator = AwsEmulator::start(one_role_config(&pki, &role_arn, admin))
            .await
            .unwrap();

        let cert = pki.client_cert(ClientCertSpec::new("proxy")).unwrap();
        let signer = proxy_signer(&cert);
        let session = SessionClient::new(REGION, Some(&emulator.url()), Duration::from_secs(10))
            .unwrap()
            .create_session(
                &signer,
                &SessionRequest {
                    profile_arn: profile_arn(),
                    role_arn,
                    trust_anchor_arn: trust_anchor_arn(),
                    duration: Duration::from_secs(900),
                    role_session_name: None,
                },
                SystemTime::now(),
            )
            .await
            .unwrap();
        let aws = SessionAws(SharedCredentialsProvider::new(Credentials::new(
            session.access_key_id,
            session.secret_access_key.expose_secret(),
            Some(session.session_token.expose_secret().to_owned()),
            Some(session.expiration),
            "roles-anywhere",
        )));

        let target = |name: &str, api: TargetApi| ResolvedTarget {
            name: name.to_owned(),
            region: REGION.to_owned(),
            api,
            credential_duration: Duration::from_secs(900),
            aws_endpoint_url: Some(emulator.url()),
        };
        let fetcher = AwsCredentialFetcher::with_targets(
            [
                target(
                    "cluster",
                    TargetApi::Provisioned {
                        cluster: ResourceName::Identifier(CLUSTER.to_owned()),
                        with_iam: false,
                        auto_create: true,
                    },
                ),
                target(
                    "cluster-iam",
                    TargetApi::Provisioned {
                        cluster: ResourceName::Identifier(CLUSTER.to_owned()),
                        with_iam: true,
                        auto_create: false,
                    },
                ),
                target(
                    "workgroup",
                    TargetApi::Serverless {
                        workgroup: ResourceName::Identifier(WORKGROUP.to_owned()),
                    },
                ),
            ],
            Arc::new(aws),
        );
        let source = RedshiftCredentials::with_fetcher(
            Arc::new(fetcher),
            Arc::new(SystemClock),
            proxy_auth::refresh::RefreshPolicy {
                refresh_before: Duration::from_secs(300),
                backoff_max: Duration::from_secs(60),
            },
            proxy_auth::redshift::IdentityBudget::default(),
        );
        Fixture {
            _dir: dir,
            emulator,
            role_name,
            source,
        }
    }
}

impl Fixture {
    /// tokio-postgres through the stand-in of `target` (cluster or workgroup name).
    async fn login(
        &self,
        target: &str,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let endpoint = self.emulator.endpoint(target).unwrap();
        standin::connect(&endpoint, user, password, "postgres").await
    }
}

fn request(target: &str, db_user: &str, groups: Vec<String>) -> DbCredentialRequest {
    DbCredentialRequest {
        target: target.to_owned(),
        role_arn: None,
        db_user: db_user.to_owned(),
        db_name: "postgres".to_owned(),
        db_groups: groups,
        role_session_name: None,
    }
}

#[tokio::test]
async fn cached_cluster_credential_logs_in_with_its_groups() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(pg).await;
    let db_user = PgServer::unique_name("alice");
    let group = PgServer::unique_name("readers");
    // DbGroups name existing groups.
    pg.admin()
        .await
        .unwrap()
        .batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(&group)))
        .await
        .unwrap();
    let req = request("cluster", &db_user, vec![group.clone()]);

    let credential = fx.source.credential(&req, "test").await.unwrap();
    assert_eq!(credential.user, format!("IAMA:{db_user}"));
    assert_eq!(credential.aws_request_ids.len(), 1);
    let client = fx
        .login(
            CLUSTER,
            &credential.user,
            credential.password.expose_secret(),
        )
        .await
        .unwrap();
    let in_group: bool = client
        .query_one("SELECT pg_has_role(current_user, $1, 'MEMBER')", &[&group])
        .await
        .unwrap()
        .get(0);
    assert!(in_group);

    let again = fx.source.credential(&req, "test").await.unwrap();
    assert_eq!(
        again.password.expose_secret(),
        credential.password.expose_secret()
    );
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentials), 1);
}

#[tokio::test]
async fn with_iam_and_serverless_credentials_log_in_as_the_role() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(pg).await;
    for (target, standin) in [("cluster-iam", CLUSTER), ("workgroup", WORKGROUP)] {
        let credential = fx
            .source
            .credential(&request(target, "ignored", vec![]), "test")
            .await
            .unwrap();
        assert_eq!(
            credential.user,
            format!("IAMR:{}", fx.role_name),
            "{target}"
        );
        fx.login(
            standin,
            &credential.user,
            credential.password.expose_secret(),
        )
        .await
        .unwrap();
    }
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentialsWithIam), 1);
    assert_eq!(fx.emulator.calls(Api::GetCredentials), 1);
}

#[tokio::test]
async fn invalidate_replaces_a_credential_the_database_refuses() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(pg).await;
    let req = request("cluster", &PgServer::unique_name("bob"), vec![]);
    let first = fx.source.credential(&req, "test").await.unwrap();
    fx.emulator.expire_db_credentials().await.unwrap();
    let refused = fx
        .login(CLUSTER, &first.user, first.password.expose_secret())
        .await
        .expect_err("the expired password is refused");
    assert_eq!(
        refused.as_db_error().map(|e| e.message()),
        Some("IAM Authentication token has expired")
    );

    fx.source.invalidate(&req, &first);
    let fresh = fx.source.credential(&req, "test").await.unwrap();
    fx.login(CLUSTER, &fresh.user, fresh.password.expose_secret())
        .await
        .unwrap();
    assert_eq!(fx.emulator.calls(Api::GetClusterCredentials), 2);
}

#[tokio::test]
async fn throttling_is_unavailable_and_a_malformed_db_user_is_invalid() {
    let Some(pg) = pg() else { return };
    let fx = Fixture::new(pg).await;

    fx.emulator
        .faults()
        .throttle_next(Some(Api::GetClusterCredentials), 10);
    let err = fx
        .source
        .credential(&request("cluster", "carol", vec![]), "test")
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::Unavailable(_)), "{err}");
    fx.emulator.faults().clear();

    // PUBLIC is not a valid DbUser: the API refuses it with InvalidParameterValue.
    let err = fx
        .source
        .credential(&request("cluster", "PUBLIC", vec![]), "test")
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::Invalid(_)), "{err}");
}
