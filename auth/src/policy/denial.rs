//! Why the policy refused a login, phrased separately for the client and the operator.

use std::fmt;

/// The kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialReason {
    /// No rule's `match` accepts the certificate.
    NoMatchingRule,
    /// Rules match the certificate, but none of them grants the target.
    TargetNotGranted,
    /// The requested database user is not among the chosen rule's (expanded) `users`.
    UserNotGranted,
    /// A placeholder user was requested and the chosen rule has no usable `default_user`.
    NoDefaultUser,
    /// The database does not match the chosen rule's `databases`.
    DatabaseNotGranted,
    /// The granted user is reserved (`rdsdb`, `pg_*`, `padb_*`, `[policy] deny_users`).
    ReservedUser,
    /// `[aws.roles_anywhere] role_session_name` yields no valid AWS role session name for
    /// this client (e.g. a CN with a space, or longer than 64 characters).
    RoleSessionName,
}

impl DenialReason {
    /// A stable snake_case name for structured logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::NoMatchingRule => "no_matching_rule",
            DenialReason::TargetNotGranted => "target_not_granted",
            DenialReason::UserNotGranted => "user_not_granted",
            DenialReason::NoDefaultUser => "no_default_user",
            DenialReason::DatabaseNotGranted => "database_not_granted",
            DenialReason::ReservedUser => "reserved_user",
            DenialReason::RoleSessionName => "role_session_name",
        }
    }
}

impl fmt::Display for DenialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused login.
///
/// [`Denial::client_message`] (also the `Display` form) is safe to send to the client: it
/// says what was refused and never what would have been allowed. [`Denial::log_detail`] is
/// for the operator and names the rules involved and why templates yielded nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    // Boxed: denials are the rare path and should not bloat every `Result<Grant, Denial>`.
    details: Box<DenialDetails>,
}

/// What [`Denial`] knows; built up by `Policy::authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DenialDetails {
    pub(super) reason: DenialReason,
    /// What kind of client was refused, for messages: `certificate` or `local user`.
    pub(super) subject: &'static str,
    pub(super) target: String,
    pub(super) requested_user: String,
    /// The database that was checked (the requested one, or the user name when none was
    /// requested); empty when the check was not reached.
    pub(super) database: String,
    pub(super) database_defaulted: bool,
    /// The rule whose grants were checked, once one was chosen.
    pub(super) rule: Option<String>,
    /// Rules whose `match` accepted the certificate (in order).
    pub(super) matching_rules: Vec<String>,
    /// Operator notes, e.g. why a template could not be expanded.
    pub(super) notes: Vec<String>,
}

impl From<DenialDetails> for Denial {
    fn from(details: DenialDetails) -> Denial {
        Denial {
            details: Box::new(details),
        }
    }
}

impl Denial {
    pub fn reason(&self) -> DenialReason {
        self.details.reason
    }

    /// The rule that was chosen (matched the certificate and granted the target), if any.
    pub fn rule(&self) -> Option<&str> {
        self.details.rule.as_deref()
    }

    /// The message for the client. States what was refused, never what is permitted.
    pub fn client_message(&self) -> String {
        match self.details.reason {
            DenialReason::NoMatchingRule | DenialReason::TargetNotGranted => {
                format!(
                    "this {} is not permitted to connect to this target",
                    self.details.subject
                )
            }
            DenialReason::UserNotGranted | DenialReason::ReservedUser => format!(
                "database user {} is not permitted for this {}",
                quote(&self.details.requested_user),
                self.details.subject
            ),
            DenialReason::NoDefaultUser => {
                if self.details.requested_user.is_empty() {
                    format!(
                        "no database user was given and this {} has no default user",
                        self.details.subject
                    )
                } else {
                    format!(
                        "database user {} names no particular user and this {} has no default user",
                        quote(&self.details.requested_user),
                        self.details.subject
                    )
                }
            }
            DenialReason::RoleSessionName => format!(
                "this {} does not yield a valid AWS role session name",
                self.details.subject
            ),
            DenialReason::DatabaseNotGranted => {
                if self.details.database_defaulted {
                    // The defaulted database is the granted user name; do not echo it.
                    format!(
                        "no database was given and the default database is not permitted for this {}",
                        self.details.subject
                    )
                } else {
                    format!(
                        "database {} is not permitted for this {}",
                        quote(&self.details.database),
                        self.details.subject
                    )
                }
            }
        }
    }

    /// A richer, single-line explanation for the operator's log. Contains rule names and
    /// (escaped) certificate-derived values, never credentials.
    pub fn log_detail(&self) -> String {
        let mut out = format!("{}: ", self.details.reason);
        match self.details.reason {
            DenialReason::NoMatchingRule => out.push_str(&format!(
                "no policy rule matches the {}",
                self.details.subject
            )),
            DenialReason::TargetNotGranted => {
                out.push_str(&format!(
                    "target {} is granted by none of the rules matching the {} ({})",
                    quote(&self.details.target),
                    self.details.subject,
                    list(&self.details.matching_rules)
                ));
            }
            DenialReason::ReservedUser => out.push_str(&format!(
                "rule {}: database user {} is reserved and never granted",
                quote(self.details.rule.as_deref().unwrap_or_default()),
                quote(&self.details.requested_user)
            )),
            DenialReason::UserNotGranted => out.push_str(&format!(
                "rule {}: database user {} is not among the rule's users",
                quote(self.details.rule.as_deref().unwrap_or_default()),
                quote(&self.details.requested_user)
            )),
            DenialReason::NoDefaultUser => out.push_str(&format!(
                "rule {}: requested user {} is a placeholder and the rule yields no default_user",
                quote(self.details.rule.as_deref().unwrap_or_default()),
                quote(&self.details.requested_user)
            )),
            DenialReason::RoleSessionName => out.push_str(&format!(
                "rule {}: [aws.roles_anywhere] role_session_name yields no AWS role session name",
                quote(self.details.rule.as_deref().unwrap_or_default())
            )),
            DenialReason::DatabaseNotGranted => out.push_str(&format!(
                "rule {}: database {}{} matches none of the rule's databases",
                quote(self.details.rule.as_deref().unwrap_or_default()),
                quote(&self.details.database),
                if self.details.database_defaulted {
                    " (defaulted to the user name)"
                } else {
                    ""
                }
            )),
        }
        if !self.details.notes.is_empty() {
            out.push_str("; ");
            out.push_str(&self.details.notes.join("; "));
        }
        out
    }
}

impl fmt::Display for Denial {
    /// The client-safe message, so that a `Denial` printed anywhere reveals nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.client_message())
    }
}

impl std::error::Error for Denial {}

/// Longest piece of client- or certificate-supplied text echoed in messages.
const MAX_ECHO_CHARS: usize = 128;

/// Quotes untrusted text for messages: escaped like a Rust string literal (so control
/// characters cannot forge log lines) and cut to a bounded length.
pub(crate) fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO_CHARS {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX_ECHO_CHARS).collect();
        format!("{cut:?}...")
    }
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ")
}
