//! Redshift `GetClusterCredentials` / `GetClusterCredentialsWithIAM` (query protocol, XML)
//! and Redshift Serverless `GetCredentials` (JSON 1.1).

use super::db::{Creation, DbError, DbTarget, MAX_ROLE_NAME_BYTES};
use super::errors::{xml_escape, ApiError};
use super::roles_anywhere::role_name;
use super::sigv4::Caller;
use super::{iso8601, EmulatorState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;

const MIN_DURATION_SECS: i64 = 900;
const MAX_DURATION_SECS: i64 = 3_600;
const DEFAULT_DURATION_SECS: i64 = 900;
const XMLNS: &str = "http://redshift.amazonaws.com/doc/2012-12-01/";

/// A cluster or workgroup known to the emulator.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) custom_domain_name: Option<String>,
    pub(crate) db: DbTarget,
}

fn invalid_parameter(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidParameterValue", message)
}

fn serverless_validation(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("ValidationException", message)
}

fn internal(err: &DbError) -> ApiError {
    tracing::error!(error = %err, "database provisioning failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        "The emulator could not provision the database user (see its log).",
    )
}

/// Which of the two query-protocol operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterOperation {
    GetClusterCredentials,
    GetClusterCredentialsWithIam,
}

/// Handles both provisioned-cluster operations; `params` is the decoded form body.
pub(crate) async fn get_cluster_credentials(
    state: &EmulatorState,
    caller: &Caller,
    operation: ClusterOperation,
    params: &[(String, String)],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Response, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if let Some(db_name) = param("DbName") {
        validate_db_name(db_name).map_err(invalid_parameter)?;
    }
    let duration = match param("DurationSeconds") {
        None => DEFAULT_DURATION_SECS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|d| (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(d))
            .ok_or_else(|| {
                invalid_parameter(format!(
                    "DurationSeconds must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS}"
                ))
            })?,
    };

    let (user, creation, groups) = match operation {
        ClusterOperation::GetClusterCredentials => {
            let db_user = param("DbUser")
                .ok_or_else(|| ApiError::bad_request("MissingParameter", "DbUser is required"))?;
            validate_db_user(db_user).map_err(invalid_parameter)?;
            let auto_create = match param("AutoCreate") {
                None => false,
                Some(text) if text.eq_ignore_ascii_case("true") => true,
                Some(text) if text.eq_ignore_ascii_case("false") => false,
                Some(_) => return Err(invalid_parameter("AutoCreate must be true or false")),
            };
            let groups = db_groups(params)?;
            if auto_create {
                (format!("IAMA:{db_user}"), Creation::AutoCreate, groups)
            } else {
                (format!("IAM:{db_user}"), Creation::ExistingOnly, groups)
            }
        }
        ClusterOperation::GetClusterCredentialsWithIam => (
            iam_role_user(caller).map_err(invalid_parameter)?,
            Creation::AutoCreate,
            Vec::new(),
        ),
    };
    check_role_name_length(&user).map_err(invalid_parameter)?;

    let target = match (param("ClusterIdentifier"), param("CustomDomainName")) {
        (Some(id), _) => state
            .clusters
            .iter()
            .find(|c| c.name == id && c.region == caller.region)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ClusterNotFound",
                    format!("Cluster {id} not found."),
                )
            })?,
        (None, Some(domain)) => find_by_domain(&state.clusters, domain, &caller.region)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ClusterNotFound",
                    format!("No cluster is associated with custom domain {domain}."),
                )
            })?,
        (None, None) => {
            return Err(invalid_parameter(
                "ClusterIdentifier or CustomDomainName must be provided",
            ))
        }
    };

    tracing::debug!(
        target = %target.name,
        %user,
        source_identity = caller.source_identity.as_deref().unwrap_or(""),
        "issuing cluster credentials"
    );
    let expiration = state.db_credential_expiration(now, duration);
    let password = target
        .db
        .issue_password(&user, creation, &groups, expiration)
        .await
        .map_err(|e| internal(&e))?;

    let (root, extra) = match operation {
        ClusterOperation::GetClusterCredentials => ("GetClusterCredentials", String::new()),
        ClusterOperation::GetClusterCredentialsWithIam => (
            "GetClusterCredentialsWithIAM",
            format!(
                "<NextRefreshTime>{}</NextRefreshTime>",
                iso8601(next_refresh(now, duration))
            ),
        ),
    };
    let body = format!(
        "<{root}Response xmlns=\"{XMLNS}\"><{root}Result>\
         <DbUser>{user}</DbUser><DbPassword>{password}</DbPassword>\
         <Expiration>{expiration}</Expiration>{extra}</{root}Result>\
         <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{root}Response>",
        user = xml_escape(&user),
        password = xml_escape(password.expose_secret()),
        expiration = iso8601(expiration),
        request_id = xml_escape(request_id),
    );
    Ok(([(header::CONTENT_TYPE, "text/xml")], body).into_response())
}

