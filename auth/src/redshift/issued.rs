//! What the Redshift credential APIs have in common: SDK timeouts and retries, reading the
//! issued credential from a response, and the log line of each call.

use super::aws_error::{from_sdk_error, CallFailure};
use crate::db_credentials::{CredentialError, DbCredential, DbCredentialRequest};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_smithy_types::DateTime;
use proxy_config::Arn;
use secrecy::SecretString;
use std::error::Error as StdError;
use std::time::{Duration, Instant, SystemTime};

/// Time to open a TCP+TLS connection to the Redshift API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to wait for response bytes once the request is sent.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt, including connecting and reading.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// All attempts together: a client is waiting for its login, so give up well before a
/// typical client login timeout rather than retrying indefinitely.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// Timeouts for the Redshift API clients.
pub(crate) fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK's standard retries (3 attempts, exponential backoff with jitter; throttling and
/// transient errors only).
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig::standard()
}

/// The fields every credential API returns, borrowed from its output.
pub(crate) struct IssuedFields<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) expiration: Option<&'a DateTime>,
    pub(crate) request_id: Option<&'a str>,
}

/// The output of a credential API.
pub(crate) trait IssuedOutput {
    fn issued(&self) -> IssuedFields<'_>;
}

/// Implements [`IssuedOutput`] for SDK outputs, which all name the fields alike.
macro_rules! issued_output {
    ($($output:ty),+) => {$(
        impl $crate::redshift::issued::IssuedOutput for $output {
            fn issued(&self) -> $crate::redshift::issued::IssuedFields<'_> {
                $crate::redshift::issued::IssuedFields {
                    user: self.db_user(),
                    password: self.db_password(),
                    expiration: self.expiration(),
                    request_id: self.request_id(),
                }
            }
        }
    )+};
}
pub(crate) use issued_output;

/// The outcome of one call of `api` for `target`: the credential its output carries, or
/// why there is none.
pub(crate) fn outcome_of<O, E>(
    api: &str,
    target: &str,
    result: Result<O, SdkError<E, HttpResponse>>,
) -> Result<DbCredential, CallFailure>
where
    O: IssuedOutput,
    E: ProvideErrorMetadata + StdError + 'static,
{
    match result {
        Ok(out) => {
            let fields = out.issued();
            let request_id = fields.request_id;
            credential_from(api, target, fields)
                .map_err(|error| CallFailure::incomplete(error, request_id))
        }
        Err(err) => Err(from_sdk_error(api, target, &err)),
    }
}

/// Builds the [`DbCredential`] from an API output; a response lacking a field is a
/// service failure.
pub(crate) fn credential_from(
    api: &str,
    target: &str,
    fields: IssuedFields<'_>,
) -> Result<DbCredential, CredentialError> {
    let missing = |field: &str| {
        CredentialError::Unavailable(format!(
            "{api} for target {target:?} returned no {field}{}",
            fields
                .request_id
                .map(|id| format!(" (AWS request id {id})"))
                .unwrap_or_default()
        ))
    };
    let user = fields
        .user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| missing("user"))?;
    let password = fields
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| missing("password"))?;
    let expiration = fields
        .expiration
        .and_then(|e| SystemTime::try_from(*e).ok())
        .ok_or_else(|| missing("valid expiration"))?;
    Ok(DbCredential {
        user: user.to_owned(),
        password: SecretString::from(password),
        expiration,
        aws_request_ids: fields.request_id.map(str::to_owned).into_iter().collect(),
    })
}

/// A request's role in log lines: its ARN, or `default` for the configured default role.
struct RoleName<'a>(Option<&'a Arn>);

impl std::fmt::Display for RoleName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(arn) => write!(f, "{arn}"),
            None => f.write_str("default"),
        }
    }
}

/// A `tracing` event at `$level` about one call of `$api` for `$request`: the request's
/// fields, then `$rest`.
macro_rules! call_event {
    ($level:ident, $api:expr, $request:expr, $($rest:tt)+) => {
        tracing::$level!(
            api = $api,
            target = %$request.target,
            role_arn = %RoleName($request.role_arn.as_ref()),
            role_session_name = ?$request.role_session_name,
            db_user = ?$request.db_user,
            db_name = ?$request.db_name,
            $($rest)+
        )
    };
}

/// Logs the outcome of one credential API call. Never logs the password.
pub(crate) fn log_call(
    api: &str,
    request: &DbCredentialRequest,
    started: Instant,
    outcome: &Result<DbCredential, CallFailure>,
) {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(credential) => {
            let expiration = DateTime::from(credential.expiration)
                .fmt(Format::DateTime)
                .unwrap_or_default();
            call_event!(
                info,
                api,
                request,
                issued_user = ?credential.user,
                request_id = credential.aws_request_ids.first().map(String::as_str).unwrap_or("-"),
                expiration = %expiration,
                latency_ms,
                outcome = "ok",
                "issued database credential"
            );
        }
        Err(failure) => {
            let outcome = match failure.error {
                CredentialError::Denied(_) => "denied",
                CredentialError::Unavailable(_) => "unavailable",
                CredentialError::Invalid(_) => "invalid",
                CredentialError::Throttled(_) => "throttled",
            };
            call_event!(
                warn,
                api,
                request,
                request_id = failure.request_id.as_deref().unwrap_or("-"),
                code = %failure.code,
                latency_ms,
                outcome,
                error = %failure.error,
                "database credential request failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// What `credential_from` makes of an output with these fields, expiring in 2033.
    fn credential(
        api: &str,
        user: &str,
        password: Option<&str>,
        request_id: &str,
    ) -> Result<DbCredential, CredentialError> {
        let exp = DateTime::from_secs(2_000_000_000);
        let fields = IssuedFields {
            user: Some(user),
            password,
            expiration: Some(&exp),
            request_id: Some(request_id),
        };
        credential_from(api, "t1", fields)
    }

    #[test]
    fn credential_keeps_the_issued_user_exactly() {
        let c = credential(
            "GetClusterCredentials",
            "IAMA:alice",
            Some("s3cret"),
            "rid-1",
        )
        .expect("credential");
        assert_eq!(c.user, "IAMA:alice");
        assert_eq!(c.password.expose_secret(), "s3cret");
        assert_eq!(
            c.expiration,
            SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)
        );
        assert_eq!(c.aws_request_ids, vec!["rid-1".to_owned()]);
    }

    #[test]
    fn response_without_password_is_unavailable_and_names_the_request() {
        let err =
            credential("GetCredentials", "IAMR:role", None, "rid-2").expect_err("no password");
        assert!(matches!(err, CredentialError::Unavailable(_)));
        let msg = err.to_string();
        assert!(msg.contains("password") && msg.contains("rid-2"), "{msg}");
    }
}
