//! PostgreSQL wire messages as the stand-in reads and writes them.

use tokio::io::{AsyncRead, AsyncReadExt};

/// `MAX_STARTUP_PACKET_LENGTH` of PostgreSQL.
pub(crate) const MAX_STARTUP_PACKET: usize = 10_000;
/// Largest message accepted from a client before login completes (password answers).
pub(crate) const MAX_LOGIN_MESSAGE: usize = 8 * 1024;

pub(crate) const SSL_REQUEST_CODE: u32 = 80_877_103;
pub(crate) const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub(crate) const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// The first packet of a connection (or the one after SSLRequest / GSSENCRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartupPacket {
    SslRequest,
    GssEncRequest,
    /// CancelRequest: the raw packet (forwarded as is) and its pid.
    Cancel {
        raw: Vec<u8>,
        pid: u32,
    },
    Startup {
        major: u16,
        minor: u16,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid length in startup packet")]
    BadLength,
    #[error("invalid startup packet layout: {0}")]
    BadLayout(&'static str),
    #[error("message of {0} bytes is too long")]
    TooLong(usize),
}

/// Reads one untyped startup-phase packet (Int32 length, Int32 code, body).
pub(crate) async fn read_startup_packet<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<StartupPacket, ProtocolError> {
    let len = s.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::BadLength);
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST_CODE if len == 8 => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE if len == 8 => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE if len == 16 => {
            let pid = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            let mut raw = (len as u32).to_be_bytes().to_vec();
            raw.extend_from_slice(&body);
            Ok(StartupPacket::Cancel { raw, pid })
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            Err(ProtocolError::BadLength)
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            Ok(StartupPacket::Startup {
                major,
                minor,
                params: parse_params(&body[4..])?,
            })
        }
    }
}

/// NUL-terminated name/value pairs, then a final NUL.
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let end = body
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::BadLayout("missing terminator"))?;
        if end == 0 {
            if body.len() != 1 {
                return Err(ProtocolError::BadLayout("bytes after the terminator"));
            }
            return Ok(params);
        }
        let name = String::from_utf8_lossy(&body[..end]).into_owned();
        body = &body[end + 1..];
        let end = body
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::BadLayout("parameter without a value"))?;
        let value = String::from_utf8_lossy(&body[..end]).into_owned();
        body = &body[end + 1..];
        params.push((name, value));
    }
}

/// A typed message: tag and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) tag: u8,
    pub(crate) body: Vec<u8>,
}

impl Message {
    /// The message as it goes on the wire.
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode(self.tag, &self.body)
    }
}

/// Reads one typed message whose body is at most `max` bytes.
pub(crate) async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    max: usize,
) -> Result<Message, ProtocolError> {
    let tag = s.read_u8().await?;
    let len = s.read_u32().await? as usize;
    if len < 4 {
        return Err(ProtocolError::BadLength);
    }
    if len - 4 > max {
        return Err(ProtocolError::TooLong(len - 4));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok(Message { tag, body })
}

pub(crate) fn encode(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// StartupMessage (protocol 3.0) with `params`.
pub(crate) fn startup_message(params: &[(String, String)]) -> Vec<u8> {
    crate::adversary::startup_text(crate::adversary::PROTOCOL_3_0, params)
}

/// AuthenticationOk.
pub(crate) fn auth_ok() -> Vec<u8> {
    encode(b'R', &0u32.to_be_bytes())
}

/// AuthenticationMD5Password with `salt`.
pub(crate) fn auth_md5(salt: [u8; 4]) -> Vec<u8> {
    let mut body = 5u32.to_be_bytes().to_vec();
    body.extend_from_slice(&salt);
    encode(b'R', &body)
}

/// Redshift's AUTH_REQ_DIGEST (code 13), exactly
/// `R len 13 algo saltLen salt nonceLen nonce` and nothing else: JDBC reads the fields one
/// after another and ignores `len`, so a trailing byte would put it out of step (research
/// redshift-server.md §1; JDBC ConnectionFactoryImpl 746-756). Algorithm 0 = SHA-256, the
/// only one the drivers implement.
pub(crate) fn auth_digest(salt: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + salt.len() + nonce.len());
    body.extend_from_slice(&13u32.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&(salt.len() as u32).to_be_bytes());
    body.extend_from_slice(salt);
    body.extend_from_slice(&(nonce.len() as u32).to_be_bytes());
    body.extend_from_slice(nonce);
    encode(b'R', &body)
}

/// ParameterStatus.
pub(crate) fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + value.len() + 2);
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    body.push(0);
    encode(b'S', &body)
}

/// An ErrorResponse as Redshift shapes them: fields S, C, M, F, L, R and nothing else — no
/// `V` (non-localised severity), no `D`/`H` (research redshift-server.md §3, from real
/// captures; python#237). PY indexes `C` without a check, so it is always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub file: String,
    pub line: String,
    pub routine: String,
}

/// Build path in Redshift's `F` fields (e.g. python#237:
/// `/home/ec2-user/padb/src/pg/src/backend/libpq/auth.c`).
const PADB_SOURCE: &str = "/home/ec2-user/padb/src/pg/src/backend";

impl ServerError {
    pub(crate) fn fatal(code: &str, message: impl Into<String>) -> Self {
        ServerError {
            severity: "FATAL".to_owned(),
            code: code.to_owned(),
            message: message.into(),
            file: format!("{PADB_SOURCE}/tcop/postgres.c"),
            line: "1".to_owned(),
            routine: "PostgresMain".to_owned(),
        }
    }

