//! Close (`C` from a client) and Sync (`S` from a client), of the extended query protocol:
//! what the proxy sends to drop the last client's named prepared statements before a
//! session is reused.

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

/// Close of a prepared statement (`S`) or portal (`P`) by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close<'a> {
    pub kind: u8,
    pub name: &'a [u8],
}

impl<'a> Close<'a> {
    pub const TAG: u8 = b'C';
    pub const STATEMENT: u8 = b'S';
    pub const PORTAL: u8 = b'P';

    pub fn statement(name: &'a [u8]) -> Self {
        Close {
            kind: Self::STATEMENT,
            name,
        }
    }
}

impl<'a> Decode<'a> for Close<'a> {
    type Error = Malformed;

    fn decode(body: &'a [u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("Close");
        let mut f = Fields::new(body);
        let kind = match f.take(1).ok_or(malformed)? {
            [kind @ (Self::STATEMENT | Self::PORTAL)] => *kind,
            _ => return Err(malformed),
        };
        let name = f.next_cstr().ok_or(malformed)?;
        if !f.remaining().is_empty() {
            return Err(malformed);
        }
        Ok(Close { kind, name })
    }
}

impl Encode for Close<'_> {
    /// Names are what a client sent in a Parse, which ends them at their NUL.
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_u8(self.kind);
            body.put_slice(self.name);
            body.put_u8(0);
        });
    }
}

/// Sync: ends an extended-protocol batch; the server answers with ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sync;

impl Sync {
    pub const TAG: u8 = b'S';
}

impl Decode<'_> for Sync {
    type Error = Malformed;

    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        body.is_empty().then_some(Sync).ok_or(Malformed("Sync"))
    }
}

impl Encode for Sync {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_malformed_bodies() {
        let close = Close::statement(b"s1");
        let wire = close.encode();
        assert_eq!(&wire[..], b"C\0\0\0\x08Ss1\0");
        assert_eq!(Close::decode(&wire[5..]), Ok(close));
        for bad in [&b""[..], b"S", b"Xs1\0", b"Ss1", b"Ss1\0x"] {
            assert!(Close::decode(bad).is_err(), "{bad:?}");
        }
        assert_eq!(&Sync.encode()[..], b"S\0\0\0\x04");
        assert_eq!(Sync::decode(b""), Ok(Sync));
        assert!(Sync::decode(b"x").is_err());
    }
}
