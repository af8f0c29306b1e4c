use super::*;
use proxy_config::{MatchConfig, PolicyConfig, RuleConfig};

fn rule(name: &str, matches: MatchConfig) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        matches,
        targets: vec!["*".into()],
        users: vec!["{cn}".into()],
        default_user: None,
        databases: vec!["*".into()],
        groups: vec![],
        role_arn: None,
    }
}

fn cn(pattern: &str) -> MatchConfig {
    MatchConfig {
        cn: Some(pattern.into()),
        ..MatchConfig::default()
    }
}

fn policy(rules: Vec<RuleConfig>) -> Policy {
    Policy::new(&PolicyConfig {
        rules,
        ..PolicyConfig::default()
    })
    .expect("valid policy")
}

fn alice() -> ClientIdentity {
    ClientIdentity {
        common_name: Some("alice".into()),
        subject: "CN=alice,OU=BI,O=Corp".into(),
        issuer: "CN=Corp Client CA,O=Corp".into(),
        san_dns: vec!["Laptop-7.Corp.Example".into()],
        san_uri: vec!["spiffe://corp.example/ns/bi/sa/reporting".into()],
        san_email: vec!["alice.smith@corp.example".into()],
        serial_hex: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        not_after_unix: 2_000_000_000,
    }
}

fn granted_rule(p: &Policy, id: &ClientIdentity, user: &str) -> Result<String, DenialReason> {
    p.authorize(id, "main", user, "dev")
        .map(|g| g.rule)
        .map_err(|d| d.reason())
}

#[test]
fn first_matching_rule_wins() {
    let mut specific = rule("specific", cn("alice"));
    specific.users = vec!["alice".into()];
    let p = policy(vec![specific, rule("catch_all", cn("*"))]);
    assert_eq!(granted_rule(&p, &alice(), "alice"), Ok("specific".into()));

    let mut bob = alice();
    bob.common_name = Some("bob".into());
    assert_eq!(granted_rule(&p, &bob, "bob"), Ok("catch_all".into()));
}

