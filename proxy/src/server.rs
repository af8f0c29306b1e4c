//! The running proxy: the reloadable state built from the configuration, the listeners and
//! their accept loops, connection limits, reload and graceful shutdown.
//!
//! Everything a configuration file determines (listener TLS, upstream endpoints, policy,
//! limits) lives in one immutable [`State`] behind an `ArcSwap`. Each connection takes the
//! current `Arc<State>` when it is accepted and keeps it to the end, so a reload (SIGHUP or
//! `POST /reload`) never touches established sessions and every new connection sees the
//! new state. A reload that fails at any step (unreadable file, invalid configuration,
//! broken certificate) leaves the last good state in place.

use crate::admin;
use crate::audit::{AuditLog, AuditOpenError, RefusalReason};
use crate::backend::{UpstreamEndpoint, UpstreamSetupError};
use crate::cancel::CancelRegistry;
use crate::frontend::{ClientSocket, FrontendSettings, ServerNameRefusal, TlsSetupError};
use crate::listen::{BoundListener, LocalAddress};
use crate::metrics::{
    labels, AuditCounts, AwsCallMetrics, CertificateExpiry, CredentialStats, Metrics, ScrapeSource,
};
use arc_swap::ArcSwap;
use proxy_auth::aws::AwsCredentials;
use proxy_auth::db_credentials::DbCredentialSource;
use proxy_auth::policy::{Policy, PolicyError};
use proxy_config::{Config, ConfigError, LimitsConfig, Overrides, ShutdownConfig, TargetConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

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
    #[error("audit: {0}")]
    Audit(#[from] AuditOpenError),
}

/// Why a reload was refused. The running state is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload from")]
    NoConfigFile,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Setup(#[from] SetupError),
    #[error("{0} (restart the proxy to apply this change)")]
    RestartRequired(String),
    #[error("audit: {0}")]
    Audit(#[from] AuditOpenError),
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("reload task failed: {0}")]
    Task(String),
}

/// An upstream target and how to reach it.
pub struct TargetContext {
    pub name: String,
    pub endpoint: Arc<UpstreamEndpoint>,
}

/// Per-listener state.
pub struct ListenerContext {
    pub name: String,
    pub bind: String,
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
    pub default_role: Option<String>,
    /// Pre-authentication slots (`[limits] max_handshakes`). A reload brings a fresh
    /// semaphore; handshakes in flight finish on the old one.
    pub handshakes: Arc<Semaphore>,
    pub certificates: Vec<CertificateExpiry>,
    config: Config,
}

impl State {
    /// Loads every certificate, key, CA bundle, CRL and the policy the configuration names.
    /// Blocking file I/O: run it off the async runtime when the proxy is serving.
    pub fn build(config: &Config, generation: u64) -> Result<State, SetupError> {
        let mut targets = HashMap::new();
        for t in &config.targets {
            let endpoint =
                UpstreamEndpoint::from_config(t).map_err(|source| SetupError::Upstream {
                    target: t.name.clone(),
                    source,
                })?;
            targets.insert(
                t.name.clone(),
                Arc::new(TargetContext {
                    name: t.name.clone(),
                    endpoint: Arc::new(endpoint),
                }),
            );
        }
        let mut listeners = HashMap::new();
        let mut certificates = Vec::new();
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
            }
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
            policy: Policy::new(&config.policy)?,
            limits: config.limits.clone(),
            shutdown: config.shutdown.clone(),
            default_role: config
                .aws
                .roles_anywhere
                .as_ref()
                .map(|r| r.role_arn.clone()),
            handshakes: Arc::new(Semaphore::new(config.limits.max_handshakes)),
            certificates,
            config: config.clone(),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
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

/// Refuses reloads that would need new sockets or a new AWS credential chain.
fn check_reloadable(old: &Config, new: &Config) -> Result<(), ReloadError> {
    // A Unix socket's mode is set when it is created.
    let listeners = |c: &Config| -> Vec<(String, String, Option<u32>)> {
        c.listeners
            .iter()
            .map(|l| {
                (
                    l.display_name().to_string(),
                    l.bind.clone(),
                    l.unix_socket_mode,
                )
            })
            .collect()
    };
    if listeners(old) != listeners(new) {
        return Err(ReloadError::RestartRequired(
            "the set of listeners, their bind addresses or Unix socket modes changed".into(),
        ));
    }
    // What the credential fetcher resolved at start: AWS-facing target settings.
    let aws_view = |t: &TargetConfig| {
        (
            t.name.clone(),
            t.kind,
            t.host.clone(),
            t.region.clone(),
            t.cluster_identifier.clone(),
            t.workgroup.clone(),
            t.custom_domain_name.clone(),
            t.with_iam,
            t.auto_create,
            t.credential_duration,
            t.aws_endpoint_url.clone(),
        )
    };
    let old_targets: Vec<_> = old.targets.iter().map(aws_view).collect();
    let new_targets: Vec<_> = new.targets.iter().map(aws_view).collect();
    if old_targets != new_targets {
        return Err(ReloadError::RestartRequired(
            "targets were added or removed, or their host or AWS settings changed".into(),
        ));
    }
    if old.aws != new.aws || old.db_credentials != new.db_credentials {
        return Err(ReloadError::RestartRequired(
            "[aws] or [db_credentials] changed".into(),
        ));
    }
    Ok(())
}

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("starting")]
    Starting,
    #[error("shutting down")]
    ShuttingDown,
    /// Every set of AWS credentials the proxy has used is expired or missing and its last
    /// refresh failed; the reasons say why (no secrets: AWS error codes and messages).
    #[error("no usable AWS credentials: {0}")]
    AwsCredentials(String),
}

