//! Permission check for private-key files the proxy loads (the listeners' TLS keys, the
//! Roles Anywhere signing key).
//!
//! A key readable by group or others can be copied by any local account or service in that
//! group, and with it the proxy's identity. Like libpq and PostgreSQL, the proxy points
//! this out; unlike them it only warns by default, because keys mounted from secret stores
//! (Kubernetes secrets, systemd credentials) often arrive with group-readable modes an
//! operator cannot change. `[security] strict_key_permissions = true` makes loading the
//! configuration fail instead ([`first_readable_key`]).

use crate::Config;
use std::path::{Path, PathBuf};

/// Permission bits that make a key file readable by someone other than its owner.
const GROUP_OR_OTHER_READ: u32 = 0o044;

/// A private-key file readable by group or others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "private key file {} is readable by group or others (mode {mode:04o}); \
     restrict it with `chmod 600`",
    path.display()
)]
pub struct KeyPermissionWarning {
    pub path: PathBuf,
    /// The file's permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Checks `path` (following symlinks, as the loader does). `Ok(None)` when only the owner
/// can read it; an I/O error when it cannot be examined (the loader reports that better).
/// Always `Ok(None)` on platforms without Unix permissions.
pub fn check_permissions(path: &Path) -> std::io::Result<Option<KeyPermissionWarning>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & GROUP_OR_OTHER_READ != 0 {
            return Ok(Some(KeyPermissionWarning {
                path: path.to_path_buf(),
                mode,
            }));
        }
        Ok(None)
    }
    #[cfg(not(unix))]
    {
        let _ = (path, GROUP_OR_OTHER_READ);
        Ok(None)
    }
}

/// Every private-key file `config` names, with its configuration key.
pub fn private_key_files(config: &Config) -> Vec<(String, &Path)> {
    let mut keys = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(key) = &l.tls_key {
            keys.push((format!("listener[{i}].tls_key"), key.as_path()));
        }
        for (j, c) in l.certificates.iter().enumerate() {
            keys.push((
                format!("listener[{i}].certificates[{j}].tls_key"),
                c.tls_key.as_path(),
            ));
        }
    }
    if let Some(ra) = &config.aws.roles_anywhere {
        keys.push((
            "aws.roles_anywhere.private_key".to_string(),
            ra.private_key.as_path(),
        ));
    }
    keys
}

/// The first private-key file of `config` that group or others can read, with its
/// configuration key. Files that cannot be examined are left to the loader, which reports
/// a missing or unreadable key with more context.
pub fn first_readable_key(config: &Config) -> Option<(String, KeyPermissionWarning)> {
    private_key_files(config)
        .into_iter()
        .find_map(|(key, path)| Some((key, check_permissions(path).ok().flatten()?)))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("key-{mode:o}.pem"));
        std::fs::write(&path, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn owner_only_keys_pass() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o700] {
            assert_eq!(
                check_permissions(&key_with_mode(dir.path(), mode)).unwrap(),
                None
            );
        }
    }

    #[test]
    fn group_or_world_readable_keys_are_flagged() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o666] {
            let path = key_with_mode(dir.path(), mode);
            let warning = check_permissions(&path).unwrap().expect("flagged");
            assert_eq!(warning.mode, mode);
            assert!(warning.to_string().contains("chmod 600"), "{warning}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_warning() {
        assert!(check_permissions(Path::new("/nonexistent/key.pem")).is_err());
    }
}
