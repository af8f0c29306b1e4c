//! `[policy]` and `[[policy.rule]]`: who may log in as whom, where. The semantics live in
//! `auth/src/policy.rs`, which compiles the patterns and templates; this module checks what
//! can be checked of the text alone.

use crate::arn::Arn;
use crate::listener::ClientAuthMode;
use crate::problems::{KeyPath, Problems};
use serde::Deserialize;
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Startup `user` values that mean "no particular user": the matched rule's
    /// `default_user` applies instead.
    #[serde(default = "default_placeholder_users")]
    pub placeholder_users: Vec<String>,
    /// Database users no rule may grant, compared case-insensitively, besides those
    /// Redshift reserves (`rdsdb`, `pg_*`, `padb_*`). Default: `awsuser`, the console's
    /// default admin user.
    #[serde(default = "default_deny_users")]
    pub deny_users: Vec<String>,
    /// Rules, first match wins.
    #[serde(rename = "rule", default)]
    pub rules: Vec<RuleConfig>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            placeholder_users: default_placeholder_users(),
            deny_users: default_deny_users(),
            rules: Vec::new(),
        }
    }
}

fn default_deny_users() -> Vec<String> {
    vec!["awsuser".into()]
}

fn default_placeholder_users() -> Vec<String> {
    vec!["iam".into(), "default".into(), "-".into()]
}

/// One policy rule: which identities it matches and what it grants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Which client certificates this rule matches. Every given field must match.
    #[serde(rename = "match")]
    pub matches: MatchConfig,
    /// Target names this rule grants (`*` for all).
    pub targets: Vec<String>,
    /// Database users this rule grants: literal names or templates such as `{cn}`.
    pub users: Vec<String>,
    /// The user taken when the client's startup user is a placeholder.
    #[serde(default)]
    pub default_user: Option<String>,
    /// Databases this rule grants (glob patterns, `*` for all).
    pub databases: Vec<String>,
    /// Database groups joined for the session (GetClusterCredentials `DbGroups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// IAM role assumed through Roles Anywhere for this rule's logins (default: the
    /// `[aws.roles_anywhere]` role).
    #[serde(default, deserialize_with = "crate::arn::de::optional_iam_role")]
    pub role_arn: Option<Arn>,
    /// What to do with a certificate carrying several values of a kind the rule matches on
    /// (several URI SANs for a `san_uri` rule, ...).
    #[serde(default)]
    pub multiple_sans: MultipleSans,
}

/// A certificate with several SANs (or CNs) of the kind a rule matches on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultipleSans {
    /// The rule does not match such a certificate.
    #[default]
    Refuse,
    /// Each value is tried on its own: the rule grants what any one matching value would.
    Each,
}

/// Glob patterns (`*`, `?`, `[...]`) over certificate fields, or over a local user name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Subject common name.
    #[serde(default)]
    pub cn: Option<String>,
    /// Any URI SAN, e.g. `spiffe://corp.example/ns/bi/*`.
    #[serde(default)]
    pub san_uri: Option<String>,
    /// Any DNS SAN.
    #[serde(default)]
    pub san_dns: Option<String>,
    /// Any email SAN.
    #[serde(default)]
    pub san_email: Option<String>,
    /// Issuer distinguished name as RFC 4514 text, e.g. `CN=Corp Client CA,O=Corp`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// A local user of a `password` or `trust` listener (never a certificate).
    #[serde(default)]
    pub local_user: Option<String>,
    /// SHA-256 fingerprint (hex, `:` separators allowed) of a CA certificate that verified
    /// the client's chain: the trust anchor in `client_ca` or an intermediate on the
    /// verified path. Unlike `issuer`, a DN another CA in the bundle could also carry.
    #[serde(default)]
    pub issuer_sha256: Option<String>,
    /// Only clients of these listeners (by name).
    #[serde(default)]
    pub listener: Vec<String>,
    /// Only clients that authenticated this way.
    #[serde(default)]
    pub auth: Vec<ClientAuthMode>,
}

