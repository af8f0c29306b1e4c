//! The SigV4-X509 canonicaliser for Roles Anywhere requests. Input: method, path, query,
//! headers (`name: value` lines) and body, separated by NUL bytes. No input may panic;
//! canonicalising a canonical query string again changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_auth::aws::roles_anywhere::signer::{
    canonical_header_value, canonical_path, canonical_query_string, canonical_request,
};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |&b| b == 0);
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let method = text(parts.next());
    let path = text(parts.next());
    let query = text(parts.next());
    let headers = text(parts.next());
    let body = parts.next().unwrap_or_default();

    let canonical = canonical_query_string(&query);
    assert_eq!(
        canonical_query_string(&canonical),
        canonical,
        "not idempotent"
    );
    let _ = canonical_path(&path);

    let mut map = http::HeaderMap::new();
    for line in headers.lines() {
        let _ = canonical_header_value(line);
        if let Some((name, value)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                map.append(n, v);
            }
        }
    }
    let uri = format!("https://rolesanywhere.us-east-1.amazonaws.com{path}?{query}");
    if let Ok(uri) = uri.parse::<http::Uri>() {
        if let Ok(c) = canonical_request(&method, &uri, &map, body) {
            assert!(c.canonical.lines().count() >= 6);
        }
    }
});
