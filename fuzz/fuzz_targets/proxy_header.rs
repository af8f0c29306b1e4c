//! PROXY protocol headers (`proxy_header::parse`): no input may panic, a complete header is
//! never longer than the input, and whatever prefix of a complete header is given reads as
//! incomplete or as that same header, never as another one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_iam_proxy::net::proxy_header::{parse, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Complete { header, len } = parse(data) {
        assert!(len <= data.len());
        assert_eq!(parse(&data[..len]), Parsed::Complete { header, len });
        for n in 0..len {
            assert!(
                !matches!(parse(&data[..n]), Parsed::Complete { .. }),
                "a {n}-byte prefix of a {len}-byte header parsed as complete"
            );
        }
    }
});
