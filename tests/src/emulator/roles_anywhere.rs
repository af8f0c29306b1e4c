//! IAM Roles Anywhere `CreateSession`.

use super::errors::ApiError;
use super::x509_auth::{self, SignedRequest, X509AuthError};
use super::EmulatorState;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use secrecy::ExposeSecret;
use serde::Deserialize;
use time::OffsetDateTime;

const MIN_DURATION_SECS: i64 = 900;
const MAX_DURATION_SECS: i64 = 43_200;
const DEFAULT_DURATION_SECS: i64 = 3_600;

/// JSON body of `CreateSession` (the ARNs may instead come as query parameters).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSessionBody {
    profile_arn: Option<String>,
    role_arn: Option<String>,
    trust_anchor_arn: Option<String>,
    duration_seconds: Option<i64>,
    role_session_name: Option<String>,
}

fn access_denied(message: impl Into<String>) -> ApiError {
    ApiError::forbidden("AccessDeniedException", message)
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("ValidationException", message)
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
}

impl From<X509AuthError> for ApiError {
    fn from(err: X509AuthError) -> Self {
        access_denied(err.to_string())
    }
}

/// Handles `POST /sessions`.
pub(crate) fn create_session(
    state: &EmulatorState,
    parts: &Parts,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<super::redshift::Success, ApiError> {
    let request = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    let signer = x509_auth::authenticate(&request, &state.rolesanywhere_region, now)?;

    let input = parse_input(parts.uri.query(), body)?;
    let trust_anchor_arn = required(input.trust_anchor_arn, "trustAnchorArn")?;
    let profile_arn = required(input.profile_arn, "profileArn")?;
    let role_arn = required(input.role_arn, "roleArn")?;

    if trust_anchor_arn != state.config.trust_anchor_arn {
        return Err(not_found("Trust anchor not found"));
    }
    signer.verify_chain(&state.trust_anchors, now)?;
    if profile_arn != state.config.profile_arn {
        return Err(not_found("Profile not found"));
    }
    if !state.config.role_arns.contains(&role_arn) {
        return Err(access_denied(
            "Unable to assume role: the role is not in the profile's roles",
        ));
    }

    let max_duration = i64::try_from(state.config.max_session_duration.as_secs())
        .unwrap_or(i64::MAX)
        .min(MAX_DURATION_SECS);
    let duration = match input.duration_seconds {
        Some(d) if (MIN_DURATION_SECS..=max_duration).contains(&d) => d,
        Some(_) => {
            return Err(validation(format!(
                "durationSeconds must be between {MIN_DURATION_SECS} and {max_duration}"
            )))
        }
        None => DEFAULT_DURATION_SECS.min(max_duration),
    };
    // A custom session name only where the profile accepts them (acceptRoleSessionName,
    // default false): else "you will receive an Access Denied error" (CreateSession page;
    // the exact message is UNCONFIRMED). Names follow STS's rules, 2–64 of [\w+=,.@-]
    // (the error for a bad one is UNCONFIRMED; ValidationException). Without one, the
    // session is named by the certificate's serial in hex (trust-model page; case and
    // leading zeros UNCONFIRMED: lowercase, as the serial's bytes).
    let session_name = match input.role_session_name {
        Some(_) if !state.config.accept_role_session_name => {
            return Err(access_denied(
                "Unable to assume role: the profile does not accept custom role session names",
            ))
        }
        Some(name) if valid_session_name(&name) => name,
        Some(_) => return Err(validation("roleSessionName must match [\\w+=,.@-]{2,64}")),
        None => signer.serial_hex.clone(),
    };

    let issued_at = now.replace_nanosecond(0).unwrap_or(now);
    let expiration = issued_at + time::Duration::seconds(duration);
    tracing::debug!(
        serial = %signer.serial,
        common_name = signer.common_name.as_deref().unwrap_or(""),
        %role_arn,
        %session_name,
        "issuing a Roles Anywhere session"
    );
    let session = state.sessions.issue(
        &role_arn,
        &session_name,
        issued_at,
        expiration,
        signer.common_name.clone(),
    );

    let account = arn_account(&role_arn).unwrap_or("000000000000");
    let subject_arn = format!(
        "arn:aws:rolesanywhere:{}:{account}:subject/{}",
        state.rolesanywhere_region,
        super::new_request_id()
    );
    let credential_set = |secret: &str, token: &str| {
        serde_json::json!([{
            "assumedRoleUser": {
                "arn": session.assumed_role_arn(),
                "assumedRoleId": session.principal_id(),
            },
            "credentials": {
                "accessKeyId": session.access_key_id,
                "secretAccessKey": secret,
                "sessionToken": token,
                "expiration": super::iso8601(expiration),
            },
            "packedPolicySize": 0,
            "roleArn": role_arn,
            "sourceIdentity": signer.common_name,
        }])
    };
    let body = serde_json::json!({
        "credentialSet": credential_set(
            session.secret_access_key.expose_secret(),
            session.session_token.expose_secret(),
        ),
        "subjectArn": subject_arn,
    });
    let hidden = super::cloudtrail::HIDDEN;
    Ok(super::redshift::Success {
        response: (
            StatusCode::CREATED,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        response_elements: serde_json::json!({
            "credentialSet": credential_set(hidden, hidden),
            "subjectArn": subject_arn,
        }),
    })
}

fn parse_input(query: Option<&str>, body: &[u8]) -> Result<CreateSessionBody, ApiError> {
    let mut input: CreateSessionBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSessionBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| validation(format!("invalid JSON body: {e}")))?
    };
    // The official helper sends the ARNs as query parameters; they win over the body.
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "profileArn" => &mut input.profile_arn,
            "roleArn" => &mut input.role_arn,
            "trustAnchorArn" => &mut input.trust_anchor_arn,
            _ => continue,
        };
        *slot = Some(value.into_owned());
    }
    Ok(input)
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| validation(format!("{name} is required")))
}

fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

/// The account field of an ARN (`arn:partition:service:region:ACCOUNT:resource`).
pub(crate) fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The region field of an ARN.
pub(crate) fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The role name of `arn:aws:iam::ACCOUNT:role/path/NAME` (last path segment).
pub(crate) fn role_name(role_arn: &str) -> &str {
    role_arn.rsplit('/').next().unwrap_or(role_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_helpers() {
        let arn = "arn:aws:iam::123456789012:role/path/to/Reader";
        assert_eq!(arn_account(arn), Some("123456789012"));
        assert_eq!(role_name(arn), "Reader");
        assert_eq!(
            arn_region("arn:aws:rolesanywhere:eu-west-1:1:trust-anchor/x"),
            Some("eu-west-1")
        );
    }

    #[test]
    fn query_arns_override_body() {
        let input = parse_input(
            Some("roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fq&profileArn=p"),
            br#"{"roleArn":"arn:aws:iam::1:role/b","durationSeconds":900}"#,
        )
        .unwrap();
        assert_eq!(input.role_arn.as_deref(), Some("arn:aws:iam::1:role/q"));
        assert_eq!(input.profile_arn.as_deref(), Some("p"));
        assert_eq!(input.duration_seconds, Some(900));
    }

    #[test]
    fn session_names_follow_the_iam_pattern() {
        assert!(valid_session_name("alice@example.com"));
        assert!(!valid_session_name("a"));
        assert!(!valid_session_name("bad name"));
    }
}
