//! NegotiateProtocolVersion (`v`): the server's answer to a StartupMessage asking for a newer
//! minor protocol version or for protocol options (`_pq_.*`) it does not support.

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
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
    pub const TAG: u8 = b'v';
}

impl Encode for NegotiateProtocolVersion {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_i32(self.newest_minor);
            // The option list comes from a StartupMessage of at most 10000 bytes, so the
            // count always fits.
            body.put_i32(self.unsupported_options.len() as i32);
            for name in &self.unsupported_options {
                body.extend(name.bytes().filter(|&b| b != 0));
                body.put_u8(0);
            }
        });
    }
}

impl Decode<'_> for NegotiateProtocolVersion {
    type Error = Malformed;

    /// Refuses what is malformed or over the bounds.
    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("NegotiateProtocolVersion");
        let mut f = Fields::new(body);
        let newest_minor = f.next_i32().ok_or(malformed)?;
        let count = f.next_i32().and_then(|c| usize::try_from(c).ok());
        let count = count.filter(|&c| c <= MAX_OPTIONS).ok_or(malformed)?;
        let mut unsupported_options = Vec::with_capacity(count);
        for _ in 0..count {
            let name = f.next_cstr().ok_or(malformed)?;
            unsupported_options.push(String::from_utf8(name.to_vec()).map_err(|_| malformed)?);
        }
        if !f.remaining().is_empty() {
            return Err(malformed);
        }
        Ok(NegotiateProtocolVersion {
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
        assert_eq!(NegotiateProtocolVersion::decode(&wire[5..]), Ok(v));
        let one = NegotiateProtocolVersion {
            newest_minor: 3 << 16,
            unsupported_options: vec!["_pq_.x".into()],
        };
        assert_eq!(
            &one.encode()[..],
            b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0"
        );
    }

    #[test]
    fn malformed_is_refused() {
        assert!(NegotiateProtocolVersion::decode(b"\0\0\0\0").is_err());
        assert_eq!(
            NegotiateProtocolVersion::decode(b"\0\0\0\0\x7f\xff\xff\xff"),
            Err(Malformed("NegotiateProtocolVersion"))
        );
        assert_eq!(
            NegotiateProtocolVersion::decode(b"\0\0\0\0\0\0\0\x01abc"),
            Err(Malformed("NegotiateProtocolVersion"))
        );
    }
}