/// Open connections, in total, per listener and per client identity.
struct ConnectionCounts {
    total: AtomicUsize,
    per_listener: HashMap<String, AtomicUsize>,
    per_identity: Mutex<HashMap<String, usize>>,
}

/// Process phase, for the health endpoints and the drain.
struct Lifecycle {
    started: AtomicBool,
    shutting_down: AtomicBool,
    /// Set when the drain timeout expires: sessions still running must end now.
    terminate: watch::Sender<bool>,
}

/// Process-lifetime state every connection reads: the current [`State`] and the services
/// that survive reloads (credential cache, cancel registry, metrics, audit).
pub struct Shared {
    state: Arc<ArcSwap<State>>,
    pub credentials: Arc<dyn DbCredentialSource>,
    pub cancels: Arc<CancelRegistry>,
    pub metrics: Metrics,
    pub audit: Arc<AuditLog>,
    /// The proxy's own AWS credentials, whose health readiness reflects (absent when
    /// database credentials come from elsewhere, as in tests).
    aws: Option<Arc<AwsCredentials>>,
    counts: ConnectionCounts,
    lifecycle: Lifecycle,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    reload_lock: Mutex<()>,
    generation: AtomicU64,
}

impl Shared {
    /// The state new connections use.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ready: listeners bound, no shutdown begun, and the proxy's AWS credentials usable
    /// or refreshable. Judged from local state only; never calls Redshift or AWS.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.is_shutting_down() {
            return Err(NotReady::ShuttingDown);
        }
        if !self.is_started() {
            return Err(NotReady::Starting);
        }
        if let Some(aws) = &self.aws {
            aws.health().readiness().map_err(NotReady::AwsCredentials)?;
        }
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.lifecycle.started.load(Ordering::SeqCst)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.shutting_down.load(Ordering::SeqCst)
    }

    /// Becomes `true` when sessions must end (the drain timeout expired).
    pub fn terminate_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.terminate.subscribe()
    }

    /// Open client connections (any phase).
    pub fn open_connections(&self) -> usize {
        self.counts.total.load(Ordering::SeqCst)
    }

    /// Counts a new connection on `listener`; the refusal reason when a limit is exceeded.
    /// The connection counts against the limits until the guard is dropped either way.
    pub fn admit(
        self: &Arc<Self>,
        listener_context: &ListenerContext,
        limits: &LimitsConfig,
    ) -> (ConnectionGuard, Option<RefusalReason>) {
        let listener = listener_context.name.as_str();
        let total = self.counts.total.fetch_add(1, Ordering::SeqCst) + 1;
        let on_listener = self
            .counts
            .per_listener
            .get(listener)
            .map(|c| c.fetch_add(1, Ordering::SeqCst) + 1)
            .unwrap_or(0);
        self.metrics
            .connections_active
            .get_or_create(&labels(&[("listener", listener)]))
            .inc();
        let guard = ConnectionGuard {
            shared: self.clone(),
            listener: listener.to_string(),
        };
        let refusal = if limits.max_connections.is_some_and(|max| total > max) {
            Some(RefusalReason::MaxConnections)
        } else if listener_context
            .max_connections
            .is_some_and(|max| on_listener > max)
        {
            Some(RefusalReason::MaxConnectionsPerListener)
        } else {
            None
        };
        (guard, refusal)
    }

    /// Counts a session of `identity`; `None` when that identity is at its limit.
    pub fn admit_identity(
        self: &Arc<Self>,
        identity: &str,
        limits: &LimitsConfig,
    ) -> Option<IdentityGuard> {
        let mut map = self
            .counts
            .per_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(identity.to_string()).or_insert(0);
        if limits
            .max_connections_per_identity
            .is_some_and(|max| *n >= max)
        {
            return None;
        }
        *n += 1;
        Some(IdentityGuard {
            shared: self.clone(),
            identity: identity.to_string(),
        })
    }

    /// Reloads configuration, certificates, keys, CA bundles, CRLs and the policy. On any
    /// error the running state stays as it was; the error says why.
    pub async fn reload(self: &Arc<Self>) -> Result<u64, ReloadError> {
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || me.reload_blocking())
            .await
            .unwrap_or_else(|e| Err(ReloadError::Task(e.to_string())));
        match &result {
            Ok(generation) => {
                self.metrics
                    .reloads
                    .get_or_create(&labels(&[("outcome", "success")]))
                    .inc();
                self.metrics.last_reload_success.set(unix_now());
                info!(generation, "configuration reloaded");
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .get_or_create(&labels(&[("outcome", "failure")]))
                    .inc();
                error!(error = %e, "reload failed; keeping the running configuration");
            }
        }
        result
    }

    fn reload_blocking(&self) -> Result<u64, ReloadError> {
        let _serialised = self
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_shutting_down() {
            return Err(ReloadError::ShuttingDown);
        }
        let path = self.config_path.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let config = Config::load_with_overrides(path, &self.overrides)?;
        let current = self.state();
        check_reloadable(current.config(), &config)?;
        let old = current.config();
        if old.log != config.log
            || old.admin != config.admin
            || old.audit.enabled != config.audit.enabled
            || old.audit.queue_capacity != config.audit.queue_capacity
        {
            warn!(
                "[log], [admin] and [audit] enabled/queue_capacity changes apply at the next \
                 restart"
            );
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let state = State::build(&config, generation)?;
        if old.audit.path != config.audit.path {
            self.audit.reopen(&config.audit)?;
        }
        self.state.store(Arc::new(state));
        Ok(generation)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One open connection; released on drop.
pub struct ConnectionGuard {
    shared: Arc<Shared>,
    listener: String,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let c = &self.shared.counts;
        c.total.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = c.per_listener.get(&self.listener) {
            n.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared
            .metrics
            .connections_active
            .get_or_create(&labels(&[("listener", &self.listener)]))
            .dec();
    }
}

/// One session of a client identity; released on drop.
pub struct IdentityGuard {
    shared: Arc<Shared>,
    identity: String,
}

impl Drop for IdentityGuard {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .counts
            .per_identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.identity);
            }
        }
    }
}

