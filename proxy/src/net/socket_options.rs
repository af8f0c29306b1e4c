//! Socket options the proxy sets on client and upstream TCP connections.
//!
//! TCP keepalive keeps idle sessions alive through NATs, firewalls and load balancers that
//! forget quiet flows (AWS NAT gateways and NLBs after 350 s, Azure's load balancer after
//! 4 min by default), and notices dead peers (a laptop that went to sleep) instead of
//! holding a session forever. `[limits] tcp_keepalive` defaults to 60 s, well below those.

use proxy_config::LimitsConfig;
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::warn;

/// What `[limits]` asks of every TCP connection, on both legs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOptions {
    keepalive: Option<Keepalive>,
    user_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keepalive {
    idle: Duration,
    interval: Duration,
    retries: u32,
}

impl SocketOptions {
    pub fn from_limits(limits: &LimitsConfig) -> SocketOptions {
        SocketOptions {
            keepalive: (!limits.tcp_keepalive.is_zero()).then_some(Keepalive {
                idle: limits.tcp_keepalive,
                interval: limits.tcp_keepalive_interval,
                retries: limits.tcp_keepalive_retries,
            }),
            user_timeout: limits.tcp_user_timeout,
        }
    }

    /// Sets the options on `tcp`; a failure is logged, never fatal (the connection works
    /// without them).
    pub fn apply(&self, tcp: &TcpStream) {
        let sock = socket2::SockRef::from(tcp);
        if let Some(k) = self.keepalive {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval)
                .with_retries(k.retries);
            if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
                warn!(error = %e, "cannot enable TCP keepalive");
            }
        }
        if let Some(timeout) = self.user_timeout {
            if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
                warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_and_user_timeout_land_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let limits = LimitsConfig {
            tcp_keepalive: Duration::from_secs(45),
            tcp_keepalive_interval: Duration::from_secs(7),
            tcp_keepalive_retries: 4,
            tcp_user_timeout: Some(Duration::from_secs(30)),
            ..LimitsConfig::default()
        };
        SocketOptions::from_limits(&limits).apply(&tcp);
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(30))
        );
    }

    #[tokio::test]
    async fn zero_turns_keepalive_off() {
        let limits = LimitsConfig {
            tcp_keepalive: Duration::ZERO,
            ..LimitsConfig::default()
        };
        assert_eq!(
            SocketOptions::from_limits(&limits),
            SocketOptions::default()
        );
    }
}
