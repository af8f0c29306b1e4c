//! PROXY protocol headers (HAProxy's specification, text v1 and binary v2): how a load
//! balancer tells the server who the client is. Parsing is the `ppp` crate's; this module
//! reads exactly one header off a socket, never a byte of what follows it, and writes the
//! v2 header an instance sends when it forwards a cancel request to a peer.
//!
//! The specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//! A receiver "must not try to guess whether the protocol header is present or not", and
//! must drop a connection whose header is missing or invalid (section 2.1); LOCAL (v2) and
//! UNKNOWN (v1) connections are accepted with the connection's own addresses (2.1, 2.2):
//! balancers use them for health checks.

use ppp::v2::{self, Builder, Command, Protocol};
use ppp::{v1, HeaderResult, PartialResult};
use std::net::{IpAddr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header accepted. v1 headers are at most 107 bytes; v2 ones 16 plus their
/// addresses (at most 216) plus TLVs, which balancers use for a few dozen bytes (an AWS
/// VPC endpoint id, an ALPN). Anything longer is refused rather than buffered.
pub const MAX_HEADER_LEN: usize = 1024;

/// Longest v1 header, CRLF included (specification, section 2.1).
const V1_MAX_LEN: usize = 107;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer relays a client from `source` that connected to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer speaks for itself (v2 LOCAL, v1 UNKNOWN, or an address family that is
    /// not IP): the connection's own addresses stand.
    Local,
}

/// Why a connection's header was refused. `as_str` is the `reason` label of the
/// `proxy_protocol_rejected` metric.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The first bytes are no PROXY header (a client that connected past the balancer).
    #[error("no PROXY protocol header (the connection starts with other data)")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {MAX_HEADER_LEN} bytes")]
    Oversized,
    #[error("the connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl HeaderError {
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderError::Missing => "missing",
            HeaderError::Malformed(_) => "malformed",
            HeaderError::Oversized => "oversized",
            HeaderError::Closed => "closed",
            HeaderError::Io(_) => "io",
        }
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `len` bytes long; whatever follows is the client's.
    Complete {
        header: ProxyHeader,
        len: usize,
    },
    /// A valid beginning: every byte so far belongs to the header.
    Incomplete,
    Invalid(Invalid),
}

/// Bytes that are no header: [`HeaderError`]'s cases that [`parse`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    Missing,
    Malformed(String),
}

impl From<Invalid> for HeaderError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Missing => HeaderError::Missing,
            Invalid::Malformed(m) => HeaderError::Malformed(m),
        }
    }
}

/// Parses the start of a connection. Total on any input: never panics, never reads past
/// the header.
pub fn parse(bytes: &[u8]) -> Parsed {
    if !looks_like_a_header(bytes) {
        return Parsed::Invalid(Invalid::Missing);
    }
    if bytes.starts_with(b"P") {
        return parse_v1(bytes);
    }
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V2(Ok(h)) => Parsed::Complete {
            header: from_v2(h.command, &h.addresses),
            len: h.len(),
        },
        HeaderResult::V2(Err(e)) => Parsed::Invalid(Invalid::Malformed(e.to_string())),
        HeaderResult::V1(_) => malformed("a v1 header where a v2 signature began"),
    }
}

/// A v1 header is one line ending in CRLF (specification, section 2.1), judged once that
/// line is complete and handed to ppp alone: ppp 2.3 calls a line cut right after its last
/// space invalid where more bytes would complete it, calls a finished line with fields
/// missing incomplete, and reads `UNKNOWN` lines up to a bare CR or LF, so a prefix of one
/// header could parse as another, shorter one.
fn parse_v1(bytes: &[u8]) -> Parsed {
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        // A CR anywhere but last can no longer be followed by the line's LF.
        if window
            .iter()
            .position(|&b| b == b'\r')
            .is_some_and(|cr| cr + 1 < window.len())
        {
            return malformed("a CR inside the v1 header line");
        }
        if bytes.len() >= V1_MAX_LEN {
            return malformed("the v1 header line did not end within 107 bytes");
        }
        return Parsed::Incomplete;
    };
    let line = &bytes[..=lf];
    if lf == 0 || line[lf - 1] != b'\r' || line[..lf - 1].contains(&b'\r') {
        return malformed("the v1 header line does not end in exactly one CRLF");
    }
    match HeaderResult::parse(line) {
        HeaderResult::V1(Ok(h)) if h.header.len() == line.len() => Parsed::Complete {
            header: from_v1(&h.addresses),
            len: line.len(),
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(Invalid::Malformed(e.to_string())),
        _ => malformed("the v1 header line ended with fields missing"),
    }
}