/// Metrics read at scrape time.
struct Scrape {
    state: Arc<ArcSwap<State>>,
    audit: Arc<AuditLog>,
    stats: Option<Arc<dyn CredentialStats>>,
}

impl ScrapeSource for Scrape {
    fn certificates(&self) -> Vec<CertificateExpiry> {
        self.state.load().certificates.clone()
    }
    fn audit_counts(&self) -> AuditCounts {
        AuditCounts {
            written: self.audit.written(),
            dropped: self.audit.dropped(),
            write_errors: self.audit.write_errors(),
        }
    }
    fn credential_stats(&self) -> Option<proxy_auth::redshift::CacheStats> {
        self.stats.as_ref().map(|s| s.stats())
    }
}

/// A proxy ready to bind: every certificate, key, CA bundle and the policy are loaded.
pub struct Proxy {
    state: State,
    credentials: Arc<dyn DbCredentialSource>,
    audit: Arc<AuditLog>,
    stats: Option<Arc<dyn CredentialStats>>,
    aws: Option<Arc<AwsCredentials>>,
    aws_calls: AwsCallMetrics,
    config_path: Option<PathBuf>,
    overrides: Overrides,
}

impl Proxy {
    /// Loads everything the configuration names. `credentials` issues database logins
    /// (Redshift in production; tests may pass their own source).
    pub fn new(
        config: &Config,
        credentials: Arc<dyn DbCredentialSource>,
    ) -> Result<Proxy, SetupError> {
        Ok(Proxy {
            state: State::build(config, 1)?,
            credentials,
            audit: Arc::new(AuditLog::from_config(&config.audit)?),
            stats: None,
            aws: None,
            aws_calls: AwsCallMetrics::default(),
            config_path: None,
            overrides: Overrides::default(),
        })
    }

