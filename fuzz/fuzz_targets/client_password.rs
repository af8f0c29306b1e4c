//! What a password listener reads from a client before it is authenticated: the body of a
//! PasswordMessage (md5), a SASLInitialResponse, a digest response (Redshift's code 13) and
//! the checks behind them.
//! No input may panic, and no malformed answer may pass as a proof.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_auth::password::{md5, redshift_digest, LocalUsers, PasswordLogin};
use proxy_config::PasswordVerifier;
use redshift_iam_proxy::net::messages::{
    Decode, DigestResponse, Encode, PasswordMessage, SaslInitialResponse,
};

fuzz_target!(|data: &[u8]| {
    let users = LocalUsers::new([
        (
            "md5".to_string(),
            PasswordVerifier::Md5(md5::hash_password("md5", "pencil")),
        ),
        (
            "sha".to_string(),
            PasswordVerifier::RedshiftSha256(redshift_digest::hash_password("pencil")),
        ),
    ]);
    if let Ok(answer) = PasswordMessage::decode(data) {
        assert_eq!(&answer.encode()[5..], data, "re-encodes to what was read");
        if let PasswordLogin::Md5(challenge) = users.begin("md5") {
            // The salt is random: a fuzzed answer cannot be the right one.
            assert!(challenge.verify(answer.password).is_err());
        }
    }
    if let Ok(initial) = SaslInitialResponse::decode(data) {
        assert_eq!(&initial.encode()[5..], data, "re-encodes to what was read");
    }
    if let Ok(response) = DigestResponse::decode(data) {
        assert_eq!(&response.encode()[5..], data, "re-encodes to what was read");
        if let PasswordLogin::RedshiftSha256(challenge) = users.begin("sha") {
            assert!(challenge
                .verify(response.digest, response.client_nonce)
                .is_err());
        }
    }
});
