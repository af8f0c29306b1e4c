//! A typed builder of proxy configurations, so tests say what they configure instead of
//! assembling TOML text. Rendered with the `toml` crate ([`ProxyConfig::to_toml`]); every
//! table the product knows has a type here, and [`Table::set`] sets any further key of it
//! (the configuration rejects unknown keys, so a misspelt one fails the test loudly).
//!
//! ```
//! use proxy_testkit::config::{Listener, ProxyConfig, Rule, Target};
//! let config = ProxyConfig::new()
//!     .listener(Listener::new("main", "127.0.0.1:0").target("pg"))
//!     .target(Target::provisioned("pg", "localhost", 5439))
//!     .rule(Rule::new("analysts").matching("cn", "alice*").users(["{cn}"]));
//! assert!(config.to_toml().contains("[[policy.rule]]"));
//! ```

use std::path::Path;
use toml::{Table as TomlTable, Value};

/// Keys of one TOML table, in insertion order of first use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(TomlTable);

impl Table {
    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_owned(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The table as a TOML value (an entry of an array of tables).
    pub fn into_value(self) -> Value {
        Value::Table(self.0)
    }
}

/// A path as a TOML string.
pub fn path(p: impl AsRef<Path>) -> Value {
    Value::String(p.as_ref().to_string_lossy().into_owned())
}

/// A list of strings as a TOML array.
pub fn strings<I, S>(items: I) -> Value
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

macro_rules! setters {
    ($ty:ident) => {
        impl $ty {
            /// Sets any key of this table.
            pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
                self.0.set(key, value);
                self
            }

            /// The table as it will be rendered.
            pub fn table(&self) -> &Table {
                &self.0
            }
        }
    };
}

/// A `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener(Table);
setters!(Listener);

impl Listener {
    pub fn new(name: &str, bind: &str) -> Self {
        let mut t = Table::default();
        t.set("name", name);
        t.set("bind", bind);
        Listener(t)
    }

    pub fn name(&self) -> &str {
        self.0
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn target(self, target: &str) -> Self {
        self.set("target", target)
    }

    /// The listener's server certificate and key.
    pub fn tls(self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.set("tls_cert", path(chain)).set("tls_key", path(key))
    }

    /// Client certificates issued by `ca`, checked against `crls`.
    pub fn client_ca(self, ca: impl AsRef<Path>, crls: &[&Path]) -> Self {
        self.set("client_ca", path(ca))
            .set("client_crls", Value::Array(crls.iter().map(path).collect()))
    }

    /// `client_auth` (`certificate`, `password`, `trust`).
    pub fn client_auth(self, mode: &str) -> Self {
        self.set("client_auth", mode)
    }

    /// A `[[listener.users]]` entry of a password listener.
    pub fn user(mut self, name: &str, verifier: &str) -> Self {
        let mut user = Table::default();
        user.set("name", name);
        user.set("password_verifier", verifier);
        let users = self
            .0
             .0
            .entry("users")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = users {
            list.push(user.into_value());
        }
        self
    }

    /// A `[[listener.certificates]]` entry (SNI).
    pub fn certificate(mut self, entry: Table) -> Self {
        let entries = self
            .0
             .0
            .entry("certificates")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entries {
            list.push(entry.into_value());
        }
        self
    }
}

/// A `[[target]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target(Table);
setters!(Target);

impl Target {
    fn new(name: &str, kind: &str, host: &str, port: u16) -> Self {
        let mut t = Table::default();
        t.set("name", name);
        t.set("kind", kind);
        t.set("host", host);
        t.set("port", i64::from(port));
        Target(t)
    }

    pub fn provisioned(name: &str, host: &str, port: u16) -> Self {
        Target::new(name, "provisioned", host, port)
    }

    pub fn serverless(name: &str, host: &str, port: u16) -> Self {
        Target::new(name, "serverless", host, port)
    }

