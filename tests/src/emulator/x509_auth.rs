//! Verification of IAM Roles Anywhere requests (`AWS4-X509-RSA-SHA256` /
//! `AWS4-X509-ECDSA-SHA256`): an independent implementation of the canonical request and
//! string to sign, checked with the leaf certificate's public key, plus certificate path
//! validation against the trust anchor.
//!
//! Deliberately shares no code with the proxy's signer: the emulator exists to catch its bugs.

use super::auth_header::{
    parse_amz_date, parse_authorization, AuthorizationHeader, MalformedAuthorization,
};
use aws_lc_rs::signature::{
    UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA256_ASN1,
    RSA_PKCS1_2048_8192_SHA256,
};
use axum::http::HeaderMap;
use base64::Engine as _;
use percent_encoding::{percent_decode_str, AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::{FromDer, X509Certificate};

pub(crate) const ALG_RSA: &str = "AWS4-X509-RSA-SHA256";
pub(crate) const ALG_ECDSA: &str = "AWS4-X509-ECDSA-SHA256";
pub(crate) const SERVICE: &str = "rolesanywhere";
/// How far `X-Amz-Date` may be from the emulator's clock.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// SigV4's URI encoding: everything but `A-Z a-z 0-9 - _ . ~` is percent-encoded.
const AWS_URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a Roles Anywhere request is not authentic. All map to `AccessDeniedException`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum X509AuthError {
    #[error("missing Authorization header")]
    MissingAuthorization,
    #[error(transparent)]
    Malformed(#[from] MalformedAuthorization),
    #[error("unsupported signing algorithm (expected {ALG_RSA} or {ALG_ECDSA})")]
    Algorithm,
    #[error("credential should be scoped to service `{SERVICE}` and region `{expected_region}`")]
    Scope { expected_region: String },
    #[error("missing or malformed X-Amz-Date header")]
    Date,
    #[error("the credential scope date does not match X-Amz-Date")]
    ScopeDate,
    #[error("signature expired: X-Amz-Date is more than 5 minutes away from the server time")]
    Skew,
    #[error("header `{0}` must be signed")]
    UnsignedHeader(&'static str),
    #[error("signed header `{0}` is missing from the request")]
    MissingSignedHeader(String),
    #[error("header values must be visible ASCII")]
    HeaderValue,
    #[error("missing X-Amz-X509 header")]
    MissingCertificate,
    #[error("invalid certificate encoding in {0}")]
    CertificateEncoding(&'static str),
    #[error("the credential serial number does not match the certificate's serial number")]
    Serial,
    #[error("the certificate's key does not match the signing algorithm or is not supported")]
    KeyType,
    #[error("signature does not match")]
    Signature,
    #[error("untrusted certificate: {0}")]
    Untrusted(webpki::Error),
}

/// The parts of an HTTP request that are signed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: &'a [u8],
}

/// A request whose signature verified against its leaf certificate (but whose certificate
/// path has not yet been validated: see [`SignedByCertificate::verify_chain`]).
#[derive(Debug)]
pub(crate) struct SignedByCertificate {
    leaf_der: Vec<u8>,
    chain_der: Vec<Vec<u8>>,
    /// Decimal serial number.
    pub(crate) serial: String,
    /// Lowercase hex serial number (what AWS uses as the role session name).
    pub(crate) serial_hex: String,
    pub(crate) common_name: Option<String>,
}

impl SignedByCertificate {
    /// Validates the leaf (+ intermediates) up to one of `anchors` at `now`, for client
    /// authentication (EKU clientAuth if the leaf has an EKU extension).
    pub(crate) fn verify_chain(
        &self,
        anchors: &[TrustAnchor<'static>],
        now: OffsetDateTime,
    ) -> Result<(), X509AuthError> {
        let leaf = CertificateDer::from(self.leaf_der.as_slice());
        let end_entity =
            webpki::EndEntityCert::try_from(&leaf).map_err(X509AuthError::Untrusted)?;
        let intermediates: Vec<CertificateDer<'_>> = self
            .chain_der
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let time = UnixTime::since_unix_epoch(Duration::from_secs(seconds));
        let algorithms = rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .all;
        end_entity
            .verify_for_usage(
                algorithms,
                anchors,
                &intermediates,
                time,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| ())
            .map_err(X509AuthError::Untrusted)
    }
}

/// Authenticates the request's signature: header shape, scope (`rolesanywhere` in
/// `region`), date skew, signed-header coverage, certificate serial, and the signature over
/// the independently recomputed string to sign.
pub(crate) fn authenticate(
    request: &SignedRequest<'_>,
    region: &str,
    now: OffsetDateTime,
) -> Result<SignedByCertificate, X509AuthError> {
    let authorization = request
        .headers
        .get("authorization")
        .ok_or(X509AuthError::MissingAuthorization)?
        .to_str()
        .map_err(|_| X509AuthError::HeaderValue)?;
    let auth = parse_authorization(authorization)?;
    if auth.algorithm != ALG_RSA && auth.algorithm != ALG_ECDSA {
        return Err(X509AuthError::Algorithm);
    }
    if auth.service != SERVICE || auth.region != region {
        return Err(X509AuthError::Scope {
            expected_region: region.to_owned(),
        });
    }

    let amz_date_text = header_str(request.headers, "x-amz-date")?.ok_or(X509AuthError::Date)?;
    let amz_date = parse_amz_date(amz_date_text).ok_or(X509AuthError::Date)?;
    if !amz_date_text.starts_with(auth.scope_date) {
        return Err(X509AuthError::ScopeDate);
    }
    if (now - amz_date).unsigned_abs() > MAX_CLOCK_SKEW {
        return Err(X509AuthError::Skew);
    }

    for required in ["host", "x-amz-date", "x-amz-x509"] {
        if !auth.signs(required) {
            return Err(X509AuthError::UnsignedHeader(required));
        }
    }
    let chain_header = header_str(request.headers, "x-amz-x509-chain")?;
    if chain_header.is_some() && !auth.signs("x-amz-x509-chain") {
        return Err(X509AuthError::UnsignedHeader("x-amz-x509-chain"));
    }

    let leaf_der = decode_b64_der(
        header_str(request.headers, "x-amz-x509")?.ok_or(X509AuthError::MissingCertificate)?,
        "X-Amz-X509",
    )?;
    let chain_der = match chain_header {
        Some(value) => value
            .split(',')
            .map(|item| decode_b64_der(item, "X-Amz-X509-Chain"))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let (_, leaf) = X509Certificate::from_der(&leaf_der)
        .map_err(|_| X509AuthError::CertificateEncoding("X-Amz-X509"))?;
    let serial = leaf.tbs_certificate.serial.to_string();
    if serial != auth.credential_id {
        return Err(X509AuthError::Serial);
    }

    verify_signature(request, &auth, amz_date_text, &leaf)?;

    let serial_hex = hex::encode(leaf.tbs_certificate.raw_serial());
    let common_name = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    drop(leaf);
    Ok(SignedByCertificate {
        serial,
        serial_hex,
        common_name,
        leaf_der,
        chain_der,
    })
}

/// Checks `auth.signature` over the string to sign of `request` with `leaf`'s public key.
fn verify_signature(
    request: &SignedRequest<'_>,
    auth: &AuthorizationHeader<'_>,
    amz_date: &str,
    leaf: &X509Certificate<'_>,
) -> Result<(), X509AuthError> {
    let string_to_sign = string_to_sign(request, auth, amz_date)?;
    let signature = hex::decode(auth.signature)
        .map_err(|_| X509AuthError::Malformed(MalformedAuthorization::Signature))?;

    let spki = leaf.public_key();
    let key_algorithm = &spki.algorithm.algorithm;
    let algorithm: &'static dyn VerificationAlgorithm = if *key_algorithm == OID_PKCS1_RSAENCRYPTION
    {
        if auth.algorithm != ALG_RSA {
            return Err(X509AuthError::KeyType);
        }
        &RSA_PKCS1_2048_8192_SHA256
    } else if *key_algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        if auth.algorithm != ALG_ECDSA {
            return Err(X509AuthError::KeyType);
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|params| params.as_oid().ok())
            .ok_or(X509AuthError::KeyType)?;
        // Roles Anywhere always hashes with SHA-256, also for P-384 keys.
        if curve == OID_EC_P256 {
            &ECDSA_P256_SHA256_ASN1
        } else if curve == OID_NIST_EC_P384 {
            &ECDSA_P384_SHA256_ASN1
        } else {
            return Err(X509AuthError::KeyType);
        }
    } else {
        return Err(X509AuthError::KeyType);
    };
    UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(string_to_sign.as_bytes(), &signature)
        .map_err(|_| X509AuthError::Signature)
}

/// `ALG \n AMZDATE \n SCOPE \n hex(sha256(canonical request))`.
pub(crate) fn string_to_sign(
    request: &SignedRequest<'_>,
    auth: &AuthorizationHeader<'_>,
    amz_date: &str,
) -> Result<String, X509AuthError> {
    let canonical = canonical_request(request, &auth.signed_headers)?;
    Ok(format!(
        "{}\n{}\n{}\n{}",
        auth.algorithm,
        amz_date,
        auth.scope(),
        hex::encode(Sha256::digest(canonical.as_bytes()))
    ))
}

/// SigV4's canonical request, restricted to the headers named in `signed_headers` (in the
/// order given, which signers sort).
pub(crate) fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[&str],
) -> Result<String, X509AuthError> {
    let mut out = String::new();
    out.push_str(request.method);
    out.push('\n');
    out.push_str(if request.path.is_empty() {
        "/"
    } else {
        request.path
    });
    out.push('\n');
    out.push_str(&canonical_query(request.query.unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<&str> = request
            .headers
            .get_all(*name)
            .iter()
            .map(|value| value.to_str().map_err(|_| X509AuthError::HeaderValue))
            .collect::<Result<_, _>>()?;
        if values.is_empty() {
            return Err(X509AuthError::MissingSignedHeader((*name).to_owned()));
        }
        let joined: Vec<String> = values.iter().map(|v| normalize_header_value(v)).collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&joined.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&hex::encode(Sha256::digest(request.body)));
    Ok(out)
}

/// Decodes each `key=value`, re-encodes both the SigV4 way, sorts by key then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (aws_uri_encode(key), aws_uri_encode(value))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn aws_uri_encode(encoded: &str) -> String {
    let decoded: Vec<u8> = percent_decode_str(encoded).collect();
    // Percent-encoding works on bytes: re-encode whatever was decoded, valid UTF-8 or not.
    percent_encoding::percent_encode(&decoded, AWS_URI_ENCODE).to_string()
}

/// Trims and collapses runs of spaces, as SigV4 requires.
fn normalize_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, X509AuthError> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| X509AuthError::HeaderValue))
        .transpose()
}

