//! Untagged startup-phase packets the proxy sends to the upstream: SSLRequest,
//! StartupMessage (protocol 3.0) and CancelRequest.

use bytes::{BufMut, BytesMut};

/// SSLRequest code (`1234.5679`).
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// CancelRequest code (`1234.5678`).
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 0x0003_0000;
/// PostgreSQL refuses startup packets above this size (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// The complete SSLRequest packet.
pub fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8i32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
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
    #[error("startup message of {len} bytes exceeds the server limit of {MAX_STARTUP_PACKET_LEN}")]
    TooLong { len: usize },
}

/// Builds a protocol 3.0 StartupMessage from name/value pairs, sent literally in order.
///
/// The error names the offending parameter but never carries a value.
pub fn startup_message<'a, I>(params: I) -> Result<BytesMut, StartupEncodeError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // length, patched below
    out.put_i32(PROTOCOL_3_0);
    let mut seen = std::collections::HashSet::new();
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
        out.put_slice(name.as_bytes());
        out.put_u8(0);
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = out.len();
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(StartupEncodeError::TooLong { len });
    }
    // Fits: bounded by MAX_STARTUP_PACKET_LEN just above.
    out[..4].copy_from_slice(&(len as i32).to_be_bytes());
    Ok(out)
}

/// The complete CancelRequest packet for `pid` and a 4..=256-byte secret `key`.
pub fn cancel_request(pid: i32, key: &[u8]) -> BytesMut {
    let len = 12 + key.len();
    let mut out = BytesMut::with_capacity(len);
    // Keys are at most 256 bytes (checked where they are parsed), so this cannot overflow.
    out.put_i32(len as i32);
    out.put_i32(CANCEL_REQUEST_CODE);
    out.put_i32(pid);
    out.put_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_request_is_the_well_known_packet() {
        assert_eq!(ssl_request(), [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
    }

    #[test]
    fn startup_message_sends_names_and_values_literally() {
        let wire = startup_message([("user", "a&user=b"), ("database", "d b")]).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&0x0003_0000i32.to_be_bytes());
        expected.extend_from_slice(b"user\0a&user=b\0database\0d b\0\0");
        let len = (expected.len() + 4) as i32;
        assert_eq!(&wire[..4], &len.to_be_bytes());
        assert_eq!(&wire[4..], &expected[..]);
    }

    #[test]
    fn startup_message_refuses_nul_instead_of_truncating() {
        let err = startup_message([("user", "alice\0admin")]).unwrap_err();
        assert_eq!(
            err,
            StartupEncodeError::NulByte {
                name: "user".into()
            }
        );
        assert!(!err.to_string().contains("alice"));
        assert!(startup_message([("us\0er", "x")]).is_err());
        assert_eq!(
            startup_message([("user", "a"), ("user", "b")]),
            Err(StartupEncodeError::Duplicate {
                name: "user".into()
            })
        );
        assert_eq!(
            startup_message([("", "x")]),
            Err(StartupEncodeError::EmptyName)
        );
        let long = "x".repeat(MAX_STARTUP_PACKET_LEN);
        assert!(matches!(
            startup_message([("options", long.as_str())]),
            Err(StartupEncodeError::TooLong { .. })
        ));
    }

    #[test]
    fn cancel_request_layout() {
        assert_eq!(
            &cancel_request(7, &[1, 2, 3, 4])[..],
            &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 1, 2, 3, 4]
        );
    }
}
