//! The sandbox's proxies: one by default, or `--instances N` behind HAProxy as production
//! runs them (docs/operations.md). Every instance serves metrics and health on its admin
//! listener and writes its audit records to a file in the sandbox directory.
//!
//! With several instances HAProxy takes the ports the service file names (one per target)
//! and sends a PROXY v2 header to the instances, which listen on ports of their own,
//! trust 127.0.0.0/8 for the header, and forward cancel requests to each other
//! (`[peering]`). HAProxy checks each instance's `/readyz`.

use super::{listening_ports, say, wait_until, Supervised, PROXY_BIN};
use anyhow::Context as _;
use proxy_testkit::balancer::{haproxy_binary, server_stats, Backend, BalancerSpec, Pool};
use proxy_testkit::ports::free_port;
use proxy_testkit::stack::StackLayout;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One proxy the sandbox runs.
pub struct Instance {
    /// `proxy`, or `proxy-1`, `proxy-2`, ... behind HAProxy.
    pub name: String,
    pub config: PathBuf,
    pub admin_port: u16,
    pub audit: PathBuf,
    /// Its listeners for the targets `cluster`, `cluster-iam` and `serverless`.
    pub listeners: [u16; 3],
}

/// What the sandbox runs in front of the emulator.
pub struct Plan {
    pub instances: Vec<Instance>,
    /// HAProxy, with several instances.
    pub balancer: Option<BalancerSpec>,
}

/// The pools of the balancer: the service file's three ports, by target.
const TARGETS: [&str; 3] = ["cluster", "cluster_iam", "serverless"];

/// Writes the configuration of every instance (`header` first) and, with several, of
/// HAProxy; each is loaded once to fail here, with the reason, rather than in a child.
pub fn plan(dir: &Path, layout: &StackLayout, header: &str, count: u8) -> anyhow::Result<Plan> {
    let ports = layout.ports;
    let public = [ports.cluster, ports.cluster_iam, ports.serverless];
    if count <= 1 {
        let instance = Instance {
            name: "proxy".into(),
            config: dir.join("proxy.toml"),
            admin_port: free_port(),
            audit: dir.join("audit.jsonl"),
            listeners: public,
        };
        let text = format!(
            "{header}{}{}",
            layout.proxy_config,
            operations(&instance, None)
        );
        write_checked(&instance.config, &text)?;
        return Ok(Plan {
            instances: vec![instance],
            balancer: None,
        });
    }
    let instances: Vec<Instance> = (1..=count)
        .map(|id| Instance {
            name: format!("proxy-{id}"),
            config: dir.join(format!("proxy-{id}.toml")),
            admin_port: free_port(),
            audit: dir.join(format!("audit-{id}.jsonl")),
            listeners: [free_port(), free_port(), free_port()],
        })
        .collect();
    for (i, instance) in instances.iter().enumerate() {
        let mut config = layout.proxy_config.clone();
        for (from, to) in public.iter().zip(instance.listeners) {
            config = config.replace(
                &format!("bind = \"127.0.0.1:{from}\"\n"),
                &format!(
                    "bind = \"127.0.0.1:{to}\"\nproxy_protocol = true\n\
                     proxy_protocol_from = [\"127.0.0.0/8\"]\n"
                ),
            );
        }
        let text = format!(
            "{header}# Instance {} of {count} behind HAProxy (haproxy.cfg), which listens on the ports\n\
             # the service file names and sends each connection with a PROXY v2 header.\n\n\
             {config}{}",
            i + 1,
            operations(instance, Some((i, &instances)))
        );
        write_checked(&instance.config, &text)?;
    }
    let balancer = BalancerSpec {
        pools: TARGETS
            .iter()
            .zip(public)
            .enumerate()
            .map(|(t, (name, port))| Pool {
                name: (*name).to_string(),
                port,
                backends: instances
                    .iter()
                    .map(|i| Backend {
                        name: i.name.clone(),
                        port: i.listeners[t],
                        admin_port: i.admin_port,
                    })
                    .collect(),
            })
            .collect(),
        stats_port: free_port(),
        balance: "leastconn",
        check_interval: Duration::from_secs(1),
        check_send_proxy: false,
    };
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, balancer.haproxy_config())
        .with_context(|| format!("cannot write {}", cfg.display()))?;
    Ok(Plan {
        instances,
        balancer: Some(balancer),
    })
}

