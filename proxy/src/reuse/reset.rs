//! The reset that runs on a kept session before its next client: one round trip.
//!
//! ```text
//! Close 'S' <name>  (one per statement the last client prepared by name) + Sync
//! Query "<session_reset statements, joined with ;>; SELECT pg_catalog.current_schemas(true)"
//! ```
//!
//! Any ErrorResponse, a ReadyForQuery other than idle (`I`), or a temporary schema among
//! `current_schemas(true)` fails the reset, and the session is closed instead of reused.
//! The temporary schema (`pg_temp_<n>`) joins the search path once the session created a
//! temporary table and stays there for the session's life (PostgreSQL `namespace.c`;
//! Redshift "creates temporary tables in a separate, session-specific schema", DG
//! r_CREATE_TABLE_NEW), and Redshift has no `DISCARD TEMP` to drop them: such sessions are
//! not reused. The ParameterStatus messages the reset causes (a setting the last client
//! changed, back to its login value) are returned, so the next client is told the values
//! in force.

use crate::net::framing::{read_message, FramingError};
use crate::net::messages::close::Sync;
use crate::net::messages::{
    Close, DataRow, Decode, Encode, ErrorResponse, ParameterStatus, Query, ReadyForQuery,
};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Largest message the reset accepts (a ParameterStatus, a notice, the schema list).
const MAX_MESSAGE: usize = 64 * 1024;

/// The check appended to the statements: which schemas the session searches, the
/// implicit ones (its temporary schema, if it has one) included.
pub const SCHEMA_CHECK: &str = "SELECT pg_catalog.current_schemas(true)";

/// Why a reset failed; `reason` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("reset statement failed: {sqlstate}: {message}")]
    Statement { sqlstate: String, message: String },
    #[error("the session holds temporary tables (schema {schema})")]
    TemporaryTables { schema: String },
    #[error("unexpected answer to the reset: {0}")]
    Protocol(String),
    #[error("connection lost during the reset: {0}")]
    Io(#[from] FramingError),
}

impl ResetError {
    pub fn reason(&self) -> &'static str {
        match self {
            ResetError::TemporaryTables { .. } => "temporary_tables",
            ResetError::Io(_) => "upstream_closed",
            ResetError::Statement { .. } | ResetError::Protocol(_) => "reset_failed",
        }
    }
}

/// The bytes of the reset: Close for each statement name (and a Sync), then the query.
pub fn reset_messages(statements: &[Vec<u8>], reset: &[String]) -> BytesMut {
    let mut out = BytesMut::new();
    for name in statements {
        Close::statement(name).encode_into(&mut out);
    }
    if !statements.is_empty() {
        Sync.encode_into(&mut out);
    }
    let mut sql: String = reset
        .iter()
        .flat_map(|s| [s.trim().trim_end_matches(';'), "; "])
        .collect();
    sql.push_str(SCHEMA_CHECK);
    Query { sql: &sql }.encode_into(&mut out);
    out
}

/// Runs the reset on `s`; the ParameterStatus values it reported, in order.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    statements: &[Vec<u8>],
    reset: &[String],
) -> Result<Vec<(String, String)>, ResetError> {
    let wire = reset_messages(statements, reset);
    s.write_all(&wire).await.map_err(FramingError::Io)?;
    s.flush().await.map_err(FramingError::Io)?;
    let mut readies = if statements.is_empty() { 1 } else { 2 };
    let mut reported = Vec::new();
    let mut temp_schema = None;
    loop {
        let msg = read_message(s, MAX_MESSAGE).await?;
        match msg.tag {
            ErrorResponse::TAG => {
                let e = ErrorResponse::decode(&msg.body)
                    .map_err(|e| ResetError::Protocol(e.to_string()))?;
                return Err(ResetError::Statement {
                    sqlstate: e.code,
                    message: e.message,
                });
            }
            ParameterStatus::TAG => reported.push(parameter(&msg.body)?),
            DataRow::TAG => temp_schema = temp_schema.or(temporary_schema(&msg.body)?),
            ReadyForQuery::TAG => {
                let ready = ReadyForQuery::decode(&msg.body)
                    .map_err(|e| ResetError::Protocol(e.to_string()))?;
                if ready.status != ReadyForQuery::IDLE {
                    return Err(ResetError::Protocol(
                        "the session is not idle after the reset".into(),
                    ));
                }
                readies -= 1;
                if readies == 0 {
                    break;
                }
            }
            // CloseComplete, RowDescription, CommandComplete, notices.
            b'3' | b'T' | b'C' | b'N' => {}
            other => {
                return Err(ResetError::Protocol(format!(
                    "unexpected message '{}'",
                    other as char
                )))
            }
        }
    }
    match temp_schema {
        Some(schema) => Err(ResetError::TemporaryTables { schema }),
        None => Ok(reported),
    }
}

