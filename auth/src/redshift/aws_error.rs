//! Turning AWS SDK failures into [`CredentialError`]s: denied, unavailable or invalid, with
//! a message that helps an operator and carries no secrets.
//!
//! SDK errors are only ever rendered through their codes, service messages and
//! `Display` chains: never with `Debug`, which could include request or response bodies.

use crate::db_credentials::CredentialError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::request_id::RequestId;
use std::error::Error as StdError;

/// Error codes meaning "you may not": bad or expired AWS credentials, missing IAM permission.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AccessDeniedFault",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "MissingAuthenticationToken",
    "NotAuthorized",
    "SignatureDoesNotMatch",
    "UnauthorizedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
];

/// Error codes meaning "not now": throttling and service-side failures.
const UNAVAILABLE_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
];

/// Which [`CredentialError`] variant a failure maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Denied,
    Unavailable,
    Invalid,
}

impl Class {
    pub(crate) fn error(self, message: String) -> CredentialError {
        match self {
            Class::Denied => CredentialError::Denied(message),
            Class::Unavailable => CredentialError::Unavailable(message),
            Class::Invalid => CredentialError::Invalid(message),
        }
    }
}

/// Classifies a service error response by its code, then by its HTTP status.
pub(crate) fn classify_service_error(code: Option<&str>, status: u16) -> Class {
    match code {
        Some(c) if DENIED_CODES.contains(&c) => Class::Denied,
        Some(c) if UNAVAILABLE_CODES.contains(&c) => Class::Unavailable,
        _ if status == 401 || status == 403 => Class::Denied,
        _ if status == 429 || status >= 500 => Class::Unavailable,
        // A success status whose body the SDK could not read as the API's answer: the
        // service (or something in front of it) misbehaved, the request was fine.
        _ if (200..300).contains(&status) => Class::Unavailable,
        _ => Class::Invalid,
    }
}

/// A failed SDK call, reduced to what the proxy logs and reports.
pub(crate) struct CallFailure {
    pub(crate) error: CredentialError,
    pub(crate) request_id: Option<String>,
    /// The AWS error code, or the kind of transport failure, for logs.
    pub(crate) code: String,
}

impl CallFailure {
    /// A call that succeeded but whose response lacked a field.
    pub(crate) fn incomplete(error: CredentialError, request_id: Option<&str>) -> CallFailure {
        CallFailure {
            error,
            request_id: request_id.map(str::to_owned),
            code: "incomplete response".to_owned(),
        }
    }
}

/// Maps an SDK error of `api` (e.g. `GetClusterCredentials`) for `target`.
pub(crate) fn from_sdk_error<E>(
    api: &str,
    target: &str,
    err: &SdkError<E, HttpResponse>,
) -> CallFailure
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let request_id = err
        .request_id()
        .or_else(|| match err {
            SdkError::ServiceError(ctx) => ctx.err().meta().request_id(),
            _ => None,
        })
        .map(str::to_owned);
    let rid = request_id
        .as_deref()
        .map(|id| format!(" (AWS request id {id})"))
        .unwrap_or_default();
    let (error, code) = match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let status = ctx.raw().status().as_u16();
            let code = e.code().unwrap_or("unknown error").to_owned();
            let detail = e.message().unwrap_or("no message");
            let class = classify_service_error(e.code(), status);
            (
                class.error(format!(
                    "{api} for target {target:?} failed: {code} (HTTP {status}): {detail}{rid}"
                )),
                code,
            )
        }
        SdkError::TimeoutError(_) => (
            CredentialError::Unavailable(format!("{api} for target {target:?} timed out")),
            "timeout".to_owned(),
        ),
        SdkError::DispatchFailure(d) => {
            // The proxy's own AWS credentials are resolved while dispatching; when their
            // source reported a classified failure (e.g. Roles Anywhere denied), keep its
            // class rather than calling everything "unavailable".
            if let Some(inner) = find_in_chain::<CredentialError>(err) {
                let class = match inner {
                    CredentialError::Denied(_) => Class::Denied,
                    CredentialError::Unavailable(_) | CredentialError::Throttled(_) => {
                        Class::Unavailable
                    }
                    CredentialError::Invalid(_) => Class::Invalid,
                };
                (
                    class.error(format!(
                        "{api} for target {target:?}: no AWS credentials: {inner}"
                    )),
                    "credentials".to_owned(),
                )
            } else {
                let kind = if d.is_timeout() {
                    "connect timeout"
                } else if d.is_io() {
                    "network error"
                } else {
                    "dispatch failure"
                };
                (
                    CredentialError::Unavailable(format!(
                        "{api} for target {target:?} could not be sent ({kind}): {}",
                        DisplayErrorContext(err)
                    )),
                    kind.to_owned(),
                )
            }
        }
        SdkError::ResponseError(r) => (
            CredentialError::Unavailable(format!(
                "{api} for target {target:?}: unreadable response (HTTP {}){rid}: {}",
                r.raw().status().as_u16(),
                DisplayErrorContext(err)
            )),
            "response error".to_owned(),
        ),
        // Construction failures are local: a request the SDK refuses to build (e.g. an
        // unusable endpoint URL or region). Retrying will not help.
        _ => (
            CredentialError::Invalid(format!(
                "{api} for target {target:?}: request could not be built: {}",
                DisplayErrorContext(err)
            )),
            "construction failure".to_owned(),
        ),
    };
    CallFailure {
        error,
        request_id,
        code,
    }
}

/// The first error of type `T` in `err`'s source chain (including `err` itself).
fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_denied_codes_are_denied() {
        assert_eq!(
            classify_service_error(Some("AccessDenied"), 403),
            Class::Denied
        );
        assert_eq!(
            classify_service_error(Some("ExpiredTokenException"), 400),
            Class::Denied
        );
        assert_eq!(classify_service_error(None, 401), Class::Denied);
    }

    #[test]
    fn throttling_and_server_errors_are_unavailable() {
        assert_eq!(
            classify_service_error(Some("Throttling"), 400),
            Class::Unavailable
        );
        assert_eq!(
            classify_service_error(Some("ThrottlingException"), 400),
            Class::Unavailable
        );
        assert_eq!(
            classify_service_error(Some("Whatever"), 503),
            Class::Unavailable
        );
        assert_eq!(classify_service_error(None, 429), Class::Unavailable);
    }

    #[test]
    fn bad_requests_are_invalid() {
        for code in [
            "ClusterNotFound",
            "InvalidParameterValue",
            "ValidationException",
            "ResourceNotFoundException",
            "UnsupportedOperation",
        ] {
            assert_eq!(
                classify_service_error(Some(code), 400),
                Class::Invalid,
                "{code}"
            );
        }
        assert_eq!(classify_service_error(None, 404), Class::Invalid);
        assert_eq!(classify_service_error(None, 200), Class::Unavailable);
    }

    #[test]
    fn finds_a_credential_error_deep_in_a_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] CredentialError);
        let outer = Outer(CredentialError::Denied("untrusted certificate".into()));
        let found = find_in_chain::<CredentialError>(&outer).expect("found");
        assert!(matches!(found, CredentialError::Denied(_)));
        assert!(find_in_chain::<std::io::Error>(&outer).is_none());
    }
}
