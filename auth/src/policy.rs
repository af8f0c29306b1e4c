//! Identity → grant policy: which target, database user, database and groups a client
//! certificate (or local user) may use.
//!
//! A [`Policy`] is compiled once per configuration load from
//! [`proxy_config::PolicyConfig`] and then answers [`Policy::authorize`] for every login.
//! The promise it keeps: one certificate becomes exactly the database user its own matched
//! value names, and nothing else gets in.
//!
//! # Semantics
//!
//! **Matching.** A rule *matches* a client certificate when every certificate `match` field
//! it gives matches (fields it omits are ignored; a rule with no certificate field matches
//! no certificate). It matches a local user of a `password` or `trust` listener when its
//! `local_user` pattern matches the name; a rule without `local_user` matches no local
//! user. `match.listener` and `match.auth` further limit a rule to clients of those
//! listeners and authentication methods.
//!
//! | key             | compared with                                          | case        |
//! |-----------------|--------------------------------------------------------|-------------|
//! | `cn`            | the subject CN                                         | sensitive   |
//! | `san_uri`       | the URI SAN                                            | sensitive   |
//! | `san_dns`       | the DNS SAN                                            | insensitive |
//! | `san_email`     | the email SAN                                          | sensitive   |
//! | `issuer`        | the issuer DN in RFC 4514 form, e.g. `CN=Corp Client CA,O=Corp` | sensitive |
//! | `issuer_sha256` | SHA-256 of a CA certificate that verified the chain   | hex         |
//! | `local_user`    | the local user name (never a certificate)             | sensitive   |
//!
//! A certificate with several values of a kind the rule matches on (two URI SANs for a
//! `san_uri` rule, two CNs for a `cn` rule) does not match the rule, unless the rule says
//! `multiple_sans = "each"`: then each value is tried on its own, and the rule grants what
//! any single matching value would (a `default_user` must still name one user).
//!
//! Patterns are whole-value globs with named captures ([`pattern`]): `*` crosses `/`,
//! `{name}` captures one segment (never `/` or `@`), `{a,b}` is an alternation.
//!
//! **Choosing the rule.** Rules are evaluated in order; the rule used is the **first rule
//! that matches the client and grants the requested target** (`"*"` grants every target).
//! Only that rule's users and databases are checked afterwards. No such rule →
//! [`DenialReason::NoMatchingRule`] or [`DenialReason::TargetNotGranted`].
//!
//! **Templates** ([`template`]) take their values only from what satisfied the rule's
//! match: `{cn}` the matched CN, `{san_uri_path}` the last path segment of the matched URI
//! SAN, `{san_dns}` the matched DNS SAN, `{email_local}` the local part of the matched
//! email SAN (only where the match pins the domain), `{local_user}`, and the rule's named
//! captures. A template that refers to a field the rule does not match on is refused at
//! load. An expansion must be a valid user name ([`check_name`]), otherwise it grants
//! nothing: certificates are attacker-influenced, so a CN such as `a:b` never becomes a
//! user.
//!
//! **User.** Names are compared the way Redshift sees them: unquoted user names fold to
//! lower case ([`fold`]), so `Alice` and `alice` are one user, and the grant carries the
//! folded name. An empty or placeholder startup user (`placeholder_users`, default `iam`,
//! `default`, `-`) takes the rule's `default_user`; otherwise the requested user must equal
//! an expansion of one of the rule's `users`. Whatever the rules say, reserved users are
//! refused ([`DenialReason::ReservedUser`]): `rdsdb`, `pg_*`, `padb_*` and `deny_users`
//! (default `awsuser`).
//!
//! **Database.** The requested database must match one of the rule's `databases`
//! patterns. An empty requested database defaults to the granted user name, as
//! PostgreSQL does, and is checked like any other.
//!
//! **Grant.** On success the [`Grant`] carries the rule name, the target, the database user
//! and database, the rule's `groups` (folded, sorted, de-duplicated) and its `role_arn`.
//! Every refusal is a [`Denial`] whose client message never reveals what would have been
//! allowed.

mod denial;
mod names;
mod pattern;
mod rule;
mod session_name;
mod template;