    pub fn name(&self) -> &str {
        self.0
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// A `[[policy.rule]]`. Grants every target and database unless told otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule(Table);
setters!(Rule);

impl Rule {
    pub fn new(name: &str) -> Self {
        let mut t = Table::default();
        t.set("name", name);
        t.set("match", TomlTable::new());
        t.set("targets", strings(["*"]));
        t.set("databases", strings(["*"]));
        Rule(t)
    }

    /// Rule `target`: every certificate, as its CN, to database `dev` on `target` only.
    pub fn everyone_on(target: &str) -> Self {
        Rule::new(target)
            .matching("cn", "*")
            .targets([target])
            .users(["{cn}"])
            .databases(["dev"])
    }

    /// Adds a `match` key (`cn`, `san_uri`, `local_user`, ...).
    pub fn matching(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Some(Value::Table(m)) = self.0 .0.get_mut("match") {
            m.insert(key.to_owned(), value.into());
        }
        self
    }

    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(self, users: I) -> Self {
        self.set("users", strings(users))
    }

    pub fn default_user(self, user: &str) -> Self {
        self.set("default_user", user)
    }

    pub fn targets<I: IntoIterator<Item = S>, S: Into<String>>(self, targets: I) -> Self {
        self.set("targets", strings(targets))
    }

    pub fn databases<I: IntoIterator<Item = S>, S: Into<String>>(self, databases: I) -> Self {
        self.set("databases", strings(databases))
    }

    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(self, groups: I) -> Self {
        self.set("groups", strings(groups))
    }
}

/// A whole configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    listeners: Vec<Listener>,
    targets: Vec<Target>,
    rules: Vec<Rule>,
    /// Top-level tables (`log`, `limits`, `aws`, ...) by name; `policy` holds the keys of
    /// `[policy]` besides its rules.
    sections: TomlTable,
}

impl ProxyConfig {
    pub fn new() -> Self {
        ProxyConfig::default()
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sets `key` of the top-level table `section` (`limits`, `admin`, `aws.roles_anywhere`
    /// for a nested one, ...).
    pub fn set(mut self, section: &str, key: &str, value: impl Into<Value>) -> Self {
        let mut table = &mut self.sections;
        for part in section.split('.') {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| Value::Table(TomlTable::new()));
            table = match entry {
                Value::Table(t) => t,
                _ => unreachable!("sections are tables"),
            };
        }
        table.insert(key.to_owned(), value.into());
        self
    }

    /// Removes `key` of the table `section` (`unset("aws", "roles_anywhere")` drops that
    /// nested table), if present.
    pub fn unset(mut self, section: &str, key: &str) -> Self {
        let mut table = Some(&mut self.sections);
        for part in section.split('.') {
            table = match table.and_then(|t| t.get_mut(part)) {
                Some(Value::Table(t)) => Some(t),
                _ => None,
            };
        }
        if let Some(table) = table {
            table.remove(key);
        }
        self
    }

    /// Changes the listener named `name`.
    pub fn edit_listener(mut self, name: &str, edit: impl FnOnce(Listener) -> Listener) -> Self {
        if let Some(i) = self.listeners.iter().position(|l| l.name() == name) {
            let listener = self.listeners.remove(i);
            self.listeners.insert(i, edit(listener));
        }
        self
    }

    /// Changes the target named `name`.
    pub fn edit_target(mut self, name: &str, edit: impl FnOnce(Target) -> Target) -> Self {
        if let Some(i) = self.targets.iter().position(|t| t.name() == name) {
            let target = self.targets.remove(i);
            self.targets.insert(i, edit(target));
        }
        self
    }

    /// Drops every rule (to replace them).
    pub fn without_rules(mut self) -> Self {
        self.rules.clear();
        self
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let mut root = self.sections.clone();
        let array = |items: Vec<Value>| Value::Array(items);
        root.insert(
            "listener".into(),
            array(
                self.listeners
                    .iter()
                    .map(|l| l.0.clone().into_value())
                    .collect(),
            ),
        );
        root.insert(
            "target".into(),
            array(
                self.targets
                    .iter()
                    .map(|t| t.0.clone().into_value())
                    .collect(),
            ),
        );
        let policy = root
            .entry("policy")
            .or_insert_with(|| Value::Table(TomlTable::new()));
        if let Value::Table(policy) = policy {
            policy.insert(
                "rule".into(),
                array(
                    self.rules
                        .iter()
                        .map(|r| r.0.clone().into_value())
                        .collect(),
                ),
            );
        }
        toml::to_string(&root).expect("a TOML table renders")
    }

    /// Writes the file `proxy.toml` in `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> std::path::PathBuf {
        let file = dir.join("proxy.toml");
        std::fs::write(&file, self.to_toml()).expect("write the proxy configuration");
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_configuration_the_proxy_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = ProxyConfig::new()
            .listener(
                Listener::new("main", "127.0.0.1:0")
                    .client_auth("trust")
                    .set("trust_user", "sidecar")
                    .set("allow_plaintext", true),
            )
            .target(Target::provisioned("pg", "localhost", 5439).set("region", "us-east-1"))
            .rule(
                Rule::new("local")
                    .matching("local_user", "sidecar")
                    .users(["sidecar"]),
            )
            .set("limits", "max_connections", 7)
            .set("aws", "source", "default")
            .set("aws", "region", "us-east-1")
            .to_toml();
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, &text).unwrap();
        let config = proxy_config::Config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.limits.max_connections, Some(7));
        assert_eq!(config.policy.rules[0].users, ["sidecar"]);
    }
}
