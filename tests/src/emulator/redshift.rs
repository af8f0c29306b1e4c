//! Redshift `GetClusterCredentials` / `GetClusterCredentialsWithIAM` (query protocol, XML)
//! and Redshift Serverless `GetCredentials` (JSON 1.1): parameter rules, IAM authorization,
//! and issuing a credential into the store the stand-ins check.

use super::db::{DbError, DbTarget};
use super::errors::{xml_escape, ApiError, Protocol};
use super::iam::{self, Decision, RequestContext};
use super::roles_anywhere::role_name;
use super::sigv4::Caller;
use super::{cloudtrail::HIDDEN, iso8601, EmulatorState};
use crate::standin::{CredentialRequest, TargetId};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

const MIN_DURATION_SECS: i64 = 900;
const MAX_DURATION_SECS: i64 = 3_600;
const DEFAULT_DURATION_SECS: i64 = 900;
const XMLNS: &str = "http://redshift.amazonaws.com/doc/2012-12-01/";

/// Amazon Redshift's reserved words (DG r_pg_keywords): `DbUser`, `DbName` and `DbGroups`
/// "cannot be a reserved word" (API_GetClusterCredentials).
const RESERVED_WORDS: &[&str] = &[
    "AES128",
    "AES256",
    "ALL",
    "ALLOWOVERWRITE",
    "ANALYSE",
    "ANALYZE",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "AUTHORIZATION",
    "AZ64",
    "BACKUP",
    "BETWEEN",
    "BINARY",
    "BLANKSASNULL",
    "BOTH",
    "BYTEDICT",
    "BZIP2",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "CONSTRAINT",
    "CREATE",
    "CREDENTIALS",
    "CROSS",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "CURRENT_USER_ID",
    "DEFAULT",
    "DEFERRABLE",
    "DEFLATE",
    "DEFRAG",
    "DELTA",
    "DELTA32K",
    "DESC",
    "DISABLE",
    "DISTINCT",
    "DO",
    "ELSE",
    "EMPTYASNULL",
    "ENABLE",
    "ENCODE",
    "ENCRYPT",
    "ENCRYPTION",
    "END",
    "EXCEPT",
    "EXPLICIT",
    "FALSE",
    "FOR",
    "FOREIGN",
    "FREEZE",
    "FROM",
    "FULL",
    "GLOBALDICT256",
    "GLOBALDICT64K",
    "GRANT",
    "GROUP",
    "GZIP",
    "HAVING",
    "IDENTITY",
    "IGNORE",
    "ILIKE",
    "IN",
    "INITIALLY",
    "INNER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "LEADING",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "LUN",
    "LUNS",
    "LZO",
    "LZOP",
    "MINUS",
    "MOSTLY16",
    "MOSTLY32",
    "MOSTLY8",
    "NATURAL",
    "NEW",
    "NOT",
    "NOTNULL",
    "NULL",
    "NULLS",
    "OFF",
    "OFFLINE",
    "OFFSET",
    "OID",
    "OLD",
    "ON",
    "ONLY",
    "OPEN",
    "OR",
    "ORDER",
    "OUTER",
    "OVERLAPS",
    "PARALLEL",
    "PARTITION",
    "PERCENT",
    "PERMISSIONS",
    "PIVOT",
    "PLACING",
    "PRIMARY",
    "RAW",
    "READRATIO",
    "RECOVER",
    "REFERENCES",
    "REJECTLOG",
    "RESORT",
    "RESPECT",
    "RESTORE",
    "RIGHT",
    "SELECT",
    "SESSION_USER",
    "SIMILAR",
    "SNAPSHOT",
    "SOME",
    "SYSDATE",
    "SYSTEM",
    "TABLE",
    "TAG",
    "TDES",
    "TEXT255",
    "TEXT32K",
    "THEN",
    "TIMESTAMP",
    "TO",
    "TOP",
    "TRAILING",
    "TRUE",
    "TRUNCATECOLUMNS",
    "UNION",
    "UNIQUE",
    "UNNEST",
    "UNPIVOT",
    "USER",
    "USING",
    "VERBOSE",
    "WALLET",
    "WHEN",
    "WHERE",
    "WITH",
    "WITHOUT",
];

