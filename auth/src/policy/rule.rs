//! One compiled policy rule: which clients it matches, and what each way of matching binds.

use super::pattern::{Captures, Pattern, PatternError};
use super::session_name::SessionNameTemplate;
use super::template::{Binding, Scope, Template, TemplateSyntaxError};
use super::{check_name, fold, is_reserved, PolicyError};
use crate::identity::ClientIdentity;
use crate::principal::{LocalAuthMethod, PrincipalRef};
use proxy_config::{ClientAuthMode, MultipleSans, RuleConfig};

/// Most ways one certificate may match one rule (SAN combinations with
/// `multiple_sans = "each"`); beyond it the rule refuses the certificate.
const MAX_BINDINGS: usize = 64;

/// Where and how a client logs in, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The listener the client connected to.
    pub listener: &'a str,
    /// The target the listener (or the server name) routes it to.
    pub target: &'a str,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub name: String,
    cn: Option<Pattern>,
    san_uri: Option<Pattern>,
    san_dns: Option<Pattern>,
    san_email: Option<Pattern>,
    issuer: Option<Pattern>,
    /// Lowercase hex without separators.
    issuer_sha256: Option<String>,
    local_user: Option<Pattern>,
    listeners: Vec<String>,
    auth: Vec<ClientAuthMode>,
    multiple: MultipleSans,
    /// `None`: `"*"` was listed, every target is granted.
    targets: Option<Vec<String>>,
    pub users: Vec<Template>,
    pub default_user: Option<Template>,
    pub databases: Vec<Pattern>,
    pub groups: Vec<String>,
    pub role_arn: Option<proxy_config::Arn>,
    /// `[aws.roles_anywhere] role_session_name` when it is a template.
    pub role_session_name: Option<SessionNameTemplate>,
}

/// How a certificate relates to a rule, beyond a plain yes or no: the operator's log says
/// why a rule skipped a certificate that looked like it should match.
pub(super) enum Matched {
    Yes(Vec<Binding>),
    No,
    /// The certificate carries several values of a kind the rule matches on.
    Ambiguous(String),
}

impl Rule {
    /// Compiles `c`; `role_session_name` is the role session name template every rule
    /// must be able to fill, if one is configured.
    pub fn compile(
        c: &RuleConfig,
        deny_users: &[String],
        role_session_name: Option<&str>,
    ) -> Result<Rule, PolicyError> {
        let m = &c.matches;
        let pattern = |key, source: &Option<String>, case_insensitive| {
            compile_pattern(&c.name, key, source.as_deref(), case_insensitive)
        };
        let cn = pattern("match.cn", &m.cn, false)?;
        let san_uri = pattern("match.san_uri", &m.san_uri, false)?;
        // DNS names are case-insensitive (RFC 4343).
        let san_dns = pattern("match.san_dns", &m.san_dns, true)?;
        let san_email = pattern("match.san_email", &m.san_email, false)?;
        let issuer = pattern("match.issuer", &m.issuer, false)?;
        let local_user = pattern("match.local_user", &m.local_user, false)?;
        let patterns = [&cn, &san_uri, &san_dns, &san_email, &issuer, &local_user];
        let scope = Scope {
            cn: cn.is_some(),
            san_uri: san_uri.is_some(),
            san_dns: san_dns.is_some(),
            san_email: san_email.is_some(),
            san_email_pinned: san_email.as_ref().is_some_and(pins_domain),
            local_user: local_user.is_some(),
            captures: capture_names(&c.name, patterns.into_iter().flatten())?,
        };
        let template = |key, source: &str| compile_template(c, key, source, &scope, deny_users);
        let session_name = role_session_name
            .map(|source| {
                SessionNameTemplate::compile(source, &scope).map_err(|reason| {
                    PolicyError::InvalidTemplate {
                        rule: c.name.clone(),
                        key: "aws.roles_anywhere.role_session_name",
                        template: source.to_owned(),
                        reason,
                    }
                })
            })
            .transpose()?;
        let issuer_sha256 = m
            .issuer_sha256
            .as_deref()
            .map(|f| parse_fingerprint(&c.name, f))
            .transpose()?;
        Ok(Rule {
            name: c.name.clone(),
            cn,
            san_uri,
            san_dns,
            san_email,
            issuer,
            issuer_sha256,
            local_user,
            listeners: m.listener.clone(),
            auth: m.auth.clone(),
            multiple: c.multiple_sans,
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
                .map(|d| compile_one(&c.name, "databases", d, false))
                .collect::<Result<_, _>>()?,
            groups: compile_groups(&c.name, &c.groups)?,
            role_arn: c.role_arn.clone(),
            role_session_name: session_name,
        })
    }