fn malformed(why: &str) -> Parsed {
    Parsed::Invalid(Invalid::Malformed(why.into()))
}

/// Whether `bytes` could begin either signature (`PROXY ` or the v2 12-byte one), so a
/// client that skipped the balancer is told apart from a broken header.
fn looks_like_a_header(bytes: &[u8]) -> bool {
    let n = bytes.len().min(v2::PROTOCOL_PREFIX.len());
    let text = v1::PROTOCOL_PREFIX.as_bytes();
    let m = bytes.len().min(text.len());
    bytes[..n] == v2::PROTOCOL_PREFIX[..n] || bytes[..m] == text[..m]
}

fn from_v1(addresses: &v1::Addresses) -> ProxyHeader {
    match addresses {
        v1::Addresses::Tcp4(a) => ProxyHeader::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v1::Addresses::Tcp6(a) => ProxyHeader::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        v1::Addresses::Unknown => ProxyHeader::Local,
    }
}

fn from_v2(command: Command, addresses: &v2::Addresses) -> ProxyHeader {
    match (command, addresses) {
        (Command::Proxy, v2::Addresses::IPv4(a)) => ProxyHeader::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        (Command::Proxy, v2::Addresses::IPv6(a)) => ProxyHeader::Proxied {
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        // LOCAL, or PROXY for an unspecified or Unix family: the specification says to
        // use the connection's own addresses.
        _ => ProxyHeader::Local,
    }
}

/// Reads one header off `tcp`, consuming exactly its bytes. Peeks at what has arrived and
/// consumes only what [`parse`] says belongs to the header, so the PostgreSQL bytes that
/// follow stay in the socket for the negotiation. Unbounded in time: the caller applies
/// its timeout.
pub async fn read_header(tcp: &mut TcpStream) -> Result<ProxyHeader, HeaderError> {
    let mut consumed: Vec<u8> = Vec::new();
    let mut peeked = [0u8; MAX_HEADER_LEN];
    loop {
        let room = MAX_HEADER_LEN - consumed.len();
        // Blocks until data arrives: everything peeked before was consumed.
        let n = tcp.peek(&mut peeked[..room]).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        let mut candidate = consumed.clone();
        candidate.extend_from_slice(&peeked[..n]);
        match parse(&candidate) {
            Parsed::Complete { header, len } => {
                let mut rest = vec![0u8; len - consumed.len()];
                tcp.read_exact(&mut rest).await?;
                return Ok(header);
            }
            Parsed::Incomplete if candidate.len() >= MAX_HEADER_LEN => {
                return Err(HeaderError::Oversized)
            }
            Parsed::Incomplete => {
                let mut part = vec![0u8; n];
                tcp.read_exact(&mut part).await?;
                consumed = candidate;
            }
            Parsed::Invalid(e) => return Err(e.into()),
        }
    }
}

/// A v2 PROXY header saying that `source` connected to `destination` (mixed families are
/// sent as IPv6, IPv4 addresses mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (source, destination)
        }
        _ => (as_v6(source), as_v6(destination)),
    };
    let header = Builder::with_addresses(
        v2::Version::Two | Command::Proxy,
        Protocol::Stream,
        (source, destination),
    )
    .build();
    // Building fails only for payloads beyond 64 KiB; two addresses are 36 bytes at most.
    header.unwrap_or_else(|_| LOCAL_V2.to_vec())
}

/// `addr` as an IPv6 address (IPv4 ones mapped).
fn as_v6(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::from((ip.to_ipv6_mapped(), addr.port())),
        IpAddr::V6(_) => addr,
    }
}

/// A v2 LOCAL header with no addresses.
const LOCAL_V2: [u8; 16] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00,
];

#[cfg(test)]
mod tests;
