//! What a `[[target]]` means for the credential APIs: region, cluster identifier or
//! workgroup (or custom domain), read from the configuration and, where omitted, from the
//! standard Redshift endpoint host names.
//!
//! Precedence, most specific first:
//! - region: `target.region`, then the region in `target.host`, then `[aws] region`;
//! - cluster / workgroup: `custom_domain_name` (used instead of an identifier when set),
//!   then `cluster_identifier` / `workgroup`, then the name parsed from `target.host`.
//!
//! Standard host names (also in the China partition, `amazonaws.com.cn`):
//! - provisioned: `<cluster-id>.<hash>.<region>.redshift.amazonaws.com`
//! - serverless: `<workgroup>.<account-id>.<region>.redshift-serverless.amazonaws.com`

use crate::db_credentials::CredentialError;
use proxy_config::{TargetConfig, TargetKind};
use std::time::Duration;

/// Why a target cannot be resolved. Every message names the target and the key to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "target {target:?}: cannot tell the AWS region: host {host:?} is not a standard \
         Redshift endpoint name; set `region` in the [[target]] (or `region` in [aws])"
    )]
    MissingRegion { target: String, host: String },
    #[error(
        "target {target:?}: cannot tell the cluster identifier: host {host:?} is not a \
         standard provisioned Redshift endpoint name \
         (<cluster-id>.<hash>.<region>.redshift.amazonaws.com){hint}; set \
         `cluster_identifier` (or `custom_domain_name`) in the [[target]]"
    )]
    MissingClusterIdentifier {
        target: String,
        host: String,
        hint: &'static str,
    },
    #[error(
        "target {target:?}: cannot tell the workgroup: host {host:?} is not a standard \
         Redshift Serverless endpoint name \
         (<workgroup>.<account-id>.<region>.redshift-serverless.amazonaws.com){hint}; set \
         `workgroup` (or `custom_domain_name`) in the [[target]]"
    )]
    MissingWorkgroup {
        target: String,
        host: String,
        hint: &'static str,
    },
}

impl From<EndpointError> for CredentialError {
    fn from(e: EndpointError) -> Self {
        CredentialError::Invalid(e.to_string())
    }
}

/// The parts of a standard provisioned cluster endpoint name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHost {
    pub cluster_identifier: String,
    pub region: String,
}

/// The parts of a standard serverless workgroup endpoint name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkgroupHost {
    pub workgroup: String,
    pub account_id: String,
    pub region: String,
}

/// How a credential call names the cluster or workgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceName {
    /// `ClusterIdentifier` / `workgroupName`.
    Identifier(String),
    /// `CustomDomainName` / `customDomainName`.
    CustomDomain(String),
}

/// Which credential API a target uses, with its API-specific settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetApi {
    /// `GetClusterCredentials`, or `GetClusterCredentialsWithIAM` when `with_iam`.
    Provisioned {
        cluster: ResourceName,
        with_iam: bool,
        auto_create: bool,
    },
    /// Redshift Serverless `GetCredentials`.
    Serverless { workgroup: ResourceName },
}

/// A target resolved for credential calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// `[[target]] name`.
    pub name: String,
    pub region: String,
    pub api: TargetApi,
    /// Lifetime requested for database credentials.
    pub credential_duration: Duration,
    /// Override of the Redshift / Redshift Serverless API endpoint URL.
    pub aws_endpoint_url: Option<String>,
}

impl ResolvedTarget {
    /// Resolves `target`; `default_region` is `[aws] region`.
    pub fn resolve(
        target: &TargetConfig,
        default_region: Option<&str>,
    ) -> Result<ResolvedTarget, EndpointError> {
        let cluster_host = parse_cluster_host(&target.host);
        let workgroup_host = parse_workgroup_host(&target.host);
        // Only a host of the target's own kind says anything about it.
        let parsed_region = match target.kind {
            TargetKind::Provisioned => cluster_host.as_ref().map(|h| h.region.as_str()),
            TargetKind::Serverless => workgroup_host.as_ref().map(|h| h.region.as_str()),
        };
        let region = target
            .region
            .as_deref()
            .or(parsed_region)
            .or(default_region)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| EndpointError::MissingRegion {
                target: target.name.clone(),
                host: target.host.clone(),
            })?
            .to_owned();

