//! Each method end to end in memory: the frontend asks, the proxy's own upstream client
//! (`backend::login::authenticate`, which speaks to real Redshift and PostgreSQL servers)
//! answers.

use super::*;
use crate::backend::login::{authenticate as answer_as_client, LoginRequest};
use crate::backend::scram::SaltedPasswordCache;
use crate::backend::{AuthMethod, UpstreamError};
use crate::net::messages::authentication_request::AuthenticationRequest as Request;
use proxy_auth::password::{
    md5 as md5_verifier, redshift_digest as digest_verifier, scram as scram_verifier,
};
use proxy_config::{PasswordMethod, PasswordVerifier};
use secrecy::SecretString;
use std::time::Duration;
use tokio::io::{duplex, AsyncReadExt};

fn users() -> LocalUsers {
    LocalUsers::new([
        (
            "scram".to_string(),
            PasswordVerifier::ScramSha256(scram_verifier::hash_password("pencil", 4096)),
        ),
        (
            "md5".to_string(),
            PasswordVerifier::Md5(md5_verifier::hash_password("md5", "pencil")),
        ),
        (
            "sha".to_string(),
            PasswordVerifier::RedshiftSha256(digest_verifier::hash_password("pencil")),
        ),
    ])
}

/// Runs one login; the client's result (once the server answered AuthenticationOk) and
/// the server's.
async fn login(
    user: &str,
    password: &str,
    locked: bool,
) -> (
    Result<AuthMethod, UpstreamError>,
    Result<LocalUser, PasswordAuthError>,
) {
    let (mut client, mut server) = duplex(4096);
    let users = users();
    let deadline = Instant::now() + Duration::from_secs(5);
    let password = SecretString::from(password.to_owned());
    let request = LoginRequest {
        user,
        password: &password,
        database: "dev",
        params: &[],
    };
    let cache = SaltedPasswordCache::default();
    let client_side = answer_as_client(&mut client, &request, None, &cache);
    let server_side = async {
        let result = authenticate(&mut server, &users, user, deadline, locked).await;
        let mut out = BytesMut::new();
        if result.is_ok() {
            Request::Ok.encode_into(&mut out);
        } else {
            // What the refusal would send; the client needs some end.
            crate::net::messages::ErrorResponse::new(
                crate::net::messages::Severity::Fatal,
                "28P01",
                "password authentication failed",
            )
            .encode_into(&mut out);
        }
        server.write_all(&out).await.unwrap();
        result
    };
    tokio::join!(client_side, server_side)
}

#[tokio::test]
async fn each_verifier_runs_its_own_method_and_a_client_that_knows_the_password_gets_in() {
    for (user, method, client_saw) in [
        (
            "scram",
            PasswordMethod::ScramSha256,
            AuthMethod::ScramSha256,
        ),
        ("md5", PasswordMethod::Md5, AuthMethod::Md5),
        (
            "sha",
            PasswordMethod::RedshiftSha256,
            AuthMethod::RedshiftDigestSha256,
        ),
    ] {
        let (client, server) = login(user, "pencil", false).await;
        assert_eq!(client.unwrap(), client_saw, "{user}");
        let local = server.unwrap();
        assert_eq!(local.password_method, Some(method));
        assert_eq!(local.name, user);
    }
}

#[tokio::test]
async fn a_wrong_password_fails_in_every_method() {
    for user in ["scram", "md5", "sha"] {
        let (_, server) = login(user, "not-pencil", false).await;
        let err = server.unwrap_err();
        assert!(err.is_authentication_failure(), "{user}: {err}");
        assert!(
            matches!(
                err,
                PasswordAuthError::Password(PasswordError::WrongPassword)
            ),
            "{user}: {err}"
        );
    }
}

#[tokio::test]
async fn a_locked_user_fails_at_the_end_even_with_the_right_password() {
    for user in ["scram", "md5", "sha"] {
        let (_, server) = login(user, "pencil", true).await;
        assert!(
            matches!(
                server.unwrap_err(),
                PasswordAuthError::Password(PasswordError::Locked)
            ),
            "{user}"
        );
    }
}

#[tokio::test]
async fn the_digest_request_carries_exactly_its_fields() {
    // The Redshift JDBC driver reads the fields and ignores the length word.
    let (mut client, mut server) = duplex(4096);
    let users = users();
    let deadline = Instant::now() + Duration::from_millis(200);
    let server_side = authenticate(&mut server, &users, "sha", deadline, false);
    let client_side = async {
        let mut header = [0u8; 5];
        client.read_exact(&mut header).await.unwrap();
        let len = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        client.read_exact(&mut body).await.unwrap();
        (header[0], body)
    };
    let (server, (tag, body)) = tokio::join!(server_side, client_side);
    assert!(matches!(server, Err(PasswordAuthError::Timeout)));
    assert_eq!(tag, b'R');
    // code, algorithm, salt length + 32-byte salt, nonce length + nonce, nothing else.
    assert_eq!(&body[..4], &13i32.to_be_bytes());
    assert_eq!(&body[4..8], &0i32.to_be_bytes());
    assert_eq!(&body[8..12], &32i32.to_be_bytes());
    let nonce_len = i32::from_be_bytes(body[44..48].try_into().unwrap()) as usize;
    assert_eq!(body.len(), 48 + nonce_len);
}

#[tokio::test]
async fn answers_in_the_wrong_shape_are_protocol_errors_not_failed_passwords() {
    for (user, reply) in [
        // A password message that is no md5 answer.
        ("md5", b"p\0\0\0\x08abc\0".to_vec()),
        // A password message to a digest challenge.
        ("sha", b"p\0\0\0\x0bpencil\0".to_vec()),
        // A digest response with trailing bytes.
        ("sha", b"d\0\0\0\x0d\0\0\0\x01a\0\0\0\x00zz".to_vec()),
    ] {
        let (mut client, mut server) = duplex(4096);
        let users = users();
        let deadline = Instant::now() + Duration::from_secs(5);
        client.write_all(&reply).await.unwrap();
        let err = authenticate(&mut server, &users, user, deadline, false)
            .await
            .unwrap_err();
        assert!(!err.is_authentication_failure(), "{user}: {err}");
    }
}
