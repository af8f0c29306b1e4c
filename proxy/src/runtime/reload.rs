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
use proxy_config::{Config, ConfigError, TargetConfig};
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
        let path = self
            .reload
            .config_path
            .as_ref()
            .ok_or(ReloadError::NoConfigFile)?;
        let config = Config::load_with_overrides(path, &self.reload.overrides)?;
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
        let generation = self.reload.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let state = State::build(&config, generation)?;
        if old.audit.path != config.audit.path {
            self.audit.reopen(&config.audit)?;
        }
        self.state.store(Arc::new(state));
        Ok(generation)
    }
}

/// Refuses reloads that would need new sockets or a new AWS credential chain.
fn check_reloadable(old: &Config, new: &Config) -> Result<(), ReloadError> {
    // A Unix socket's mode is set when it is created.
    let listeners = |c: &Config| -> Vec<(String, proxy_config::ListenAddress, Option<u32>)> {
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

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
