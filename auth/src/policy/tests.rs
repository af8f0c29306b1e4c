use super::*;
use crate::identity::ClientIdentity;
use proxy_config::{ClientAuthMode, MatchConfig, MultipleSans, PolicyConfig, RuleConfig};

/// A rule granting `{cn}` when it matches on the CN, else the literal user `alice`.
fn rule(name: &str, matches: MatchConfig) -> RuleConfig {
    let users = if matches.cn.is_some() {
        "{cn}"
    } else {
        "alice"
    };
    RuleConfig {
        name: name.into(),
        matches,
        targets: vec!["*".into()],
        users: vec![users.into()],
        default_user: None,
        databases: vec!["*".into()],
        groups: vec![],
        role_arn: None,
        multiple_sans: MultipleSans::Refuse,
    }
}

fn access(target: &str) -> Access<'_> {
    Access {
        listener: "main-listener",
        target,
    }
}

fn email(pattern: &str) -> MatchConfig {
    MatchConfig {
        san_email: Some(pattern.into()),
        ..MatchConfig::default()
    }
}

fn uri(pattern: &str) -> MatchConfig {
    MatchConfig {
        san_uri: Some(pattern.into()),
        ..MatchConfig::default()
    }
}

fn load(rules: Vec<RuleConfig>) -> Result<Policy, PolicyError> {
    Policy::new(&PolicyConfig {
        rules,
        ..PolicyConfig::default()
    })
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
        common_names: vec!["alice".into()],
        subject: "CN=alice,OU=BI,O=Corp".into(),
        issuer: "CN=Corp Client CA,O=Corp".into(),
        san_dns: vec!["Laptop-7.Corp.Example".into()],
        san_uri: vec!["spiffe://corp.example/ns/bi/sa/reporting".into()],
        san_email: vec!["alice.smith@corp.example".into()],
        serial_hex: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        not_after_unix: 2_000_000_000,
        verified_by: vec!["cd".repeat(32)],
    }
}

fn with_cn(cn: &str) -> ClientIdentity {
    let mut id = alice();
    id.common_name = Some(cn.into());
    id.common_names = vec![cn.into()];
    id
}

fn granted_rule(p: &Policy, id: &ClientIdentity, user: &str) -> Result<String, DenialReason> {
    p.authorize(id, &access("main"), user, "dev")
        .map(|g| g.rule)
        .map_err(|d| d.reason())
}

#[test]
fn first_matching_rule_wins() {
    let mut specific = rule("specific", cn("alice"));
    specific.users = vec!["alice".into()];
    let p = policy(vec![specific, rule("catch_all", cn("*"))]);
    assert_eq!(granted_rule(&p, &alice(), "alice"), Ok("specific".into()));

    assert_eq!(
        granted_rule(&p, &with_cn("bob"), "bob"),
        Ok("catch_all".into())
    );
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
        .authorize(&alice(), &access("staging"), "alice", "dev")
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
            p.authorize(&alice(), &access(target), "alice", "dev")
                .is_ok(),
            "{target}"
        );
    }
}

#[test]
fn no_matching_rule_is_denied() {
    let p = policy(vec![rule("bob_only", cn("bob"))]);
    let denial = p
        .authorize(&alice(), &access("main"), "alice", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoMatchingRule);
    assert_eq!(denial.rule(), None);
}

