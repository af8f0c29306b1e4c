//! Several server certificates on one listener, chosen by the client's server name (SNI),
//! each optionally routing to its own target (issue 6: BI tools keep their
//! `jdbc:redshift://<cluster endpoint>:5439/dev` URL once DNS points that name at the proxy).
//!
//! The listener has a default certificate (the world's, for `localhost`/127.0.0.1) and
//! three entries from a separate "internal" CA: two cluster endpoint names routed to targets
//! `a` and `b`, and `*.corp.example` routed to the listener's target `cluster`. All three
//! targets are the world's cluster (its stand-in, credentials from the emulator); the policy
//! gives alice a different database user on each (`alice-a-…`, `alice-b-…`, `alice-pg-…`),
//! so `current_user` shows where a session landed. Clients resolve every name to 127.0.0.1
//! through `hostaddr`, nothing touches /etc/hosts.

use proxy_testkit::client::{client_tls, current_user, sqlstate};
use proxy_testkit::config::{path, strings, Listener, ProxyConfig, Rule, Table};
use proxy_testkit::pki::{ClientCert, ClientCertSpec, ServerCert, TestPki};
use proxy_testkit::programs::{javac, pgjdbc_jar, require_program};
use proxy_testkit::psql::Psql;
use proxy_testkit::world::{TestProxy, World};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NAME_A: &str = "analytics.abc123.eu-west-1.redshift.amazonaws.com";
const NAME_B: &str = "reporting.def456.eu-west-1.redshift.amazonaws.com";
const WILDCARD: &str = "*.corp.example";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The certificates of the `[[listener.certificates]]` entries, from their own CA, at
/// fixed paths the configuration names (so a test can replace them, as a renewal would).
struct SniFiles {
    _dir: tempfile::TempDir,
    pki: TestPki,
    /// Entry name → (chain path, key path) as configured.
    a: (PathBuf, PathBuf),
    b: (PathBuf, PathBuf),
    wildcard: (PathBuf, PathBuf),
}

impl SniFiles {
    fn new() -> SniFiles {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::with_root(
            dir.path().join("pki"),
            "Internal Redshift Names CA",
            Default::default(),
        )
        .unwrap();
        let place = |stem: &str, cert: &ServerCert| {
            let chain = dir.path().join(format!("{stem}.chain.pem"));
            let key = dir.path().join(format!("{stem}.key"));
            std::fs::copy(&cert.chain_pem, &chain).unwrap();
            std::fs::copy(&cert.key_pem, &key).unwrap();
            (chain, key)
        };
        let a = place("a", &pki.server_cert(&[NAME_A]).unwrap());
        let b = place("b", &pki.server_cert(&[NAME_B]).unwrap());
        let wildcard = place("wildcard", &pki.server_cert(&[WILDCARD]).unwrap());
        SniFiles {
            _dir: dir,
            pki,
            a,
            b,
            wildcard,
        }
    }

    /// The internal CA: what a BI tool's trust store holds for the old host names.
    fn ca(&self) -> &Path {
        self.pki.ca_cert_path()
    }

    /// A `[[listener.certificates]]` entry.
    fn entry(names: &[&str], (chain, key): &(PathBuf, PathBuf), target: Option<&str>) -> Table {
        let mut entry = Table::default();
        entry.set("server_names", strings(names.iter().copied()));
        entry.set("tls_cert", path(chain));
        entry.set("tls_key", path(key));
        if let Some(target) = target {
            entry.set("target", target);
        }
        entry
    }

    /// The listener's entries, entry B claiming `b_names` (configured names are
    /// case-insensitive: B's is written in upper case).
    fn listener(
        &self,
        listener: Listener,
        strict: bool,
        b_names: &[&str],
        b_target: &str,
    ) -> Listener {
        listener
            .set("strict_sni", strict)
            .certificate(Self::entry(&[NAME_A], &self.a, Some("a")))
            .certificate(Self::entry(b_names, &self.b, Some(b_target)))
            .certificate(Self::entry(&[WILDCARD], &self.wildcard, None))
    }
}

struct Setup {
    world: World,
    h: TestProxy,
    files: SniFiles,
    alice: ClientCert,
    bob: ClientCert,
    /// The database user behind alice on target a, b and cluster.
    on_a: String,
    on_b: String,
    on_pg: String,
}

impl Setup {
    /// The configuration of [`start`], entry B claiming `b_names` and routing to
    /// `b_target`.
    fn config(&self, strict: bool, b_names: &[&str], b_target: &str) -> ProxyConfig {
        config(
            &self.world,
            &self.files,
            &self.alice,
            &self.bob,
            strict,
            b_names,
            b_target,
        )
    }
}