/// The admin listener and the audit file; with `peers` (this instance's index among all),
/// what running behind a balancer takes.
fn operations(instance: &Instance, peers: Option<(usize, &[Instance])>) -> String {
    let mut text = format!(
        "\n# --- Operations ------------------------------------------------------------------------\n\
         # Metrics for Prometheus and health for load balancers and orchestrators:\n\
         # http://127.0.0.1:{admin}/metrics, /readyz, /livez, /startupz (docs/operations.md).\n\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\n\
         # One JSON line per connection: who, what was granted, how it ended.\n\
         [audit]\npath = {audit:?}\n",
        admin = instance.admin_port,
        audit = instance.audit,
    );
    let Some((me, all)) = peers else {
        return text;
    };
    let _ = write!(
        text,
        "\n# On SIGTERM /readyz turns 503 at once; HAProxy (checking every second, two failures)\n\
         # stops sending new clients before the listeners close.\n\
         [shutdown]\nlistener_close_delay = \"3s\"\n\n\
         # psql's Ctrl-C is a new connection, which HAProxy may send to another instance: the\n\
         # cancel keys carry this id, and a request for another instance goes to that peer.\n\
         [peering]\nid = {}\n",
        me + 1
    );
    for (j, peer) in all.iter().enumerate().filter(|(j, _)| *j != me) {
        let _ = write!(
            text,
            "\n[[peering.peer]]\nid = {}\naddress = \"127.0.0.1:{}\"\nproxy_protocol = true\n",
            j + 1,
            peer.listeners[0]
        );
    }
    text
}

fn write_checked(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    proxy_config::Config::load(path)
        .map(|_| ())
        .with_context(|| format!("the generated {} does not load", path.display()))
}

/// Starts `instance` and waits until its listeners and admin listener are bound (read from
/// the kernel: a probe connection would be a client without a PROXY header).
pub async fn start_proxy(
    bin_dir: &Path,
    dir: &Path,
    instance: Instance,
) -> anyhow::Result<(Instance, Supervised)> {
    say(
        "sandbox",
        &format!("starting redshift-iam-proxy ({})", instance.name),
    );
    let mut command = Command::new(bin_dir.join(PROXY_BIN));
    command
        .arg("run")
        .arg("--config")
        .arg(&instance.config)
        .current_dir(dir);
    // AWS settings of the developer's shell (profiles, endpoint overrides, keys) must not
    // steer the sandbox's proxy away from the emulator.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    let mut child = Supervised::spawn(&instance.name, command)?;
    let mut ports = instance.listeners.to_vec();
    ports.push(instance.admin_port);
    wait_until(&mut child, Duration::from_secs(60), || {
        let listening = listening_ports();
        ports.iter().all(|port| listening.contains(port))
    })
    .await?;
    Ok((instance, child))
}

/// Starts HAProxy (`haproxy.cfg`, written by [`plan`]) and waits until it sees every
/// instance up.
pub async fn start_balancer(
    dir: &Path,
    spec: BalancerSpec,
) -> anyhow::Result<(BalancerSpec, Supervised)> {
    let Some(binary) = haproxy_binary() else {
        anyhow::bail!("--instances needs HAProxy: apt-get install haproxy");
    };
    say("sandbox", "starting HAProxy in front of the proxies");
    let mut command = Command::new(binary);
    command
        .arg("-db")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .current_dir(dir);
    let mut child = Supervised::spawn("haproxy", command)?;
    let stats = spec.stats_port;
    wait_until(&mut child, Duration::from_secs(30), || {
        server_stats(stats, &spec.pools).is_ok_and(|servers| {
            servers
                .iter()
                .filter(|s| s.name != "BACKEND")
                .all(|s| s.status == "UP")
        })
    })
    .await?;
    Ok((spec, child))
}
