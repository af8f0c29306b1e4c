//! Process-lifetime state every connection reads: the current [`State`] and the services
//! that survive reloads (credential cache, cancel registry, metrics, audit, admission).

use super::admission::Admission;
use super::state::State;
use super::throttle::PasswordThrottle;
use crate::audit::AuditLog;
use crate::cancel::CancelRegistry;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use proxy_auth::aws::AwsCredentials;
use proxy_auth::db_credentials::DbCredentialSource;
use proxy_config::Overrides;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Process phase, for the health endpoints and the drain.
pub(super) struct Lifecycle {
    pub(super) started: AtomicBool,
    pub(super) shutting_down: AtomicBool,
    /// Set when the drain timeout expires: sessions still running must end now.
    pub(super) terminate: watch::Sender<bool>,
}

/// Where reloads read the configuration from.
pub(super) struct ReloadSource {
    pub(super) config_path: Option<PathBuf>,
    pub(super) overrides: Overrides,
    /// Reloads run one at a time.
    pub(super) lock: Mutex<()>,
    pub(super) generation: AtomicU64,
}

/// See the module documentation.
pub struct Shared {
    pub(super) state: Arc<ArcSwap<State>>,
    pub credentials: Arc<dyn DbCredentialSource>,
    pub cancels: Arc<CancelRegistry>,
    pub metrics: Metrics,
    pub audit: Arc<AuditLog>,
    pub admission: Arc<Admission>,
    /// Failed password attempts per user and address (brute-force throttling).
    pub password_throttle: PasswordThrottle,
    /// The proxy's own AWS credentials, whose health readiness reflects (absent when
    /// database credentials come from elsewhere, as in tests).
    pub(super) aws: Option<Arc<AwsCredentials>>,
    pub(super) lifecycle: Lifecycle,
    pub(super) reload: ReloadSource,
    /// The generation of the state in use, announced on every reload.
    pub(super) generations: watch::Sender<u64>,
}

/// The services [`Shared`] is made of.
pub struct Services {
    pub state: Arc<ArcSwap<State>>,
    pub credentials: Arc<dyn DbCredentialSource>,
    pub metrics: Metrics,
    pub audit: Arc<AuditLog>,
    pub aws: Option<Arc<AwsCredentials>>,
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Shared {
    pub fn new(services: Services) -> Shared {
        let state = services.state.load();
        let admission = Arc::new(Admission::new(
            state.listeners.keys().map(String::as_str),
            services.metrics.connections_active.clone(),
        ));
        let instance = state.config().peering.id;
        let generation = AtomicU64::new(state.generation);
        let (generations, _) = watch::channel(state.generation);
        drop(state);
        let (terminate, _) = watch::channel(false);
        Shared {
            state: services.state,
            credentials: services.credentials,
            cancels: Arc::new(CancelRegistry::new(instance)),
            metrics: services.metrics,
            audit: services.audit,
            admission,
            password_throttle: PasswordThrottle::default(),
            aws: services.aws,
            lifecycle: Lifecycle {
                started: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                terminate,
            },
            reload: ReloadSource {
                config_path: services.config_path,
                overrides: services.overrides,
                lock: Mutex::new(()),
                generation,
            },
            generations,
        }
    }

    /// The state new connections use.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Open client connections (any phase).
    pub fn open_connections(&self) -> usize {
        self.admission.open()
    }

    /// Changes whenever a reload replaced the state (sessions re-check their certificate
    /// against new CRLs).
    pub fn state_changes(&self) -> watch::Receiver<u64> {
        self.generations.subscribe()
    }

    /// Becomes `true` when sessions must end (the drain timeout expired).
    pub fn terminate_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.terminate.subscribe()
    }

    /// Listeners are bound: the proxy serves.
    pub fn mark_started(&self) {
        self.lifecycle.started.store(true, Ordering::SeqCst);
    }

    /// A shutdown began: readiness turns 503 and reloads are refused.
    pub fn mark_shutting_down(&self) {
        self.lifecycle.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The drain timeout expired: every session still open must end now.
    pub fn terminate_sessions(&self) {
        let _ = self.lifecycle.terminate.send(true);
    }
}
