//! `[aws.roles_anywhere] role_session_name` as an identity template: the name of the AWS
//! role session each client's credential calls are made in, so CloudTrail names the client.
//!
//! The template language is the rules' ([`super::template`]): a placeholder takes its value
//! only from what the granting rule matched, and a rule that cannot fill a placeholder is
//! refused at load. Expansions must be what AWS accepts as a role session name (2 to 64 of
//! `[\w+=,.@-]`, [`proxy_config::check_role_session_name`]); a certificate whose values do
//! not make one is refused ([`super::DenialReason::RoleSessionName`]).

use super::denial::quote;
use super::template::{Binding, Scope, Template};
use std::fmt;

/// A compiled role session name template of one rule.
#[derive(Debug, Clone)]
pub(super) struct SessionNameTemplate(Template);

impl SessionNameTemplate {
    /// Compiles `source` for a rule whose match fills `scope`.
    pub fn compile(source: &str, scope: &Scope) -> Result<Self, String> {
        let template = Template::parse_in_scope(source, scope).map_err(|e| e.to_string())?;
        // Placeholders filled with "a" (padded to the minimum length): if even that is no
        // session name, the literal text never makes one.
        let candidate = format!("{:a<2}", template.render(|_| "a"));
        proxy_config::check_role_session_name(&candidate).map_err(|reason| {
            format!("can never expand to a valid role session name: it {reason}")
        })?;
        Ok(SessionNameTemplate(template))
    }

    pub fn source(&self) -> &str {
        self.0.source()
    }

    /// The one session name `bindings` (the ways the rule matched) give, or why there is
    /// none: no binding gives a valid name, or two give different ones.
    pub fn render(&self, bindings: &[Binding]) -> Result<String, SessionNameError> {
        let mut names: Vec<String> = Vec::new();
        let mut problems: Vec<String> = Vec::new();
        for binding in bindings {
            match self.0.fill(binding) {
                Ok(name) => match proxy_config::check_role_session_name(&name) {
                    Ok(()) => names.push(name),
                    Err(reason) => problems.push(format!(
                        "expansion {} is not a valid role session name: it {reason}",
                        quote(&name)
                    )),
                },
                Err(placeholder) => problems.push(format!(
                    "{placeholder} cannot be filled from what the rule matched"
                )),
            }
        }
        names.sort();
        names.dedup();
        match names.len() {
            1 => Ok(names.remove(0)),
            0 => Err(SessionNameError(problems.join("; "))),
            several => Err(SessionNameError(format!(
                "names {several} role sessions for this certificate; it must name one"
            ))),
        }
    }
}

/// Why a client has no role session name: for the operator's log (certificate values are
/// quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionNameError(String);

impl fmt::Display for SessionNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
