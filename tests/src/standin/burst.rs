//! The startup burst after AuthenticationOk, as Redshift sends it (research
//! redshift-server.md §6, from Redshift JDBC debug logs in jdbc#6, jdbc#38, jdbc#39 and
//! jdbc#115): PostgreSQL's ParameterStatus messages, with Redshift's `server_version`
//! (`8.0.2`, which drivers parse: redshift_connector fails on PostgreSQL's
//! `15.x (Debian ...)`), Redshift's own `padb_version` / `padb_revision` (asyncpg
//! recognises Redshift by the latter) and, when the client asked with
//! `client_protocol_version`, `server_protocol_version` just before BackendKeyData.

use super::protocol::{parameter_status, Message};

/// What Redshift reports as `server_version` (every capture shows it).
pub(crate) const SERVER_VERSION: &str = "8.0.2";
/// Values seen in captures (jdbc#115).
const PADB_VERSION: &str = "1.0.63269";
const PADB_REVISION: &str = "17187a5367";
/// The level the stand-in answers: it relays PostgreSQL's plain RowDescriptions, i.e.
/// level 0 (BASE_SERVER); a higher level would make every driver parse extra per-column
/// fields that are not there (research §5). Redshift answers min(requested, supported).
const SERVER_PROTOCOL_VERSION: &str = "0";

/// The wire bytes of PostgreSQL's burst (`S`…, `K`, `Z`) turned into Redshift's.
pub(crate) fn redshift_burst(pg: &[Message], client_protocol_version: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for message in pg {
        if message.tag == b'K' {
            out.extend(parameter_status("padb_version", PADB_VERSION));
            out.extend(parameter_status("padb_revision", PADB_REVISION));
            if client_protocol_version.is_some() {
                out.extend(parameter_status(
                    "server_protocol_version",
                    SERVER_PROTOCOL_VERSION,
                ));
            }
        }
        if message.tag == b'S' && message.body.starts_with(b"server_version\0") {
            out.extend(parameter_status("server_version", SERVER_VERSION));
            continue;
        }
        out.extend(message.encode());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, value: &str) -> Message {
        let bytes = parameter_status(name, value);
        Message {
            tag: bytes[0],
            body: bytes[5..].to_vec(),
        }
    }

    #[test]
    fn reports_redshifts_version_and_protocol_level_before_the_key() {
        let pg = [
            status("server_version", "15.18 (Debian 15.18-0+deb12u1)"),
            status("client_encoding", "UTF8"),
            Message {
                tag: b'K',
                body: vec![0; 8],
            },
        ];
        let out = redshift_burst(&pg, Some("2"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("server_version\08.0.2\0"), "{text:?}");
        assert!(!text.contains("Debian"));
        let key = out.iter().rposition(|b| *b == b'K').unwrap();
        let level = text.find("server_protocol_version\0\x30\0").unwrap();
        assert!(level < key);
        let without = String::from_utf8_lossy(&redshift_burst(&pg, None)).into_owned();
        assert!(!without.contains("server_protocol_version"));
    }
}
