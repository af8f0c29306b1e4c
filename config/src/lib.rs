//! Configuration model of `redshift-iam-proxy`.
//!
//! The file is TOML. Every table rejects unknown keys, every default lives here, and
//! [`Config::load`] resolves relative paths against the file's own directory and checks
//! the result, so a loaded `Config` is one the proxy can act on.
//!
//! Each section is a module with its type and that type's checks side by side
//! ([`listener`], [`target`], [`policy`], [`aws`], [`operations`], [`peering`], ...); the checks that
//! tie sections together are in `check.rs`. Checks add to one [`Problems`] collector, so a
//! file is reported with all its problems at once, each under its key path
//! (`listener[0].bind`, `policy.rule[2].users`). [`Config::warnings`] names what a loaded
//! configuration probably does not mean. Secrets never live in the file: it names files
//! and environment variables that hold them.
//!
//! Modules depend on each other in one direction only: values (`address`, `arn`,
//! `verifier`) and `problems` at the bottom, then the sections, then [`Config`] (`root`),
//! then what works on a whole configuration (`check`, `warnings`, `restart`, `keyfile`,
//! `load`).
//!
//! Which settings a reload applies is part of the types: see [`RestartOnly`] and
//! [`KeptUntilRestart`].

mod address;
mod arn;
pub mod aws;
mod check;
pub mod db_credentials;
mod error;
pub mod keyfile;
pub mod listener;
mod load;
pub mod operations;
pub mod peering;
pub mod policy;
mod problems;
mod restart;
mod root;
pub mod security;
mod size;
pub mod target;
mod verifier;
mod warnings;

#[cfg(test)]
mod tests;

pub use address::{check_endpoint_url, Cidr, HostPort, ListenAddress, MAX_UNIX_SOCKET_PATH};
pub use arn::{Arn, ArnError, ArnKind};
pub use aws::{
    check_role_session_name, is_template, AwsConfig, AwsCredentialSource, RolesAnywhereConfig,
};
pub use db_credentials::DbCredentialsConfig;
pub use error::ConfigError;
pub use listener::{
    ClientAuthMode, ListenerCertificateConfig, ListenerConfig, LocalUserConfig,
    DEFAULT_UNIX_SOCKET_MODE,
};
pub use load::Overrides;
pub use operations::{
    AdminConfig, AuditConfig, LimitsConfig, LogConfig, LogFormat, ShutdownConfig,
};
pub use peering::{PeerConfig, PeeringConfig};
pub use policy::{MatchConfig, MultipleSans, PolicyConfig, RuleConfig};
pub use problems::{KeyPath, Problem, Problems, Warning};
pub use restart::{KeptUntilRestart, RestartOnly};
pub use root::Config;
pub use security::SecurityConfig;
pub use size::ByteSize;
pub use target::{
    default_session_reset, TargetConfig, TargetKind, ATTRIBUTION_PLACEHOLDERS, MAX_WARM_CONNECTIONS,
};
pub use verifier::{
    Md5Verifier, PasswordMethod, PasswordVerifier, PasswordVerifierError, PasswordVerifierText,
    RedshiftSha256Verifier, ScramVerifier, ScramVerifierError, MAX_SCRAM_ITERATIONS,
    MIN_SCRAM_ITERATIONS, REDSHIFT_SALT_LEN,
};
