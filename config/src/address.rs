//! Network values of the file: listen addresses (`[[listener]] bind`, `[admin] bind`),
//! trusted source networks (`proxy_protocol_from`), peer addresses (`[[peering.peer]]
//! address`), AWS endpoint URLs and DNS names.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens: `IP:port` (`127.0.0.1:5439`, `[::]:5439`) or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, including the NUL.
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

impl ListenAddress {
    /// A Unix socket, or a TCP address on the loopback interface: only local processes
    /// can connect.
    pub fn is_local_only(&self) -> bool {
        match self {
            ListenAddress::Unix(_) => true,
            ListenAddress::Tcp(addr) => addr.ip().is_loopback(),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, ListenAddress::Unix(_))
    }

    /// TCP port 0: any free port (tests). Such addresses never collide.
    pub fn is_any_port(&self) -> bool {
        matches!(self, ListenAddress::Tcp(a) if a.port() == 0)
    }

    /// A Unix socket path the system can bind: absolute, ending in a file name, and short
    /// enough for `sun_path`. TCP addresses are always usable.
    pub fn check_usable(&self) -> Result<(), String> {
        let ListenAddress::Unix(path) = self else {
            return Ok(());
        };
        if !path.is_absolute() || path.file_name().is_none() {
            return Err(format!(
                "{:?}: a Unix socket path must be absolute and end in a file name",
                self.to_string()
            ));
        }
        let len = path.as_os_str().len();
        if len > MAX_UNIX_SOCKET_PATH {
            return Err(format!(
                "the Unix socket path is {len} bytes long; the system limit is \
                 {MAX_UNIX_SOCKET_PATH}"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddress, String> {
        match text.strip_prefix("unix:") {
            Some(path) => Ok(ListenAddress::Unix(PathBuf::from(path))),
            None => text.parse().map(ListenAddress::Tcp).map_err(|_| {
                format!(
                    "{text:?} is not an address such as 127.0.0.1:5439, [::]:5439 or \
                     unix:/run/redshift-iam-proxy/.s.PGSQL.5439"
                )
            }),
        }
    }
}

/// Parsed while the file is read, so a malformed address is an error naming its key.
impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ListenAddress, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A network of trusted sources: `10.0.0.0/8`, `2001:db8::/32`, or one address
/// (`10.0.3.7`, a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in this network. An IPv4 client seen on a dual-stack socket
    /// (`::ffff:10.0.3.7`) matches the IPv4 network it belongs to.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let parsed = match text.parse::<IpNet>() {
            Ok(net) => Ok(net),
            Err(_) => text.parse::<IpAddr>().map(IpNet::from),
        };
        // Host bits are dropped (`10.1.2.3/8` is `10.0.0.0/8`), as routers read it.
        parsed.map(|net| Cidr(net.trunc())).map_err(|_| {
            format!(
                "{text:?} is not a network such as 10.0.0.0/8, 2001:db8::/32 or a single \
                 address such as 10.0.3.7"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where another instance listens: `IP:port` or `dns-name:port`. A DNS name is resolved
/// each time the address is used, so it may follow a pod or a VM that moved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        let invalid = || {
            format!(
                "{text:?} is not an address such as 10.0.3.7:5439, [2001:db8::7]:5439 or \
                 proxy-1.proxy.svc.cluster.local:5439"
            )
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return match addr.port() {
                0 => Err(invalid()),
                port => Ok(HostPort {
                    host: addr.ip().to_string(),
                    port,
                }),
            };
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        match port.parse::<u16>() {
            Ok(port) if port > 0 && is_dns_name(host) => Ok(HostPort {
                host: host.to_owned(),
                port,
            }),
            _ => Err(invalid()),
        }
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HostPort, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An AWS endpoint override (`[[target]] aws_endpoint_url`, `[aws.roles_anywhere]
/// endpoint_url`): `https://`, or plain `http://` to a loopback host only (an emulator or a
/// local tunnel), since over plain HTTP anyone on the path reads the database credentials
/// or session keys AWS sends back.
pub fn check_endpoint_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} must be an http:// or https:// URL"));
    };
    if is_loopback_host(url_host(rest)) {
        Ok(())
    } else {
        Err(format!(
            "{url:?}: plain http:// only on loopback (127.0.0.0/8, ::1, localhost); use https://"
        ))
    }
}

/// The host of the authority that starts `rest` (a URL after its `scheme://`): without
/// user information, port or IPv6 brackets.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if let Some(bracketed) = host_port.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    host_port.split(':').next().unwrap_or_default()
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `name` is a DNS name: dot-separated labels of 1-63 letters, digits, `-` (not
/// first or last) and `_`, at most 253 bytes in all.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_print_back() {
        for text in ["127.0.0.1:5439", "[::]:5439", "unix:/run/rip/.s.PGSQL.5439"] {
            let address: ListenAddress = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        let err = "localhost:5439".parse::<ListenAddress>().unwrap_err();
        assert!(err.contains("is not an address"), "{err}");
        assert!("[::1]:5439"
            .parse::<ListenAddress>()
            .unwrap()
            .is_local_only());
        assert!(!"0.0.0.0:1"
            .parse::<ListenAddress>()
            .unwrap()
            .is_local_only());
    }

    #[test]
    fn trusted_networks_parse_and_match() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8", "host bits are dropped");
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:10.0.0.9".parse().unwrap()),
            "IPv4 on a dual-stack socket"
        );
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "2001:db8::7".parse().unwrap();
        assert_eq!(one.to_string(), "2001:db8::7/128");
        for bad in ["10.0.0.0/33", "lb.internal", "", "10.0.0.0/"] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains("is not a network"), "{bad}: {err}");
        }
    }

