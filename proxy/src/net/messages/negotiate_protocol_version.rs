//! NegotiateProtocolVersion (`v`): the server's answer to a StartupMessage asking for a newer
//! minor protocol version or for protocol options (`_pq_.*`) it does not support.

use crate::net::framing::{encode_into, Fields};
use bytes::{BufMut, BytesMut};

/// Longest option list accepted when parsing; a hostile peer cannot make us hold more.
const MAX_OPTIONS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateProtocolVersion {
    /// Newest version supported for the requested major version, as the full protocol
    /// number (`major << 16 | minor`, e.g. 196608 for 3.0) as PostgreSQL and libpq use it.
    pub newest_minor: i32,
    /// Protocol options (`_pq_.*`) the server did not recognise.
    pub unsupported_options: Vec<String>,
}

impl NegotiateProtocolVersion {
    pub fn encode_into(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        body.put_i32(self.newest_minor);
        // The option list comes from a StartupMessage of at most 10000 bytes, so the
        // count always fits.
        body.put_i32(self.unsupported_options.len() as i32);
        for name in &self.unsupported_options {
            body.extend(name.bytes().filter(|&b| b != 0));
            body.put_u8(0);
        }
        encode_into(out, b'v', &body);
    }

    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out
    }

    /// Parses the body of a `v` message. `None` when malformed or over the bounds.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let mut f = Fields::new(body);
        let newest_minor = f.next_i32()?;
        let count = usize::try_from(f.next_i32()?).ok()?;
        if count > MAX_OPTIONS {
            return None;
        }
        let mut unsupported_options = Vec::with_capacity(count);
        for _ in 0..count {
            unsupported_options.push(String::from_utf8(f.next_cstr()?.to_vec()).ok()?);
        }
        if !f.remaining().is_empty() {
            return None;
        }
        Some(NegotiateProtocolVersion {
            newest_minor,
            unsupported_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = NegotiateProtocolVersion {
            newest_minor: 0,
            unsupported_options: vec!["_pq_.compression".into(), "_pq_.test".into()],
        };
        let wire = v.encode();
        assert_eq!(wire[0], b'v');
        assert_eq!(
            i32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize,
            wire.len() - 1
        );
        assert_eq!(NegotiateProtocolVersion::parse(&wire[5..]), Some(v));
    }

    #[test]
    fn malformed_is_refused() {
        assert_eq!(NegotiateProtocolVersion::parse(b"\0\0\0\0"), None);
        assert_eq!(
            NegotiateProtocolVersion::parse(b"\0\0\0\0\x7f\xff\xff\xff"),
            None
        );
        assert_eq!(
            NegotiateProtocolVersion::parse(b"\0\0\0\0\0\0\0\x01abc"),
            None
        );
    }
}
