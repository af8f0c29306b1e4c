//! Answers to authentication requests: PasswordMessage, SASLInitialResponse, SASLResponse
//! (all tagged `p`: which one a `p` is follows from the request it answers) and Redshift's
//! digest response (`d`). The proxy builds them toward the upstream and parses them from
//! its own clients (`password` listeners).
//!
//! These messages carry secrets or what stands in for them; callers send or check them,
//! drop them, and never log them.

use super::{Decode, Encode};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

/// The tag of PasswordMessage, SASLInitialResponse and SASLResponse.
const PASSWORD_FAMILY_TAG: u8 = b'p';

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

/// Why a client's answer is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordParseError {
    #[error("the password is not NUL-terminated, or bytes follow its NUL")]
    Password,
    #[error("a field of the digest response is missing or does not have its declared length")]
    Digest,
}

/// PasswordMessage: a cleartext password or an `md5...` hash, without its NUL.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordMessage<'a> {
    pub password: &'a [u8],
}

// What it carries is a password or stands in for one.
impl std::fmt::Debug for PasswordMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordMessage(<redacted>)")
    }
}

impl<'a> PasswordMessage<'a> {
    pub const TAG: u8 = PASSWORD_FAMILY_TAG;

    pub fn new(password: &'a [u8]) -> Result<Self, PasswordEncodeError> {
        if password.contains(&0) {
            return Err(PasswordEncodeError::NulInPassword);
        }
        Ok(PasswordMessage { password })
    }
}

impl<'a> Decode<'a> for PasswordMessage<'a> {
    type Error = PasswordParseError;

    fn decode(body: &'a [u8]) -> Result<Self, PasswordParseError> {
        let mut f = Fields::new(body);
        let password = f.next_cstr().ok_or(PasswordParseError::Password)?;
        if !f.remaining().is_empty() {
            return Err(PasswordParseError::Password);
        }
        Ok(PasswordMessage { password })
    }
}

impl Encode for PasswordMessage<'_> {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_slice(self.password);
            body.put_u8(0);
        });
    }
}

/// SASLInitialResponse: the mechanism chosen and the client-first-message (`None` when the
/// client sent none, length -1).
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
    pub const TAG: u8 = PASSWORD_FAMILY_TAG;

    /// The proxy's own initial response; `mechanism` is one of the constant names.
    pub fn new(mechanism: &'a str, data: &'a [u8]) -> Result<Self, PasswordEncodeError> {
        if i32::try_from(data.len()).is_err() {
            return Err(PasswordEncodeError::TooLong {
                what: "SASL initial response",
            });
        }
        Ok(SaslInitialResponse {
            mechanism: mechanism.as_bytes(),
            data: Some(data),
        })
    }
}

impl<'a> Decode<'a> for SaslInitialResponse<'a> {
    type Error = SaslInitialResponseError;

    fn decode(body: &'a [u8]) -> Result<Self, SaslInitialResponseError> {
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

impl Encode for SaslInitialResponse<'_> {
    /// Parsed responses are bounded by their frame, built ones by [`SaslInitialResponse::new`].
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_slice(self.mechanism);
            body.put_u8(0);
            match self.data {
                Some(data) => {
                    body.put_i32(data.len() as i32);
                    body.put_slice(data);
                }
                None => body.put_i32(-1),
            }
        });
    }
}

/// SASLResponse: the client-final-message (or any later client step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslResponse<'a> {
    pub data: &'a [u8],
}

impl SaslResponse<'_> {
    pub const TAG: u8 = PASSWORD_FAMILY_TAG;
}

impl<'a> Decode<'a> for SaslResponse<'a> {
    type Error = std::convert::Infallible;

    /// The body is the mechanism's own message, whatever its bytes: the SCRAM exchange
    /// judges it.
    fn decode(body: &'a [u8]) -> Result<Self, Self::Error> {
        Ok(SaslResponse { data: body })
    }
}

impl Encode for SaslResponse<'_> {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| body.put_slice(self.data));
    }
}

/// Redshift's answer to AUTH_REQ_DIGEST (`d`): the digest and the client nonce, each
/// preceded by its `Int32` length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResponse<'a> {
    pub digest: &'a [u8],
    pub client_nonce: &'a [u8],
}

impl<'a> DigestResponse<'a> {
    pub const TAG: u8 = b'd';

