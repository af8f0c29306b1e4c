use super::*;

fn all_in_scope() -> Scope {
    Scope {
        cn: true,
        san_uri: true,
        san_dns: true,
        san_email_pinned: true,
        san_email: true,
        local_user: true,
        captures: vec!["name".into()],
    }
}

fn binding() -> Binding {
    Binding {
        cn: Some("alice".into()),
        san_uri: Some("spiffe://corp.example/ns/bi/sa/reporting".into()),
        san_dns: Some("host1.corp.example".into()),
        san_email: Some("alice.smith@corp.example".into()),
        local_user: Some("etl".into()),
        captures: [("name".to_string(), "svc".to_string())].into(),
    }
}

fn parse(t: &str) -> Template {
    Template::parse(t, &all_in_scope()).expect("parse")
}

#[test]
fn expands_each_placeholder_from_the_binding() {
    let b = binding();
    assert_eq!(parse("{cn}").expand(&b), Ok("alice".into()));
    assert_eq!(
        parse("u_{email_local}").expand(&b),
        Ok("u_alice.smith".into())
    );
    assert_eq!(
        parse("{san_dns}").expand(&b),
        Ok("host1.corp.example".into())
    );
    assert_eq!(
        parse("svc_{san_uri_path}_ro").expand(&b),
        Ok("svc_reporting_ro".into())
    );
    assert_eq!(parse("{local_user}").expand(&b), Ok("etl".into()));
    assert_eq!(parse("bi_{name}").expand(&b), Ok("bi_svc".into()));
    assert_eq!(parse("literal").expand(&b), Ok("literal".into()));
    assert_eq!(parse("literal").literal(), Some("literal"));
    assert_eq!(parse("{cn}").literal(), None);
}

#[test]
fn a_placeholder_the_rule_does_not_match_on_is_refused_at_load() {
    let scope = Scope {
        san_uri: true,
        ..Scope::default()
    };
    for (template, key) in [
        ("{cn}", "match.cn"),
        ("{san_dns}", "match.san_dns"),
        ("{email_local}", "match.san_email"),
        ("{local_user}", "match.local_user"),
    ] {
        match Template::parse(template, &scope) {
            Err(TemplateSyntaxError::OutOfScope(reason)) => {
                assert!(reason.contains(key), "{template}: {reason}")
            }
            other => panic!("{template}: {other:?}"),
        }
    }
    assert!(Template::parse("{san_uri_path}", &scope).is_ok());
    let err = Template::parse("{nope}", &scope).unwrap_err();
    assert!(
        err.to_string().contains("unknown placeholder {nope}"),
        "{err}"
    );
}

#[test]
fn email_local_needs_a_pinned_domain() {
    let scope = Scope {
        san_email: true,
        san_email_pinned: false,
        ..Scope::default()
    };
    let err = Template::parse("{email_local}", &scope).unwrap_err();
    assert!(err.to_string().contains("must pin it"), "{err}");
}

#[test]
fn unfillable_placeholder_yields_nothing() {
    let mut b = binding();
    b.san_email = Some("@corp.example".into());
    b.cn = Some(String::new());
    assert_eq!(
        parse("{email_local}").expand(&b),
        Err(ExpandError::Unfillable(Placeholder::EmailLocal))
    );
    assert_eq!(
        parse("{cn}").expand(&b),
        Err(ExpandError::Unfillable(Placeholder::Cn))
    );
}

#[test]
fn hostile_values_yield_nothing() {
    let mut b = binding();
    let t = parse("{cn}");
    for cn in [
        "a:b",
        "x/../y",
        "IAM:admin",
        "public",
        "a b",
        "a\0b",
        "1abc",
    ] {
        b.cn = Some(cn.into());
        assert!(
            matches!(t.expand(&b), Err(ExpandError::InvalidName { .. })),
            "{cn:?} must not become a user"
        );
    }
    b.san_uri = Some("spiffe://corp.example/ns/bi/..".into());
    assert!(matches!(
        parse("{san_uri_path}").expand(&b),
        Err(ExpandError::InvalidName { .. })
    ));
}

#[test]
fn syntax_errors_and_never_valid_templates_are_rejected() {
    let scope = all_in_scope();
    let err = |t: &str| Template::parse(t, &scope).err();
    assert_eq!(err("{cn"), Some(TemplateSyntaxError::Unclosed));
    assert_eq!(err("a}"), Some(TemplateSyntaxError::Unmatched));
    assert_eq!(
        err("svc:{cn}"),
        Some(TemplateSyntaxError::NeverValid(InvalidName::BadChar(':')))
    );
    assert_eq!(
        err("1{cn}"),
        Some(TemplateSyntaxError::NeverValid(InvalidName::BadStart))
    );
    assert_eq!(
        err("public"),
        Some(TemplateSyntaxError::NeverValid(InvalidName::Reserved))
    );
    assert!(err(&format!("{}{{cn}}", "a".repeat(63))).is_none());
    assert_eq!(
        err(&format!("{}{{cn}}", "a".repeat(64))),
        Some(TemplateSyntaxError::NeverValid(InvalidName::TooLong))
    );
}
