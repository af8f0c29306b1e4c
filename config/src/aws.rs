//! `[aws]` and `[aws.roles_anywhere]`: where the proxy's own AWS credentials come from.

use crate::address::check_endpoint_url;
use crate::arn::Arn;
use crate::problems::Problems;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsCredentialSource {
    /// The standard AWS chain: environment, web identity, profile, IMDS, ...
    #[default]
    Default,
    /// A named AWS profile (e.g. one with `credential_process = aws_signing_helper ...`).
    Profile,
    /// Native IAM Roles Anywhere with the proxy's certificate and key.
    RolesAnywhere,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    #[serde(default)]
    pub source: AwsCredentialSource,
    /// Profile name for `source = "profile"`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Region for AWS calls when a target does not name one.
    #[serde(default)]
    pub region: Option<String>,
    /// Refresh AWS credentials this long before they expire (default 5 min).
    #[serde(default, with = "humantime_serde")]
    pub refresh_before: Option<Duration>,
    #[serde(default)]
    pub roles_anywhere: Option<RolesAnywhereConfig>,
}

impl AwsConfig {
    pub fn refresh_before(&self) -> Duration {
        self.refresh_before.unwrap_or(Duration::from_secs(300))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesAnywhereConfig {
    /// PEM end-entity certificate of the proxy.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#1, PKCS#8, SEC1, or encrypted PKCS#8).
    pub private_key: PathBuf,
    /// PEM intermediates sent as `X-Amz-X509-Chain`.
    #[serde(default)]
    pub chain: Option<PathBuf>,
    /// Environment variable holding the passphrase of an encrypted private key.
    #[serde(default)]
    pub private_key_passphrase_env: Option<String>,
    /// File holding the passphrase of an encrypted private key.
    #[serde(default)]
    pub private_key_passphrase_file: Option<PathBuf>,
    /// `arn:<partition>:rolesanywhere:<region>:<account>:trust-anchor/<id>`.
    #[serde(deserialize_with = "crate::arn::de::trust_anchor")]
    pub trust_anchor_arn: Arn,
    /// `arn:<partition>:rolesanywhere:<region>:<account>:profile/<id>`.
    #[serde(deserialize_with = "crate::arn::de::roles_anywhere_profile")]
    pub profile_arn: Arn,
    /// The default role: `arn:<partition>:iam::<account>:role/<name>`.
    #[serde(deserialize_with = "crate::arn::de::iam_role")]
    pub role_arn: Arn,
    /// Default: the trust anchor ARN's region ([`RolesAnywhereConfig::region`]).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_session_duration", with = "humantime_serde")]
    pub session_duration: Duration,
    /// A role session name, or an identity template such as `"{cn}"` (the policy's template
    /// language) naming one session per client identity ([`is_template`]).
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Most Roles Anywhere sessions held at once; beyond it the least recently used
    /// per-identity session is forgotten.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Override of the Roles Anywhere endpoint URL (VPC endpoints, tests): `https://`, or
    /// `http://` to a loopback host.
    #[serde(default)]
    pub endpoint_url: Option<String>,
}

fn default_session_duration() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_sessions() -> usize {
    1000
}

/// Whether a `role_session_name` is an identity template (has placeholders) rather than a
/// name: the policy compiles templates against each rule and renders them per session.
pub fn is_template(role_session_name: &str) -> bool {
    role_session_name.contains(['{', '}'])
}

impl RolesAnywhereConfig {
    /// Where CreateSession is called: `region`, else the trust anchor's region.
    pub fn region(&self) -> &str {
        self.region
            .as_deref()
            .unwrap_or(self.trust_anchor_arn.region())
    }
}

impl AwsConfig {
    /// Every problem of `[aws]` and `[aws.roles_anywhere]`.
    pub(crate) fn check(&self, p: &mut Problems) {
        match self.source {
            AwsCredentialSource::Profile if self.profile.is_none() => {
                p.add("aws.profile", "required when source = \"profile\"");
            }
            AwsCredentialSource::RolesAnywhere if self.roles_anywhere.is_none() => p.add(
                "aws.roles_anywhere",
                "an [aws.roles_anywhere] table is required when source = \"roles_anywhere\"",
            ),
            _ => {}
        }
        if self.profile.is_some() && self.source != AwsCredentialSource::Profile {
            p.add("aws.profile", "only used when source = \"profile\"");
        }
        if self.refresh_before.is_some_and(|d| d.is_zero()) {
            p.add("aws.refresh_before", "must be greater than 0");
        }
        let Some(ra) = &self.roles_anywhere else {
            return;
        };
        if self.source != AwsCredentialSource::RolesAnywhere {
            p.add(
                "aws.roles_anywhere",
                "only used when source = \"roles_anywhere\"",
            );
            return;
        }
        ra.check(p);
        if self.refresh_before() >= ra.session_duration {
            p.add(
                "aws.refresh_before",
                "must be shorter than aws.roles_anywhere.session_duration",
            );
        }
    }
}

impl RolesAnywhereConfig {
    fn check(&self, p: &mut Problems) {
        let key = |k: &str| format!("aws.roles_anywhere.{k}");
        let d = self.session_duration;
        if d < Duration::from_secs(900) || d > Duration::from_secs(43200) {
            p.add(
                key("session_duration"),
                format!("must be between 15m and 12h (got {}s)", d.as_secs()),
            );
        }
        if self.private_key_passphrase_env.is_some() && self.private_key_passphrase_file.is_some() {
            p.add(
                key("private_key_passphrase_file"),
                "give either private_key_passphrase_env or private_key_passphrase_file, not both",
            );
        }
        // Templates are checked where they are compiled, against each policy rule.
        if let Some(name) = self
            .role_session_name
            .as_deref()
            .filter(|n| !is_template(n))
        {
            p.check(key("role_session_name"), check_role_session_name(name));
        }
        if self.max_sessions == 0 {
            p.add(key("max_sessions"), "must be at least 1");
        }
        if let Some(url) = &self.endpoint_url {
            p.check(key("endpoint_url"), check_endpoint_url(url));
        }
    }
}

/// AWS's rule for role session names, which Roles Anywhere passes on to AssumeRole: 2 to
/// 64 characters matching `[\w+=,.@-]` (STS `roleSessionNameType`; Roles Anywhere documents
/// no rule of its own).
pub fn check_role_session_name(name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b);
    if !(2..=64).contains(&name.len()) || !name.bytes().all(allowed) {
        return Err("must be 2-64 characters of letters, digits and _+=,.@-".into());
    }
    Ok(())
}

/// `[aws]` is restart-only as a whole: the credential chain is built once at start.
#[derive(Debug, PartialEq, Eq)]
pub struct AwsRestartOnly<'a> {
    pub source: AwsCredentialSource,
    pub profile: Option<&'a str>,
    pub region: Option<&'a str>,
    pub refresh_before: Option<Duration>,
    pub roles_anywhere: Option<RolesAnywhereRestartOnly<'a>>,
}

