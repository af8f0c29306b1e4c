//! HAProxy in front of several proxy instances, as production runs them (issue 16): TCP
//! mode, a PROXY v2 header on every connection, health checks of each instance's
//! `/readyz` on its admin listener. The configuration is the one `docs/operations.md`
//! documents, with local ports.
//!
//! HAProxy is Debian's `haproxy` package (`.ci/run` installs it). Its statistics page
//! (CSV) tells a test which instances it considers up and whether it retried or
//! redispatched any connection.

use crate::process;
use nix::sys::signal::Signal;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One proxy instance behind the balancer.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    /// The instance's `proxy_protocol` listener.
    pub port: u16,
    /// Its admin listener (`/readyz`).
    pub admin_port: u16,
}

/// Clients of one port, spread over the instances behind it (a frontend and a backend).
#[derive(Debug, Clone)]
pub struct Pool {
    /// The backend's name (statistics, logs).
    pub name: String,
    /// Where clients connect (127.0.0.1).
    pub port: u16,
    pub backends: Vec<Backend>,
}

/// What the balancer looks like.
#[derive(Debug, Clone)]
pub struct BalancerSpec {
    pub pools: Vec<Pool>,
    /// HAProxy's statistics page (127.0.0.1, `/stats`).
    pub stats_port: u16,
    /// `roundrobin` (predictable, for tests) or `leastconn` (production: sessions are long).
    pub balance: &'static str,
    /// Health check interval; an instance is taken out after two failed checks.
    pub check_interval: Duration,
    /// Health checks start with a PROXY header too (`check-send-proxy`), as an AWS NLB's
    /// do when proxy protocol v2 is on.
    pub check_send_proxy: bool,
}

impl BalancerSpec {
    /// HAProxy's configuration file.
    pub fn haproxy_config(&self) -> String {
        let mut text = String::from(
            "global\n    maxconn 4096\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    \
             timeout server 1h\n    retries 2\n    option redispatch\n",
        );
        let inter = self.check_interval.as_millis();
        let check_proxy = if self.check_send_proxy {
            " check-send-proxy"
        } else {
            ""
        };
        for pool in &self.pools {
            let _ = write!(
                text,
                "\nfrontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}\n\n\
                 backend {name}\n    balance {balance}\n    option httpchk\n    \
                 http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost\n    \
                 http-check expect status 200\n    \
                 default-server send-proxy-v2{check_proxy} inter {inter}ms fall 2 rise 2\n",
                name = pool.name,
                port = pool.port,
                balance = self.balance,
            );
            for b in &pool.backends {
                let _ = writeln!(
                    text,
                    "    server {} 127.0.0.1:{} check port {}",
                    b.name, b.port, b.admin_port
                );
            }
        }
        let _ = write!(
            text,
            "\nlisten stats\n    bind 127.0.0.1:{}\n    mode http\n    stats enable\n    \
             stats uri /stats\n",
            self.stats_port
        );
        text
    }
}

/// `haproxy` on the `PATH` or in `/usr/sbin`, if installed.
pub fn haproxy_binary() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// A running HAProxy, stopped on drop.
#[derive(Debug)]
pub struct HaProxy {
    child: Mutex<Option<Child>>,
    pub spec: BalancerSpec,
    pub log_path: PathBuf,
}

/// One row of the statistics page: a server (instance) or a backend's total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStats {
    /// The pool (backend) it belongs to.
    pub pool: String,
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2`, `MAINT`, ...
    pub status: String,
    /// Connections retried, and redispatched to another server.
    pub retries: u64,
    pub redispatches: u64,
}

impl HaProxy {
    /// Writes the configuration into `dir`, starts HAProxy in the foreground and waits
    /// until it accepts connections.
    pub async fn start(dir: &Path, spec: BalancerSpec) -> Result<HaProxy, String> {
        let binary = haproxy_binary().ok_or("haproxy is not installed (Debian: haproxy)")?;
        let config_path = dir.join("haproxy.cfg");
        let log_path = dir.join("haproxy.log");
        fs::write(&config_path, spec.haproxy_config()).map_err(|e| e.to_string())?;
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(binary);
        command
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let child =
            process::spawn_tied_to_test(command, Signal::SIGKILL).map_err(|e| e.to_string())?;
        let haproxy = HaProxy {
            child: Mutex::new(Some(child)),
            spec,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !crate::ports::port_accepts(haproxy.spec.stats_port) {
            if Instant::now() >= deadline {
                return Err(format!("haproxy did not start:\n{}", haproxy.log()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(haproxy)
    }

    /// Where the first pool's clients connect.
    pub fn port(&self) -> u16 {
        self.spec.pools[0].port
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The instances of every pool and each pool's total (named `BACKEND`), from the
    /// statistics page.
    pub fn stats(&self) -> io::Result<Vec<ServerStats>> {
        server_stats(self.spec.stats_port, &self.spec.pools)
    }

    /// The status of instance `name` (`UP`, `DOWN`, ...) in the first pool it is in.
    pub fn status(&self, name: &str) -> Option<String> {
        self.stats()
            .ok()?
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.status)
    }

    /// Waits until every instance named in `names` has a status starting with `status`.
    pub async fn wait_for_status(&self, names: &[&str], status: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if names
                .iter()
                .all(|n| self.status(n).is_some_and(|s| s.starts_with(status)))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            let _ = process::terminate(&mut child, Signal::SIGTERM, Duration::from_secs(3));
        }
    }
}

/// The servers of `pools` and each pool's total (named `BACKEND`), from the statistics page
/// of the HAProxy whose stats listener is 127.0.0.1:`stats_port`.
pub fn server_stats(stats_port: u16, pools: &[Pool]) -> io::Result<Vec<ServerStats>> {
    let csv = http_get(stats_port, "/stats;csv")?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(st), Some(retr), Some(redis)) = (
        column("pxname"),
        column("svname"),
        column("status"),
        column("wretr"),
        column("wredis"),
    ) else {
        return Err(io::Error::other(format!("unexpected statistics: {csv}")));
    };
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    Ok(lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px).is_some_and(|p| names.contains(p)) && f.len() > sv.max(st))
        // A frontend of the same name as its pool has a row of its own.
        .filter(|f| f[sv] != "FRONTEND")
        .map(|f| ServerStats {
            pool: f[px].to_string(),
            name: f[sv].to_string(),
            status: f[st].to_string(),
            retries: f[retr].parse().unwrap_or(0),
            redispatches: f[redis].parse().unwrap_or(0),
        })
        .collect())
}

/// A plain HTTP/1.0 GET on 127.0.0.1; the body (HAProxy 2.6 answers it chunked).
pub fn http_get(port: u16, path: &str) -> io::Result<String> {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    tcp.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).map_err(io::Error::other)?;
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok(out)
}
