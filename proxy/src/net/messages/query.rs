//! Query (`Q`, simple query protocol) and Terminate (`X`): what the proxy's own checks
//! send when they run a statement upstream and leave.

use super::Encode;
use crate::net::framing::put_message;
use bytes::{BufMut, BytesMut};

/// A simple query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub sql: &'a str,
}

impl Query<'_> {
    pub const TAG: u8 = b'Q';
}

impl Encode for Query<'_> {
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            // A NUL would end the statement early; the proxy's own statements have none.
            body.extend(self.sql.bytes().filter(|&b| b != 0));
            body.put_u8(0);
        });
    }
}

/// Terminate: the client is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminate;

impl Terminate {
    pub const TAG: u8 = b'X';
    /// The whole message: it has no body, so it is always these five bytes.
    pub const WIRE: [u8; 5] = [Self::TAG, 0, 0, 0, 4];
}

impl Encode for Terminate {
    fn encode_into(&self, out: &mut BytesMut) {
        out.put_slice(&Self::WIRE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(
            &Query { sql: "select 1" }.encode()[..],
            b"Q\0\0\0\x0dselect 1\0"
        );
        assert_eq!(&Terminate.encode()[..], b"X\0\0\0\x04");
        let mut framed = BytesMut::new();
        put_message(&mut framed, Terminate::TAG, |_| {});
        assert_eq!(
            framed,
            Terminate.encode(),
            "WIRE is the framed empty message"
        );
    }
}
