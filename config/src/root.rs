//! The whole file: one field per top-level table.

use crate::aws::AwsConfig;
use crate::db_credentials::DbCredentialsConfig;
use crate::listener::ListenerConfig;
use crate::operations::{AdminConfig, AuditConfig, LimitsConfig, LogConfig, ShutdownConfig};
use crate::peering::PeeringConfig;
use crate::policy::PolicyConfig;
use crate::security::SecurityConfig;
use crate::target::TargetConfig;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    /// `[[listener]]`: where clients connect.
    #[serde(rename = "listener", default)]
    pub listeners: Vec<ListenerConfig>,
    /// `[[target]]`: Redshift clusters and serverless workgroups.
    #[serde(rename = "target", default)]
    pub targets: Vec<TargetConfig>,
    /// `[policy]` and `[[policy.rule]]`: who may log in as whom, where.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[aws]`: where the proxy's own AWS credentials come from.
    #[serde(default)]
    pub aws: AwsConfig,
    /// `[db_credentials]`: caching of temporary database credentials.
    #[serde(default)]
    pub db_credentials: DbCredentialsConfig,
    /// `[admin]`: the HTTP listener for metrics, health and reload (off by default).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[audit]`: one JSON line per session.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[limits]`: connection limits, timeouts and TCP keepalive.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[shutdown]`: graceful shutdown on SIGTERM/SIGINT.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// `[security]`: process-wide hardening switches.
    #[serde(default)]
    pub security: SecurityConfig,
    /// `[peering]`: the other instances behind the same load balancer (cancel requests).
    #[serde(default)]
    pub peering: PeeringConfig,
}

impl Config {
    /// The target a listener routes to: its own `target`, or the only target configured.
    pub fn listener_target(&self, listener: &ListenerConfig) -> Option<&TargetConfig> {
        match &listener.target {
            Some(name) => self.target(name),
            None if self.targets.len() == 1 => self.targets.first(),
            None => None,
        }
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The listener named `name` (its `name`, else its `bind`).
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.display_name() == name)
    }
}
