//! The admin listener behind a load balancer: an AWS Network Load Balancer whose target
//! group has proxy protocol v2 enabled puts a PROXY header (naming no client) in front of
//! its HTTP health checks too, even on a port other than the traffic port (reported in
//! kubernetes/ingress-nginx#10982, cilium/cilium#26274, istio/istio#25875; AWS: "the proxy
//! protocol header is also included in health check connections"). A plain HTTP server
//! answers those with 400 and the target never turns healthy.
//!
//! So every TCP admin connection may start with a PROXY header, which is read and
//! discarded. Nothing here uses a client address (access rests on the bind address, the
//! `Host` check and the reload token), so accepting the header where it is present gives
//! nobody a way to pose as someone else. Headers are read in a task per connection, so a
//! slow one never holds up the others.

use crate::net::proxy_header::{read_header, HeaderError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error};

/// Time a connection has to finish a header it began.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections ready for HTTP, their PROXY header (if any) consumed.
pub(super) struct HeaderTolerant {
    ready: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
    acceptor: JoinHandle<()>,
}

impl HeaderTolerant {
    pub(super) fn new(listener: TcpListener) -> HeaderTolerant {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(listener, tx));
        HeaderTolerant {
            ready,
            local,
            acceptor,
        }
    }
}

impl Drop for HeaderTolerant {
    fn drop(&mut self) {
        // Closes the socket: the admin listener stops with the server.
        self.acceptor.abort();
    }
}

async fn accept_loop(listener: TcpListener, ready: mpsc::Sender<(TcpStream, SocketAddr)>) {
    loop {
        let (mut tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                error!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut tcp)).await {
                // A header was read and dropped, or there was none (nothing was consumed).
                Ok(Ok(_)) | Ok(Err(HeaderError::Missing)) => {
                    let _ = ready.send((tcp, addr)).await;
                }
                Ok(Err(e)) => debug!(peer = %addr, error = %e, "admin connection closed"),
                Err(_) => debug!(peer = %addr, "admin connection closed: incomplete PROXY header"),
            }
        });
    }
}

impl axum::serve::Listener for HeaderTolerant {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor only ends when aborted, which is when this is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn requests_with_and_without_a_header_reach_http_and_broken_ones_do_not() {
        let mut listener = HeaderTolerant::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let request = b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let header = crate::net::proxy_header::encode_v2(addr, addr);
        let mut broken = TcpStream::connect(addr).await.unwrap();
        broken.write_all(b"PROXY TCP4 x y\r\n").await.unwrap();
        for prefix in [&header[..], b""] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(prefix).await.unwrap();
            client.write_all(request).await.unwrap();
            let (mut served, _) = listener.accept().await;
            let mut got = vec![0u8; request.len()];
            served.read_exact(&mut got).await.unwrap();
            assert_eq!(got, request, "the HTTP request arrives without the header");
        }
        let mut gone = [0u8; 1];
        assert_eq!(broken.read(&mut gone).await.unwrap_or(0), 0, "closed");
    }
}