/// A cluster or workgroup known to the emulator.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) id: TargetId,
    pub(crate) region: String,
    pub(crate) custom_domain_name: Option<String>,
    /// The workgroup ID (serverless only).
    pub(crate) workgroup_id: Option<String>,
    pub(crate) db: DbTarget,
}

/// A successful call: the response and its CloudTrail `responseElements` (secrets hidden).
pub(crate) struct Success {
    pub(crate) response: Response,
    pub(crate) response_elements: Value,
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

// ---- IAM authorization -------------------------------------------------------------------

/// Global condition keys of a role session's request (research aws-iam.md §1, §3).
fn base_context(caller: &Caller, now: OffsetDateTime) -> RequestContext {
    let session = &caller.session;
    let mut ctx = RequestContext::new()
        .with("aws:userid", session.principal_id())
        .with("aws:PrincipalArn", session.role_arn.clone())
        .with("aws:PrincipalAccount", session.account())
        .with("aws:PrincipalType", "AssumedRole")
        .with("aws:RequestedRegion", caller.region.clone())
        // The real endpoints are HTTPS only.
        .with("aws:SecureTransport", "true")
        .with("aws:CurrentTime", iso8601(now))
        .with("aws:EpochTime", now.unix_timestamp().to_string())
        .with("aws:TokenIssueTime", iso8601(session.issued_at));
    // `aws:username` exists for IAM users only, never for a role session.
    if let Some(source) = &session.source_identity {
        ctx.set("aws:SourceIdentity", source.clone());
    }
    ctx
}

/// Every (action, resource) pair must be allowed; the first that is not decides the error:
/// 403 `AccessDenied` on the query protocol (observed, brainly/terraform-provider-redshift#46,
/// aws-toolkit-jetbrains#3297), `AccessDeniedException` on JSON services, with IAM's
/// current message (research aws-iam.md §4). A revoked session is denied explicitly.
fn authorize(
    state: &EmulatorState,
    caller: &Caller,
    checks: &[(&str, String)],
    ctx: &RequestContext,
    protocol: Protocol,
) -> Result<(), ApiError> {
    let policies = state
        .policies
        .get(&caller.session.role_arn)
        .map(std::slice::from_ref)
        .unwrap_or(&[]);
    for (action, resource) in checks {
        let decision = if caller.session.revoked {
            Decision::ExplicitDeny
        } else {
            iam::evaluate(policies, action, resource, ctx)
        };
        let reason = match decision {
            Decision::Allow => continue,
            Decision::ImplicitDeny => {
                format!("because no identity-based policy allows the {action} action")
            }
            Decision::ExplicitDeny => {
                "with an explicit deny in an identity-based policy".to_owned()
            }
        };
        let code = match protocol {
            Protocol::Query => "AccessDenied",
            Protocol::Json11 | Protocol::RestJson => "AccessDeniedException",
        };
        return Err(ApiError::forbidden(
            code,
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource} {reason}",
                caller.session.assumed_role_arn()
            ),
        ));
    }
    Ok(())
}

// ---- GetClusterCredentials[WithIAM] -----------------------------------------------------

