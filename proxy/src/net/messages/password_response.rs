//! Answers to authentication requests: PasswordMessage, SASLInitialResponse, SASLResponse
//! (all tagged `p`) and Redshift's digest response (`d`). The proxy builds them toward the
//! upstream and parses them from its own clients (`password` listeners; the SASL ones from
//! clients are in [`super::client_sasl`]).
//!
//! These messages carry secrets or what stands in for them; callers send or check them,
//! drop them, and never log them.

use crate::net::framing::{encode_into, Fields};
use bytes::{BufMut, BytesMut};

/// Why an answer could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordEncodeError {
    /// A NUL would end the password early on the wire; the server would then check a
    /// different password than the one we hold.
    #[error("the password contains a NUL byte")]
    NulInPassword,
    #[error("{what} is too long to encode")]
    TooLong { what: &'static str },
}

/// PasswordMessage carrying a cleartext password or an `md5...` hash.
pub fn password_message(password: &[u8], out: &mut BytesMut) -> Result<(), PasswordEncodeError> {
    if password.contains(&0) {
        return Err(PasswordEncodeError::NulInPassword);
    }
    let mut body = Vec::with_capacity(password.len() + 1);
    body.extend_from_slice(password);
    body.push(0);
    encode_into(out, b'p', &body);
    Ok(())
}

/// SASLInitialResponse: mechanism name, then the client-first-message.
pub fn sasl_initial_response(
    mechanism: &str,
    data: &[u8],
    out: &mut BytesMut,
) -> Result<(), PasswordEncodeError> {
    let len = i32::try_from(data.len()).map_err(|_| PasswordEncodeError::TooLong {
        what: "SASL initial response",
    })?;
    let mut body = Vec::with_capacity(mechanism.len() + 5 + data.len());
    body.extend_from_slice(mechanism.as_bytes());
    body.push(0);
    body.put_i32(len);
    body.extend_from_slice(data);
    encode_into(out, b'p', &body);
    Ok(())
}

/// SASLResponse: the client-final-message.
pub fn sasl_response(data: &[u8], out: &mut BytesMut) {
    encode_into(out, b'p', data);
}

/// Redshift's answer to AUTH_REQ_DIGEST: `'d'`, length, then the digest and the client
/// nonce, each preceded by its `Int32` length.
pub fn redshift_digest_response(
    digest: &[u8],
    client_nonce: &[u8],
    out: &mut BytesMut,
) -> Result<(), PasswordEncodeError> {
    let too_long = PasswordEncodeError::TooLong {
        what: "digest response",
    };
    let digest_len = i32::try_from(digest.len()).map_err(|_| too_long)?;
    let nonce_len = i32::try_from(client_nonce.len()).map_err(|_| too_long)?;
    let mut body = Vec::with_capacity(8 + digest.len() + client_nonce.len());
    body.put_i32(digest_len);
    body.extend_from_slice(digest);
    body.put_i32(nonce_len);
    body.extend_from_slice(client_nonce);
    encode_into(out, b'd', &body);
    Ok(())
}

/// Why a client's answer is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordParseError {
    #[error("the password is not NUL-terminated, or bytes follow its NUL")]
    Password,
    #[error("a field of the digest response is missing or does not have its declared length")]
    Digest,
}

/// The string of a client's PasswordMessage (`p`: a cleartext password or an `md5...`
/// answer), without its NUL.
pub fn parse_password_message(body: &[u8]) -> Result<&[u8], PasswordParseError> {
    let mut f = Fields::new(body);
    let password = f.next_cstr().ok_or(PasswordParseError::Password)?;
    if !f.remaining().is_empty() {
        return Err(PasswordParseError::Password);
    }
    Ok(password)
}

/// A client's answer to AUTH_REQ_DIGEST (`d`): the digest and the client nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse<'a> {
    pub digest: &'a [u8],
    pub client_nonce: &'a [u8],
}

impl<'a> DigestResponse<'a> {
    /// Parses the body of a `d` message. Trailing bytes are refused: every driver sends
    /// exactly the two fields (JDBC CFI 789-794, redshift_connector core.py, ODBC
    /// `pqDigestResponsePacketSend`).
    pub fn parse(body: &'a [u8]) -> Result<Self, PasswordParseError> {
        let mut f = Fields::new(body);
        let mut counted = || -> Result<&'a [u8], PasswordParseError> {
            let len = f.next_i32().ok_or(PasswordParseError::Digest)?;
            let len = usize::try_from(len).map_err(|_| PasswordParseError::Digest)?;
            f.take(len).ok_or(PasswordParseError::Digest)
        };
        let digest = counted()?;
        let client_nonce = counted()?;
        if !f.remaining().is_empty() {
            return Err(PasswordParseError::Digest);
        }
        Ok(DigestResponse {
            digest,
            client_nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_proxy_sends_upstream_parses_back() {
        let mut out = BytesMut::new();
        password_message(b"md5abc", &mut out).unwrap();
        assert_eq!(parse_password_message(&out[5..]), Ok(&b"md5abc"[..]));
        let mut out = BytesMut::new();
        redshift_digest_response(&[0xAA; 32], b"1764979200000", &mut out).unwrap();
        let parsed = DigestResponse::parse(&out[5..]).unwrap();
        assert_eq!(parsed.digest, [0xAA; 32]);
        assert_eq!(parsed.client_nonce, b"1764979200000");
    }

    #[test]
    fn malformed_client_answers_are_refused() {
        for bad in [&b"abc"[..], b"abc\0x", b""] {
            assert!(parse_password_message(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"\0\0\0\x02\xaa",
            b"\0\0\0\x01\xaa\0\0\0\x05ab",
            b"\0\0\0\x01\xaa\0\0\0\x01a!",
            b"\xff\xff\xff\xff\0\0\0\0",
        ] {
            assert!(DigestResponse::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_message_is_nul_terminated_and_refuses_embedded_nul() {
        let mut out = BytesMut::new();
        password_message(b"md5abc", &mut out).unwrap();
        assert_eq!(&out[..], b"p\0\0\0\x0bmd5abc\0");
        assert_eq!(
            password_message(b"a\0b", &mut BytesMut::new()),
            Err(PasswordEncodeError::NulInPassword)
        );
    }

    #[test]
    fn sasl_messages_layout() {
        let mut out = BytesMut::new();
        sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x", &mut out).unwrap();
        assert_eq!(&out[..], b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x");
        let mut out = BytesMut::new();
        sasl_response(b"c=biws", &mut out);
        assert_eq!(&out[..], b"p\0\0\0\x0ac=biws");
    }

    #[test]
    fn redshift_digest_response_layout() {
        let mut out = BytesMut::new();
        redshift_digest_response(&[0xAA; 2], b"123", &mut out).unwrap();
        assert_eq!(&out[..], b"d\0\0\0\x11\0\0\0\x02\xaa\xaa\0\0\0\x03123");
    }
}
