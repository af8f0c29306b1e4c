//! Database credentials that expire, or whose expiry the proxy's clock misjudges, while
//! clients keep logging in. The in-process proxy runs the production credential path: the
//! Redshift credential cache over the AWS SDK fetcher, with the proxy's AWS credentials from
//! a Roles Anywhere session, against the AWS emulator, whose passwords its Redshift stand-in
//! refuses once they have expired ("IAM Authentication token has expired"). Only the cache's
//! clock is the test's.

use proxy_auth::aws::{AwsCredentials, Clock, ManualClock, SystemClock};
use proxy_auth::redshift::{
    AwsCredentialFetcher, RedshiftCredentials, ResolvedTarget, ResourceName, TargetApi,
};
use proxy_testkit::emulator::{
    allow_all_redshift_policy, Api, AwsEmulator, ClusterSpec, EmulatorConfig, PgAdmin, StandInSpec,
};
use proxy_testkit::harness::{sqlstate, HarnessOptions, ProxyHarness};
use proxy_testkit::pg::PgServer;
use proxy_testkit::pki::{ClientCertSpec, TestPki};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Barrier;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
/// The harness's `[[target]]` names this cluster.
const CLUSTER: &str = "test-cluster";
/// `[db_credentials] refresh_before`'s default.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// Longer than any login may take, even on a busy machine: reaching it means a hang.
const LOGIN_LIMIT: Duration = Duration::from_secs(30);

struct Fixture {
    harness: ProxyHarness,
    emulator: AwsEmulator,
    /// Unique per fixture: tests running in parallel share the PostgreSQL server.
    db_user: String,
    _dir: tempfile::TempDir,
}

/// How one login through the proxy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Logged in and `current_user` was the issued user.
    Ok,
    /// Refused or failed with this SQLSTATE.
    Error(String),
    /// Failed without an ErrorResponse (a dropped connection).
    Unclean(String),
    Hung,
}

impl Fixture {
    async fn start(clock: Arc<dyn Clock>) -> Fixture {
        let pg = PgServer::shared();
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::new(dir.path().join("ra")).unwrap();
        let identity = pki.client_cert(ClientCertSpec::new("proxy")).unwrap();
        let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/RedshiftAccess");
        let trust_anchor_arn =
            format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/ta-1");
        let profile_arn = format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/p-1");
        let emulator = AwsEmulator::start(EmulatorConfig {
            trust_anchor_arn: trust_anchor_arn.clone(),
            trust_anchor_ca_pem: None,
            trust_anchor_ca_file: Some(pki.ca_cert_path().to_path_buf()),
            profile_arn: profile_arn.clone(),
            accept_role_session_name: false,
            role_arns: vec![role_arn.clone()],
            max_session_duration: Duration::from_secs(3600),
            cloudtrail_file: None,
            clusters: vec![ClusterSpec {
                identifier: CLUSTER.to_owned(),
                region: REGION.to_owned(),
                custom_domain_name: None,
                admin: PgAdmin::new(pg.socket_dir().to_string_lossy(), pg.port(), pg.superuser()),
                standin: StandInSpec::default(),
            }],
            workgroups: Vec::new(),
            role_policies: [(role_arn.clone(), allow_all_redshift_policy())].into(),
        })
        .await
        .unwrap();

        // The proxy's own AWS credentials, as `[aws]` configures them in production.
        let aws_config: proxy_config::AwsConfig = toml::from_str(&format!(
            r#"
source = "roles_anywhere"
[roles_anywhere]
certificate = {certificate:?}
private_key = {private_key:?}
trust_anchor_arn = "{trust_anchor_arn}"
profile_arn = "{profile_arn}"
role_arn = "{role_arn}"
endpoint_url = "{url}"
"#,
            certificate = identity.cert_pem,
            private_key = identity.key_pem,
            url = emulator.url(),
        ))
        .unwrap();
        let aws = AwsCredentials::from_config(&aws_config).await.unwrap();
        let fetcher = AwsCredentialFetcher::with_targets(
            [ResolvedTarget {
                name: "pg".to_owned(),
                region: REGION.to_owned(),
                api: TargetApi::Provisioned {
                    cluster: ResourceName::Identifier(CLUSTER.to_owned()),
                    with_iam: false,
                    auto_create: true,
                },
                credential_duration: Duration::from_secs(900),
                aws_endpoint_url: Some(emulator.url()),
            }],
            Arc::new(aws),
        );
        let credentials = RedshiftCredentials::with_fetcher(
            Arc::new(fetcher),
            clock,
            proxy_auth::refresh::RefreshPolicy {
                refresh_before: REFRESH_BEFORE,
                backoff_max: std::time::Duration::from_secs(60),
            },
            proxy_auth::redshift::IdentityBudget {
                fetches_per_minute: 10_000,
                max_cached: 10_000,
            },
        );

        let db_user = PgServer::unique_name("expiry");
        // The proxy's target is the cluster's stand-in.
        let standin = emulator.endpoint(CLUSTER).unwrap();
        let harness = ProxyHarness::start_with(HarnessOptions {
            upstream_port: Some(standin.port()),
            upstream_ca: Some(standin.ca_cert.clone()),
            rules: format!(
                r#"
[[policy.rule]]
name = "alice"
match = {{ cn = "alice" }}
targets = ["pg"]
users = ["{db_user}"]
databases = ["postgres"]
"#
            ),
            // Logins queue for CPU during a storm; the proxy must not give up on them.
            login_timeout: Duration::from_secs(20),
            credentials: Some(Arc::new(credentials)),
            ..HarnessOptions::default()
        })
        .await;
        Fixture {
            harness,
            emulator,
            db_user,
            _dir: dir,
        }
    }

