//! Scripted fake upstreams on loopback: each test plays the server side of one exchange
//! byte by byte and checks what `connect_and_login` / `send_cancel` do with it.

mod fake_upstream;

use super::*;
use fake_upstream::*;
pub(super) use fake_upstream::{accept_tls, auth, endpoint, error_response, ok_and_ready};
pub(super) use fake_upstream::{password, pki_for, read_client, read_startup, request, Pki};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------
// Logins that succeed
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn cleartext_login_sends_startup_literally_and_collects_messages_up_to_ready() {
    let pki = localhost();
    let upstream = after_tls(&pki, |mut s| async move {
        let (version, params) = read_startup(&mut s).await;
        assert_eq!(version, 0x0003_0000);
        assert_eq!(
            params,
            vec![
                ("user".to_string(), "IAM:alice".to_string()),
                ("database".to_string(), "dev".to_string()),
                ("application_name".to_string(), "a&user=b".to_string()),
                ("search_path".to_string(), "\"x y\", public".to_string()),
            ]
        );
        // A notice before AuthenticationOk is dropped; one after it is kept.
        let pre = [msg(b'N', b"SNOTICE\0Mhello before auth\0\0"), auth(3, b"")].concat();
        let p = exchange(&mut s, &pre).await;
        assert_eq!(p.tag, b'p');
        assert_eq!(&p.body[..], format!("{PASSWORD}\0").as_bytes());
        let post = [
            auth(0, b""),
            msg(b'S', b"server_version\x008.0.2\0"),
            // Redshift's answer to client_protocol_version goes to the client unchanged.
            msg(b'S', b"server_protocol_version\x002\0"),
            msg(b'K', &[0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef]),
            msg(b'N', b"SNOTICE\0Mafter auth\0\0"),
            msg(b'S', b"TimeZone\0UTC\0"),
            msg(b'Z', b"I"),
        ]
        .concat();
        s.write_all(&post).await.unwrap();
        until_client_leaves(s).await;
    })
    .await;

    let params = vec![
        ("application_name".to_string(), "a&user=b".to_string()),
        ("search_path".to_string(), "\"x y\", public".to_string()),
    ];
    let session = log_in(&endpoint(&pki, upstream.port), &params, upstream.server)
        .await
        .unwrap();
    assert_eq!(session.auth_method, AuthMethod::Cleartext);
    let key = session.backend_key.clone().unwrap();
    assert_eq!(
        (key.pid, &key.key[..]),
        (12345, &[0xde, 0xad, 0xbe, 0xef][..])
    );
    let expected_after_auth = [
        msg(b'S', b"server_version\x008.0.2\0"),
        msg(b'S', b"server_protocol_version\x002\0"),
        msg(b'N', b"SNOTICE\0Mafter auth\0\0"),
        msg(b'S', b"TimeZone\0UTC\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    assert_eq!(&session.after_auth[..], &expected_after_auth[..]);
    assert!(
        session.tls_version.starts_with("TLSv1."),
        "{}",
        session.tls_version
    );
    assert!(!session.tls_cipher.is_empty());
    let dbg = format!("{session:?}");
    assert!(
        !dbg.contains(PASSWORD) && !dbg.contains("222, 173"),
        "{dbg}"
    );
}

#[tokio::test]
async fn md5_login_sends_the_documented_hash() {
    let salt = [0x2a, 0x3d, 0x8f, 0xe0];
    let session = login_after_startup(&localhost(), move |mut s| async move {
        let p = exchange(&mut s, &auth(5, &salt)).await;
        // "md5" + md5hex(md5hex(password + user) + salt), computed here independently.
        let inner = hex::encode(md5::Md5::digest(format!("{PASSWORD}IAM:alice")));
        let mut outer = md5::Md5::new();
        outer.update(inner.as_bytes());
        outer.update(salt);
        let expected = format!("md5{}\0", hex::encode(outer.finalize()));
        assert_eq!((p.tag, &p.body[..]), (b'p', expected.as_bytes()));
        welcome(s).await;
    })
    .await
    .unwrap();
    assert_eq!(session.auth_method, AuthMethod::Md5);
}

#[tokio::test]
async fn redshift_digest_login_answers_with_the_documented_digest() {
    let salt = b"\x01\x02salty\xff";
    let server_nonce = b"server-nonce-0123456789";
    let session = login_after_startup(&localhost(), move |mut s| async move {
        // Algorithm 0 = SHA-256.
        let d = exchange(&mut s, &digest_request(0, salt, server_nonce)).await;
        assert_eq!(d.tag, b'd');
        let body = &d.body[..];
        let digest_len = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        let digest = &body[4..4 + digest_len];
        let at = 4 + digest_len;
        let nonce_len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap()) as usize;
        let client_nonce = &body[at + 4..];
        assert_eq!(client_nonce.len(), nonce_len, "nothing after the nonce");

        // Client nonce: Unix time in ms, ASCII decimal.
        let ms: u128 = std::str::from_utf8(client_nonce).unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(now.abs_diff(ms) < 60_000, "nonce {ms} vs now {now}");

        // SHA256( SHA256(password ‖ salt) ‖ serverNonce ‖ clientNonce )
        let mut inner = Sha256::new();
        inner.update(PASSWORD.as_bytes());
        inner.update(salt);
        let mut outer = Sha256::new();
        outer.update(inner.finalize());
        outer.update(server_nonce);
        outer.update(client_nonce);
        assert_eq!(digest, &outer.finalize()[..]);
        welcome(s).await;
    })
    .await
    .unwrap();
    assert_eq!(session.auth_method, AuthMethod::RedshiftDigestSha256);
}

/// Logs in to a SCRAM server offering `offered`; checks the client chose `chosen` with the
/// channel-binding input `cbind`, and returns how the session authenticated.
async fn scram_login(
    pki: &Pki,
    offered: &'static [&'static str],
    chosen: &'static str,
    cbind: Vec<u8>,
) -> AuthMethod {
    let session = login_after_startup(pki, move |mut s| async move {
        let (mechanism, sent) = scram_server(&mut s, offered, false).await;
        assert_eq!((mechanism.as_str(), sent), (chosen, cbind));
        until_client_leaves(s).await;
    })
    .await
    .unwrap();
    session.auth_method
}

