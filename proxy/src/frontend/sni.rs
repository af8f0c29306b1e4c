//! Several server certificates on one listener, chosen by the server name (SNI) the client
//! asks for, so a client can keep connecting to an old host name (a cluster endpoint that
//! DNS now points at the proxy) and still verify the certificate in full.
//!
//! Names are exact DNS names or `*.domain` for exactly one leading label, compared
//! case-insensitively; an exact name wins over a wildcard. A client that sends no name (it
//! connected by IP address) or a name no entry serves gets the listener's default
//! certificate: either it is routed to the listener's target, or, with `strict_sni`, it is
//! refused after the handshake with an ErrorResponse (see [`ServerNameRefusal`]), which
//! tells the client why, where a TLS alert would not.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// One `[[listener.certificates]]` entry, loaded.
pub(crate) struct SniEntry {
    /// The configured names, lowercase (for logs and errors).
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// The listener's certificates by server name: rustls asks it which certificate to present,
/// the session asks it which entry (and so which target) the client's name selected.
pub struct SniCertificates {
    default: Arc<CertifiedKey>,
    entries: Vec<SniEntry>,
    /// Exact name → entry index.
    exact: HashMap<String, usize>,
    /// Domain of a `*.domain` pattern → entry index.
    wildcard: HashMap<String, usize>,
}

impl std::fmt::Debug for SniCertificates {
    // The certified keys hold private keys; show only the names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniCertificates")
            .field(
                "entries",
                &self.entries.iter().map(|e| &e.names).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SniCertificates {
    /// `entries` come from the validated configuration: names are syntactically valid
    /// patterns and unique across entries.
    pub(crate) fn new(default: Arc<CertifiedKey>, entries: Vec<SniEntry>) -> SniCertificates {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            for name in &entry.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(domain) => wildcard.insert(domain.to_string(), i),
                    None => exact.insert(name, i),
                };
            }
        }
        SniCertificates {
            default,
            entries,
            exact,
            wildcard,
        }
    }

    /// The index of the `[[listener.certificates]]` entry serving `server_name`, if any.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        // rustls already lowercases the name; configured names are compared the same way
        // whatever the source.
        let name = server_name?.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }
}

impl ResolvesServerCert for SniCertificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Unknown names get the default certificate even in strict mode: the refusal comes
        // after the handshake, as an ErrorResponse the client can show.
        Some(match self.lookup(client_hello.server_name()) {
            Some(i) => self.entries[i].key.clone(),
            None => self.default.clone(),
        })
    }
}

/// Whether the DNS names of a certificate (`sans`, from its subject alternative names)
/// cover the configured server name pattern `name`. Both lowercase.
///
/// An exact name is covered by the same SAN or by a wildcard SAN for its parent domain
/// (RFC 6125: the wildcard stands for exactly one whole label). A wildcard pattern is
/// covered only by the same wildcard SAN: no set of exact SANs covers every name it
/// matches.
pub(crate) fn covered_by(name: &str, sans: &[String]) -> bool {
    sans.iter().any(|san| {
        let san = san.trim_end_matches('.');
        if san == name {
            return true;
        }
        if name.starts_with("*.") {
            return false;
        }
        match (san.strip_prefix("*."), name.split_once('.')) {
            (Some(domain), Some((_, parent))) => domain == parent,
            _ => false,
        }
    })
}

/// A client refused because of the server name it asked for (listeners with
/// `strict_sni`). Clients are told with SQLSTATE 28000, as PostgreSQL refuses a connection
/// no `pg_hba.conf` line admits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerNameRefusal {
    #[error("the client sent no TLS server name (SNI); this listener requires one")]
    Missing,
    #[error("server name {0:?} is not served by this listener")]
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_are_covered_by_the_same_san_or_a_wildcard_for_their_parent() {
        let s = sans(&["db.corp.example", "*.eu-west-1.redshift.amazonaws.com"]);
        assert!(covered_by("db.corp.example", &s));
        assert!(covered_by("analytics.eu-west-1.redshift.amazonaws.com", &s));
        assert!(!covered_by("other.corp.example", &s));
        // A wildcard stands for one label, not several, and not for none.
        assert!(!covered_by(
            "a.analytics.eu-west-1.redshift.amazonaws.com",
            &s
        ));
        assert!(!covered_by("eu-west-1.redshift.amazonaws.com", &s));
    }

    #[test]
    fn a_wildcard_pattern_needs_the_same_wildcard_san() {
        assert!(covered_by("*.corp.example", &sans(&["*.corp.example"])));
        assert!(!covered_by(
            "*.corp.example",
            &sans(&["a.corp.example", "b.corp.example"])
        ));
    }

    fn resolver(entries: &[&[&str]]) -> SniCertificates {
        // Matching never touches the keys; one key stands in for all.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = Arc::new(
            CertifiedKey::from_der(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                &provider,
            )
            .unwrap(),
        );
        SniCertificates::new(
            certified.clone(),
            entries
                .iter()
                .map(|names| SniEntry {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    key: certified.clone(),
                })
                .collect(),
        )
    }

    #[test]
    fn lookup_prefers_exact_names_and_matches_one_label_wildcards_case_insensitively() {
        let r = resolver(&[&["*.corp.example"], &["db.corp.example", "Legacy.Example"]]);
        assert_eq!(r.lookup(Some("db.corp.example")), Some(1));
        assert_eq!(r.lookup(Some("bi.corp.example")), Some(0));
        assert_eq!(r.lookup(Some("BI.Corp.Example")), Some(0));
        assert_eq!(r.lookup(Some("legacy.example")), Some(1));
        assert_eq!(r.lookup(Some("legacy.example.")), Some(1));
        assert_eq!(r.lookup(Some("a.b.corp.example")), None);
        assert_eq!(r.lookup(Some("corp.example")), None);
        assert_eq!(r.lookup(Some("elsewhere.example")), None);
        assert_eq!(r.lookup(None), None);
    }

    #[test]
    fn debug_output_shows_names_only() {
        let r = resolver(&[&["db.corp.example"]]);
        assert_eq!(
            format!("{r:?}"),
            r#"SniCertificates { entries: [["db.corp.example"]], .. }"#
        );
    }
}