/// JSON body of serverless `GetCredentials`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetCredentialsInput {
    workgroup_name: Option<String>,
    custom_domain_name: Option<String>,
    db_name: Option<String>,
    duration_seconds: Option<i64>,
}

/// Handles serverless `GetCredentials`.
pub(crate) async fn get_credentials(
    state: &EmulatorState,
    caller: &Caller,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Response, ApiError> {
    let input: GetCredentialsInput = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("SerializationException", format!("invalid JSON body: {e}"))
    })?;
    if let Some(db_name) = &input.db_name {
        validate_db_name(db_name).map_err(serverless_validation)?;
    }
    let duration = match input.duration_seconds {
        None => DEFAULT_DURATION_SECS,
        Some(d) if (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&d) => d,
        Some(_) => {
            return Err(serverless_validation(format!(
                "durationSeconds must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS}"
            )))
        }
    };
    let not_found =
        |what: String| ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", what);
    let target = match (&input.workgroup_name, &input.custom_domain_name) {
        (Some(name), _) => {
            if !valid_workgroup_name(name) {
                return Err(serverless_validation(
                    "workgroupName must match ^[a-z0-9-]+$ and be 3-64 characters long",
                ));
            }
            state
                .workgroups
                .iter()
                .find(|w| &w.name == name && w.region == caller.region)
                .ok_or_else(|| not_found(format!("Workgroup {name} not found.")))?
        }
        (None, Some(domain)) => find_by_domain(&state.workgroups, domain, &caller.region)
            .ok_or_else(|| not_found(format!("Custom domain {domain} not found.")))?,
        (None, None) => {
            return Err(serverless_validation(
                "workgroupName or customDomainName must be provided",
            ))
        }
    };

    let user = iam_role_user(caller).map_err(serverless_validation)?;
    check_role_name_length(&user).map_err(serverless_validation)?;
    tracing::debug!(
        target = %target.name,
        %user,
        source_identity = caller.source_identity.as_deref().unwrap_or(""),
        "issuing serverless credentials"
    );
    let expiration = state.db_credential_expiration(now, duration);
    let password: SecretString = target
        .db
        .issue_password(&user, Creation::AutoCreate, &[], expiration)
        .await
        .map_err(|e| internal(&e))?;
    let body = serde_json::json!({
        "dbUser": user,
        "dbPassword": password.expose_secret(),
        "expiration": expiration.unix_timestamp(),
        "nextRefreshTime": next_refresh(now, duration).unix_timestamp(),
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response())
}

fn find_by_domain<'t>(targets: &'t [Target], domain: &str, region: &str) -> Option<&'t Target> {
    targets.iter().find(|t| {
        t.region == region
            && t.custom_domain_name
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    })
}

/// `DbGroups.DbGroup.N` in N order.
fn db_groups(params: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut numbered: Vec<(u32, &str)> = Vec::new();
    for (key, value) in params {
        if let Some(index) = key.strip_prefix("DbGroups.DbGroup.") {
            let index: u32 = index
                .parse()
                .map_err(|_| invalid_parameter("DbGroups members must be DbGroups.DbGroup.N"))?;
            validate_db_group(value).map_err(invalid_parameter)?;
            numbered.push((index, value));
        }
    }
    numbered.sort_unstable();
    Ok(numbered.into_iter().map(|(_, g)| g.to_owned()).collect())
}

/// `IAMR:<role-name>` for the caller's assumed role.
fn iam_role_user(caller: &Caller) -> Result<String, String> {
    let name = role_name(&caller.role_arn);
    if name.is_empty() {
        return Err("the caller's role has no name".to_owned());
    }
    Ok(format!("IAMR:{name}"))
}

