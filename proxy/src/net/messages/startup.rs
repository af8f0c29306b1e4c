//! The untyped packets a client sends before (and as the start of) a session:
//! StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.
//!
//! They share one shape, `Int32 length` (including itself) then `Int32 code`, and differ by
//! the code. Parsing is strict and bounded: the length is checked against
//! [`MAX_STARTUP_PACKET_LENGTH`] before anything is allocated, every string must be
//! NUL-terminated UTF-8, and the last byte of a StartupMessage must be its terminator, as
//! in PostgreSQL's `ProcessStartupPacket`.

use crate::net::framing::Fields;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest startup packet accepted, as in PostgreSQL (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
/// Shortest startup packet: the length word and the code.
pub const MIN_STARTUP_PACKET_LENGTH: usize = 8;

/// `1234.5678`
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;
/// `1234.5679`
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
/// `1234.5680`
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;

/// Shortest cancel key (protocol 3.0 uses exactly 4 bytes).
pub const MIN_CANCEL_KEY_LENGTH: usize = 4;
/// Longest cancel key (protocol 3.2 allows up to 256 bytes).
pub const MAX_CANCEL_KEY_LENGTH: usize = 256;

/// The only protocol major version spoken.
pub const PROTOCOL_MAJOR: u16 = 3;

/// Prefix of protocol options (as opposed to run-time parameters) in a StartupMessage.
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// One pre-session packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest(CancelRequest),
    Startup(StartupMessage),
}

/// CancelRequest: the target backend's pid and secret key.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub pid: i32,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for CancelRequest {
    // The key is a bearer secret for cancelling someone's query: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelRequest")
            .field("pid", &self.pid)
            .field("key_len", &self.key.len())
            .finish()
    }
}

/// StartupMessage: protocol version and the parameters in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// Name/value pairs exactly as sent (duplicates included; later ones win, as in
    /// PostgreSQL).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of the last parameter called exactly `name` (PostgreSQL semantics).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Wire form, including the length word. Used toward the upstream and in tests.
    pub fn encode(&self) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_u16(self.major);
        body.put_u16(self.minor);
        for (name, value) in &self.params {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_slice(value.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        with_length(&body)
    }
}

/// Why a startup packet was refused. Every variant is a protocol violation (08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet ({0} bytes)")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid length of {what} packet ({len} bytes)")]
    BadRequestLength { what: &'static str, len: usize },
    /// Cancel packets never get a reply, so this is for the operator log only.
    #[error("invalid length of cancel request packet ({len} bytes)")]
    BadCancelRequest { len: usize },
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
    #[error("invalid byte sequence for encoding \"UTF8\" in startup packet")]
    NotUtf8,
}