/// `[aws.roles_anywhere]`, restart-only as a whole.
#[derive(Debug, PartialEq, Eq)]
pub struct RolesAnywhereRestartOnly<'a> {
    pub certificate: &'a Path,
    pub private_key: &'a Path,
    pub chain: Option<&'a Path>,
    pub private_key_passphrase_env: Option<&'a str>,
    pub private_key_passphrase_file: Option<&'a Path>,
    pub trust_anchor_arn: &'a Arn,
    pub profile_arn: &'a Arn,
    pub role_arn: &'a Arn,
    pub region: Option<&'a str>,
    pub session_duration: Duration,
    pub role_session_name: Option<&'a str>,
    pub max_sessions: usize,
    pub endpoint_url: Option<&'a str>,
}

impl AwsConfig {
    /// Every field of `[aws]`: all restart-only. Named one by one, so a new field does not
    /// compile until it is classified.
    pub fn restart_only(&self) -> AwsRestartOnly<'_> {
        let AwsConfig {
            source,
            profile,
            region,
            refresh_before,
            roles_anywhere,
        } = self;
        AwsRestartOnly {
            source: *source,
            profile: profile.as_deref(),
            region: region.as_deref(),
            refresh_before: *refresh_before,
            roles_anywhere: roles_anywhere
                .as_ref()
                .map(RolesAnywhereConfig::restart_only),
        }
    }
}

impl RolesAnywhereConfig {
    fn restart_only(&self) -> RolesAnywhereRestartOnly<'_> {
        let RolesAnywhereConfig {
            certificate,
            private_key,
            chain,
            private_key_passphrase_env,
            private_key_passphrase_file,
            trust_anchor_arn,
            profile_arn,
            role_arn,
            region,
            session_duration,
            role_session_name,
            max_sessions,
            endpoint_url,
        } = self;
        RolesAnywhereRestartOnly {
            certificate,
            private_key,
            chain: chain.as_deref(),
            private_key_passphrase_env: private_key_passphrase_env.as_deref(),
            private_key_passphrase_file: private_key_passphrase_file.as_deref(),
            trust_anchor_arn,
            profile_arn,
            role_arn,
            region: region.as_deref(),
            session_duration: *session_duration,
            role_session_name: role_session_name.as_deref(),
            max_sessions: *max_sessions,
            endpoint_url: endpoint_url.as_deref(),
        }
    }
}
