//! StartupMessage: the protocol version and the run-time parameters that open a session.
//! The proxy reads it from clients and builds its own toward the upstream, with the same
//! type. The other untagged packets sharing its shape are in [`super::startup`].

use super::startup_error::{StartupError, MAX_STARTUP_PACKET_LENGTH, MIN_STARTUP_PACKET_LENGTH};
use super::{Decode, Encode};
use crate::net::framing::{put_packet, Fields};
use bytes::{BufMut, BytesMut};

/// The only protocol major version spoken.
pub const PROTOCOL_MAJOR: u16 = 3;
/// Protocol 3.0 as one number (`major << 16 | minor`), as the version word of a
/// StartupMessage and NegotiateProtocolVersion carry it.
pub const PROTOCOL_3_0: i32 = (PROTOCOL_MAJOR as i32) << 16;

/// Prefix of protocol options (as opposed to run-time parameters) in a StartupMessage.
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

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
    /// A protocol 3.0 StartupMessage with these parameters (tests build theirs with it).
    #[cfg(test)]
    pub fn v3(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The value of the last parameter called exactly `name` (PostgreSQL semantics).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A protocol 3.0 StartupMessage to send, with `params` sent literally in order.
    ///
    /// Refuses what the server would read otherwise than meant; the error names the
    /// offending parameter but never carries a value.
    pub fn new<'a, I>(params: I) -> Result<Self, StartupEncodeError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut seen = std::collections::HashSet::new();
        // The length word, the version and the list's terminator.
        let mut len = MIN_STARTUP_PACKET_LENGTH + 1;
        let mut list = Vec::new();
        for (name, value) in params {
            if name.is_empty() {
                return Err(StartupEncodeError::EmptyName);
            }
            if !seen.insert(name) {
                return Err(StartupEncodeError::Duplicate { name: name.into() });
            }
            if name.contains('\0') || value.contains('\0') {
                return Err(StartupEncodeError::NulByte {
                    name: name.replace('\0', "\\0"),
                });
            }
            len += name.len() + value.len() + 2;
            list.push((name.to_owned(), value.to_owned()));
        }
        if len > MAX_STARTUP_PACKET_LENGTH {
            return Err(StartupEncodeError::TooLong { len });
        }
        Ok(StartupMessage {
            major: PROTOCOL_MAJOR,
            minor: 0,
            params: list,
        })
    }
}

impl Encode for StartupMessage {
    /// Parsed messages and those from [`StartupMessage::new`] are at most
    /// [`MAX_STARTUP_PACKET_LENGTH`] bytes.
    fn encode_into(&self, out: &mut BytesMut) {
        put_packet(out, |body| {
            body.put_u16(self.major);
            body.put_u16(self.minor);
            for (name, value) in &self.params {
                body.put_slice(name.as_bytes());
                body.put_u8(0);
                body.put_slice(value.as_bytes());
                body.put_u8(0);
            }
            body.put_u8(0);
        });
    }
}

/// Why a StartupMessage could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupEncodeError {
    /// A name or value contains NUL. Truncating at the NUL would send a different value
    /// than the one authorised, so this is refused instead.
    #[error("startup parameter {name:?} contains a NUL byte")]
    NulByte { name: String },
    #[error("startup parameter name is empty")]
    EmptyName,
    /// A name given twice: the server would silently take one of them, so which value
    /// applies (e.g. for `user`) must not be left to chance.
    #[error("startup parameter {name:?} is given more than once")]
    Duplicate { name: String },
    #[error(
        "startup message of {len} bytes exceeds the server limit of {MAX_STARTUP_PACKET_LENGTH}"
    )]
    TooLong { len: usize },
}

