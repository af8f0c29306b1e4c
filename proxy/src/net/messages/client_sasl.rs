//! The SASLInitialResponse (`p`) of the proxy's own clients (`password` listeners). The
//! server's side of SASL is in [`super::authentication_request`].

use crate::net::framing::Fields;

/// A client's SASLInitialResponse: the mechanism it chose and its first message (`None`
/// when it sent none, length -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    pub data: Option<&'a [u8]>,
}

/// Why a SASLInitialResponse body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslInitialResponseError {
    #[error("the mechanism name is not NUL-terminated")]
    Mechanism,
    #[error("the length of the initial response is missing")]
    MissingLength,
    #[error("the initial response does not have its declared length")]
    Length,
}

impl<'a> SaslInitialResponse<'a> {
    /// Parses the body of a `p` message (without tag and length word).
    pub fn parse(body: &'a [u8]) -> Result<Self, SaslInitialResponseError> {
        let mut f = Fields::new(body);
        let mechanism = f.next_cstr().ok_or(SaslInitialResponseError::Mechanism)?;
        let len = f
            .next_i32()
            .ok_or(SaslInitialResponseError::MissingLength)?;
        let data = match len {
            -1 => None,
            n if n >= 0 => Some(f.take(n as usize).ok_or(SaslInitialResponseError::Length)?),
            _ => return Err(SaslInitialResponseError::Length),
        };
        if !f.remaining().is_empty() {
            return Err(SaslInitialResponseError::Length);
        }
        Ok(SaslInitialResponse { mechanism, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_initial_responses_and_bounds_their_lengths() {
        let ok = SaslInitialResponse::parse(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap();
        assert_eq!(ok.mechanism, b"SCRAM-SHA-256");
        assert_eq!(ok.data, Some(&b"abc"[..]));
        let none = SaslInitialResponse::parse(b"M\0\xff\xff\xff\xff").unwrap();
        assert_eq!(none.data, None);
        for bad in [
            &b"SCRAM-SHA-256"[..],
            b"M\0\0\0",
            b"M\0\0\0\0\x09abc",
            b"M\0\0\0\0\x01abc",
            b"M\0\xff\xff\xff\xfe",
        ] {
            assert!(SaslInitialResponse::parse(bad).is_err(), "{bad:?}");
        }
    }
}