#[test]
fn cn_glob_is_case_sensitive_and_needs_a_cn() {
    let p = policy(vec![rule("r", cn("ali*"))]);
    assert!(p
        .authorize(&alice(), &access("main"), "alice", "dev")
        .is_ok());
    assert_eq!(
        granted_rule(&p, &with_cn("ALICE"), "ALICE"),
        Err(DenialReason::NoMatchingRule)
    );
    let mut none = alice();
    none.common_name = None;
    none.common_names.clear();
    let p = policy(vec![rule("r", cn("*"))]);
    assert_eq!(
        granted_rule(&p, &none, "x"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn spiffe_uri_glob_crosses_slashes() {
    let mut r = rule("bi", uri("spiffe://corp.example/ns/bi/*"));
    r.users = vec!["svc_{san_uri_path}".into()];
    let p = policy(vec![r]);
    let g = p
        .authorize(&alice(), &access("main"), "svc_reporting", "dev")
        .expect("granted");
    assert_eq!(g.db_user, "svc_reporting");

    let mut other_ns = alice();
    other_ns.san_uri = vec!["spiffe://corp.example/ns/finance/sa/reporting".into()];
    assert_eq!(
        granted_rule(&p, &other_ns, "svc_reporting"),
        Err(DenialReason::NoMatchingRule)
    );
}

/// The attack of issue 11: a second URI SAN matched the rule while the template read the
/// first, so `spiffe://evil.example/ns/x/postgres` chose the database user.
#[test]
fn a_second_san_never_chooses_another_database_user() {
    let mut r = rule("bi", uri("spiffe://corp.example/ns/bi/*"));
    r.users = vec!["{san_uri_path}".into()];
    let mut evil = alice();
    evil.san_uri = vec![
        "spiffe://evil.example/ns/x/postgres".into(),
        "spiffe://corp.example/ns/bi/sa/svc".into(),
    ];
    // By default a rule refuses a certificate with several SANs of the kind it matches.
    let p = policy(vec![r.clone()]);
    let denial = p
        .authorize(&evil, &access("main"), "postgres", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoMatchingRule);
    assert!(
        denial.log_detail().contains("2 of them"),
        "{}",
        denial.log_detail()
    );
    assert_eq!(
        granted_rule(&p, &evil, "svc"),
        Err(DenialReason::NoMatchingRule)
    );

    // Opted in, each SAN is tried on its own: only the matching one names users.
    r.multiple_sans = MultipleSans::Each;
    let p = policy(vec![r]);
    assert_eq!(granted_rule(&p, &evil, "svc"), Ok("bi".into()));
    assert_eq!(
        granted_rule(&p, &evil, "postgres"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn several_cns_are_refused_unless_each_is_tried() {
    let mut two = alice();
    two.common_names = vec!["alice".into(), "bob".into()];
    let mut r = rule("r", cn("a*"));
    assert_eq!(
        granted_rule(&policy(vec![r.clone()]), &two, "alice"),
        Err(DenialReason::NoMatchingRule)
    );
    r.multiple_sans = MultipleSans::Each;
    let p = policy(vec![r]);
    assert_eq!(granted_rule(&p, &two, "alice"), Ok("r".into()));
    // `bob` is a CN of the certificate, but not the one the rule matched.
    assert_eq!(
        granted_rule(&p, &two, "bob"),
        Err(DenialReason::UserNotGranted)
    );
}

#[test]
fn a_default_user_must_name_one_user_however_the_certificate_matched() {
    let mut r = rule("r", uri("spiffe://corp.example/ns/bi/sa/*"));
    r.multiple_sans = MultipleSans::Each;
    r.users = vec!["{san_uri_path}".into()];
    r.default_user = Some("{san_uri_path}".into());
    let p = policy(vec![r]);
    let mut two = alice();
    two.san_uri = vec![
        "spiffe://corp.example/ns/bi/sa/one".into(),
        "spiffe://corp.example/ns/bi/sa/two".into(),
    ];
    let denial = p
        .authorize(&two, &access("main"), "iam", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoDefaultUser);
    assert!(
        denial.log_detail().contains("names 2 users"),
        "{}",
        denial.log_detail()
    );
}

#[test]
fn named_captures_fill_templates_and_stay_within_one_segment() {
    let mut r = rule("bi", uri("spiffe://corp.example/ns/bi/sa/{name}"));
    r.users = vec!["{name}".into()];
    r.default_user = Some("svc_{name}".into());
    let p = policy(vec![r]);
    let mut id = alice();
    id.san_uri = vec!["spiffe://corp.example/ns/bi/sa/reporting".into()];
    assert_eq!(granted_rule(&p, &id, "reporting"), Ok("bi".into()));
    let g = p.authorize(&id, &access("main"), "iam", "dev").unwrap();
    assert_eq!(g.db_user, "svc_reporting");
    id.san_uri = vec!["spiffe://corp.example/ns/bi/sa/x/rdsdb".into()];
    assert_eq!(
        granted_rule(&p, &id, "rdsdb"),
        Err(DenialReason::NoMatchingRule)
    );
}

#[test]
fn templates_may_only_use_what_the_rule_matched() {
    let mut r = rule("r", uri("spiffe://corp.example/*"));
    r.users = vec!["{cn}".into()];
    let err = load(vec![r]).unwrap_err();
    assert!(err.to_string().contains("match.cn"), "{err}");

    let mut r = rule("r", email("*@*"));
    r.users = vec!["{email_local}".into()];
    let err = load(vec![r]).unwrap_err();
    assert!(err.to_string().contains("pin"), "{err}");

    let mut r = rule("r", email("*@corp.example"));
    r.users = vec!["{email_local}".into()];
    assert!(load(vec![r]).is_ok());
}

#[test]
fn email_local_of_two_domains_cannot_share_a_user_through_one_rule() {
    let mut r = rule("people", email("*@corp.example"));
    r.users = vec!["{email_local}".into()];
    let p = policy(vec![r]);
    let mut partner = alice();
    partner.san_email = vec!["alice@partner.example".into()];
    assert_eq!(
        granted_rule(&p, &partner, "alice"),
        Err(DenialReason::NoMatchingRule)
    );
    let mut own = alice();
    own.san_email = vec!["alice@corp.example".into()];
    assert_eq!(granted_rule(&p, &own, "alice"), Ok("people".into()));
}

#[test]
fn reserved_users_are_refused_whatever_the_rules_say() {
    let mut r = rule("bi", uri("spiffe://corp.example/ns/bi/sa/*"));
    r.users = vec!["{san_uri_path}".into()];
    let p = policy(vec![r]);
    for name in [
        "rdsdb",
        "RDSDB",
        "pg_read_all_data",
        "padb_internal",
        "awsuser",
    ] {
        let mut id = alice();
        id.san_uri = vec![format!("spiffe://corp.example/ns/bi/sa/{name}")];
        let denial = p.authorize(&id, &access("main"), name, "dev").unwrap_err();
        assert_eq!(denial.reason(), DenialReason::ReservedUser, "{name}");
        assert_eq!(
            denial.client_message(),
            format!("database user {name:?} is not permitted for this certificate")
        );
    }
    // Literal reserved users are configuration errors.
    let mut r = rule("r", cn("*"));
    r.users = vec!["rdsdb".into()];
    assert!(load(vec![r]).unwrap_err().to_string().contains("reserved"));
    let mut r = rule("r", cn("*"));
    r.users = vec!["etl_admin".into()];
    let p = Policy::new(&PolicyConfig {
        deny_users: vec!["ETL_Admin".into()],
        rules: vec![r],
        ..PolicyConfig::default()
    });
    assert!(p.is_err());
}

#[test]
fn user_names_are_compared_and_granted_folded_like_redshift() {
    let p = policy(vec![rule("r", cn("*"))]);
    let g = p
        .authorize(&with_cn("Alice"), &access("main"), "ALICE", "dev")
        .unwrap();
    assert_eq!(g.db_user, "alice");
    let g = p
        .authorize(&with_cn("alice"), &access("main"), "alice", "dev")
        .unwrap();
    assert_eq!(g.db_user, "alice");
}

#[test]
fn rules_can_be_scoped_to_listeners_and_authentication_methods() {
    use crate::principal::LocalAuthMethod::{Password, Trust};
    let mut r = rule("etl", local_user("etl"));
    r.users = vec!["etl".into()];
    r.matches.auth = vec![ClientAuthMode::Password];
    r.matches.listener = vec!["legacy".into()];
    let p = policy(vec![r]);
    let legacy = Access {
        listener: "legacy",
        target: "main",
    };
    assert!(p
        .authorize(&local("etl", Password), &legacy, "etl", "dev")
        .is_ok());
    // A trust listener's user of the same name gets nothing from a password rule.
    assert_eq!(
        p.authorize(&local("etl", Trust), &legacy, "etl", "dev")
            .unwrap_err()
            .reason(),
        DenialReason::NoMatchingRule
    );
    assert_eq!(
        p.authorize(&local("etl", Password), &access("main"), "etl", "dev")
            .unwrap_err()
            .reason(),
        DenialReason::NoMatchingRule
    );
}

#[test]
fn issuer_sha256_names_the_ca_that_verified_the_chain() {
    let mut m = cn("*");
    m.issuer_sha256 = Some("CD:".repeat(31) + "CD");
    let p = policy(vec![rule("pinned", m)]);
    assert_eq!(granted_rule(&p, &alice(), "alice"), Ok("pinned".into()));
    let mut other_ca = alice();
    other_ca.verified_by = vec!["ef".repeat(32)];
    assert_eq!(
        granted_rule(&p, &other_ca, "alice"),
        Err(DenialReason::NoMatchingRule)
    );
    let mut m = cn("*");
    m.issuer_sha256 = Some("not hex".into());
    assert!(load(vec![rule("bad", m)]).is_err());
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
    let mut r = rule("r", email("*@corp.example"));
    r.default_user = Some("u_{email_local}".into());
    let p = policy(vec![r]);
    for requested in ["", "iam", "IAM", "default", "-"] {
        let g = p
            .authorize(&alice(), &access("main"), requested, "dev")
            .expect("granted");
        assert_eq!(g.db_user, "u_alice.smith", "{requested:?}");
    }
}

#[test]
fn custom_placeholder_users_replace_the_defaults() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("{cn}".into());
    let p = Policy::new(&PolicyConfig {
        placeholder_users: vec!["auto".into()],
        rules: vec![r],
        ..PolicyConfig::default()
    })
    .expect("policy");
    assert_eq!(
        p.authorize(&alice(), &access("main"), "auto", "dev")
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
    let denial = p
        .authorize(&alice(), &access("main"), "iam", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoDefaultUser);
    assert!(denial.log_detail().contains("no default_user"));
}

#[test]
fn unfillable_default_user_is_denied() {
    let mut r = rule("r", email("*@corp.example"));
    r.default_user = Some("{email_local}".into());
    let p = policy(vec![r]);
    let mut no_local_part = alice();
    no_local_part.san_email = vec!["@corp.example".into()];
    let denial = p
        .authorize(&no_local_part, &access("main"), "", "dev")
        .unwrap_err();
    assert_eq!(denial.reason(), DenialReason::NoDefaultUser);
    assert!(
        denial.log_detail().contains("cannot be filled"),
        "{}",
        denial.log_detail()
    );
}

#[test]
fn unfillable_template_grants_nothing_but_others_still_apply() {
    let mut m = cn("*");
    m.san_email = Some("*@corp.example".into());
    let mut r = rule("r", m);
    r.users = vec!["{email_local}".into(), "{cn}".into()];
    let p = policy(vec![r]);
    let mut no_email = alice();
    no_email.san_email = vec!["@corp.example".into()];
    assert_eq!(granted_rule(&p, &no_email, "alice"), Ok("r".into()));
    let denial = p
        .authorize(&no_email, &access("main"), "alice.smith", "dev")
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
        let id = with_cn(hostile);
        assert_eq!(
            granted_rule(&p, &id, hostile),
            Err(DenialReason::UserNotGranted),
            "{hostile:?}"
        );
    }
    // The log line escapes control characters rather than printing them.
    let id = with_cn("a\nb");
    let detail = p
        .authorize(&id, &access("main"), "x", "dev")
        .unwrap_err()
        .log_detail();
    assert!(!detail.contains('\n'));
}

#[test]
fn literal_users_match_case_insensitively_and_nothing_else() {
    let mut r = rule("r", cn("*"));
    r.users = vec!["analyst".into()];
    let p = policy(vec![r]);
    assert_eq!(granted_rule(&p, &alice(), "analyst"), Ok("r".into()));
    assert_eq!(granted_rule(&p, &alice(), "Analyst"), Ok("r".into()));
    assert_eq!(
        granted_rule(&p, &alice(), "analyst2"),
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
        assert!(
            p.authorize(&alice(), &access("main"), "alice", ok).is_ok(),
            "{ok}"
        );
    }
    for denied in ["prod", "DEV", "xbi_sales"] {
        let d = p
            .authorize(&alice(), &access("main"), "alice", denied)
            .unwrap_err();
        assert_eq!(d.reason(), DenialReason::DatabaseNotGranted, "{denied}");
    }
}

#[test]
fn empty_database_defaults_to_the_granted_user() {
    let mut r = rule("r", cn("*"));
    r.default_user = Some("{cn}".into());
    r.databases = vec!["alice".into()];
    let p = policy(vec![r.clone()]);
    let g = p
        .authorize(&alice(), &access("main"), "iam", "")
        .expect("granted");
    assert_eq!(
        (g.db_user.as_str(), g.database.as_str()),
        ("alice", "alice")
    );

    r.databases = vec!["dev".into()];
    let p = policy(vec![r]);
    let d = p
        .authorize(&alice(), &access("main"), "iam", "")
        .unwrap_err();
    assert_eq!(d.reason(), DenialReason::DatabaseNotGranted);
    assert!(!d.client_message().contains("alice"));
}

#[test]
fn grant_carries_sorted_unique_groups_role_and_target() {
    let mut r = rule("r", cn("*"));
    r.groups = vec!["readers".into(), "bi".into(), "readers".into()];
    r.role_arn = Some(proxy_config::Arn::iam_role("arn:aws:iam::123456789012:role/bi").unwrap());
    let p = policy(vec![r]);
    let g = p
        .authorize(&alice(), &access("main"), "alice", "dev")
        .expect("granted");
    assert_eq!(
        g,
        Grant {
            rule: "r".into(),
            target: "main".into(),
            db_user: "alice".into(),
            database: "dev".into(),
            db_groups: vec!["bi".into(), "readers".into()],
            role_arn: Some(
                proxy_config::Arn::iam_role("arn:aws:iam::123456789012:role/bi").unwrap()
            ),
            role_session_name: None,
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
    let bob = with_cn("bob");

    let denials = [
        p.authorize(&bob, &access("main"), "bob", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), &access("staging"), "alice", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), &access("main"), "mallory", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), &access("main"), "iam", "allowed_db")
            .unwrap_err(),
        p.authorize(&alice(), &access("main"), "alice", "prod")
            .unwrap_err(),
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
    let d = p
        .authorize(&alice(), &access("main"), &long, "dev")
        .unwrap_err();
    assert!(d.client_message().len() < 300);
    let d = p
        .authorize(&alice(), &access("main"), "a\r\nFAKE LOG", "dev")
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
        PolicyError::InvalidPattern { rule, key: "match.san_uri", .. } if rule == "broken"
    ));
    assert!(err.to_string().contains("\"broken\""));

    let mut r = rule("broken_db", cn("*"));
    r.databases = vec!["[a-".into()];
    assert!(matches!(
        Policy::new(&PolicyConfig {
            rules: vec![r],
            ..PolicyConfig::default()
        }),
        Err(PolicyError::InvalidPattern {
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
    let g = p
        .authorize(&id, &access("main"), "iam", "dev")
        .expect("granted");
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
        .authorize(&id, &access("analytics"), "iam", "bi_sales")
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
        .authorize(&id, &access("analytics"), "admin", "bi_sales")
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
        password_method: None,
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
    let grant = p
        .authorize(&user, &access("main"), "etl_nightly", "dev")
        .unwrap();
    assert_eq!(
        (grant.rule.as_str(), grant.db_user.as_str()),
        ("etl", "etl_nightly")
    );
    let grant = p.authorize(&user, &access("main"), "iam", "dev").unwrap();
    assert_eq!(grant.db_user, "svc_etl_nightly");
    // The method does not matter to the rule; the name does.
    assert!(p
        .authorize(&local("etl_x", Trust), &access("main"), "etl_x", "dev")
        .is_ok());
    let denial = p
        .authorize(&local("bi", Password), &access("main"), "bi", "dev")
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
        p.authorize(&local("alice", Password), &access("main"), "alice", "dev")
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
        .authorize(&local("alice", Password), &access("main"), "alice", "dev")
        .is_err());
}

#[test]
fn a_local_user_rule_cannot_use_certificate_templates() {
    let mut r = rule("sidecar", local_user("sidecar"));
    r.users = vec!["{cn}".into()];
    let err = load(vec![r]).unwrap_err();
    assert!(err.to_string().contains("match.cn"), "{err}");
}