/// Reads one startup packet: the length word, then exactly the announced number of bytes.
///
/// Returns the bytes after the length word (code first). An EOF before the first byte is
/// `Ok(None)` (a client that just disconnected); any other short read is an I/O error.
pub async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Result<Vec<u8>, StartupError>>, std::io::Error> {
    let mut len_word = [0u8; 4];
    let mut got = 0;
    while got < len_word.len() {
        let n = r.read(&mut len_word[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = i32::from_be_bytes(len_word);
    let Some(len) = usize::try_from(len)
        .ok()
        .filter(|l| (MIN_STARTUP_PACKET_LENGTH..=MAX_STARTUP_PACKET_LENGTH).contains(l))
    else {
        return Ok(Some(Err(StartupError::BadLength(len.into()))));
    };
    // Bounded by MAX_STARTUP_PACKET_LENGTH above, so this allocation is small.
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    Ok(Some(Ok(body)))
}

impl StartupPacket {
    /// Parses the bytes after the length word (as returned by [`read_startup_packet`]).
    pub fn parse(body: &[u8]) -> Result<StartupPacket, StartupError> {
        let total = body.len() + 4;
        if !(MIN_STARTUP_PACKET_LENGTH..=MAX_STARTUP_PACKET_LENGTH).contains(&total) {
            return Err(StartupError::BadLength(total as i64));
        }
        let mut f = Fields::new(body);
        let code = f.next_i32().ok_or(StartupError::BadLength(total as i64))?;
        match code {
            SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
                // These carry nothing else; extra bytes mean a confused or hostile peer.
                if total != MIN_STARTUP_PACKET_LENGTH {
                    let what = if code == SSL_REQUEST_CODE {
                        "SSL negotiation"
                    } else {
                        "GSSAPI negotiation"
                    };
                    return Err(StartupError::BadRequestLength { what, len: total });
                }
                Ok(if code == SSL_REQUEST_CODE {
                    StartupPacket::SslRequest
                } else {
                    StartupPacket::GssEncRequest
                })
            }
            CANCEL_REQUEST_CODE => {
                let bad = StartupError::BadCancelRequest { len: total };
                let pid = f.next_i32().ok_or(bad.clone())?;
                let key = f.remaining();
                if !(MIN_CANCEL_KEY_LENGTH..=MAX_CANCEL_KEY_LENGTH).contains(&key.len()) {
                    return Err(bad);
                }
                Ok(StartupPacket::CancelRequest(CancelRequest {
                    pid,
                    key: key.to_vec(),
                }))
            }
            _ => {
                let major = (code as u32 >> 16) as u16;
                let minor = (code as u32 & 0xffff) as u16;
                if major != PROTOCOL_MAJOR {
                    return Err(StartupError::UnsupportedProtocol { major, minor });
                }
                let params = parse_params(f.remaining())?;
                Ok(StartupPacket::Startup(StartupMessage {
                    major,
                    minor,
                    params,
                }))
            }
        }
    }
}

/// Parses `name\0value\0 ... \0`, requiring the final byte to be the list terminator.
fn parse_params(bytes: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut f = Fields::new(bytes);
    let mut params = Vec::new();
    loop {
        match f.remaining().first() {
            None => return Err(StartupError::Layout("expected terminator as last byte")),
            Some(0) => break,
            Some(_) => {}
        }
        let name = f
            .next_cstr()
            .ok_or(StartupError::Layout("parameter name is not terminated"))?;
        let value = f
            .next_cstr()
            .ok_or(StartupError::Layout("missing value for a parameter"))?;
        params.push((utf8(name)?, utf8(value)?));
    }
    // The terminator must be the very last byte.
    if f.remaining().len() != 1 {
        return Err(StartupError::Layout("expected terminator as last byte"));
    }
    Ok(params)
}

fn utf8(b: &[u8]) -> Result<String, StartupError> {
    String::from_utf8(b.to_vec()).map_err(|_| StartupError::NotUtf8)
}

fn with_length(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32((body.len() + 4) as i32);
    out.put_slice(body);
    out
}

/// SSLRequest in wire form.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8i32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

/// GSSENCRequest in wire form.
#[cfg(any(test, feature = "test-util"))]
pub fn encode_gssenc_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8i32.to_be_bytes());
    out[4..].copy_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
    out
}