    pub fn grants_target(&self, target: &str) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == target))
    }

    /// Whether the rule applies to `principal` on this listener, and every way it does.
    pub fn matches(&self, principal: PrincipalRef<'_>, access: &Access<'_>) -> Matched {
        let method = match principal {
            PrincipalRef::Certificate(_) => ClientAuthMode::Certificate,
            PrincipalRef::LocalUser(u) => match u.method {
                LocalAuthMethod::Password => ClientAuthMode::Password,
                LocalAuthMethod::Trust => ClientAuthMode::Trust,
            },
        };
        let in_scope = (self.listeners.is_empty()
            || self.listeners.iter().any(|l| l == access.listener))
            && (self.auth.is_empty() || self.auth.contains(&method));
        if !in_scope {
            return Matched::No;
        }
        match principal {
            PrincipalRef::Certificate(id) => self.matches_certificate(id),
            PrincipalRef::LocalUser(user) => {
                let has_certificate_criterion = self.cn.is_some()
                    || self.san_uri.is_some()
                    || self.san_dns.is_some()
                    || self.san_email.is_some()
                    || self.issuer.is_some()
                    || self.issuer_sha256.is_some();
                match (&self.local_user, has_certificate_criterion) {
                    (Some(pattern), false) => match pattern.captures(&user.name) {
                        Some(captures) => Matched::Yes(vec![Binding {
                            local_user: Some(user.name.clone()),
                            captures,
                            ..Binding::default()
                        }]),
                        None => Matched::No,
                    },
                    _ => Matched::No,
                }
            }
        }
    }

    fn matches_certificate(&self, id: &ClientIdentity) -> Matched {
        let has_criterion = self.cn.is_some()
            || self.san_uri.is_some()
            || self.san_dns.is_some()
            || self.san_email.is_some()
            || self.issuer.is_some()
            || self.issuer_sha256.is_some();
        if !has_criterion || self.local_user.is_some() {
            return Matched::No;
        }
        if let Some(fingerprint) = &self.issuer_sha256 {
            if !id.verified_by.iter().any(|f| f == fingerprint) {
                return Matched::No;
            }
        }
        let mut shared = Captures::new();
        if let Some(issuer) = &self.issuer {
            match issuer.captures(&id.issuer) {
                Some(c) => shared.extend(c),
                None => return Matched::No,
            }
        }
        let fields: [(&Option<Pattern>, &[String], &str); 4] = [
            (&self.cn, &id.common_names, "CNs"),
            (&self.san_uri, &id.san_uri, "URI SANs"),
            (&self.san_dns, &id.san_dns, "DNS SANs"),
            (&self.san_email, &id.san_email, "email SANs"),
        ];
        // Candidates per criterion: each value that matches, with its captures.
        let mut per_field: Vec<Vec<(String, Captures)>> = Vec::new();
        for (pattern, values, what) in fields {
            let Some(pattern) = pattern else {
                per_field.push(vec![(String::new(), Captures::new())]);
                continue;
            };
            if values.len() > 1 && self.multiple == MultipleSans::Refuse {
                return Matched::Ambiguous(format!(
                    "rule {:?} matches on {what} and the certificate has {} of them \
                     (multiple_sans = \"each\" tries each on its own)",
                    self.name,
                    values.len()
                ));
            }
            let found: Vec<_> = values
                .iter()
                .filter_map(|v| pattern.captures(v).map(|c| (v.clone(), c)))
                .collect();
            if found.is_empty() {
                return Matched::No;
            }
            per_field.push(found);
        }
        let combinations: usize = per_field.iter().map(Vec::len).product();
        if combinations > MAX_BINDINGS {
            return Matched::Ambiguous(format!(
                "rule {:?}: the certificate matches in {combinations} ways (at most \
                 {MAX_BINDINGS} are tried)",
                self.name
            ));
        }
        let mut bindings = vec![Binding {
            captures: shared,
            ..Binding::default()
        }];
        for (field, candidates) in per_field.iter().enumerate() {
            bindings = bindings
                .into_iter()
                .flat_map(|b| {
                    candidates.iter().map(move |(value, captures)| {
                        let mut b = b.clone();
                        b.captures.extend(captures.clone());
                        let value = Some(value.clone());
                        match field {
                            0 if self.cn.is_some() => b.cn = value,
                            1 if self.san_uri.is_some() => b.san_uri = value,
                            2 if self.san_dns.is_some() => b.san_dns = value,
                            3 if self.san_email.is_some() => b.san_email = value,
                            _ => {}
                        }
                        b
                    })
                })
                .collect();
        }
        Matched::Yes(bindings)
    }
}