    /// The file (and command-line overrides) a reload reads. Without it, reloads fail.
    pub fn with_config_path(mut self, path: impl Into<PathBuf>, overrides: Overrides) -> Self {
        self.config_path = Some(path.into());
        self.overrides = overrides;
        self
    }

    /// Where `/metrics` reads the credential cache's counters.
    pub fn with_credential_stats(mut self, stats: Arc<dyn CredentialStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The proxy's AWS credentials: `/readyz` reports their health.
    pub fn with_aws_credentials(mut self, aws: Arc<AwsCredentials>) -> Self {
        self.aws = Some(aws);
        self
    }

    /// Where the credential chain reports its AWS calls (the same series `/metrics`
    /// exports).
    pub fn with_aws_call_metrics(mut self, aws_calls: AwsCallMetrics) -> Self {
        self.aws_calls = aws_calls;
        self
    }

    /// Binds every listener (and the admin listener) and starts accepting connections.
    pub async fn bind(self) -> Result<RunningProxy, SetupError> {
        let config = self.state.config().clone();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let name = l.display_name().to_string();
            let bind_error = |source| SetupError::Bind {
                listener: name.clone(),
                bind: l.bind.clone(),
                source,
            };
            let socket = BoundListener::bind(l).await.map_err(bind_error)?;
            let addr = socket.local_address().map_err(bind_error)?;
            info!(listener = %name, address = %addr, client_auth = l.client_auth.as_str(), "listening");
            bound.push((name, socket, addr));
        }
        let admin_socket = match &config.admin.bind {
            Some(bind) => {
                Some(
                    TcpListener::bind(bind)
                        .await
                        .map_err(|source| SetupError::AdminBind {
                            bind: bind.clone(),
                            source,
                        })?,
                )
            }
            None => None,
        };

        let state = Arc::new(ArcSwap::from_pointee(self.state));
        let metrics = Metrics::with_aws_calls(
            Arc::new(Scrape {
                state: state.clone(),
                audit: self.audit.clone(),
                stats: self.stats,
            }),
            self.aws_calls,
        );
        metrics.last_reload_success.set(unix_now());
        let (terminate, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state,
            credentials: self.credentials,
            cancels: Arc::new(CancelRegistry::new()),
            metrics,
            audit: self.audit,
            aws: self.aws,
            counts: ConnectionCounts {
                total: AtomicUsize::new(0),
                per_listener: bound
                    .iter()
                    .map(|(name, _, _)| (name.clone(), AtomicUsize::new(0)))
                    .collect(),
                per_identity: Mutex::new(HashMap::new()),
            },
            lifecycle: Lifecycle {
                started: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                terminate,
            },
            config_path: self.config_path,
            overrides: self.overrides,
            reload_lock: Mutex::new(()),
            generation: AtomicU64::new(1),
        });

        let (stop_tx, stop_rx) = watch::channel(false);
        let mut addrs = Vec::new();
        let mut unix_paths = Vec::new();
        let mut tasks = Vec::new();
        for (name, socket, addr) in bound {
            match addr {
                LocalAddress::Tcp(addr) => addrs.push((name.clone(), addr)),
                LocalAddress::Unix(path) => unix_paths.push((name.clone(), path)),
            }
            tasks.push(tokio::spawn(accept_loop(
                socket,
                name,
                shared.clone(),
                stop_rx.clone(),
            )));
        }
        // The admin listener has its own stop: it keeps answering probes (503) and serving
        // metrics while the client listeners are closed and sessions drain.
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let mut admin_addr = None;
        let mut admin_task = None;
        if let Some(socket) = admin_socket {
            let addr = socket.local_addr().ok();
            info!(address = ?addr, "admin listener: /metrics /livez /readyz /startupz, POST /reload");
            admin_addr = addr;
            admin_task = Some(tokio::spawn(admin::serve(
                socket,
                shared.clone(),
                admin_stop_rx,
            )));
        }
        shared.lifecycle.started.store(true, Ordering::SeqCst);
        Ok(RunningProxy {
            addrs,
            unix_paths,
            admin_addr,
            stop: stop_tx,
            tasks,
            admin_stop,
            admin_task,
            shared,
        })
    }
}

