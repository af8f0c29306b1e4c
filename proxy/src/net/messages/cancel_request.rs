//! CancelRequest: an untagged startup-phase packet, sent on a new connection, that names a
//! session by its BackendKeyData. The proxy reads it from clients and sends it to the
//! upstream and to peer instances; the three are the same packet.

use super::backend_key_data::{debug_redacted, BackendKeyData};
use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_packet, Fields};
use bytes::{BufMut, BytesMut};

/// The CancelRequest code, `1234.5678`.
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;

/// The target session's pid and secret key (4..=256 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub pid: i32,
    pub key: Vec<u8>,
}

// The key is a bearer secret for cancelling someone's query: keep it out of logs.
impl std::fmt::Debug for CancelRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        debug_redacted(f, "CancelRequest", self.pid, &self.key)
    }
}

/// The request that cancels what runs in the session `key` names.
impl From<&BackendKeyData> for CancelRequest {
    fn from(key: &BackendKeyData) -> Self {
        CancelRequest {
            pid: key.pid,
            key: key.key.clone(),
        }
    }
}

impl Decode<'_> for CancelRequest {
    type Error = Malformed;

    /// Parses the bytes after the length word: the code, the pid, then the key.
    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("CancelRequest");
        let mut f = Fields::new(body);
        if f.next_i32() != Some(CANCEL_REQUEST_CODE) {
            return Err(malformed);
        }
        // The pid and key as the BackendKeyData that announced them, bounded alike.
        let BackendKeyData { pid, key } =
            BackendKeyData::decode(f.remaining()).map_err(|_| malformed)?;
        Ok(CancelRequest { pid, key })
    }
}

impl Encode for CancelRequest {
    /// Keys are bounded where they are parsed (4..=256 bytes), so the length fits.
    fn encode_into(&self, out: &mut BytesMut) {
        put_packet(out, |body| {
            body.put_i32(CANCEL_REQUEST_CODE);
            body.put_i32(self.pid);
            body.put_slice(&self.key);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_well_known_packet() {
        let request = CancelRequest {
            pid: 7,
            key: vec![1, 2, 3, 4],
        };
        assert_eq!(
            &request.encode()[..],
            &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 1, 2, 3, 4]
        );
        assert_eq!(
            CancelRequest::decode(&request.encode()[4..]),
            Ok(request.clone())
        );
        let dbg = format!("{request:?}");
        assert!(dbg.contains("pid: 7") && !dbg.contains("1, 2"), "{dbg}");
    }
}
