//! The proxy's answers to the upstream's authentication requests: PasswordMessage,
//! SASLInitialResponse, SASLResponse (all tagged `p`) and Redshift's digest response (`d`).
//!
//! These functions build wire bytes that may contain secrets; callers send them and drop
//! them, and never log them.

use crate::net::framing::encode_into;
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

#[cfg(test)]
mod tests {
    use super::*;

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
