//! Role session names through the policy: compiled against each rule, rendered per grant.

use crate::identity::ClientIdentity;
use crate::policy::{Access, DenialReason, Policy, PolicyError};
use proxy_config::{MatchConfig, MultipleSans, PolicyConfig, RuleConfig};

fn rule(name: &str, matches: MatchConfig) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        matches,
        targets: vec!["*".into()],
        users: vec!["alice".into()],
        default_user: None,
        databases: vec!["*".into()],
        groups: vec![],
        role_arn: None,
        multiple_sans: MultipleSans::Refuse,
    }
}

fn compile(rules: Vec<RuleConfig>, template: &str) -> Result<Policy, PolicyError> {
    let config = PolicyConfig {
        rules,
        ..PolicyConfig::default()
    };
    Policy::compile(&config, Some(template))
}

fn cn_rule() -> RuleConfig {
    rule(
        "people",
        MatchConfig {
            cn: Some("*".into()),
            ..MatchConfig::default()
        },
    )
}

fn certificate(cns: &[&str], uris: &[&str]) -> ClientIdentity {
    ClientIdentity {
        common_name: cns.first().map(|c| c.to_string()),
        common_names: cns.iter().map(|c| c.to_string()).collect(),
        subject: "CN=alice,O=Corp".into(),
        issuer: "CN=Corp Client CA,O=Corp".into(),
        san_dns: vec![],
        san_uri: uris.iter().map(|u| u.to_string()).collect(),
        san_email: vec![],
        serial_hex: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        not_after_unix: 2_000_000_000,
        verified_by: vec![],
    }
}

fn authorize(p: &Policy, id: &ClientIdentity) -> Result<Option<String>, (DenialReason, String)> {
    let access = Access {
        listener: "main",
        target: "cluster",
    };
    p.authorize(id, &access, "alice", "dev")
        .map(|g| g.credential_request().role_session_name)
        .map_err(|d| (d.reason(), d.log_detail()))
}

#[test]
fn the_template_names_each_clients_session_from_what_its_rule_matched() {
    let p = compile(vec![cn_rule()], "{cn}@proxy").unwrap();
    assert_eq!(
        authorize(&p, &certificate(&["alice.smith"], &[])),
        Ok(Some("alice.smith@proxy".into()))
    );
    // Without a template, grants name no session.
    let plain = Policy::new(&PolicyConfig {
        rules: vec![cn_rule()],
        ..PolicyConfig::default()
    })
    .unwrap();
    assert_eq!(authorize(&plain, &certificate(&["alice"], &[])), Ok(None));
}

#[test]
fn a_name_aws_would_refuse_refuses_the_login_with_the_reason_for_the_operator() {
    let p = compile(vec![cn_rule()], "{cn}").unwrap();
    for (cn, why) in [
        ("alice smith", "letters, digits and _+=,.@-"),
        ("a", "2-64 characters"),
        (&"x".repeat(65), "2-64 characters"),
        ("al:ce", "letters, digits"),
    ] {
        let (reason, detail) = authorize(&p, &certificate(&[cn], &[])).unwrap_err();
        assert_eq!(reason, DenialReason::RoleSessionName, "{cn}");
        assert!(
            detail.contains(why) && detail.contains("role_session_name"),
            "{detail}"
        );
    }
}

#[test]
fn one_certificate_must_name_one_session() {
    let mut each = rule(
        "bi",
        MatchConfig {
            san_uri: Some("spiffe://corp.example/ns/bi/*".into()),
            ..MatchConfig::default()
        },
    );
    each.multiple_sans = MultipleSans::Each;
    let p = compile(vec![each], "bi-{san_uri_path}").unwrap();
    let two = certificate(
        &[],
        &[
            "spiffe://corp.example/ns/bi/sa/one",
            "spiffe://corp.example/ns/bi/sa/two",
        ],
    );
    let (reason, detail) = authorize(&p, &two).unwrap_err();
    assert_eq!(reason, DenialReason::RoleSessionName);
    assert!(detail.contains("names 2 role sessions"), "{detail}");
    let one = certificate(&[], &["spiffe://corp.example/ns/bi/sa/one"]);
    assert_eq!(authorize(&p, &one), Ok(Some("bi-one".into())));
}

#[test]
fn templates_a_rule_cannot_fill_or_aws_never_accepts_are_refused_at_load() {
    let uri_rule = rule(
        "bi",
        MatchConfig {
            san_uri: Some("spiffe://corp.example/*".into()),
            ..MatchConfig::default()
        },
    );
    let err = compile(vec![cn_rule(), uri_rule], "{cn}").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"bi\"")
            && text.contains("aws.roles_anywhere.role_session_name")
            && text.contains("match.cn"),
        "{text}"
    );
    for never in [
        "{cn} via proxy",
        "{cn}/x",
        &format!("{{cn}}{}", "y".repeat(64)),
    ] {
        let err = compile(vec![cn_rule()], never).unwrap_err().to_string();
        assert!(
            err.contains("never expand to a valid role session name"),
            "{err}"
        );
    }
    assert!(compile(vec![cn_rule()], "{cn").is_err());
}
