//! [`UpstreamEndpoint`]: everything needed to reach one `[[target]]`, built once at startup.

use super::scram::SaltedPasswordCache;
use crate::net::SocketOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to reach and verify one upstream.
#[derive(Clone)]
pub struct UpstreamEndpoint {
    /// Name the certificate is verified against (always, even when `dial` differs).
    pub host: String,
    pub port: u16,
    /// Where the TCP connection actually goes (e.g. a VPC endpoint).
    pub dial_host: String,
    pub dial_port: u16,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    /// TCP keepalive and user timeout, set on every upstream connection as it is made.
    pub socket_options: SocketOptions,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// SCRAM salted passwords of the credentials used with this upstream (shared by
    /// clones; a reload builds a new endpoint and starts empty).
    pub(crate) scram_cache: Arc<SaltedPasswordCache>,
}

impl std::fmt::Debug for UpstreamEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dial_host", &self.dial_host)
            .field("dial_port", &self.dial_port)
            .field("connect_timeout", &self.connect_timeout)
            .field("login_timeout", &self.login_timeout)
            .finish_non_exhaustive()
    }
}

/// A `[[target]]` whose upstream settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("target {target}: host {host:?} is not a valid DNS name or IP address")]
    InvalidHost { target: String, host: String },
    #[error("target {target}: dial {dial:?} is not \"host\" or \"host:port\"")]
    InvalidDial { target: String, dial: String },
    #[error("target {target}: cannot read CA bundle {}: {source}", path.display())]
    CaBundleRead {
        target: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("target {target}: CA bundle {} is not valid PEM: {detail}", path.display())]
    CaBundlePem {
        target: String,
        path: PathBuf,
        detail: String,
    },
    #[error("target {target}: CA bundle {} contains no usable CA certificate ({rejected} unparsable)", path.display())]
    CaBundleEmpty {
        target: String,
        path: PathBuf,
        rejected: usize,
    },
    #[error("target {target}: cannot build the TLS client configuration: {source}")]
    Tls {
        target: String,
        #[source]
        source: rustls::Error,
    },
}

impl UpstreamEndpoint {
    /// Builds the endpoint for one `[[target]]`: parses `dial`, loads the CA bundle (or the
    /// bundled Mozilla roots, which include Amazon Root CA 1-4) and prepares a verify-full
    /// TLS 1.2+ client configuration.
    pub fn from_config(target: &proxy_config::TargetConfig) -> Result<Self, UpstreamSetupError> {
        let server_name = ServerName::try_from(target.host.clone()).map_err(|_| {
            UpstreamSetupError::InvalidHost {
                target: target.name.clone(),
                host: target.host.clone(),
            }
        })?;
        let (dial_host, dial_port) = match &target.dial {
            None => (target.host.clone(), target.port),
            Some(dial) => {
                parse_dial(dial, target.port).ok_or_else(|| UpstreamSetupError::InvalidDial {
                    target: target.name.clone(),
                    dial: dial.clone(),
                })?
            }
        };
        let roots = match &target.ca_bundle {
            Some(path) => load_ca_bundle(&target.name, path)?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let tls = client_config(roots).map_err(|source| UpstreamSetupError::Tls {
            target: target.name.clone(),
            source,
        })?;
        Ok(UpstreamEndpoint {
            host: target.host.clone(),
            port: target.port,
            dial_host,
            dial_port,
            connect_timeout: target.connect_timeout,
            login_timeout: target.login_timeout,
            socket_options: SocketOptions::default(),
            server_name,
            tls: Arc::new(tls),
            scram_cache: Arc::default(),
        })
    }
}

/// A verify-full client configuration: the default rustls verifier (chain to `roots` plus
/// host name), aws-lc-rs, TLS 1.2 and 1.3 only, no client certificate.
pub(crate) fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn load_ca_bundle(target: &str, path: &Path) -> Result<RootCertStore, UpstreamSetupError> {
    let pem = std::fs::read(path).map_err(|source| UpstreamSetupError::CaBundleRead {
        target: target.into(),
        path: path.into(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamSetupError::CaBundlePem {
            target: target.into(),
            path: path.into(),
            detail: e.to_string(),
        })?;
    let mut roots = RootCertStore::empty();
    let (_added, rejected) = roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(UpstreamSetupError::CaBundleEmpty {
            target: target.into(),
            path: path.into(),
            rejected,
        });
    }
    Ok(roots)
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address is taken whole.
fn parse_dial(dial: &str, default_port: u16) -> Option<(String, u16)> {
    let dial = dial.trim();
    if dial.is_empty() {
        return None;
    }
    if let Some(rest) = dial.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if host.is_empty() {
            return None;
        }
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host.to_string(), port));
    }
    match dial.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((dial.to_string(), default_port)),
        Some((host, port)) if !host.is_empty() => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((dial.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_forms() {
        assert_eq!(
            parse_dial("vpce.example", 5439),
            Some(("vpce.example".into(), 5439))
        );
        assert_eq!(
            parse_dial("vpce.example:6000", 5439),
            Some(("vpce.example".into(), 6000))
        );
        assert_eq!(parse_dial("[::1]:7000", 5439), Some(("::1".into(), 7000)));
        assert_eq!(parse_dial("[::1]", 5439), Some(("::1".into(), 5439)));
        assert_eq!(parse_dial("::1", 5439), Some(("::1".into(), 5439)));
        assert_eq!(parse_dial("host:notaport", 5439), None);
        assert_eq!(parse_dial("host:70000", 5439), None);
        assert_eq!(parse_dial(":5439", 5439), None);
        assert_eq!(parse_dial("", 5439), None);
    }
}
