//! IAM identity-policy evaluation, as far as the Redshift credential APIs need it
//! (research aws-iam.md §1–§4; IAM User Guide `reference_policies_*`).
//!
//! - Deny by default; an applicable `Deny` statement wins over any `Allow`; an `Allow` is
//!   required (`reference_policies_evaluation-logic`).
//! - `Action`/`NotAction`: `service:name`, case-insensitive, `*` and `?` anywhere.
//! - `Resource`/`NotResource`: ARNs, case-sensitive, `*` (any run of characters, `/` and `:`
//!   included) and `?` (one character), matched against the whole ARN.
//! - `Condition`: String(Not)Equals, String(Not)EqualsIgnoreCase, String(Not)Like,
//!   Numeric(Not)Equals, NumericLessThan(Equals), NumericGreaterThan(Equals), Bool, Null,
//!   and the `…IfExists` forms. Several operators and several keys are ANDed, several values
//!   of one key ORed (for the negated operators: none may match). A key missing from the
//!   request makes a positive operator false and a negated one true; `…IfExists` is true.
//! - Policy variables `${key}`, `${key, 'default'}` and the escapes `${*}`, `${?}`, `${$}`,
//!   only with `"Version": "2012-10-17"` (otherwise literal text). A variable without a
//!   value makes its Resource entry match nothing and its condition false. A substituted
//!   value is always literal text: a `*` in a request value never acts as a wildcard.
//!
//! Not modelled: resource policies, permissions boundaries, SCPs, session policies,
//! `ForAnyValue`/`ForAllValues`, Arn/Date/IpAddress operators (a policy using them is
//! refused when the emulator loads it, as IAM refuses what it cannot parse).

use serde_json::Value;
use std::collections::HashMap;

/// Why a policy document is refused (IAM's MalformedPolicyDocument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed policy document: {0}")]
pub struct PolicyError(String);

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No statement allows it ("because no identity-based policy allows the … action").
    ImplicitDeny,
    /// A Deny statement applies ("with an explicit deny in an identity-based policy").
    ExplicitDeny,
}

/// The request context: condition keys and their values (names case-insensitive).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    values: HashMap<String, String>,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_ascii_lowercase(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// One part of a string that may hold policy variables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text from the policy itself: its `*` and `?` are wildcards in patterns.
    Text(String),
    /// `${*}`, `${?}`, `${$}`: the character, never a wildcard.
    Escaped(char),
    Variable {
        key: String,
        default: Option<String>,
    },
}

/// A string of a policy, with variables when the policy version allows them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Part>);

/// A pattern character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`
    Any,
    /// `?`
    One,
}

impl Template {
    fn parse(text: &str, variables: bool) -> Result<Template, PolicyError> {
        if !variables {
            return Ok(Template(vec![Part::Text(text.to_owned())]));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find('}')
                .map(|i| start + i)
                .ok_or_else(|| malformed(format!("unterminated policy variable in {text:?}")))?;
            let inner = rest[start + 2..end].trim();
            parts.push(match inner {
                "*" => Part::Escaped('*'),
                "?" => Part::Escaped('?'),
                "$" => Part::Escaped('$'),
                _ => match inner.split_once(',') {
                    Some((key, default)) => {
                        let default = default.trim();
                        let default = default
                            .strip_prefix('\'')
                            .and_then(|d| d.strip_suffix('\''))
                            .ok_or_else(|| {
                                malformed(format!("a variable default must be quoted: {text:?}"))
                            })?;
                        Part::Variable {
                            key: key.trim().to_owned(),
                            default: Some(default.to_owned()),
                        }
                    }
                    None => Part::Variable {
                        key: inner.to_owned(),
                        default: None,
                    },
                },
            });
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The pattern with variables substituted; `None` if a variable has no value.
    fn pattern(&self, ctx: &RequestContext) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => tokens.extend(text.chars().map(|c| match c {
                    '*' => Token::Any,
                    '?' => Token::One,
                    c => Token::Literal(c),
                })),
                Part::Escaped(c) => tokens.push(Token::Literal(*c)),
                Part::Variable { key, default } => {
                    let value = ctx.get(key).or(default.as_deref())?;
                    tokens.extend(value.chars().map(Token::Literal));
                }
            }
        }
        Some(tokens)
    }

    /// The string with variables substituted; `None` if a variable has no value.
    fn string(&self, ctx: &RequestContext) -> Option<String> {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Escaped(c) => out.push(*c),
                Part::Variable { key, default } => {
                    out.push_str(ctx.get(key).or(default.as_deref())?);
                }
            }
        }
        Some(out)
    }
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character).
fn matches(pattern: &[Token], text: &str, ignore_case: bool) -> bool {
    let fold = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let text: Vec<char> = text.chars().map(fold).collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Literal(c)) if fold(*c) == text[t] => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Token::One) => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Token::Any) => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((bp, bt)) => {
                p = bp + 1;
                t = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Any)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// `Action`/`Resource` (listed) or `NotAction`/`NotResource` (everything but the listed).
