//! Loading whole configuration files: literal TOML in, the typed configuration or every
//! problem with its key out. One module per area; the loaders and the TOML every area
//! builds on are here.

use crate::{Config, ConfigError, Problem};
use std::path::Path;

mod checks;
mod client_auth;
mod key_permissions;
mod load;
mod load_balancer;
mod pools;
mod sni;

/// `[[target]] "prod"`, a provisioned cluster. (Macros, so that `concat!` can build `const`
/// files from them.)
macro_rules! prod_target {
    () => {
        r#"
[[target]]
name = "prod"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
"#
    };
}

/// `[[target]] "cluster"`, a provisioned cluster.
macro_rules! cluster_target {
    () => {
        r#"
[[target]]
name = "cluster"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
"#
    };
}

/// Rule "analysts": everyone, as their CN, to `dev` on every target.
macro_rules! analysts_rule {
    () => {
        r#"
[[policy.rule]]
name = "analysts"
match = { cn = "*" }
targets = ["*"]
users = ["{cn}"]
databases = ["dev"]
"#
    };
}

/// Rule "people": everyone, as their CN, to `dev` on target `cluster`.
macro_rules! people_rule {
    () => {
        r#"
[[policy.rule]]
name = "people"
match = { cn = "*" }
targets = ["cluster"]
users = ["{cn}"]
databases = ["dev"]
"#
    };
}

pub(crate) use {analysts_rule, cluster_target, people_rule, prod_target};

/// `text` loaded as `/etc/proxy.toml`: relative paths resolve against `/etc`.
pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/proxy.toml"), Path::new("/etc"))
}

/// Every problem of `text`, which must be invalid.
pub(crate) fn all_problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ConfigError::Invalid { problems, file }) => {
            assert_eq!(file, Path::new("/etc/proxy.toml"));
            problems
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Every problem of `text`, as `key: message` lines.
pub(crate) fn problems(text: &str) -> Vec<String> {
    all_problems(text).iter().map(ToString::to_string).collect()
}

/// The first problem of `text`, as (key, message).
pub(crate) fn invalid(text: &str) -> (String, String) {
    let first = all_problems(text).remove(0);
    (first.key, first.message)
}