/// A proxy with bound listeners.
pub struct RunningProxy {
    addrs: Vec<(String, SocketAddr)>,
    unix_paths: Vec<(String, PathBuf)>,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin_stop: watch::Sender<bool>,
    admin_task: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when the listeners closed.
    pub open_at_close: usize,
    /// Connections still open when the drain timeout expired (then told 57P01).
    pub terminated: usize,
}

impl RunningProxy {
    /// TCP listener names and the addresses they are bound to (useful with port 0).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The first TCP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    /// Unix-socket listener names and their socket paths.
    pub fn unix_paths(&self) -> &[(String, PathBuf)] {
        &self.unix_paths
    }

    /// The admin listener's address, when `[admin] bind` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// What SIGHUP does: see [`Shared::reload`].
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        self.shared.reload().await
    }

    /// Stops accepting new connections. Established sessions run on until they end.
    pub async fn stop_accepting(self) {
        let _ = self.stop.send(true);
        let _ = self.admin_stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(t) = self.admin_task {
            let _ = t.await;
        }
    }

    /// What SIGTERM does: turn unready, wait `listener_close_delay`, close the listeners,
    /// let connections finish for up to `drain_timeout`, then end the rest with SQLSTATE
    /// 57P01, and flush the audit log.
    pub async fn shutdown(self) -> ShutdownReport {
        let shared = self.shared.clone();
        let settings = shared.state().shutdown.clone();
        shared.lifecycle.shutting_down.store(true, Ordering::SeqCst);
        info!(
            open = shared.open_connections(),
            listener_close_delay = ?settings.listener_close_delay,
            drain_timeout = ?settings.drain_timeout,
            "shutting down: unready"
        );
        if !settings.listener_close_delay.is_zero() {
            tokio::time::sleep(settings.listener_close_delay).await;
        }
        // Listeners only; the admin listener keeps answering probes during the drain.
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let open_at_close = shared.open_connections();
        info!(
            open = open_at_close,
            "listeners closed; draining connections"
        );
        let drained = wait_for_zero(&shared, settings.drain_timeout).await;
        let mut terminated = 0;
        if !drained {
            terminated = shared.open_connections();
            warn!(
                open = terminated,
                "drain timeout expired: terminating remaining sessions (57P01)"
            );
            let _ = shared.lifecycle.terminate.send(true);
            // Sessions write their ErrorResponse at the next message boundary, within the
            // relay's grace; give them that and a little more.
            wait_for_zero(&shared, crate::relay::STOP_GRACE * 2).await;
        }
        let _ = self.admin_stop.send(true);
        if let Some(t) = self.admin_task {
            // Graceful, but a scraper holding a keep-alive connection must not hold the exit.
            if tokio::time::timeout(Duration::from_secs(1), t)
                .await
                .is_err()
            {
                warn!("admin listener did not stop within 1s");
            }
        }
        let audit = shared.audit.clone();
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        info!(terminated, "shutdown complete");
        ShutdownReport {
            open_at_close,
            terminated,
        }
    }
}

async fn wait_for_zero(shared: &Shared, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if shared.open_connections() == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(
    socket: BoundListener,
    listener: String,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let accepted_metric = shared
        .metrics
        .connections_accepted
        .get_or_create(&labels(&[("listener", &listener)]))
        .clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((client, peer)) => {
                accepted_metric.inc();
                let state = shared.state();
                if let ClientSocket::Tcp(tcp) = &client {
                    set_socket_options(tcp, &state.limits);
                }
                tokio::spawn(crate::session::serve_connection(
                    client,
                    peer,
                    listener.clone(),
                    state,
                    shared.clone(),
                ));
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning on the error.
                error!(listener = %listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// TCP keepalive and TCP_USER_TIMEOUT per `[limits]`, so dead peers (a laptop that went
/// to sleep, a NAT that forgot the flow) are noticed instead of holding a session forever.
pub fn set_socket_options(tcp: &TcpStream, limits: &LimitsConfig) {
    let sock = socket2::SockRef::from(tcp);
    if !limits.tcp_keepalive.is_zero() {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(limits.tcp_keepalive)
            .with_interval(limits.tcp_keepalive_interval)
            .with_retries(limits.tcp_keepalive_retries);
        if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
            warn!(error = %e, "cannot enable TCP keepalive");
        }
    }
    if let Some(timeout) = limits.tcp_user_timeout {
        if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
            warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }
}
