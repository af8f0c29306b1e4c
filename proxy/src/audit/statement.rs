//! Statement records (`[audit] statements`): one JSON line per statement a client sends,
//! naming the session and the person behind it, next to the connection records.
//!
//! The relay finds the statements ([`StatementTracker`](crate::relay::StatementTracker));
//! [`StatementAudit`] turns each into a record and queues it without ever waiting: the
//! statement queue is bounded on its own (`statement_queue_capacity`), a full one drops
//! the record and counts it. Bind parameter values are never read, so no record can hold
//! one.

use super::{rfc3339, AuditLog, AuditRecord};
use crate::relay::{Statement, StatementSink};
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// Who a session's statements belong to, as its connection record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementContext {
    pub session_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// The certificate fields that identify a person (the connection record has the rest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateIdentity {
    pub subject: String,
    pub fingerprint_sha256: String,
}

impl StatementContext {
    /// The context of the session `record` describes (after login).
    pub fn of(record: &AuditRecord) -> Self {
        StatementContext {
            session_id: record.session_id.clone(),
            client_certificate: record
                .client_certificate
                .as_ref()
                .map(|c| CertificateIdentity {
                    subject: c.subject.clone(),
                    fingerprint_sha256: c.fingerprint_sha256.clone(),
                }),
            local_user: record.local_user.clone(),
            db_user: record.db_user.clone(),
            target: record.target.clone(),
            database: record.database.clone(),
        }
    }
}

/// One statement record.
#[derive(Debug, Serialize)]
struct StatementRecord<'a> {
    /// `"statement"`: tells these lines from connection records (which have no `record`).
    record: &'static str,
    time: String,
    /// `query`, `parse` or `execute`.
    statement: &'static str,
    #[serde(flatten)]
    context: &'a StatementContext,
    /// Parse: the statement's name; Execute: the statement its portal was bound to.
    /// Empty for the unnamed statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    statement_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    portal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    /// Bytes of the whole text.
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    /// SHA-256 (hex) of the whole text; for Execute, of the text of its statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// Execute: how many parameter values the portal was bound with (never the values).
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<u16>,
}

/// Sends a session's statements to the audit log.
pub struct StatementAudit {
    log: Arc<AuditLog>,
    context: StatementContext,
}

impl StatementAudit {
    pub fn new(log: Arc<AuditLog>, context: StatementContext) -> Self {
        StatementAudit { log, context }
    }
}

impl StatementSink for StatementAudit {
    fn statement(&mut self, statement: Statement<'_>) {
        let mut record = StatementRecord {
            record: "statement",
            time: rfc3339(SystemTime::now()),
            statement: "",
            context: &self.context,
            statement_name: None,
            portal: None,
            text: None,
            truncated: None,
            length: None,
            sha256: None,
            parameters: None,
        };
        let text = match statement {
            Statement::Query { text } => {
                record.statement = "query";
                Some(text)
            }
            Statement::Parse { name, text } => {
                record.statement = "parse";
                record.statement_name = Some(lossy(name));
                Some(text)
            }
            Statement::Execute {
                portal,
                statement,
                sha256,
                parameters,
            } => {
                record.statement = "execute";
                record.portal = Some(lossy(portal));
                record.statement_name = statement.map(lossy);
                record.sha256 = sha256.map(hex::encode);
                record.parameters = parameters;
                None
            }
        };
        if let Some(text) = text {
            record.text = Some(&text.text);
            record.truncated = Some(text.truncated);
            record.length = Some(text.length);
            record.sha256 = Some(hex::encode(text.sha256));
        }
        match serde_json::to_string(&record) {
            Ok(line) => self.log.statement(line),
            // Cannot happen for this plain data type; counted as a drop rather than a panic.
            Err(_) => self.log.statement_not_queued(),
        }
    }
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Destination;
    use crate::relay::StatementText;

    #[test]
    fn records_carry_the_identity_and_tell_themselves_from_connection_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::start(Destination::File(path.clone()), 4).unwrap());
        let context = StatementContext {
            session_id: "s1".into(),
            client_certificate: Some(CertificateIdentity {
                subject: "CN=alice".into(),
                fingerprint_sha256: "ab".repeat(32),
            }),
            local_user: None,
            db_user: Some("IAMR:RedshiftAccess".into()),
            target: Some("serverless".into()),
            database: Some("dev".into()),
        };
        let mut audit = StatementAudit::new(log.clone(), context);
        let text = StatementText {
            text: "select 1".into(),
            truncated: false,
            length: 8,
            sha256: [7; 32],
        };
        audit.statement(Statement::Query { text: &text });
        audit.statement(Statement::Execute {
            portal: b"",
            statement: Some(b"s1"),
            sha256: Some(&[7; 32]),
            parameters: Some(1),
        });
        log.close();
        assert_eq!(log.statements_written(), 2);
        assert_eq!(log.written(), 0, "connection records are counted apart");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let query = &lines[0];
        assert_eq!(query["record"], "statement");
        assert_eq!(query["statement"], "query");
        assert_eq!(query["session_id"], "s1");
        assert_eq!(query["client_certificate"]["subject"], "CN=alice");
        assert_eq!(query["db_user"], "IAMR:RedshiftAccess");
        assert_eq!(query["text"], "select 1");
        assert_eq!(query["truncated"], false);
        assert_eq!(query["sha256"], "07".repeat(32));
        let execute = &lines[1];
        assert_eq!(execute["statement"], "execute");
        assert_eq!(execute["portal"], "");
        assert_eq!(execute["statement_name"], "s1");
        assert_eq!(execute["parameters"], 1);
        assert!(execute.get("text").is_none());
    }
}
