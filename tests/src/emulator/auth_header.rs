//! Parsing of the SigV4-style `Authorization` header and `X-Amz-Date`, shared by the HMAC
//! (`AWS4-HMAC-SHA256`) and the Roles Anywhere X.509 (`AWS4-X509-*-SHA256`) verifiers.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// The parts of `ALG Credential=ID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b,
/// Signature=hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthorizationHeader<'a> {
    pub(crate) algorithm: &'a str,
    /// Access key id (HMAC) or decimal certificate serial (X.509).
    pub(crate) credential_id: &'a str,
    pub(crate) scope_date: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) signed_headers: Vec<&'a str>,
    pub(crate) signature: &'a str,
}

impl AuthorizationHeader<'_> {
    /// `DATE/REGION/SERVICE/aws4_request`.
    pub(crate) fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }

    pub(crate) fn signs(&self, header: &str) -> bool {
        self.signed_headers.contains(&header)
    }
}

/// Why an `Authorization` header could not be parsed. Never includes the header itself (it
/// is not secret, but there is no reason to echo attacker input into logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MalformedAuthorization {
    #[error("the Authorization header is not of the form `ALGORITHM Credential=..., SignedHeaders=..., Signature=...`")]
    Shape,
    #[error("the Authorization header lacks `{0}`")]
    Missing(&'static str),
    #[error("the credential scope must be `ID/YYYYMMDD/REGION/SERVICE/aws4_request`")]
    Scope,
    #[error("SignedHeaders must be a `;`-separated list of lowercase header names")]
    SignedHeaders,
    #[error("the signature must be lowercase hex")]
    Signature,
}

/// Parses the value of an `Authorization` header.
pub(crate) fn parse_authorization(
    value: &str,
) -> Result<AuthorizationHeader<'_>, MalformedAuthorization> {
    let (algorithm, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(MalformedAuthorization::Shape)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, val) = part
            .trim()
            .split_once('=')
            .ok_or(MalformedAuthorization::Shape)?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(MalformedAuthorization::Shape),
        };
        if slot.replace(val).is_some() {
            return Err(MalformedAuthorization::Shape);
        }
    }
    let credential = credential.ok_or(MalformedAuthorization::Missing("Credential"))?;
    let signed_headers = signed_headers.ok_or(MalformedAuthorization::Missing("SignedHeaders"))?;
    let signature = signature.ok_or(MalformedAuthorization::Missing("Signature"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [credential_id, scope_date, region, service, terminator] = parts[..] else {
        return Err(MalformedAuthorization::Scope);
    };
    if credential_id.is_empty()
        || region.is_empty()
        || service.is_empty()
        || terminator != "aws4_request"
        || scope_date.len() != 8
        || !scope_date.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MalformedAuthorization::Scope);
    }

    let signed_headers: Vec<&str> = signed_headers.split(';').collect();
    let header_name_ok = |name: &&str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if !signed_headers.iter().all(header_name_ok) {
        return Err(MalformedAuthorization::SignedHeaders);
    }

    if signature.is_empty()
        || signature.len() % 2 != 0
        || !signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(MalformedAuthorization::Signature);
    }

    Ok(AuthorizationHeader {
        algorithm,
        credential_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature,
    })
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_amz_date(value: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(value, AMZ_DATE)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hmac_authorization() {
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20240102/us-east-1/redshift/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=0a1b",
        )
        .unwrap();
        assert_eq!(auth.algorithm, "AWS4-HMAC-SHA256");
        assert_eq!(auth.credential_id, "ASIAEXAMPLE");
        assert_eq!(auth.scope(), "20240102/us-east-1/redshift/aws4_request");
        assert_eq!(auth.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert_eq!(auth.signature, "0a1b");
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/20240102/r/s/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=a/2024/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20240102/r/s/other, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20240102/r/s/aws4_request, SignedHeaders=Host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20240102/r/s/aws4_request, SignedHeaders=host, Signature=0G",
            "AWS4-HMAC-SHA256 Credential=a/20240102/r/s/aws4_request, SignedHeaders=host, Signature=00, Signature=00",
        ] {
            assert!(parse_authorization(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_amz_date() {
        let date = parse_amz_date("20220827T010203Z").unwrap();
        assert_eq!(date.unix_timestamp(), 1_661_562_123);
        assert!(parse_amz_date("2022-08-27T01:02:03Z").is_none());
    }
}
