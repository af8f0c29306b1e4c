//! The running proxy: state built once from the configuration, the listeners, and their
//! accept loops.

use crate::backend::{UpstreamEndpoint, UpstreamSetupError};
use crate::cancel::CancelRegistry;
use crate::frontend::{ClientTls, FrontendSettings, TlsSetupError};
use proxy_auth::db_credentials::DbCredentialSource;
use proxy_auth::policy::{Policy, PolicyError};
use proxy_config::Config;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

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
    #[error("listener {listener}: cannot bind {bind}: {source}")]
    Bind {
        listener: String,
        bind: String,
        #[source]
        source: std::io::Error,
    },
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
    pub target: Arc<TargetContext>,
}

/// State every session reads.
pub struct Shared {
    policy: Policy,
    pub credentials: Arc<dyn DbCredentialSource>,
    pub cancels: Arc<CancelRegistry>,
}

impl Shared {
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// A proxy ready to bind: every certificate, key, CA bundle and the policy are loaded.
pub struct Proxy {
    listeners: Vec<Arc<ListenerContext>>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Loads everything the configuration names. `credentials` issues database logins
    /// (Redshift in production; tests may pass their own source).
    pub fn new(
        config: &Config,
        credentials: Arc<dyn DbCredentialSource>,
    ) -> Result<Proxy, SetupError> {
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
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let name = l.display_name().to_string();
            let tls = ClientTls::from_config(l).map_err(|source| SetupError::ClientTls {
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
            listeners.push(Arc::new(ListenerContext {
                name,
                bind: l.bind.clone(),
                frontend: FrontendSettings {
                    tls: Arc::new(tls),
                    login_timeout: l.login_timeout,
                    allow_options: l.allow_options,
                },
                target,
            }));
        }
        let shared = Arc::new(Shared {
            policy: Policy::new(&config.policy)?,
            credentials,
            cancels: Arc::new(CancelRegistry::new()),
        });
        Ok(Proxy { listeners, shared })
    }

    /// Binds every listener and starts accepting connections.
    pub async fn bind(self) -> Result<RunningProxy, SetupError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut bound = Vec::new();
        for ctx in &self.listeners {
            let socket = TcpListener::bind(&ctx.bind)
                .await
                .map_err(|source| SetupError::Bind {
                    listener: ctx.name.clone(),
                    bind: ctx.bind.clone(),
                    source,
                })?;
            let addr = socket.local_addr().map_err(|source| SetupError::Bind {
                listener: ctx.name.clone(),
                bind: ctx.bind.clone(),
                source,
            })?;
            info!(listener = %ctx.name, address = %addr, target = %ctx.target.name, "listening");
            bound.push((ctx.clone(), socket, addr));
        }
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (ctx, socket, addr) in bound {
            addrs.push((ctx.name.clone(), addr));
            tasks.push(tokio::spawn(accept_loop(
                socket,
                ctx,
                self.shared.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(RunningProxy {
            addrs,
            stop: stop_tx,
            tasks,
            shared: self.shared,
        })
    }
}

/// A proxy with bound listeners.
pub struct RunningProxy {
    addrs: Vec<(String, SocketAddr)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl RunningProxy {
    /// Listener names and the addresses they are bound to (useful with port 0).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The first listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting new connections. Established sessions run on until they end.
    pub async fn stop_accepting(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    ctx: Arc<ListenerContext>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            r = socket.accept() => r,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(crate::session::serve_connection(
                    tcp,
                    peer,
                    ctx.clone(),
                    shared.clone(),
                ));
            }
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning on the error.
                error!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
