//! The bounds of a startup-phase packet and why one is refused, shared by the packet
//! reader ([`super::startup`]) and the StartupMessage decoder ([`super::startup_message`]).

/// Longest startup packet accepted, as in PostgreSQL (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LENGTH: usize = 10_000;
/// Shortest startup packet: the length word and the code.
pub const MIN_STARTUP_PACKET_LENGTH: usize = 8;

/// Why a startup packet was refused. Every variant is a protocol violation (08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("invalid length of startup packet ({0} bytes)")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid length of {what} packet ({len} bytes)")]
    BadRequestLength { what: &'static str, len: usize },
    /// Cancel packets never get a reply, so this is for the operator log only.
    #[error("invalid length of cancel request packet ({len} bytes)")]
    BadCancelRequest { len: usize },
    #[error("invalid startup packet layout: {0}")]
    Layout(&'static str),
    #[error("invalid byte sequence for encoding \"UTF8\" in startup packet")]
    NotUtf8,
}
