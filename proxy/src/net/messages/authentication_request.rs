//! The server's authentication requests (`R` messages): parsed when the upstream sends
//! them to the proxy, encoded when the proxy asks its own clients for a password.
//!
//! Only the shape is checked here (lengths, terminators, bounds); what to answer is the
//! backend's business, what to ask the frontend's.

use super::{Decode, Encode};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

/// Longest salt or nonce accepted in a Redshift digest request. Real servers send a few
/// dozen bytes; anything much larger is a broken or hostile server.
pub const MAX_DIGEST_FIELD: usize = 1024;

/// Most SASL mechanisms accepted in one `AuthenticationSASL` list.
const MAX_SASL_MECHANISMS: usize = 16;

/// One parsed `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthenticationRequest<'a> {
    /// 0: AuthenticationOk.
    Ok,
    /// 3: AuthenticationCleartextPassword.
    CleartextPassword,
    /// 5: AuthenticationMD5Password with its 4-byte salt.
    Md5Password { salt: [u8; 4] },
    /// 10: AuthenticationSASL with the offered mechanism names.
    Sasl { mechanisms: Vec<&'a str> },
    /// 11: AuthenticationSASLContinue (server-first-message).
    SaslContinue { data: &'a [u8] },
    /// 12: AuthenticationSASLFinal (server-final-message).
    SaslFinal { data: &'a [u8] },
    /// 13: Redshift's AUTH_REQ_DIGEST.
    Digest {
        algorithm: i32,
        salt: &'a [u8],
        server_nonce: &'a [u8],
    },
    /// Any other code (Kerberos, GSS, SSPI, Redshift IdP token, ...), which the proxy does
    /// not answer.
    Unsupported { code: i32 },
}

/// Why an `R` message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationParseError {
    #[error("authentication request is shorter than its code")]
    Truncated,
    #[error("authentication request {code} has a malformed body: {reason}")]
    Malformed { code: i32, reason: &'static str },
}

impl<'a> Decode<'a> for AuthenticationRequest<'a> {
    type Error = AuthenticationParseError;

    fn decode(body: &'a [u8]) -> Result<Self, AuthenticationParseError> {
        let mut f = Fields::new(body);
        let code = f.next_i32().ok_or(AuthenticationParseError::Truncated)?;
        let malformed = |reason| AuthenticationParseError::Malformed { code, reason };
        let req = match code {
            0 | 3 => {
                if !f.remaining().is_empty() {
                    return Err(malformed("unexpected trailing bytes"));
                }
                if code == 0 {
                    AuthenticationRequest::Ok
                } else {
                    AuthenticationRequest::CleartextPassword
                }
            }
            5 => {
                let salt: [u8; 4] = f
                    .take(4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| malformed("salt is not 4 bytes"))?;
                if !f.remaining().is_empty() {
                    return Err(malformed("unexpected trailing bytes"));
                }
                AuthenticationRequest::Md5Password { salt }
            }
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let name = f
                        .next_cstr()
                        .ok_or_else(|| malformed("unterminated mechanism list"))?;
                    if name.is_empty() {
                        break;
                    }
                    if mechanisms.len() == MAX_SASL_MECHANISMS {
                        return Err(malformed("too many mechanisms"));
                    }
                    let name = std::str::from_utf8(name)
                        .map_err(|_| malformed("mechanism name is not UTF-8"))?;
                    mechanisms.push(name);
                }
                if !f.remaining().is_empty() {
                    return Err(malformed("unexpected trailing bytes"));
                }
                AuthenticationRequest::Sasl { mechanisms }
            }
            11 => AuthenticationRequest::SaslContinue {
                data: f.remaining(),
            },
            12 => AuthenticationRequest::SaslFinal {
                data: f.remaining(),
            },
            13 => {
                let algorithm = f.next_i32().ok_or_else(|| malformed("missing algorithm"))?;
                let salt = counted(&mut f).map_err(malformed)?;
                let server_nonce = counted(&mut f).map_err(malformed)?;
                if salt.is_empty() {
                    return Err(malformed("empty salt"));
                }
                if server_nonce.is_empty() {
                    return Err(malformed("empty server nonce"));
                }
                // Trailing bytes are tolerated, as the Redshift drivers do, so that a future
                // server field does not break logins; everything we use was bounded above.
                AuthenticationRequest::Digest {
                    algorithm,
                    salt,
                    server_nonce,
                }
            }
            other => AuthenticationRequest::Unsupported { code: other },
        };
        Ok(req)
    }
}