/// Redshift: 1–64 characters of letters, digits, `_ + . @ -`, starting with a letter, no
/// `:` or `/`, not PUBLIC.
fn validate_db_user(user: &str) -> Result<(), String> {
    if !(1..=64).contains(&user.len()) {
        return Err("DbUser must be 1 to 64 characters long".to_owned());
    }
    if !user.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("DbUser must start with a letter".to_owned());
    }
    if !user
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+.@-".contains(c))
    {
        return Err(
            "DbUser may only contain letters, digits, underscore, plus, period, at sign and hyphen"
                .to_owned(),
        );
    }
    if user.eq_ignore_ascii_case("public") {
        return Err("DbUser must not be PUBLIC".to_owned());
    }
    Ok(())
}

fn validate_db_name(name: &str) -> Result<(), String> {
    if !(1..=64).contains(&name.len())
        || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$-".contains(c))
    {
        return Err(
            "DbName must be 1 to 64 letters, digits, underscores, dollar signs or hyphens, starting with a letter or underscore"
                .to_owned(),
        );
    }
    Ok(())
}

fn validate_db_group(group: &str) -> Result<(), String> {
    if !(1..=MAX_ROLE_NAME_BYTES).contains(&group.len())
        || !group.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+.@-".contains(c))
        || group.eq_ignore_ascii_case("public")
    {
        return Err(format!(
            "DbGroup must be 1 to {MAX_ROLE_NAME_BYTES} letters, digits or _+.@-, starting with a letter or underscore, and not PUBLIC"
        ));
    }
    Ok(())
}

fn check_role_name_length(user: &str) -> Result<(), String> {
    if user.len() > MAX_ROLE_NAME_BYTES {
        return Err(format!(
            "emulator limitation: database user {user} exceeds PostgreSQL's {MAX_ROLE_NAME_BYTES}-byte role names"
        ));
    }
    Ok(())
}

fn valid_workgroup_name(name: &str) -> bool {
    (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) fn truncate(now: OffsetDateTime) -> OffsetDateTime {
    now.replace_nanosecond(0).unwrap_or(now)
}

/// When callers should refresh: after three quarters of the lifetime.
fn next_refresh(now: OffsetDateTime, duration_secs: i64) -> OffsetDateTime {
    truncate(now) + time::Duration::seconds(duration_secs * 3 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_user_rules() {
        assert!(validate_db_user("alice").is_ok());
        assert!(validate_db_user("a.b+c@d-e_f").is_ok());
        for bad in [
            "", "1alice", "al:ice", "al/ice", "PUBLIC", "public", "al ice", "al\"ice",
        ] {
            assert!(validate_db_user(bad).is_err(), "accepted {bad:?}");
        }
        assert!(validate_db_user(&"a".repeat(64)).is_ok());
        assert!(validate_db_user(&"a".repeat(65)).is_err());
    }

    #[test]
    fn workgroup_name_rules() {
        assert!(valid_workgroup_name("analytics-1"));
        assert!(!valid_workgroup_name("ab"));
        assert!(!valid_workgroup_name("Analytics"));
        assert!(!valid_workgroup_name(&"a".repeat(65)));
    }

    #[test]
    fn db_groups_are_ordered_by_index() {
        let params = vec![
            ("DbGroups.DbGroup.2".to_owned(), "writers".to_owned()),
            ("DbUser".to_owned(), "alice".to_owned()),
            ("DbGroups.DbGroup.1".to_owned(), "readers".to_owned()),
        ];
        assert_eq!(db_groups(&params).unwrap(), ["readers", "writers"]);
        let bad = vec![("DbGroups.DbGroup.1".to_owned(), "x\"; DROP".to_owned())];
        assert!(db_groups(&bad).is_err());
    }

    #[test]
    fn iam_user_comes_from_the_role_name() {
        let caller = Caller {
            role_arn: "arn:aws:iam::1:role/team/Analyst".to_owned(),
            region: "us-east-1".to_owned(),
            source_identity: None,
        };
        assert_eq!(iam_role_user(&caller).unwrap(), "IAMR:Analyst");
    }
}
