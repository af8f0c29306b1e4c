//! `[[target]]` keys of warm upstream connections and session reuse (issue 15): defaults,
//! limits, and the warning about warm connections kept as long as servers keep them.

use super::{cluster_target, parse, people_rule};
use crate::{Config, ConfigError};
use std::time::Duration;

const LISTENER: &str = r#"
[[listener]]
name = "certs"
bind = "127.0.0.1:5439"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "clients.pem"
"#;
const CLUSTER: &str = cluster_target!();
const PEOPLE: &str = people_rule!();

/// A file whose one target, `cluster`, has `target_keys`.
fn with_target_keys(target_keys: &str) -> String {
    format!("{LISTENER}{CLUSTER}{target_keys}\n{PEOPLE}")
}

fn config(target_keys: &str) -> Result<Config, ConfigError> {
    parse(&with_target_keys(target_keys))
}

fn problems(target_keys: &str) -> Vec<String> {
    super::problems(&with_target_keys(target_keys))
}

#[test]
fn warm_connections_are_on_and_session_reuse_off_by_default() {
    let c = config("").unwrap();
    let t = &c.targets[0];
    assert_eq!(t.warm_connections, 2);
    assert_eq!(t.warm_connection_max_age, Duration::from_secs(30));
    assert!(!t.session_reuse);
    assert_eq!(t.session_reuse_idle_timeout, Duration::from_secs(60));
    assert_eq!(t.session_reuse_max_age, Duration::from_secs(1800));
    assert_eq!(t.session_reuse_max_uses, 100);
    assert_eq!(t.session_reuse_per_key, 4);
    assert_eq!(t.session_reuse_max_sessions, 64);
    assert_eq!(
        t.session_reset,
        ["SET SESSION AUTHORIZATION DEFAULT", "RESET ALL"]
    );
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn limits_are_reported_with_their_keys() {
    let lines = problems(
        r#"warm_connections = 65
warm_connection_max_age = "0s"
session_reuse = true
session_reuse_idle_timeout = "0s"
session_reuse_max_uses = 0
session_reuse_per_key = 0
session_reset = ["RESET ALL", " "]"#,
    );
    for needle in [
        "target[0].warm_connections: must be at most 64",
        "target[0].warm_connection_max_age: must be at least 1s",
        "target[0].session_reuse_idle_timeout: must be greater than 0",
        "target[0].session_reuse_max_uses: must be at least 1",
        "target[0].session_reuse_per_key: must be at least 1",
        "target[0].session_reset[1]: must be a statement",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle} missing from {lines:#?}"
        );
    }
}

#[test]
fn warm_connections_kept_a_minute_or_longer_are_a_warning() {
    let c = config(r#"warm_connection_max_age = "60s""#).unwrap();
    let warnings: Vec<String> = c.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("target[0].warm_connection_max_age") && w.contains("60s")),
        "{warnings:?}"
    );
    // Without warm connections the age does not matter.
    let c = config("warm_connections = 0\nwarm_connection_max_age = \"5m\"").unwrap();
    assert!(c.warnings().is_empty());
}
