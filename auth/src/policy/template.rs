//! User-name templates such as `{cn}` or `svc_{email_local}`.

use super::names::{check_name, InvalidName};
use crate::principal::PrincipalRef;
use std::fmt;

/// A certificate field a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// `{cn}`: the subject common name.
    Cn,
    /// `{email_local}`: local part of the first email SAN.
    EmailLocal,
    /// `{san_dns}`: the first DNS SAN.
    SanDns,
    /// `{san_uri_path}`: last non-empty path segment of the first URI SAN.
    SanUriPath,
    /// `{local_user}`: the local user name (`password` and `trust` listeners).
    LocalUser,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Placeholder> {
        Some(match name {
            "cn" => Placeholder::Cn,
            "email_local" => Placeholder::EmailLocal,
            "san_dns" => Placeholder::SanDns,
            "san_uri_path" => Placeholder::SanUriPath,
            "local_user" => Placeholder::LocalUser,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Placeholder::Cn => "cn",
            Placeholder::EmailLocal => "email_local",
            Placeholder::SanDns => "san_dns",
            Placeholder::SanUriPath => "san_uri_path",
            Placeholder::LocalUser => "local_user",
        }
    }

    /// The value for `principal`; empty values count as absent, and a placeholder of the
    /// other kind of client (certificate or local user) is absent.
    fn value<'a>(self, principal: PrincipalRef<'a>) -> Option<&'a str> {
        let v = match (self, principal) {
            (Placeholder::LocalUser, PrincipalRef::LocalUser(u)) => Some(u.name.as_str()),
            (Placeholder::LocalUser, PrincipalRef::Certificate(_))
            | (_, PrincipalRef::LocalUser(_)) => None,
            (Placeholder::Cn, PrincipalRef::Certificate(id)) => id.common_name.as_deref(),
            (Placeholder::EmailLocal, PrincipalRef::Certificate(id)) => id.email_local(),
            (Placeholder::SanDns, PrincipalRef::Certificate(id)) => id.first_dns(),
            (Placeholder::SanUriPath, PrincipalRef::Certificate(id)) => id.uri_path_last_segment(),
        };
        v.filter(|v| !v.is_empty())
    }

    fn missing(self) -> &'static str {
        match self {
            Placeholder::Cn => "the certificate has no subject CN",
            Placeholder::EmailLocal => "the certificate has no email SAN with a local part",
            Placeholder::SanDns => "the certificate has no DNS SAN",
            Placeholder::SanUriPath => "the certificate has no URI SAN with a path segment",
            Placeholder::LocalUser => "the local user has no name",
        }
    }

    /// Whether `principal` is the kind of client this placeholder describes.
    fn applies_to(self, principal: PrincipalRef<'_>) -> bool {
        matches!(
            (self, principal),
            (Placeholder::LocalUser, PrincipalRef::LocalUser(_))
                | (
                    Placeholder::Cn
                        | Placeholder::EmailLocal
                        | Placeholder::SanDns
                        | Placeholder::SanUriPath,
                    PrincipalRef::Certificate(_)
                )
        )
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
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

/// Why a template text is not a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateSyntaxError {
    #[error("unclosed '{{'")]
    Unclosed,
    #[error("unmatched '}}'")]
    Unmatched,
    #[error("unknown placeholder {{{0}}}; known: {{cn}}, {{email_local}}, {{san_dns}}, {{san_uri_path}}, {{local_user}}")]
    Unknown(String),
    #[error("can never expand to a valid user name: it {0}")]
    NeverValid(InvalidName),
}

