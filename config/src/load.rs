//! Reading a file: parse, apply overrides, resolve relative paths, check.

use crate::address::ListenAddress;
use crate::error::ConfigError;
use crate::keyfile;
use crate::root::Config;
use std::path::{Path, PathBuf};

/// Values given on the command line or in `REDSHIFT_IAM_PROXY_*` environment variables that
/// replace keys of the file. Applied before validation, and again on every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `[admin] bind`.
    pub admin_bind: Option<ListenAddress>,
    /// `[audit] path` (relative paths resolve against the working directory).
    pub audit_path: Option<PathBuf>,
    /// `[peering] id`: one configuration file for every instance, each told its own id
    /// (a StatefulSet's pod index, say).
    pub peering_id: Option<u8>,
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load_with_overrides(path, &Overrides::default())
    }

    /// [`Config::load`] with `overrides` applied before validation.
    pub fn load_with_overrides(
        path: impl AsRef<Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config = Config::from_toml_with_overrides(&text, path, &base, overrides)?;
        // Here rather than in the checks: parsing text never touches the file system.
        if config.security.strict_key_permissions {
            if let Some((key, readable)) = keyfile::first_readable_key(&config) {
                return Err(ConfigError::KeyPermissions {
                    file: path.to_path_buf(),
                    key,
                    readable,
                });
            }
        }
        Ok(config)
    }

    /// Parses and validates configuration text. `file` is only used in error messages;
    /// relative paths in the text are resolved against `base_dir`.
    pub fn from_toml(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::from_toml_with_overrides(text, file, base_dir, &Overrides::default())
    }

    /// [`Config::from_toml`] with `overrides` applied before validation. Every problem the
    /// checks find is reported, not only the first.
    pub fn from_toml_with_overrides(
        text: &str,
        file: &Path,
        base_dir: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = parse(text, file)?;
        config.resolve_paths(base_dir);
        if let Some(bind) = &overrides.admin_bind {
            config.admin.bind = Some(bind.clone());
        }
        if let Some(path) = &overrides.audit_path {
            config.audit.path = Some(path.clone());
        }
        if let Some(id) = overrides.peering_id {
            config.peering.id = Some(id);
        }
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                problems: problems.into_vec(),
            });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for l in &mut self.listeners {
            for p in [&mut l.tls_cert, &mut l.tls_key, &mut l.client_ca]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
            l.client_crls.iter_mut().for_each(fix);
            for c in &mut l.certificates {
                fix(&mut c.tls_cert);
                fix(&mut c.tls_key);
            }
        }
        for t in &mut self.targets {
            if let Some(p) = &mut t.ca_bundle {
                fix(p);
            }
        }
        if let Some(p) = &mut self.audit.path {
            fix(p);
        }
        if let Some(p) = &mut self.admin.reload_token_file {
            fix(p);
        }
        if let Some(ra) = &mut self.aws.roles_anywhere {
            fix(&mut ra.certificate);
            fix(&mut ra.private_key);
            if let Some(p) = &mut ra.chain {
                fix(p);
            }
            if let Some(p) = &mut ra.private_key_passphrase_file {
                fix(p);
            }
        }
    }
}

/// Deserializes `text`. Values are parsed into their types here (addresses, ARNs,
/// durations), so an error names the key that holds the bad value: `listener[0].bind`,
/// or the table for an unknown key.
fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let error = |key: Option<String>, reason: String| ConfigError::Parse {
        file: file.to_path_buf(),
        key,
        reason,
    };
    let document = toml::de::Deserializer::parse(text).map_err(|e| error(None, e.to_string()))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        let key = e
            .path()
            .iter()
            .next()
            .is_some()
            .then(|| e.path().to_string());
        let inner = e.into_inner();
        match (key, inner.span()) {
            (Some(key), Some(span)) => {
                let (line, column) = line_and_column(text, span.start);
                let reason = format!("{} (line {line}, column {column})", inner.message());
                error(Some(key), reason)
            }
            (key, _) => error(key, inner.to_string()),
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