impl AuthenticationRequest<'_> {
    pub const TAG: u8 = b'R';

    /// The numeric code, for logs and errors.
    pub fn code(&self) -> i32 {
        match self {
            AuthenticationRequest::Ok => 0,
            AuthenticationRequest::CleartextPassword => 3,
            AuthenticationRequest::Md5Password { .. } => 5,
            AuthenticationRequest::Sasl { .. } => 10,
            AuthenticationRequest::SaslContinue { .. } => 11,
            AuthenticationRequest::SaslFinal { .. } => 12,
            AuthenticationRequest::Digest { .. } => 13,
            AuthenticationRequest::Unsupported { code } => *code,
        }
    }
}

impl Encode for AuthenticationRequest<'_> {
    /// A digest request carries exactly its fields: the Redshift JDBC driver reads them one
    /// after another and ignores the length word, so trailing bytes would put it out of
    /// step (research: redshift-server.md §1).
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| self.put_body(body));
    }
}

impl AuthenticationRequest<'_> {
    fn put_body(&self, body: &mut BytesMut) {
        body.put_i32(self.code());
        match self {
            AuthenticationRequest::Ok
            | AuthenticationRequest::CleartextPassword
            | AuthenticationRequest::Unsupported { .. } => {}
            AuthenticationRequest::Md5Password { salt } => body.put_slice(salt),
            AuthenticationRequest::Sasl { mechanisms } => {
                for m in mechanisms {
                    body.put_slice(m.as_bytes());
                    body.put_u8(0);
                }
                body.put_u8(0);
            }
            AuthenticationRequest::SaslContinue { data }
            | AuthenticationRequest::SaslFinal { data } => body.put_slice(data),
            AuthenticationRequest::Digest {
                algorithm,
                salt,
                server_nonce,
            } => {
                body.put_i32(*algorithm);
                put_counted(body, salt);
                put_counted(body, server_nonce);
            }
        }
    }
}

/// Our own salts and nonces are a few dozen bytes.
fn put_counted(body: &mut BytesMut, field: &[u8]) {
    body.put_i32(i32::try_from(field.len()).expect("salts and nonces are short"));
    body.put_slice(field);
}