    fn credential_calls(&self) -> u64 {
        self.emulator.calls(Api::GetClusterCredentials)
    }

    /// Logs in as alice and checks who PostgreSQL says she is.
    async fn login(&self) -> Outcome {
        let attempt = async {
            let client = self
                .harness
                .connect(Some(&self.harness.clients.alice), &self.db_user, "postgres")
                .await?;
            let user: String = client.query_one("select current_user", &[]).await?.get(0);
            Ok::<_, tokio_postgres::Error>(user)
        };
        match tokio::time::timeout(LOGIN_LIMIT, attempt).await {
            Err(_) => Outcome::Hung,
            Ok(Ok(user)) => {
                assert_eq!(user, format!("IAMA:{}", self.db_user));
                Outcome::Ok
            }
            Ok(Err(e)) => match sqlstate(&e) {
                Some(code) => Outcome::Error(code),
                None => Outcome::Unclean(e.to_string()),
            },
        }
    }

    /// `clients` logins started at the same moment.
    async fn logins_at_once(self: &Arc<Self>, clients: usize) -> Vec<Outcome> {
        let barrier = Arc::new(Barrier::new(clients));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (fx, barrier) = (Arc::clone(self), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    fx.login().await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    }
}

fn assert_all_ok(what: &str, outcomes: &[Outcome]) {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| **o != Outcome::Ok).collect();
    assert!(failed.is_empty(), "{what}: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_expiring_during_a_login_storm_are_refreshed_without_a_herd() {
    const CLIENTS: usize = 64;
    const LIFETIME: Duration = Duration::from_secs(4);
    const STORM: Duration = Duration::from_secs(8);

    let fx = Arc::new(Fixture::start(Arc::new(SystemClock)).await);
    fx.emulator.set_db_credential_lifetime(Some(LIFETIME));
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(fx.credential_calls(), 1);

    // 64 clients log in again and again for two credential lifetimes. Halfway, every
    // issued password expires at the stand-in ahead of its announced expiration, as after a
    // clock step on the proxy's host: the sessions holding it are refused and retry.
    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (fx, barrier) = (Arc::clone(&fx), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let mut outcomes = Vec::new();
                while started.elapsed() < STORM {
                    outcomes.push(fx.login().await);
                }
                outcomes
            })
        })
        .collect();
    barrier.wait().await;
    tokio::time::sleep(STORM / 2).await;
    let calls_before_expiry = fx.credential_calls();
    fx.emulator.expire_db_credentials().await.unwrap();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    let calls = fx.credential_calls();

    // Every login ended, and nearly all worked: one refused with the expired password
    // retries once with a fresh one. A login slowed down past its credential's real expiry
    // twice in a row (a busy machine) may fail, but with an ErrorResponse.
    let ok = outcomes.iter().filter(|o| **o == Outcome::Ok).count();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| **o != Outcome::Ok).collect();
    eprintln!(
        "{ok} logins in {elapsed:?}, {} failed, {calls} GetClusterCredentials calls \
         ({calls_before_expiry} before the early expiry)",
        failed.len()
    );
    assert!(
        failed.iter().all(|o| matches!(o, Outcome::Error(_))),
        "{failed:?}"
    );
    assert!(failed.len() * 100 <= outcomes.len(), "{failed:?}");

    // The cache refreshes a credential once a quarter of its lifetime has passed (whole
    // seconds: at least LIFETIME - 1s), so AWS sees a few calls per lifetime, plus the
    // warm-up and one for the early expiry, not one per login or per refused session.
    let min_lifetime = LIFETIME - Duration::from_secs(1);
    let bound = 2 + (elapsed.as_secs_f64() / (min_lifetime.as_secs_f64() / 4.0)).ceil() as u64;
    assert!(
        calls <= bound,
        "{calls} credential calls for {ok} logins in {elapsed:?} (at most {bound})"
    );
    assert_eq!(fx.emulator.calls(Api::CreateSession), 1);

    // Later logins work, from a fresh credential.
    tokio::time::sleep(LIFETIME).await;
    assert_eq!(fx.login().await, Outcome::Ok);
    assert!(fx.credential_calls() > calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_jumps_forward_and_backward_keep_logins_working() {
    const CLIENTS: usize = 32;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let fx = Arc::new(Fixture::start(clock.clone()).await);
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(fx.login().await, Outcome::Ok);
    assert_eq!(
        fx.credential_calls(),
        1,
        "the second login is served from cache"
    );

    // Forward past the refresh margin of the 15-minute credential (suspend and resume, an
    // NTP step): it is no longer served; the logins share one fetch.
    clock.advance(Duration::from_secs(700));
    assert_all_ok("after a forward jump", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 2);

    // Backward by two hours: the cached credential looks young and is still served...
    clock.set(clock.now() - Duration::from_secs(2 * 3600));
    assert_all_ok("after a backward jump", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 2);

    // ...also once it has really expired: the stand-in refuses it, every login in flight
    // retries once with a fresh credential, and those share one fetch.
    fx.emulator.expire_db_credentials().await.unwrap();
    assert_all_ok("after the real expiry", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 3);
    assert_all_ok("afterwards", &fx.logins_at_once(CLIENTS).await);
    assert_eq!(fx.credential_calls(), 3);
}
