//! Small ARN helpers: enough parsing to derive regions and to reject obviously wrong ARNs
//! before they reach AWS (where they would fail with a less helpful message).

use std::fmt;

/// The parts of `arn:<partition>:<service>:<region>:<account>:<resource>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    /// Empty for global services such as IAM.
    pub region: &'a str,
    /// Empty for some resources (e.g. S3 buckets); present for everything this crate uses.
    pub account: &'a str,
    /// Everything after the fifth colon; may itself contain colons and slashes.
    pub resource: &'a str,
}

/// Why a string is not an acceptable ARN. Holds only the offending ARN text, which is not
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arn:?} is not a valid {expected} ARN: {reason}")]
pub struct ArnError {
    pub arn: String,
    pub expected: &'static str,
    pub reason: &'static str,
}

impl<'a> Arn<'a> {
    /// Splits an ARN into its parts. Only the shape is checked, not the service or resource.
    pub fn parse(arn: &'a str) -> Option<Arn<'a>> {
        let mut parts = arn.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return None;
        }
        Some(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

impl fmt::Display for Arn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

fn check<'a>(
    arn: &'a str,
    expected: &'static str,
    service: &str,
    resource_prefix: &str,
    needs_region: bool,
) -> Result<Arn<'a>, ArnError> {
    let err = |reason| ArnError {
        arn: arn.to_owned(),
        expected,
        reason,
    };
    let parsed = Arn::parse(arn)
        .ok_or_else(|| err("expected arn:<partition>:<service>:<region>:<account>:<resource>"))?;
    if parsed.service != service {
        return Err(err("wrong service"));
    }
    if needs_region && parsed.region.is_empty() {
        return Err(err("missing region"));
    }
    if parsed.account.len() != 12 || !parsed.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("account must be 12 digits"));
    }
    match parsed.resource.strip_prefix(resource_prefix) {
        Some(rest) if !rest.is_empty() => Ok(parsed),
        _ => Err(err("wrong resource type")),
    }
}

/// Checks `arn:<partition>:iam::<account>:role/<path/name>`.
pub fn parse_role_arn(arn: &str) -> Result<Arn<'_>, ArnError> {
    check(arn, "IAM role", "iam", "role/", false)
}

/// Checks `arn:<partition>:rolesanywhere:<region>:<account>:trust-anchor/<id>`.
pub fn parse_trust_anchor_arn(arn: &str) -> Result<Arn<'_>, ArnError> {
    check(
        arn,
        "Roles Anywhere trust anchor",
        "rolesanywhere",
        "trust-anchor/",
        true,
    )
}

/// Checks `arn:<partition>:rolesanywhere:<region>:<account>:profile/<id>`.
pub fn parse_profile_arn(arn: &str) -> Result<Arn<'_>, ArnError> {
    check(
        arn,
        "Roles Anywhere profile",
        "rolesanywhere",
        "profile/",
        true,
    )
}

/// The region of a Roles Anywhere trust anchor ARN, which is where CreateSession must be
/// called unless configured otherwise.
pub fn region_from_trust_anchor_arn(arn: &str) -> Option<String> {
    parse_trust_anchor_arn(arn)
        .ok()
        .map(|parsed| parsed.region.to_owned())
}

/// The role name (last path segment) of an IAM role ARN, e.g. `analyst` for
/// `arn:aws:iam::123456789012:role/team/analyst`.
pub fn role_name_from_arn(arn: &str) -> Option<&str> {
    let parsed = parse_role_arn(arn).ok()?;
    parsed.resource.rsplit('/').next().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCHOR: &str =
        "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f5c7a1e-1111-2222-3333-444455556666";

    #[test]
    fn trust_anchor_region_is_the_fourth_field() {
        assert_eq!(
            region_from_trust_anchor_arn(ANCHOR).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_trust_anchor_arn(
                "arn:aws-us-gov:rolesanywhere:us-gov-west-1:123456789012:trust-anchor/x"
            )
            .as_deref(),
            Some("us-gov-west-1")
        );
    }

    #[test]
    fn trust_anchor_region_rejects_other_arns() {
        for bad in [
            "",
            "arn:aws:rolesanywhere::123456789012:trust-anchor/x",
            "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/x",
            "arn:aws:iam::123456789012:role/x",
            "arn:aws:rolesanywhere:eu-west-1:12345:trust-anchor/x",
            "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/",
            "aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/x",
        ] {
            assert_eq!(region_from_trust_anchor_arn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn role_arns_with_paths_are_accepted() {
        let arn = "arn:aws:iam::123456789012:role/team/analyst";
        let parsed = parse_role_arn(arn).unwrap();
        assert_eq!(parsed.partition, "aws");
        assert_eq!(parsed.resource, "role/team/analyst");
        assert_eq!(parsed.to_string(), arn);
        assert_eq!(role_name_from_arn(arn), Some("analyst"));
    }

    #[test]
    fn role_arn_errors_say_what_is_wrong() {
        let err = parse_role_arn("arn:aws:iam::123456789012:user/alice").unwrap_err();
        assert_eq!(err.reason, "wrong resource type");
        assert!(err.to_string().contains("IAM role"));
        let err = parse_role_arn("arn:aws:sts::123456789012:role/x").unwrap_err();
        assert_eq!(err.reason, "wrong service");
        let err = parse_role_arn("not an arn").unwrap_err();
        assert!(err.reason.starts_with("expected arn:"));
    }

    #[test]
    fn profile_arn_is_checked() {
        assert!(
            parse_profile_arn("arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p").is_ok()
        );
        assert!(parse_profile_arn(ANCHOR).is_err());
    }
}
