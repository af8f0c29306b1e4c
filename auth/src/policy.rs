//! Identity → grant policy: which target, database user, database and groups a client
//! certificate may use.
//!
//! A [`Policy`] is compiled once per configuration load from
//! [`proxy_config::PolicyConfig`] and then answers [`Policy::authorize`] for every login.
//!
//! # Semantics
//!
//! **Matching.** A rule *matches* a client certificate ([`ClientIdentity`]) when every
//! certificate `match` field the rule gives matches (fields it omits are ignored; a rule with
//! no certificate fields matches no certificate). It matches a local user of a `password` or
//! `trust` listener ([`LocalUser`]) when its `local_user` glob matches the user name; a rule
//! without `local_user` matches no local user. A rule with both kinds of field matches
//! nobody (configuration validation refuses it):
//!
//! | key         | compared with                                   | case        |
//! |-------------|-------------------------------------------------|-------------|
//! | `cn`        | the first subject CN (no CN: no match)          | sensitive   |
//! | `san_uri`   | *any* URI SAN                                   | sensitive   |
//! | `san_dns`   | *any* DNS SAN                                   | insensitive |
//! | `san_email` | *any* email SAN                                 | sensitive   |
//! | `issuer`    | the issuer DN in RFC 4514 form, e.g. `CN=Corp Client CA,O=Corp` (see [`crate::identity`]) | sensitive |
//! | `local_user`| the local user name (never a certificate)       | sensitive   |
//!
//! Patterns are globs over the whole value: `*` is any run of characters *including* `/`
//! (so `spiffe://corp.example/ns/bi/*` matches `spiffe://corp.example/ns/bi/sa/reporting`),
//! `?` is one character, `[abc]`/`[!abc]` are character classes, `{a,b}` is an alternation.
//! Backslash is an ordinary character (RFC 4514 text uses it for escaping, e.g.
//! `O=Corp\, Inc.`); to match a literal metacharacter use a class, e.g. `[*]`, `[{]`.
//!
//! **Choosing the rule.** Rules are evaluated in order; the rule used is the **first rule that
//! matches the identity and grants the requested target** (`targets` lists target names, and
//! `"*"` grants every target). Only that rule's users and databases are checked afterwards:
//! a later rule is never consulted, even if it would grant the user or database. No such rule
//! → [`DenialReason::NoMatchingRule`] (no rule matches the certificate) or
//! [`DenialReason::TargetNotGranted`] (some match, none grants the target).
//!
//! **User.** If the requested user is empty or one of `placeholder_users` (exact,
//! case-sensitive comparison; default `iam`, `default`, `-`), the rule's `default_user` is
//! expanded and used; a rule without one, or whose `default_user` cannot be expanded, denies
//! with [`DenialReason::NoDefaultUser`]. Otherwise the requested user must *equal*
//! (case-sensitively) one of the rule's `users` after template expansion, else
//! [`DenialReason::UserNotGranted`].
//!
//! **Templates.** `users` and `default_user` may contain `{cn}` (subject CN), `{email_local}`
//! (part before the last `@` of the first email SAN), `{san_dns}` (first DNS SAN),
//! `{san_uri_path}` (last non-empty path segment of the first URI SAN, taken literally) and
//! `{local_user}` (the local user name). A template whose placeholder the client cannot fill
//! (missing or empty value; certificate fields for a local user, `{local_user}` for a
//! certificate) grants nothing. An expansion must be a valid user name ([`check_name`]: 1–64 characters, first an
//! ASCII letter or `_`, then ASCII letters, digits, `_`, `$`, `.`, `-`, `@`; never `public`),
//! otherwise it grants nothing: certificates are attacker-influenced, so a CN such as `a:b`
//! or `x/../y` never becomes a user.
//!
//! **Database.** The requested database must match one of the rule's `databases` globs
//! (case-sensitive). An empty requested database defaults to the granted user name, as
//! PostgreSQL does, and is checked like any other.
//!
//! **Grant.** On success the [`Grant`] carries the rule name, the target, the database user and
//! database, the rule's `groups` (sorted, de-duplicated) and its `role_arn`.
//!
//! Every refusal is a [`Denial`] with SQLSTATE `28000`, whose client message never reveals what
//! would have been allowed.
//!
//! **Load-time checks** ([`Policy::new`]): every glob must compile; templates must parse and be
//! able to yield a valid user name for *some* certificate (a literal user must itself be
//! valid); group names must be valid names.

