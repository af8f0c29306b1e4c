//! BackendKeyData (`K`): the process id and secret key a client needs to cancel queries.
//! The same pair travels back in a [`super::CancelRequest`].

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

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

impl BackendKeyData {
    pub const TAG: u8 = b'K';
}

// The secret key authorises cancelling someone's queries: keep it out of logs.
impl std::fmt::Debug for BackendKeyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, "BackendKeyData", self.pid, &self.key)
    }
}

/// `Debug` of a pid and secret key that shows the key's length only.
pub(super) fn debug_redacted(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    pid: i32,
    key: &[u8],
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("pid", &pid)
        .field("key", &format_args!("<{} bytes redacted>", key.len()))
        .finish()
}

/// Whether `key` has a length some protocol version allows.
pub fn valid_key_len(key: &[u8]) -> bool {
    (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len())
}

impl Decode<'_> for BackendKeyData {
    type Error = Malformed;

    /// The key must be 4..=256 bytes.
    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("BackendKeyData");
        let mut f = Fields::new(body);
        let pid = f.next_i32().ok_or(malformed)?;
        let key = f.remaining();
        if !valid_key_len(key) {
            return Err(malformed);
        }
        Ok(BackendKeyData {
            pid,
            key: key.to_vec(),
        })
    }
}

impl Encode for BackendKeyData {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_i32(self.pid);
            body.put_slice(&self.key);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_3_0_and_3_2_keys_and_rejects_bad_lengths() {
        let k = BackendKeyData::decode(b"\0\0\x01\x00\xde\xad\xbe\xef").unwrap();
        assert_eq!((k.pid, &k.key[..]), (256, &b"\xde\xad\xbe\xef"[..]));

        let mut long = 7i32.to_be_bytes().to_vec();
        long.extend_from_slice(&[9u8; 32]);
        assert_eq!(BackendKeyData::decode(&long).unwrap().key.len(), 32);

        assert!(
            BackendKeyData::decode(b"\0\0\0\x01\0\0\0").is_err(),
            "3-byte key"
        );
        assert!(BackendKeyData::decode(b"\0\0").is_err());
        let mut huge = 7i32.to_be_bytes().to_vec();
        huge.extend_from_slice(&[9u8; MAX_KEY_LEN + 1]);
        assert!(BackendKeyData::decode(&huge).is_err());
    }

    #[test]
    fn round_trips_and_redacts_the_key() {
        let k = BackendKeyData {
            pid: 42,
            key: vec![0xAB; 4],
        };
        let wire = k.encode();
        assert_eq!(&wire[..], b"K\0\0\0\x0c\0\0\0\x2a\xab\xab\xab\xab");
        assert_eq!(BackendKeyData::decode(&wire[5..]), Ok(k.clone()));
        let dbg = format!("{k:?}");
        assert!(!dbg.to_lowercase().contains("ab, "), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
    }
}