/// alice gets a different database user on each target; bob may only use `cluster`.
fn config(
    world: &World,
    files: &SniFiles,
    alice: &ClientCert,
    bob: &ClientCert,
    strict: bool,
    b_names: &[&str],
    b_target: &str,
) -> ProxyConfig {
    let alice_on = |target: &str| {
        let user = world.name(&format!("alice-{target}"));
        Rule::new(&format!("alice-{target}"))
            .matching("cn", alice.common_name.as_str())
            .targets([if target == "pg" { "cluster" } else { target }])
            .users([user.as_str()])
            .default_user(&user)
    };
    world
        .config()
        .edit_listener("main", |l| files.listener(l, strict, b_names, b_target))
        .target(world.cluster_target("a"))
        .target(world.cluster_target("b"))
        .without_rules()
        .rule(alice_on("a"))
        .rule(alice_on("b"))
        .rule(alice_on("pg"))
        .rule(
            Rule::new("bob")
                .matching("cn", bob.common_name.as_str())
                .targets(["cluster"])
                .users(["{cn}"])
                .default_user("{cn}"),
        )
}

async fn start(strict: bool) -> Setup {
    let world = World::start().await;
    let files = SniFiles::new();
    let alice = world.client("alice");
    let bob = world.client("bob");
    let upper_b = NAME_B.to_ascii_uppercase();
    let h = world
        .proxy(config(
            &world,
            &files,
            &alice,
            &bob,
            strict,
            &[&upper_b],
            "b",
        ))
        .await;
    let on = |target: &str| format!("IAMA:{}", world.name(&format!("alice-{target}")));
    Setup {
        on_a: on("a"),
        on_b: on("b"),
        on_pg: on("pg"),
        h,
        files,
        alice,
        bob,
        world,
    }
}

