//! ParameterStatus (`S` from a server): a run-time setting and its value, sent at login
//! and whenever the setting changes. The proxy reads the ones a session reset causes and
//! replays the recorded set to the next client of a reused session.

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl ParameterStatus<'_> {
    pub const TAG: u8 = b'S';
}

impl<'a> Decode<'a> for ParameterStatus<'a> {
    type Error = Malformed;

    fn decode(body: &'a [u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("ParameterStatus");
        let mut f = Fields::new(body);
        let name = f.next_cstr().ok_or(malformed)?;
        let value = f.next_cstr().ok_or(malformed)?;
        if !f.remaining().is_empty() {
            return Err(malformed);
        }
        Ok(ParameterStatus { name, value })
    }
}

impl Encode for ParameterStatus<'_> {
    /// Names and values come from a server's own ParameterStatus messages, which cannot
    /// hold a NUL.
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            for field in [self.name, self.value] {
                body.put_slice(field);
                body.put_u8(0);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_two_strings() {
        let status = ParameterStatus {
            name: b"TimeZone",
            value: b"UTC",
        };
        let wire = status.encode();
        assert_eq!(&wire[..], b"S\0\0\0\x11TimeZone\0UTC\0");
        assert_eq!(ParameterStatus::decode(&wire[5..]), Ok(status));
        for bad in [&b""[..], b"TimeZone", b"TimeZone\0UTC", b"a\0b\0c"] {
            assert!(ParameterStatus::decode(bad).is_err(), "{bad:?}");
        }
    }
}
