//! ErrorResponse (`E`) and NoticeResponse (`N`): building them for clients, and reading the
//! upstream's.

use crate::net::framing::{encode_into, Fields};
use bytes::BytesMut;

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

    /// Wire form (`E` message).
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut BytesMut) {
        let mut body = Vec::with_capacity(64 + self.message.len());
        let mut field = |t: u8, v: &str| {
            body.push(t);
            // Interior NULs would end the field early and desynchronise the client.
            body.extend(v.bytes().filter(|&b| b != 0));
            body.push(0);
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
        body.push(0);
        encode_into(out, b'E', &body);
    }

    /// Parses the body of an upstream `E` (or `N`) message. Missing fields get safe
    /// defaults (SQLSTATE `XX000` when the server sent none); long fields are truncated.
    pub fn parse(body: &[u8]) -> Option<Self> {
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
        assert_eq!(ErrorResponse::parse(&wire[5..]).unwrap(), e);
    }

    #[test]
    fn upstream_error_without_sqlstate_gets_xx000() {
        let e = ErrorResponse::parse(b"SFATAL\0Mboom\0\0").unwrap();
        assert_eq!(e.code, "XX000");
        assert_eq!(e.message, "boom");
        assert!(ErrorResponse::parse(b"SFATAL\0Mno terminator").is_none());
    }
}
