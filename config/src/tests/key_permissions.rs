//! `[security] strict_key_permissions`: loading a configuration whose private-key files
//! group or others can read warns by default (at key load, in the proxy) and is refused in
//! strict mode, naming the configuration key, the file and its mode, never the key.
#![cfg(unix)]

use crate::keyfile::private_key_files;
use crate::{Config, ConfigError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const KEY_TEXT: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIKEYMATERIALKEYMATERIAL\n";

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn key(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, KEY_TEXT).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A configuration with a listener key, an SNI certificate key and a Roles Anywhere key
    /// (relative paths, resolved against the file's directory).
    fn config(&self, security: &str) -> PathBuf {
        let text = format!(
            r#"
{security}

[aws]
source = "roles_anywhere"

[aws.roles_anywhere]
trust_anchor_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:trust-anchor/ta"
profile_arn = "arn:aws:rolesanywhere:us-east-1:123456789012:profile/p"
role_arn = "arn:aws:iam::123456789012:role/Proxy"
certificate = "ra.pem"
private_key = "ra.key"

[[listener]]
bind = "127.0.0.1:5439"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "clients.pem"

[[listener.certificates]]
server_names = ["other.example"]
tls_cert = "other.pem"
tls_key = "other.key"

[[target]]
name = "prod"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-east-1.redshift.amazonaws.com"

[[policy.rule]]
name = "all"
match = {{ cn = "*" }}
targets = ["*"]
users = ["{{cn}}"]
databases = ["dev"]
"#
        );
        let path = self.dir.path().join("proxy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

const STRICT: &str = "[security]\nstrict_key_permissions = true";

#[test]
fn every_private_key_of_the_configuration_is_checked() {
    let dir = Dir::new();
    let config = Config::load(dir.config("")).unwrap();
    let keys: Vec<(String, &Path)> = private_key_files(&config);
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "listener[0].tls_key",
            "listener[0].certificates[0].tls_key",
            "aws.roles_anywhere.private_key",
        ]
    );
    assert!(keys.iter().all(|(_, p)| p.starts_with(dir.dir.path())));
}

#[test]
fn readable_keys_load_by_default() {
    let dir = Dir::new();
    for name in ["server.key", "other.key", "ra.key"] {
        dir.key(name, 0o644);
    }
    let config = Config::load(dir.config("")).unwrap();
    assert!(!config.security.strict_key_permissions);
}

#[test]
fn strict_mode_accepts_owner_only_keys_and_leaves_missing_ones_to_the_loader() {
    let dir = Dir::new();
    dir.key("server.key", 0o600);
    dir.key("other.key", 0o400);
    // ra.key does not exist: reading it at startup reports that, with its own context.
    let config = Config::load(dir.config(STRICT)).unwrap();
    assert!(config.security.strict_key_permissions);
}

#[test]
fn strict_mode_refuses_a_key_group_or_others_can_read() {
    for (file, mode, key) in [
        ("server.key", 0o640, "listener[0].tls_key"),
        ("other.key", 0o604, "listener[0].certificates[0].tls_key"),
        ("ra.key", 0o644, "aws.roles_anywhere.private_key"),
    ] {
        let dir = Dir::new();
        for name in ["server.key", "other.key", "ra.key"] {
            dir.key(name, if name == file { mode } else { 0o600 });
        }
        let config_path = dir.config(STRICT);
        let err = Config::load(&config_path).unwrap_err();
        let message = err.to_string();
        match &err {
            ConfigError::KeyPermissions {
                file: config_file,
                key: config_key,
                readable,
            } => {
                assert_eq!(config_file, &config_path);
                assert_eq!(config_key, key);
                assert_eq!(readable.path, dir.dir.path().join(file));
                assert_eq!(readable.mode, mode);
            }
            other => panic!("expected a key permission refusal, got {other:?}"),
        }
        let mode_text = format!("{mode:04o}");
        for part in [key, &mode_text, "strict_key_permissions", "chmod 600"] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
        assert!(
            message.contains(&dir.dir.path().join(file).display().to_string()),
            "{message}"
        );
        assert!(!message.contains("KEYMATERIAL"), "{message}");
    }
}

#[test]
fn strict_key_permissions_is_the_only_security_key() {
    let dir = Dir::new();
    let err = Config::load(dir.config("[security]\nstrict_key_permission = true")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("strict_key_permission"), "{err}");
}
