use super::*;

use crate::net::framing::message as msg;

#[test]
fn the_parameter_set_of_a_login_reply_keeps_order_and_the_last_value() {
    let reply = [
        msg(b'S', b"server_version\x008.0.2\0"),
        msg(b'N', b"SNOTICE\0Mhello\0\0"),
        msg(b'S', b"TimeZone\0UTC\0"),
        msg(b'S', b"server_version\x008.0.3\0"),
        msg(b'Z', b"I"),
    ]
    .concat();
    assert_eq!(
        parameters_of(&reply),
        [
            ("server_version".to_string(), "8.0.3".to_string()),
            ("TimeZone".to_string(), "UTC".to_string())
        ]
    );
    // A truncated or malformed reply yields what came before the damage.
    assert_eq!(parameters_of(&reply[..reply.len() - 3]).len(), 2);
    assert!(parameters_of(b"S\0\0\0\x02").is_empty());
}

#[test]
fn the_debug_form_of_a_key_names_no_identity_or_parameter() {
    let key = ReuseKey {
        identity: "cert\nCN=ca\nCN=alice\nab12".into(),
        db_user: "IAMA:alice".into(),
        database: "dev".into(),
        groups: vec!["analysts".into()],
        role: None,
        params: vec![("options".into(), "-c search_path=secret".into())],
    };
    let shown = format!("{key:?}");
    assert!(shown.contains("IAMA:alice"));
    assert!(
        !shown.contains("CN=alice") && !shown.contains("secret"),
        "{shown}"
    );
}

#[test]
fn one_spare_login_runs_per_key_at_a_time() {
    let target = proxy_config::TargetConfig::new(
        "cluster",
        proxy_config::TargetKind::Provisioned,
        "example.invalid",
    );
    let pool = SessionPool::new(ReuseSettings::from_config(&target));
    let key = |user: &str| ReuseKey {
        identity: "cert\nCN=ca\nCN=alice\nab12".into(),
        db_user: user.into(),
        database: "dev".into(),
        groups: Vec::new(),
        role: None,
        params: Vec::new(),
    };
    let first = pool
        .claim_spare(&key("IAMA:alice"))
        .expect("the first claim");
    assert!(pool.claim_spare(&key("IAMA:alice")).is_none());
    let other = pool.claim_spare(&key("IAMA:bob"));
    assert!(other.is_some(), "another key has its own spare");
    drop(first);
    assert!(pool.claim_spare(&key("IAMA:alice")).is_some());
}