use denial::DenialDetails;
pub use denial::{Denial, DenialReason};
pub use names::{check_name, fold, is_reserved, InvalidName, MAX_NAME_LEN};
pub use rule::Access;

use crate::db_credentials::DbCredentialRequest;
use crate::principal::PrincipalRef;
use rule::{Matched, Rule};
use template::Binding;

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    placeholder_users: Vec<String>,
    deny_users: Vec<String>,
    rules: Vec<Rule>,
}

/// What a login was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Name of the rule that granted it.
    pub rule: String,
    /// `[[target]]` name.
    pub target: String,
    /// Database user to obtain credentials for, folded to lower case as Redshift folds
    /// unquoted names.
    pub db_user: String,
    /// Database to log in to.
    pub database: String,
    /// Database groups, folded, sorted and de-duplicated.
    pub db_groups: Vec<String>,
    /// IAM role for this login; `None` for the configured default.
    pub role_arn: Option<proxy_config::Arn>,
    /// The client's own AWS role session, when `[aws.roles_anywhere] role_session_name` is
    /// a template; `None` for the role's shared session.
    pub role_session_name: Option<String>,
}

impl Grant {
    /// The credential request for this grant (also the credential cache key).
    pub fn credential_request(&self) -> DbCredentialRequest {
        DbCredentialRequest {
            target: self.target.clone(),
            role_arn: self.role_arn.clone(),
            db_user: self.db_user.clone(),
            db_name: self.database.clone(),
            db_groups: self.db_groups.clone(),
            role_session_name: self.role_session_name.clone(),
        }
    }
}

/// A policy configuration the proxy cannot use. Names the rule and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy rule {rule:?}: {key} pattern {pattern:?}: {reason}")]
    InvalidPattern {
        rule: String,
        key: &'static str,
        pattern: String,
        reason: String,
    },
    #[error("policy rule {rule:?}: {key} template {template:?}: {reason}")]
    InvalidTemplate {
        rule: String,
        key: &'static str,
        template: String,
        reason: String,
    },
    #[error("policy rule {rule:?}: groups entry {group:?} is not a valid group name: it {reason}")]
    InvalidGroup {
        rule: String,
        group: String,
        reason: InvalidName,
    },
}

impl Policy {
    /// Compiles `config`. Fails on the first pattern, template or group name that cannot
    /// work.
    pub fn new(config: &proxy_config::PolicyConfig) -> Result<Policy, PolicyError> {
        Policy::compile(config, None)
    }