#[derive(Debug, Clone)]
struct Selector {
    negated: bool,
    entries: Vec<Template>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    Bool,
    Null,
}

impl Operator {
    fn parse(name: &str) -> Option<(Operator, bool)> {
        let (base, if_exists) = match name.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let op = match base {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "NumericEquals" => Operator::NumericEquals,
            "NumericNotEquals" => Operator::NumericNotEquals,
            "NumericLessThan" => Operator::NumericLessThan,
            "NumericLessThanEquals" => Operator::NumericLessThanEquals,
            "NumericGreaterThan" => Operator::NumericGreaterThan,
            "NumericGreaterThanEquals" => Operator::NumericGreaterThanEquals,
            "Bool" => Operator::Bool,
            "Null" if !if_exists => Operator::Null,
            _ => return None,
        };
        Some((op, if_exists))
    }

    /// Negated operators hold when no value matches (and when the key is missing).
    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NumericNotEquals
        )
    }

    /// Whether the request value matches one policy value (for negated operators: the
    /// positive comparison).
    fn compare(self, template: &Template, actual: &str, ctx: &RequestContext) -> Option<bool> {
        let number = |text: &str| text.trim().parse::<f64>().ok();
        Some(match self {
            Operator::StringEquals | Operator::StringNotEquals => template.string(ctx)? == actual,
            Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase => {
                template.string(ctx)?.to_lowercase() == actual.to_lowercase()
            }
            Operator::StringLike | Operator::StringNotLike => {
                matches(&template.pattern(ctx)?, actual, false)
            }
            Operator::Bool => template.string(ctx)?.eq_ignore_ascii_case(actual),
            Operator::Null => unreachable!("Null is decided by presence"),
            numeric => {
                let (Some(want), Some(have)) = (number(&template.string(ctx)?), number(actual))
                else {
                    return Some(false);
                };
                match numeric {
                    Operator::NumericEquals | Operator::NumericNotEquals => have == want,
                    Operator::NumericLessThan => have < want,
                    Operator::NumericLessThanEquals => have <= want,
                    Operator::NumericGreaterThan => have > want,
                    _ => have >= want,
                }
            }
        })
    }
}

#[derive(Debug, Clone)]
struct Condition {
    operator: Operator,
    if_exists: bool,
    key: String,
    values: Vec<Template>,
}

impl Condition {
    fn holds(&self, ctx: &RequestContext) -> bool {
        let actual = ctx.get(&self.key);
        if self.operator == Operator::Null {
            // `"Null": {"key": "true"}`: the key is absent.
            let want_absent = self.values.iter().any(|v| {
                v.string(ctx)
                    .is_some_and(|s| s.eq_ignore_ascii_case("true"))
            });
            return want_absent == actual.is_none();
        }
        let Some(actual) = actual else {
            return self.if_exists || self.operator.negated();
        };
        let mut any = false;
        for value in &self.values {
            match self.operator.compare(value, actual, ctx) {
                // A variable without a value: the statement does not take effect.
                None => return false,
                Some(true) => any = true,
                Some(false) => {}
            }
        }
        if self.operator.negated() {
            !any
        } else {
            any
        }
    }
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Selector,
    resources: Selector,
    conditions: Vec<Condition>,
}

