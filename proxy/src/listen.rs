//! Client listeners: TCP, or a Unix-domain socket (`bind = "unix:/path"`).
//!
//! A Unix socket's file is created at bind time with the listener's `unix_socket_mode`
//! and removed when the listener closes. A file left behind by a proxy that died is
//! replaced only if it is a socket nobody accepts on; anything else at that path (a
//! regular file, a socket another process serves) is a startup error, never deleted.
//! As with PostgreSQL's `unix_socket_permissions`, the mode is set right after `bind`,
//! before the first connection is accepted; keep the socket in a directory only the
//! intended users can enter for a guarantee without that window.

use crate::frontend::{ClientPeer, ClientSocket};
use proxy_config::{ListenAddress, ListenerConfig};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tracing::{info, warn};

/// A bound client listener.
#[derive(Debug)]
pub enum BoundListener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        file: SocketFile,
    },
}

/// Where a listener ended up listening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for LocalAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalAddress::Tcp(addr) => write!(f, "{addr}"),
            LocalAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl BoundListener {
    /// Binds the listener's address. Errors name what is wrong with a Unix socket path.
    pub async fn bind(listener: &ListenerConfig) -> io::Result<BoundListener> {
        BoundListener::bind_address(&listener.bind, listener.unix_socket_mode()).await
    }

    /// Binds `address`; a Unix socket file gets the permission bits `unix_mode`.
    pub async fn bind_address(
        address: &ListenAddress,
        unix_mode: u32,
    ) -> io::Result<BoundListener> {
        match address {
            ListenAddress::Tcp(addr) => Ok(BoundListener::Tcp(TcpListener::bind(addr).await?)),
            ListenAddress::Unix(path) => bind_unix(path, unix_mode).await,
        }
    }

    pub fn local_address(&self) -> io::Result<LocalAddress> {
        match self {
            BoundListener::Tcp(l) => l.local_addr().map(LocalAddress::Tcp),
            BoundListener::Unix { file, .. } => Ok(LocalAddress::Unix(file.path.clone())),
        }
    }

    /// The next client connection and where it comes from.
    pub async fn accept(&self) -> io::Result<(ClientSocket, ClientPeer)> {
        match self {
            BoundListener::Tcp(l) => {
                let (tcp, peer) = l.accept().await?;
                Ok((ClientSocket::Tcp(tcp), ClientPeer::Tcp(peer)))
            }
            BoundListener::Unix { listener, file } => {
                let (unix, _) = listener.accept().await?;
                let peer = ClientPeer::of_unix(&unix, file.path.clone());
                Ok((ClientSocket::Unix(unix), peer))
            }
        }
    }
}

/// The socket file of a Unix listener; removed on drop if it is still the one we created.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Another process may have replaced the file meanwhile (a second proxy started
        // after ours was stopped): only remove our own.
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!(path = %self.path.display(), error = %e, "cannot remove the Unix socket file");
                }
            }
            _ => {}
        }
    }
}

async fn bind_unix(path: &Path, mode: u32) -> io::Result<BoundListener> {
    remove_stale_socket(path).await?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let meta = std::fs::symlink_metadata(path)?;
    Ok(BoundListener::Unix {
        listener,
        file: SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    })
}

/// Clears `path` for binding: nothing there is fine; a socket nobody accepts on is a
/// leftover and is removed; anything else is refused.
async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process is accepting connections on {}",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            info!(path = %path.display(), "removing a stale Unix socket file");
            std::fs::remove_file(path)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether the socket {} is in use: {e}",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_listener(path: &Path) -> ListenerConfig {
        let text = format!(
            "bind = \"unix:{}\"\nclient_auth = \"trust\"\ntrust_user = \"t\"\nunix_socket_mode = 0o600\n",
            path.display()
        );
        toml::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn creates_the_socket_with_its_mode_and_removes_it_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.5439");
        let bound = BoundListener::bind(&unix_listener(&path)).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            bound.local_address().unwrap().to_string(),
            format!("unix:{}", path.display())
        );
        let client = UnixStream::connect(&path).await.unwrap();
        let (_, peer) = bound.accept().await.unwrap();
        assert_eq!(peer.to_string(), format!("unix:{}", path.display()));
        assert_eq!(peer.uid(), Some(nix_uid()));
        drop(client);
        drop(bound);
        assert!(!path.exists(), "the socket file is removed");
    }

    fn nix_uid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap()
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_a_live_one_or_a_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.5439");
        let config = unix_listener(&path);

        // Stale: a socket file whose listener is gone (std's listener does not unlink).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let bound = BoundListener::bind(&config).await.unwrap();

        // Live: refused, and the live socket stays.
        let err = BoundListener::bind(&config).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("another process"), "{err}");
        assert!(path.exists());
        drop(bound);

        // Not a socket: refused, and the file stays.
        std::fs::write(&path, "precious").unwrap();
        let err = BoundListener::bind(&config).await.unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[tokio::test]
    async fn a_replaced_socket_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.5439");
        let bound = BoundListener::bind(&unix_listener(&path)).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(bound);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }
}
