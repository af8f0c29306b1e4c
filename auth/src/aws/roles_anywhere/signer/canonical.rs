//! SigV4's canonical request and string to sign, as Roles Anywhere's X.509 variant uses
//! them unchanged: <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>.

use super::SignerError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Headers never signed: they are added or rewritten by HTTP layers after signing (the
/// same list the AWS SDKs exclude), or are the signature itself.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "expect",
    "transfer-encoding",
    "user-agent",
    "x-amzn-trace-id",
];

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Path encoding: like [`RFC3986`] but `/` separates segments.
const RFC3986_PATH: &AsciiSet = &RFC3986.remove(b'/');

/// A SigV4 canonical request and its signed-headers list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    /// The full canonical request text (hashed into the string to sign).
    pub canonical: String,
    /// `content-type;host;...`: lowercase names, sorted, `;`-separated.
    pub signed_headers: String,
}

/// Builds the SigV4 canonical request: method, URI path, canonical query string, canonical
/// headers, signed headers and the hex SHA-256 of the payload, separated by newlines.
pub fn canonical_request(
    method: &str,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<CanonicalRequest, SignerError> {
    let path = match uri.path() {
        "" => "/".to_owned(),
        path => canonical_path(path),
    };
    let query = canonical_query_string(uri.query().unwrap_or(""));

    // Collect values per lowercase name; repeated headers are joined with commas in order.
    let mut by_name: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (name, value) in headers {
        // `http::HeaderName` is already lowercase.
        let name = name.as_str();
        if UNSIGNED_HEADERS.contains(&name) {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            SignerError::Request(format!(
                "header {name} is not visible ASCII and cannot be signed"
            ))
        })?;
        by_name
            .entry(name)
            .or_default()
            .push(canonical_header_value(value));
    }
    let mut canonical_headers = String::new();
    for (name, values) in &by_name {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed_headers = by_name.keys().copied().collect::<Vec<_>>().join(";");
    let canonical = format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex_sha256(body)
    );
    Ok(CanonicalRequest {
        canonical,
        signed_headers,
    })
}

/// The string to sign: algorithm, time, credential scope, hex SHA-256 of the canonical
/// request.
pub fn string_to_sign(
    algorithm: &str,
    amz_date: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The URI path with every byte outside RFC 3986's unreserved set (and `/`) percent-encoded.
/// As in SigV4 for every service but S3, an already-encoded path is encoded again (`%2F`
/// becomes `%252F`).
pub fn canonical_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, RFC3986_PATH).to_string()
}

/// Sorts query parameters by name then value, each RFC 3986-encoded (`%20` for a space,
/// `+` in the input meaning a space as in form encoding); a name without `=` gets an empty
/// value.
pub fn canonical_query_string(query: &str) -> String {
    let decode = |s: &str| -> Vec<u8> {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced).collect()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_encoding::percent_encode(&decode(name), RFC3986).to_string(),
                percent_encoding::percent_encode(&decode(value), RFC3986).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value with surrounding whitespace trimmed and inner runs of spaces and tabs
/// folded to one space.
pub fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}
