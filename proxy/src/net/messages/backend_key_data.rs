//! BackendKeyData (`K`): the process id and secret key a client needs to cancel queries.

use crate::net::framing::{encode_into, Fields};
use bytes::BytesMut;

/// Shortest secret key: protocol 3.0 keys are exactly 4 bytes.
pub const MIN_KEY_LEN: usize = 4;
/// Longest secret key: protocol 3.2 allows up to 256 bytes.
pub const MAX_KEY_LEN: usize = 256;

/// A parsed or to-be-sent BackendKeyData.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    pub pid: i32,
    pub key: Vec<u8>,
}

// The secret key authorises cancelling someone's queries: keep it out of logs.
impl std::fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendKeyData")
            .field("pid", &self.pid)
            .field("key", &format_args!("<{} bytes redacted>", self.key.len()))
            .finish()
    }
}

impl BackendKeyData {
    /// Parses the body of a `K` message; the key must be 4..=256 bytes.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let mut f = Fields::new(body);
        let pid = f.next_i32()?;
        let key = f.remaining();
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return None;
        }
        Some(BackendKeyData {
            pid,
            key: key.to_vec(),
        })
    }

    /// Appends the `K` message in wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let mut body = Vec::with_capacity(4 + self.key.len());
        body.extend_from_slice(&self.pid.to_be_bytes());
        body.extend_from_slice(&self.key);
        encode_into(out, b'K', &body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_3_0_and_3_2_keys_and_rejects_bad_lengths() {
        let k = BackendKeyData::parse(b"\0\0\x01\x00\xde\xad\xbe\xef").unwrap();
        assert_eq!((k.pid, &k.key[..]), (256, &b"\xde\xad\xbe\xef"[..]));

        let mut long = 7i32.to_be_bytes().to_vec();
        long.extend_from_slice(&[9u8; 32]);
        assert_eq!(BackendKeyData::parse(&long).unwrap().key.len(), 32);

        assert!(
            BackendKeyData::parse(b"\0\0\0\x01\0\0\0").is_none(),
            "3-byte key"
        );
        assert!(BackendKeyData::parse(b"\0\0").is_none());
        let mut huge = 7i32.to_be_bytes().to_vec();
        huge.extend_from_slice(&[9u8; MAX_KEY_LEN + 1]);
        assert!(BackendKeyData::parse(&huge).is_none());
    }

    #[test]
    fn round_trips_and_redacts_the_key() {
        let k = BackendKeyData {
            pid: 42,
            key: vec![0xAB; 4],
        };
        let mut wire = BytesMut::new();
        k.encode_into(&mut wire);
        assert_eq!(&wire[..], b"K\0\0\0\x0c\0\0\0\x2a\xab\xab\xab\xab");
        assert_eq!(BackendKeyData::parse(&wire[5..]), Some(k.clone()));
        let dbg = format!("{k:?}");
        assert!(!dbg.to_lowercase().contains("ab, "), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
    }
}