/// Why a template yields no user for a particular certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// The certificate lacks the field a placeholder needs.
    Unfillable(Placeholder),
    /// The placeholder describes the other kind of client (a certificate field for a local
    /// user, `{local_user}` for a certificate).
    WrongKind(Placeholder),
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
            ExpandError::Unfillable(p) => write!(f, "{p} cannot be filled: {}", p.missing()),
            ExpandError::WrongKind(Placeholder::LocalUser) => {
                write!(
                    f,
                    "{{local_user}} cannot be filled: the client is not a local user"
                )
            }
            ExpandError::WrongKind(p) => {
                write!(f, "{p} cannot be filled: a local user has no certificate")
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
    /// Parses `source` and checks that some certificate could make it a valid user name.
    pub(crate) fn parse(source: &str) -> Result<Template, TemplateSyntaxError> {
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
            let name = &after[..close];
            let placeholder = Placeholder::from_name(name)
                .ok_or_else(|| TemplateSyntaxError::Unknown(name.to_owned()))?;
            parts.push(Part::Placeholder(placeholder));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        let template = Template {
            source: source.to_owned(),
            parts,
        };
        // Filling every placeholder with "a" yields the most permissive candidate: it is the
        // shortest possible value, a letter (so it may start a name), and the result cannot be
        // "public" (which has no 'a'). If even that is invalid, every expansion is, and the
        // rule is a configuration mistake worth reporting at load time.
        check_name(&template.render(|_| "a")).map_err(TemplateSyntaxError::NeverValid)?;
        Ok(template)
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The user name this template yields for the client.
    pub(crate) fn expand<'p>(
        &self,
        identity: impl Into<PrincipalRef<'p>>,
    ) -> Result<String, ExpandError> {
        let identity = identity.into();
        if let Some(p) = self.placeholders().find(|p| !p.applies_to(identity)) {
            return Err(ExpandError::WrongKind(p));
        }
        if let Some(p) = self.placeholders().find(|p| p.value(identity).is_none()) {
            return Err(ExpandError::Unfillable(p));
        }
        let expanded = self.render(|p| p.value(identity).unwrap_or_default());
        match check_name(&expanded) {
            Ok(()) => Ok(expanded),
            Err(reason) => Err(ExpandError::InvalidName { expanded, reason }),
        }
    }

    fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(p) => Some(*p),
            Part::Literal(_) => None,
        })
    }

    fn render<'a>(&self, value: impl Fn(Placeholder) -> &'a str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(p) => out.push_str(value(*p)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ClientIdentity;
    use crate::principal::{LocalAuthMethod, LocalUser};

    fn identity() -> ClientIdentity {
        ClientIdentity {
            common_name: Some("alice".into()),
            subject: "CN=alice".into(),
            issuer: "CN=CA".into(),
            san_dns: vec!["host1.corp.example".into()],
            san_uri: vec!["spiffe://corp.example/ns/bi/sa/reporting".into()],
            san_email: vec!["alice.smith@corp.example".into()],
            serial_hex: "01".into(),
            fingerprint_sha256: "00".repeat(32),
            not_after_unix: 0,
        }
    }

    #[test]
    fn every_placeholder_the_config_accepts_is_known_here() {
        for name in proxy_config::TEMPLATE_PLACEHOLDERS {
            let t = format!("{{{name}}}");
            assert!(Template::parse(&t).is_ok(), "{t}");
        }
    }

    #[test]
    fn expands_each_placeholder() {
        let id = identity();
        let expand = |t: &str| Template::parse(t).expect("parse").expand(&id);
        assert_eq!(expand("{cn}"), Ok("alice".into()));
        assert_eq!(expand("u_{email_local}"), Ok("u_alice.smith".into()));
        assert_eq!(expand("{san_dns}"), Ok("host1.corp.example".into()));
        assert_eq!(
            expand("svc_{san_uri_path}_ro"),
            Ok("svc_reporting_ro".into())
        );
        assert_eq!(expand("literal"), Ok("literal".into()));
    }

    #[test]
    fn unfillable_placeholder_yields_nothing() {
        let mut id = identity();
        id.san_email.clear();
        id.common_name = Some(String::new());
        let expand = |t: &str| Template::parse(t).expect("parse").expand(&id);
        assert_eq!(
            expand("{email_local}"),
            Err(ExpandError::Unfillable(Placeholder::EmailLocal))
        );
        assert_eq!(
            expand("{cn}"),
            Err(ExpandError::Unfillable(Placeholder::Cn))
        );
    }

    #[test]
    fn local_user_fills_only_local_user() {
        let etl = LocalUser {
            name: "etl".into(),
            method: LocalAuthMethod::Password,
        };
        let expand = |t: &str| Template::parse(t).expect("parse").expand(&etl);
        assert_eq!(expand("svc_{local_user}"), Ok("svc_etl".into()));
        assert_eq!(expand("{cn}"), Err(ExpandError::WrongKind(Placeholder::Cn)));
        let id = identity();
        assert_eq!(
            Template::parse("{local_user}").expect("parse").expand(&id),
            Err(ExpandError::WrongKind(Placeholder::LocalUser))
        );
        // A local user name is still held to the user-name rules.
        let odd = LocalUser {
            name: "a b".into(),
            method: LocalAuthMethod::Trust,
        };
        assert!(matches!(
            Template::parse("{local_user}").expect("parse").expand(&odd),
            Err(ExpandError::InvalidName { .. })
        ));
    }

    #[test]
    fn hostile_values_yield_nothing() {
        let mut id = identity();
        let t = Template::parse("{cn}").expect("parse");
        for cn in [
            "a:b",
            "x/../y",
            "IAM:admin",
            "public",
            "a b",
            "a\0b",
            "1abc",
        ] {
            id.common_name = Some(cn.into());
            assert!(
                matches!(t.expand(&id), Err(ExpandError::InvalidName { .. })),
                "{cn:?} must not become a user"
            );
        }
        id.san_uri = vec!["spiffe://corp.example/ns/bi/..".into()];
        assert!(matches!(
            Template::parse("{san_uri_path}")
                .expect("parse")
                .expand(&id),
            Err(ExpandError::InvalidName { .. })
        ));
    }

    #[test]
    fn syntax_errors_and_never_valid_templates_are_rejected() {
        assert_eq!(
            Template::parse("{cn").err(),
            Some(TemplateSyntaxError::Unclosed)
        );
        assert_eq!(
            Template::parse("a}").err(),
            Some(TemplateSyntaxError::Unmatched)
        );
        assert_eq!(
            Template::parse("{nope}").err(),
            Some(TemplateSyntaxError::Unknown("nope".into()))
        );
        assert_eq!(
            Template::parse("svc:{cn}").err(),
            Some(TemplateSyntaxError::NeverValid(InvalidName::BadChar(':')))
        );
        assert_eq!(
            Template::parse("1{cn}").err(),
            Some(TemplateSyntaxError::NeverValid(InvalidName::BadStart))
        );
        assert_eq!(
            Template::parse("public").err(),
            Some(TemplateSyntaxError::NeverValid(InvalidName::Reserved))
        );
        assert!(Template::parse(&format!("{}{{cn}}", "a".repeat(63))).is_ok());
        assert_eq!(
            Template::parse(&format!("{}{{cn}}", "a".repeat(64))).err(),
            Some(TemplateSyntaxError::NeverValid(InvalidName::TooLong))
        );
    }
}