/// CancelRequest in wire form.
#[cfg(any(test, feature = "test-util"))]
pub fn encode_cancel_request(pid: i32, key: &[u8]) -> BytesMut {
    let mut body = BytesMut::with_capacity(8 + key.len());
    body.put_i32(CANCEL_REQUEST_CODE);
    body.put_i32(pid);
    body.put_slice(key);
    with_length(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(wire: &[u8]) -> &[u8] {
        &wire[4..]
    }

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn startup_message_round_trips_literally() {
        let m = startup(&[("user", "a&user=b"), ("database", "d b"), ("user", "last")]);
        let wire = m.encode();
        let parsed = StartupPacket::parse(body_of(&wire)).unwrap();
        assert_eq!(parsed, StartupPacket::Startup(m.clone()));
        assert_eq!(m.get("user"), Some("last"), "later duplicates win");
    }

    #[test]
    fn special_codes_are_recognised() {
        assert_eq!(
            StartupPacket::parse(body_of(&encode_ssl_request())),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            StartupPacket::parse(body_of(&encode_gssenc_request())),
            Ok(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            StartupPacket::parse(body_of(&encode_cancel_request(42, &[1, 2, 3, 4]))),
            Ok(StartupPacket::CancelRequest(CancelRequest {
                pid: 42,
                key: vec![1, 2, 3, 4]
            }))
        );
        let long_key = [7u8; 256];
        assert!(matches!(
            StartupPacket::parse(body_of(&encode_cancel_request(1, &long_key))),
            Ok(StartupPacket::CancelRequest(c)) if c.key.len() == 256
        ));
    }

    #[test]
    fn cancel_key_length_is_bounded() {
        for len in [0usize, 3, 257] {
            let wire = encode_cancel_request(1, &vec![0u8; len]);
            assert_eq!(
                StartupPacket::parse(body_of(&wire)),
                Err(StartupError::BadCancelRequest { len: 12 + len })
            );
        }
        let mut short = BytesMut::new();
        short.put_i32(CANCEL_REQUEST_CODE);
        short.put_u16(1);
        assert_eq!(
            StartupPacket::parse(&short),
            Err(StartupError::BadCancelRequest { len: 10 })
        );
    }

    #[test]
    fn ssl_request_with_payload_is_refused() {
        let mut body = SSL_REQUEST_CODE.to_be_bytes().to_vec();
        body.push(0);
        assert!(matches!(
            StartupPacket::parse(&body),
            Err(StartupError::BadRequestLength { .. })
        ));
    }

    #[test]
    fn protocol_major_must_be_three() {
        let mut m = startup(&[("user", "u")]);
        m.major = 2;
        assert_eq!(
            StartupPacket::parse(body_of(&m.encode())),
            Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        m.major = 3;
        m.minor = 9999;
        assert!(matches!(
            StartupPacket::parse(body_of(&m.encode())),
            Ok(StartupPacket::Startup(StartupMessage { minor: 9999, .. }))
        ));
    }

    #[test]
    fn layout_errors() {
        let v3 = (3i32 << 16).to_be_bytes();
        let cases: &[&[u8]] = &[
            b"",                 // no terminator at all
            b"user\0",           // name without value
            b"user\0bob",        // value not terminated
            b"user\0bob\0",      // list not terminated
            b"user\0bob\0\0\0",  // bytes after the terminator
            b"user\0bob\0\0xyz", // bytes after the terminator
        ];
        for params in cases {
            let mut body = v3.to_vec();
            body.extend_from_slice(params);
            assert!(
                matches!(StartupPacket::parse(&body), Err(StartupError::Layout(_))),
                "{params:?}"
            );
        }
        let mut body = v3.to_vec();
        body.extend_from_slice(b"user\0\xff\xfe\0\0");
        assert_eq!(StartupPacket::parse(&body), Err(StartupError::NotUtf8));
    }

    #[tokio::test]
    async fn reader_checks_the_length_word() {
        for len in [0i32, 7, -1, i32::MIN, 10_001, i32::MAX] {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 16]);
            let got = read_startup_packet(&mut &bytes[..]).await.unwrap();
            assert_eq!(got, Some(Err(StartupError::BadLength(len.into()))), "{len}");
        }
        let ssl = encode_ssl_request();
        let got = read_startup_packet(&mut &ssl[..]).await.unwrap();
        assert_eq!(got, Some(Ok(ssl[4..].to_vec())));
        assert_eq!(read_startup_packet(&mut &b""[..]).await.unwrap(), None);
        assert!(read_startup_packet(&mut &b"\0\0"[..]).await.is_err());
        assert!(read_startup_packet(&mut &b"\0\0\0\x10abc"[..])
            .await
            .is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Bias half the cases towards plausible codes so the deeper paths run.
            if body.len() >= 4 && rng.random_bool(0.5) {
                let code =
                    [3i32 << 16, CANCEL_REQUEST_CODE, SSL_REQUEST_CODE][rng.random_range(0..3)];
                body[..4].copy_from_slice(&code.to_be_bytes());
            }
            let _ = StartupPacket::parse(&body);
        }
    }
}
