use super::*;

const ANCHOR: &str =
    "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0f5c7a1e-1111-2222-3333-444455556666";

#[test]
fn the_kinds_the_proxy_uses() {
    assert!(Arn::iam_role("arn:aws:iam::123456789012:role/Redshift").is_ok());
    let anchor = Arn::trust_anchor(ANCHOR).unwrap();
    assert_eq!(anchor.region(), "eu-west-1");
    assert_eq!(anchor.resource_type(), "trust-anchor");
    assert_eq!(anchor.resource_id(), "0f5c7a1e-1111-2222-3333-444455556666");
    assert!(
        Arn::roles_anywhere_profile("arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p")
            .is_ok()
    );
    let gov = "arn:aws-us-gov:rolesanywhere:us-gov-west-1:123456789012:trust-anchor/x";
    assert_eq!(Arn::trust_anchor(gov).unwrap().region(), "us-gov-west-1");
}

#[test]
fn wrong_shapes_are_refused() {
    for bad in [
        "",
        "arn:aws:rolesanywhere::123456789012:trust-anchor/x",
        "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/x",
        "arn:aws:iam::123456789012:role/x",
        "arn:aws:rolesanywhere:eu-west-1:12345:trust-anchor/x",
        "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/",
        "aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/x",
        "arn:other:rolesanywhere:eu-west-1:123456789012:trust-anchor/x",
    ] {
        assert!(Arn::trust_anchor(bad).is_err(), "{bad:?}");
    }
    assert!(Arn::iam_role("arn:aws:iam::12345:role/x").is_err());
    assert!(Arn::roles_anywhere_profile("arn:aws:rolesanywhere::123456789012:profile/x").is_err());
    assert!(Arn::roles_anywhere_profile(ANCHOR).is_err());
}

#[test]
fn role_arns_with_paths_are_accepted() {
    let text = "arn:aws:iam::123456789012:role/team/analyst";
    let arn = Arn::iam_role(text).unwrap();
    assert_eq!(arn.partition(), "aws");
    assert_eq!(arn.service(), "iam");
    assert_eq!(arn.region(), "");
    assert_eq!(arn.account(), "123456789012");
    assert_eq!(arn.resource(), "role/team/analyst");
    assert_eq!(arn.resource_id(), "team/analyst");
    assert_eq!(arn.resource_name(), "analyst");
    assert_eq!(arn.to_string(), text);
}

#[test]
fn errors_say_what_is_wrong_and_show_the_form() {
    let err = Arn::iam_role("arn:aws:iam::123456789012:user/alice").unwrap_err();
    assert_eq!(err.reason, "wrong resource type");
    let text = err.to_string();
    assert!(text.contains("IAM role"), "{text}");
    assert!(
        text.contains("arn:aws:iam::123456789012:role/NAME"),
        "{text}"
    );
    let err = Arn::iam_role("arn:aws:sts::123456789012:role/x").unwrap_err();
    assert_eq!(err.reason, "wrong service");
    let err = Arn::trust_anchor("not an arn").unwrap_err();
    assert!(err.to_string().contains("trust-anchor/"), "{err}");
}

#[test]
fn any_shape_parses_with_from_str() {
    let arn: Arn = "arn:aws:s3:::bucket".parse().unwrap();
    assert_eq!((arn.service(), arn.account()), ("s3", ""));
    assert_eq!(arn.resource_type(), "bucket");
    assert_eq!(arn.resource_id(), "");
    assert!("arn:aws".parse::<Arn>().is_err());
}

#[test]
fn an_arn_is_small_and_overlong_ones_are_refused() {
    assert!(std::mem::size_of::<Arn>() <= 32);
    let long = format!("arn:aws:iam::123456789012:role/{}", "r".repeat(3000));
    assert!(Arn::iam_role(&long).is_err());
}
