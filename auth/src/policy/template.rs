//! User-name templates such as `{cn}`, `svc_{email_local}` or `{name}`.
//!
//! A template takes its values only from what satisfied its rule's match (a [`Binding`]):
//! `{cn}` is the CN the rule's `match.cn` matched, `{san_uri_path}` the last path segment of
//! the URI SAN `match.san_uri` matched, `{san_dns}` the matched DNS SAN, `{email_local}` the
//! local part of the matched email SAN, `{local_user}` the matched local user, and
//! `{<capture>}` a named capture of one of the rule's patterns. Never another field of the
//! certificate: a second SAN the rule did not match cannot choose the database user.

use super::names::{check_name, InvalidName};
use super::pattern::Captures;
use crate::identity::{email_local_part, uri_path_last_segment};
use std::fmt;

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// `{cn}`: the matched subject common name.
    Cn,
    /// `{email_local}`: local part of the matched email SAN.
    EmailLocal,
    /// `{san_dns}`: the matched DNS SAN.
    SanDns,
    /// `{san_uri_path}`: last non-empty path segment of the matched URI SAN.
    SanUriPath,
    /// `{local_user}`: the matched local user name.
    LocalUser,
    /// `{name}`: a named capture of the rule's match patterns.
    Capture(String),
}

/// The built-in placeholders, by name.
pub(crate) const BUILT_IN: &[&str] =
    &["cn", "email_local", "san_dns", "san_uri_path", "local_user"];

impl Placeholder {
    fn from_name(name: &str) -> Placeholder {
        match name {
            "cn" => Placeholder::Cn,
            "email_local" => Placeholder::EmailLocal,
            "san_dns" => Placeholder::SanDns,
            "san_uri_path" => Placeholder::SanUriPath,
            "local_user" => Placeholder::LocalUser,
            other => Placeholder::Capture(other.to_owned()),
        }
    }

    /// The value in `binding`; empty values count as absent.
    fn value<'a>(&self, binding: &'a Binding) -> Option<&'a str> {
        let v = match self {
            Placeholder::Cn => binding.cn.as_deref(),
            Placeholder::EmailLocal => binding.san_email.as_deref().and_then(email_local_part),
            Placeholder::SanDns => binding.san_dns.as_deref(),
            Placeholder::SanUriPath => binding.san_uri.as_deref().and_then(uri_path_last_segment),
            Placeholder::LocalUser => binding.local_user.as_deref(),
            Placeholder::Capture(name) => binding.captures.get(name).map(String::as_str),
        };
        v.filter(|v| !v.is_empty())
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Placeholder::Cn => "cn",
            Placeholder::EmailLocal => "email_local",
            Placeholder::SanDns => "san_dns",
            Placeholder::SanUriPath => "san_uri_path",
            Placeholder::LocalUser => "local_user",
            Placeholder::Capture(name) => name,
        };
        write!(f, "{{{name}}}")
    }
}

/// What one way of matching a rule bound: the value that satisfied each criterion, and the
/// named captures of its patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Binding {
    pub cn: Option<String>,
    pub san_uri: Option<String>,
    pub san_dns: Option<String>,
    pub san_email: Option<String>,
    pub local_user: Option<String>,
    pub captures: Captures,
}

/// Which placeholders a rule can fill: the built-ins its criteria bind, and its captures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub cn: bool,
    pub san_uri: bool,
    pub san_dns: bool,
    /// `match.san_email` is given and pins the domain (no wildcard after the last `@`).
    pub san_email_pinned: bool,
    pub san_email: bool,
    pub local_user: bool,
    pub captures: Vec<String>,
}