impl Statement {
    fn applies(&self, action: &str, resource: &str, ctx: &RequestContext) -> bool {
        let action_listed = self
            .actions
            .entries
            .iter()
            .any(|a| a.pattern(ctx).is_some_and(|p| matches(&p, action, true)));
        if action_listed == self.actions.negated {
            return false;
        }
        let resource_listed = self
            .resources
            .entries
            .iter()
            .any(|r| r.pattern(ctx).is_some_and(|p| matches(&p, resource, false)));
        if resource_listed == self.resources.negated {
            return false;
        }
        self.conditions.iter().all(|c| c.holds(ctx))
    }
}

/// A parsed identity-based policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

impl Policy {
    /// Parses an IAM JSON policy document.
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| malformed(format!("not JSON: {e}")))?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Policy, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| malformed("a policy is a JSON object"))?;
        for key in object.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(malformed(format!("unknown policy element {key}")));
            }
        }
        let variables = match object.get("Version") {
            None => false,
            Some(Value::String(v)) if v == "2012-10-17" => true,
            Some(Value::String(v)) if v == "2008-10-17" => false,
            Some(other) => return Err(malformed(format!("unsupported Version {other}"))),
        };
        let statements = match object.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect::<Vec<_>>(),
            Some(single @ Value::Object(_)) => vec![single],
            _ => {
                return Err(malformed(
                    "Statement must be an object or a list of objects",
                ))
            }
        };
        let statements = statements
            .into_iter()
            .map(|s| parse_statement(s, variables))
            .collect::<Result<_, _>>()?;
        Ok(Policy { statements })
    }
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(malformed(format!(
            "{what} entries must be strings, not {other}"
        ))),
    };
    match value {
        Value::Array(list) if !list.is_empty() => list.iter().map(one).collect(),
        Value::Array(_) => Err(malformed(format!("{what} must not be empty"))),
        other => Ok(vec![one(other)?]),
    }
}