/// Handles both provisioned-cluster operations; `params` is the decoded form body.
pub(crate) async fn get_cluster_credentials(
    state: &EmulatorState,
    caller: &Caller,
    operation: ClusterOperation,
    params: &[(String, String)],
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Success, ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    // 1. Presence and types (needed to build the request context).
    let duration_sent = match param("DurationSeconds") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            invalid_parameter(format!("DurationSeconds must be an integer, not {text:?}"))
        })?),
    };
    let db_name = param("DbName");
    let (db_user, auto_create, groups) = match operation {
        ClusterOperation::GetClusterCredentials => {
            let db_user = param("DbUser")
                .ok_or_else(|| ApiError::bad_request("MissingParameter", "DbUser is required"))?;
            let auto_create = match param("AutoCreate") {
                None => false,
                Some(text) if text.eq_ignore_ascii_case("true") => true,
                Some(text) if text.eq_ignore_ascii_case("false") => false,
                Some(_) => return Err(invalid_parameter("AutoCreate must be true or false")),
            };
            (Some(db_user), auto_create, db_groups(params)?)
        }
        ClusterOperation::GetClusterCredentialsWithIam => (None, true, Vec::new()),
    };
    // The cluster named in the resource ARNs. A custom domain is resolved first: its ARN
    // needs the cluster identifier.
    let cluster_name = match (param("ClusterIdentifier"), param("CustomDomainName")) {
        (Some(id), _) => id.to_owned(),
        (None, Some(domain)) => find_by_domain(&state.clusters, domain, &caller.region)
            .map(|t| t.id.name.clone())
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

    // 2. Authorization, before the values are checked and before the cluster lookup: a
    //    request for another account's cluster is AccessDenied, not ClusterNotFound
    //    (research aws-iam.md §1; the ARN carries DbUser exactly as passed).
    let account = caller.session.account().to_owned();
    let arn = |kind: &str, name: &str| {
        format!(
            "arn:aws:redshift:{}:{account}:{kind}:{cluster_name}/{name}",
            caller.region
        )
    };
    let mut ctx = base_context(caller, now);
    if let Some(user) = db_user {
        ctx.set("redshift:DbUser", user);
    }
    if let Some(db) = db_name {
        ctx.set("redshift:DbName", db);
    }
    if let Some(duration) = duration_sent {
        ctx.set("redshift:DurationSeconds", duration.to_string());
    }
    let mut checks: Vec<(&str, String)> = Vec::new();
    match (operation, db_user) {
        (ClusterOperation::GetClusterCredentials, Some(user)) => {
            checks.push(("redshift:GetClusterCredentials", arn("dbuser", user)));
            if let Some(db) = db_name {
                checks.push(("redshift:GetClusterCredentials", arn("dbname", db)));
            }
            if auto_create {
                checks.push(("redshift:CreateClusterUser", arn("dbuser", user)));
            }
            for group in &groups {
                checks.push(("redshift:JoinGroup", arn("dbgroup", group)));
            }
        }
        _ => {
            // WithIAM: the dbname resource; without DbName "access to all databases is
            // allowed", which the emulator checks as the dbname `*` (INFERRED).
            checks.push((
                "redshift:GetClusterCredentialsWithIAM",
                arn("dbname", db_name.unwrap_or("*")),
            ));
        }
    }
    authorize(state, caller, &checks, &ctx, Protocol::Query)?;

    // 3. The documented rules of the values (research aws-iam.md §5).
    if let Some(user) = db_user {
        validate_db_user(user).map_err(invalid_parameter)?;
    }
    if let Some(db) = db_name {
        validate_db_name(db).map_err(invalid_parameter)?;
    }
    for group in &groups {
        validate_db_group(group).map_err(invalid_parameter)?;
    }
    let duration = duration_sent.unwrap_or(DEFAULT_DURATION_SECS);
    if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration) {
        return Err(invalid_parameter(format!(
            "DurationSeconds must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS}"
        )));
    }

    // 4. The cluster.
    let target = state
        .clusters
        .iter()
        .find(|c| c.id.name == cluster_name && c.region == caller.region)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ClusterNotFound",
                format!("Cluster {cluster_name} not found."),
            )
        })?;

    // 5. The user; created only with AutoCreate (and for IAM-derived users).
    let user = match (operation, db_user) {
        (ClusterOperation::GetClusterCredentials, Some(user)) if auto_create => {
            format!("IAMA:{user}")
        }
        (ClusterOperation::GetClusterCredentials, Some(user)) => format!("IAM:{user}"),
        _ => iam_role_user(caller).map_err(invalid_parameter)?,
    };
    if auto_create {
        create_user_if_missing(target, &user).await?;
    }

    // 6. A new credential.
    let expiration = state.db_credential_expiration(now, duration);
    let password = issue(
        state,
        caller,
        "cluster",
        CredentialRequest {
            target: target.id.clone(),
            user: user.clone(),
            db_name: db_name.map(str::to_owned),
            groups,
            issued_at: now,
            expiration,
            request_id: request_id.to_owned(),
        },
    );

    let (root, extra, elements) = match operation {
        ClusterOperation::GetClusterCredentials => (
            "GetClusterCredentials",
            String::new(),
            json!({"dbUser": user, "dbPassword": HIDDEN, "expiration": iso8601(expiration)}),
        ),
        ClusterOperation::GetClusterCredentialsWithIam => {
            let refresh = iso8601(next_refresh(now, duration));
            (
                "GetClusterCredentialsWithIAM",
                format!("<NextRefreshTime>{refresh}</NextRefreshTime>"),
                json!({
                    "dbUser": user, "dbPassword": HIDDEN, "expiration": iso8601(expiration),
                    "nextRefreshTime": refresh,
                }),
            )
        }
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
    Ok(Success {
        response: ([(header::CONTENT_TYPE, "text/xml")], body).into_response(),
        response_elements: elements,
    })
}

