//! One CloudTrail-style record per API call (research aws-iam.md §6): kept in memory, served
//! at `GET /_emulator/cloudtrail`, and appended as JSON lines to a file when configured.
//!
//! Shape of the management guide's examples: `eventVersion` 1.08, `userIdentity`,
//! `eventTime`, `eventSource`, `eventName`, `awsRegion`, `sourceIPAddress`, `userAgent`,
//! camelCase `requestParameters`, `responseElements`, `errorCode`/`errorMessage` when the
//! call failed, `requestID` (= the API's RequestId), a separate `eventID`, `readOnly`,
//! `eventType`, `managementEvent`, `recipientAccountId`, `eventCategory`. Secrets are never
//! written: passwords, secret keys and session tokens appear as
//! `HIDDEN_DUE_TO_SECURITY_REASONS`, as Redshift Serverless redacts them. A real
//! GetClusterCredentials record is UNCONFIRMED; the fields are the API members, by analogy.

use super::sessions::Session;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use time::OffsetDateTime;

/// CloudTrail's placeholder for redacted values.
pub(crate) const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

#[derive(Debug)]
pub(crate) struct CloudTrail {
    records: Mutex<Vec<Value>>,
    file: Option<Mutex<File>>,
}

impl CloudTrail {
    pub(crate) fn new(path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(CloudTrail {
            records: Mutex::new(Vec::new()),
            file,
        })
    }

    pub(crate) fn record(&self, record: Value) {
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(err) = writeln!(file, "{record}") {
                tracing::warn!(error = %err, "cannot append to the CloudTrail file");
            }
        }
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }

    pub(crate) fn all(&self) -> Vec<Value> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `userIdentity` of a role session (AssumedRole) with its source identity.
pub(crate) fn user_identity(session: &Session) -> Value {
    let role_name = super::roles_anywhere::role_name(&session.role_arn);
    let mut context = json!({
        "sessionIssuer": {
            "type": "Role",
            "principalId": session.role_id(),
            "arn": session.role_arn,
            "accountId": session.account(),
            "userName": role_name,
        },
        "attributes": {
            "creationDate": super::iso8601(session.issued_at),
            "mfaAuthenticated": "false",
        },
    });
    if let Some(source) = &session.source_identity {
        context["sourceIdentity"] = json!(source);
    }
    json!({
        "type": "AssumedRole",
        "principalId": session.principal_id(),
        "arn": session.assumed_role_arn(),
        "accountId": session.account(),
        "accessKeyId": session.access_key_id,
        "sessionContext": context,
    })
}

/// Everything a record is made of.
pub(crate) struct Event<'a> {
    pub(crate) event_source: &'a str,
    pub(crate) event_name: &'a str,
    pub(crate) region: &'a str,
    pub(crate) source_ip: String,
    pub(crate) user_agent: String,
    /// `None`: the caller was not authenticated (`{"type": "Unknown"}`).
    pub(crate) session: Option<&'a Session>,
    pub(crate) account: &'a str,
    pub(crate) request_parameters: Value,
    pub(crate) response_elements: Value,
    pub(crate) error: Option<(&'a str, &'a str)>,
    pub(crate) request_id: &'a str,
    pub(crate) time: OffsetDateTime,
}

impl Event<'_> {
    pub(crate) fn to_json(&self) -> Value {
        let user_identity = match self.session {
            Some(session) => user_identity(session),
            None => json!({"type": "Unknown"}),
        };
        let mut record = json!({
            "eventVersion": "1.08",
            "userIdentity": user_identity,
            "eventTime": super::iso8601(self.time),
            "eventSource": self.event_source,
            "eventName": self.event_name,
            "awsRegion": self.region,
            "sourceIPAddress": self.source_ip,
            "userAgent": self.user_agent,
            "requestParameters": self.request_parameters,
            "responseElements": self.response_elements,
            "requestID": self.request_id,
            "eventID": super::new_request_id(),
            "readOnly": false,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.account,
            "eventCategory": "Management",
        });
        if let Some((code, message)) = self.error {
            record["errorCode"] = json!(code);
            record["errorMessage"] = json!(message);
        }
        record
    }
}

/// `requestParameters` of a query-protocol call: the form members in camelCase, without
/// `Action`/`Version`; `DbGroups.DbGroup.N` as the list `dbGroups`.
pub(crate) fn query_parameters(params: &[(String, String)]) -> Value {
    let mut out = serde_json::Map::new();
    let mut groups: Vec<(u32, String)> = Vec::new();
    for (key, value) in params {
        if key == "Action" || key == "Version" {
            continue;
        }
        if let Some(n) = key.strip_prefix("DbGroups.DbGroup.") {
            groups.push((n.parse().unwrap_or(u32::MAX), value.clone()));
            continue;
        }
        let mut name = key.clone();
        if let Some(first) = name.get_mut(0..1) {
            first.make_ascii_lowercase();
        }
        let value = match key.as_str() {
            "DurationSeconds" => value.parse::<i64>().map_or(json!(value), |n| json!(n)),
            "AutoCreate" => match value.to_ascii_lowercase().as_str() {
                "true" => json!(true),
                "false" => json!(false),
                _ => json!(value),
            },
            _ => json!(value),
        };
        out.insert(name, value);
    }
    if !groups.is_empty() {
        groups.sort();
        out.insert(
            "dbGroups".to_owned(),
            json!(groups.into_iter().map(|(_, g)| g).collect::<Vec<_>>()),
        );
    }
    Value::Object(out)
}

/// `requestParameters` of a JSON call: its members (none of the emulated operations takes
/// a secret as input).
pub(crate) fn json_parameters(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_camel_case_with_typed_values() {
        let params: Vec<(String, String)> = [
            ("Action", "GetClusterCredentials"),
            ("Version", "2012-12-01"),
            ("ClusterIdentifier", "c"),
            ("DbUser", "alice"),
            ("DurationSeconds", "900"),
            ("AutoCreate", "true"),
            ("DbGroups.DbGroup.2", "b"),
            ("DbGroups.DbGroup.1", "a"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            query_parameters(&params),
            json!({
                "clusterIdentifier": "c", "dbUser": "alice", "durationSeconds": 900,
                "autoCreate": true, "dbGroups": ["a", "b"]
            })
        );
    }
}
