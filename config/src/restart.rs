//! Which settings a reload can apply, in the types: every section names each of its fields
//! once, as restart-only, kept until restart, or reloadable (`restart_only`,
//! `kept_until_restart` and `all_reloadable` next to each section's type), so a new field
//! does not compile until someone decides which it is.
//!
//! - **Restart-only** ([`RestartOnly`]): sockets and the AWS credential chain, built once
//!   at start, and `[peering] id`, which open sessions' cancel keys carry. A reload that
//!   changes them is refused.
//! - **Kept until restart** ([`KeptUntilRestart`]): `[log]`, `[admin]`, `[audit]` enabled
//!   and queue_capacity. A reload goes ahead, keeps the running values and warns.
//! - Everything else is applied by a reload, for new connections.

use crate::aws::{AwsRestartOnly, RolesAnywhereRestartOnly};
use crate::db_credentials::DbCredentialsRestartOnly;
use crate::listener::ListenerRestartOnly;
use crate::operations::{AdminKept, AuditKept, LogKept};
use crate::peering::PeeringRestartOnly;
use crate::root::Config;
use crate::target::TargetRestartOnly;

/// The settings a reload cannot change. Compare the running configuration's with the new
/// one's: [`RestartOnly::changes`] says what differs.
#[derive(Debug, PartialEq, Eq)]
pub struct RestartOnly<'a> {
    pub listeners: Vec<ListenerRestartOnly<'a>>,
    pub targets: Vec<TargetRestartOnly<'a>>,
    pub aws: AwsRestartOnly<'a>,
    pub db_credentials: DbCredentialsRestartOnly,
    pub peering: PeeringRestartOnly,
}

/// The settings a reload leaves at their running values (with a warning).
#[derive(Debug, PartialEq, Eq)]
pub struct KeptUntilRestart<'a> {
    pub log: LogKept<'a>,
    pub admin: AdminKept<'a>,
    pub audit: AuditKept,
}

impl Config {
    /// What a reload cannot change. Every section is named here, so a new one does not
    /// compile until it is classified.
    pub fn restart_only(&self) -> RestartOnly<'_> {
        let Config {
            listeners,
            targets,
            aws,
            db_credentials,
            peering,
            // Kept until restart: see `kept_until_restart`.
            log: _,
            admin: _,
            audit: _,
            // Applied by a reload.
            policy,
            limits,
            shutdown,
            security,
        } = self;
        policy.all_reloadable();
        limits.all_reloadable();
        shutdown.all_reloadable();
        security.all_reloadable();
        RestartOnly {
            listeners: listeners.iter().map(|l| l.restart_only()).collect(),
            targets: targets.iter().map(|t| t.restart_only()).collect(),
            aws: aws.restart_only(),
            db_credentials: db_credentials.restart_only(),
            peering: peering.restart_only(),
        }
    }

    /// What a reload leaves at its running value until the next restart.
    pub fn kept_until_restart(&self) -> KeptUntilRestart<'_> {
        KeptUntilRestart {
            log: self.log.kept_until_restart(),
            admin: self.admin.kept_until_restart(),
            audit: self.audit.kept_until_restart(),
        }
    }
}

/// The names of the fields that differ between `$old` and `$new`, both `&Self`; the
/// pattern makes sure every field is listed.
macro_rules! changed_fields {
    ($old:expr, $new:expr; $($field:ident),+ $(,)?) => {{
        let Self { $($field: _),+ } = $old;
        let mut changed: Vec<&'static str> = Vec::new();
        $(
            if $old.$field != $new.$field {
                changed.push(stringify!($field));
            }
        )+
        changed
    }};
}

impl RestartOnly<'_> {
    /// What differs from `new`, one entry per part: `the set of [[listener]]s`,
    /// `[[target]] "prod": host, region`, `[aws]: roles_anywhere.role_arn`, ... Empty when
    /// a reload may go ahead.
    pub fn changes(&self, new: &RestartOnly<'_>) -> Vec<String> {
        let mut out = Vec::new();
        list_changes(
            "[[listener]]",
            &self.listeners,
            &new.listeners,
            |l| &l.name,
            ListenerRestartOnly::changed,
            &mut out,
        );
        list_changes(
            "[[target]]",
            &self.targets,
            &new.targets,
            |t| t.name,
            TargetRestartOnly::changed,
            &mut out,
        );
        section_changes("[aws]", self.aws.changed(&new.aws), &mut out);
        section_changes(
            "[db_credentials]",
            self.db_credentials.changed(&new.db_credentials),
            &mut out,
        );
        section_changes("[peering]", self.peering.changed(&new.peering), &mut out);
        out
    }
}