// ---- serverless GetCredentials -----------------------------------------------------------

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
    request_id: &str,
    now: OffsetDateTime,
) -> Result<Success, ApiError> {
    let input: GetCredentialsInput = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("SerializationException", format!("invalid JSON body: {e}"))
    })?;
    let not_found =
        |what: String| ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", what);
    // The resource ARN names the workgroup by ID, so the workgroup is resolved first.
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
                .find(|w| &w.id.name == name && w.region == caller.region)
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
    let workgroup_arn = format!(
        "arn:aws:redshift-serverless:{}:{}:workgroup/{}",
        caller.region,
        caller.session.account(),
        target.workgroup_id.as_deref().unwrap_or_default()
    );
    let ctx = base_context(caller, now);
    authorize(
        state,
        caller,
        &[("redshift-serverless:GetCredentials", workgroup_arn)],
        &ctx,
        Protocol::Json11,
    )?;

    if let Some(db_name) = &input.db_name {
        validate_db_name(db_name).map_err(serverless_validation)?;
    }
    let duration = input.duration_seconds.unwrap_or(DEFAULT_DURATION_SECS);
    if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&duration) {
        return Err(serverless_validation(format!(
            "durationSeconds must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS}"
        )));
    }

    let user = iam_role_user(caller).map_err(serverless_validation)?;
    create_user_if_missing(target, &user).await?;
    let expiration = state.db_credential_expiration(now, duration);
    let password = issue(
        state,
        caller,
        "serverless",
        CredentialRequest {
            target: target.id.clone(),
            user: user.clone(),
            db_name: input.db_name.clone(),
            groups: Vec::new(),
            issued_at: now,
            expiration,
            request_id: request_id.to_owned(),
        },
    );
    let refresh = next_refresh(now, duration).unix_timestamp();
    let body = json!({
        "dbUser": user,
        "dbPassword": password.expose_secret(),
        "expiration": expiration.unix_timestamp(),
        "nextRefreshTime": refresh,
    });
    Ok(Success {
        response: (
            [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
            body.to_string(),
        )
            .into_response(),
        response_elements: json!({
            "dbUser": user,
            "dbPassword": HIDDEN,
            "expiration": expiration.unix_timestamp(),
            "nextRefreshTime": refresh,
        }),
    })
}

/// Creates the database user `user` of `target` unless it exists.
async fn create_user_if_missing(target: &Target, user: &str) -> Result<(), ApiError> {
    target
        .db
        .create_user_if_missing(user)
        .await
        .map_err(|e| internal(&e))
}

/// Records `request`'s new credential (so its stand-in accepts it) and returns its
/// password; `what` names the API family in the log line.
fn issue(
    state: &EmulatorState,
    caller: &Caller,
    what: &str,
    request: CredentialRequest,
) -> SecretString {
    tracing::debug!(
        target = %request.target,
        user = %request.user,
        source_identity = caller.session.source_identity.as_deref().unwrap_or(""),
        "issuing {what} credentials"
    );
    state.issued.issue(request)
}

fn find_by_domain<'t>(targets: &'t [Target], domain: &str, region: &str) -> Option<&'t Target> {
    targets.iter().find(|t| {
        t.region == region
            && t.custom_domain_name
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
    })
}

