use crate::keyfile::KeyPermissionWarning;
use crate::problems::Problem;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded. Each variant names the file, and where it
/// applies the key (`listener[0].bind`, `target[1].port`) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    /// Not TOML, an unknown key, or a value of the wrong type or shape (a `bind` that is no
    /// address, an ARN of the wrong kind). `key` is where, when known.
    #[error("{}: {}{reason}", file.display(), KeyPrefix(key))]
    Parse {
        file: PathBuf,
        key: Option<String>,
        reason: String,
    },
    /// Every problem the checks found, in file order as far as possible. Displayed one
    /// per line, each as `file: key: problem`.
    #[error("{}", ProblemLines { file, problems })]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
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

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] configuration; empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

struct KeyPrefix<'a>(&'a Option<String>);

impl fmt::Display for KeyPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => write!(f, "{key}: "),
            None => Ok(()),
        }
    }
}

struct ProblemLines<'a> {
    file: &'a Path,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}