mod denial;
mod names;
mod template;

use denial::DenialDetails;
pub use denial::{Denial, DenialReason};
pub use names::{check_name, InvalidName, MAX_NAME_LEN};

use crate::db_credentials::DbCredentialRequest;
use crate::identity::ClientIdentity;
use crate::principal::{LocalUser, PrincipalRef};
use globset::{GlobBuilder, GlobMatcher};
use template::{Template, TemplateSyntaxError};

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    placeholder_users: Vec<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    cn: Option<GlobMatcher>,
    san_uri: Option<GlobMatcher>,
    san_dns: Option<GlobMatcher>,
    san_email: Option<GlobMatcher>,
    issuer: Option<GlobMatcher>,
    local_user: Option<GlobMatcher>,
    /// `None`: `"*"` was listed, every target is granted.
    targets: Option<Vec<String>>,
    users: Vec<Template>,
    default_user: Option<Template>,
    databases: Vec<GlobMatcher>,
    groups: Vec<String>,
    role_arn: Option<String>,
}

/// What a login was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Name of the rule that granted it.
    pub rule: String,
    /// `[[target]]` name.
    pub target: String,
    /// Database user to obtain credentials for.
    pub db_user: String,
    /// Database to log in to.
    pub database: String,
    /// Database groups, sorted and de-duplicated.
    pub db_groups: Vec<String>,
    /// IAM role for this login; `None` for the configured default.
    pub role_arn: Option<String>,
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
        }
    }
}

/// A policy configuration the proxy cannot use. Names the rule and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy rule {rule:?}: {key} pattern {pattern:?} is not a valid glob: {reason}")]
    InvalidGlob {
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
    /// Compiles `config`. Fails on the first glob, template or group name that cannot work.
    pub fn new(config: &proxy_config::PolicyConfig) -> Result<Policy, PolicyError> {
        let rules = config
            .rules
            .iter()
            .map(Rule::compile)
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            placeholder_users: config.placeholder_users.clone(),
            rules,
        })
    }

    /// Decides whether the client (a certificate identity or a local user) may log in to
    /// `target` as `requested_user` on `requested_database`. See the
    /// [module documentation](self) for the rules.
    pub fn authorize<'p>(
        &self,
        principal: impl Into<PrincipalRef<'p>>,
        target: &str,
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
            target: target.to_owned(),
            requested_user: requested_user.to_owned(),
            database: String::new(),
            database_defaulted: false,
            rule: None,
            matching_rules: Vec::new(),
            notes: Vec::new(),
        };

        let mut chosen = None;
        for rule in self.rules.iter().filter(|r| r.matches(identity)) {
            denial.matching_rules.push(rule.name.clone());
            if rule.grants_target(target) {
                chosen = Some(rule);
                break;
            }
        }
        let Some(rule) = chosen else {
            if !denial.matching_rules.is_empty() {
                denial.reason = DenialReason::TargetNotGranted;
            }
            return Err(denial.into());
        };
        denial.rule = Some(rule.name.clone());

        let wants_default =
            requested_user.is_empty() || self.placeholder_users.iter().any(|p| p == requested_user);
        let db_user = if wants_default {
            let expanded = match &rule.default_user {
                None => Err("the rule has no default_user".to_owned()),
                Some(t) => t
                    .expand(identity)
                    .map_err(|e| format!("default_user {:?}: {e}", t.source())),
            };
            match expanded {
                Ok(user) => user,
                Err(note) => {
                    denial.reason = DenialReason::NoDefaultUser;
                    denial.notes.push(note);
                    return Err(denial.into());
                }
            }
        } else {
            let mut granted = false;
            for t in &rule.users {
                match t.expand(identity) {
                    Ok(user) if user == requested_user => {
                        granted = true;
                        break;
                    }
                    Ok(_) => {}
                    // Worth telling the operator: "why was alice refused?" is usually an
                    // unexpected certificate field.
                    Err(e) => denial
                        .notes
                        .push(format!("users template {:?}: {e}", t.source())),
                }
            }
            if !granted {
                denial.reason = DenialReason::UserNotGranted;
                return Err(denial.into());
            }
            requested_user.to_owned()
        };

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

        Ok(Grant {
            rule: rule.name.clone(),
            target: target.to_owned(),
            db_user,
            database,
            db_groups: rule.groups.clone(),
            role_arn: rule.role_arn.clone(),
        })
    }
}

