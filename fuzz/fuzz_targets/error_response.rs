//! ErrorResponse parsing of upstream `E`/`N` bodies, and re-encoding what was parsed
//! (what the proxy does when it passes a login error on to the client).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::net::messages::{Decode, Encode, ErrorResponse};

fuzz_target!(|data: &[u8]| {
    let Ok(e) = ErrorResponse::decode(data) else {
        return;
    };
    // A SQLSTATE is always five alphanumerics: the client-side encoder relies on it.
    assert_eq!(e.code.len(), 5);
    assert!(e.code.bytes().all(|b| b.is_ascii_alphanumeric()));
    let wire = ErrorResponse::fatal(&e.code, e.message.clone()).encode();
    let again = ErrorResponse::decode(&wire[5..]).expect("our own encoding parses");
    assert_eq!(again.code, e.code);
});
