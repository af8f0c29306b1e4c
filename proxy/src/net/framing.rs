//! Reading typed protocol messages (`tag`, `Int32 length`, body) with checked lengths.
//!
//! Every length is validated before anything is allocated or sliced: a length below 4 is
//! malformed, one above the caller's bound is refused, so a hostile peer cannot make the
//! proxy allocate gigabytes or panic on arithmetic.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A framing violation or I/O failure while reading a message.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("message '{tag}' has invalid length {len}")]
    BadLength { tag: char, len: i32 },
    #[error("message '{tag}' of {len} bytes exceeds the limit of {max}")]
    TooLong { tag: char, len: usize, max: usize },
}

/// One typed message: its tag and its body (without the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: BytesMut,
}

impl Message {
    pub fn new(tag: u8, body: impl AsRef<[u8]>) -> Self {
        Message {
            tag,
            body: BytesMut::from(body.as_ref()),
        }
    }

    /// Appends the message in wire form to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        encode_into(out, self.tag, &self.body);
    }
}

/// Appends `tag`, the length word and `body` to `out`.
pub fn encode_into(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.reserve(5 + body.len());
    put_message(out, tag, |out| out.put_slice(body));
}

/// One message in wire form: what tests build their byte streams from.
#[cfg(test)]
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_into(&mut out, tag, body);
    out.to_vec()
}

/// Appends a typed message: `tag`, the length word, then the body `write_body` appends.
pub fn put_message(out: &mut BytesMut, tag: u8, write_body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    put_packet(out, write_body);
}

/// Appends an untagged packet (the shape of the startup-phase packets): the length word,
/// then the body `write_body` appends.
pub fn put_packet(out: &mut BytesMut, write_body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_i32(0); // patched below, once the body's length is known
    write_body(out);
    // Every message type bounds its body far below 2 GiB (the largest, the proxy's own
    // ErrorResponse texts and the upstream's login messages, are kilobytes).
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Reads one typed message whose body is at most `max_body` bytes.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_body: usize,
) -> Result<Message, FramingError> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FramingError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let tag = header[0];
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 {
        return Err(FramingError::BadLength {
            tag: tag as char,
            len,
        });
    }
    let body_len = (len as usize) - 4;
    if body_len > max_body {
        return Err(FramingError::TooLong {
            tag: tag as char,
            len: body_len,
            max: max_body,
        });
    }
    let mut body = BytesMut::zeroed(body_len);
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FramingError::Closed
        } else {
            FramingError::Io(e)
        }
    })?;
    Ok(Message { tag, body })
}

/// Splits NUL-terminated strings off the front of a message body.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Fields { rest: body }
    }

    /// The next NUL-terminated string, or `None` if no terminator remains.
    pub fn next_cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let s = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(s)
    }

    pub fn next_i32(&mut self) -> Option<i32> {
        let (head, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(i32::from_be_bytes(*head))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_message_and_rejects_bad_lengths() {
        let mut ok: &[u8] = b"Z\0\0\0\x05I";
        let m = read_message(&mut ok, 16).await.unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));

        for len in [0i32, 3, -1, i32::MIN] {
            let mut bytes = vec![b'D'];
            bytes.extend_from_slice(&len.to_be_bytes());
            let err = read_message(&mut &bytes[..], 16).await.unwrap_err();
            assert!(
                matches!(err, FramingError::BadLength { .. }),
                "{len}: {err}"
            );
        }

        let mut big: &[u8] = b"D\x7f\xff\xff\xff";
        assert!(matches!(
            read_message(&mut big, 1 << 20).await,
            Err(FramingError::TooLong { .. })
        ));

        let mut truncated: &[u8] = b"D\0\0\0\x09ab";
        assert!(matches!(
            read_message(&mut truncated, 16).await,
            Err(FramingError::Closed)
        ));
    }

    #[test]
    fn fields_are_bounded() {
        let mut f = Fields::new(b"abc\0\0\0\0\x07x");
        assert_eq!(f.next_cstr(), Some(&b"abc"[..]));
        assert_eq!(f.next_i32(), Some(7));
        assert_eq!(f.take(2), None);
        assert_eq!(f.take(1), Some(&b"x"[..]));
        assert_eq!(f.next_cstr(), None);
    }
}
