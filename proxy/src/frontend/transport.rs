//! What a client connection runs over: TCP or a Unix-domain socket, with TLS or (on
//! `password`/`trust` listeners that allow it) without, and where it comes from.

use crate::net::buffered::ReadBuffered;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;

/// The client connection once TLS is up, with a read buffer under TLS (see
/// [`ReadBuffered`]).
pub type ClientStream = TlsStream<ReadBuffered<TcpStream>>;

/// An accepted socket, before negotiation.
#[derive(Debug)]
pub enum ClientSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for ClientSocket {
    fn from(tcp: TcpStream) -> Self {
        ClientSocket::Tcp(tcp)
    }
}

impl From<UnixStream> for ClientSocket {
    fn from(unix: UnixStream) -> Self {
        ClientSocket::Unix(unix)
    }
}

/// Where a client connects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPeer {
    Tcp(SocketAddr),
    /// A Unix-socket client: the socket's path, and the connecting process's credentials
    /// (`SO_PEERCRED`) when the system reports them.
    Unix {
        path: PathBuf,
        uid: Option<u32>,
        pid: Option<i32>,
    },
}

impl ClientPeer {
    /// The peer of an accepted Unix-socket connection on the socket at `path`.
    pub fn of_unix(stream: &UnixStream, path: PathBuf) -> ClientPeer {
        let cred = stream.peer_cred().ok();
        ClientPeer::Unix {
            path,
            uid: cred.as_ref().map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }

    /// The address cancel requests are rate-limited by: the client's IP, and for Unix
    /// sockets the loopback address (the clients are local processes).
    pub fn rate_limit_key(&self) -> IpAddr {
        match self {
            ClientPeer::Tcp(addr) => addr.ip(),
            ClientPeer::Unix { .. } => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The client's IP address (`None` for a Unix-socket client).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ClientPeer::Tcp(addr) => Some(addr.ip()),
            ClientPeer::Unix { .. } => None,
        }
    }

    pub fn uid(&self) -> Option<u32> {
        match self {
            ClientPeer::Unix { uid, .. } => *uid,
            ClientPeer::Tcp(_) => None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self {
            ClientPeer::Unix { pid, .. } => *pid,
            ClientPeer::Tcp(_) => None,
        }
    }
}

impl fmt::Display for ClientPeer {
    /// `203.0.113.7:51234`, or `unix:/run/redshift-iam-proxy/.s.PGSQL.5439`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientPeer::Tcp(addr) => write!(f, "{addr}"),
            ClientPeer::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A negotiated client connection, TLS or not.
#[derive(Debug)]
pub enum SessionStream {
    Tls(Box<ClientStream>),
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<ClientStream> for SessionStream {
    fn from(tls: ClientStream) -> Self {
        SessionStream::Tls(Box::new(tls))
    }
}

impl From<TcpStream> for SessionStream {
    fn from(tcp: TcpStream) -> Self {
        SessionStream::Tcp(tcp)
    }
}

impl From<UnixStream> for SessionStream {
    fn from(unix: UnixStream) -> Self {
        SessionStream::Unix(unix)
    }
}

impl SessionStream {
    /// The TLS session, if the client uses TLS.
    pub fn tls(&self) -> Option<&rustls::ServerConnection> {
        match self {
            SessionStream::Tls(tls) => Some(tls.get_ref().1),
            _ => None,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            SessionStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            SessionStream::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            SessionStream::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            SessionStream::Tls(s) => s.is_write_vectored(),
            SessionStream::Tcp(s) => s.is_write_vectored(),
            SessionStream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}
