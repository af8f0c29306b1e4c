//! What a configuration may contain but probably does not mean. Warnings never stop the
//! proxy: `check-config` prints them, and the proxy logs them at startup and on every
//! reload.

use crate::problems::{KeyPath, Warning, Warnings};
use crate::root::Config;
use std::time::Duration;

/// PostgreSQL's default `authentication_timeout` (since 7.2, 2001: "an overall timeout on
/// the client authentication cycle ... 60 seconds by default").
const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Statement text a full statement-audit queue may hold before a warning (the defaults,
/// 4 KiB × 8,192 records, hold 32 MiB).
const STATEMENT_QUEUE_WARNING: u64 = 256 << 20;

impl Config {
    /// Every warning about this configuration, each with its key path.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut w = Warnings::default();
        self.warn_ignored_grants(&mut w);
        self.warn_handshake_timeout(&mut w);
        self.warn_warm_connection_age(&mut w);
        self.warn_statement_queue_memory(&mut w);
        w.into_vec()
    }

    /// Warm connections kept as long as servers keep connections that have not logged in:
    /// PostgreSQL's `authentication_timeout` defaults to 60 s, and Redshift (a PostgreSQL
    /// 8.0 derivative) documents no other value. A longer age is not refused (the proxy
    /// discards a connection the server closed and dials again), it just wastes them.
    fn warn_warm_connection_age(&self, w: &mut Warnings) {
        for (i, t) in self.targets.iter().enumerate() {
            if t.warm_connections > 0 && t.warm_connection_max_age >= AUTHENTICATION_TIMEOUT {
                w.add(
                    KeyPath::root("target")
                        .index(i)
                        .key("warm_connection_max_age"),
                    format!(
                        "{:?} is not below the {AUTHENTICATION_TIMEOUT:?} after which \
                         PostgreSQL-based servers close connections that have not logged in: \
                         warm connections would be closed by the server before the proxy \
                         replaces them",
                        t.warm_connection_max_age
                    ),
                );
            }
        }
    }

    /// Rules granting targets that log in as the IAM identity: the user they grant is not
    /// the one the session gets, and groups they reach only through `"*"` are dropped.
    /// (Groups on a target the rule names itself are a problem: see `check.rs`.)
    fn warn_ignored_grants(&self, w: &mut Warnings) {
        for (i, rule) in self.policy.rules.iter().enumerate() {
            let path = KeyPath::root("policy.rule").index(i);
            let role = rule
                .role_arn
                .as_ref()
                .or(self.aws.roles_anywhere.as_ref().map(|ra| &ra.role_arn))
                .map_or_else(
                    || "IAMR:<role>".to_owned(),
                    |arn| format!("IAMR:{}", arn.resource_name()),
                );
            for target in &self.targets {
                if !rule.grants_target(&target.name) || !target.logs_in_as_iam_identity() {
                    continue;
                }
                w.add(
                    path.key("users"),
                    format!(
                        "sessions on target {:?} log in as {role}, not as the database user \
                         this rule grants ({}): {} logs in as the IAM role",
                        target.name,
                        rule.users.join(", "),
                        target.credential_api()
                    ),
                );
                let why = target.why_grants_are_ignored().unwrap_or_default();
                if !rule.groups.is_empty() && !rule.names_target(&target.name) {
                    w.add(
                        path.key("groups"),
                        format!(
                            "groups {:?} are ignored on target {:?} (granted through \"*\"), \
                             which {why}",
                            rule.groups, target.name
                        ),
                    );
                }
            }
        }
    }

    /// A full statement queue holds up to `statement_queue_capacity` records of up to
    /// `statement_max_length` bytes of text each (more once JSON escapes control bytes),
    /// in the proxy's memory, whenever clients send long statements faster than the disk
    /// takes them.
    fn warn_statement_queue_memory(&self, w: &mut Warnings) {
        let a = &self.audit;
        let text = a.statement_max_length.0;
        let worst = text.saturating_mul(a.statement_queue_capacity as u64);
        if a.statements && worst > STATEMENT_QUEUE_WARNING {
            w.add(
                "audit.statement_max_length",
                format!(
                    "with statement_queue_capacity = {} a full statement queue holds {} MiB of                      statement text or more in memory; lower one of them",
                    a.statement_queue_capacity,
                    worst >> 20
                ),
            );
        }
    }

    /// A listener whose `login_timeout` ends the handshake before `handshake_timeout` can.
    fn warn_handshake_timeout(&self, w: &mut Warnings) {
        let handshake = self.limits.handshake_timeout;
        for l in &self.listeners {
            if l.login_timeout < handshake {
                w.add(
                    "limits.handshake_timeout",
                    format!(
                        "{handshake:?} is longer than listener {:?}'s login_timeout ({:?}), \
                         which ends the handshake first there",
                        l.display_name(),
                        l.login_timeout
                    ),
                );
            }
        }
    }
}
