//! Hygiene (issue 11): what clients choose never forges a log line, a refused certificate
//! is audited as presented rather than verified, rules can name the CA that verified a
//! chain, and a client_ca that holds an intermediate is pointed out.

use proxy_testkit::config::Rule;
use proxy_testkit::pki::{ClientCertSpec, KeyAlgorithm};
use proxy_testkit::world::World;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A client-chosen database name with a newline and a forged log line stays one quoted
/// field of one line in the proxy's text log.
#[tokio::test(flavor = "multi_thread")]
async fn client_chosen_names_cannot_forge_log_lines() {
    let world = World::start().await;
    let config = world
        .config()
        .set("log", "format", "text")
        .set("log", "level", "info");
    let proxy = world.proxy_process(&config).await;
    let port = proxy.addr().port();
    let alice = world.client("alice");
    let forged = "dev\n2026-01-01T00:00:00Z  INFO session opened identity=\"admin\"";
    let err = proxy_testkit::client::connect(
        port,
        world.pki.ca_cert_path(),
        Some(&alice),
        &alice.common_name,
        forged,
    )
    .await
    .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000");
    assert!(
        proxy
            .process
            .wait_for_log("connection refused", Duration::from_secs(10))
            .await
    );
    let logs = proxy.process.logs();
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a client forged a log line:\n{logs}"
    );
    assert!(logs.contains(r#"\n2026-01-01T00:00:00Z"#), "{logs}");
}

/// A certificate the proxy refused is audited with what it presented, marked unverified;
/// an accepted one is marked verified.
#[tokio::test(flavor = "multi_thread")]
async fn refused_certificates_are_audited_as_unverified() {
    let world = World::start().await;
    let proxy = world.proxy(world.config()).await;
    let expired = world.client_with(ClientCertSpec::new("alice").expired());
    let alice = world.client("alice");
    proxy
        .connect(Some(&expired), &expired.common_name, "dev")
        .await
        .unwrap_err();
    proxy
        .connect(Some(&alice), &alice.common_name, "dev")
        .await
        .unwrap();
    let records = proxy.audit(1).await;
    let refused = records
        .iter()
        .find(|r| r["outcome"] == "refused")
        .expect("the refusal");
    assert_eq!(
        refused["client_certificate"]["verified"], false,
        "{refused}"
    );
    assert_eq!(
        refused["client_certificate"]["subject"],
        format!("CN={},O=Redshift IAM Proxy Tests", expired.common_name)
    );
}

/// Two CAs with the same name in one client_ca bundle: an `issuer` pattern cannot tell
/// them apart, `issuer_sha256` names the one that must have verified the chain.
#[tokio::test(flavor = "multi_thread")]
async fn issuer_sha256_tells_apart_cas_with_the_same_name() {
    let world = World::start().await;
    let twin = world
        .pki
        .new_root_ca(world.pki.root().common_name(), KeyAlgorithm::EcdsaP256)
        .unwrap();
    assert_eq!(twin.subject_dn(), world.pki.root().subject_dn());
    let bundle = world
        .pki
        .bundle("twins", &[world.pki.ca_cert_path(), &twin.cert_pem])
        .unwrap();
    let pinned = hex::encode(Sha256::digest(world.pki.root().cert_der()));
    let rule = Rule::new("pinned")
        .matching("cn", "*")
        .matching("issuer_sha256", pinned)
        .targets(["cluster"])
        .users(["{cn}"])
        .databases(["dev"]);
    let config = world
        .config()
        .without_rules()
        .rule(rule)
        // No CRLs: with two same-named CAs a CRL would be matched by name too, and the
        // verifier itself would refuse the impostor; here only the rule tells them apart.
        .edit_listener("main", |l| l.client_ca(&bundle, &[]));
    let proxy = world.proxy(config).await;
    let genuine = world.client("alice");
    proxy
        .connect(Some(&genuine), &genuine.common_name, "dev")
        .await
        .expect("the pinned CA's certificate");
    let impostor = twin
        .client_cert(ClientCertSpec::new(format!("alice-impostor-{}", world.tag)))
        .unwrap();
    let err = proxy
        .connect(Some(&impostor), &impostor.common_name, "dev")
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "this certificate is not permitted to connect to this target"
    );
}

/// check-config warns about a client_ca bundle that holds an intermediate: it would
/// become a trust anchor no CRL can revoke.
#[tokio::test(flavor = "multi_thread")]
async fn an_intermediate_in_client_ca_is_a_warning() {
    let world = World::start().await;
    let intermediate = world
        .pki
        .root()
        .intermediate("Issuing CA", KeyAlgorithm::EcdsaP256)
        .unwrap();
    let bundle = world
        .pki
        .bundle(
            "with-intermediate",
            &[world.pki.ca_cert_path(), &intermediate.cert_pem],
        )
        .unwrap();
    let config = world
        .config()
        .edit_listener("main", |l| l.client_ca(&bundle, &[&world.crl]));
    let file = config.write(world.dir());
    let out = std::process::Command::new(proxy_testkit::proxy::proxy_binary())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not self-signed"), "{stderr}");
}
