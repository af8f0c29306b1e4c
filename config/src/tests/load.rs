//! Loading and validating configuration files: defaults, path resolution, and errors that
//! name the file, the key and the problem.

use super::{all_problems, analysts_rule, invalid, parse, prod_target};
use crate::{AwsCredentialSource, Config, ConfigError, TargetConfig, TargetKind};
use std::path::Path;
use std::time::Duration;

const MINIMAL: &str = concat!(
    r#"
[[listener]]
bind = "127.0.0.1:5439"
tls_cert = "certs/server.pem"
tls_key = "certs/server.key"
client_ca = "/etc/pki/clients.pem"
"#,
    prod_target!(),
    analysts_rule!()
);

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    let t = &c.targets[0];
    assert_eq!(t.kind, TargetKind::Provisioned);
    assert_eq!(t.port, 5439);
    assert_eq!(t.credential_duration, Duration::from_secs(3600));
    assert_eq!(t.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.listeners[0].login_timeout, Duration::from_secs(30));
    assert!(!c.listeners[0].allow_options);
    assert_eq!(c.aws.source, AwsCredentialSource::Default);
    assert_eq!(c.aws.refresh_before(), Duration::from_secs(300));
    assert_eq!(c.db_credentials.refresh_before, Duration::from_secs(300));
    assert_eq!(c.policy.placeholder_users, ["iam", "default", "-"]);
    // The only target serves a listener that names none.
    assert_eq!(c.listener_target(&c.listeners[0]).unwrap().name, "prod");
}