/// An `Int32` length followed by that many bytes, bounded by [`MAX_DIGEST_FIELD`].
fn counted<'a>(f: &mut Fields<'a>) -> Result<&'a [u8], &'static str> {
    let len = f.next_i32().ok_or("missing length")?;
    let len = usize::try_from(len).map_err(|_| "negative length")?;
    if len > MAX_DIGEST_FIELD {
        return Err("field too long");
    }
    f.take(len).ok_or("field shorter than its length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    }

    #[test]
    fn every_request_encodes_to_what_parses_back() {
        let requests = [
            AuthenticationRequest::Ok,
            AuthenticationRequest::CleartextPassword,
            AuthenticationRequest::Md5Password { salt: [1, 2, 3, 4] },
            AuthenticationRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"],
            },
            AuthenticationRequest::SaslContinue { data: b"r=x" },
            AuthenticationRequest::SaslFinal { data: b"v=y" },
            AuthenticationRequest::Digest {
                algorithm: 0,
                salt: &[7; 32],
                server_nonce: &[9; 32],
            },
        ];
        for request in requests {
            let out = request.encode();
            assert_eq!(out[0], b'R');
            let len = i32::from_be_bytes(out[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, out.len() - 1, "{request:?}");
            assert_eq!(AuthenticationRequest::decode(&out[5..]), Ok(request));
        }
    }

    #[test]
    fn encodes_the_wire_bytes_postgresql_sends() {
        let mut out = BytesMut::new();
        AuthenticationRequest::Sasl {
            mechanisms: vec!["SCRAM-SHA-256"],
        }
        .encode_into(&mut out);
        assert_eq!(&out[..], b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
        out.clear();
        AuthenticationRequest::Md5Password { salt: *b"abcd" }.encode_into(&mut out);
        assert_eq!(&out[..], b"R\0\0\0\x0c\0\0\0\x05abcd");
        out.clear();
        AuthenticationRequest::Digest {
            algorithm: 0,
            salt: b"s",
            server_nonce: b"nn",
        }
        .encode_into(&mut out);
        assert_eq!(
            &out[..],
            b"R\0\0\0\x17\0\0\0\x0d\0\0\0\0\0\0\0\x01s\0\0\0\x02nn"
        );
    }

    #[test]
    fn parses_the_simple_requests() {
        assert_eq!(
            AuthenticationRequest::decode(&body(0, b"")),
            Ok(AuthenticationRequest::Ok)
        );
        assert_eq!(
            AuthenticationRequest::decode(&body(3, b"")),
            Ok(AuthenticationRequest::CleartextPassword)
        );
        assert_eq!(
            AuthenticationRequest::decode(&body(5, b"\x01\x02\x03\x04")),
            Ok(AuthenticationRequest::Md5Password { salt: [1, 2, 3, 4] })
        );
        assert!(AuthenticationRequest::decode(&body(5, b"\x01\x02\x03")).is_err());
        assert!(AuthenticationRequest::decode(&body(0, b"x")).is_err());
        assert_eq!(
            AuthenticationRequest::decode(b"\0\0"),
            Err(AuthenticationParseError::Truncated)
        );
        assert_eq!(
            AuthenticationRequest::decode(&body(14, b"anything")),
            Ok(AuthenticationRequest::Unsupported { code: 14 })
        );
    }

    #[test]
    fn parses_sasl_mechanism_lists() {
        let b = body(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let req = AuthenticationRequest::decode(&b).unwrap();
        assert_eq!(
            req,
            AuthenticationRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            }
        );
        assert!(AuthenticationRequest::decode(&body(10, b"SCRAM-SHA-256\0")).is_err());
        let mut many = b"M\0".repeat(17);
        many.push(0);
        assert!(AuthenticationRequest::decode(&body(10, &many)).is_err());
    }

    #[test]
    fn parses_and_bounds_redshift_digest_requests() {
        let mut rest = 0i32.to_be_bytes().to_vec();
        rest.extend_from_slice(&3i32.to_be_bytes());
        rest.extend_from_slice(b"abc");
        rest.extend_from_slice(&2i32.to_be_bytes());
        rest.extend_from_slice(b"xy");
        assert_eq!(
            AuthenticationRequest::decode(&body(13, &rest)),
            Ok(AuthenticationRequest::Digest {
                algorithm: 0,
                salt: b"abc",
                server_nonce: b"xy"
            })
        );

        let digest = |salt_len: i32, salt: &[u8], nonce_len: i32, nonce: &[u8]| {
            let mut rest = 0i32.to_be_bytes().to_vec();
            rest.extend_from_slice(&salt_len.to_be_bytes());
            rest.extend_from_slice(salt);
            rest.extend_from_slice(&nonce_len.to_be_bytes());
            rest.extend_from_slice(nonce);
            AuthenticationRequest::decode(&body(13, &rest)).is_ok()
        };
        assert!(digest(1, b"s", 1, b"n"));
        assert!(!digest(0, b"", 2, b"xy"), "empty salt");
        assert!(!digest(1, b"s", 0, b""), "empty nonce");
        assert!(!digest(-1, b"s", 1, b"n"), "negative length");
        assert!(!digest(10, b"s", 1, b"n"), "length beyond body");
        let big = vec![b'n'; MAX_DIGEST_FIELD + 1];
        assert!(!digest(1, b"s", big.len() as i32, &big), "oversized nonce");
    }
}
