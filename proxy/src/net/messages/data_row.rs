//! DataRow (`D`): one row of a query's result. The relay forwards rows unread; the proxy
//! reads them only where it runs a statement of its own (the `check` command).

use super::{Decode, Encode, Malformed};
use crate::net::framing::{put_message, Fields};
use bytes::{BufMut, BytesMut};

/// One row: each column's value in text or binary form, `None` for NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow<'a> {
    pub columns: Vec<Option<&'a [u8]>>,
}

impl DataRow<'_> {
    pub const TAG: u8 = b'D';
}

impl<'a> Decode<'a> for DataRow<'a> {
    type Error = Malformed;

    fn decode(body: &'a [u8]) -> Result<Self, Malformed> {
        let malformed = Malformed("DataRow");
        let mut f = Fields::new(body);
        let count = f.take(2).ok_or(malformed)?;
        let count = u16::from_be_bytes([count[0], count[1]]);
        if count > i16::MAX as u16 {
            return Err(malformed);
        }
        // Every column takes at least its length word, so a count the body cannot hold is
        // refused before anything is reserved for it.
        if usize::from(count) > f.remaining().len() / 4 {
            return Err(malformed);
        }
        let mut columns = Vec::with_capacity(count.into());
        for _ in 0..count {
            let value = match f.next_i32().ok_or(malformed)? {
                -1 => None,
                len => {
                    let len = usize::try_from(len).map_err(|_| malformed)?;
                    Some(f.take(len).ok_or(malformed)?)
                }
            };
            columns.push(value);
        }
        if !f.remaining().is_empty() {
            return Err(malformed);
        }
        Ok(DataRow { columns })
    }
}

impl Encode for DataRow<'_> {
    /// Rows the proxy builds are small (tests and its own checks).
    fn encode_into(&self, out: &mut BytesMut) {
        put_message(out, Self::TAG, |body| {
            body.put_i16(self.columns.len() as i16);
            for column in &self.columns {
                match column {
                    Some(value) => {
                        body.put_i32(value.len() as i32);
                        body.put_slice(value);
                    }
                    None => body.put_i32(-1),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_and_nulls() {
        let row = DataRow {
            columns: vec![Some(&b"1"[..]), None, Some(b"")],
        };
        let wire = row.encode();
        assert_eq!(
            &wire[..],
            b"D\0\0\0\x13\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0"
        );
        assert_eq!(DataRow::decode(&wire[5..]), Ok(row));
    }

    #[test]
    fn truncated_oversized_and_trailing_input_is_refused() {
        for bad in [
            &b""[..],
            b"\0",
            b"\0\x01",
            b"\0\x01\0\0\0\x05abc",
            b"\0\x01\0\0\0\x01ab",
            b"\0\x01\xff\xff\xff\xfe",
            b"\x7f\xff\0\0\0\0",
            b"\xff\xff\0\0\0\0",
        ] {
            assert_eq!(DataRow::decode(bad), Err(Malformed("DataRow")), "{bad:?}");
        }
        assert_eq!(DataRow::decode(b"\0\0"), Ok(DataRow { columns: vec![] }));
    }
}
