//! Upstream authentication messages: `AuthenticationRequest::parse` on any `R` body, and
//! for SASL continue/final bodies the SCRAM client steps the proxy runs on them
//! (postgres-protocol's `ScramSha256`), with server nonces and proofs of any shape. Also
//! BackendKeyData and NegotiateProtocolVersion, the other login-time messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use redshift_iam_proxy::net::messages::authentication_request::{
    AuthenticationRequest, MAX_DIGEST_FIELD,
};
use redshift_iam_proxy::net::messages::backend_key_data::BackendKeyData;
use redshift_iam_proxy::net::messages::negotiate_protocol_version::NegotiateProtocolVersion;

fuzz_target!(|data: &[u8]| {
    let _ = BackendKeyData::parse(data);
    let _ = NegotiateProtocolVersion::parse(data);
    match AuthenticationRequest::parse(data) {
        Ok(AuthenticationRequest::Digest {
            salt, server_nonce, ..
        }) => {
            assert!(salt.len() <= MAX_DIGEST_FIELD && server_nonce.len() <= MAX_DIGEST_FIELD);
        }
        Ok(AuthenticationRequest::SaslContinue { data }) => {
            let mut scram = ScramSha256::new(b"password", ChannelBinding::unrequested());
            // The iteration count comes from the server: cap what the fuzzer may ask for
            // so a run measures parsing, not PBKDF2.
            if iterations(data).is_some_and(|i| i <= 16) {
                let _ = scram.update(data);
            }
        }
        Ok(AuthenticationRequest::SaslFinal { data }) => {
            let mut scram = ScramSha256::new(b"password", ChannelBinding::unrequested());
            let _ = scram.finish(data);
        }
        _ => {}
    }
});

fn iterations(server_first: &[u8]) -> Option<u32> {
    std::str::from_utf8(server_first)
        .ok()?
        .split(',')
        .find_map(|f| f.strip_prefix("i="))?
        .parse()
        .ok()
}