impl Rule {
    fn compile(c: &proxy_config::RuleConfig) -> Result<Rule, PolicyError> {
        let glob = |key: &'static str, pattern: &Option<String>, case_insensitive: bool| {
            pattern
                .as_deref()
                .map(|p| compile_glob(&c.name, key, p, case_insensitive))
                .transpose()
        };
        let template = |key: &'static str, source: &str| {
            Template::parse(source).map_err(|e: TemplateSyntaxError| PolicyError::InvalidTemplate {
                rule: c.name.clone(),
                key,
                template: source.to_owned(),
                reason: e.to_string(),
            })
        };

        let mut groups = c.groups.clone();
        groups.sort();
        groups.dedup();
        for group in &groups {
            check_name(group).map_err(|reason| PolicyError::InvalidGroup {
                rule: c.name.clone(),
                group: group.clone(),
                reason,
            })?;
        }

        Ok(Rule {
            name: c.name.clone(),
            cn: glob("match.cn", &c.matches.cn, false)?,
            san_uri: glob("match.san_uri", &c.matches.san_uri, false)?,
            // DNS names are case-insensitive (RFC 4343).
            san_dns: glob("match.san_dns", &c.matches.san_dns, true)?,
            san_email: glob("match.san_email", &c.matches.san_email, false)?,
            issuer: glob("match.issuer", &c.matches.issuer, false)?,
            local_user: glob("match.local_user", &c.matches.local_user, false)?,
            targets: if c.targets.iter().any(|t| t == "*") {
                None
            } else {
                Some(c.targets.clone())
            },
            users: c
                .users
                .iter()
                .map(|u| template("users", u))
                .collect::<Result<_, _>>()?,
            default_user: c
                .default_user
                .as_deref()
                .map(|u| template("default_user", u))
                .transpose()?,
            databases: c
                .databases
                .iter()
                .map(|d| compile_glob(&c.name, "databases", d, false))
                .collect::<Result<_, _>>()?,
            groups,
            role_arn: c.role_arn.clone(),
        })
    }

    fn matches(&self, principal: PrincipalRef<'_>) -> bool {
        match principal {
            PrincipalRef::Certificate(id) => self.local_user.is_none() && self.matches_cert(id),
            PrincipalRef::LocalUser(u) => self.matches_local(u),
        }
    }

    fn matches_local(&self, user: &LocalUser) -> bool {
        let has_cert_criterion = self.cn.is_some()
            || self.san_uri.is_some()
            || self.san_dns.is_some()
            || self.san_email.is_some()
            || self.issuer.is_some();
        !has_cert_criterion
            && self
                .local_user
                .as_ref()
                .is_some_and(|g| g.is_match(&user.name))
    }

    fn matches_cert(&self, id: &ClientIdentity) -> bool {
        let any = |glob: &GlobMatcher, values: &[String]| values.iter().any(|v| glob.is_match(v));
        let has_criterion = self.cn.is_some()
            || self.san_uri.is_some()
            || self.san_dns.is_some()
            || self.san_email.is_some()
            || self.issuer.is_some();
        has_criterion
            && self
                .cn
                .as_ref()
                .is_none_or(|g| id.common_name.as_deref().is_some_and(|cn| g.is_match(cn)))
            && self.san_uri.as_ref().is_none_or(|g| any(g, &id.san_uri))
            && self.san_dns.as_ref().is_none_or(|g| any(g, &id.san_dns))
            && self
                .san_email
                .as_ref()
                .is_none_or(|g| any(g, &id.san_email))
            && self.issuer.as_ref().is_none_or(|g| g.is_match(&id.issuer))
    }

    fn grants_target(&self, target: &str) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == target))
    }
}

fn compile_glob(
    rule: &str,
    key: &'static str,
    pattern: &str,
    case_insensitive: bool,
) -> Result<GlobMatcher, PolicyError> {
    GlobBuilder::new(pattern)
        // Values are not paths: `*` must cross `/` (SPIFFE IDs, URIs).
        .literal_separator(false)
        // RFC 4514 text escapes with backslashes; keep them literal in patterns.
        .backslash_escape(false)
        .case_insensitive(case_insensitive)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| PolicyError::InvalidGlob {
            rule: rule.to_owned(),
            key,
            pattern: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

#[cfg(test)]
mod tests;
