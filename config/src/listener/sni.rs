//! `[[listener.certificates]]`: server certificates chosen by the name a client asks for
//! (SNI). Names must be usable as SNI patterns and unambiguous; whether each certificate
//! covers its names is checked when the certificate files are loaded.

use crate::address::is_dns_name;
use crate::problems::{KeyPath, Problems};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// A server certificate presented to clients that ask for one of `server_names`, and
/// optionally the target those clients are routed to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerCertificateConfig {
    /// DNS names matched case-insensitively against the client's SNI: exact names, or
    /// `*.domain` for any single label under `domain`. Each must be covered by the
    /// certificate's subject alternative names.
    pub server_names: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub tls_cert: PathBuf,
    /// PEM private key for `tls_cert`.
    pub tls_key: PathBuf,
    /// Target for clients that asked for one of these names (default: the listener's).
    /// Checked against the `[[target]]` names with the other cross-references.
    #[serde(default)]
    pub target: Option<String>,
}

impl ListenerCertificateConfig {
    /// A reload applies every key of an entry (the certificates are loaded anew). Every
    /// field is named, so a new one does not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let ListenerCertificateConfig {
            server_names: _,
            tls_cert: _,
            tls_key: _,
            target: _,
        } = self;
    }
}

/// Checks the entries of the listener at `listener` (`listener[0]`): each name on its
/// own, and that no name is served by two entries.
pub(super) fn check_entries(
    entries: &[ListenerCertificateConfig],
    listener: &KeyPath,
    p: &mut Problems,
) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (j, cert) in entries.iter().enumerate() {
        let key = listener.key("certificates").index(j).key("server_names");
        if cert.server_names.is_empty() {
            p.add(&key, "must list at least one DNS name");
        }
        for name in &cert.server_names {
            p.check(&key, check_server_name(name));
            if let Some(other) = seen.insert(name.to_ascii_lowercase(), j) {
                p.add(
                    &key,
                    format!("{name:?} is also listed in {listener}.certificates[{other}]"),
                );
            }
        }
    }
}

/// A DNS name, or `*.` followed by one (a wildcard for exactly one leading label).
fn check_server_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address; clients never send one as a server name (SNI), so \
             clients connecting by address get the listener's default certificate"
        ));
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Err(format!(
            "{name:?}: only a whole leading label may be a wildcard, as in \"*.corp.example\""
        ));
    }
    if !is_dns_name(base) {
        return Err(format!("{name:?} is not a DNS name"));
    }
    Ok(())
}
