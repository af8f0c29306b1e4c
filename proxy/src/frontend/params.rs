//! What the proxy keeps from a client's StartupMessage.
//!
//! `user` and `database` are taken out, replication is refused and protocol options
//! (`_pq_.*`) are negotiated away. Every other parameter is kept as sent; which of them go
//! upstream is the target kind's business ([`crate::backend::startup_params`]), decided
//! once the client's target is known.

use crate::net::messages::startup_message::{StartupMessage, PROTOCOL_OPTION_PREFIX};

/// The client's startup request, as the rest of the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStartup {
    /// The `user` parameter, literally (it may be a placeholder resolved by policy).
    pub user: String,
    /// The `database` parameter; empty when the client sent none. PostgreSQL's default
    /// (database = user) is applied by the policy to the *granted* user, so a client that
    /// logs in with a placeholder user lands in its real user's database.
    pub database: String,
    /// Every other parameter, names and values as the client sent them (later duplicates
    /// replace earlier ones, compared case-insensitively as GUC names are).
    pub params: Vec<(String, String)>,
    /// Names taken out here (`replication=false`, protocol options), for a log line.
    pub dropped_params: Vec<String>,
    /// Minor protocol version in effect (always 0: newer requests are negotiated down).
    pub protocol_minor: u16,
    /// Minor protocol version the client asked for, for logs.
    pub requested_protocol_minor: u16,
}

impl ClientStartup {
    /// The value of parameter `name` as the client sent it (compared case-insensitively,
    /// as GUC names are).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
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
pub fn classify(msg: &StartupMessage) -> Result<ClassifiedStartup, StartupRefusal> {
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
            _ => {
                params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                params.push((name.clone(), value.clone()));
            }
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
        StartupMessage::v3(params)
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_redshift_jdbc_startup_keeps_every_parameter_but_protocol_options() {
        let m = msg(&[
            ("user", "alice"),
            ("database", "dev"),
            ("client_encoding", "UTF8"),
            ("_pq_.compression", "lz4"),
            ("driver_version", "Redshift JDBC Driver 2.1.0.30"),
            ("client_protocol_version", "2"),
            ("IntervalStyle", "iso_8601"),
            ("options", "-c geqo=off"),
        ]);
        let c = classify(&m).unwrap();
        assert_eq!(c.startup.user, "alice");
        assert_eq!(c.startup.database, "dev");
        assert_eq!(
            c.startup.params,
            pairs(&[
                ("client_encoding", "UTF8"),
                ("driver_version", "Redshift JDBC Driver 2.1.0.30"),
                ("client_protocol_version", "2"),
                ("IntervalStyle", "iso_8601"),
                ("options", "-c geqo=off"),
            ])
        );
        assert_eq!(c.startup.dropped_params, ["_pq_.compression"]);
        assert_eq!(c.protocol_options, ["_pq_.compression"]);
    }

    #[test]
    fn missing_database_stays_empty_and_names_stay_literal() {
        let c = classify(&msg(&[("user", "a&user=b")])).unwrap();
        assert_eq!(
            (c.startup.user.as_str(), c.startup.database.as_str()),
            ("a&user=b", "")
        );
        let c = classify(&msg(&[("user", "u"), ("database", "d=1&x")])).unwrap();
        assert_eq!(c.startup.database, "d=1&x");
    }

    #[test]
    fn user_is_required() {
        assert_eq!(
            classify(&msg(&[("database", "d")])),
            Err(StartupRefusal::NoUser)
        );
        assert_eq!(classify(&msg(&[("user", "")])), Err(StartupRefusal::NoUser));
    }

    #[test]
    fn replication_is_refused_unless_explicitly_false() {
        for v in ["true", "database", "1", "on", ""] {
            assert_eq!(
                classify(&msg(&[("user", "u"), ("replication", v)])),
                Err(StartupRefusal::Replication),
                "{v}"
            );
        }
        let c = classify(&msg(&[("user", "u"), ("replication", "false")])).unwrap();
        assert_eq!(c.startup.dropped_params, ["replication"]);
    }

    #[test]
    fn later_duplicates_win_case_insensitively_for_settings() {
        let c = classify(&msg(&[
            ("user", "first"),
            ("datestyle", "German"),
            ("user", "second"),
            ("DateStyle", "ISO"),
        ]))
        .unwrap();
        assert_eq!(c.startup.user, "second");
        assert_eq!(c.startup.params, pairs(&[("DateStyle", "ISO")]));
    }
}
