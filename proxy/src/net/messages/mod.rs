//! One type per protocol message the proxy builds or inspects, with one codec shape for
//! both directions: a message the proxy writes implements [`Encode`], one it reads
//! implements [`Decode`], and most do both, so the frontend (client side), the backend
//! (upstream side), cancel forwarding and the session all build and read a message with
//! the same code. Tagged messages carry their tag as `TAG`; the framing itself (tag,
//! length word, bounded reads) is [`crate::net::framing`].
//!
//! Decoders take the body of one frame (what follows the tag and length word; for the
//! untagged startup packets, what follows the length word), check every length against
//! what is left before slicing, and refuse what does not fit with a typed error: they
//! never panic and never read past the frame. Constructors that take values from the
//! proxy's own state (`StartupMessage::new`, `PasswordMessage::new`, ...) refuse what
//! could not be sent faithfully (a NUL, an oversized field), so `encode_into` cannot fail.
//!
//! # Why not `pgwire`
//! `pgwire` 0.42.1 (the newest on crates.io when checked) was evaluated as the source of
//! these types and not adopted: its decoders panic on truncated frames (e.g. an
//! AuthenticationRequest, BackendKeyData or ErrorResponse whose body is shorter than its
//! fixed fields, or a length word below 4), read past the declared frame into the next
//! one, accept StartupMessages PostgreSQL refuses (no terminator, bytes after it, invalid
//! UTF-8) and keep only one value per parameter in sorted order; and it has no type for
//! Redshift's authentication codes 13 (SHA-256 digest) and 14 (IdP token) or for the
//! `'d'` digest response, which its frontend decoder reads as CopyData. The inputs and
//! results are in `docs/design.md`, "Why the message codec is our own".

use bytes::BytesMut;

pub mod authentication_request;
pub mod backend_key_data;
pub mod cancel_request;
pub mod close;
pub mod data_row;
pub mod error_response;
pub mod negotiate_protocol_version;
pub mod parameter_status;
pub mod password_response;
pub mod query;
pub mod ready_for_query;
pub mod startup;
mod startup_error;
pub mod startup_message;

pub use authentication_request::AuthenticationRequest;
pub use backend_key_data::BackendKeyData;
pub use cancel_request::CancelRequest;
pub use close::Close;
pub use data_row::DataRow;
pub use error_response::{ErrorResponse, Severity};
pub use negotiate_protocol_version::NegotiateProtocolVersion;
pub use parameter_status::ParameterStatus;
pub use password_response::{DigestResponse, PasswordMessage, SaslInitialResponse, SaslResponse};
pub use query::{Query, Terminate};
pub use ready_for_query::ReadyForQuery;
pub use startup::StartupPacket;
pub use startup_message::StartupMessage;

/// A message the proxy sends.
pub trait Encode {
    /// Appends the message in wire form, tag and length word included, to `out`.
    fn encode_into(&self, out: &mut BytesMut);

    /// The message in wire form, in a buffer of its own.
    fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode_into(&mut out);
        out
    }
}

/// A message the proxy reads. Borrowing decoders (`'a`) hand out slices of the body
/// instead of copies, so secrets in it are not duplicated.
pub trait Decode<'a>: Sized {
    type Error;

    /// Parses the body of one frame.
    fn decode(body: &'a [u8]) -> Result<Self, Self::Error>;
}

/// A message that is not well-formed, for messages whose only failure is that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct Malformed(pub &'static str);
