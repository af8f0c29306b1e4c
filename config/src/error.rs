use crate::keyfile::KeyPermissionWarning;
use std::path::PathBuf;

/// Why a configuration could not be loaded. Each variant names the file, and where it
/// applies the key (`listener[0].bind`, `target[prod].port`) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    #[error("{}: {reason}", file.display())]
    Parse { file: PathBuf, reason: String },
    #[error("{}: {key}: {problem}", file.display())]
    Invalid {
        file: PathBuf,
        key: String,
        problem: String,
    },
    /// `[security] strict_key_permissions` and a private-key file group or others can read.
    #[error(
        "{}: {key}: {readable} (refused: [security] strict_key_permissions = true)",
        file.display()
    )]
    KeyPermissions {
        file: PathBuf,
        key: String,
        readable: KeyPermissionWarning,
    },
}
