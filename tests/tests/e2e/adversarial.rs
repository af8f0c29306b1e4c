//! The adversarial suite: one test per threat class. Each test asserts what the hostile
//! client (or upstream) sees — an ErrorResponse with the right SQLSTATE where one is due,
//! otherwise a clean close — and that the proxy then still serves a legitimate client.
//!
//! Threat classes and what each test proves are listed in `docs/hardening.md`.

use futures::SinkExt;
use proxy_testkit::adversary::*;
use proxy_testkit::client::client_tls;
use proxy_testkit::emulator::{allow_all_redshift_policy, Api};
use proxy_testkit::observe::{wait_for_backends, wait_for_query};
use proxy_testkit::pki::ClientCert;
use proxy_testkit::stack::CLUSTER;
use proxy_testkit::world::{sqlstate, TestProxy, World, WorldOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A world, its proxy (the world's configuration unless told otherwise) and alice.
struct Adversarial {
    world: World,
    h: TestProxy,
    alice: ClientCert,
}

impl Adversarial {
    async fn start() -> Adversarial {
        let world = World::start().await;
        let h = world.proxy(world.config()).await;
        let alice = world.client("alice");
        Adversarial { world, h, alice }
    }

    /// alice's StartupMessage: her own user, database `dev`.
    fn alice_startup(&self) -> Vec<u8> {
        startup(
            PROTOCOL_3_0,
            &[
                (b"user", self.alice.common_name.as_bytes()),
                (b"database", b"dev"),
            ],
        )
    }
}

/// A legitimate client still logs in and runs a query.
async fn assert_still_serving(h: &TestProxy, alice: &ClientCert) {
    let client = h
        .login(alice)
        .await
        .expect("a legitimate client still logs in");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// Sends `bytes` on a fresh plaintext connection and returns the proxy's ErrorResponse.
async fn plaintext_error(h: &TestProxy, bytes: &[u8]) -> WireError {
    let mut s = tcp(h).await;
    s.write_all(bytes).await.unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert!(closes(&mut s).await, "the proxy closes after the error");
    e
}

/// Sends `bytes` inside TLS (with alice's certificate) and returns the ErrorResponse.
async fn tls_error(a: &Adversarial, bytes: &[u8]) -> WireError {
    let mut s = tls(&a.h, Some(&a.alice), &[], TlsStart::SslRequest)
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert!(closes(&mut s).await, "the proxy closes after the error");
    e
}

// ---------------------------------------------------------------------------------------
// Pre-authentication
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn pre_auth_ssl_and_gss_negotiation_abuse_is_refused() {
    let a = Adversarial::start().await;
    let h = &a.h;

    // A StartupMessage pipelined behind the SSLRequest would be read as if it came through
    // TLS (CVE-2021-23214 class): refused before 'S' is ever sent.
    let mut pipelined = request(SSL_REQUEST_CODE);
    pipelined.extend_from_slice(&a.alice_startup());
    let e = plaintext_error(h, &pipelined).await;
    assert_eq!(e.code, "08P01", "{e:?}");
    assert!(
        e.message.contains("unencrypted data after SSL request"),
        "{e:?}"
    );

    // Two SSLRequests back to back are pipelining too.
    let mut twice = request(SSL_REQUEST_CODE);
    twice.extend_from_slice(&request(SSL_REQUEST_CODE));
    assert_eq!(plaintext_error(h, &twice).await.code, "08P01");

    // A second SSLRequest inside TLS.
    let e = tls_error(&a, &request(SSL_REQUEST_CODE)).await;
    assert_eq!(e.code, "08P01", "{e:?}");

    // GSSENC: declined once with 'N', a second request ends the connection (no loop).
    let mut s = tcp(h).await;
    s.write_all(&request(GSSENC_REQUEST_CODE)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, Some(b'N'));
    s.write_all(&request(GSSENC_REQUEST_CODE)).await.unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert_eq!(e.code, "08P01", "{e:?}");
    assert!(closes(&mut s).await);

    // GSSENC inside TLS.
    assert_eq!(
        tls_error(&a, &request(GSSENC_REQUEST_CODE)).await.code,
        "08P01"
    );

    // A GSSENC flood on separate connections changes nothing.
    for _ in 0..50 {
        let mut s = tcp(h).await;
        s.write_all(&request(GSSENC_REQUEST_CODE)).await.unwrap();
        assert_eq!(read_byte(&mut s).await, Some(b'N'));
    }
    assert_still_serving(h, &a.alice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_auth_startup_packet_lengths_are_bounded() {
    let a = Adversarial::start().await;
    let h = &a.h;
    // 2^31 does not fit an Int32: on the wire it is i32::MIN.
    for len in [0i32, 3, 7, 10_001, i32::MAX, i32::MIN, -1] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        let e = plaintext_error(h, &bytes).await;
        assert_eq!(e.code, "08P01", "length {len}: {e:?}");
        assert!(e.message.contains("invalid length"), "length {len}: {e:?}");
        // Inside TLS too.
        let e = tls_error(&a, &bytes).await;
        assert_eq!(e.code, "08P01", "length {len} in TLS: {e:?}");
    }
    // A length that announces more than is sent: the proxy waits for the login timeout,
    // not forever, and does not take the partial packet as a message.
    let h_fast = a
        .world
        .proxy(
            a.world
                .config()
                .edit_listener("main", |l| l.set("login_timeout", "300ms")),
        )
        .await;
    let mut s = tcp(&h_fast).await;
    s.write_all(&100i32.to_be_bytes()).await.unwrap();
    s.write_all(&PROTOCOL_3_0.to_be_bytes()).await.unwrap();
    let started = Instant::now();
    assert!(closes(&mut s).await, "a truncated startup packet times out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_still_serving(h, &a.alice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_auth_malformed_startup_messages_are_refused() {
    let a = Adversarial::start().await;

    // No terminator after the last parameter.
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0alice\0database\0dev\0");
    let e = tls_error(&a, &with_length(&body)).await;
    assert_eq!(
        (e.code.as_str(), e.severity.as_str()),
        ("08P01", "FATAL"),
        "{e:?}"
    );

    // A NUL inside a name shifts the layout: `user\0al\0ice\0` leaves a value missing.
    let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0al\0ice\0\0");
    assert_eq!(tls_error(&a, &with_length(&body)).await.code, "08P01");

    // Not UTF-8.
    let e = tls_error(&a, &startup(PROTOCOL_3_0, &[(b"user", b"\xff\xfe")])).await;
    assert_eq!(e.code, "08P01", "{e:?}");

    // No user, empty user.
    for params in [
        &[(&b"database"[..], &b"dev"[..])][..],
        &[(&b"user"[..], &b""[..])][..],
    ] {
        let e = tls_error(&a, &startup(PROTOCOL_3_0, params)).await;
        assert_eq!(e.code, "28000", "{e:?}");
        assert!(e.message.contains("no user name"), "{e:?}");
    }

    let alice = a.alice.common_name.as_bytes();
    // Protocol majors other than 3.
    for major in [0i32, 2, 4, 0x7fff] {
        let e = tls_error(&a, &startup(major << 16, &[(b"user", alice)])).await;
        assert_eq!(e.code, "08P01", "major {major}: {e:?}");
        assert!(e.message.contains("unsupported frontend protocol"), "{e:?}");
    }

    // Replication connections, in every spelling that means "yes".
    for value in [&b"true"[..], b"database", b"on", b"1", b"yes"] {
        let e = tls_error(
            &a,
            &startup(PROTOCOL_3_0, &[(b"user", alice), (b"replication", value)]),
        )
        .await;
        assert_eq!(e.code, "28000", "{value:?}: {e:?}");
        assert!(e.message.contains("replication"), "{e:?}");
    }
    assert!(
        a.world.emulator.cloudtrail().is_empty(),
        "no refusal asked AWS for credentials"
    );
    assert_still_serving(&a.h, &a.alice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_auth_hostile_names_and_options_gain_nothing() {
    // Every database is granted, by the policy and by IAM, so hostile database names reach
    // the upstream literally.
    let world = World::start_with(WorldOptions {
        policy: allow_all_redshift_policy(),
        ..WorldOptions::default()
    })
    .await;
    let h = world
        .proxy(
            world.config().without_rules().rule(
                proxy_testkit::config::Rule::new("people")
                    .matching("cn", "*")
                    .users(["{cn}"]),
            ),
        )
        .await;
    let alice = world.client("alice");
    let user = world.iam_user(&alice);

    // `options` is not forwarded (allow_options = false): no role or search_path switch.
    let mut config =
        proxy_testkit::client::connect_config(h.addr().port(), &alice.common_name, "dev");
    config.options("-c role=postgres -c search_path=evil -c session_authorization=postgres");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&h.ca, Some(&alice)));
    let (client, conn) = config.connect(tls).await.expect("login with options");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select current_user::text, session_user::text, current_setting('search_path')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), user);
    assert_eq!(row.get::<_, String>(1), user);
    assert_eq!(row.get::<_, String>(2), "\"$user\", public");

    // Connection-string metacharacters in the user name do not smuggle a second user.
    let cn = &alice.common_name;
    for user in [
        format!("{cn}&user=postgres"),
        format!("{cn} user=postgres"),
        format!("{cn}' or '1'='1"),
        "postgres".to_string(),
    ] {
        let err = h.connect(Some(&alice), &user, "dev").await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{user}: {err}");
    }
    // ... nor in the database name: the policy allows any database for alice, so these
    // reach Redshift's credential API literally, which refuses them (DbName allows
    // letters, digits and `_+.@-` only): 28000.
    for db in ["dev&user=postgres", "dev' or '1'='1", "d\"ev"] {
        let err = h.connect(Some(&alice), cn, db).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{db}: {err}");
        let trail = world.emulator.cloudtrail();
        let call = trail
            .iter()
            .find(|r| r["requestParameters"]["dbName"] == db)
            .unwrap_or_else(|| panic!("{db} never reached AWS: {trail:#?}"));
        assert_eq!(call["errorCode"], "InvalidParameterValue", "{call}");
    }
    // A name Redshift's API accepts reaches the upstream literally and fails there, with
    // the upstream's SQLSTATE.
    let err = h.connect(Some(&alice), cn, "no_such_db").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    assert_still_serving(&h, &alice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pre_auth_second_startup_message_is_never_a_new_login() {
    let a = Adversarial::start().await;
    let bob = a.world.client("bob");
    // Two StartupMessages in one TLS write: the second claims another user. The proxy
    // logs in as the first and relays the rest as ordinary client bytes, which the
    // upstream rejects as a message of type 0.
    let mut s = tls(&a.h, Some(&a.alice), &[], TlsStart::SslRequest)
        .await
        .unwrap();
    let mut both = a.alice_startup();
    both.extend_from_slice(&startup(
        PROTOCOL_3_0,
        &[(b"user", bob.common_name.as_bytes()), (b"database", b"dev")],
    ));
    s.write_all(&both).await.unwrap();
    let replies = read_all(&mut s).await;
    assert!(
        matches!(replies.first(), Some(Reply::Message { tag: b'R', body }) if body[..] == [0, 0, 0, 0]),
        "{replies:?}"
    );
    let error = replies
        .iter()
        .find_map(|r| match r {
            Reply::Error(e) => Some(e.clone()),
            _ => None,
        })
        .expect("the upstream rejects the stray packet");
    assert_eq!(error.code, "08P01", "{error:?}");
    // Only alice's login ever happened.
    assert_eq!(a.world.emulator.calls(Api::GetClusterCredentials), 1);
    let logins = a.world.standin().logins();
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0].user, a.world.iam_user(&a.alice));
    assert!(proxy_testkit::observe::backends(a.world.pg, &a.world.role(&a.alice)).await <= 1);
    assert_still_serving(&a.h, &a.alice).await;
}

// ---------------------------------------------------------------------------------------
// Framing after login
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn post_login_framing_violations_end_only_that_session() {
    let a = Adversarial::start().await;
    let (h, cn) = (&a.h, a.alice.common_name.as_str());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length 0", b"Q\0\0\0\0".to_vec()),
        ("length 1", b"Q\0\0\0\x01".to_vec()),
        ("length 2", b"Q\0\0\0\x02".to_vec()),
        ("length 3", b"Q\0\0\0\x03".to_vec()),
        ("negative length", b"Q\xff\xff\xff\xff".to_vec()),
        ("i32::MIN length", b"Q\x80\0\0\0".to_vec()),
        (
            "overflowing length",
            b"Q\x7f\xff\xff\xffselect 1\0".to_vec(),
        ),
        ("message type 0", b"\0\0\0\0\x08abcd".to_vec()),
        ("backend-only type R", message(b'R', &0i32.to_be_bytes())),
        ("type 0xff", message(0xff, b"x")),
        ("CopyData outside COPY", message(b'd', b"data")),
    ];
    for (what, bytes) in cases {
        let mut s = raw_login(h, &a.alice, cn, "dev").await;
        s.write_all(&bytes).await.unwrap();
        let _ = s.flush().await;
        // PostgreSQL answers a framing violation with FATAL 08P01 and hangs up; for the
        // overflowing length it may instead wait for the body (1 GiB limit), so closing
        // our side must end the upstream session as well.
        let deadline = tokio::time::timeout(Duration::from_secs(3), read_reply(&mut s)).await;
        match deadline {
            Ok(Reply::Error(e)) => {
                assert_eq!(e.code, "08P01", "{what}: {e:?}");
                assert!(closes(&mut s).await, "{what}");
            }
            Ok(Reply::Closed) => {}
            Ok(other) => panic!("{what}: unexpected {other:?}"),
            Err(_) => drop(s),
        }
    }
    // Truncated message, then the client stops mid-message and leaves: once the upstream
    // session has the partial message, nothing more comes.
    let mut s = raw_login(h, &a.alice, cn, "dev").await;
    let mut q = message(b'Q', b"select pg_sleep(0)\0");
    q.truncate(q.len() - 5);
    s.write_all(&q).await.unwrap();
    s.flush().await.unwrap();
    drop(s);

    // None of this left an upstream backend behind.
    wait_for_backends(a.world.pg, &a.world.role(&a.alice), 0).await;
    assert_still_serving(h, &a.alice).await;
}

// ---------------------------------------------------------------------------------------
// Client TLS
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn tls_bad_client_certificates_and_deep_chains_are_refused() {
    let world = World::start().await;
    let alice = world.client("alice");
    let refused = world.refused_client_certs();
    let h = world.proxy(world.config()).await;
    for (cert, words) in &refused {
        let err = h
            .connect(cert.as_ref(), &alice.common_name, "dev")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{words}: {err}");
        let text = err.as_db_error().unwrap().message().to_lowercase();
        assert!(text.contains(words), "{words}: {text}");
    }

    // webpki builds paths through at most 6 intermediates; a leaf below 7 is refused.
    let (chain, key) = deep_chain(&world, 7, &world.name("alice-deep"));
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots(&h))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols.clear();
    let mut s = connect_with(&h, config).await;
    s.write_all(&startup(
        PROTOCOL_3_0,
        &[
            (b"user", alice.common_name.as_bytes()),
            (b"database", b"dev"),
        ],
    ))
    .await
    .unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert_eq!(e.code, "28000", "{e:?}");
    assert!(e.message.contains("PathDepth"), "{e:?}");
    assert!(
        world.emulator.cloudtrail().is_empty(),
        "no refusal reached AWS"
    );
    assert_still_serving(&h, &alice).await;
}

fn roots(h: &TestProxy) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&h.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

async fn connect_with(
    h: &TestProxy,
    config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut s = tcp(h).await;
    s.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
    assert_eq!(read_byte(&mut s).await, Some(b'S'));
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), s)
        .await
        .unwrap()
}