#[tokio::test]
async fn scram_plus_is_chosen_and_bound_to_the_server_certificate() {
    let pki = localhost();
    // rcgen signs with ECDSA P-256 SHA-256: the binding is SHA-256 of the leaf DER.
    let cbind = [
        &b"p=tls-server-end-point,,"[..],
        &Sha256::digest(&pki.leaf_der),
    ]
    .concat();
    let offered = &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"];
    let method = scram_login(&pki, offered, "SCRAM-SHA-256-PLUS", cbind).await;
    assert_eq!(method, AuthMethod::ScramSha256Plus);
}

#[tokio::test]
async fn plain_scram_is_used_when_plus_is_not_offered() {
    // "y": the client supports binding but the server did not offer it.
    let cbind = b"y,,".to_vec();
    let method = scram_login(&localhost(), &["SCRAM-SHA-256"], "SCRAM-SHA-256", cbind).await;
    assert_eq!(method, AuthMethod::ScramSha256);
}

#[tokio::test]
async fn a_wrong_scram_server_signature_fails_the_login() {
    let err = login_after_startup(&localhost(), |mut s| async move {
        scram_server(&mut s, &["SCRAM-SHA-256"], true).await;
    })
    .await
    .unwrap_err();
    assert!(matches!(err, UpstreamError::Scram { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "08P01");
    assert!(!err.is_auth_failure());
}

#[tokio::test]
async fn a_second_scram_login_with_the_same_credential_skips_pbkdf2() {
    let pki = localhost();
    let cfg = pki.server.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The same salt on every login, as PostgreSQL and Redshift keep one per password.
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = accept_tls(tcp, cfg.clone()).await;
            read_startup(&mut s).await;
            scram_server(&mut s, &["SCRAM-SHA-256"], false).await;
            until_client_leaves(s).await;
        }
    });
    let ep = endpoint(&pki, port);
    let pw = password();
    for _ in 0..2 {
        let session = connect_and_login(&ep, &request(&pw, &[])).await.unwrap();
        assert_eq!(session.auth_method, AuthMethod::ScramSha256);
    }
    // The first login derived the salted password, the second (its proof still checked
    // by the server, the server's signature still checked by us) took it from the cache.
    assert_eq!(ep.scram_cache.stats(), (1, 1));
    assert_eq!(ep.scram_cache.len(), 1);
    server.await.unwrap();
}