impl Decode<'_> for StartupMessage {
    type Error = StartupError;

    /// Parses the bytes after the length word: the version word, then the parameters.
    /// The caller bounds the packet's length ([`super::startup::read_startup_packet`]).
    fn decode(body: &[u8]) -> Result<Self, StartupError> {
        let mut f = Fields::new(body);
        let code = f
            .next_i32()
            .ok_or(StartupError::BadLength(body.len() as i64 + 4))?;
        let major = (code as u32 >> 16) as u16;
        let minor = (code as u32 & 0xffff) as u16;
        if major != PROTOCOL_MAJOR {
            return Err(StartupError::UnsupportedProtocol { major, minor });
        }
        let params = parse_params(f.remaining())?;
        Ok(StartupMessage {
            major,
            minor,
            params,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(wire: &[u8]) -> &[u8] {
        &wire[4..]
    }

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage::v3(params)
    }

    #[test]
    fn startup_message_round_trips_literally() {
        let m = startup(&[("user", "a&user=b"), ("database", "d b"), ("user", "last")]);
        let wire = m.encode();
        let parsed = StartupMessage::decode(body_of(&wire)).unwrap();
        assert_eq!(parsed, m.clone());
        assert_eq!(m.get("user"), Some("last"), "later duplicates win");
    }

    #[test]
    fn protocol_major_must_be_three() {
        let mut m = startup(&[("user", "u")]);
        m.major = 2;
        assert_eq!(
            StartupMessage::decode(body_of(&m.encode())),
            Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        m.major = 3;
        m.minor = 9999;
        assert!(matches!(
            StartupMessage::decode(body_of(&m.encode())),
            Ok(StartupMessage { minor: 9999, .. })
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
                matches!(StartupMessage::decode(&body), Err(StartupError::Layout(_))),
                "{params:?}"
            );
        }
        let mut body = v3.to_vec();
        body.extend_from_slice(b"user\0\xff\xfe\0\0");
        assert_eq!(StartupMessage::decode(&body), Err(StartupError::NotUtf8));
    }

    #[test]
    fn startup_message_sends_names_and_values_literally() {
        let m = StartupMessage::new([("user", "a&user=b"), ("database", "d b")]).unwrap();
        let wire = m.encode();
        let mut expected = Vec::new();
        expected.extend_from_slice(&0x0003_0000i32.to_be_bytes());
        expected.extend_from_slice(b"user\0a&user=b\0database\0d b\0\0");
        let len = (expected.len() + 4) as i32;
        assert_eq!(&wire[..4], &len.to_be_bytes());
        assert_eq!(&wire[4..], &expected[..]);
    }

    #[test]
    fn startup_message_refuses_nul_instead_of_truncating() {
        let err = StartupMessage::new([("user", "alice\0admin")]).unwrap_err();
        assert_eq!(
            err,
            StartupEncodeError::NulByte {
                name: "user".into()
            }
        );
        assert!(!err.to_string().contains("alice"));
        assert!(StartupMessage::new([("us\0er", "x")]).is_err());
        assert_eq!(
            StartupMessage::new([("user", "a"), ("user", "b")]),
            Err(StartupEncodeError::Duplicate {
                name: "user".into()
            })
        );
        assert_eq!(
            StartupMessage::new([("", "x")]),
            Err(StartupEncodeError::EmptyName)
        );
        let long = "x".repeat(MAX_STARTUP_PACKET_LENGTH);
        assert!(matches!(
            StartupMessage::new([("options", long.as_str())]),
            Err(StartupEncodeError::TooLong { .. })
        ));
        // The bound is the encoded length, as the server counts it.
        let fits = "x".repeat(MAX_STARTUP_PACKET_LENGTH - 9 - "options".len() - 2);
        let m = StartupMessage::new([("options", fits.as_str())]).unwrap();
        assert_eq!(m.encode().len(), MAX_STARTUP_PACKET_LENGTH);
        let over = format!("{fits}x");
        assert_eq!(
            StartupMessage::new([("options", over.as_str())]),
            Err(StartupEncodeError::TooLong {
                len: MAX_STARTUP_PACKET_LENGTH + 1
            })
        );
    }
}
