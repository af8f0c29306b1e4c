//! ErrorResponse (`E`) and NoticeResponse (`N`): building them for clients, and reading the
//! upstream's.

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// The fields of an ErrorResponse the proxy cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub severity: String,
    /// SQLSTATE, five characters.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// Longest upstream field kept when parsing; a hostile server cannot make us hold more.
const MAX_FIELD: usize = 2048;

impl ErrorResponse {
    pub const TAG: u8 = b'E';
    /// NoticeResponse has the same fields; the proxy only reads it.
    pub const NOTICE_TAG: u8 = b'N';

    /// A FATAL error for a client, the usual shape for login refusals.
    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        debug_assert_eq!(code.len(), 5, "SQLSTATE must have five characters");
        ErrorResponse {
            severity: severity.as_str().into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl Encode for ErrorResponse {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            let mut field = |t: u8, v: &str| {
                body.put_u8(t);
                // Interior NULs would end the field early and desynchronise the client.
                body.extend(v.bytes().filter(|&b| b != 0));
                body.put_u8(0);
            };
            field(b'S', &self.severity);
            field(b'V', &self.severity);
            field(b'C', &self.code);
            field(b'M', &self.message);
            if let Some(d) = &self.detail {
                field(b'D', d);
            }
            if let Some(h) = &self.hint {
                field(b'H', h);
            }
            body.put_u8(0);
        });
    }
}

impl Decode<'_> for ErrorResponse {
    type Error = Malformed;

    /// Parses the body of an upstream `E` (or `N`) message. Missing fields get safe
    /// defaults (SQLSTATE `XX000` when the server sent none); long fields are truncated.
    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        Self::decode_fields(body).ok_or(Malformed("ErrorResponse"))
    }
}

impl ErrorResponse {
    fn decode_fields(body: &[u8]) -> Option<Self> {
        let mut f = Fields::new(body);
        let mut e = ErrorResponse {
            severity: "ERROR".into(),
            code: crate::sqlstate::INTERNAL_ERROR.into(),
            message: String::new(),
            detail: None,
            hint: None,
        };
        loop {
            let t = *f.remaining().first()?;
            if t == 0 {
                break;
            }
            f.take(1)?;
            let value = f.next_cstr()?;
            let value = String::from_utf8_lossy(&value[..value.len().min(MAX_FIELD)]).into_owned();
            match t {
                b'V' => e.severity = value,
                b'S' if e.severity == "ERROR" => e.severity = value,
                b'C' if value.len() == 5 && value.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    e.code = value
                }
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = ErrorResponse::fatal("28000", "denied").with_hint("use a certificate");
        let wire = e.encode();
        assert_eq!(wire[0], b'E');
        let len = i32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, wire.len());
        assert_eq!(ErrorResponse::decode(&wire[5..]).unwrap(), e);
    }

    #[test]
    fn encodes_the_fields_postgresql_sends_without_interior_nuls() {
        let e = ErrorResponse::fatal("28000", "no\0pe").with_detail("d");
        assert_eq!(
            &e.encode()[..],
            b"E\0\0\0\x23SFATAL\0VFATAL\0C28000\0Mnope\0Dd\0\0"
        );
    }

    #[test]
    fn upstream_error_without_sqlstate_gets_xx000() {
        let e = ErrorResponse::decode(b"SFATAL\0Mboom\0\0").unwrap();
        assert_eq!(e.code, "XX000");
        assert_eq!(e.message, "boom");
        assert!(ErrorResponse::decode(b"SFATAL\0Mno terminator").is_err());
    }
}