        let custom_domain = target
            .custom_domain_name
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| ResourceName::CustomDomain(d.to_owned()));

        let api = match target.kind {
            TargetKind::Provisioned => {
                let cluster = match custom_domain {
                    Some(domain) => domain,
                    None => target
                        .cluster_identifier
                        .clone()
                        .filter(|c| !c.is_empty())
                        .or_else(|| cluster_host.map(|h| h.cluster_identifier))
                        .map(ResourceName::Identifier)
                        .ok_or_else(|| EndpointError::MissingClusterIdentifier {
                            target: target.name.clone(),
                            host: target.host.clone(),
                            hint: if workgroup_host.is_some() {
                                " (it looks like a serverless endpoint: is `kind` right?)"
                            } else {
                                ""
                            },
                        })?,
                };
                TargetApi::Provisioned {
                    cluster,
                    with_iam: target.with_iam,
                    auto_create: target.auto_create,
                }
            }
            TargetKind::Serverless => {
                let workgroup = match custom_domain {
                    Some(domain) => domain,
                    None => target
                        .workgroup
                        .clone()
                        .filter(|w| !w.is_empty())
                        .or_else(|| workgroup_host.map(|h| h.workgroup))
                        .map(ResourceName::Identifier)
                        .ok_or_else(|| EndpointError::MissingWorkgroup {
                            target: target.name.clone(),
                            host: target.host.clone(),
                            hint: if cluster_host.is_some() {
                                " (it looks like a provisioned cluster endpoint: is `kind` right?)"
                            } else {
                                ""
                            },
                        })?,
                };
                TargetApi::Serverless { workgroup }
            }
        };

        Ok(ResolvedTarget {
            name: target.name.clone(),
            region,
            api,
            credential_duration: target.credential_duration,
            aws_endpoint_url: target.aws_endpoint_url.clone(),
        })
    }

    /// `DurationSeconds` for the credential APIs. Configuration validation keeps the
    /// duration within 900–3600 s; clamping here only guards the integer conversion.
    pub fn duration_seconds(&self) -> i32 {
        i32::try_from(self.credential_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Splits `host` into the labels before `.<service>.amazonaws.com[.cn]`, lowercased.
/// DNS names are case-insensitive and may carry a trailing dot.
fn labels_before_service(host: &str, service: &str) -> Option<Vec<String>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let prefix = [".amazonaws.com", ".amazonaws.com.cn"]
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))?
        .strip_suffix(service)?
        .strip_suffix('.')?;
    let labels: Vec<String> = prefix.split('.').map(str::to_owned).collect();
    labels.iter().all(|l| is_dns_label(l)).then_some(labels)
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A region name such as `us-east-1`, `eu-central-2`, `cn-north-1`, `us-gov-west-1`.
fn looks_like_region(label: &str) -> bool {
    let mut parts = label.split('-');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && rest[..rest.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Parses `<cluster-id>.<hash>.<region>.redshift.amazonaws.com[.cn]`.
pub fn parse_cluster_host(host: &str) -> Option<ClusterHost> {
    match labels_before_service(host, "redshift")?.as_slice() {
        [cluster, _hash, region] if looks_like_region(region) => Some(ClusterHost {
            cluster_identifier: cluster.clone(),
            region: region.clone(),
        }),
        _ => None,
    }
}

/// Parses `<workgroup>.<account-id>.<region>.redshift-serverless.amazonaws.com[.cn]`.
pub fn parse_workgroup_host(host: &str) -> Option<WorkgroupHost> {
    match labels_before_service(host, "redshift-serverless")?.as_slice() {
        [workgroup, account, region]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && looks_like_region(region) =>
        {
            Some(WorkgroupHost {
                workgroup: workgroup.clone(),
                account_id: account.clone(),
                region: region.clone(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target as `[[target]] name = "t1"` with only `kind` and `host` given.
    pub(crate) fn target(kind: TargetKind, host: &str) -> TargetConfig {
        TargetConfig::new("t1", kind, host)
    }

    use TargetKind::{Provisioned, Serverless};

    #[test]
    fn parses_provisioned_cluster_host() {
        assert_eq!(
            parse_cluster_host("examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"),
            Some(ClusterHost {
                cluster_identifier: "examplecluster".into(),
                region: "us-west-2".into()
            })
        );
    }

    #[test]
    fn parses_hosts_case_insensitively_and_with_trailing_dot() {
        let h = parse_cluster_host("My-Cluster.ABC.EU-Central-1.Redshift.AmazonAWS.com.")
            .expect("parsed");
        assert_eq!(h.cluster_identifier, "my-cluster");
        assert_eq!(h.region, "eu-central-1");
    }

    #[test]
    fn parses_china_partition_hosts() {
        let c = parse_cluster_host("c1.h1.cn-north-1.redshift.amazonaws.com.cn").expect("cluster");
        assert_eq!(
            (c.cluster_identifier.as_str(), c.region.as_str()),
            ("c1", "cn-north-1")
        );
        let w = parse_workgroup_host(
            "wg.123456789012.cn-northwest-1.redshift-serverless.amazonaws.com.cn",
        )
        .expect("workgroup");
        assert_eq!(w.region, "cn-northwest-1");
    }

    #[test]
    fn parses_govcloud_region() {
        let c = parse_cluster_host("c1.h1.us-gov-west-1.redshift.amazonaws.com").expect("cluster");
        assert_eq!(c.region, "us-gov-west-1");
    }

    #[test]
    fn parses_serverless_workgroup_host() {
        assert_eq!(
            parse_workgroup_host(
                "analytics.123456789012.us-east-1.redshift-serverless.amazonaws.com"
            ),
            Some(WorkgroupHost {
                workgroup: "analytics".into(),
                account_id: "123456789012".into(),
                region: "us-east-1".into()
            })
        );
    }

    #[test]
    fn rejects_non_standard_hosts() {
        for host in [
            "localhost",
            "redshift.amazonaws.com",
            "db.example.com",
            "c1.us-east-1.redshift.amazonaws.com",
            "a.c1.h1.us-east-1.redshift.amazonaws.com",
            "c1.h1.notaregion.redshift.amazonaws.com",
            "c1..us-east-1.redshift.amazonaws.com",
            "c1.h1.us-east-1.redshift.amazonaws.com.evil.example",
            "c1.h1.us-east-1.redshift-serverless.amazonaws.com",
            "vpce-0123.redshift.us-east-1.vpce.amazonaws.com",
            "",
            ".",
        ] {
            assert_eq!(parse_cluster_host(host), None, "{host}");
        }
        for host in [
            "wg.12345.us-east-1.redshift-serverless.amazonaws.com",
            "wg.123456789012.us-east-1.redshift.amazonaws.com",
            "123456789012.us-east-1.redshift-serverless.amazonaws.com",
        ] {
            assert_eq!(parse_workgroup_host(host), None, "{host}");
        }
    }

    #[test]
    fn provisioned_target_takes_identifier_and_region_from_host() {
        let t = target(Provisioned, "c1.h1.eu-west-1.redshift.amazonaws.com");
        let r = ResolvedTarget::resolve(&t, Some("us-east-1")).expect("resolved");
        assert_eq!(r.region, "eu-west-1");
        assert_eq!(
            r.api,
            TargetApi::Provisioned {
                cluster: ResourceName::Identifier("c1".into()),
                with_iam: false,
                auto_create: false
            }
        );
        assert_eq!(r.duration_seconds(), 3600);
    }

    #[test]
    fn config_fields_override_parsed_host() {
        let t = TargetConfig {
            region: Some("us-east-2".into()),
            cluster_identifier: Some("other".into()),
            with_iam: true,
            ..target(Provisioned, "c1.h1.eu-west-1.redshift.amazonaws.com")
        };
        let r = ResolvedTarget::resolve(&t, None).expect("resolved");
        assert_eq!(r.region, "us-east-2");
        assert_eq!(
            r.api,
            TargetApi::Provisioned {
                cluster: ResourceName::Identifier("other".into()),
                with_iam: true,
                auto_create: false
            }
        );
    }

    #[test]
    fn custom_domain_replaces_the_identifier() {
        let t = TargetConfig {
            region: Some("us-east-1".into()),
            custom_domain_name: Some("db.example.com".into()),
            ..target(Serverless, "db.example.com")
        };
        let r = ResolvedTarget::resolve(&t, None).expect("resolved");
        assert_eq!(
            r.api,
            TargetApi::Serverless {
                workgroup: ResourceName::CustomDomain("db.example.com".into())
            }
        );
    }

    #[test]
    fn serverless_target_from_host_with_endpoint_override() {
        let t = TargetConfig {
            aws_endpoint_url: Some("http://127.0.0.1:9000".into()),
            credential_duration: Duration::from_secs(900),
            ..target(
                Serverless,
                "wg1.123456789012.ap-southeast-2.redshift-serverless.amazonaws.com",
            )
        };
        let r = ResolvedTarget::resolve(&t, None).expect("resolved");
        assert_eq!(r.region, "ap-southeast-2");
        assert_eq!(
            r.api,
            TargetApi::Serverless {
                workgroup: ResourceName::Identifier("wg1".into())
            }
        );
        assert_eq!(r.aws_endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(r.duration_seconds(), 900);
    }

    #[test]
    fn aws_region_is_the_last_resort() {
        let t = TargetConfig {
            cluster_identifier: Some("c1".into()),
            ..target(Provisioned, "127.0.0.1")
        };
        let r = ResolvedTarget::resolve(&t, Some("sa-east-1")).expect("resolved");
        assert_eq!(r.region, "sa-east-1");
    }

    #[test]
    fn missing_region_names_target_and_key() {
        let t = TargetConfig {
            cluster_identifier: Some("c1".into()),
            ..target(Provisioned, "127.0.0.1")
        };
        let err = ResolvedTarget::resolve(&t, None).expect_err("no region");
        let msg = err.to_string();
        assert!(matches!(err, EndpointError::MissingRegion { .. }));
        assert!(msg.contains("\"t1\"") && msg.contains("`region`"), "{msg}");
    }

    #[test]
    fn missing_cluster_identifier_names_target_and_key() {
        let t = TargetConfig {
            region: Some("us-east-1".into()),
            ..target(Provisioned, "127.0.0.1")
        };
        let msg = ResolvedTarget::resolve(&t, None)
            .expect_err("no id")
            .to_string();
        assert!(
            msg.contains("\"t1\"") && msg.contains("`cluster_identifier`"),
            "{msg}"
        );
    }

    #[test]
    fn missing_workgroup_names_target_and_key() {
        let t = TargetConfig {
            region: Some("us-east-1".into()),
            ..target(Serverless, "127.0.0.1")
        };
        let msg = ResolvedTarget::resolve(&t, None)
            .expect_err("no workgroup")
            .to_string();
        assert!(
            msg.contains("\"t1\"") && msg.contains("`workgroup`"),
            "{msg}"
        );
    }

    #[test]
    fn host_of_the_other_kind_is_not_used_and_hinted() {
        let t = target(Serverless, "c1.h1.us-east-1.redshift.amazonaws.com");
        let msg = ResolvedTarget::resolve(&t, None)
            .expect_err("wrong kind")
            .to_string();
        // The region is not taken from a provisioned host for a serverless target.
        assert!(msg.contains("`region`"), "{msg}");
        let t = TargetConfig {
            region: Some("us-east-1".into()),
            ..target(Serverless, "c1.h1.us-east-1.redshift.amazonaws.com")
        };
        let msg = ResolvedTarget::resolve(&t, None)
            .expect_err("wrong kind")
            .to_string();
        assert!(msg.contains("is `kind` right?"), "{msg}");
    }

    #[test]
    fn endpoint_errors_become_invalid_credential_errors() {
        let t = target(Provisioned, "127.0.0.1");
        let err: CredentialError = ResolvedTarget::resolve(&t, None).expect_err("bad").into();
        assert!(matches!(err, CredentialError::Invalid(_)));
    }
}
