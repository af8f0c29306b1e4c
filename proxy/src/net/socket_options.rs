//! Socket options the proxy sets on client and upstream TCP connections.

use proxy_config::LimitsConfig;
use tokio::net::TcpStream;
use tracing::warn;

/// TCP keepalive and TCP_USER_TIMEOUT per `[limits]`, so dead peers (a laptop that went
/// to sleep, a NAT that forgot the flow) are noticed instead of holding a session forever.
pub fn set_socket_options(tcp: &TcpStream, limits: &LimitsConfig) {
    let sock = socket2::SockRef::from(tcp);
    if !limits.tcp_keepalive.is_zero() {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(limits.tcp_keepalive)
            .with_interval(limits.tcp_keepalive_interval)
            .with_retries(limits.tcp_keepalive_retries);
        if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
            warn!(error = %e, "cannot enable TCP keepalive");
        }
    }
    if let Some(timeout) = limits.tcp_user_timeout {
        if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
            warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }
}