fn selector(
    object: &serde_json::Map<String, Value>,
    positive: &str,
    negative: &str,
    variables: bool,
) -> Result<Selector, PolicyError> {
    let (negated, value) = match (object.get(positive), object.get(negative)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        _ => {
            return Err(malformed(format!(
                "a statement needs exactly one of {positive} and {negative}"
            )))
        }
    };
    let name = if negated { negative } else { positive };
    let entries = strings(value, name)?
        .iter()
        .map(|s| {
            if positive == "Action" {
                if s != "*" && !s.contains(':') {
                    return Err(malformed(format!("action {s:?} must be service:name")));
                }
                // Actions hold no variables.
                Template::parse(s, false)
            } else {
                Template::parse(s, variables)
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Selector { negated, entries })
}

fn parse_statement(value: &Value, variables: bool) -> Result<Statement, PolicyError> {
    let object = value
        .as_object()
        .ok_or_else(|| malformed("a statement is a JSON object"))?;
    for key in object.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
            | "Condition" => {}
            "Principal" | "NotPrincipal" => {
                return Err(malformed(
                    "identity-based policies must not name a Principal",
                ))
            }
            other => return Err(malformed(format!("unknown statement element {other}"))),
        }
    }
    if let Some(sid) = object.get("Sid") {
        let ok = sid
            .as_str()
            .is_some_and(|s| s.chars().all(|c| c.is_ascii_alphanumeric()));
        if !ok {
            return Err(malformed("Sid must be alphanumeric"));
        }
    }
    let effect = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        _ => return Err(malformed("Effect must be Allow or Deny")),
    };
    let actions = selector(object, "Action", "NotAction", variables)?;
    let resources = selector(object, "Resource", "NotResource", variables)?;
    let mut conditions = Vec::new();
    if let Some(block) = object.get("Condition") {
        let block = block
            .as_object()
            .ok_or_else(|| malformed("Condition must be an object"))?;
        for (operator_name, keys) in block {
            let (operator, if_exists) = Operator::parse(operator_name).ok_or_else(|| {
                malformed(format!("unsupported condition operator {operator_name}"))
            })?;
            let keys = keys
                .as_object()
                .ok_or_else(|| malformed(format!("{operator_name} must map keys to values")))?;
            for (key, values) in keys {
                let list = match values {
                    Value::Array(list) => list.clone(),
                    single => vec![single.clone()],
                };
                let values = list
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Template::parse(s, variables),
                        Value::Number(n) => Ok(Template(vec![Part::Text(n.to_string())])),
                        Value::Bool(b) => Ok(Template(vec![Part::Text(b.to_string())])),
                        other => Err(malformed(format!(
                            "condition value {other} is not a scalar"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                conditions.push(Condition {
                    operator,
                    if_exists,
                    key: key.clone(),
                    values,
                });
            }
        }
    }
    Ok(Statement {
        effect,
        actions,
        resources,
        conditions,
    })
}

/// Evaluates `action` on `resource` against the identity policies of the caller.
pub fn evaluate(
    policies: &[Policy],
    action: &str,
    resource: &str,
    ctx: &RequestContext,
) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(|p| &p.statements) {
        if statement.applies(action, resource, ctx) {
            match statement.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GCC: &str = "redshift:GetClusterCredentials";
    const USER_ARN: &str = "arn:aws:redshift:us-east-1:123456789012:dbuser:examplecluster/alice";

    fn policy(json: serde_json::Value) -> Policy {
        Policy::from_value(&json).unwrap()
    }

    fn decide(p: &Policy, action: &str, resource: &str, ctx: &RequestContext) -> Decision {
        evaluate(std::slice::from_ref(p), action, resource, ctx)
    }

    fn allow(action: serde_json::Value, resource: serde_json::Value) -> Policy {
        policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]
        }))
    }

    #[test]
    fn default_is_deny() {
        let p = policy(serde_json::json!({"Version": "2012-10-17", "Statement": []}));
        assert_eq!(
            decide(&p, GCC, USER_ARN, &RequestContext::new()),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&[], GCC, USER_ARN, &RequestContext::new()),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn actions_are_case_insensitive_with_wildcards() {
        let ctx = RequestContext::new();
        for action in [
            "redshift:GetClusterCredentials",
            "REDSHIFT:getclustercredentials",
            "redshift:*",
            "redshift:Get*",
            "redshift:GetCluster?redentials",
            "*",
        ] {
            let p = allow(action.into(), "*".into());
            assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::Allow, "{action}");
        }
        for action in [
            "redshift:GetClusterCredentialsWithIAM",
            "redshift-serverless:*",
            "redshift:Get?",
        ] {
            let p = allow(action.into(), "*".into());
            assert_eq!(
                decide(&p, GCC, USER_ARN, &ctx),
                Decision::ImplicitDeny,
                "{action}"
            );
        }
    }

    #[test]
    fn resources_are_case_sensitive_with_wildcards() {
        let ctx = RequestContext::new();
        let base = "arn:aws:redshift:us-east-1:123456789012:dbuser:examplecluster";
        for resource in [
            format!("{base}/alice"),
            format!("{base}/*"),
            format!("{base}/al?ce"),
            "arn:aws:redshift:us-east-1:*".to_owned(),
            "arn:aws:redshift:*:*:dbuser:*/alice".to_owned(),
            "*".to_owned(),
        ] {
            let p = allow(GCC.into(), resource.clone().into());
            assert_eq!(
                decide(&p, GCC, USER_ARN, &ctx),
                Decision::Allow,
                "{resource}"
            );
        }
        for resource in [
            format!("{base}/Alice"),
            format!("{base}/al?"),
            format!("{base}/bob"),
            "arn:aws:redshift:us-west-2:*".to_owned(),
        ] {
            let p = allow(GCC.into(), resource.clone().into());
            assert_eq!(
                decide(&p, GCC, USER_ARN, &ctx),
                Decision::ImplicitDeny,
                "{resource}"
            );
        }
        // A list: any entry.
        let p = allow(
            GCC.into(),
            serde_json::json!([format!("{base}/bob"), format!("{base}/alice")]),
        );
        assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::Allow);
    }

    #[test]
    fn explicit_deny_wins() {
        let p = policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "redshift:*", "Resource": "*"},
                {"Effect": "Deny", "Action": GCC, "Resource": "arn:aws:redshift:*:*:dbuser:*/alice"}
            ]
        }));
        let ctx = RequestContext::new();
        assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::ExplicitDeny);
        assert_eq!(
            decide(&p, GCC, &USER_ARN.replace("alice", "bob"), &ctx),
            Decision::Allow
        );
        // Deny in one policy, allow in another.
        let allow_all = allow("*".into(), "*".into());
        let deny = policy(
            serde_json::json!({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}),
        );
        assert_eq!(
            evaluate(&[allow_all, deny], GCC, USER_ARN, &ctx),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn not_action_and_not_resource() {
        let ctx = RequestContext::new();
        let p = policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "NotAction": "redshift:JoinGroup", "Resource": "*"}
        }));
        assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::Allow);
        assert_eq!(
            decide(&p, "redshift:JoinGroup", USER_ARN, &ctx),
            Decision::ImplicitDeny
        );
        let p = policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": GCC, "NotResource": "arn:aws:redshift:*:*:dbuser:*/admin*"}
        }));
        assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::Allow);
        assert_eq!(
            decide(&p, GCC, &USER_ARN.replace("alice", "admin1"), &ctx),
            Decision::ImplicitDeny
        );
        // NotAction with Deny denies everything else.
        let p = policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Effect": "Deny", "NotAction": "redshift:Get*", "Resource": "*"}
            ]
        }));
        assert_eq!(decide(&p, GCC, USER_ARN, &ctx), Decision::Allow);
        assert_eq!(
            decide(&p, "redshift:JoinGroup", USER_ARN, &ctx),
            Decision::ExplicitDeny
        );
    }

    fn conditioned(condition: serde_json::Value) -> Policy {
        policy(serde_json::json!({
            "Version": "2012-10-17",
            "Statement": {"Effect": "Allow", "Action": GCC, "Resource": "*", "Condition": condition}
        }))
    }

    fn allowed(p: &Policy, ctx: &RequestContext) -> bool {
        decide(p, GCC, USER_ARN, ctx) == Decision::Allow
    }

    #[test]
    fn string_conditions() {
        let ctx = RequestContext::new().with("redshift:DbUser", "alice");
        assert!(allowed(
            &conditioned(serde_json::json!({"StringEquals": {"redshift:DbUser": "alice"}})),
            &ctx
        ));
        assert!(!allowed(
            &conditioned(serde_json::json!({"StringEquals": {"redshift:DbUser": "Alice"}})),
            &ctx
        ));
        assert!(allowed(
            &conditioned(
                serde_json::json!({"StringEquals": {"REDSHIFT:DBUSER": ["bob", "alice"]}})
            ),
            &ctx
        ));
        assert!(allowed(
            &conditioned(
                serde_json::json!({"StringEqualsIgnoreCase": {"redshift:DbUser": "ALICE"}})
            ),
            &ctx
        ));
        assert!(!allowed(
            &conditioned(
                serde_json::json!({"StringNotEqualsIgnoreCase": {"redshift:DbUser": "ALICE"}})
            ),
            &ctx
        ));
        assert!(allowed(
            &conditioned(
                serde_json::json!({"StringNotEquals": {"redshift:DbUser": ["bob", "carol"]}})
            ),
            &ctx
        ));
        assert!(!allowed(
            &conditioned(
                serde_json::json!({"StringNotEquals": {"redshift:DbUser": ["bob", "alice"]}})
            ),
            &ctx
        ));
        assert!(allowed(
            &conditioned(serde_json::json!({"StringLike": {"redshift:DbUser": "al*"}})),
            &ctx
        ));
        assert!(!allowed(
            &conditioned(serde_json::json!({"StringLike": {"redshift:DbUser": "AL*"}})),
            &ctx
        ));
        assert!(allowed(
            &conditioned(serde_json::json!({"StringNotLike": {"redshift:DbUser": "temp_*"}})),
            &ctx
        ));
        assert!(!allowed(
            &conditioned(serde_json::json!({"StringNotLike": {"redshift:DbUser": "a?ice"}})),
            &ctx
        ));
    }

    #[test]
    fn numeric_and_bool_conditions() {
        let ctx = RequestContext::new()
            .with("redshift:DurationSeconds", "900")
            .with("aws:SecureTransport", "true");
        let ok = |c: serde_json::Value| allowed(&conditioned(c), &ctx);
        assert!(ok(
            serde_json::json!({"NumericLessThan": {"redshift:DurationSeconds": 1200}})
        ));
        assert!(!ok(
            serde_json::json!({"NumericLessThan": {"redshift:DurationSeconds": "900"}})
        ));
        assert!(ok(
            serde_json::json!({"NumericLessThanEquals": {"redshift:DurationSeconds": "900"}})
        ));
        assert!(ok(
            serde_json::json!({"NumericGreaterThan": {"redshift:DurationSeconds": 899}})
        ));
        assert!(!ok(
            serde_json::json!({"NumericGreaterThanEquals": {"redshift:DurationSeconds": 901}})
        ));
        assert!(ok(
            serde_json::json!({"NumericEquals": {"redshift:DurationSeconds": 900}})
        ));
        assert!(ok(
            serde_json::json!({"NumericNotEquals": {"redshift:DurationSeconds": 3600}})
        ));
        assert!(!ok(
            serde_json::json!({"NumericLessThan": {"redshift:DurationSeconds": "many"}})
        ));
        assert!(ok(
            serde_json::json!({"Bool": {"aws:SecureTransport": true}})
        ));
        assert!(!ok(
            serde_json::json!({"Bool": {"aws:SecureTransport": "false"}})
        ));
    }

    #[test]
    fn missing_keys_and_if_exists() {
        let empty = RequestContext::new();
        let ok = |c: serde_json::Value| allowed(&conditioned(c), &empty);
        assert!(!ok(
            serde_json::json!({"StringEquals": {"redshift:DbName": "dev"}})
        ));
        assert!(!ok(
            serde_json::json!({"StringLike": {"redshift:DbName": "*"}})
        ));
        assert!(!ok(
            serde_json::json!({"NumericLessThan": {"redshift:DurationSeconds": 1200}})
        ));
        assert!(ok(
            serde_json::json!({"StringNotEquals": {"redshift:DbName": "prod"}})
        ));
        assert!(ok(
            serde_json::json!({"StringNotLike": {"redshift:DbName": "prod*"}})
        ));
        assert!(ok(
            serde_json::json!({"StringEqualsIfExists": {"redshift:DbName": "dev"}})
        ));
        assert!(ok(
            serde_json::json!({"NumericLessThanIfExists": {"redshift:DurationSeconds": 1200}})
        ));
        assert!(ok(serde_json::json!({"Null": {"redshift:DbName": "true"}})));
        assert!(!ok(
            serde_json::json!({"Null": {"redshift:DbName": "false"}})
        ));
        let dev = RequestContext::new().with("redshift:DbName", "prod");
        assert!(!allowed(
            &conditioned(serde_json::json!({"StringEqualsIfExists": {"redshift:DbName": "dev"}})),
            &dev
        ));
        assert!(allowed(
            &conditioned(serde_json::json!({"Null": {"redshift:DbName": "false"}})),
            &dev
        ));
    }

    #[test]
    fn several_keys_and_operators_are_anded() {
        let p = conditioned(serde_json::json!({
            "StringEquals": {"redshift:DbName": "dev", "redshift:DbUser": "developer"},
            "NumericLessThan": {"redshift:DurationSeconds": 1200}
        }));
        let ctx = RequestContext::new()
            .with("redshift:DbName", "dev")
            .with("redshift:DbUser", "developer")
            .with("redshift:DurationSeconds", "900");
        assert!(allowed(&p, &ctx));
        assert!(!allowed(&p, &ctx.clone().with("redshift:DbUser", "other")));
        assert!(!allowed(&p, &ctx.with("redshift:DurationSeconds", "1800")));
    }

    #[test]
    fn policy_variables_need_the_2012_version() {
        let resource =
            "arn:aws:redshift:us-east-1:123456789012:dbuser:examplecluster/${redshift:DbUser}";
        let ctx = RequestContext::new().with("redshift:DbUser", "alice");
        let with_version = allow(GCC.into(), resource.into());
        assert_eq!(decide(&with_version, GCC, USER_ARN, &ctx), Decision::Allow);
        assert_eq!(
            decide(&with_version, GCC, &USER_ARN.replace("alice", "bob"), &ctx),
            Decision::ImplicitDeny
        );
        // Without a Version, `${...}` is literal text.
        let old = policy(serde_json::json!({
            "Statement": {"Effect": "Allow", "Action": GCC, "Resource": resource}
        }));
        assert_eq!(decide(&old, GCC, USER_ARN, &ctx), Decision::ImplicitDeny);
        let literal = USER_ARN.replace("alice", "${redshift:DbUser}");
        assert_eq!(decide(&old, GCC, &literal, &ctx), Decision::Allow);
    }

    #[test]
    fn variables_in_conditions_defaults_escapes_and_missing_values() {
        // The documented pattern: the role session name must be the DbUser plus a domain.
        let p = conditioned(serde_json::json!({
            "StringEquals": {"aws:userid": "AROAEXAMPLE:${redshift:DbUser}@example.com"}
        }));
        let ctx = RequestContext::new()
            .with("redshift:DbUser", "alice")
            .with("aws:userid", "AROAEXAMPLE:alice@example.com");
        assert!(allowed(&p, &ctx));
        assert!(!allowed(&p, &ctx.clone().with("redshift:DbUser", "bob")));
        // No value for the variable: the condition is false.
        let no_user = RequestContext::new().with("aws:userid", "AROAEXAMPLE:alice@example.com");
        assert!(!allowed(&p, &no_user));
        // A default fills in.
        let p = conditioned(serde_json::json!({
            "StringEquals": {"redshift:DbName": "${aws:username, 'dev'}"}
        }));
        assert!(allowed(
            &p,
            &RequestContext::new().with("redshift:DbName", "dev")
        ));
        // ${*} is a literal star, not a wildcard.
        let p = conditioned(serde_json::json!({"StringLike": {"redshift:DbUser": "a${*}"}}));
        assert!(allowed(
            &p,
            &RequestContext::new().with("redshift:DbUser", "a*")
        ));
        assert!(!allowed(
            &p,
            &RequestContext::new().with("redshift:DbUser", "ab")
        ));
        // A variable without a value in Resource matches nothing.
        let p = allow(
            GCC.into(),
            "arn:aws:redshift:*:*:dbuser:*/${aws:username}".into(),
        );
        assert_eq!(
            decide(&p, GCC, USER_ARN, &RequestContext::new()),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn substituted_values_never_act_as_wildcards() {
        let p = allow(
            GCC.into(),
            "arn:aws:redshift:*:*:dbuser:c/${redshift:DbUser}".into(),
        );
        let ctx = RequestContext::new().with("redshift:DbUser", "*");
        assert_eq!(
            decide(&p, GCC, "arn:aws:redshift:r:1:dbuser:c/admin", &ctx),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&p, GCC, "arn:aws:redshift:r:1:dbuser:c/*", &ctx),
            Decision::Allow
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        for bad in [
            serde_json::json!([]),
            serde_json::json!({"Version": "2012-10-17"}),
            serde_json::json!({"Version": "2020-01-01", "Statement": []}),
            serde_json::json!({"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Resource": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Action": "*", "NotAction": "x:y", "Resource": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Action": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Action": "GetClusterCredentials", "Resource": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}}),
            serde_json::json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}}}}),
            serde_json::json!({"Statement": {"Sid": "bad sid", "Effect": "Allow", "Action": "*", "Resource": "*"}}),
            serde_json::json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "${oops"}}),
        ] {
            assert!(Policy::from_value(&bad).is_err(), "{bad}");
        }
    }
}