#[tokio::test]
async fn authentication_ok_without_the_scram_final_message_is_refused() {
    let err = login_after_startup(&localhost(), |mut s| async move {
        exchange(&mut s, &auth(10, b"SCRAM-SHA-256\0\0")).await;
        // Skips SASLContinue/SASLFinal: the server never proves it knows the password.
        let _ = s.write_all(&ok_and_ready()).await;
    })
    .await
    .unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// SSL negotiation and certificate verification
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bytes_buffered_after_s_are_a_protocol_violation() {
    let upstream = before_tls(|mut tcp| async move {
        // 'S' and an injected message in one segment (CVE-2021-23222).
        tcp.write_all(&[b"S".to_vec(), auth(0, b"")].concat())
            .await
            .unwrap();
        let _ = tcp.read_u8().await;
    })
    .await;
    let err = login_to(&localhost(), upstream).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Protocol {
                phase: Phase::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.sqlstate(), "08P01");
}

#[tokio::test]
async fn n_means_the_upstream_does_not_offer_tls_and_there_is_no_plaintext_fallback() {
    let err = login_to(&localhost(), before_tls(decline_tls).await)
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::TlsNotOffered), "{err:?}");
    assert!(err.to_string().contains("does not offer TLS"));
    assert_eq!(err.sqlstate(), "08001");
}

#[tokio::test]
async fn an_error_before_tls_is_neither_relayed_nor_logged() {
    let upstream = before_tls(|mut tcp| async move {
        let e = error_response(&[
            (b'S', "FATAL"),
            (b'C', "28000"),
            (b'M', "INJECTED-PRE-TLS-TEXT"),
        ]);
        let _ = tcp.write_all(&e).await;
    })
    .await;
    let err = login_to(&localhost(), upstream).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::ServerErrorBeforeTls),
        "{err:?}"
    );
    for text in [err.to_string(), format!("{err:?}"), err.client_message()] {
        assert!(!text.contains("INJECTED"), "{text}");
    }
    // Not an auth failure: the text claimed 28000, but nothing unauthenticated counts.
    assert!(!err.is_auth_failure());
    assert_eq!(err.sqlstate(), "08001");
}

#[tokio::test]
async fn any_other_answer_to_ssl_request_is_a_protocol_error() {
    let upstream = before_tls(|mut tcp| async move {
        let _ = tcp.write_all(b"R").await;
    })
    .await;
    let err = login_to(&localhost(), upstream).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
}

/// Logs in with `pki`'s server certificate checked for `client_host` against
/// `client_ca`; returns the client's error.
async fn tls_failure(pki: &Pki, client_host: &str, client_ca: &std::path::Path) -> UpstreamError {
    let upstream = handshake_aborted_by_client(pki).await;
    let ep = UpstreamEndpoint::from_config(&target(client_host, upstream.port, client_ca)).unwrap();
    log_in(&ep, &[], upstream.server).await.unwrap_err()
}