#[test]
fn the_chosen_rule_is_final_even_if_a_later_rule_would_grant_the_user() {
    let mut first = rule("first", cn("alice"));
    first.users = vec!["reader".into()];
    let mut second = rule("second", cn("alice"));
    second.users = vec!["admin".into()];
    let p = policy(vec![first, second]);
    assert_eq!(
        granted_rule(&p, &alice(), "admin"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn rules_not_granting_the_target_are_skipped() {
    let mut other = rule("other_target", cn("*"));
    other.targets = vec!["analytics".into()];
    other.users = vec!["wrong".into()];
    let mut main = rule("main_target", cn("*"));
    main.targets = vec!["main".into()];
    let p = policy(vec![other, main]);
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Ok("main_target".into())
    );

    let denial = p
        .authorize(&alice(), "staging", "alice", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::TargetNotGranted);
    assert!(denial.log_detail().contains("\"other_target\""));
    assert!(denial.log_detail().contains("\"main_target\""));
}

#[test]
fn star_target_grants_every_target() {
    let p = policy(vec![rule("all", cn("alice"))]);
    for target in ["main", "analytics", "x"] {
        assert!(
            p.authorize(&alice(), target, "alice", "dev").is_ok(),
            "{target}"
        );
    }
}

#[test]
fn no_matching_rule_is_denied() {
    let p = policy(vec![rule("bob_only", cn("bob"))]);
    let denial = p.authorize(&alice(), "main", "alice", "dev").unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoMatchingRule);
    assert_eq!(denial.rule(), None);
}

#[test]
fn cn_glob_is_case_sensitive_and_needs_a_cn() {
    let p = policy(vec![rule("r", cn("ali*"))]);
    assert!(p.authorize(&alice(), "main", "alice", "dev").is_ok());
    let mut upper = alice();
    upper.common_name = Some("ALICE".into());
    assert_eq!(
        granted_rule(&p, &upper, "ALICE"),
        Err(DenialReason::NoMatchingRule)
    );
    let mut none = alice();
    none.common_name = None;
    let p = policy(vec![rule("r", cn("*"))]);
    assert_eq!(
        granted_rule(&p, &none, "x"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn spiffe_uri_glob_matches_any_uri_san_across_slashes() {
    let m = MatchConfig {
        san_uri: Some("spiffe://corp.example/ns/bi/*".into()),
        ..MatchConfig::default()
    };
    let mut r = rule("bi", m);
    r.users = vec!["svc_{san_uri_path}".into()];
    let p = policy(vec![r]);
    let g = p
        .authorize(&alice(), "main", "svc_reporting", "dev")
        .expect("granted");
    assert_eq!(g.db_user, "svc_reporting");

    let mut second = alice();
    second.san_uri = vec![
        "https://other.example/x".into(),
        "spiffe://corp.example/ns/bi/sa/etl".into(),
    ];
    assert_eq!(granted_rule(&p, &second, "svc_x"), Ok("bi".into()));

    let mut other_ns = alice();
    other_ns.san_uri = vec!["spiffe://corp.example/ns/finance/sa/reporting".into()];
    assert_eq!(
        granted_rule(&p, &other_ns, "svc_reporting"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn dns_glob_is_case_insensitive_email_glob_is_not() {
    let dns = MatchConfig {
        san_dns: Some("*.corp.example".into()),
        ..MatchConfig::default()
    };
    let p = policy(vec![rule("dns", dns)]);
    assert_eq!(granted_rule(&p, &alice(), "alice"), Ok("dns".into()));

    let email = MatchConfig {
        san_email: Some("*@CORP.EXAMPLE".into()),
        ..MatchConfig::default()
    };
    let p = policy(vec![rule("email", email)]);
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn issuer_glob_matches_the_rfc4514_text_and_every_given_field_must_match() {
    let m = MatchConfig {
        issuer: Some("CN=Corp Client CA,O=Corp".into()),
        cn: Some("alice".into()),
        ..MatchConfig::default()
    };
    let p = policy(vec![rule("issuer", m)]);
    assert_eq!(granted_rule(&p, &alice(), "alice"), Ok("issuer".into()));

    let mut foreign = alice();
    foreign.issuer = "CN=Evil CA,O=Corp".into();
    assert_eq!(
        granted_rule(&p, &foreign, "alice"),
        Err(DenialReason::NoMatchingRule)
    );

    // Backslashes are literal, so RFC 4514 escapes can be written as they appear.
    let m = MatchConfig {
        issuer: Some(r"CN=CA,O=Corp\, Inc.".into()),
        ..MatchConfig::default()
    };
    let p = policy(vec![rule("escaped", m)]);
    let mut inc = alice();
    inc.issuer = r"CN=CA,O=Corp\, Inc.".into();
    assert_eq!(granted_rule(&p, &inc, "alice"), Ok("escaped".into()));
}

#[test]
fn placeholder_or_empty_user_takes_the_expanded_default_user() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("u_{email_local}".into());
    let p = policy(vec![r]);
    for requested in ["", "iam", "default", "-"] {
        let g = p
            .authorize(&alice(), "main", requested, "dev")
            .expect("granted");
        assert_eq!(g.db_user, "u_alice.smith", "{requested:?}");
    }
    // Placeholder comparison is exact.
    assert_eq!(
        granted_rule(&p, &alice(), "IAM"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn custom_placeholder_users_replace_the_defaults() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("{cn}".into());
    let p = Policy::new(&PolicyConfig {
        placeholder_users: vec!["auto".into()],
        rules: vec![r],
    })
    .expect("policy");
    assert_eq!(
        p.authorize(&alice(), "main", "auto", "dev")
            .expect("granted")
            .db_user,
        "alice"
    );
    assert_eq!(
        granted_rule(&p, &alice(), "iam"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn placeholder_user_without_default_user_is_denied() {
    let p = policy(vec![rule("r", cn("*"))]);
    let denial = p.authorize(&alice(), "main", "iam", "dev").unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoDefaultUser);
    assert!(denial.log_detail().contains("no default_user"));
}

#[test]
fn unfillable_default_user_is_denied() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("{email_local}".into());
    let p = policy(vec![r]);
    let mut no_email = alice();
    no_email.san_email.clear();
    let denial = p.authorize(&no_email, "main", "", "dev").unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoDefaultUser);
    assert!(denial.log_detail().contains("no email SAN"));
}

#[test]
fn unfillable_template_grants_nothing_but_others_still_apply() {
    let mut r = rule("r", cn("*"));
    r.users = vec!["{email_local}".into(), "{cn}".into()];
    let p = policy(vec![r]);
    let mut no_email = alice();
    no_email.san_email.clear();
    assert_eq!(granted_rule(&p, &no_email, "alice"), Ok("r".into()));
    let denial = p
        .authorize(&no_email, "main", "alice.smith", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::UserNotGranted);
    assert!(denial.log_detail().contains("{email_local}"));
}

#[test]
fn hostile_common_names_never_become_users() {
    let p = policy(vec![rule("r", cn("*"))]);
    for hostile in [
        "a:b",
        "x/../y",
        "IAM:admin",
        "public",
        "bob carol",
        "a\0b",
        "9lives",
    ] {
        let mut id = alice();
        id.common_name = Some(hostile.into());
        assert_eq!(
            granted_rule(&p, &id, hostile),
            Err(DenialReason::UserNotGranted),
            "{hostile:?}"
        );
    }
    // The log line escapes control characters rather than printing them.
    let mut id = alice();
    id.common_name = Some("a\nb".into());
    let detail = p
        .authorize(&id, "main", "x", "dev")
        .unwrap_err()
        .log_detail();
    assert!(!detail.contains('\n'));
}

#[test]
fn literal_users_require_an_exact_match() {
    let mut r = rule("r", cn("*"));
    r.users = vec!["analyst".into()];
    let p = policy(vec![r]);
    assert_eq!(granted_rule(&p, &alice(), "analyst"), Ok("r".into()));
    assert_eq!(
        granted_rule(&p, &alice(), "Analyst"),
        Err(DenialReason::UserNotGranted)
    );
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn database_must_match_one_of_the_globs() {
    let mut r = rule("r", cn("*"));
    r.databases = vec!["dev".into(), "bi_*".into()];
    let p = policy(vec![r]);
    for ok in ["dev", "bi_sales", "bi_"] {
        assert!(p.authorize(&alice(), "main", "alice", ok).is_ok(), "{ok}");
    }
    for denied in ["prod", "DEV", "xbi_sales"] {
        let d = p.authorize(&alice(), "main", "alice", denied).unwrap_err();
        assert_eq!(d.reason(), DenialReason::DatabaseNotGranted, "{denied}");
    }
}

#[test]
fn empty_database_defaults_to_the_granted_user() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("{cn}".into());
    r.databases = vec!["alice".into()];
    let p = policy(vec![r.clone()]);
    let g = p.authorize(&alice(), "main", "iam", "").expect("granted");
    assert_eq!(
        (g.db_user.as_str(), g.database.as_str()),
        ("alice", "alice")
    );

    r.databases = vec!["dev".into()];
    let p = policy(vec![r]);
    let d = p.authorize(&alice(), "main", "iam", "").unwrap_err();
    assert_eq!(d.reason(), DenialReason::DatabaseNotGranted);
    assert!(!d.client_message().contains("alice"));
}

#[test]
fn grant_carries_sorted_unique_groups_role_and_target() {
    let mut r = rule("r", cn("*"));
    r.groups = vec!["readers".into(), "bi".into(), "readers".into()];
    r.role_arn = Some("arn:aws:iam::123456789012:role/bi".into());
    let p = policy(vec![r]);
    let g = p
        .authorize(&alice(), "main", "alice", "dev")
        .expect("granted");
    assert_eq!(
        g,
        Grant {
            rule: "r".into(),
            target: "main".into(),
            db_user: "alice".into(),
            database: "dev".into(),
            db_groups: vec!["bi".into(), "readers".into()],
            role_arn: Some("arn:aws:iam::123456789012:role/bi".into()),
        }
    );
    let req = g.credential_request();
    assert_eq!(req.db_name, "dev");
    assert_eq!(req.db_groups, ["bi", "readers"]);
}

#[test]
fn denial_messages_never_reveal_what_is_allowed() {
    let mut r = rule("secret_rule_name", cn("alice"));
    r.targets = vec!["main".into()];
    r.users = vec!["allowed_user".into(), "{cn}".into()];
    r.databases = vec!["allowed_db".into()];
    let p = policy(vec![r]);
    let mut bob = alice();
    bob.common_name = Some("bob".into());

    let denials = [
        p.authorize(&bob, "main", "bob", "allowed_db").unwrap_err(),
        p.authorize(&alice(), "staging", "alice", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), "main", "mallory", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), "main", "iam", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), "main", "alice", "prod").unwrap_err(),
    ];
    let reasons: Vec<_> = denials.iter().map(Denial::reason).collect();
    assert_eq!(
        reasons,
        [
            DenialReason::NoMatchingRule,
            DenialReason::TargetNotGranted,
            DenialReason::UserNotGranted,
            DenialReason::NoDefaultUser,
            DenialReason::DatabaseNotGranted,
        ]
    );
    for d in &denials {
        let msg = d.client_message();
        assert_eq!(msg, d.to_string());
        for secret in ["allowed_user", "allowed_db", "secret_rule_name", "main"] {
            assert!(!msg.contains(secret), "{msg:?} reveals {secret:?}");
        }
    }
    assert_eq!(
        denials[2].client_message(),
        "database user \"mallory\" is not permitted for this certificate"
    );
    assert_eq!(
        denials[4].client_message(),
        "database \"prod\" is not permitted for this certificate"
    );
    assert!(denials[2].log_detail().contains("secret_rule_name"));
}

#[test]
fn client_supplied_names_are_escaped_and_bounded_in_messages() {
    let p = policy(vec![rule("r", cn("*"))]);
    let long = "x".repeat(10_000);
    let d = p.authorize(&alice(), "main", &long, "dev").unwrap_err();
    assert!(d.client_message().len() < 300);
    let d = p
        .authorize(&alice(), "main", "a\r\nFAKE LOG", "dev")
        .unwrap_err();
    assert!(!d.client_message().contains('\n'));
    assert!(!d.log_detail().contains('\n'));
}

#[test]
fn bad_globs_name_the_rule_and_key() {
    let mut r = rule("broken", cn("*"));
    r.matches.san_uri = Some("spiffe://{unclosed".into());
    let err = Policy::new(&PolicyConfig {
        rules: vec![r],
        ..PolicyConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        &err,
        PolicyError::InvalidGlob { rule, key: "match.san_uri", .. } if rule == "broken"
    ));
    assert!(err.to_string().contains("\"broken\""));

    let mut r = rule("broken_db", cn("*"));
    r.databases = vec!["[a-".into()];
    assert!(matches!(
        Policy::new(&PolicyConfig {
            rules: vec![r],
            ..PolicyConfig::default()
        }),
        Err(PolicyError::InvalidGlob {
            key: "databases",
            ..
        })
    ));
}

#[test]
fn templates_and_groups_that_can_never_be_valid_are_load_errors() {
    let load = |r: RuleConfig| {
        Policy::new(&PolicyConfig {
            rules: vec![r],
            ..PolicyConfig::default()
        })
    };
    let mut r = rule("r", cn("*"));
    r.users = vec!["IAM:{cn}".into()];
    assert!(matches!(
        load(r),
        Err(PolicyError::InvalidTemplate { key: "users", .. })
    ));

    let mut r = rule("r", cn("*"));
    r.default_user = Some("{nope}".into());
    assert!(matches!(
        load(r),
        Err(PolicyError::InvalidTemplate {
            key: "default_user",
            ..
        })
    ));

    let mut r = rule("r", cn("*"));
    r.groups = vec!["bad/group".into()];
    assert!(matches!(load(r), Err(PolicyError::InvalidGroup { .. })));
}

#[test]
fn a_rule_without_match_criteria_matches_nothing() {
    let p = policy(vec![rule("empty", MatchConfig::default())]);
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn works_on_identities_read_from_real_certificates() {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "reporting");
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://corp.example/ns/bi/sa/reporting"
            .try_into()
            .expect("ia5"),
    )];
    let key = KeyPair::generate().expect("key");
    let der = params.self_signed(&key).expect("cert").der().to_vec();
    let id = ClientIdentity::from_der(&der).expect("identity");

    let m = MatchConfig {
        san_uri: Some("spiffe://corp.example/ns/bi/*".into()),
        issuer: Some("CN=reporting".into()),
        ..MatchConfig::default()
    };
    let mut r = rule("bi", m);
    r.default_user = Some("svc_{san_uri_path}".into());
    let p = policy(vec![r]);
    let g = p.authorize(&id, "main", "iam", "dev").expect("granted");
    assert_eq!(g.db_user, "svc_reporting");
}

/// Keeps the example in `docs/configuration.md` honest: it loads, compiles and decides the
/// way the text after it says.
#[test]
fn documented_example_behaves_as_described() {
    let doc = include_str!("../../../docs/configuration.md");
    // The complete example, not the smaller snippets of single sections before it.
    let example = doc.find("## Complete example").expect("complete example");
    let start = example + doc[example..].find("```toml\n").expect("example") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("example end");
    let config = proxy_config::Config::from_toml(
        &doc[start..end],
        "proxy.toml".as_ref(),
        "/etc/redshift-iam-proxy".as_ref(),
    )
    .expect("example config is valid");
    let p = Policy::new(&config.policy).expect("example policy compiles");

    let mut id = alice();
    id.san_uri = vec!["spiffe://corp.example/ns/bi/sa/reporting".into()];
    id.issuer = "CN=Corp Workload CA,O=Corp".into();
    id.san_email.clear();
    id.san_dns.clear();
    let g = p
        .authorize(&id, "analytics", "iam", "bi_sales")
        .expect("granted");
    assert_eq!(
        (
            g.db_user.as_str(),
            g.database.as_str(),
            g.db_groups.as_slice()
        ),
        (
            "svc_reporting",
            "bi_sales",
            ["bi_readers".to_string()].as_slice()
        )
    );
    let d = p
        .authorize(&id, "analytics", "admin", "bi_sales")
        .unwrap_err();
    assert_eq!(
        d.client_message(),
        "database user \"admin\" is not permitted for this certificate"
    );
}

fn local(name: &str, method: crate::principal::LocalAuthMethod) -> crate::principal::LocalUser {
    crate::principal::LocalUser {
        name: name.into(),
        method,
    }
}

fn local_user(pattern: &str) -> MatchConfig {
    MatchConfig {
        local_user: Some(pattern.into()),
        ..MatchConfig::default()
    }
}

#[test]
fn local_users_match_local_user_rules_and_fill_their_template() {
    use crate::principal::LocalAuthMethod::{Password, Trust};
    let mut etl = rule("etl", local_user("etl*"));
    etl.users = vec!["{local_user}".into(), "svc_{local_user}".into()];
    etl.default_user = Some("svc_{local_user}".into());
    let p = policy(vec![etl]);
    let user = local("etl_nightly", Password);
    let grant = p.authorize(&user, "main", "etl_nightly", "dev").unwrap();
    assert_eq!(
        (grant.rule.as_str(), grant.db_user.as_str()),
        ("etl", "etl_nightly")
    );
    let grant = p.authorize(&user, "main", "iam", "dev").unwrap();
    assert_eq!(grant.db_user, "svc_etl_nightly");
    // The method does not matter to the rule; the name does.
    assert!(p
        .authorize(&local("etl_x", Trust), "main", "etl_x", "dev")
        .is_ok());
    let denial = p
        .authorize(&local("bi", Password), "main", "bi", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoMatchingRule);
    assert_eq!(
        denial.client_message(),
        "this local user is not permitted to connect to this target"
    );
}

#[test]
fn certificate_rules_never_match_local_users_and_local_rules_never_match_certificates() {
    use crate::principal::LocalAuthMethod::Password;
    // A local user named like a certificate CN gets nothing from a cn rule...
    let p = policy(vec![rule("any_cert", cn("*"))]);
    assert_eq!(
        p.authorize(&local("alice", Password), "main", "alice", "dev")
            .unwrap_err()
            .reason(),
        DenialReason::NoMatchingRule
    );
    // ...and a certificate gets nothing from a local_user rule, even `*`.
    let mut any_local = rule("any_local", local_user("*"));
    any_local.users = vec!["alice".into()];
    let p = policy(vec![any_local]);
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Err(DenialReason::NoMatchingRule)
    );
    // A rule mixing both kinds (refused by validation) matches neither.
    let mut mixed = rule("mixed", cn("*"));
    mixed.matches.local_user = Some("*".into());
    mixed.users = vec!["alice".into()];
    let p = policy(vec![mixed]);
    assert_eq!(
        granted_rule(&p, &alice(), "alice"),
        Err(DenialReason::NoMatchingRule)
    );
    assert!(p
        .authorize(&local("alice", Password), "main", "alice", "dev")
        .is_err());
}

#[test]
fn a_local_user_cannot_fill_certificate_templates() {
    use crate::principal::LocalAuthMethod::Trust;
    let mut r = rule("sidecar", local_user("sidecar"));
    r.users = vec!["{cn}".into()];
    let p = policy(vec![r]);
    let denial = p
        .authorize(&local("sidecar", Trust), "main", "sidecar", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::UserNotGranted);
    assert!(
        denial
            .log_detail()
            .contains("a local user has no certificate"),
        "{}",
        denial.log_detail()
    );
}
