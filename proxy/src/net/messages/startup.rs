//! The untagged packets a client sends before (and as the start of) a session:
//! StartupMessage, SSLRequest, GSSENCRequest and CancelRequest. The proxy reads them from
//! clients and sends StartupMessage, SSLRequest and CancelRequest to the upstream, with the
//! same types.
//!
//! They share one shape, `Int32 length` (including itself) then `Int32 code`, and differ by
//! the code. Parsing is strict and bounded: the length is checked against
//! [`MAX_STARTUP_PACKET_LENGTH`] before anything is allocated, every string must be
//! NUL-terminated UTF-8, and the last byte of a StartupMessage must be its terminator, as
//! in PostgreSQL's `ProcessStartupPacket`.

use super::cancel_request::{CancelRequest, CANCEL_REQUEST_CODE};
use super::startup_message::StartupMessage;
use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_packet, Fields};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub use super::startup_error::{
    StartupError, MAX_STARTUP_PACKET_LENGTH, MIN_STARTUP_PACKET_LENGTH,
};

/// `1234.5679`
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
/// `1234.5680`
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;

/// One pre-session packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest(CancelRequest),
    Startup(StartupMessage),
}

/// The server's one-byte answer to an SSLRequest: go on with the TLS handshake, or not
/// (the client may then continue in plaintext or leave). It is not framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslResponse {
    Accepted,
    Refused,
}

impl SslResponse {
    pub const ACCEPTED: u8 = b'S';
    /// Also the answer that refuses a GSSENCRequest.
    pub const REFUSED: u8 = b'N';

    /// The answer in a first byte the server sent, if it is one; anything else (an
    /// ErrorResponse from a server that predates SSL, garbage) is for the caller to judge.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            Self::ACCEPTED => Some(SslResponse::Accepted),
            Self::REFUSED => Some(SslResponse::Refused),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            SslResponse::Accepted => Self::ACCEPTED,
            SslResponse::Refused => Self::REFUSED,
        }
    }
}

impl Encode for SslResponse {
    fn encode_into(&self, out: &mut BytesMut) {
        out.put_u8(self.byte());
    }
}

impl Decode<'_> for SslResponse {
    type Error = Malformed;

    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        match body {
            [byte] => Self::from_byte(*byte).ok_or(Malformed("SSL response")),
            _ => Err(Malformed("SSL response")),
        }
    }
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

impl Decode<'_> for StartupPacket {
    type Error = StartupError;

    /// Parses the bytes after the length word (as returned by [`read_startup_packet`]).
    fn decode(body: &[u8]) -> Result<StartupPacket, StartupError> {
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
            CANCEL_REQUEST_CODE => CancelRequest::decode(body)
                .map(StartupPacket::CancelRequest)
                .map_err(|_| StartupError::BadCancelRequest { len: total }),
            _ => StartupMessage::decode(body).map(StartupPacket::Startup),
        }
    }
}

impl Encode for StartupPacket {
    fn encode_into(&self, out: &mut BytesMut) {
        match self {
            StartupPacket::SslRequest => put_packet(out, |b| b.put_i32(SSL_REQUEST_CODE)),
            StartupPacket::GssEncRequest => put_packet(out, |b| b.put_i32(GSSENC_REQUEST_CODE)),
            StartupPacket::CancelRequest(request) => request.encode_into(out),
            StartupPacket::Startup(message) => message.encode_into(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CancelRequest body built by hand, not by the encoder under test.
    fn cancel_body(pid: i32, key: &[u8]) -> Vec<u8> {
        [&[0x04, 0xd2, 0x16, 0x2e][..], &pid.to_be_bytes(), key].concat()
    }

    #[test]
    fn special_codes_are_recognised() {
        assert_eq!(
            StartupPacket::decode(&[0x04, 0xd2, 0x16, 0x2f]),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            StartupPacket::decode(&[0x04, 0xd2, 0x16, 0x30]),
            Ok(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            StartupPacket::decode(&cancel_body(42, &[1, 2, 3, 4])),
            Ok(StartupPacket::CancelRequest(CancelRequest {
                pid: 42,
                key: vec![1, 2, 3, 4]
            }))
        );
        let long_key = [7u8; 256];
        assert!(matches!(
            StartupPacket::decode(&cancel_body(1, &long_key)),
            Ok(StartupPacket::CancelRequest(c)) if c.key.len() == 256
        ));
    }

    #[test]
    fn special_packets_encode_to_the_well_known_bytes() {
        assert_eq!(
            &StartupPacket::SslRequest.encode()[..],
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
        );
        assert_eq!(
            &StartupPacket::GssEncRequest.encode()[..],
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]
        );
        let cancel = CancelRequest {
            pid: 42,
            key: vec![1, 2, 3, 4],
        };
        let wire = StartupPacket::CancelRequest(cancel).encode();
        assert_eq!(&wire[..4], [0, 0, 0, 16]);
        assert_eq!(&wire[4..], &cancel_body(42, &[1, 2, 3, 4])[..]);
    }

    #[test]
    fn cancel_key_length_is_bounded() {
        for len in [0usize, 3, 257] {
            assert_eq!(
                StartupPacket::decode(&cancel_body(1, &vec![0u8; len])),
                Err(StartupError::BadCancelRequest { len: 12 + len })
            );
        }
        let mut short = BytesMut::new();
        short.put_i32(CANCEL_REQUEST_CODE);
        short.put_u16(1);
        assert_eq!(
            StartupPacket::decode(&short),
            Err(StartupError::BadCancelRequest { len: 10 })
        );
    }

    #[test]
    fn ssl_request_with_payload_is_refused() {
        let mut body = SSL_REQUEST_CODE.to_be_bytes().to_vec();
        body.push(0);
        assert!(matches!(
            StartupPacket::decode(&body),
            Err(StartupError::BadRequestLength { .. })
        ));
    }

    #[tokio::test]
    async fn reader_checks_the_length_word() {
        for len in [0i32, 7, -1, i32::MIN, 10_001, i32::MAX] {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 16]);
            let got = read_startup_packet(&mut &bytes[..]).await.unwrap();
            assert_eq!(got, Some(Err(StartupError::BadLength(len.into()))), "{len}");
        }
        let ssl = StartupPacket::SslRequest.encode();
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
            let _ = StartupPacket::decode(&body);
        }
    }
}
