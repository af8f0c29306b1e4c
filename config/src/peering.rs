//! `[peering]`: several instances behind one load balancer, which sends a client's cancel
//! request (a new connection) to any of them. Each instance's cancel keys carry its `id`;
//! an instance that receives a key of another forwards the request to that peer. The model
//! is PgBouncer's peering (`peer_id` and `[peers]`).

use crate::address::HostPort;
use crate::problems::{KeyPath, Problems};
use serde::Deserialize;
use std::collections::HashSet;

/// `[peering]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// This instance's id, 0-255, unique among the instances behind one balancer. The cancel
    /// keys clients receive carry it. Without it, keys are wholly random and cancel requests
    /// for other instances' sessions are unknown keys.
    #[serde(default)]
    pub id: Option<u8>,
    /// `[[peering.peer]]`: the other instances. An entry with this instance's own id is
    /// skipped, so every instance can share one list (and one file, each given its own id
    /// with `--peering-id`).
    #[serde(rename = "peer", default)]
    pub peers: Vec<PeerConfig>,
}

/// `[[peering.peer]]`: another instance and where it accepts cancel requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's `[peering] id`.
    pub id: u8,
    /// A listener of the peer (`IP:port` or `dns-name:port`): cancel requests are sent
    /// there as a client would send them, without TLS.
    pub address: HostPort,
    /// The peer's listener has `proxy_protocol = true` (and trusts this instance's address
    /// in `proxy_protocol_from`): forwarded requests start with a PROXY v2 header carrying
    /// the original client's address, so the peer's audit and rate limits see that client.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl PeeringConfig {
    /// The peer whose `id` is `id`.
    pub fn peer(&self, id: u8) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == id)
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        if self.id.is_none() && !self.peers.is_empty() {
            p.add(
                "peering.id",
                "required with [[peering.peer]] entries: this instance's own id, which its \
                 cancel keys carry (or --peering-id)",
            );
        }
        let mut ids = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if !ids.insert(peer.id) {
                p.add(
                    KeyPath::root("peering.peer").index(i).key("id"),
                    format!("duplicate peer id {}", peer.id),
                );
            }
        }
    }
}

/// What a reload cannot change of `[peering]`: the id, which the cancel keys of sessions
/// already open carry. The peers are applied by a reload.
#[derive(Debug, PartialEq, Eq)]
pub struct PeeringRestartOnly {
    pub id: Option<u8>,
}

impl PeeringConfig {
    /// Every field is named here, so a new one does not compile until it is classified.
    pub fn restart_only(&self) -> PeeringRestartOnly {
        let PeeringConfig { id, peers } = self;
        peers.iter().for_each(PeerConfig::all_reloadable);
        PeeringRestartOnly { id: *id }
    }
}

impl PeerConfig {
    fn all_reloadable(&self) {
        let PeerConfig {
            id: _,
            address: _,
            proxy_protocol: _,
        } = self;
    }
}

#[cfg(test)]
mod tests {
    use crate::root::Config;
    use std::path::Path;

    const BASE: &str = r#"
[[listener]]
bind = "127.0.0.1:5439"
tls_cert = "s.pem"
tls_key = "s.key"
client_ca = "ca.pem"

[[target]]
name = "prod"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"

[[policy.rule]]
name = "all"
match = { cn = "*" }
targets = ["*"]
users = ["{cn}"]
databases = ["dev"]
"#;

    fn problems(extra: &str) -> Vec<String> {
        let text = format!("{BASE}{extra}");
        match Config::from_toml(&text, Path::new("proxy.toml"), Path::new("/etc")) {
            Ok(_) => Vec::new(),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn a_peered_instance_names_its_own_id_and_distinct_peers() {
        // The list may name this instance too: every instance can share it.
        let ok = "[peering]\nid = 0\n[[peering.peer]]\nid = 0\naddress = \"10.0.3.7:5439\"\n\
                  [[peering.peer]]\nid = 2\naddress = \"10.0.3.8:5439\"\n\
                  [[peering.peer]]\nid = 3\naddress = \"proxy-3.proxy:5439\"\nproxy_protocol = true\n";
        assert_eq!(problems(ok), Vec::<String>::new());
        let bad = "[peering]\nid = 2\n[[peering.peer]]\nid = 4\naddress = \"10.0.3.9:5439\"\n\
                   [[peering.peer]]\nid = 4\naddress = \"10.0.3.9:5439\"\n";
        let found = problems(bad);
        assert!(
            found
                .iter()
                .any(|l| l.contains("peering.peer[1].id: duplicate peer id 4")),
            "{found:?}"
        );
    }

    #[test]
    fn peers_need_an_own_id_and_ids_fit_a_byte() {
        let found = problems("[[peering.peer]]\nid = 2\naddress = \"10.0.3.8:5439\"\n");
        assert!(
            found.iter().any(|l| l.contains("peering.id: required")),
            "{found:?}"
        );
        let found = problems("[peering]\nid = 300\n");
        assert!(found.iter().any(|l| l.contains("peering.id")), "{found:?}");
        let found = problems("[peering]\nid = 1\n[[peering.peer]]\nid = 2\naddress = \"x\"\n");
        assert!(
            found.iter().any(|l| l.contains("is not an address")),
            "{found:?}"
        );
    }
}