fn parameter(body: &[u8]) -> Result<(String, String), ResetError> {
    let ParameterStatus { name, value } =
        ParameterStatus::decode(body).map_err(|e| ResetError::Protocol(e.to_string()))?;
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// The temporary schema in the one-column DataRow of `current_schemas(true)` (text
/// format: `{pg_temp_3,pg_catalog,public}`, names with special characters quoted).
fn temporary_schema(body: &[u8]) -> Result<Option<String>, ResetError> {
    let bad = |e: &dyn std::fmt::Display| ResetError::Protocol(e.to_string());
    let row = DataRow::decode(body).map_err(|e| bad(&e))?;
    let value = match row.columns[..] {
        [Some(value)] => value,
        [None] => return Ok(None),
        _ => return Err(bad(&"a DataRow without exactly one column")),
    };
    let text = String::from_utf8_lossy(value);
    Ok(text
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|name| name.trim().trim_matches('"'))
        .find(|name| name.starts_with("pg_temp_"))
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    use crate::net::framing::message as msg;

    fn schemas(text: &str) -> Vec<u8> {
        let mut body = vec![0, 1];
        body.extend_from_slice(&(text.len() as i32).to_be_bytes());
        body.extend_from_slice(text.as_bytes());
        msg(b'D', &body)
    }

    #[test]
    fn closes_each_statement_then_queries_once() {
        let wire = reset_messages(
            &[b"S_1".to_vec(), b"S_2".to_vec()],
            &[
                "SET SESSION AUTHORIZATION DEFAULT".into(),
                "RESET ALL;".into(),
            ],
        );
        let expected = [
            msg(b'C', b"SS_1\0"),
            msg(b'C', b"SS_2\0"),
            msg(b'S', b""),
            msg(
                b'Q',
                b"SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
                  SELECT pg_catalog.current_schemas(true)\0",
            ),
        ]
        .concat();
        assert_eq!(&wire[..], &expected[..]);
        assert_eq!(
            &reset_messages(&[], &[])[..],
            &msg(b'Q', b"SELECT pg_catalog.current_schemas(true)\0")[..]
        );
    }

    /// Plays the server: reads what the reset sends, answers with `answer`.
    async fn against(answer: Vec<u8>, closes: usize) -> Result<Vec<(String, String)>, ResetError> {
        let (mut near, mut far) = tokio::io::duplex(1 << 16);
        let names: Vec<Vec<u8>> = (0..closes).map(|i| format!("s{i}").into_bytes()).collect();
        let sent = reset_messages(&names, &["RESET ALL".into()]).len();
        let server = tokio::spawn(async move {
            let mut got = vec![0u8; sent];
            far.read_exact(&mut got).await.unwrap();
            // Then the server hangs up: an answer cut short ends in end of stream.
            far.write_all(&answer).await.unwrap();
        });
        let result = run(&mut near, &names, &["RESET ALL".into()]).await;
        server.await.unwrap();
        result
    }

    fn query_answer(schema_list: &str) -> Vec<u8> {
        [
            msg(b'S', b"application_name\0psql\0"),
            msg(b'C', b"RESET\0"),
            msg(
                b'T',
                b"\0\x01current_schemas\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ),
            schemas(schema_list),
            msg(b'C', b"SELECT 1\0"),
            msg(b'Z', b"I"),
        ]
        .concat()
    }

    #[tokio::test]
    async fn a_clean_session_reports_its_restored_parameters() {
        let reported = against(query_answer("{pg_catalog,public}"), 0)
            .await
            .unwrap();
        assert_eq!(reported, [("application_name".into(), "psql".into())]);
        let closes = [msg(b'3', b""), msg(b'3', b""), msg(b'Z', b"I")].concat();
        let answer = [closes, query_answer("{pg_catalog,\"my schema\"}")].concat();
        assert!(against(answer, 2).await.is_ok());
    }

    #[tokio::test]
    async fn temporary_tables_fail_the_reset() {
        let e = against(query_answer("{pg_temp_3,pg_catalog,public}"), 0)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "temporary_tables");
        assert!(e.to_string().contains("pg_temp_3"));
    }

    #[tokio::test]
    async fn an_error_or_a_transaction_fails_the_reset() {
        let error = [
            msg(
                b'E',
                b"SERROR\0C42601\0Msyntax error at or near \"DISCARD\"\0\0",
            ),
            msg(b'Z', b"I"),
        ]
        .concat();
        let e = against(error, 0).await.unwrap_err();
        assert_eq!(e.reason(), "reset_failed");
        assert!(e.to_string().contains("42601"));
        let in_transaction = [msg(b'C', b"RESET\0"), msg(b'Z', b"T")].concat();
        assert_eq!(
            against(in_transaction, 0).await.unwrap_err().reason(),
            "reset_failed"
        );
        let cut = msg(b'C', b"RESET\0");
        assert_eq!(
            against(cut, 0).await.unwrap_err().reason(),
            "upstream_closed"
        );
    }
}