/// A client chain `leaf, I_depth, ..., I_1` below the world's client CA.
fn deep_chain(
    world: &World,
    depth: usize,
    cn: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let root = world.pki.root();
    let root_key = KeyPair::from_pem(&std::fs::read_to_string(&root.key_pem).unwrap()).unwrap();
    let root_pem = std::fs::read_to_string(&root.cert_pem).unwrap();
    let mut issuer = Issuer::from_ca_cert_pem(&root_pem, root_key).unwrap();
    let mut intermediates = Vec::new();
    for i in 1..=depth {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Deep Intermediate {i}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        intermediates.push(cert.der().clone());
        issuer = Issuer::new(params, key);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let mut chain = vec![leaf.der().clone()];
    chain.extend(intermediates.into_iter().rev());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (chain, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_legacy_versions_renegotiation_and_alpn_are_refused() {
    let a = Adversarial::start().await;
    let h = &a.h;

    // TLS 1.0 and 1.1 ClientHellos (no supported_versions extension): a fatal alert or a
    // close, never a handshake.
    for legacy in [[3u8, 1], [3u8, 2]] {
        let mut s = tcp(h).await;
        s.write_all(&request(SSL_REQUEST_CODE)).await.unwrap();
        assert_eq!(read_byte(&mut s).await, Some(b'S'));
        s.write_all(&legacy_client_hello(legacy)).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(REPLY_TIMEOUT, s.read_to_end(&mut reply)).await;
        // Alert record: type 0x15, fatal (2), protocol_version (70) or handshake_failure
        // (40) depending on how far rustls parsed the offer.
        assert!(
            reply.is_empty()
                || (reply[0] == 0x15
                    && reply.get(5) == Some(&2)
                    && matches!(reply.get(6), Some(70 | 40))),
            "{legacy:?}: expected a fatal TLS alert, got {reply:02x?}"
        );
    }

    // Renegotiation (TLS 1.2, via openssl's `R` command): rustls answers the new
    // ClientHello with a no_renegotiation alert, which OpenSSL reports as such. (rustls
    // does send the RFC 5746 renegotiation_info extension, so s_client prints "Secure
    // Renegotiation IS supported": that only means the indication, not renegotiation.)
    if let Some(out) = openssl_renegotiate(h, &a.alice).await {
        assert!(out.contains("TLSv1.2"), "{out}");
        assert!(out.contains("RENEGOTIATING"), "{out}");
        assert!(out.contains("no renegotiation"), "{out}");
    }

    // Direct TLS without ALPN "postgresql": an ErrorResponse inside TLS.
    let mut s = tls(h, Some(&a.alice), &[], TlsStart::Direct).await.unwrap();
    s.write_all(&a.alice_startup()).await.unwrap();
    let e = read_reply(&mut s).await.expect_error();
    assert_eq!(e.code, "08P01", "{e:?}");
    assert!(e.message.contains("ALPN"), "{e:?}");
    // With the wrong ALPN protocol the handshake itself fails.
    assert!(tls(h, Some(&a.alice), &[b"http/1.1"], TlsStart::Direct)
        .await
        .is_err());
    // With ALPN "postgresql" direct TLS works.
    let mut s = tls(h, Some(&a.alice), &[b"postgresql"], TlsStart::Direct)
        .await
        .unwrap();
    s.write_all(&a.alice_startup()).await.unwrap();
    assert!(matches!(
        read_reply(&mut s).await,
        Reply::Message { tag: b'R', .. }
    ));
    assert_still_serving(h, &a.alice).await;
}

/// A TLS record with a ClientHello offering only `version` (TLS 1.0 = 3.1, 1.1 = 3.2).
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&version);
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    let mut handshake = vec![1u8]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Runs `openssl s_client -starttls postgres -tls1_2` against the proxy and asks it to
/// renegotiate. Returns its output, or `None` if openssl is not installed.
async fn openssl_renegotiate(h: &TestProxy, cert: &ClientCert) -> Option<String> {
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-starttls", "postgres", "-tls1_2", "-connect"])
        .arg(h.addr().to_string())
        .arg("-cert")
        .arg(&cert.cert_pem)
        .arg("-key")
        .arg(&cert.key_pem)
        .arg("-CAfile")
        .arg(&h.ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stdin.write_all(b"R\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("openssl ends")
        .ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

// ---------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------

/// A proxy whose target `cluster` is a fake upstream following `scripts`, then
/// forwarding to the cluster's stand-in. The credential chain is the real one: each login
/// gets its password from the emulator (the fake ignores it; a forwarded login uses it at
/// the stand-in). Only the upstream's misbehaviour is scripted: no stand-in of Redshift
/// breaks the protocol on purpose.
async fn with_fake_upstream(
    scripts: Vec<UpstreamScript>,
    default: UpstreamScript,
) -> (Adversarial, FakeUpstream) {
    let world = World::start().await;
    let standin = world.emulator.endpoint(CLUSTER).unwrap();
    let fake = FakeUpstream::start(standin.addr, &standin.ca_cert, scripts, default).await;
    // One script per connection, in order: warm connections would take scripts ahead of
    // the logins they are meant for.
    let config = world.config().edit_target("cluster", |t| {
        t.set("port", i64::from(fake.port))
            .set("ca_bundle", proxy_testkit::config::path(&fake.ca_bundle))
            .set("warm_connections", 0i64)
    });
    let h = world.proxy(config).await;
    let alice = world.client("alice");
    (Adversarial { world, h, alice }, fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_misbehaviour_is_a_clean_error_for_the_client() {
    const SECRET_TEXT: &str = "injected-by-a-man-in-the-middle";
    let cases: Vec<(UpstreamScript, &str, &str)> = vec![
        (
            UpstreamScript::Tls(FakeCert::OtherName, AfterTls::CloseAfterStartup),
            "08001",
            "verified TLS",
        ),
        (
            UpstreamScript::Tls(FakeCert::UntrustedCa, AfterTls::CloseAfterStartup),
            "08001",
            "verified TLS",
        ),
        (UpstreamScript::RefuseTls, "08001", "does not offer TLS"),
        (
            UpstreamScript::ErrorBeforeTls(SECRET_TEXT.into()),
            "08001",
            "refused to start TLS",
        ),
        (UpstreamScript::BytesAfterS, "08P01", "protocol violation"),
        (
            UpstreamScript::Tls(FakeCert::Good, AfterTls::OversizedScramNonce(1 << 20)),
            "08P01",
            "protocol violation",
        ),
        (
            UpstreamScript::Tls(FakeCert::Good, AfterTls::OversizedScramNonce(60_000)),
            "08P01",
            "SCRAM",
        ),
        (
            UpstreamScript::Tls(
                FakeCert::Good,
                AfterTls::ErrorWithoutSqlstate("no code here".into()),
            ),
            "XX000",
            "no code here",
        ),
        (
            UpstreamScript::Tls(FakeCert::Good, AfterTls::CloseAfterStartup),
            "08006",
            "lost the connection",
        ),
    ];
    let n = cases.len();
    let scripts = cases.iter().map(|(s, _, _)| s.clone()).collect();
    let (a, fake) = with_fake_upstream(scripts, UpstreamScript::Forward).await;
    for (script, code, words) in cases {
        let err = a.h.login(&a.alice).await.unwrap_err();
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{script:?}: {err}"));
        assert_eq!(db.code().code(), code, "{script:?}: {db:?}");
        assert!(db.message().contains(words), "{script:?}: {db:?}");
        assert!(!err.to_string().contains(SECRET_TEXT), "{script:?}: {err}");
    }
    assert_eq!(fake.connections(), n);
    // The scripts are used up: the fake now forwards to the stand-in, and the login gets
    // through with a password from the emulator.
    assert_still_serving(&a.h, &a.alice).await;
    assert!(a
        .world
        .standin()
        .logins()
        .iter()
        .any(|l| l.user == a.world.iam_user(&a.alice)
            && l.outcome == proxy_testkit::standin::LoginOutcome::Ok));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_death_during_query_and_copy_ends_only_those_sessions() {
    let a = Adversarial::start().await;
    let (pg, role) = (a.world.pg, a.world.role(&a.alice));
    let admin = pg.admin().await.unwrap();
    let terminate = "select pg_terminate_backend(pid) from pg_stat_activity where usename = $1";

    // During a query.
    let client = a.h.login(&a.alice).await.unwrap();
    let query = tokio::spawn(async move { client.query("select pg_sleep(30)", &[]).await });
    wait_for_query(pg, &role, "pg_sleep(30)").await;
    admin.execute(terminate, &[&role]).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the client learns promptly")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P01"), "{err}");

    // During COPY IN.
    let client = a.h.login(&a.alice).await.unwrap();
    client
        .batch_execute("create temp table sink (line text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy sink from stdin").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"one\n"))
        .await
        .unwrap();
    wait_for_query(pg, &role, "copy sink from stdin").await;
    admin.execute(terminate, &[&role]).await.unwrap();
    let mut failed = false;
    for _ in 0..200 {
        if sink
            .send(bytes::Bytes::from(vec![b'x'; 65536]))
            .await
            .is_err()
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !failed {
        assert!(sink.finish().await.is_err(), "the COPY must not succeed");
    }
    assert!(client.is_closed() || client.simple_query("select 1").await.is_err());
    assert_still_serving(&a.h, &a.alice).await;
}

// ---------------------------------------------------------------------------------------
// AWS credentials
// ---------------------------------------------------------------------------------------

/// Every way the credential call fails, injected at the AWS emulator (and, for refusals,
/// produced by IAM and Redshift's own checks): the client gets 08001 when AWS is
/// unavailable and 28000 when it refuses, never AWS's error text.
#[tokio::test(flavor = "multi_thread")]
async fn credential_failures_map_to_sqlstates_and_do_not_stall_others() {
    let world = World::start().await;
    // Rules: everyone as `{cn}` on the cluster, databases `dev`, `forbidden` (the IAM
    // policy allows only `dev`) and `dev:x` (not a name Redshift's API takes); bob on the
    // serverless workgroup through listener `wg`.
    let config = world
        .config()
        .without_rules()
        .rule(
            proxy_testkit::config::Rule::new("people")
                .matching("cn", "*")
                .targets(["cluster", "serverless"])
                .users(["{cn}"])
                .default_user("{cn}")
                .databases(["dev", "forbidden", "dev:x"]),
        )
        .listener(world.listener("wg", "serverless"));
    let h = world.proxy(config).await;
    let faults = world.emulator.faults();
    let gcc = Some(Api::GetClusterCredentials);
    type Inject = Box<dyn Fn(&proxy_testkit::emulator::Faults)>;
    // Each case with its own identity: a failed call backs its request off, and the cases
    // must not answer each other from that backoff.
    let cases: Vec<(&str, Inject, &str, &str)> = vec![
        // Throttled on every attempt (the SDK retries throttling).
        (
            "throttled",
            Box::new(move |f| f.throttle_next(gcc, 1000)),
            "dev",
            "08001",
        ),
        // HTTP 503 on every attempt.
        (
            "unavailable",
            Box::new(move |f| f.fail_next(gcc, 1000)),
            "dev",
            "08001",
        ),
        // The connection breaks without an answer (what a timeout leaves too; a real SDK
        // timeout takes 10 s per attempt).
        (
            "dropped",
            Box::new(move |f| f.drop_next(gcc, 1000)),
            "dev",
            "08001",
        ),
        // IAM denies the database.
        ("denied", Box::new(|_| {}), "forbidden", "28000"),
        // Redshift refuses the parameters (InvalidParameterValue: no colon in DbName).
        ("invalid", Box::new(|_| {}), "dev:x", "28000"),
    ];
    for (name, inject, database, code) in cases {
        let cert = world.client(name);
        inject(faults);
        let err = h
            .connect(Some(&cert), &cert.common_name, database)
            .await
            .unwrap_err();
        faults.clear();
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{name}: {err}");
        // AWS error text is for the operator log, not for the client.
        let message = err.as_db_error().unwrap().message();
        assert!(
            !message.contains("Exception")
                && !message.contains("redshift")
                && !message.contains("AccessDenied"),
            "{name}: {message}"
        );
    }
    let denied = world
        .emulator
        .cloudtrail()
        .iter()
        .filter(|r| r["errorCode"] == "AccessDenied" || r["errorCode"] == "InvalidParameterValue")
        .count();
    assert_eq!(denied, 2, "the refusals came from AWS");

    // A hanging credential call for alice (GetClusterCredentials answers after 4 s) does
    // not hold up bob's login, whose own credential call (serverless GetCredentials) is
    // answered at once.
    let alice = world.client("alice");
    let bob = world.client("bob");
    faults.set_api_latency(Api::GetClusterCredentials, Duration::from_secs(4));
    let alice_login = h.login(&alice);
    let bob_login = async {
        let started = Instant::now();
        let client = h
            .connect_to(h.listener("wg"), Some(&bob), &bob.common_name, "dev")
            .await;
        (started.elapsed(), client)
    };
    let (alice_result, (bob_elapsed, bob_result)) = tokio::join!(alice_login, bob_login);
    assert!(bob_elapsed < Duration::from_secs(3), "{bob_elapsed:?}");
    bob_result.expect("bob logs in while alice's credential call hangs");
    alice_result.expect("a slow credential still logs in");
    assert_eq!(world.emulator.calls(Api::GetCredentials), 1);
    faults.clear();
    assert_still_serving(&h, &alice).await;
}

// ---------------------------------------------------------------------------------------
// Resource exhaustion
// ---------------------------------------------------------------------------------------

/// 1000 idle connections (half of them with a started packet) from 100 addresses do not
/// delay a legitimate login: handshake slots are taken only once a ClientHello arrived.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_connections_do_not_starve_a_legitimate_login() {
    let _heavy = proxy_testkit::world::heavy().await;
    const IDLE: usize = 1000;
    // Raising the limit (never lowering it) is harmless to the other tests of the process.
    raise_fd_limit(4 * IDLE as u64 + 1024);
    let world = World::start().await;
    let h = world
        .proxy(
            world
                .config()
                .edit_listener("main", |l| l.set("login_timeout", "60s")),
        )
        .await;
    let alice = world.client("alice");
    let mut idle = Vec::with_capacity(IDLE);
    // From 100 addresses, each below the cap of pending connections per source.
    for i in 0..IDLE {
        let source = std::net::Ipv4Addr::new(127, 0, 1, (i % 100) as u8 + 1);
        idle.push(tcp_from(&h, source).await);
    }
    // Half of them also start a packet and stall.
    for s in idle.iter_mut().step_by(2) {
        s.write_all(&100i32.to_be_bytes()).await.unwrap();
    }
    let started = Instant::now();
    assert_still_serving(&h, &alice).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "login took {:?} behind {IDLE} idle connections",
        started.elapsed()
    );
    drop(idle);
    // Connection caps (issue 5) are tested with their implementation.
}

fn raise_fd_limit(wanted: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < wanted {
        setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_floods_are_rate_limited() {
    let _heavy = proxy_testkit::world::heavy().await;
    const FLOOD: usize = 200;
    let (a, fake) = with_fake_upstream(
        vec![UpstreamScript::Tls(
            FakeCert::Good,
            AfterTls::LoginOk {
                pid: 4242,
                key: [9, 9, 9, 9],
            },
        )],
        // Every later connection is a forwarded cancel (counted by the fake).
        UpstreamScript::Tls(FakeCert::Good, AfterTls::CloseAfterStartup),
    )
    .await;
    let h = &a.h;
    // A session whose proxy-issued cancel key the flood uses.
    let mut s = tls(h, Some(&a.alice), &[], TlsStart::SslRequest)
        .await
        .unwrap();
    s.write_all(&a.alice_startup()).await.unwrap();
    let mut key = None;
    loop {
        match read_reply(&mut s).await {
            Reply::Message { tag: b'K', body } => key = Some(body),
            Reply::Message { tag: b'Z', .. } => break,
            Reply::Message { .. } => {}
            other => panic!("login failed: {other:?}"),
        }
    }
    let key = key.expect("BackendKeyData");
    let pid = i32::from_be_bytes(key[..4].try_into().unwrap());

    let started = Instant::now();
    let flood = (0..FLOOD).map(|_| {
        let addr = h.addr();
        let cancel = cancel_request(pid, &key[4..]);
        async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&cancel).await.unwrap();
            // No reply to a cancel, ever: the proxy just closes.
            let mut buf = [0u8; 16];
            let n = c.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0, "a cancel request got a reply");
        }
    });
    futures::future::join_all(flood).await;
    // Every cancel request is audited with its outcome once it is decided; the forwarded
    // ones have reached the fake upstream once it counted as many.
    let records = h.audit(1 + FLOOD).await;
    let forwarded = records
        .iter()
        .filter(|r| r["kind"] == "cancel" && r["cancel_outcome"] == "forwarded")
        .count();
    let limited = records
        .iter()
        .filter(|r| r["kind"] == "cancel" && r["cancel_outcome"] == "rate_limited")
        .count();
    assert_eq!(forwarded + limited, FLOOD, "{records:?}");
    let landed = proxy_testkit::observe::eventually(Duration::from_secs(10), || async {
        (fake.cancels() >= forwarded).then_some(())
    })
    .await;
    assert!(
        landed.is_some(),
        "{} of {forwarded} forwarded cancels arrived",
        fake.cancels()
    );
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 40.0 + 20.0 * elapsed;
    let seen = fake.cancels();
    assert_eq!(seen, forwarded);
    assert!(seen >= 1, "legitimate cancels still pass");
    assert!(
        (seen as f64) <= allowed,
        "{seen} cancels reached the upstream in {elapsed:.1}s (allowed {allowed:.0})"
    );
    assert!(seen < FLOOD);
}
