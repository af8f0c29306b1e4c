//! `[security]`: process-wide hardening switches.

use crate::problems::Problems;
use serde::Deserialize;
use std::time::Duration;

/// `[security]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Refuse to load the configuration when a private-key file it names (a listener's
    /// `tls_key`, a `certificates` entry's `tls_key`, `[aws.roles_anywhere] private_key`) is
    /// readable by group or others, instead of logging a warning (default `false`). Checked
    /// whenever the file is loaded: at startup, on reload and by `check-config`.
    #[serde(default)]
    pub strict_key_permissions: bool,
    /// Re-read the listeners' `client_crls` this often (a reload also re-reads them);
    /// default: only on reload.
    #[serde(default, with = "humantime_serde")]
    pub crl_reload_interval: Option<Duration>,
    /// Password listeners: after each failed attempt for a user or from a source
    /// address, the next failure of either is answered this much later, doubling per
    /// failure up to `password_failure_delay_max`.
    #[serde(default = "default_password_failure_delay", with = "humantime_serde")]
    pub password_failure_delay: Duration,
    #[serde(
        default = "default_password_failure_delay_max",
        with = "humantime_serde"
    )]
    pub password_failure_delay_max: Duration,
    /// Failed attempts (per user, or per source address) within `password_lockout` that
    /// lock it for `password_lockout`; `0` never locks.
    #[serde(default = "default_password_lockout_after")]
    pub password_lockout_after: u32,
    #[serde(default = "default_password_lockout", with = "humantime_serde")]
    pub password_lockout: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            strict_key_permissions: false,
            crl_reload_interval: None,
            password_failure_delay: default_password_failure_delay(),
            password_failure_delay_max: default_password_failure_delay_max(),
            password_lockout_after: default_password_lockout_after(),
            password_lockout: default_password_lockout(),
        }
    }
}

fn default_password_failure_delay() -> Duration {
    Duration::from_millis(250)
}
fn default_password_failure_delay_max() -> Duration {
    Duration::from_secs(5)
}
fn default_password_lockout_after() -> u32 {
    10
}
fn default_password_lockout() -> Duration {
    Duration::from_secs(300)
}

impl SecurityConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self
            .crl_reload_interval
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            p.add(
                "security.crl_reload_interval",
                "must be at least 1s (omit it to re-read CRLs only on reload)",
            );
        }
        if self.password_failure_delay > self.password_failure_delay_max {
            p.add(
                "security.password_failure_delay",
                format!(
                    "{:?} is longer than password_failure_delay_max ({:?}); the delay \
                     doubles up to the maximum, so it must start at or below it",
                    self.password_failure_delay, self.password_failure_delay_max
                ),
            );
        }
        if self.password_lockout_after > 0 && self.password_lockout.is_zero() {
            p.add(
                "security.password_lockout",
                "must be greater than 0 when password_lockout_after is (set \
                 password_lockout_after = 0 to never lock)",
            );
        }
    }
}

impl SecurityConfig {
    /// A reload applies every key of `[security]` (the key-permission check runs on every
    /// load; the rest is read from the new state). Every field is named, so a new one does
    /// not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let SecurityConfig {
            strict_key_permissions: _,
            crl_reload_interval: _,
            password_failure_delay: _,
            password_failure_delay_max: _,
            password_lockout_after: _,
            password_lockout: _,
        } = self;
    }
}