impl MatchConfig {
    /// Whether no field names who matches (`listener` and `auth` only scope).
    pub fn is_empty(&self) -> bool {
        !self.has_certificate_fields() && self.local_user.is_none()
    }

    /// Whether any field that matches client certificates is given.
    pub fn has_certificate_fields(&self) -> bool {
        self.cn.is_some()
            || self.san_uri.is_some()
            || self.san_dns.is_some()
            || self.san_email.is_some()
            || self.issuer.is_some()
            || self.issuer_sha256.is_some()
    }

    /// Whether `match.listener` or `match.auth` limits the rule.
    pub fn is_scoped(&self) -> bool {
        !self.listener.is_empty() || !self.auth.is_empty()
    }
}

impl PolicyConfig {
    /// Every problem of `[policy]` on its own. Rule targets, roles and scopes refer to
    /// other sections: [`crate::Config`] checks those.
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.placeholder_users.iter().any(String::is_empty) {
            p.add(
                "policy.placeholder_users",
                "entries must not be empty (an empty startup user already counts as a \
                 placeholder)",
            );
        }
        if self.rules.is_empty() {
            p.add(
                "policy.rule",
                "at least one [[policy.rule]] is required; without rules nobody can log in",
            );
        }
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let path = KeyPath::root("policy.rule").index(i);
            if !names.insert(rule.name.as_str()) {
                p.add(
                    path.key("name"),
                    format!("duplicate rule name {:?}", rule.name),
                );
            }
            rule.check(&path, p);
        }
    }
}

impl RuleConfig {
    /// Every problem of this rule on its own, as `path` (`policy.rule[0]`). Templates are
    /// compiled, and checked against what the rule matches, by the policy itself
    /// (`auth/src/policy`): here they only must not be empty.
    fn check(&self, path: &KeyPath, p: &mut Problems) {
        let key = |k: &str| path.key(k);
        if self.name.is_empty() {
            p.add(key("name"), "must not be empty");
        }
        if self.matches.is_empty() {
            p.add(
                key("match"),
                "needs at least one of cn, san_uri, san_dns, san_email, issuer, local_user",
            );
        }
        if self.matches.local_user.is_some() && self.matches.has_certificate_fields() {
            p.add(
                key("match"),
                "local_user cannot be combined with certificate fields (cn, san_uri, san_dns, \
                 san_email, issuer): a client is either a certificate or a local user, so such \
                 a rule would match nobody; write two rules",
            );
        }
        if self.targets.is_empty() {
            p.add(key("targets"), "must list at least one target or \"*\"");
        }
        if self.users.is_empty() {
            p.add(key("users"), "must list at least one database user");
        }
        if self.users.iter().any(String::is_empty) {
            p.add(key("users"), "user names must not be empty");
        }
        if self.default_user.as_deref() == Some("") {
            p.add(key("default_user"), "user names must not be empty");
        }
        if self.databases.is_empty() {
            p.add(key("databases"), "must list at least one database or \"*\"");
        }
    }

    /// Whether the rule grants `target` (by name or through `"*"`).
    pub fn grants_target(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == "*" || t == target)
    }

    /// Whether the rule names `target` itself, not only through `"*"`.
    pub fn names_target(&self, target: &str) -> bool {
        self.targets.iter().any(|t| t == target)
    }
}

impl PolicyConfig {
    /// A reload compiles the policy anew: every key applies to new logins. Every field
    /// (down to `match`) is named, so a new one does not compile until it is classified.
    pub(crate) fn all_reloadable(&self) {
        let PolicyConfig {
            placeholder_users: _,
            deny_users: _,
            rules,
        } = self;
        for rule in rules {
            let RuleConfig {
                name: _,
                matches,
                targets: _,
                users: _,
                default_user: _,
                databases: _,
                groups: _,
                role_arn: _,
                multiple_sans: _,
            } = rule;
            let MatchConfig {
                cn: _,
                san_uri: _,
                san_dns: _,
                san_email: _,
                issuer: _,
                local_user: _,
                issuer_sha256: _,
                listener: _,
                auth: _,
            } = matches;
        }
    }
}
