//! Per-identity AWS role sessions (issue 17): with `[aws.roles_anywhere] role_session_name =
//! "{cn}"` every client's credential calls run in a Roles Anywhere session named after it,
//! so the emulator's CloudTrail-style records name the client, even for the APIs that log
//! everyone in as the role's user.

use proxy_testkit::config::{Listener, Rule};
use proxy_testkit::pki::{ClientCert, ClientCertSpec};
use proxy_testkit::stack::{ACCOUNT, DATABASE};
use proxy_testkit::world::{current_user, error_response, TestProxy, World, WorldOptions};
use serde_json::Value;

/// The world's configuration with `role_session_name = "{cn}"`, the `people` rule on the
/// cluster and the workgroup (a listener `wg` for the latter), and an `odd` rule whose
/// certificates get a fixed database user whatever their CN.
async fn proxy(world: &World) -> TestProxy {
    let people = Rule::new("people")
        .matching("cn", "*")
        .targets(["cluster", "serverless"])
        .users(["{cn}"])
        .databases([DATABASE]);
    let odd = Rule::new("odd")
        .matching("cn", "odd *")
        .targets(["cluster"])
        .users(["odd_user"])
        .databases([DATABASE]);
    let config = world
        .config()
        .without_rules()
        .rule(odd)
        .rule(people)
        .listener(
            Listener::new("wg", "127.0.0.1:0")
                .target("serverless")
                .tls(&world.server.chain_pem, &world.server.key_pem)
                .client_ca(world.pki.ca_cert_path(), &[&world.crl]),
        )
        .set("aws.roles_anywhere", "role_session_name", "{cn}");
    world.proxy(config).await
}

/// A world whose Roles Anywhere profile accepts role session names, and its proxy.
async fn start() -> (World, TestProxy) {
    let world = World::start_with(WorldOptions {
        accept_role_session_name: true,
        ..WorldOptions::default()
    })
    .await;
    let proxy = proxy(&world).await;
    (world, proxy)
}

async fn login(proxy: &TestProxy, port: u16, client: &ClientCert) -> tokio_postgres::Client {
    proxy_testkit::client::connect(port, &proxy.ca, Some(client), &client.common_name, DATABASE)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", client.common_name))
}

/// The records of `event` made as the role session `name`.
fn calls_as<'a>(trail: &'a [Value], event: &str, name: &str) -> Vec<&'a Value> {
    let arn = format!("arn:aws:sts::{ACCOUNT}:assumed-role/RedshiftAccess/{name}");
    trail
        .iter()
        .filter(|r| r["eventName"] == event && r["userIdentity"]["arn"] == arn.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_client_gets_its_own_role_session_named_in_the_trail() {
    let (world, proxy) = start().await;
    let (alice, bob) = (world.client("alice"), world.client("bob"));
    let cluster = proxy.addr().port();
    let workgroup = proxy.listener("wg").port();
    for client in [&alice, &bob] {
        let session = login(&proxy, cluster, client).await;
        assert_eq!(
            current_user(&session).await,
            format!("IAMA:{}", client.common_name)
        );
        // Serverless logs everyone in as the role's user; only the session tells them apart.
        let session = login(&proxy, workgroup, client).await;
        assert_eq!(current_user(&session).await, "IAMR:RedshiftAccess");
    }

    let trail = world.emulator.cloudtrail();
    let created: Vec<&str> = trail
        .iter()
        .filter(|r| r["eventName"] == "CreateSession")
        .filter_map(|r| r["requestParameters"]["roleSessionName"].as_str())
        .collect();
    assert_eq!(
        created,
        [alice.common_name.as_str(), bob.common_name.as_str()],
        "one session per client, named by its CN"
    );
    for client in [&alice, &bob] {
        let name = &client.common_name;
        let cluster_calls = calls_as(&trail, "GetClusterCredentials", name);
        assert_eq!(cluster_calls.len(), 1, "{trail:#?}");
        assert_eq!(
            cluster_calls[0]["requestParameters"]["dbUser"],
            name.as_str()
        );
        assert!(cluster_calls[0].get("errorCode").is_none());
        assert_eq!(calls_as(&trail, "GetCredentials", name).len(), 1, "{name}");
    }
    // The audit ties each login to its CloudTrail records by request id.
    let records = proxy.audit(4).await;
    for client in [&alice, &bob] {
        let ids: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["client_certificate"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.contains(&client.common_name))
            })
            .flat_map(|r| r["aws_request_ids"].as_array().into_iter().flatten())
            .collect();
        let made_as = calls_as(&trail, "GetClusterCredentials", &client.common_name)
            .into_iter()
            .chain(calls_as(&trail, "GetCredentials", &client.common_name))
            .map(|r| &r["requestID"])
            .collect::<Vec<_>>();
        assert_eq!(ids.len(), 2, "{records:#?}");
        assert!(
            ids.iter().all(|id| made_as.contains(id)),
            "{ids:?} {made_as:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_names_no_valid_session_is_refused_before_any_aws_call() {
    let (world, proxy) = start().await;
    // "odd user-<tag>": a fine certificate and database user, but a space is no part of
    // a role session name.
    let odd = world.client_with(ClientCertSpec::new("odd user"));
    let err = proxy_testkit::client::connect(
        proxy.addr().port(),
        &proxy.ca,
        Some(&odd),
        "odd_user",
        DATABASE,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error_response(&err),
        (
            "28000",
            "this certificate does not yield a valid AWS role session name"
        )
    );
    assert!(world.emulator.cloudtrail().is_empty());
    let records = proxy.audit(1).await;
    let detail = records[0]["refusal"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("role_session_name:") && detail.contains("letters, digits"),
        "{detail}"
    );
}