    /// [`Policy::new`], with the role session name template of `[aws.roles_anywhere]`
    /// (when `role_session_name` is one, [`proxy_config::is_template`]): every rule must be
    /// able to fill it, and grants carry the client's session name.
    pub fn compile(
        config: &proxy_config::PolicyConfig,
        role_session_name: Option<&str>,
    ) -> Result<Policy, PolicyError> {
        let rules = config
            .rules
            .iter()
            .map(|r| Rule::compile(r, &config.deny_users, role_session_name))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            placeholder_users: config.placeholder_users.clone(),
            deny_users: config.deny_users.clone(),
            rules,
        })
    }

    /// Decides whether the client (a certificate identity or a local user) may log in
    /// through `access` as `requested_user` on `requested_database`. See the
    /// [module documentation](self) for the rules.
    pub fn authorize<'p>(
        &self,
        principal: impl Into<PrincipalRef<'p>>,
        access: &Access<'_>,
        requested_user: &str,
        requested_database: &str,
    ) -> Result<Grant, Denial> {
        let identity = principal.into();
        let mut denial = DenialDetails {
            subject: match identity {
                PrincipalRef::Certificate(_) => "certificate",
                PrincipalRef::LocalUser(_) => "local user",
            },
            reason: DenialReason::NoMatchingRule,
            target: access.target.to_owned(),
            requested_user: requested_user.to_owned(),
            database: String::new(),
            database_defaulted: false,
            rule: None,
            matching_rules: Vec::new(),
            notes: Vec::new(),
        };

        let mut chosen = None;
        for rule in &self.rules {
            match rule.matches(identity, access) {
                Matched::No => {}
                Matched::Ambiguous(note) => denial.notes.push(note),
                Matched::Yes(bindings) => {
                    denial.matching_rules.push(rule.name.clone());
                    if rule.grants_target(access.target) {
                        chosen = Some((rule, bindings));
                        break;
                    }
                }
            }
        }
        let Some((rule, bindings)) = chosen else {
            if !denial.matching_rules.is_empty() {
                denial.reason = DenialReason::TargetNotGranted;
            }
            return Err(denial.into());
        };
        denial.rule = Some(rule.name.clone());
        denial.notes.clear();

        let db_user = self.granted_user(rule, &bindings, requested_user, &mut denial)?;
        if is_reserved(&db_user, &self.deny_users) {
            denial.reason = DenialReason::ReservedUser;
            denial.notes.push(format!("{db_user:?} is reserved"));
            return Err(denial.into());
        }

        let (database, defaulted) = if requested_database.is_empty() {
            (db_user.clone(), true)
        } else {
            (requested_database.to_owned(), false)
        };
        if !rule.databases.iter().any(|g| g.is_match(&database)) {
            denial.reason = DenialReason::DatabaseNotGranted;
            denial.database = database;
            denial.database_defaulted = defaulted;
            // Template notes only explain user refusals.
            denial.notes.clear();
            return Err(denial.into());
        }

        let role_session_name = match &rule.role_session_name {
            None => None,
            Some(template) => match template.render(&bindings) {
                Ok(name) => Some(name),
                Err(e) => {
                    denial.reason = DenialReason::RoleSessionName;
                    denial.notes.clear();
                    denial
                        .notes
                        .push(format!("role_session_name {:?}: {e}", template.source()));
                    return Err(denial.into());
                }
            },
        };
        Ok(Grant {
            rule: rule.name.clone(),
            target: access.target.to_owned(),
            db_user,
            database,
            db_groups: rule.groups.clone(),
            role_arn: rule.role_arn.clone(),
            role_session_name,
        })
    }

    /// The database user `rule` grants for the requested one, folded: the rule's
    /// `default_user` for a placeholder (it must expand to one user however the client
    /// matched), else the requested user if any binding's expansion of `users` names it.
    fn granted_user(
        &self,
        rule: &Rule,
        bindings: &[Binding],
        requested_user: &str,
        denial: &mut DenialDetails,
    ) -> Result<String, Denial> {
        let requested = fold(requested_user);
        let wants_default =
            requested.is_empty() || self.placeholder_users.iter().any(|p| fold(p) == requested);
        if wants_default {
            let Some(template) = &rule.default_user else {
                denial.reason = DenialReason::NoDefaultUser;
                denial.notes.push("the rule has no default_user".into());
                return Err(denial.clone().into());
            };
            let mut users: Vec<String> = Vec::new();
            for b in bindings {
                match template.expand(b) {
                    Ok(user) => users.push(fold(&user)),
                    Err(e) => denial
                        .notes
                        .push(format!("default_user {:?}: {e}", template.source())),
                }
            }
            users.sort();
            users.dedup();
            return match users.as_slice() {
                [user] => Ok(user.clone()),
                [] => {
                    denial.reason = DenialReason::NoDefaultUser;
                    Err(denial.clone().into())
                }
                several => {
                    denial.reason = DenialReason::NoDefaultUser;
                    denial.notes.push(format!(
                        "default_user {:?} names {} users for this certificate; it must name one",
                        template.source(),
                        several.len()
                    ));
                    Err(denial.clone().into())
                }
            };
        }
        for template in &rule.users {
            for b in bindings {
                match template.expand(b) {
                    Ok(user) if fold(&user) == requested => return Ok(requested),
                    Ok(_) => {}
                    // Worth telling the operator: "why was alice refused?" is usually an
                    // unexpected certificate field.
                    Err(e) => denial
                        .notes
                        .push(format!("users template {:?}: {e}", template.source())),
                }
            }
        }
        denial.reason = DenialReason::UserNotGranted;
        Err(denial.clone().into())
    }
}

#[cfg(test)]
mod tests;
