//! Several proxy instances of one [`World`] behind HAProxy ([`crate::balancer`]), peered
//! for cancel requests: what production runs for availability (issue 16).
//!
//! ```text
//! client ──▶ HAProxy ──PROXY v2──▶ proxy 1 ─┐   (peers forward cancel requests
//!   (source 127.0.0.x)            proxy 2 ─┼─▶  to the instance whose key it is)
//!                                 proxy 3 ─┘
//! ```
//!
//! Every instance is the `redshift-iam-proxy` binary with the world's configuration, its
//! `main` listener on a fixed port with `proxy_protocol = true` (trusting 127.0.0.0/8),
//! its admin listener (HAProxy checks `/readyz`), its own audit file, `[peering] id` and
//! the others as peers. Clients choose their source address on the loopback network
//! ([`connect_from`]), so the address the balancer relays is told apart from its own.

use crate::balancer::{Backend, BalancerSpec, HaProxy, Pool};
use crate::config::{path, strings, ProxyConfig, Table};
use crate::pki::ClientCert;
use crate::ports::free_port;
use crate::proxy::ProxyProcess;
use crate::world::World;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// One instance of the fleet.
pub struct Instance {
    /// Its `[peering] id` (1, 2, ...) and the balancer's name for it (`proxy-<id>`).
    pub id: u8,
    pub name: String,
    pub port: u16,
    pub admin_port: u16,
    pub audit_path: PathBuf,
    pub process: ProxyProcess,
}

/// See the module documentation.
pub struct Fleet {
    pub instances: Vec<Instance>,
    pub balancer: HaProxy,
    /// The CA clients verify the instances with.
    pub ca: PathBuf,
}

impl Fleet {
    /// Starts `n` instances of `world`'s configuration (each adjusted by `adjust`), and
    /// HAProxy in front of them (`roundrobin`, checks every 250 ms); returns once HAProxy
    /// sees every instance up.
    pub async fn start(world: &World, n: u8, adjust: impl Fn(ProxyConfig) -> ProxyConfig) -> Fleet {
        let ports: Vec<(u8, u16, u16)> = (1..=n).map(|id| (id, free_port(), free_port())).collect();
        let mut instances = Vec::new();
        for &(id, port, admin_port) in &ports {
            let audit_path = world.dir().join(format!("audit-{id}.jsonl"));
            let config = adjust(instance_config(
                world,
                id,
                port,
                admin_port,
                &ports,
                &audit_path,
            ));
            let process = ProxyProcess::builder(config.to_toml(), world.dir())
                // The admin listener is bound after the client listeners; a probe of the
                // client port would be a connection without a PROXY header.
                .wait_for_port(admin_port)
                .startup_timeout(Duration::from_secs(30))
                .start()
                .await
                .expect("a proxy instance starts");
            instances.push(Instance {
                id,
                name: format!("proxy-{id}"),
                port,
                admin_port,
                audit_path,
                process,
            });
        }
        let spec = BalancerSpec {
            pools: vec![Pool {
                name: "redshift_iam_proxy".into(),
                port: free_port(),
                backends: instances
                    .iter()
                    .map(|i| Backend {
                        name: i.name.clone(),
                        port: i.port,
                        admin_port: i.admin_port,
                    })
                    .collect(),
            }],
            stats_port: free_port(),
            balance: "roundrobin",
            check_interval: Duration::from_millis(250),
            // As an NLB with proxy protocol v2 does: the admin listener takes the header.
            check_send_proxy: true,
        };
        let balancer = HaProxy::start(world.dir(), spec)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        assert!(
            balancer
                .wait_for_status(&names, "UP", Duration::from_secs(10))
                .await,
            "HAProxy sees every instance up: {:?}\n{}",
            balancer.stats(),
            balancer.log()
        );
        Fleet {
            instances,
            balancer,
            ca: world.pki.ca_cert_path().to_path_buf(),
        }
    }

    /// Where clients connect: the balancer.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.balancer.port()))
    }

    /// The audit records instance `i` (0-based) has written so far.
    pub fn audit(&self, i: usize) -> Vec<Value> {
        read_records(&self.instances[i].audit_path)
    }

    /// Every instance's audit records, each with the instance's index.
    pub fn all_audit(&self) -> Vec<(usize, Value)> {
        (0..self.instances.len())
            .flat_map(|i| self.audit(i).into_iter().map(move |r| (i, r)))
            .collect()
    }

    /// tokio-postgres through the balancer from `source` (a 127.0.0.0/8 address).
    pub async fn connect_from(
        &self,
        source: IpAddr,
        cert: &ClientCert,
    ) -> Result<Connected, tokio_postgres::Error> {
        connect_from(source, self.addr(), &self.ca, cert).await
    }
}

/// A client session: the client and its connection task.
pub struct Connected {
    pub client: tokio_postgres::Client,
    pub connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    tls: MakeRustlsConnect,
}

impl Connected {
    /// Sends a cancel request for this session (as psql does on Ctrl-C) on a new
    /// connection from `source` to `addr`.
    pub async fn cancel_from(
        &self,
        source: IpAddr,
        addr: SocketAddr,
    ) -> Result<(), tokio_postgres::Error> {
        let stream = tcp_from(source, addr).await;
        let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(&mut self.tls.clone(), "localhost")
            .expect("TLS");
        self.client
            .cancel_token()
            .cancel_query_raw(stream, tls)
            .await
    }
}

/// tokio-postgres to `addr` from `source`, verify-full against `ca`, as `cert`'s CN on
/// `dev`.
pub async fn connect_from(
    source: IpAddr,
    addr: SocketAddr,
    ca: &Path,
    cert: &ClientCert,
) -> Result<Connected, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(addr.port())
        .user(&cert.common_name)
        .dbname(crate::stack::DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let mut tls = MakeRustlsConnect::new(crate::client::client_tls(ca, Some(cert)));
    let stream = tcp_from(source, addr).await;
    let connect_tls =
        MakeTlsConnect::<TcpStream>::make_tls_connect(&mut tls, "localhost").expect("TLS");
    let (client, connection) = config.connect_raw(stream, connect_tls).await?;
    Ok(Connected {
        client,
        connection: tokio::spawn(connection),
        tls,
    })
}

/// A TCP connection to `addr` from `source`.
pub async fn tcp_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(addr).await.expect("connect")
}

/// `world`'s configuration for instance `id` of the fleet whose instances are `all`
/// (`(id, port, admin port)`).
fn instance_config(
    world: &World,
    id: u8,
    port: u16,
    admin_port: u16,
    all: &[(u8, u16, u16)],
    audit: &Path,
) -> ProxyConfig {
    let peers: Vec<toml::Value> = all
        .iter()
        .filter(|(other, _, _)| *other != id)
        .map(|&(other, other_port, _)| {
            let mut peer = Table::default();
            peer.set("id", i64::from(other));
            peer.set("address", format!("127.0.0.1:{other_port}"));
            peer.set("proxy_protocol", true);
            peer.into_value()
        })
        .collect();
    world
        .config()
        .edit_listener("main", |l| {
            l.set("bind", format!("127.0.0.1:{port}"))
                .set("proxy_protocol", true)
                .set("proxy_protocol_from", strings(["127.0.0.0/8"]))
        })
        .set("log", "level", "info")
        .set("admin", "bind", format!("127.0.0.1:{admin_port}"))
        .set("audit", "path", path(audit))
        .set("peering", "id", i64::from(id))
        .set("peering", "peer", toml::Value::Array(peers))
}

fn read_records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}