fn decode_b64_der(value: &str, header: &'static str) -> Result<Vec<u8>, X509AuthError> {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| X509AuthError::CertificateEncoding(header))
}

/// Parses PEM certificates into owned trust anchors.
pub(crate) fn trust_anchors_from_pem(pem: &str) -> anyhow::Result<Vec<TrustAnchor<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    let mut anchors = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der?;
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| anyhow::anyhow!("trust anchor certificate is unusable: {e}"))?;
        anchors.push(anchor.to_owned());
    }
    anyhow::ensure!(
        !anchors.is_empty(),
        "no CERTIFICATE in the trust anchor PEM"
    );
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    // Known-answer vector published in the tests of the `needroleshere` crate (Apache-2.0):
    // certificate and intermediate (base64 DER), request, time and the deterministic RSA
    // PKCS#1 v1.5 signature made by that independent implementation.
    const KAT_CERT_B64: &str = "MIIDejCCAmKgAwIBAgIUOyDWw0XB0LR8gtffQfuCGxgCXjcwDQYJKoZIhvcNAQELBQAwLzEtMCsGA1UEAxMkcm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gSW50ZXJtZWRpYXRlMCAXDTIyMDkyNTExMjYwMFoYDzIwNjcwOTE0MTEyNjAwWjAcMRowGAYDVQQDExFsZWFmLnRlc3QuaW52YWxpZDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAKZRmF8QpVRHRyNe9W5qtLaDQA/a8BLYu4OzRY9TXiEmyDIttE3/23pgzACxMObKIf7KI8GkTzxgLQWdfHh4emHcxwjQRwALCCSnCy+R6SRwbUeiVI95/AgbBRUF1TgX8RYknTbcmrMoVW+ZUyQB0qS8PgJaDlUBJneNHBnOPPFOuP1S9jIzaomzlMxQioOIX5HURrH1D6y8XoLKSvMq/WXepHSwFY6TU/A2brjB1bfDWHcxh68HnfIsM1ewoy2yv7Fx7urmWL7MNLSnxrdonXy3Z5Pk0iE2jPE/awhGloGMRLrxeZZUObFoB8Ms29fUtDmJDWOwy9/fM50hSpbOiA0CAwEAAaOBnjCBmzAOBgNVHQ8BAf8EBAMCBaAwHQYDVR0lBBYwFAYIKwYBBQUHAwEGCCsGAQUFBwMCMAwGA1UdEwEB/wQCMAAwHQYDVR0OBBYEFP6Aeo6AetCFR+icnOMBuSuLDblBMB8GA1UdIwQYMBaAFM1K0RSR/i53vlVA6b/zGr67wEG6MBwGA1UdEQQVMBOCEWxlYWYudGVzdC5pbnZhbGlkMA0GCSqGSIb3DQEBCwUAA4IBAQCdzpQlre7aJ5n1hlx71sx8SJ6hUEuovmjx9YtAFmG0GAJHDp3ZTZjVoBeIPWdkXv+QDW0bzVVKCgkYbGdLhkUOhHCnZeRBotTcVcIppk/hacJ64qJIaBAkMZKUBa0XFQnnSjDhbBj/pHfo7rLfo3UlbR7N26nkdARb41XMVigSboRoj7tp0BKSWSDs+OkUezbVPaefrZ7/HJvFJocghgFMc4UKkOshWhQ/t/QlTvy44DBX/ZPx1iY8q78GHVhd/fT91ev3bViYX/Yx8Hcurl9AQQLuo5onALBMJ4UUxOh0hcVse09Rn5K7NZdYkUXfyaPN3uIrlwlItonkQi3MMfAd";
    const KAT_SUBCA_B64: &str = "MIIDTDCCAjSgAwIBAgIUFmgoL2HLPUTECNUjz59K4zrkNAUwDQYJKoZIhvcNAQELBQAwJzElMCMGA1UEAxMccm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gUm9vdDAgFw0yMjA5MjUxMTI2MDBaGA8yMDcxMTAxNTAzMjYwMFowLzEtMCsGA1UEAxMkcm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gSW50ZXJtZWRpYXRlMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoulQWYzu79i8fQDjHIbHHmZHzymr0kRkWIxYEEu4O4OUQqS4u9ksMnyrhCzj6oEy9TCk8pSuWgN78t95NjkGQ6NrBSDkkbtwreUfYMWpb8A199r2Xni4BUhzEqa8vkyq5QsOnxhADDU4CR7OIff4P9IxnM7ZQ8A5s3PkmxYo6XHuxuNfMmpGVNle/WW0vGGAZLHjoFe3q+bApExPjqBYzNCUFGWnWmAKk7kI95Ba32pd+y1qDUfEsqX/Nb56kpRURpst8KSusIJIteBUnMGPAJ711Ls47+xWgSIK9Mp8tTd4OLDVpRIhGWAYfgVCQ7pbfzkm3hr8+ssNd2ooqXUFewIDAQABo2YwZDAOBgNVHQ8BAf8EBAMCAQYwEgYDVR0TAQH/BAgwBgEB/wIBADAdBgNVHQ4EFgQUzUrRFJH+Lne+VUDpv/MavrvAQbowHwYDVR0jBBgwFoAURB3KVRg9yVd6L/wWy+tIBRzVfYYwDQYJKoZIhvcNAQELBQADggEBAJHmA3lVFIIZ1lh+0pze7Q77uYGDk0VCjYhZeIwTC+UJRbBM9UGUGsiXbsvPVE/BVQ6r4+EJSEe5pAPcG9MsstlRHc+TnBawKXyglsu0JfYNvJj5X1W9+LV37kO1Vl0V4VgiVMJetPKnbm9P2n9zvS+ssk4HvXsw21IzVkFYr56Da+sK4ylXLhHdjGB+1YWqBfBAikwF0BLWpzcW38QVyj+cm+Z55jgk/R3tcpf6SQA4w236xpdq6H7WxUHayhNUhWGhDCohTzxzpZ6rpfZBTy6C3bX+dTLAaHkWoA8+5jkI+1ACUYm+JvD2dpJqHF7w+HgJfaiGrX2XwmjtG+X6fyU=";
    const KAT_SERIAL: &str = "337562787801933536189724934726614584366112857655";
    const KAT_SIGNATURE: &str = "7f18cf01a29af198006ce4294771b6c8204d5a8d811f1e707131d46e3465665a1f902c2060b28d07f4f7205fd81648585dc3e48ced6b1dc920e698142129985b569fdae3a55d8394a084960bf5362867161de68d43460ac027b7f614b7373597bf93545905051aa2ad062b8fdf452c736ee289e280dd375840b865fc1fc08b0ea6893385663c6171e61252b39777d190acb805cb6c05a790c495167d4d7360245c18858e2e541b6079e7d79c18d0618d283e6a26c1b870d74f3607c85086bb9aa39cecc0b1a1ad5e1bfeeaacbf052b7af8b23ced9142cc1c743b0b7f6fcee0ebfee41bd3ddb17f2985fbc028c0b19ebca79a1fb4e033e40ba410b1115fe7ebd1";
    const KAT_BODY: &[u8] = b"{\"foo\": 123}";

    fn kat_headers(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("host", HeaderValue::from_static("service.test.invalid"));
        headers.insert("x-amz-date", HeaderValue::from_static("20220827T010203Z"));
        headers.insert("x-amz-x509", HeaderValue::from_static(KAT_CERT_B64));
        headers.insert("x-amz-x509-chain", HeaderValue::from_static(KAT_SUBCA_B64));
        let authorization = format!(
            "{ALG_RSA} Credential={KAT_SERIAL}/20220827/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, \
             Signature={signature}"
        );
        headers.insert(
            "authorization",
            HeaderValue::from_str(&authorization).unwrap(),
        );
        headers
    }

    fn kat_verify(headers: &HeaderMap, body: &[u8]) -> Result<(), X509AuthError> {
        let request = SignedRequest {
            method: "POST",
            path: "/api",
            query: None,
            headers,
            body,
        };
        let authorization = headers["authorization"].to_str().unwrap();
        let auth = parse_authorization(authorization).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(KAT_CERT_B64)
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(leaf.tbs_certificate.serial.to_string(), KAT_SERIAL);
        verify_signature(&request, &auth, "20220827T010203Z", &leaf)
    }

    #[test]
    fn accepts_the_published_rsa_known_answer() {
        kat_verify(&kat_headers(KAT_SIGNATURE), KAT_BODY).unwrap();
    }

    #[test]
    fn rejects_the_known_answer_with_a_changed_body() {
        let err = kat_verify(&kat_headers(KAT_SIGNATURE), b"{\"foo\": 124}").unwrap_err();
        assert!(matches!(err, X509AuthError::Signature), "{err}");
    }

    #[test]
    fn rejects_the_known_answer_with_a_changed_signed_header() {
        let mut headers = kat_headers(KAT_SIGNATURE);
        headers.insert("host", HeaderValue::from_static("other.test.invalid"));
        assert!(matches!(
            kat_verify(&headers, KAT_BODY),
            Err(X509AuthError::Signature)
        ));
    }

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        assert_eq!(
            canonical_query("roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&b=x y&a=%7e"),
            "a=~&b=x%20y&roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(normalize_header_value("  a   b c "), "a b c");
    }
}
