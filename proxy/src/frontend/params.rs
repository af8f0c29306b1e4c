//! What the proxy keeps from a client's StartupMessage.
//!
//! Only an allow-list of harmless session settings is forwarded upstream. Driver metadata
//! (the Redshift JDBC driver's `driver_version`, `plugin_name`, ...), protocol options
//! (`_pq_.*`) and unknown names are accepted but dropped: the upstream (or the PostgreSQL
//! stand-in used in tests) would reject some of them, and a proxy must never fail a login
//! over a harmless parameter a BI tool happens to send.

use crate::net::messages::startup::{StartupMessage, PROTOCOL_OPTION_PREFIX};

/// Session settings forwarded upstream. Compared case-insensitively because PostgreSQL's
/// GUC names are (drivers send both `DateStyle` and `datestyle`).
const FORWARDED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "extra_float_digits",
    "geqo",
    "intervalstyle",
    "search_path",
    "timezone",
];

/// The client's startup request, as the rest of the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStartup {
    /// The `user` parameter, literally (it may be a placeholder resolved by policy).
    pub user: String,
    /// The `database` parameter; empty when the client sent none. PostgreSQL's default
    /// (database = user) is applied by the policy to the *granted* user, so a client that
    /// logs in with a placeholder user lands in its real user's database.
    pub database: String,
    /// Parameters to send upstream, names and values as the client sent them.
    pub params: Vec<(String, String)>,
    /// Names accepted but not forwarded, for a log line.
    pub dropped_params: Vec<String>,
    /// Minor protocol version in effect (always 0: newer requests are negotiated down).
    pub protocol_minor: u16,
    /// Minor protocol version the client asked for, for logs.
    pub requested_protocol_minor: u16,
}

/// A StartupMessage the proxy will not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupRefusal {
    #[error("no user name specified")]
    NoUser,
    #[error("replication connections are not supported")]
    Replication,
}

/// A classified StartupMessage plus the protocol options to list in a
/// NegotiateProtocolVersion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedStartup {
    pub startup: ClientStartup,
    /// `_pq_.*` names the client asked for; none is supported.
    pub protocol_options: Vec<String>,
}

/// Sorts the parameters of `msg` into forwarded and dropped ones.
///
/// Later duplicates win, as in PostgreSQL, so the proxy never acts on a different value
/// than the one the upstream would have used.
pub fn classify(
    msg: &StartupMessage,
    allow_options: bool,
) -> Result<ClassifiedStartup, StartupRefusal> {
    let mut user = None;
    let mut database = None;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut protocol_options: Vec<String> = Vec::new();

    for (name, value) in &msg.params {
        match name.as_str() {
            // Exact names, as PostgreSQL compares them.
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" => {
                if !is_false(value) {
                    return Err(StartupRefusal::Replication);
                }
                push_unique(&mut dropped, name);
            }
            _ if name.starts_with(PROTOCOL_OPTION_PREFIX) => {
                push_unique(&mut protocol_options, name);
                push_unique(&mut dropped, name);
            }
            _ if is_forwarded(name, allow_options) => {
                params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                params.push((name.clone(), value.clone()));
            }
            _ => push_unique(&mut dropped, name),
        }
    }

    let user = user
        .filter(|u| !u.is_empty())
        .ok_or(StartupRefusal::NoUser)?
        .clone();
    let database = database.cloned().unwrap_or_default();
    Ok(ClassifiedStartup {
        startup: ClientStartup {
            user,
            database,
            params,
            dropped_params: dropped,
            protocol_minor: 0,
            requested_protocol_minor: msg.minor,
        },
        protocol_options,
    })
}

