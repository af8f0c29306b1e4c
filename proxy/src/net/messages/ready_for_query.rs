//! ReadyForQuery (`Z`): the server is idle, in a transaction, or in a failed one. It ends
//! the login and every statement's answer.

use super::{Decode, Encode, Malformed};
use crate::net::framing::put_message;
use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyForQuery {
    /// `I` (idle), `T` (in a transaction block) or `E` (in a failed one).
    pub status: u8,
}

impl ReadyForQuery {
    pub const TAG: u8 = b'Z';
    /// Not in a transaction block.
    pub const IDLE: u8 = b'I';
}

impl Decode<'_> for ReadyForQuery {
    type Error = Malformed;

    fn decode(body: &[u8]) -> Result<Self, Malformed> {
        match body {
            [status @ (b'I' | b'T' | b'E')] => Ok(ReadyForQuery { status: *status }),
            _ => Err(Malformed("ReadyForQuery")),
        }
    }
}

impl Encode for ReadyForQuery {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| body.put_u8(self.status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_states_parse() {
        for status in [b'I', b'T', b'E'] {
            let ready = ReadyForQuery::decode(&[status]).unwrap();
            assert_eq!(&ready.encode()[..], [b'Z', 0, 0, 0, 5, status]);
        }
        for bad in [&b""[..], b"X", b"II"] {
            assert!(ReadyForQuery::decode(bad).is_err(), "{bad:?}");
        }
    }
}
