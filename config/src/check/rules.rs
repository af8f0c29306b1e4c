//! What `[[policy.rule]]` entries refer to: targets, listeners, authentication methods, and
//! the credential source their roles need; and what a target does with what they grant.

use crate::aws::AwsCredentialSource;
use crate::listener::ClientAuthMode;
use crate::policy::RuleConfig;
use crate::problems::{KeyPath, Problems};
use crate::root::Config;

pub(super) fn check_rules(config: &Config, p: &mut Problems) {
    let both_local_modes = [ClientAuthMode::Password, ClientAuthMode::Trust]
        .iter()
        .all(|mode| config.listeners.iter().any(|l| l.client_auth == *mode));
    for (i, rule) in config.policy.rules.iter().enumerate() {
        let path = KeyPath::root("policy.rule").index(i);
        for t in rule.targets.iter().filter(|t| *t != "*") {
            if config.target(t).is_none() {
                p.add(path.key("targets"), format!("no [[target]] named {t:?}"));
            }
        }
        if rule.role_arn.is_some() && config.aws.source != AwsCredentialSource::RolesAnywhere {
            p.add(
                path.key("role_arn"),
                "per-rule roles need [aws] source = \"roles_anywhere\"",
            );
        }
        check_scope(config, rule, &path, p);
        if both_local_modes && rule.matches.local_user.is_some() && !rule.matches.is_scoped() {
            p.add(
                path.key("match"),
                "this configuration has both password and trust listeners: scope this \
                 local_user rule with match.auth or match.listener, or a trust listener's \
                 user of that name would be admitted",
            );
        }
        for target in &config.targets {
            if rule.names_target(&target.name) && !rule.groups.is_empty() {
                if let Some(why) = target.why_grants_are_ignored() {
                    p.add(
                        path.key("groups"),
                        format!(
                            "target {:?} {why}, so these groups would never be joined; \
                             remove groups, or grant that target in a rule of its own",
                            target.name
                        ),
                    );
                }
            }
        }
    }
}

/// `match.listener` and `match.auth` must name listeners and methods that exist.
fn check_scope(config: &Config, rule: &RuleConfig, path: &KeyPath, p: &mut Problems) {
    let key = path.key("match");
    for name in &rule.matches.listener {
        if config.listener(name).is_none() {
            p.add(
                key.key("listener"),
                format!("no [[listener]] named {name:?}"),
            );
        }
    }
    for mode in &rule.matches.auth {
        if !config.listeners.iter().any(|l| l.client_auth == *mode) {
            p.add(
                key.key("auth"),
                format!("no [[listener]] has client_auth = {:?}", mode.as_str()),
            );
        }
    }
}