fn is_forwarded(name: &str, allow_options: bool) -> bool {
    if name.eq_ignore_ascii_case("options") {
        return allow_options;
    }
    FORWARDED.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// `replication=false` (and PostgreSQL's other spellings of false) is not a replication
/// request; anything else (`true`, `database`, ...) is.
fn is_false(value: &str) -> bool {
    ["false", "off", "no", "0"]
        .iter()
        .any(|f| f.eq_ignore_ascii_case(value.trim()))
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn redshift_jdbc_startup_keeps_settings_and_drops_driver_metadata() {
        let m = msg(&[
            ("user", "alice"),
            ("database", "dev"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("_pq_.compression", "lz4"),
            ("extra_float_digits", "3"),
            ("application_name", "DBeaver"),
            ("driver_version", "Redshift JDBC Driver 2.1.0.30"),
            ("os_version", "Linux 6.1 amd64"),
            ("plugin_name", "none"),
            ("client_protocol_version", "2"),
            ("idp_type", "AzureAD"),
            ("provider_name", "p"),
            ("token_type", "ACCESS_TOKEN"),
            ("identity_namespace", "ns"),
            ("search_path", "public"),
            ("IntervalStyle", "iso_8601"),
            ("geqo", "on"),
            ("some_bi_tool_flag", "1"),
        ]);
        let c = classify(&m, false).unwrap();
        assert_eq!(c.startup.user, "alice");
        assert_eq!(c.startup.database, "dev");
        assert_eq!(
            c.startup.params,
            pairs(&[
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO"),
                ("TimeZone", "UTC"),
                ("extra_float_digits", "3"),
                ("application_name", "DBeaver"),
                ("search_path", "public"),
                ("IntervalStyle", "iso_8601"),
                ("geqo", "on"),
            ])
        );
        assert_eq!(
            c.startup.dropped_params,
            [
                "_pq_.compression",
                "driver_version",
                "os_version",
                "plugin_name",
                "client_protocol_version",
                "idp_type",
                "provider_name",
                "token_type",
                "identity_namespace",
                "some_bi_tool_flag",
            ]
        );
        assert_eq!(c.protocol_options, ["_pq_.compression"]);
    }

    #[test]
    fn options_only_when_allowed() {
        let m = msg(&[("user", "u"), ("options", "-c statement_timeout=0")]);
        let denied = classify(&m, false).unwrap();
        assert!(denied.startup.params.is_empty());
        assert_eq!(denied.startup.dropped_params, ["options"]);
        let allowed = classify(&m, true).unwrap();
        assert_eq!(
            allowed.startup.params,
            pairs(&[("options", "-c statement_timeout=0")])
        );
    }

    #[test]
    fn missing_database_stays_empty_and_names_stay_literal() {
        let c = classify(&msg(&[("user", "a&user=b")]), false).unwrap();
        assert_eq!(
            (c.startup.user.as_str(), c.startup.database.as_str()),
            ("a&user=b", "")
        );
        let c = classify(&msg(&[("user", "u"), ("database", "d=1&x")]), false).unwrap();
        assert_eq!(c.startup.database, "d=1&x");
    }

    #[test]
    fn user_is_required() {
        assert_eq!(
            classify(&msg(&[("database", "d")]), false),
            Err(StartupRefusal::NoUser)
        );
        assert_eq!(
            classify(&msg(&[("user", "")]), false),
            Err(StartupRefusal::NoUser)
        );
    }

    #[test]
    fn replication_is_refused_unless_explicitly_false() {
        for v in ["true", "database", "1", "on", ""] {
            assert_eq!(
                classify(&msg(&[("user", "u"), ("replication", v)]), false),
                Err(StartupRefusal::Replication),
                "{v}"
            );
        }
        let c = classify(&msg(&[("user", "u"), ("replication", "false")]), false).unwrap();
        assert_eq!(c.startup.dropped_params, ["replication"]);
    }

    #[test]
    fn later_duplicates_win_case_insensitively_for_settings() {
        let c = classify(
            &msg(&[
                ("user", "first"),
                ("datestyle", "German"),
                ("user", "second"),
                ("DateStyle", "ISO"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(c.startup.user, "second");
        assert_eq!(c.startup.params, pairs(&[("DateStyle", "ISO")]));
    }
}