    #[test]
    fn peer_addresses_are_ip_or_dns_name_with_a_port() {
        for (text, shown) in [
            ("10.0.3.7:5439", "10.0.3.7:5439"),
            ("[2001:db8::7]:6432", "[2001:db8::7]:6432"),
            (
                "proxy-1.proxy.svc.cluster.local:5439",
                "proxy-1.proxy.svc.cluster.local:5439",
            ),
        ] {
            assert_eq!(text.parse::<HostPort>().unwrap().to_string(), shown);
        }
        for bad in [
            "10.0.3.7",
            "10.0.3.7:0",
            "host:port",
            "bad host:1",
            ":5439",
            "[::1]",
        ] {
            let err = bad.parse::<HostPort>().unwrap_err();
            assert!(err.contains("is not an address"), "{bad}: {err}");
        }
    }

    #[test]
    fn unix_paths_must_be_usable() {
        let relative: ListenAddress = "unix:run/x".parse().unwrap();
        assert!(relative.check_usable().unwrap_err().contains("absolute"));
        let long: ListenAddress = format!("unix:/{}", "d".repeat(120)).parse().unwrap();
        assert!(long.check_usable().unwrap_err().contains("limit"));
        let ok: ListenAddress = "unix:/run/a".parse().unwrap();
        assert_eq!(ok.check_usable(), Ok(()));
    }

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        for ok in [
            "https://redshift.eu-west-1.amazonaws.com",
            "http://127.0.0.1:9000",
            "http://127.8.9.10/",
            "http://[::1]:8080/path",
            "http://LOCALHOST:80",
            "http://user@localhost:1",
        ] {
            assert_eq!(check_endpoint_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:9000",
            "http://emulator:9000",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://[::2]/",
            "http://localhost@evil.example/",
        ] {
            let err = check_endpoint_url(bad).unwrap_err();
            assert!(
                err.contains("plain http:// only on loopback"),
                "{bad}: {err}"
            );
        }
        assert!(check_endpoint_url("ftp://x")
            .unwrap_err()
            .contains("http:// or https://"));
    }
}