    /// FATAL 28000 `password authentication failed for user "<name>"`: Redshift answers a
    /// wrong password with 28000, not PostgreSQL's 28P01 (python-driver#237, jdbc#21).
    pub(crate) fn password_failed(user: &str) -> Self {
        ServerError {
            file: format!("{PADB_SOURCE}/libpq/auth.c"),
            line: "425".to_owned(),
            routine: "auth_failed".to_owned(),
            ..Self::fatal(
                "28000",
                format!("password authentication failed for user \"{user}\""),
            )
        }
    }

    /// FATAL `IAM Authentication token has expired` (jdbc#97). The SQLSTATE is UNCONFIRMED
    /// (research §3: "28000 likely"); 28000 also makes clients treat it as an auth failure.
    pub(crate) fn token_expired() -> Self {
        ServerError {
            file: format!("{PADB_SOURCE}/libpq/auth.c"),
            line: "425".to_owned(),
            routine: "auth_failed".to_owned(),
            ..Self::fatal("28000", "IAM Authentication token has expired")
        }
    }

    /// FATAL 42704 `unrecognized configuration parameter "<name as sent>"`, raised by
    /// `set_config_option` in guc.c (skunk#229, LibPQ.jl#71, sqlalchemy#9494).
    pub(crate) fn unrecognized_parameter(name: &str) -> Self {
        ServerError {
            file: format!("{PADB_SOURCE}/utils/misc/guc.c"),
            line: "23873".to_owned(),
            routine: "set_config_option".to_owned(),
            ..Self::fatal(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            )
        }
    }

    /// The fields of a PostgreSQL ErrorResponse body, kept as Redshift has them (S C M F L
    /// R), with the severity raised to FATAL (the login ends).
    pub(crate) fn from_postgres(body: &[u8]) -> Self {
        let mut error = ServerError::fatal("XX000", "internal error");
        for field in body.split(|&b| b == 0).filter(|f| !f.is_empty()) {
            let value = String::from_utf8_lossy(&field[1..]).into_owned();
            match field[0] {
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'F' => error.file = value,
                b'L' => error.line = value,
                b'R' => error.routine = value,
                _ => {}
            }
        }
        error
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (tag, value) in [
            (b'S', &self.severity),
            (b'C', &self.code),
            (b'M', &self.message),
            (b'F', &self.file),
            (b'L', &self.line),
            (b'R', &self.routine),
        ] {
            body.push(tag);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        encode(b'E', &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn startup_packets_are_classified() {
        let mut ssl: &[u8] = &[0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(
            read_startup_packet(&mut ssl).await.unwrap(),
            StartupPacket::SslRequest
        );
        let packet = startup_message(&[
            ("user".into(), "alice".into()),
            ("database".into(), "dev".into()),
        ]);
        let mut reader = packet.as_slice();
        match read_startup_packet(&mut reader).await.unwrap() {
            StartupPacket::Startup {
                major,
                minor,
                params,
            } => {
                assert_eq!((major, minor), (3, 0));
                assert_eq!(params[1], ("database".to_owned(), "dev".to_owned()));
            }
            other => panic!("{other:?}"),
        }
        let mut cancel: Vec<u8> = vec![0, 0, 0, 16, 4, 210, 22, 46];
        cancel.extend_from_slice(&[0, 0, 0, 7, 1, 2, 3, 4]);
        let mut reader = cancel.as_slice();
        assert_eq!(
            read_startup_packet(&mut reader).await.unwrap(),
            StartupPacket::Cancel {
                raw: cancel.clone(),
                pid: 7
            }
        );
        let mut short: &[u8] = &[0, 0, 0, 4];
        assert!(read_startup_packet(&mut short).await.is_err());
    }

    #[test]
    fn digest_request_has_exactly_the_documented_layout() {
        let salt = [7u8; 32];
        let nonce = [9u8; 16];
        let message = auth_digest(&salt, &nonce);
        assert_eq!(message[0], b'R');
        let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, 4 + 4 + 4 + 4 + 32 + 4 + 16);
        assert_eq!(message.len(), len + 1);
        assert_eq!(&message[5..9], &13u32.to_be_bytes());
        assert_eq!(&message[9..13], &0u32.to_be_bytes());
        assert_eq!(&message[13..17], &32u32.to_be_bytes());
        assert_eq!(&message[49..53], &16u32.to_be_bytes());
    }

    #[test]
    fn errors_carry_redshifts_fields_only() {
        let encoded = ServerError::password_failed("IAMA:alice").encode();
        let fields: Vec<u8> = encoded[5..]
            .split(|&b| b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| f[0])
            .collect();
        assert_eq!(fields, b"SCMFLR");
        let text = String::from_utf8_lossy(&encoded);
        assert!(text.contains("C28000"));
        assert!(text.contains("password authentication failed for user \"IAMA:alice\""));
    }

    #[test]
    fn postgres_errors_keep_code_message_and_location() {
        let body = b"SFATAL\0VFATAL\0C3D000\0Mdatabase \"x\" does not exist\0Fpostinit.c\0L885\0RInitPostgres\0\0";
        let e = ServerError::from_postgres(body);
        assert_eq!(e.severity, "FATAL");
        assert_eq!(e.code, "3D000");
        assert_eq!(e.message, "database \"x\" does not exist");
        assert_eq!(e.routine, "InitPostgres");
    }
}
