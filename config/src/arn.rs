//! Amazon Resource Names: `arn:<partition>:<service>:<region>:<account>:<resource>`.
//!
//! The file's ARNs (`[aws.roles_anywhere] trust_anchor_arn`, `profile_arn`, `role_arn`,
//! `[[policy.rule]] role_arn`) are parsed once, when the file is read, into an [`Arn`] of
//! the kind the key needs; the rest of the proxy takes the parts from it (the trust anchor's
//! region, a role's name) instead of splitting strings again.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;

/// A parsed ARN. Construct one with [`Arn::iam_role`], [`Arn::trust_anchor`],
/// [`Arn::roles_anywhere_profile`], or (any shape) [`str::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arn {
    /// The ARN as written.
    text: String,
    /// Byte offsets of the first four colons after `arn:`: the ends of the partition,
    /// service, region and account.
    colons: [u16; 4],
}

/// Longest ARN accepted (IAM's limit for role ARNs is 2048 characters).
const MAX_ARN_LEN: usize = 2048;

/// The ARN kinds the proxy uses, and what each must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArnKind {
    /// `arn:<partition>:iam::<account>:role/<path/name>`.
    IamRole,
    /// `arn:<partition>:rolesanywhere:<region>:<account>:trust-anchor/<id>`.
    TrustAnchor,
    /// `arn:<partition>:rolesanywhere:<region>:<account>:profile/<id>`.
    RolesAnywhereProfile,
}

impl ArnKind {
    fn name(self) -> &'static str {
        match self {
            ArnKind::IamRole => "IAM role",
            ArnKind::TrustAnchor => "Roles Anywhere trust anchor",
            ArnKind::RolesAnywhereProfile => "Roles Anywhere profile",
        }
    }

    fn service(self) -> &'static str {
        match self {
            ArnKind::IamRole => "iam",
            ArnKind::TrustAnchor | ArnKind::RolesAnywhereProfile => "rolesanywhere",
        }
    }

    fn resource_type(self) -> &'static str {
        match self {
            ArnKind::IamRole => "role",
            ArnKind::TrustAnchor => "trust-anchor",
            ArnKind::RolesAnywhereProfile => "profile",
        }
    }

    /// IAM is global: its ARNs have no region.
    fn needs_region(self) -> bool {
        self != ArnKind::IamRole
    }

    fn form(self) -> String {
        let region = if self.needs_region() { "REGION" } else { "" };
        format!(
            "arn:aws:{}:{region}:123456789012:{}/{}",
            self.service(),
            self.resource_type(),
            if self == ArnKind::IamRole {
                "NAME"
            } else {
                "ID"
            }
        )
    }
}

/// Why a string is not an acceptable ARN. Holds only the offending ARN text, which is not
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arn:?} is not a valid {expected} ARN ({reason}); expected the form {form}")]
pub struct ArnError {
    pub arn: String,
    /// The kind wanted, e.g. `IAM role`; `ARN` when any shape would do.
    pub expected: &'static str,
    pub reason: &'static str,
    pub form: String,
}

const SHAPE: &str = "arn:<partition>:<service>:<region>:<account>:<resource>";

impl Arn {
    /// An IAM role: `arn:<partition>:iam::<account>:role/<path/name>`.
    pub fn iam_role(text: &str) -> Result<Arn, ArnError> {
        Arn::of_kind(text, ArnKind::IamRole)
    }

    /// A Roles Anywhere trust anchor: `arn:<partition>:rolesanywhere:<region>:<account>:
    /// trust-anchor/<id>`.
    pub fn trust_anchor(text: &str) -> Result<Arn, ArnError> {
        Arn::of_kind(text, ArnKind::TrustAnchor)
    }

    /// A Roles Anywhere profile: `arn:<partition>:rolesanywhere:<region>:<account>:
    /// profile/<id>`.
    pub fn roles_anywhere_profile(text: &str) -> Result<Arn, ArnError> {
        Arn::of_kind(text, ArnKind::RolesAnywhereProfile)
    }

