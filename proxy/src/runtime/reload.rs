//! Reload (SIGHUP or `POST /reload`): read the configuration again and swap in a new
//! [`State`], or keep the running one and say why not.
//!
//! Each connection keeps the `Arc<State>` it was accepted with, so a reload never touches
//! established sessions. Settings that need new sockets or a new AWS credential chain are
//! restart-only; a reload that changes them is refused.

use super::shared::Shared;
use super::state::{SetupError, State};
use crate::audit::AuditOpenError;
use crate::metrics::labels;
use proxy_config::{Config, ConfigError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::SystemTime;
use tracing::{error, info, warn};

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

impl Shared {
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
            .reload
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_shutting_down() {
            return Err(ReloadError::ShuttingDown);
        }
        let result = self.apply_new_config();
        if result.is_err() {
            // SIGHUP also means "reopen your files" to logrotate: a configuration that
            // does not load must not leave the audit trail in the file it just renamed.
            if let Err(e) = self.audit.reopen(&self.state().config().audit) {
                error!(error = %e, "cannot reopen the audit file");
            }
        }
        result
    }

    fn apply_new_config(&self) -> Result<u64, ReloadError> {
        let path = self
            .reload
            .config_path
            .as_ref()
            .ok_or(ReloadError::NoConfigFile)?;
        let config = Config::load_with_overrides(path, &self.reload.overrides)?;
        for w in config.warnings() {
            warn!("configuration warning: {}: {w}", path.display());
        }
        let current = self.state();
        let old = current.config();
        check_reloadable(old, &config)?;
        let kept = old
            .kept_until_restart()
            .changes(&config.kept_until_restart());
        if !kept.is_empty() {
            warn!(
                changed = kept.join("; "),
                "these settings keep their running values until the next restart"
            );
        }
        let generation = self.reload.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let state = State::build(&config, generation)?;
        // Every reload reopens the audit file: logrotate renames it and sends SIGHUP.
        self.audit.reopen(&config.audit)?;
        for warning in &state.warnings {
            warn!("{warning}");
        }
        state.start_pools(&self.metrics);
        let replaced = self.state.swap(Arc::new(state));
        replaced.stop_pools();
        self.generations.send_replace(generation);
        Ok(generation)
    }
}

/// Refuses reloads that would need new sockets or a new AWS credential chain: the
/// restart-only settings ([`proxy_config::RestartOnly`]), named by what changed.
fn check_reloadable(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let changes = old.restart_only().changes(&new.restart_only());
    if changes.is_empty() {
        Ok(())
    } else {
        Err(ReloadError::RestartRequired(format!(
            "restart-only settings changed: {}",
            changes.join("; ")
        )))
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
