//! Upstream authentication messages: `AuthenticationRequest::parse` on any `R` body, and
//! for SASL continue/final bodies the SCRAM client steps the proxy runs on them
//! (`backend::scram`), with server nonces and proofs of any shape. Also
//! BackendKeyData, NegotiateProtocolVersion, ReadyForQuery and DataRow, the other messages
//! the proxy reads from a server, each re-encoded to the bytes it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::backend::scram::{hi, ChannelBinding, ScramClient};
use redshift_iam_proxy::net::messages::authentication_request::{
    AuthenticationRequest, MAX_DIGEST_FIELD,
};
use redshift_iam_proxy::net::messages::{
    BackendKeyData, DataRow, Decode, Encode, NegotiateProtocolVersion, ReadyForQuery,
};

fuzz_target!(|data: &[u8]| {
    round_trip::<BackendKeyData>(data);
    round_trip::<ReadyForQuery>(data);
    round_trip::<DataRow>(data);
    let _ = NegotiateProtocolVersion::decode(data);
    match AuthenticationRequest::decode(data) {
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

/// A body that decodes encodes back to the same bytes (tag and length word aside).
fn round_trip<'a, M: Decode<'a> + Encode>(data: &'a [u8]) {
    if let Ok(message) = M::decode(data) {
        assert_eq!(&message.encode()[5..], data);
    }
}

/// `r=<client nonce>`, the start of every server-first-message this client accepts.
fn nonce_field(scram: &ScramClient) -> String {
    let first = scram.client_first();
    let at = first
        .find("r=")
        .expect("the client-first-message has a nonce");
    first[at..].to_string()
}