/// tokio-postgres to `host` (dialled at 127.0.0.1) as placeholder user `iam`, verifying the
/// proxy's certificate for `host` against `ca` only (verify-full). A host name is sent as
/// SNI; an IP address is not.
async fn connect(
    h: &TestProxy,
    host: &str,
    ca: &Path,
    cert: &ClientCert,
    direct: bool,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .hostaddr(LOCALHOST)
        .port(h.addr().port())
        .user("iam")
        .dbname("dev")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    let mut tls = client_tls(ca, Some(cert));
    if direct {
        config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Accepts any server certificate: the tests below ask what the proxy *presented*, not
/// whether a client would trust it.
#[derive(Debug)]
struct RecordPresented(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for RecordPresented {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate the proxy presents after an SSLRequest to a client that sends
/// `server_name` as SNI (`None`: no SNI, as when connecting by IP address).
async fn presented(addr: SocketAddr, server_name: Option<&str>) -> CertificateDer<'static> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordPresented(provider)))
        .with_no_client_auth();
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_string()).unwrap(),
        None => ServerName::IpAddress(LOCALHOST.into()),
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn leaf(chain_pem: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(chain_pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_server_name_gets_its_certificate_and_its_target() {
    let s = start(false).await;
    let h = &s.h;
    assert_eq!(presented(h.addr(), Some(NAME_A)).await, leaf(&s.files.a.0));
    assert_eq!(presented(h.addr(), Some(NAME_B)).await, leaf(&s.files.b.0));

    // verify-full against the internal CA alone: only certificate A can satisfy it.
    let via_a = connect(h, NAME_A, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&via_a).await, s.on_a);
    let via_b = connect(h, NAME_B, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&via_b).await, s.on_b);
    drop((via_a, via_b));

    // psql (libpq sends SNI for host names) with verify-full for the old host name.
    assert_eq!(
        Psql::new(NAME_B, h.addr().port())
            .hostaddr("127.0.0.1")
            .root_cert(s.files.ca())
            .client(&s.alice)
            .user("iam")
            .dbname("dev")
            .current_user()
            .await,
        s.on_b
    );

    // Two handshakes without a login, three sessions.
    let records = h.audit(5).await;
    let routes: Vec<(&str, &str, &str)> = records
        .iter()
        .filter(|r| r["kind"] == "session")
        .map(|r| {
            (
                r["server_name"].as_str().unwrap_or("-"),
                r["target"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        (NAME_A, "a", "closed"),
        (NAME_B, "b", "closed"),
        (NAME_B, "b", "closed"),
    ] {
        assert!(routes.contains(&expected), "{expected:?} in {routes:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_name_matches_exactly_one_label() {
    let s = start(false).await;
    let h = &s.h;
    assert_eq!(
        presented(h.addr(), Some("BI.Corp.Example")).await,
        leaf(&s.files.wildcard.0),
        "names match case-insensitively"
    );
    // The wildcard entry names no target: the listener's.
    let bi = connect(h, "bi.corp.example", s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&bi).await, s.on_pg);

    // Two labels, or none, are not covered by `*.corp.example`: the default certificate.
    let default = leaf(&s.world.server.chain_pem);
    assert_eq!(presented(h.addr(), Some("a.b.corp.example")).await, default);
    assert_eq!(presented(h.addr(), Some("corp.example")).await, default);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_or_unknown_server_name_gets_the_default_certificate_and_the_listener_target() {
    let s = start(false).await;
    let h = &s.h;
    let default = leaf(&s.world.server.chain_pem);
    assert_eq!(presented(h.addr(), None).await, default);
    assert_eq!(presented(h.addr(), Some("localhost")).await, default);

    // By IP address (no SNI) and by an unknown name, verified against the default
    // certificate's CA: both land on the listener's target.
    let by_ip = connect(h, "127.0.0.1", &h.ca, &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&by_ip).await, s.on_pg);
    let by_name = connect(h, "localhost", &h.ca, &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&by_name).await, s.on_pg);

    // A client verifying an entry's name against the wrong CA fails in the handshake:
    // the internal CA's certificate is not the default one.
    let err = connect(h, NAME_A, &h.ca, &s.alice, false)
        .await
        .unwrap_err();
    assert!(
        sqlstate(&err).is_none(),
        "refused by the client, not the proxy: {err}"
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        cause.as_deref().unwrap_or_default().contains("certificate"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn strict_sni_refuses_unknown_and_missing_server_names_with_28000() {
    let s = start(true).await;
    let h = &s.h;
    let via_a = connect(h, NAME_A, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&via_a).await, s.on_a);
    drop(via_a);

    let unknown = connect(h, "localhost", &h.ca, &s.alice, false)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&unknown).as_deref(), Some("28000"), "{unknown}");
    let db = unknown.as_db_error().unwrap();
    assert_eq!(
        db.message(),
        "server name \"localhost\" is not served by this listener"
    );
    assert!(db.hint().unwrap().contains("host name"), "{db:?}");

    let missing = connect(h, "127.0.0.1", &h.ca, &s.alice, false)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&missing).as_deref(), Some("28000"), "{missing}");
    assert_eq!(
        missing.as_db_error().unwrap().message(),
        "the client sent no TLS server name (SNI); this listener requires one"
    );

    let records = h.audit(3).await;
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{records:?}");
    for r in &refused {
        assert_eq!(r["refusal"]["reason"], "server_name", "{r}");
        assert_eq!(r["refusal"]["sqlstate"], "28000", "{r}");
        assert!(r.get("target").is_none(), "no target was chosen: {r}");
        assert!(r.get("db_user").is_none(), "refused before the policy: {r}");
    }
    assert!(refused.iter().any(|r| r["server_name"] == "localhost"));
    assert!(refused.iter().any(|r| r.get("server_name").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_still_decides_whether_the_identity_may_use_the_chosen_target() {
    let s = start(false).await;
    let h = &s.h;
    // bob's rule grants only `cluster`; name B routes to `b`.
    let err = connect(h, NAME_B, s.files.ca(), &s.bob, false)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "this certificate is not permitted to connect to this target"
    );
    // The listener's target is fine for him.
    let ok = connect(h, "bi.corp.example", s.files.ca(), &s.bob, false)
        .await
        .unwrap();
    assert_eq!(current_user(&ok).await, s.world.iam_user(&s.bob));
    drop(ok);

    let records = h.audit(2).await;
    let denied = records
        .iter()
        .find(|r| r["outcome"] == "refused")
        .expect("a refusal");
    assert_eq!(denied["server_name"], NAME_B);
    assert_eq!(denied["target"], "b");
    assert_eq!(denied["refusal"]["reason"], "policy");
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_ssl_selects_the_certificate_and_target_by_server_name() {
    let s = start(false).await;
    let h = &s.h;
    let via_b = connect(h, NAME_B, s.files.ca(), &s.alice, true)
        .await
        .unwrap();
    assert_eq!(current_user(&via_b).await, s.on_b);
    let via_a = connect(h, NAME_A, s.files.ca(), &s.alice, true)
        .await
        .unwrap();
    assert_eq!(current_user(&via_a).await, s.on_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_swaps_an_sni_certificate_and_keeps_established_sessions() {
    let s = start(false).await;
    let h = &s.h;
    let before = connect(h, NAME_A, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&before).await, s.on_a);

    // Renew certificate A in place, as a certificate manager would, then reload.
    let renewed = s.files.pki.server_cert(&[NAME_A]).unwrap();
    std::fs::copy(&renewed.chain_pem, &s.files.a.0).unwrap();
    std::fs::copy(&renewed.key_pem, &s.files.a.1).unwrap();
    h.running.reload().await.unwrap();
    assert_eq!(
        presented(h.addr(), Some(NAME_A)).await,
        leaf(&renewed.chain_pem)
    );
    let after = connect(h, NAME_A, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&after).await, s.on_a);
    assert_eq!(
        current_user(&before).await,
        s.on_a,
        "the session opened before the reload still works"
    );

    // A broken file: the reload fails naming it, and the renewed certificate stays.
    std::fs::write(
        &s.files.a.0,
        "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = h.running.reload().await.unwrap_err();
    assert!(err.to_string().contains("a.chain.pem"), "{err}");
    assert_eq!(
        presented(h.addr(), Some(NAME_A)).await,
        leaf(&renewed.chain_pem)
    );
    assert_eq!(current_user(&before).await, s.on_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_the_certificate_does_not_cover_is_refused_at_load() {
    let mut s = start(false).await;
    let upper_b = NAME_B.to_ascii_uppercase();
    // Entry B's certificate is for NAME_B only; also claiming another name is refused by
    // the reload (the same check runs at start and in `check-config`).
    let bad = s.config(false, &[&upper_b, "warehouse.corp.example"], "b");
    let err = s.h.reload(bad).await.unwrap_err().to_string();
    assert!(err.contains("warehouse.corp.example"), "{err}");
    assert!(err.contains("b.chain.pem"), "{err}");
    assert!(
        err.contains(&format!("{NAME_B:?}")),
        "names the SANs: {err}"
    );

    // An entry naming a target that does not exist is a configuration error.
    let bad = s.config(false, &[&upper_b], "nope");
    let err = s.h.reload(bad).await.unwrap_err().to_string();
    assert!(err.contains("listener[0].certificates[1].target"), "{err}");
    assert!(err.contains("nope"), "{err}");

    // The running state is untouched.
    let still = connect(&s.h, NAME_B, s.files.ca(), &s.alice, false)
        .await
        .unwrap();
    assert_eq!(current_user(&still).await, s.on_b);
}

/// pgjdbc with the URL a BI tool already has: `jdbc:postgresql://<cluster endpoint>:<port>/`,
/// the name resolved to the proxy by the JVM's hosts file (standing in for the private
/// DNS zone), verify-full against the internal CA. The JVM sends the name as SNI.
#[tokio::test(flavor = "multi_thread")]
async fn a_jdbc_url_naming_the_cluster_endpoint_reaches_its_target() {
    let java = require_program("java");
    let jar = pgjdbc_jar();
    let classes = javac("java/UnchangedUrl.java", &[]).await;

    let mut s = start(false).await;
    // A JVM's handshake can take seconds on a busy machine: not what this test is about.
    let patient = s
        .config(false, &[&NAME_B.to_ascii_uppercase()], "b")
        .set("limits", "handshake_timeout", "30s")
        .edit_listener("main", |l| l.set("login_timeout", "30s"));
    s.h.reload(patient).await.unwrap();
    let h = &s.h;
    let hosts = classes.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {NAME_A}\n")).unwrap();
    let classpath = std::env::join_paths([classes.path(), jar.as_path()]).unwrap();
    let run = tokio::process::Command::new(java)
        .arg(format!("-Djdk.net.hosts.file={}", hosts.display()))
        .arg("-cp")
        .arg(classpath)
        .arg("UnchangedUrl")
        .arg(format!(
            "jdbc:postgresql://{NAME_A}:{}/dev",
            h.addr().port()
        ))
        .arg(s.files.ca())
        .arg(&s.alice.chain_pem)
        .arg(&s.alice.key_pk8_der)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the JVM finishes within 60s")
        .expect("run java");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), s.on_a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_client_certificate_is_audited_with_the_server_name() {
    let s = start(false).await;
    let expired = s
        .world
        .client_with(ClientCertSpec::new("expired").expired());
    let err = connect(&s.h, NAME_A, s.files.ca(), &expired, false)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    let records = s.h.audit(1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["refusal"]["reason"], "client_certificate");
    assert_eq!(records[0]["server_name"], NAME_A);
}