impl Scope {
    /// Why `placeholder` cannot be used in this rule, if it cannot.
    fn refuses(&self, placeholder: &Placeholder) -> Option<String> {
        let missing = |key: &str| {
            Some(format!(
                "{placeholder} takes its value from what the rule's match.{key} matched, and the \
                 rule has no match.{key}"
            ))
        };
        match placeholder {
            Placeholder::Cn if !self.cn => missing("cn"),
            Placeholder::SanUriPath if !self.san_uri => missing("san_uri"),
            Placeholder::SanDns if !self.san_dns => missing("san_dns"),
            Placeholder::LocalUser if !self.local_user => missing("local_user"),
            Placeholder::EmailLocal if !self.san_email => missing("san_email"),
            Placeholder::EmailLocal if !self.san_email_pinned => Some(
                "{email_local} drops the domain, so match.san_email must pin it (e.g. \
                 \"*@corp.example\", not \"*@*\"): otherwise alice@corp.example and \
                 alice@partner.example become one database user"
                    .into(),
            ),
            Placeholder::Capture(name) if !self.captures.contains(name) => Some(format!(
                "unknown placeholder {placeholder}; built in: {{cn}}, {{email_local}}, \
                 {{san_dns}}, {{san_uri_path}}, {{local_user}}; captures of this rule: {}",
                if self.captures.is_empty() {
                    "none".to_string()
                } else {
                    self.captures
                        .iter()
                        .map(|c| format!("{{{c}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template text is not a template of its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateSyntaxError {
    #[error("unclosed '{{'")]
    Unclosed,
    #[error("unmatched '}}'")]
    Unmatched,
    #[error("{0}")]
    OutOfScope(String),
    #[error("can never expand to a valid user name: it {0}")]
    NeverValid(InvalidName),
}

/// Why a template yields no user for a particular binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// The binding lacks the value a placeholder needs (e.g. an email SAN without a local
    /// part).
    Unfillable(Placeholder),
    /// The expansion is not an acceptable user name. Holds the (attacker-influenced)
    /// expansion, for operator logs only.
    InvalidName {
        expanded: String,
        reason: InvalidName,
    },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Unfillable(p) => {
                write!(f, "{p} cannot be filled from what the rule matched")
            }
            ExpandError::InvalidName { expanded, reason } => write!(
                f,
                "expansion {} is not a valid user name: it {reason}",
                super::denial::quote(expanded)
            ),
        }
    }
}

impl Template {
    /// Parses `source`, checks that every placeholder is one its rule can fill (`scope`),
    /// and that some binding could make it a valid user name.
    pub(crate) fn parse(source: &str, scope: &Scope) -> Result<Template, TemplateSyntaxError> {
        let template = Template::parse_in_scope(source, scope)?;
        // Filling every placeholder with "a" yields the most permissive candidate: it is the
        // shortest possible value, a letter (so it may start a name), and the result cannot be
        // "public" (which has no 'a'). If even that is invalid, every expansion is, and the
        // rule is a configuration mistake worth reporting at load time.
        check_name(&template.render(|_| "a")).map_err(TemplateSyntaxError::NeverValid)?;
        Ok(template)
    }

    /// Parses `source` and checks that every placeholder is one its rule can fill, without
    /// judging what it expands to.
    pub(crate) fn parse_in_scope(
        source: &str,
        scope: &Scope,
    ) -> Result<Template, TemplateSyntaxError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(TemplateSyntaxError::Unmatched);
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or(TemplateSyntaxError::Unclosed)?;
            let placeholder = Placeholder::from_name(&after[..close]);
            if let Some(reason) = scope.refuses(&placeholder) {
                return Err(TemplateSyntaxError::OutOfScope(reason));
            }
            parts.push(Part::Placeholder(placeholder));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has no placeholder.
    pub(crate) fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// The user name this template yields for `binding`.
    pub(crate) fn expand(&self, binding: &Binding) -> Result<String, ExpandError> {
        let expanded = self.fill(binding).map_err(ExpandError::Unfillable)?;
        match check_name(&expanded) {
            Ok(()) => Ok(expanded),
            Err(reason) => Err(ExpandError::InvalidName { expanded, reason }),
        }
    }

    /// The template with `binding`'s values, or the placeholder it lacks a value for.
    pub(crate) fn fill(&self, binding: &Binding) -> Result<String, Placeholder> {
        if let Some(p) = self.placeholders().find(|p| p.value(binding).is_none()) {
            return Err(p.clone());
        }
        Ok(self.render(|p| p.value(binding).unwrap_or_default()))
    }

    fn placeholders(&self) -> impl Iterator<Item = &Placeholder> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(p) => Some(p),
            Part::Literal(_) => None,
        })
    }

    pub(crate) fn render<'a>(&'a self, value: impl Fn(&'a Placeholder) -> &'a str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(p) => out.push_str(value(p)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
