//! The composition root: binds the listeners (and the admin listener), runs their accept
//! loops, hands every connection to [`crate::session`], and drains on shutdown.
//!
//! Everything a configuration file determines lives in one immutable [`State`] behind an
//! `ArcSwap` in [`Shared`] (see [`crate::runtime`]). Each connection takes the current
//! `Arc<State>` when it is accepted and keeps it to the end, so a reload never touches
//! established sessions and every new connection sees the new state.

use crate::admin::{self, AdminAccess};
use crate::audit::AuditLog;
use crate::frontend::ClientSocket;
use crate::listen::{BoundListener, LocalAddress};
use crate::metrics::{labels, AwsCallMetrics, CredentialStats, Metrics};
use crate::net::SocketOptions;
use crate::runtime::{unix_now, ReloadError, Scrape, Services, SetupError, Shared, State};
use arc_swap::ArcSwap;
use proxy_auth::aws::AwsCredentials;
use proxy_auth::db_credentials::DbCredentialSource;
use proxy_config::{Config, Overrides};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

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
        let state = State::build(config, 1)?;
        for warning in &state.warnings {
            warn!("{warning}");
        }
        Ok(Proxy {
            state,
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
        let bound = bind_listeners(&config).await?;
        let admin_socket = match &config.admin.bind {
            Some(bind) => Some(
                BoundListener::bind_address(bind, admin::UNIX_SOCKET_MODE)
                    .await
                    .map_err(|source| SetupError::AdminBind {
                        bind: bind.to_string(),
                        source,
                    })?,
            ),
            None => None,
        };
        let admin_access = AdminAccess::from_config(
            &config.admin,
            matches!(admin_socket, Some(BoundListener::Unix { .. })),
        )
        .map_err(SetupError::AdminAccess)?;
        let shared = Arc::new(self.into_shared());
        shared.state().start_pools(&shared.metrics);

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
            let address = socket.local_address().ok();
            info!(address = ?address.as_ref().map(ToString::to_string), "admin listener: /metrics /livez /readyz /startupz, POST /reload");
            admin_addr = match address {
                Some(LocalAddress::Tcp(addr)) => Some(addr),
                _ => None,
            };
            admin_task = Some(tokio::spawn(admin::serve(
                socket,
                shared.clone(),
                admin_access,
                admin_stop_rx,
            )));
        }
        if let Some(every) = config.security.crl_reload_interval {
            tasks.push(tokio::spawn(reload_when_crls_change(
                shared.clone(),
                every,
                stop_rx.clone(),
            )));
        }
        shared.mark_started();
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

    fn into_shared(self) -> Shared {
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
        Shared::new(Services {
            state,
            credentials: self.credentials,
            metrics,
            audit: self.audit,
            aws: self.aws,
            config_path: self.config_path,
            overrides: self.overrides,
        })
    }
}

/// Binds every `[[listener]]`: its name, socket and the address it got.
async fn bind_listeners(
    config: &Config,
) -> Result<Vec<(String, BoundListener, LocalAddress)>, SetupError> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        let name = l.display_name().to_string();
        let bind_error = |source| SetupError::Bind {
            listener: name.clone(),
            bind: l.bind.to_string(),
            source,
        };
        let socket = BoundListener::bind(l).await.map_err(bind_error)?;
        let addr = socket.local_address().map_err(bind_error)?;
        info!(listener = %name, address = %addr, client_auth = l.client_auth.as_str(), "listening");
        bound.push((name, socket, addr));
    }
    Ok(bound)
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
    #[cfg(any(test, feature = "test-util"))]
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
    #[cfg(any(test, feature = "test-util"))]
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
        shared.mark_shutting_down();
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
        // No new logins: nothing to keep upstream connections ready for.
        shared.state().stop_pools();
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
            shared.terminate_sessions();
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
                    SocketOptions::from_limits(&state.limits).apply(tcp);
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

/// `[security] crl_reload_interval`: reloads whenever a listener's CRL file changed on
/// disk (a CA publishes a fresh list before the old one's nextUpdate).
async fn reload_when_crls_change(
    shared: Arc<Shared>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let stamps = |shared: &Shared| -> Vec<Option<std::time::SystemTime>> {
        shared
            .state()
            .config()
            .listeners
            .iter()
            .flat_map(|l| l.client_crls.iter())
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    };
    let mut seen = stamps(&shared);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamps(&shared);
        if now != seen {
            info!("a client CRL changed on disk; reloading");
            // The reload logs its own outcome; a failed one is retried at the next change.
            if shared.reload().await.is_ok() {
                seen = now;
            }
        }
    }
}
