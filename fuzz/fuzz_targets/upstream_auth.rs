//! Upstream authentication messages: `AuthenticationRequest::parse` on any `R` body, and
//! for SASL continue/final bodies the SCRAM client steps the proxy runs on them
//! (`backend::scram`), with server nonces and proofs of any shape. Also
//! BackendKeyData and NegotiateProtocolVersion, the other login-time messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::backend::scram::{hi, ChannelBinding, ScramClient};
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
            let scram = ScramClient::new(b"password", ChannelBinding::NotOffered);
            // A random client nonce: fuzzed messages fail the nonce check, after parsing.
            let _ = scram.server_first(data);
            // The same message behind this client's own nonce gets past it. The iteration
            // count comes from the server: cap what the fuzzer may ask for so a run
            // measures parsing, not PBKDF2.
            let extended = [nonce_field(&scram).as_bytes(), data].concat();
            if let Ok(first) = scram.server_first(&extended) {
                if first.iterations <= 16 {
                    let salted = hi(b"password", &first.salt, first.iterations);
                    let _ = scram.client_final(&first, &salted);
                }
            }
        }
        Ok(AuthenticationRequest::SaslFinal { data }) => {
            let scram = ScramClient::new(b"password", ChannelBinding::NotOffered);
            let server_first = format!("{}x,s=c2FsdA==,i=1", nonce_field(&scram));
            let first = scram
                .server_first(server_first.as_bytes())
                .expect("well-formed");
            let salted = hi(b"password", &first.salt, first.iterations);
            let _ = scram.client_final(&first, &salted).verify(data);
        }
        _ => {}
    }
});

/// `r=<client nonce>`, the start of every server-first-message this client accepts.
fn nonce_field(scram: &ScramClient) -> String {
    let first = scram.client_first();
    let at = first
        .find("r=")
        .expect("the client-first-message has a nonce");
    first[at..].to_string()
}
