//! What is wrong with a configuration, and where: every check adds `(key path, message)`
//! pairs to one [`Problems`] collector instead of stopping at the first, so a file with
//! three mistakes is reported with three lines.
//!
//! Key paths name the key as the file spells it, array entries numbered from 0 in order of
//! appearance: `listener[0].bind`, `policy.rule[2].users`, `target[1].port`.

use std::fmt;

/// A key path such as `listener[0].certificates[1].server_names`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPath(String);

impl KeyPath {
    /// A top-level key or table: `listener`, `limits`, `policy.rule`.
    pub fn root(name: &str) -> KeyPath {
        KeyPath(name.to_owned())
    }

    /// `self.name`.
    pub fn key(&self, name: &str) -> KeyPath {
        KeyPath(format!("{}.{name}", self.0))
    }

    /// `self[index]`.
    pub fn index(&self, index: usize) -> KeyPath {
        KeyPath(format!("{}[{index}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<KeyPath> for String {
    fn from(path: KeyPath) -> String {
        path.0
    }
}

/// One thing a configuration must not contain: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Something a configuration may contain but probably does not mean: the key and why.
/// `check-config` prints warnings; the proxy logs them at startup and on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Collects the problems of a configuration, in the order the checks find them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Records that `key` has the problem `message`.
    pub fn add(&mut self, key: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Records `result`'s error, if any, against `key`.
    pub fn check(&mut self, key: impl fmt::Display, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(key, message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Collects warnings, like [`Problems`] collects problems.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Warnings(Vec<Warning>);

impl Warnings {
    pub fn add(&mut self, key: impl fmt::Display, message: impl Into<String>) {
        self.0.push(Warning {
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub fn into_vec(self) -> Vec<Warning> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_read_like_the_file() {
        let rule = KeyPath::root("policy.rule").index(2);
        assert_eq!(rule.key("users").to_string(), "policy.rule[2].users");
        let entry = KeyPath::root("listener")
            .index(0)
            .key("certificates")
            .index(1);
        assert_eq!(
            entry.key("server_names").as_str(),
            "listener[0].certificates[1].server_names"
        );
    }

    #[test]
    fn problems_keep_their_order() {
        let mut p = Problems::new();
        p.add("target[1].port", "must not be 0");
        p.check("listener[0].bind", Ok(()));
        p.check("log.level", Err("bad".into()));
        let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["target[1].port: must not be 0", "log.level: bad"]);
    }
}