#[tokio::test]
async fn a_certificate_for_another_name_is_rejected_even_when_dialling_elsewhere() {
    // The certificate is for localhost; the target's host is another name, dialled at the
    // same loopback address: verification follows `host`, not the dial address.
    let pki = localhost();
    let err = tls_failure(&pki, "cluster.example.com", pki.ca_file.path()).await;
    match &err {
        UpstreamError::Tls { host, failure, .. } => {
            assert_eq!(host, "cluster.example.com");
            assert_eq!(*failure, TlsFailure::NameMismatch);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("not valid for the host name"),
        "{err}"
    );
    assert!(err.client_message().contains("not valid for the host name"));
    assert_eq!(err.sqlstate(), "08001");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_rejected() {
    let pki = localhost();
    let other_ca = localhost();
    let err = tls_failure(&pki, "localhost", other_ca.ca_file.path()).await;
    assert!(
        matches!(
            &err,
            UpstreamError::Tls {
                failure: TlsFailure::UntrustedIssuer,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("trusted CA"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Errors during login
// ---------------------------------------------------------------------------------------

/// Logs in to a server that sends `bytes` after the startup packet; returns the error.
async fn login_against(bytes: Vec<u8>) -> UpstreamError {
    login_after_startup(&localhost(), |mut s| async move {
        let _ = s.write_all(&bytes).await;
        until_client_leaves(s).await;
    })
    .await
    .unwrap_err()
}

#[tokio::test]
async fn an_error_without_sqlstate_is_reported_as_xx000() {
    let err = login_against(error_response(&[(b'S', "FATAL"), (b'M', "no code here")])).await;
    assert!(matches!(err, UpstreamError::Server { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "XX000");
    assert_eq!(err.client_message(), "no code here");
    assert!(!err.is_auth_failure());
}

#[tokio::test]
async fn a_rejected_password_is_an_auth_failure_with_the_upstream_sqlstate() {
    for code in ["28P01", "28000"] {
        let bytes = [
            auth(3, b""),
            error_response(&[
                (b'S', "FATAL"),
                (b'C', code),
                (
                    b'M',
                    "password authentication failed for user \"IAM:alice\"",
                ),
            ]),
        ]
        .concat();
        let err = login_against(bytes).await;
        assert!(err.is_auth_failure(), "{err:?}");
        assert_eq!(err.sqlstate(), code);
        assert!(err
            .client_message()
            .contains("password authentication failed"));
        for text in [err.to_string(), format!("{err:?}"), err.client_message()] {
            assert!(!text.contains(PASSWORD), "{text}");
        }
    }
}

#[tokio::test]
async fn an_error_after_authentication_ok_keeps_its_sqlstate() {
    let bytes = [
        auth(0, b""),
        error_response(&[
            (b'S', "FATAL"),
            (b'C', "3D000"),
            (b'M', "database \"dev\" does not exist"),
        ]),
    ]
    .concat();
    let err = login_against(bytes).await;
    assert!(matches!(err, UpstreamError::Server { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "3D000");
}

#[tokio::test]
async fn an_oversized_message_is_refused_before_it_is_read() {
    // Announces a 1 GiB authentication request; the client must not wait for or allocate it.
    let mut bytes = vec![b'R'];
    bytes.extend_from_slice(&(1i32 << 30).to_be_bytes());
    let err = login_against(bytes).await;
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[tokio::test]
async fn an_oversized_digest_nonce_is_refused() {
    let err = login_against(digest_request(0, b"salt", &[b'n'; 5000])).await;
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unknown_digest_algorithm_is_refused() {
    let err = login_against(digest_request(2, b"salt", b"nonce")).await;
    assert!(
        matches!(err, UpstreamError::UnsupportedDigest { algorithm: 2 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unknown_authentication_code_is_named() {
    let err = login_against(auth(7, b"")).await;
    assert!(
        matches!(err, UpstreamError::UnsupportedAuth { code: 7 }),
        "{err:?}"
    );
    assert!(err.to_string().contains('7'));
    assert!(err.client_message().contains('7'));
}

#[tokio::test]
async fn an_identity_center_token_request_is_explained_not_a_protocol_failure() {
    // Redshift sends code 14 with no further bytes to drivers that asked for IdP auth.
    let err = login_against(auth(14, b"")).await;
    assert!(
        matches!(err, UpstreamError::IdentityTokenRequested),
        "{err:?}"
    );
    let told = err.client_message();
    assert!(told.contains("auth code 14"), "{told}");
    assert!(
        told.contains("temporary IAM database credentials"),
        "{told}"
    );
}

#[tokio::test]
async fn a_malformed_backend_key_is_a_protocol_error() {
    let bytes = [auth(0, b""), msg(b'K', &[0, 0, 0, 1, 0xAA])].concat();
    let err = login_against(bytes).await;
    assert!(matches!(err, UpstreamError::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn the_server_dying_mid_login_is_reported_as_a_lost_connection() {
    let err = login_after_startup(&localhost(), |mut s| async move {
        exchange(&mut s, &auth(3, b"")).await;
        // Half of a message, then the process dies (no close_notify).
        let half = &ok_and_ready()[..3];
        s.write_all(half).await.unwrap();
        s.flush().await.unwrap();
        let (tcp, _) = s.into_inner();
        drop(tcp);
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Closed {
                phase: Phase::Login
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.sqlstate(), "08006");
}

#[tokio::test]
async fn a_stalled_login_times_out() {
    let pki = localhost();
    // Says nothing until the client gives up.
    let upstream = after_startup(&pki, until_client_leaves).await;
    let mut ep = endpoint(&pki, upstream.port);
    ep.login_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = log_in(&ep, &[], upstream.server).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                phase: Phase::Login,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_upstream_is_08001() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let pki = localhost();
    let pw = password();
    let err = connect_and_login(&endpoint(&pki, port), &request(&pw, &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    assert_eq!(err.sqlstate(), "08001");
    assert!(!err.client_message().contains("127.0.0.1"));
}

/// Logs in with one more startup parameter, which must be refused before anything is dialled.
async fn refused_parameter(name: &str, value: &str) -> UpstreamError {
    let params = vec![(name.to_string(), value.to_string())];
    let pw = password();
    // Port 9 (discard) is never contacted.
    let err = connect_and_login(&endpoint(&localhost(), 9), &request(&pw, &params))
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::InvalidStartupParameter(_)),
        "{err:?}"
    );
    err
}

#[tokio::test]
async fn a_nul_in_a_startup_value_is_refused_not_truncated() {
    let err = refused_parameter("application_name", "app\0user=admin").await;
    assert!(err.to_string().contains("application_name"));
    assert!(!err.to_string().contains("admin"));

    // A parameter may not override the authorised user.
    refused_parameter("user", "admin").await;
}

#[test]
fn debug_of_a_login_request_redacts_the_password() {
    let pw = password();
    let dbg = format!("{:?}", request(&pw, &[]));
    assert!(!dbg.contains(PASSWORD), "{dbg}");
    assert!(dbg.contains("IAM:alice"));
}

// ---------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn send_cancel_delivers_a_cancel_request_over_verified_tls() {
    let pki = localhost();
    let upstream = after_tls(&pki, |mut s| async move {
        let mut packet = Vec::new();
        s.read_to_end(&mut packet).await.unwrap();
        let mut expected = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
        expected.extend_from_slice(&4242i32.to_be_bytes());
        expected.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(packet, expected);
    })
    .await;
    cancel_to(&pki, upstream, 4242, &[1, 2, 3, 4])
        .await
        .unwrap();
}

#[tokio::test]
async fn send_cancel_verifies_the_certificate_like_login() {
    let pki = pki_for(&["elsewhere.example"]);
    let upstream = handshake_aborted_by_client(&pki).await;
    let err = cancel_to(&pki, upstream, 1, &[9; 4]).await.unwrap_err();
    assert!(
        matches!(
            err,
            UpstreamError::Tls {
                failure: TlsFailure::NameMismatch,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn send_cancel_refuses_a_server_without_tls() {
    let pki = localhost();
    let upstream = before_tls(decline_tls).await;
    let err = cancel_to(&pki, upstream, 1, &[9; 4]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::TlsNotOffered), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[test]
fn from_config_uses_host_for_verification_and_dial_for_the_connection() {
    let pki = localhost();
    let mut t = target("cluster.example.com", 1, pki.ca_file.path());
    t.dial = Some("vpce-123.example.com".into());
    let ep = UpstreamEndpoint::from_config(&t).unwrap();
    assert_eq!((ep.host.as_str(), ep.port), ("cluster.example.com", 5439));
    assert_eq!(
        (ep.dial_host.as_str(), ep.dial_port),
        ("vpce-123.example.com", 5439)
    );

    t.dial = None;
    t.ca_bundle = None; // bundled Mozilla roots
    let ep = UpstreamEndpoint::from_config(&t).unwrap();
    assert_eq!(
        (ep.dial_host.as_str(), ep.dial_port),
        ("cluster.example.com", 5439)
    );
}

#[test]
fn from_config_errors_name_the_ca_bundle_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let err = UpstreamEndpoint::from_config(&target("localhost", 1, &missing)).unwrap_err();
    assert!(
        matches!(err, UpstreamSetupError::CaBundleRead { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");

    let empty = dir.path().join("empty-ca.pem");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let err = UpstreamEndpoint::from_config(&target("localhost", 1, &empty)).unwrap_err();
    assert!(err.to_string().contains("empty-ca.pem"), "{err}");

    let garbage = dir.path().join("garbage-ca.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = UpstreamEndpoint::from_config(&target("localhost", 1, &garbage)).unwrap_err();
    assert!(err.to_string().contains("garbage-ca.pem"), "{err}");

    let pki = localhost();
    let mut t = target("localhost", 1, pki.ca_file.path());
    t.dial = Some("host:port".into());
    assert!(matches!(
        UpstreamEndpoint::from_config(&t),
        Err(UpstreamSetupError::InvalidDial { .. })
    ));
    let mut t = target("not a host name", 1, pki.ca_file.path());
    t.dial = None;
    assert!(matches!(
        UpstreamEndpoint::from_config(&t),
        Err(UpstreamSetupError::InvalidHost { .. })
    ));
}

/// What a client is told about an upstream failure (decided in `crate::refusal`).
trait ClientView {
    fn sqlstate(&self) -> String;
    fn client_message(&self) -> String;
}

impl ClientView for UpstreamError {
    fn sqlstate(&self) -> String {
        crate::refusal::upstream_response(self).code
    }
    fn client_message(&self) -> String {
        crate::refusal::upstream_response(self).message
    }
}