/// `DbGroups.DbGroup.N` in N order (values are checked after authorization).
fn db_groups(params: &[(String, String)]) -> Result<Vec<String>, ApiError> {
    let mut numbered: Vec<(u32, &str)> = Vec::new();
    for (key, value) in params {
        if let Some(index) = key.strip_prefix("DbGroups.DbGroup.") {
            let index: u32 = index
                .parse()
                .map_err(|_| invalid_parameter("DbGroups members must be DbGroups.DbGroup.N"))?;
            numbered.push((index, value));
        }
    }
    numbered.sort_unstable();
    Ok(numbered.into_iter().map(|(_, g)| g.to_owned()).collect())
}

/// `IAMR:<role-name>` for the caller's assumed role.
fn iam_role_user(caller: &Caller) -> Result<String, String> {
    let name = role_name(&caller.session.role_arn);
    if name.is_empty() {
        return Err("the caller's role has no name".to_owned());
    }
    Ok(format!("IAMR:{name}"))
}

fn reserved(word: &str) -> bool {
    RESERVED_WORDS.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// The shared rules of DbUser, DbName and DbGroups (API_GetClusterCredentials): 1 to 64
/// characters; letters, digits, underscore, plus sign, period, at sign or hyphen; the first
/// a letter; no colon or slash; not a reserved word.
fn common_rules(what: &str, value: &str, lowercase_only: bool) -> Result<(), String> {
    if !(1..=64).contains(&value.chars().count()) {
        return Err(format!("{what} must be 1 to 64 characters long"));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("{what} must start with a letter"));
    }
    let allowed = |c: char| {
        (c.is_ascii_lowercase() || c.is_ascii_digit() || "_+.@-".contains(c))
            || (!lowercase_only && c.is_ascii_uppercase())
    };
    if !value.chars().all(allowed) {
        let letters = if lowercase_only {
            "lowercase letters"
        } else {
            "letters"
        };
        return Err(format!(
            "{what} may contain only {letters}, digits, underscore, plus sign, period, at sign or hyphen (no colon or slash)"
        ));
    }
    if reserved(value) {
        return Err(format!("{what} must not be a reserved word"));
    }
    Ok(())
}

/// DbUser: the common rules, and not `PUBLIC`.
fn validate_db_user(user: &str) -> Result<(), String> {
    common_rules("DbUser", user, false)?;
    if user.eq_ignore_ascii_case("public") {
        return Err("DbUser must not be PUBLIC".to_owned());
    }
    Ok(())
}

fn validate_db_name(name: &str) -> Result<(), String> {
    common_rules("DbName", name, false)
}

/// DbGroups: the common rules with lowercase letters only.
fn validate_db_group(group: &str) -> Result<(), String> {
    common_rules("DbGroup", group, true)
}

/// Serverless `workgroupName`: 3–64 characters of `[a-z0-9-]`.
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
        assert!(validate_db_user("Alice").is_ok());
        assert!(validate_db_user("a.b+c@d-e_f").is_ok());
        for bad in [
            "", "1alice", "al:ice", "al/ice", "PUBLIC", "public", "al ice", "al\"ice", "_alice",
            "user", "SELECT", "al$ice",
        ] {
            assert!(validate_db_user(bad).is_err(), "accepted {bad:?}");
        }
        assert!(validate_db_user(&"a".repeat(64)).is_ok());
        assert!(validate_db_user(&"a".repeat(65)).is_err());
    }

    #[test]
    fn db_name_and_group_rules() {
        assert!(validate_db_name("dev").is_ok());
        assert!(validate_db_name("Dev_2").is_ok());
        assert!(validate_db_name("public").is_ok());
        assert!(validate_db_name("table").is_err());
        assert!(validate_db_name("dev/x").is_err());
        assert!(validate_db_group("analysts").is_ok());
        assert!(validate_db_group(&"g".repeat(64)).is_ok());
        assert!(validate_db_group(&"g".repeat(65)).is_err());
        assert!(validate_db_group("Analysts").is_err(), "lowercase only");
        assert!(validate_db_group("x\"; DROP").is_err());
        assert!(validate_db_group("group").is_err());
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
        let bad = vec![("DbGroups.DbGroup.x".to_owned(), "g".to_owned())];
        assert!(db_groups(&bad).is_err());
    }
}
