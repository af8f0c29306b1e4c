//! Everything one configuration determines, loaded once and replaced as a whole on reload:
//! listener TLS, upstream endpoints, the policy, limits.

use super::revocation::{client_ca_warnings, Revocation};
use crate::audit::AuditOpenError;
use crate::backend::{UpstreamEndpoint, UpstreamSetupError, WarmPool};
use crate::frontend::{FrontendSettings, ServerNameRefusal, TlsSetupError};
use crate::metrics::{CertificateExpiry, Metrics};
use crate::net::SocketOptions;
use crate::reuse::{ReuseSettings, SessionPool};
use proxy_auth::policy::{Policy, PolicyError};
use proxy_config::{Arn, Cidr, Config, LimitsConfig, ListenAddress, ShutdownConfig, TargetKind};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Why the proxy could not be set up from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("listener {listener}: {source}")]
    ClientTls {
        listener: String,
        #[source]
        source: Box<TlsSetupError>,
    },
    #[error("target {target}: {source}")]
    Upstream {
        target: String,
        #[source]
        source: UpstreamSetupError,
    },
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("listener {listener}: no target to route to")]
    NoTarget { listener: String },
    #[error("listener {listener}: certificates[{index}]: no target named {target:?}")]
    NoSniTarget {
        listener: String,
        index: usize,
        target: String,
    },
    #[error("listener {listener}: cannot bind {bind}: {source}")]
    Bind {
        listener: String,
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener: cannot bind {bind}: {source}")]
    AdminBind {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener: {0}")]
    AdminAccess(String),
    #[error("audit: {0}")]
    Audit(#[from] AuditOpenError),
}

/// An upstream target and how to reach it.
pub struct TargetContext {
    pub name: String,
    /// Decides which startup parameters go upstream.
    pub kind: TargetKind,
    /// How long logins retry an upstream that looks like it is resuming.
    pub resume_wait: Duration,
    /// `[[target]] application_name`: the template of the name sent upstream.
    pub application_name: Option<String>,
    pub endpoint: Arc<UpstreamEndpoint>,
    /// Connections to `endpoint` with TCP and TLS done, for new logins.
    pub warm: WarmPool,
    /// Logged-in sessions kept for the next client of the same identity (`session_reuse`).
    pub sessions: SessionPool,
}

impl TargetContext {
    /// Starts what this target keeps for later logins (see [`State::start_pools`]).
    fn start_pools(&self, metrics: &Metrics) {
        self.warm.start(metrics.upstream.warm(&self.name));
        self.sessions.start(metrics.upstream.reuse(&self.name));
    }

    fn stop_pools(&self) {
        self.warm.stop();
        self.sessions.stop();
    }
}

/// Per-listener state.
pub struct ListenerContext {
    pub name: String,
    pub bind: ListenAddress,
    pub frontend: FrontendSettings,
    /// Where clients go unless their server name selects a `certificates` entry with a
    /// target of its own.
    pub target: Arc<TargetContext>,
    /// Target of each `[[listener.certificates]]` entry, by index (the listener's target
    /// where the entry names none).
    pub sni_targets: Vec<Arc<TargetContext>>,
    pub strict_sni: bool,
    /// Connections this listener holds at once: its own `max_connections`, else
    /// `[limits] max_connections_per_listener`.
    pub max_connections: Option<usize>,
    /// `proxy_protocol`: the balancers trusted to send the PROXY header every connection
    /// must start with (`None`: clients connect directly).
    pub proxy_protocol_from: Option<Vec<Cidr>>,
}

impl ListenerContext {
    /// The target for a client that asked for `server_name` (SNI): the target of the
    /// `certificates` entry that served the name, else the listener's target, or a refusal
    /// when the listener has `strict_sni` and no entry served the name.
    pub fn route(
        &self,
        server_name: Option<&str>,
    ) -> Result<&Arc<TargetContext>, ServerNameRefusal> {
        let entry = self
            .frontend
            .tls
            .as_ref()
            .and_then(|tls| tls.sni().lookup(server_name));
        match entry {
            Some(i) => Ok(&self.sni_targets[i]),
            None if !self.strict_sni => Ok(&self.target),
            None => Err(match server_name {
                None => ServerNameRefusal::Missing,
                Some(name) => ServerNameRefusal::Unknown(name.to_string()),
            }),
        }
    }
}

/// Everything loaded from one configuration: replaced as a whole on reload.
pub struct State {
    /// 1 at start, +1 per successful reload.
    pub generation: u64,
    pub listeners: HashMap<String, Arc<ListenerContext>>,
    policy: Policy,
    pub limits: LimitsConfig,
    pub shutdown: ShutdownConfig,
    /// The IAM role credential calls use when a rule names none (Roles Anywhere).
    pub default_role: Option<Arn>,
    /// Pre-authentication slots (`[limits] max_handshakes`). A reload brings a fresh
    /// semaphore; handshakes in flight finish on the old one.
    pub handshakes: Arc<Semaphore>,
    pub certificates: Vec<CertificateExpiry>,
    /// What the listeners' CRLs revoke and when they expire.
    pub revocation: Revocation,
    /// Problems worth an operator's attention that do not stop the proxy (logged at load,
    /// printed by `check-config`).
    pub warnings: Vec<String>,
    config: Config,
}

/// The upstream of every `[[target]]`, by name.
fn build_targets(config: &Config) -> Result<HashMap<String, Arc<TargetContext>>, SetupError> {
    let mut targets = HashMap::new();
    for t in &config.targets {
        let mut endpoint =
            UpstreamEndpoint::from_config(t).map_err(|source| SetupError::Upstream {
                target: t.name.clone(),
                source,
            })?;
        endpoint.socket_options = SocketOptions::from_limits(&config.limits);
        let endpoint = Arc::new(endpoint);
        targets.insert(
            t.name.clone(),
            Arc::new(TargetContext {
                name: t.name.clone(),
                kind: t.kind,
                resume_wait: t.resume_wait(),
                application_name: t.application_name.clone(),
                warm: WarmPool::new(
                    endpoint.clone(),
                    t.warm_connections,
                    t.warm_connection_max_age,
                ),
                sessions: SessionPool::new(ReuseSettings::from_config(t)),
                endpoint,
            }),
        );
    }
    Ok(targets)
}

impl State {
    /// Loads every certificate, key, CA bundle, CRL and the policy the configuration names.
    /// Blocking file I/O: run it off the async runtime when the proxy is serving.
    pub fn build(config: &Config, generation: u64) -> Result<State, SetupError> {
        let targets = build_targets(config)?;
        let mut listeners = HashMap::new();
        let mut certificates = Vec::new();
        let mut revocation = Revocation::default();
        let mut warnings = Vec::new();
        for l in &config.listeners {
            let name = l.display_name().to_string();
            let frontend =
                FrontendSettings::from_listener(l).map_err(|source| SetupError::ClientTls {
                    listener: name.clone(),
                    source: Box::new(source),
                })?;
            let target = config
                .listener_target(l)
                .and_then(|t| targets.get(&t.name))
                .cloned()
                .ok_or_else(|| SetupError::NoTarget {
                    listener: name.clone(),
                })?;
            if let Some(tls_cert) = &l.tls_cert {
                certificates.extend(certificate_expiries(tls_cert, "server", &name, true));
            }
            let mut sni_targets = Vec::with_capacity(l.certificates.len());
            for (index, entry) in l.certificates.iter().enumerate() {
                certificates.extend(certificate_expiries(&entry.tls_cert, "server", &name, true));
                sni_targets.push(match &entry.target {
                    None => target.clone(),
                    Some(t) => targets
                        .get(t)
                        .cloned()
                        .ok_or_else(|| SetupError::NoSniTarget {
                            listener: name.clone(),
                            index,
                            target: t.clone(),
                        })?,
                });
            }
            if let Some(client_ca) = &l.client_ca {
                certificates.extend(certificate_expiries(client_ca, "client_ca", &name, false));
                warnings.extend(client_ca_warnings(&name, client_ca));
            }
            revocation.add_listener(&name, &l.client_crls);
            listeners.insert(
                name.clone(),
                Arc::new(ListenerContext {
                    name,
                    bind: l.bind.clone(),
                    frontend,
                    target,
                    sni_targets,
                    strict_sni: l.strict_sni,
                    max_connections: l
                        .max_connections
                        .or(config.limits.max_connections_per_listener),
                    proxy_protocol_from: l.proxy_protocol.then(|| l.proxy_protocol_from.clone()),
                }),
            );
        }
        if let Some(ra) = &config.aws.roles_anywhere {
            certificates.extend(certificate_expiries(
                &ra.certificate,
                "roles_anywhere",
                "",
                true,
            ));
        }
        Ok(State {
            generation,
            listeners,
            policy: Policy::compile(&config.policy, role_session_template(config))?,
            limits: config.limits.clone(),
            shutdown: config.shutdown.clone(),
            default_role: config
                .aws
                .roles_anywhere
                .as_ref()
                .map(|r| r.role_arn.clone()),
            handshakes: Arc::new(Semaphore::new(config.limits.max_handshakes)),
            certificates,
            revocation,
            warnings,
            config: config.clone(),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Every target once (listeners share them).
    fn targets(&self) -> Vec<Arc<TargetContext>> {
        let mut targets: Vec<Arc<TargetContext>> = Vec::new();
        for l in self.listeners.values() {
            for t in std::iter::once(&l.target).chain(&l.sni_targets) {
                if !targets.iter().any(|known| Arc::ptr_eq(known, t)) {
                    targets.push(t.clone());
                }
            }
        }
        targets
    }

    /// Starts filling the targets' warm connections (on the current tokio runtime): when
    /// this state starts serving. A state built only to be checked never dials.
    pub fn start_pools(&self, metrics: &Metrics) {
        for t in self.targets() {
            t.start_pools(metrics);
        }
    }

    /// Closes what the targets keep: when a reload replaces this state (sessions still
    /// running on it keep their own upstream connections) and at shutdown.
    pub fn stop_pools(&self) {
        for t in self.targets() {
            t.stop_pools();
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// `[aws.roles_anywhere] role_session_name` when it names one session per identity.
fn role_session_template(config: &Config) -> Option<&str> {
    let ra = config.aws.roles_anywhere.as_ref()?;
    ra.role_session_name
        .as_deref()
        .filter(|name| proxy_config::is_template(name))
}

/// notAfter of the certificates in a PEM file (only the first when `leaf_only`). Files were
/// already loaded successfully, so a parse problem here only means nothing is exported.
fn certificate_expiries(
    path: &Path,
    kind: &'static str,
    listener: &str,
    leaf_only: bool,
) -> Vec<CertificateExpiry> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use x509_parser::prelude::FromDer;
    let Ok(iter) = CertificateDer::pem_file_iter(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for der in iter.flatten() {
        if let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(&der) {
            out.push(CertificateExpiry {
                kind,
                listener: listener.to_string(),
                subject: cert.subject().to_string(),
                not_after_unix: cert.validity().not_after.timestamp(),
            });
        }
        if leaf_only {
            break;
        }
    }
    out
}