    /// An ARN of `kind`: its service, a region where the kind needs one, a 12-digit account
    /// in an `aws` partition, and a resource of the kind's type with a non-empty id.
    pub fn of_kind(text: &str, kind: ArnKind) -> Result<Arn, ArnError> {
        let err = |reason| ArnError {
            arn: text.to_owned(),
            expected: kind.name(),
            reason,
            form: kind.form(),
        };
        let arn = split(text).ok_or_else(|| {
            err("not of the form arn:...:...:...:...:..., at most 2048 characters")
        })?;
        if !arn.partition().starts_with("aws") {
            return Err(err("the partition must be aws, aws-cn, aws-us-gov, ..."));
        }
        if arn.service() != kind.service() {
            return Err(err("wrong service"));
        }
        if kind.needs_region() && arn.region().is_empty() {
            return Err(err("missing region"));
        }
        let account = arn.account();
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("account must be 12 digits"));
        }
        if arn.resource_type() != kind.resource_type() || arn.resource_id().is_empty() {
            return Err(err("wrong resource type"));
        }
        Ok(arn)
    }

    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub fn partition(&self) -> &str {
        self.part(0)
    }

    /// `iam`, `rolesanywhere`, ...
    pub fn service(&self) -> &str {
        self.part(1)
    }

    /// Empty for global services such as IAM.
    pub fn region(&self) -> &str {
        self.part(2)
    }

    pub fn account(&self) -> &str {
        self.part(3)
    }

    /// Everything after the fifth colon; may itself contain colons and slashes.
    pub fn resource(&self) -> &str {
        &self.text[usize::from(self.colons[3]) + 1..]
    }

    /// The ARN as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Part `i` (0: partition ... 3: account).
    fn part(&self, i: usize) -> &str {
        let start = match i {
            0 => "arn:".len(),
            _ => usize::from(self.colons[i - 1]) + 1,
        };
        &self.text[start..usize::from(self.colons[i])]
    }

    /// The resource up to the first `/` or `:`: `role` for `role/team/analyst`.
    pub fn resource_type(&self) -> &str {
        let resource = self.resource();
        resource.split(['/', ':']).next().unwrap_or(resource)
    }

    /// The resource after its type: `team/analyst` for `role/team/analyst`.
    pub fn resource_id(&self) -> &str {
        self.resource()
            .get(self.resource_type().len() + 1..)
            .unwrap_or_default()
    }

    /// The last path segment of the resource: a role's name without its path, `analyst`
    /// for `arn:aws:iam::123456789012:role/team/analyst`.
    pub fn resource_name(&self) -> &str {
        self.resource_id().rsplit('/').next().unwrap_or_default()
    }
}

/// Splits `text` into the six parts; only the shape is checked.
fn split(text: &str) -> Option<Arn> {
    if !text.starts_with("arn:") || text.len() > MAX_ARN_LEN {
        return None;
    }
    let mut colons = [0u16; 4];
    let mut found = text
        .char_indices()
        .skip("arn:".len())
        .filter(|&(_, c)| c == ':')
        .map(|(i, _)| i);
    for colon in &mut colons {
        *colon = u16::try_from(found.next()?).ok()?;
    }
    let arn = Arn {
        text: text.to_owned(),
        colons,
    };
    let complete = !arn.partition().is_empty() && !arn.service().is_empty();
    (complete && !arn.resource().is_empty()).then_some(arn)
}

impl FromStr for Arn {
    type Err = ArnError;

    /// Any well-formed ARN (the kind is not checked).
    fn from_str(text: &str) -> Result<Arn, ArnError> {
        split(text).ok_or_else(|| ArnError {
            arn: text.to_owned(),
            expected: "ARN",
            reason: "not of the form arn:...:...:...:...:..., at most 2048 characters",
            form: SHAPE.to_owned(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `deserialize_with` functions: each key parses its ARN kind, so a wrong ARN is an error
/// naming the key.
pub(crate) mod de {
    use super::*;

    fn kind<'de, D: Deserializer<'de>>(d: D, kind: ArnKind) -> Result<Arn, D::Error> {
        let text = String::deserialize(d)?;
        Arn::of_kind(&text, kind).map_err(serde::de::Error::custom)
    }

    pub fn iam_role<'de, D: Deserializer<'de>>(d: D) -> Result<Arn, D::Error> {
        kind(d, ArnKind::IamRole)
    }

    pub fn optional_iam_role<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arn>, D::Error> {
        iam_role(d).map(Some)
    }

    pub fn trust_anchor<'de, D: Deserializer<'de>>(d: D) -> Result<Arn, D::Error> {
        kind(d, ArnKind::TrustAnchor)
    }

    pub fn roles_anywhere_profile<'de, D: Deserializer<'de>>(d: D) -> Result<Arn, D::Error> {
        kind(d, ArnKind::RolesAnywhereProfile)
    }
}

#[cfg(test)]
mod tests;