/// The pattern at `key` of rule `rule`, if given.
fn compile_pattern(
    rule: &str,
    key: &'static str,
    source: Option<&str>,
    case_insensitive: bool,
) -> Result<Option<Pattern>, PolicyError> {
    source
        .map(|p| compile_one(rule, key, p, case_insensitive))
        .transpose()
}

fn compile_one(
    rule: &str,
    key: &'static str,
    source: &str,
    case_insensitive: bool,
) -> Result<Pattern, PolicyError> {
    Pattern::compile(source, case_insensitive).map_err(|e: PatternError| {
        PolicyError::InvalidPattern {
            rule: rule.to_owned(),
            key,
            pattern: source.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// The named captures of a rule's `match` patterns: each defined once, none shadowing a
/// built-in placeholder.
fn capture_names<'a>(
    rule: &str,
    patterns: impl Iterator<Item = &'a Pattern>,
) -> Result<Vec<String>, PolicyError> {
    let mut captures: Vec<String> = Vec::new();
    for p in patterns {
        for name in p.capture_names() {
            if captures.contains(name) || super::template::BUILT_IN.contains(&name.as_str()) {
                return Err(PolicyError::InvalidPattern {
                    rule: rule.to_owned(),
                    key: "match",
                    pattern: p.source().to_owned(),
                    reason: format!(
                        "capture {{{name}}} is defined twice or shadows a built-in placeholder"
                    ),
                });
            }
            captures.push(name.clone());
        }
    }
    Ok(captures)
}

/// A user template of rule `c`: one its match can fill, never naming a reserved user.
fn compile_template(
    c: &RuleConfig,
    key: &'static str,
    source: &str,
    scope: &Scope,
    deny_users: &[String],
) -> Result<Template, PolicyError> {
    let invalid = |reason: String| PolicyError::InvalidTemplate {
        rule: c.name.clone(),
        key,
        template: source.to_owned(),
        reason,
    };
    let t =
        Template::parse(source, scope).map_err(|e: TemplateSyntaxError| invalid(e.to_string()))?;
    if let Some(literal) = t.literal() {
        if is_reserved(&fold(literal), deny_users) {
            return Err(invalid(
                "names a reserved database user (rdsdb, pg_*, padb_* or [policy] deny_users)"
                    .into(),
            ));
        }
    }
    Ok(t)
}

/// The rule's groups, folded, sorted and de-duplicated, each a valid name.
fn compile_groups(rule: &str, groups: &[String]) -> Result<Vec<String>, PolicyError> {
    let mut groups: Vec<String> = groups.iter().map(|g| fold(g)).collect();
    groups.sort();
    groups.dedup();
    for group in &groups {
        check_name(group).map_err(|reason| PolicyError::InvalidGroup {
            rule: rule.to_owned(),
            group: group.clone(),
            reason,
        })?;
    }
    Ok(groups)
}

/// Whether an email pattern fixes the domain: nothing but literal text after its last `@`.
fn pins_domain(pattern: &Pattern) -> bool {
    pattern
        .source()
        .rsplit_once('@')
        .is_some_and(|(_, domain)| !domain.is_empty() && !domain.contains(['*', '?', '[', '{']))
}

/// A SHA-256 fingerprint as 64 lowercase hex digits (`:` separators and case are
/// accepted).
fn parse_fingerprint(rule: &str, text: &str) -> Result<String, PolicyError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(PolicyError::InvalidPattern {
            rule: rule.to_owned(),
            key: "match.issuer_sha256",
            pattern: text.to_owned(),
            reason: "is not a SHA-256 fingerprint (64 hex digits)".into(),
        })
    }
}