    pub fn new(digest: &'a [u8], client_nonce: &'a [u8]) -> Result<Self, PasswordEncodeError> {
        if i32::try_from(digest.len()).is_err() || i32::try_from(client_nonce.len()).is_err() {
            return Err(PasswordEncodeError::TooLong {
                what: "digest response",
            });
        }
        Ok(DigestResponse {
            digest,
            client_nonce,
        })
    }
}

impl<'a> Decode<'a> for DigestResponse<'a> {
    type Error = PasswordParseError;

    /// Trailing bytes are refused: every driver sends exactly the two fields (JDBC CFI
    /// 789-794, redshift_connector core.py, ODBC `pqDigestResponsePacketSend`).
    fn decode(body: &'a [u8]) -> Result<Self, PasswordParseError> {
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

impl Encode for DigestResponse<'_> {
    /// Parsed responses are bounded by their frame, built ones by [`DigestResponse::new`].
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            for field in [self.digest, self.client_nonce] {
                body.put_i32(field.len() as i32);
                body.put_slice(field);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_proxy_sends_upstream_parses_back() {
        let out = PasswordMessage::new(b"md5abc").unwrap().encode();
        assert_eq!(
            PasswordMessage::decode(&out[5..]).unwrap().password,
            b"md5abc"
        );
        let nonce = b"1764979200000";
        let out = DigestResponse::new(&[0xAA; 32], nonce).unwrap().encode();
        let parsed = DigestResponse::decode(&out[5..]).unwrap();
        assert_eq!(parsed.digest, [0xAA; 32]);
        assert_eq!(parsed.client_nonce, b"1764979200000");
    }

    #[test]
    fn malformed_client_answers_are_refused() {
        for bad in [&b"abc"[..], b"abc\0x", b""] {
            assert!(PasswordMessage::decode(bad).is_err(), "{bad:?}");
        }
        for bad in [
            &b""[..],
            b"\0\0\0\x02\xaa",
            b"\0\0\0\x01\xaa\0\0\0\x05ab",
            b"\0\0\0\x01\xaa\0\0\0\x01a!",
            b"\xff\xff\xff\xff\0\0\0\0",
        ] {
            assert!(DigestResponse::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_message_is_nul_terminated_and_refuses_embedded_nul() {
        let out = PasswordMessage::new(b"md5abc").unwrap().encode();
        assert_eq!(&out[..], b"p\0\0\0\x0bmd5abc\0");
        assert_eq!(
            PasswordMessage::new(b"a\0b"),
            Err(PasswordEncodeError::NulInPassword)
        );
        let dbg = format!("{:?}", PasswordMessage::new(b"secret").unwrap());
        assert!(!dbg.contains("secret") && !dbg.contains("115"), "{dbg}");
    }

    #[test]
    fn sasl_messages_layout() {
        let initial = SaslInitialResponse::new("SCRAM-SHA-256", b"n,,n=,r=x").unwrap();
        assert_eq!(
            &initial.encode()[..],
            b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x"
        );
        let without_data = SaslInitialResponse {
            mechanism: b"M",
            data: None,
        };
        assert_eq!(
            &without_data.encode()[..],
            b"p\0\0\0\x0aM\0\xff\xff\xff\xff"
        );
        let out = SaslResponse { data: b"c=biws" }.encode();
        assert_eq!(&out[..], b"p\0\0\0\x0ac=biws");
    }

    #[test]
    fn parses_initial_responses_and_bounds_their_lengths() {
        let ok = SaslInitialResponse::decode(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap();
        assert_eq!(ok.mechanism, b"SCRAM-SHA-256");
        assert_eq!(ok.data, Some(&b"abc"[..]));
        let none = SaslInitialResponse::decode(b"M\0\xff\xff\xff\xff").unwrap();
        assert_eq!(none.data, None);
        for bad in [
            &b"SCRAM-SHA-256"[..],
            b"M\0\0\0",
            b"M\0\0\0\0\x09abc",
            b"M\0\0\0\0\x01abc",
            b"M\0\xff\xff\xff\xfe",
        ] {
            assert!(SaslInitialResponse::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redshift_digest_response_layout() {
        let out = DigestResponse::new(&[0xAA; 2], b"123").unwrap().encode();
        assert_eq!(&out[..], b"d\0\0\0\x11\0\0\0\x02\xaa\xaa\0\0\0\x03123");
    }
}