impl KeptUntilRestart<'_> {
    /// What differs from `new`: `[log]: level`, `[admin]: bind`, ...
    pub fn changes(&self, new: &KeptUntilRestart<'_>) -> Vec<String> {
        let mut out = Vec::new();
        section_changes("[log]", self.log.changed(&new.log), &mut out);
        section_changes("[admin]", self.admin.changed(&new.admin), &mut out);
        section_changes("[audit]", self.audit.changed(&new.audit), &mut out);
        out
    }
}

fn section_changes(section: &str, changed: Vec<String>, out: &mut Vec<String>) {
    if !changed.is_empty() {
        out.push(format!("{section}: {}", changed.join(", ")));
    }
}

/// Entries are told apart by name and position: any difference in the names is a change of
/// the set; otherwise each entry's changed fields.
fn list_changes<T>(
    what: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
    changed: impl Fn(&T, &T) -> Vec<&'static str>,
    out: &mut Vec<String>,
) {
    let names = |list: &[T]| list.iter().map(&name).collect::<Vec<_>>().join("\n");
    if names(old) != names(new) {
        out.push(format!(
            "the set of {what}s (added, removed, renamed or reordered)"
        ));
        return;
    }
    for (o, n) in old.iter().zip(new) {
        let fields = changed(o, n);
        if !fields.is_empty() {
            out.push(format!("{what} {:?}: {}", name(o), fields.join(", ")));
        }
    }
}

impl ListenerRestartOnly<'_> {
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        changed_fields!(self, new; name, bind, unix_socket_mode)
    }
}

impl TargetRestartOnly<'_> {
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        changed_fields!(self, new;
            name, kind, host, region, cluster_identifier, workgroup, custom_domain_name,
            with_iam, auto_create, credential_duration, aws_endpoint_url)
    }
}

impl AwsRestartOnly<'_> {
    fn changed(&self, new: &Self) -> Vec<String> {
        let mut changed: Vec<String> = changed_fields!(self, new;
            source, profile, region, refresh_before, roles_anywhere)
        .into_iter()
        .map(String::from)
        .collect();
        // Name the keys of [aws.roles_anywhere] when both have the table.
        if let (Some(old), Some(new)) = (&self.roles_anywhere, &new.roles_anywhere) {
            changed.retain(|c| c != "roles_anywhere");
            changed.extend(
                old.changed(new)
                    .into_iter()
                    .map(|f| format!("roles_anywhere.{f}")),
            );
        }
        changed
    }
}

impl RolesAnywhereRestartOnly<'_> {
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        changed_fields!(self, new;
            certificate, private_key, chain, private_key_passphrase_env,
            private_key_passphrase_file, trust_anchor_arn, profile_arn, role_arn, region,
            session_duration, role_session_name, max_sessions, endpoint_url)
    }
}

impl DbCredentialsRestartOnly {
    fn changed(&self, new: &Self) -> Vec<String> {
        strings(changed_fields!(self, new;
            refresh_before, fetches_per_identity_per_minute, max_cached_per_identity,
            failure_backoff_max))
    }
}

impl PeeringRestartOnly {
    fn changed(&self, new: &Self) -> Vec<String> {
        strings(changed_fields!(self, new; id))
    }
}

impl LogKept<'_> {
    fn changed(&self, new: &Self) -> Vec<String> {
        strings(changed_fields!(self, new; format, level))
    }
}

impl AdminKept<'_> {
    fn changed(&self, new: &Self) -> Vec<String> {
        strings(changed_fields!(self, new;
            bind, allow_remote, reload_token_file, reload_token_env, allowed_hosts))
    }
}

impl AuditKept {
    fn changed(&self, new: &Self) -> Vec<String> {
        strings(changed_fields!(self, new; enabled, queue_capacity, statement_queue_capacity))
    }
}

fn strings(fields: Vec<&'static str>) -> Vec<String> {
    fields.into_iter().map(String::from).collect()
}

#[cfg(test)]
mod tests;