#[test]
fn a_target_built_in_code_has_the_defaults_of_one_written_in_a_file() {
    let c = parse(MINIMAL).unwrap();
    let t = &c.targets[0];
    assert_eq!(
        *t,
        TargetConfig::new("prod", TargetKind::Provisioned, &t.host)
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.listeners[0].tls_cert.as_deref(),
        Some(Path::new("/etc/certs/server.pem"))
    );
    assert_eq!(
        c.listeners[0].client_ca.as_deref(),
        Some(Path::new("/etc/pki/clients.pem"))
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let text = MINIMAL.replace(
        "kind = \"provisioned\"",
        "kind = \"provisioned\"\nprot = 5439",
    );
    match parse(&text) {
        Err(e @ ConfigError::Parse { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("/etc/proxy.toml: "), "{msg}");
            assert!(msg.contains("prot"), "{msg}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn validation_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "kind = \"provisioned\"",
            "kind = \"serverless\"\nwith_iam = true",
            "target[0].with_iam",
        ),
        (
            "host = \"examplecluster",
            "credential_duration = \"2h\"\nhost = \"examplecluster",
            "target[0].credential_duration",
        ),
        (
            "users = [\"{cn}\"]",
            "users = [\"\"]",
            "policy.rule[0].users",
        ),
        (
            "users = [\"{cn}\"]",
            "users = [\"{cn}\"]\ndefault_user = \"\"",
            "policy.rule[0].default_user",
        ),
        (
            "targets = [\"*\"]",
            "targets = [\"staging\"]",
            "policy.rule[0].targets",
        ),
        (
            "match = { cn = \"*\" }",
            "match = {}",
            "policy.rule[0].match",
        ),
        (
            "users = [\"{cn}\"]",
            "users = [\"{cn}\"]\nrole_arn = \"arn:aws:iam::123456789012:role/x\"",
            "policy.rule[0].role_arn",
        ),
    ];
    for (from, to, key) in cases {
        assert!(MINIMAL.contains(from), "{from}");
        let (got, problem) = invalid(&MINIMAL.replacen(from, to, 1));
        assert_eq!(&got, key, "{to}: {problem}");
        assert!(!problem.is_empty());
    }
}

/// Values with a type of their own (addresses, ARNs) are parsed while the file is read: a
/// bad one is a parse error that names its key and says what was expected.
#[test]
fn values_that_do_not_parse_name_their_key() {
    let cases = [
        (
            MINIMAL.replace("bind = \"127.0.0.1:5439\"", "bind = \"localhost\""),
            "listener[0].bind: \"localhost\" is not an address such as 127.0.0.1:5439",
        ),
        (
            format!("{MINIMAL}\n[admin]\nbind = \"nowhere:1\"\n"),
            "admin.bind: \"nowhere:1\" is not an address",
        ),
        (
            MINIMAL.replace(
                "users = [\"{cn}\"]",
                "users = [\"{cn}\"]\nrole_arn = \"arn:aws:iam::123456789012:user/x\"",
            ),
            "policy.rule[0].role_arn: \"arn:aws:iam::123456789012:user/x\" is not a valid IAM role ARN",
        ),
    ];
    for (text, expected) in cases {
        match parse(&text) {
            Err(e @ ConfigError::Parse { .. }) => {
                let shown = e.to_string();
                assert!(shown.starts_with("/etc/proxy.toml: "), "{shown}");
                assert!(shown.contains(expected), "{shown}");
                assert!(shown.contains("(line "), "{shown}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn roles_anywhere_needs_its_table_and_valid_arns() {
    let (key, _) = invalid(&format!("{MINIMAL}\n[aws]\nsource = \"roles_anywhere\"\n"));
    assert_eq!(key, "aws.roles_anywhere");

    let ra = r#"
[aws]
source = "roles_anywhere"
[aws.roles_anywhere]
certificate = "ra.pem"
private_key = "ra.key"
trust_anchor_arn = "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/ta"
profile_arn = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p"
role_arn = "arn:aws:iam::123456789012:role/RedshiftAccess"
"#;
    let c = parse(&format!("{MINIMAL}{ra}")).unwrap();
    let r = c.aws.roles_anywhere.unwrap();
    assert_eq!(r.certificate, Path::new("/etc/ra.pem"));
    assert_eq!(r.session_duration, Duration::from_secs(3600));

    assert_eq!(r.trust_anchor_arn.region(), "eu-west-1");
    assert_eq!(r.region(), "eu-west-1");
    assert_eq!(r.role_arn.resource_name(), "RedshiftAccess");

    let bad = ra.replace("trust-anchor/ta", "profile/ta");
    match parse(&format!("{MINIMAL}{bad}")) {
        Err(ConfigError::Parse {
            key: Some(key),
            reason,
            ..
        }) => {
            assert_eq!(key, "aws.roles_anywhere.trust_anchor_arn");
            assert!(reason.contains("trust-anchor/"), "{reason}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn several_targets_need_each_listener_to_name_one() {
    let text = format!(
        "{MINIMAL}\n[[target]]\nname = \"serverless\"\nkind = \"serverless\"\nhost = \"wg.123456789012.us-east-1.redshift-serverless.amazonaws.com\"\n"
    );
    let (key, _) = invalid(&text);
    assert_eq!(key, "listener[0].target");
}

#[test]
fn unreadable_file_names_the_path() {
    let e = Config::load("/nonexistent/proxy.toml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/proxy.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn operations_tables_have_safe_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.admin.bind, None, "no admin listener unless asked for");
    assert!(c.audit.enabled);
    assert_eq!(c.audit.path, None, "audit goes to stdout by default");
    assert_eq!(c.limits.max_connections, Some(10_000));
    assert_eq!(
        c.listeners[0].max_connections, None,
        "listeners share [limits] max_connections_per_listener unless they set their own"
    );
    assert_eq!(
        c.limits.idle_timeout, None,
        "idle timeout is off by default"
    );
    assert_eq!(c.limits.tcp_keepalive, Duration::from_secs(60));
    assert_eq!(c.shutdown.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.shutdown.listener_close_delay, Duration::ZERO);
}

#[test]
fn a_remote_admin_listener_needs_allow_remote() {
    let (key, problem) = invalid(&format!("{MINIMAL}\n[admin]\nbind = \"0.0.0.0:9187\"\n"));
    assert_eq!(key, "admin.bind");
    assert!(problem.contains("allow_remote"), "{problem}");
    let c = parse(&format!(
        "{MINIMAL}\n[admin]\nbind = \"0.0.0.0:9187\"\nallow_remote = true\n"
    ))
    .unwrap();
    assert_eq!(c.admin.bind.unwrap().to_string(), "0.0.0.0:9187");
}

#[test]
fn zero_limits_are_refused_and_overrides_are_validated_too() {
    let (key, _) = invalid(&format!(
        "{MINIMAL}\n[limits]\nmax_connections_per_identity = 0\n"
    ));
    assert_eq!(key, "limits.max_connections_per_identity");
    let (key, _) = invalid(&MINIMAL.replace(
        "client_ca = \"/etc/pki/clients.pem\"",
        "client_ca = \"/etc/pki/clients.pem\"\nmax_connections = 0",
    ));
    assert_eq!(key, "listener[0].max_connections");
    let (key, _) = invalid(&format!("{MINIMAL}\n[shutdown]\ndrain_timeout = \"0s\"\n"));
    assert_eq!(key, "shutdown.drain_timeout");

    let overrides = crate::Overrides {
        admin_bind: Some("10.0.0.1:9187".parse().unwrap()),
        audit_path: Some("audit.jsonl".into()),
        peering_id: Some(3),
    };
    let err = Config::from_toml_with_overrides(
        MINIMAL,
        Path::new("/etc/proxy.toml"),
        Path::new("/etc"),
        &overrides,
    )
    .unwrap_err();
    assert!(err.to_string().contains("admin.bind"), "{err}");
    let overrides = crate::Overrides {
        admin_bind: Some("127.0.0.1:9187".parse().unwrap()),
        ..overrides
    };
    let c = Config::from_toml_with_overrides(
        MINIMAL,
        Path::new("/etc/proxy.toml"),
        Path::new("/etc"),
        &overrides,
    )
    .unwrap();
    assert_eq!(c.audit.path.as_deref(), Some(Path::new("audit.jsonl")));
    assert_eq!(c.peering.id, Some(3));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = MINIMAL
        .replace(
            "client_ca = \"/etc/pki/clients.pem\"",
            "client_ca = \"/etc/pki/clients.pem\"\nmax_connections = 0\nlogin_timeout = \"0s\"",
        )
        .replace("kind = \"provisioned\"", "kind = \"provisioned\"\nport = 0")
        .replace("targets = [\"*\"]", "targets = [\"staging\"]")
        .replace("databases = [\"dev\"]", "databases = []")
        + "\n[limits]\nmax_handshakes = 0\n[shutdown]\ndrain_timeout = \"0s\"\n";
    let keys: Vec<String> = all_problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "target[0].port",
            "listener[0].max_connections",
            "listener[0].login_timeout",
            "policy.rule[0].databases",
            "policy.rule[0].targets",
            "limits.max_handshakes",
            "shutdown.drain_timeout",
        ]
    );
    // Displayed one per line, each naming the file and the key.
    let shown = parse(&text).unwrap_err().to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), keys.len(), "{shown}");
    assert_eq!(lines[0], "/etc/proxy.toml: target[0].port: must not be 0");
    assert_eq!(
        lines[4],
        "/etc/proxy.toml: policy.rule[0].targets: no [[target]] named \"staging\""
    );
}

#[test]
fn problems_of_several_entries_name_each_entry() {
    let second = r#"
[[target]]
name = "prod"
kind = "serverless"
host = ""
credential_duration = "10m"
"#;
    let text = format!("{MINIMAL}{second}");
    let found = all_problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "target[1].host",
            "target[1].credential_duration",
            "target[1].name",
            "listener[0].target",
        ]
    );
    assert!(found[1].message.contains("got 600s"), "{found:?}");
    assert!(
        found[2].message.contains("duplicate target name \"prod\""),
        "{found:?}"
    );
}

#[test]
fn odd_text_is_an_error_not_a_panic() {
    for text in [
        "",
        "ü = 1",
        "[[listener]]\nbind = \"ü:1\"\n",
        "[[listener]]\nbind = \"unix:\"\n",
        "[aws.roles_anywhere]\nrole_arn = \"arn:ü:iam::1:role/ü\"\n",
        "[[policy.rule]]\nrole_arn = \"arn:aws:iam::123456789012:role/\u{1F600}\"\n",
        "[admin]\nbind = 5\n",
        "[[target]]\nname = \"t\"\nkind = \"provisioned\"\nhost = \"h\"\naws_endpoint_url = \"http://[::1\"\n",
    ] {
        assert!(parse(text).is_err(), "{text:?}");
    }
}
