//! Verification of SigV4 (`AWS4-HMAC-SHA256`) requests made with credentials the emulator
//! issued. The expected signature is recomputed with `aws-sigv4`, the SDK's own signer,
//! from the request as received.

use super::auth_header::{parse_amz_date, parse_authorization};
use super::errors::{ApiError, Protocol};
use super::sessions::SessionStore;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SessionTokenMode, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use std::time::Duration;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// AWS accepts SigV4 requests up to 15 minutes off its clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The Roles Anywhere session whose credentials signed the request.
    pub(crate) session: super::sessions::Session,
    /// Region of the credential scope (selects the regional cluster/workgroup).
    pub(crate) region: String,
}

/// Error codes of authentication failures: the query protocol (STS-style) and the JSON
/// protocols name them differently.
struct Codes {
    missing: &'static str,
    incomplete: &'static str,
    invalid_token: &'static str,
    expired: &'static str,
    mismatch: &'static str,
}

fn codes(protocol: Protocol) -> Codes {
    match protocol {
        Protocol::Query => Codes {
            missing: "MissingAuthenticationToken",
            incomplete: "IncompleteSignature",
            invalid_token: "InvalidClientTokenId",
            expired: "ExpiredToken",
            mismatch: "SignatureDoesNotMatch",
        },
        Protocol::Json11 | Protocol::RestJson => Codes {
            missing: "MissingAuthenticationTokenException",
            incomplete: "IncompleteSignatureException",
            invalid_token: "UnrecognizedClientException",
            expired: "ExpiredTokenException",
            mismatch: "InvalidSignatureException",
        },
    }
}

/// Verifies the request's SigV4 signature for `service`; returns who signed it.
pub(crate) fn verify(
    sessions: &SessionStore,
    protocol: Protocol,
    service: &str,
    parts: &Parts,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Caller, ApiError> {
    let codes = codes(protocol);
    let mismatch = |message: &str| ApiError::forbidden(codes.mismatch, message);
    let incomplete = |message: String| ApiError::bad_request(codes.incomplete, message);

    let authorization = parts
        .headers
        .get("authorization")
        .ok_or_else(|| ApiError::forbidden(codes.missing, "Missing Authentication Token"))?
        .to_str()
        .map_err(|_| incomplete("Authorization header is not visible ASCII".to_owned()))?;
    let auth = parse_authorization(authorization).map_err(|e| incomplete(e.to_string()))?;
    if auth.algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': expected {ALGORITHM}"
        )));
    }
    if auth.service != service {
        return Err(mismatch(&format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signs(required) {
            return Err(incomplete(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    let amz_date_text = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("Missing or invalid X-Amz-Date header".to_owned()))?;
    let amz_date = parse_amz_date(amz_date_text)
        .ok_or_else(|| incomplete("Missing or invalid X-Amz-Date header".to_owned()))?;
    if !amz_date_text.starts_with(auth.scope_date) {
        return Err(mismatch(
            "Credential should be scoped to a valid date matching X-Amz-Date.",
        ));
    }
    if (now - amz_date).unsigned_abs() > MAX_CLOCK_SKEW {
        return Err(mismatch(
            "Signature expired: X-Amz-Date is more than 15 minutes from the server time.",
        ));
    }

    let invalid_token = || {
        ApiError::forbidden(
            codes.invalid_token,
            "The security token included in the request is invalid.",
        )
    };
    let session = sessions.get(auth.credential_id).ok_or_else(invalid_token)?;
    let token_sent = parts
        .headers
        .get("x-amz-security-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let token_ok: bool = token_sent
        .ct_eq(session.session_token.expose_secret().as_bytes())
        .into();
    if !token_ok {
        return Err(invalid_token());
    }
    if now >= session.expiration {
        return Err(ApiError::forbidden(
            codes.expired,
            "The security token included in the request is expired",
        ));
    }

    let expected = expected_signature(&auth_parts(&auth), parts, body, amz_date, &session)
        .map_err(|e| incomplete(format!("cannot canonicalize the request: {e}")))?;
    if !bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        return Err(mismatch(
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    Ok(Caller {
        session,
        region: auth.region.to_owned(),
    })
}

/// What the recomputation needs from the `Authorization` header.
struct AuthParts<'a> {
    region: &'a str,
    service: &'a str,
    signed_headers: &'a [&'a str],
}

fn auth_parts<'a>(auth: &'a super::auth_header::AuthorizationHeader<'a>) -> AuthParts<'a> {
    AuthParts {
        region: auth.region,
        service: auth.service,
        signed_headers: &auth.signed_headers,
    }
}

/// Signs the received request again with the session's secret, feeding the signer exactly
/// the headers the client said it signed.
fn expected_signature(
    auth: &AuthParts<'_>,
    parts: &Parts,
    body: &[u8],
    amz_date: OffsetDateTime,
    session: &super::sessions::Session,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    // The signer adds x-amz-date and x-amz-security-token itself (from the time and the
    // credentials), so they are not passed as headers.
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in auth.signed_headers {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        for value in parts.headers.get_all(*name) {
            headers.push((name, value.to_str()?));
        }
    }
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let signable = SignableRequest::new(
        parts.method.as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )?;

    let mut settings = SigningSettings::default();
    // The client decided what to sign; exclude nothing it listed.
    settings.excluded_headers = None;
    settings.session_token_mode = if auth.signed_headers.contains(&"x-amz-security-token") {
        SessionTokenMode::Include
    } else {
        SessionTokenMode::Exclude
    };
    let identity: Identity = Credentials::new(
        &session.access_key_id,
        session.secret_access_key.expose_secret(),
        Some(session.session_token.expose_secret().to_owned()),
        None,
        "aws-emulator",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(auth.region)
        .name(auth.service)
        .time(amz_date.into())
        .settings(settings)
        .build()?
        .into();
    Ok(sign(signable, &params)?.signature().to_owned())
}
