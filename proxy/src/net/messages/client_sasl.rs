//! SASL authentication toward the proxy's own clients (`password` listeners): the server's
//! AuthenticationSASL / SASLContinue / SASLFinal (`R` 10, 11, 12) and the client's
//! SASLInitialResponse (`p`).

use crate::net::framing::{encode_into, Fields};
use bytes::{BufMut, BytesMut};

/// AuthenticationSASL offering `mechanisms`.
pub fn authentication_sasl(mechanisms: &[&str], out: &mut BytesMut) {
    let mut body = BytesMut::new();
    body.put_i32(10);
    for m in mechanisms {
        body.put_slice(m.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    encode_into(out, b'R', &body);
}

/// AuthenticationSASLContinue carrying a server-first-message.
pub fn authentication_sasl_continue(data: &[u8], out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(4 + data.len());
    body.put_i32(11);
    body.put_slice(data);
    encode_into(out, b'R', &body);
}

/// AuthenticationSASLFinal carrying a server-final-message.
pub fn authentication_sasl_final(data: &[u8], out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(4 + data.len());
    body.put_i32(12);
    body.put_slice(data);
    encode_into(out, b'R', &body);
}

/// A client's SASLInitialResponse: the mechanism it chose and its first message (`None`
/// when it sent none, length -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    pub data: Option<&'a [u8]>,
}

/// Why a SASLInitialResponse body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslInitialResponseError {
    #[error("the mechanism name is not NUL-terminated")]
    Mechanism,
    #[error("the length of the initial response is missing")]
    MissingLength,
    #[error("the initial response does not have its declared length")]
    Length,
}

impl<'a> SaslInitialResponse<'a> {
    /// Parses the body of a `p` message (without tag and length word).
    pub fn parse(body: &'a [u8]) -> Result<Self, SaslInitialResponseError> {
        let mut f = Fields::new(body);
        let mechanism = f.next_cstr().ok_or(SaslInitialResponseError::Mechanism)?;
        let len = f
            .next_i32()
            .ok_or(SaslInitialResponseError::MissingLength)?;
        let data = match len {
            -1 => None,
            n if n >= 0 => Some(f.take(n as usize).ok_or(SaslInitialResponseError::Length)?),
            _ => return Err(SaslInitialResponseError::Length),
        };
        if !f.remaining().is_empty() {
            return Err(SaslInitialResponseError::Length);
        }
        Ok(SaslInitialResponse { mechanism, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_authentication_requests() {
        let mut out = BytesMut::new();
        authentication_sasl(&["SCRAM-SHA-256"], &mut out);
        assert_eq!(&out[..], b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
        out.clear();
        authentication_sasl_continue(b"r=x", &mut out);
        assert_eq!(&out[..], b"R\0\0\0\x0b\0\0\0\x0br=x");
        out.clear();
        authentication_sasl_final(b"v=y", &mut out);
        assert_eq!(&out[..], b"R\0\0\0\x0b\0\0\0\x0cv=y");
    }

    #[test]
    fn parses_initial_responses_and_bounds_their_lengths() {
        let ok = SaslInitialResponse::parse(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap();
        assert_eq!(ok.mechanism, b"SCRAM-SHA-256");
        assert_eq!(ok.data, Some(&b"abc"[..]));
        let none = SaslInitialResponse::parse(b"M\0\xff\xff\xff\xff").unwrap();
        assert_eq!(none.data, None);
        for bad in [
            &b"SCRAM-SHA-256"[..],
            b"M\0\0\0",
            b"M\0\0\0\0\x09abc",
            b"M\0\0\0\0\x01abc",
            b"M\0\xff\xff\xff\xfe",
        ] {
            assert!(SaslInitialResponse::parse(bad).is_err(), "{bad:?}");
        }
    }
}
