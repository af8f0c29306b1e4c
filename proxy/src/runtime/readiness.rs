//! `/readyz`: whether load balancers should send this proxy new connections. Judged from
//! local state only; never calls Redshift or AWS.

use super::reload::unix_now;
use super::shared::Shared;
use std::sync::atomic::Ordering;

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
    /// A listener's CRL is past its nextUpdate: clients of that CA are refused until a
    /// fresh list is loaded (reload, or `[security] crl_reload_interval`).
    #[error("expired certificate revocation list: listener {listener}, issuer {issuer:?}")]
    RevocationListExpired { listener: String, issuer: String },
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ready: listeners bound, no shutdown begun, and the proxy's AWS credentials usable
    /// or refreshable.
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
        let state = self.state();
        if let Some(crl) = state.revocation.expired(unix_now()).next() {
            return Err(NotReady::RevocationListExpired {
                listener: crl.listener.clone(),
                issuer: crl.issuer.clone(),
            });
        }
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.lifecycle.started.load(Ordering::SeqCst)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lifecycle.shutting_down.load(Ordering::SeqCst)
    }
}
