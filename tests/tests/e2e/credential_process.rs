//! `redshift-iam-proxy credential-process` (issue 12): the binary in place of AWS's
//! `aws_signing_helper credential-process`, first on its own against the emulator, then as
//! the `credential_process` of the AWS profile the proxy's `[aws] source = "profile"` reads,
//! so the AWS SDK's own profile provider runs it and a client logs in through the chain.

use proxy_testkit::emulator::Api;
use proxy_testkit::pki::{ClientCertSpec, KeyAlgorithm};
use proxy_testkit::ports::free_port;
use proxy_testkit::proxy::{proxy_binary, proxy_command, ProxyProcess};
use proxy_testkit::stack::{access_role_arn, profile_arn, trust_anchor_arn, ACCOUNT, REGION};
use proxy_testkit::world::{current_user, World};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, SystemTime};

/// The helper's flags for the world's proxy identity, role `role` and the emulator.
fn helper_args(world: &World, role: &str) -> Vec<String> {
    let identity = &world.proxy_identity;
    [
        "credential-process",
        "--certificate",
        &identity.cert_pem.to_string_lossy(),
        "--private-key",
        &identity.key_pem.to_string_lossy(),
        "--trust-anchor-arn",
        &trust_anchor_arn(),
        "--profile-arn",
        &profile_arn(),
        "--role-arn",
        role,
        "--endpoint",
        &world.emulator.url(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || proxy_command().args(args).output())
        .await
        .expect("join")
        .expect("run redshift-iam-proxy credential-process")
}

/// On its own: the session's keys as the AWS helper prints them (no trailing newline), the
/// very session the emulator recorded; failures say why on stderr, print nothing on stdout
/// and exit non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn prints_the_emulator_issued_session_in_the_helpers_format() {
    let world = World::start().await;
    let out = run(helper_args(&world, &access_role_arn())).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("{\"Version\":1,"), "{stdout}");
    assert!(
        !stdout.ends_with('\n'),
        "the helper prints no trailing newline"
    );
    let json: Value = serde_json::from_str(&stdout).unwrap();
    // (Their order, the helper's, is pinned by the unit test of the output.)
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "Expiration",
            "SecretAccessKey",
            "SessionToken",
            "Version"
        ]
    );

    let trail = world.emulator.cloudtrail();
    let created = trail
        .iter()
        .find(|r| r["eventName"] == "CreateSession")
        .expect("the CreateSession record");
    let issued = &created["responseElements"]["credentialSet"][0];
    assert_eq!(issued["credentials"]["accessKeyId"], json["AccessKeyId"]);
    let assumed = issued["assumedRoleUser"]["arn"].as_str().unwrap();
    assert!(
        assumed.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/RedshiftAccess/"
        )),
        "{assumed}"
    );
    assert_eq!(created["requestParameters"]["durationSeconds"], 3600);
    let expiration = time::OffsetDateTime::parse(
        json["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("Expiration is RFC 3339");
    let in_an_hour = SystemTime::from(expiration)
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        in_an_hour > Duration::from_secs(3500) && in_an_hour <= Duration::from_secs(3600),
        "{in_an_hour:?}"
    );

    // A role the profile does not list: AccessDenied from the emulator, on stderr only.
    let other = format!("arn:aws:iam::{ACCOUNT}:role/NotInTheProfile");
    let out = run(helper_args(&world, &other)).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AccessDeniedException") && stderr.contains(&other),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A key that is not the certificate's: refused before any call to AWS.
    let calls = world.emulator.calls(Api::CreateSession);
    let mut args = helper_args(&world, &access_role_arn());
    let stranger = world.client_with(ClientCertSpec::new("stranger").key(KeyAlgorithm::Rsa2048));
    args[4] = stranger.key_pem.to_string_lossy().into_owned();
    let out = run(args).await;
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert_eq!(world.emulator.calls(Api::CreateSession), calls);
}

/// The proxy's `[aws] source = "profile"` with a profile whose `credential_process` is this
/// binary: the AWS SDK's profile provider runs it, and a login goes through Roles Anywhere
/// (signature checked by the emulator), GetClusterCredentials as that session, and the
/// stand-in.
#[tokio::test(flavor = "multi_thread")]
async fn a_profile_credential_process_runs_the_whole_chain() {
    let world = World::start().await;
    let aws_config = world.dir().join("aws-config");
    let command: Vec<String> = std::iter::once(format!("\"{}\"", proxy_binary().display()))
        .chain(helper_args(&world, &access_role_arn()))
        .collect();
    std::fs::write(
        &aws_config,
        format!(
            "[profile roles-anywhere]\nregion = {REGION}\ncredential_process = {}\n",
            command.join(" ")
        ),
    )
    .unwrap();
    let port = free_port();
    let config = world
        .config()
        .unset("aws", "roles_anywhere")
        .set("aws", "source", "profile")
        .set("aws", "profile", "roles-anywhere")
        .edit_listener("main", |l| l.set("bind", format!("127.0.0.1:{port}")));
    let proxy = ProxyProcess::builder(config.to_toml(), world.dir())
        .env("AWS_CONFIG_FILE", &aws_config)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            world.dir().join("no-credentials"),
        )
        .wait_for_port(port)
        .startup_timeout(Duration::from_secs(20))
        .start()
        .await
        .expect("the proxy binary starts");

    let alice = world.client("alice");
    let client = proxy_testkit::client::connect(
        port,
        world.pki.ca_cert_path(),
        Some(&alice),
        &alice.common_name,
        "dev",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()));
    assert_eq!(
        current_user(&client).await,
        format!("IAMA:{}", alice.common_name.to_lowercase())
    );

    let trail = world.emulator.cloudtrail();
    let names: Vec<&str> = trail
        .iter()
        .filter_map(|r| r["eventName"].as_str())
        .collect();
    assert_eq!(
        names,
        ["CreateSession", "GetClusterCredentials"],
        "{trail:#?}"
    );
    let session = &trail[0]["responseElements"]["credentialSet"][0];
    let call = &trail[1];
    assert!(call.get("errorCode").is_none(), "{call}");
    assert_eq!(
        call["userIdentity"]["accessKeyId"],
        session["credentials"]["accessKeyId"]
    );
    assert_eq!(
        call["userIdentity"]["arn"],
        session["assumedRoleUser"]["arn"]
    );
    assert_eq!(
        call["requestParameters"]["dbUser"],
        alice.common_name.to_lowercase()
    );
}
