//! Checks that tie sections together or guard against unsafe set-ups (issue 11): plain
//! HTTP to AWS, grants a target ignores, local-user rules that a trust listener could
//! satisfy, scopes naming nothing, and the limits of the newer keys. Every problem is
//! reported with its key; warnings do not stop the configuration from loading.

use super::{cluster_target, parse, people_rule, problems};
use std::path::Path;

/// `pencil`, hashed by PostgreSQL 15.
const VERIFIER: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

const BASE: &str = concat!(
    r#"
[[listener]]
name = "certs"
bind = "127.0.0.1:5439"
target = "cluster"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "clients.pem"
"#,
    cluster_target!(),
    r#"
[[target]]
name = "wg"
kind = "serverless"
host = "wg.123456789012.us-east-1.redshift-serverless.amazonaws.com"

[[target]]
name = "iam"
kind = "provisioned"
host = "iamcluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
with_iam = true
"#,
    people_rule!()
);

fn warnings(text: &str) -> Vec<String> {
    parse(text)
        .unwrap()
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(lines: &[String], key: &str, text: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("{key}: ")) && l.contains(text))
}

/// The key of each `key: message` line.
fn keys_of(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l.split(": ").next().unwrap())
        .collect()
}

#[test]
fn the_base_configuration_is_clean() {
    assert_eq!(warnings(BASE), Vec::<String>::new());
}

/// The base configuration with Roles Anywhere credentials and `extra` keys of its table.
fn with_roles_anywhere(extra: &str) -> String {
    format!(
        "{BASE}\n[aws]\nsource = \"roles_anywhere\"\n[aws.roles_anywhere]\n\
         certificate = \"ra.pem\"\nprivate_key = \"ra.key\"\n\
         trust_anchor_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t\"\n\
         profile_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p\"\n\
         role_arn = \"arn:aws:iam::123456789012:role/Proxy\"\n{extra}\n"
    )
}

#[test]
fn plain_http_to_aws_only_on_loopback() {
    let target = BASE.replace(
        "with_iam = true",
        "with_iam = true\naws_endpoint_url = \"http://redshift.internal:8080\"",
    );
    let found = problems(&target);
    assert!(
        has(
            &found,
            "target[2].aws_endpoint_url",
            "plain http:// only on loopback"
        ),
        "{found:?}"
    );
    assert!(found[0].contains("use https://"), "{found:?}");
    for ok in [
        "http://127.0.0.1:9000",
        "http://localhost:1",
        "http://[::1]:2",
        "https://x",
    ] {
        parse(&BASE.replace(
            "with_iam = true",
            &format!("with_iam = true\naws_endpoint_url = \"{ok}\""),
        ))
        .unwrap();
    }

    let found = problems(&with_roles_anywhere("endpoint_url = \"http://10.1.2.3\""));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        has(
            &found,
            "aws.roles_anywhere.endpoint_url",
            "plain http:// only on loopback"
        ),
        "{found:?}"
    );
}

#[test]
fn groups_on_a_target_that_ignores_them_are_a_problem_when_named() {
    let text = format!(
        "{BASE}\n[[policy.rule]]\nname = \"bi\"\nmatch = {{ san_dns = \"*.bi\" }}\n\
         targets = [\"wg\", \"iam\", \"cluster\"]\nusers = [\"bi\"]\ndatabases = [\"dev\"]\n\
         groups = [\"readers\"]\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        has(
            &found,
            "policy.rule[1].groups",
            "target \"wg\" is serverless"
        ),
        "{found:?}"
    );
    assert!(
        has(
            &found,
            "policy.rule[1].groups",
            "target \"iam\" uses GetClusterCredentialsWithIAM"
        ),
        "{found:?}"
    );
}

#[test]
fn groups_and_users_a_target_ignores_are_warnings_through_the_wildcard() {
    let text = BASE
        .replace("targets = [\"cluster\"]", "targets = [\"*\"]")
        .replace(
            "databases = [\"dev\"]",
            "databases = [\"dev\"]\ngroups = [\"analysts\"]",
        );
    let found = warnings(&text);
    assert!(
        has(
            &found,
            "policy.rule[0].groups",
            "groups [\"analysts\"] are ignored on target \"wg\" (granted through \"*\"), which is serverless"
        ),
        "{found:?}"
    );
    assert!(
        has(&found, "policy.rule[0].groups", "ignored on target \"iam\""),
        "{found:?}"
    );
    assert!(
        has(
            &found,
            "policy.rule[0].users",
            "sessions on target \"wg\" log in as IAMR:<role>, not as the database user this rule grants ({cn})"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "{found:?}");
}

#[test]
fn the_user_warning_names_the_role() {
    let text = format!(
        "{}\n[aws]\nsource = \"roles_anywhere\"\n[aws.roles_anywhere]\n\
         certificate = \"ra.pem\"\nprivate_key = \"ra.key\"\n\
         trust_anchor_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t\"\n\
         profile_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p\"\n\
         role_arn = \"arn:aws:iam::123456789012:role/Proxy\"\n",
        BASE.replace(
            "targets = [\"cluster\"]",
            "targets = [\"wg\"]\nrole_arn = \"arn:aws:iam::123456789012:role/team/Analysts\"",
        )
    );
    let found = warnings(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("log in as IAMR:Analysts"), "{found:?}");
}

fn with_local_listeners(rules: &str) -> String {
    format!(
        "{BASE}\n[[listener]]\nname = \"legacy\"\nbind = \"127.0.0.1:5440\"\ntarget = \"cluster\"\n\
         client_auth = \"password\"\nallow_plaintext = true\n\
         [[listener.users]]\nname = \"etl\"\npassword_verifier = \"{VERIFIER}\"\n\
         [[listener]]\nname = \"sidecar\"\nbind = \"unix:/run/rip/.s.PGSQL.5439\"\n\
         target = \"cluster\"\nclient_auth = \"trust\"\ntrust_user = \"etl\"\n{rules}"
    )
}

#[test]
fn local_user_rules_are_scoped_when_password_and_trust_listeners_coexist() {
    let rule = |scope: &str| {
        format!(
            "[[policy.rule]]\nname = \"etl\"\nmatch = {{ local_user = \"etl\"{scope} }}\n\
             targets = [\"cluster\"]\nusers = [\"etl\"]\ndatabases = [\"dev\"]\n"
        )
    };
    let found = problems(&with_local_listeners(&rule("")));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        has(
            &found,
            "policy.rule[1].match",
            "scope this local_user rule with match.auth or match.listener, or a trust \
             listener's user of that name would be admitted"
        ),
        "{found:?}"
    );
    parse(&with_local_listeners(&rule(", auth = [\"password\"]"))).unwrap();
    parse(&with_local_listeners(&rule(", listener = [\"legacy\"]"))).unwrap();
    // With only one kind of local listener, there is nothing to confuse.
    let password_only = with_local_listeners(&rule(""));
    let password_only = &password_only[..password_only
        .find("[[listener]]\nname = \"sidecar\"")
        .unwrap()];
    parse(&format!("{password_only}{}", rule(""))).unwrap();
}

#[test]
fn scopes_name_listeners_and_methods_that_exist() {
    let text = BASE.replace(
        "match = { cn = \"*\" }",
        "match = { cn = \"*\", listener = [\"certs\", \"nope\"], auth = [\"certificate\", \"trust\"] }",
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "policy.rule[0].match.listener: no [[listener]] named \"nope\"",
            "policy.rule[0].match.auth: no [[listener]] has client_auth = \"trust\"",
        ]
    );
}

#[test]
fn newer_keys_have_limits() {
    let text = format!(
        "{BASE}\n[limits]\nhandshake_timeout = \"0s\"\nmax_pending_per_source = 0\n\
         [db_credentials]\nfetches_per_identity_per_minute = 0\nmax_cached_per_identity = 0\n\
         failure_backoff_max = \"500ms\"\n\
         [security]\ncrl_reload_interval = \"100ms\"\npassword_failure_delay = \"10s\"\n\
         password_failure_delay_max = \"1s\"\npassword_lockout_after = 3\npassword_lockout = \"0s\"\n\
         [admin]\nbind = \"127.0.0.1:9187\"\nreload_token_file = \"token\"\nreload_token_env = \"TOKEN\"\n\
         allowed_hosts = [\"proxy.corp.example\", \"10.0.0.1\", \"proxy:9187\", \"https://x\", \"bad_-\"]\n"
    );
    let found = problems(&text);
    assert_eq!(
        keys_of(&found),
        [
            "db_credentials.fetches_per_identity_per_minute",
            "db_credentials.max_cached_per_identity",
            "db_credentials.failure_backoff_max",
            "admin.reload_token_env",
            "admin.allowed_hosts",
            "admin.allowed_hosts",
            "admin.allowed_hosts",
            "limits.handshake_timeout",
            "limits.max_pending_per_source",
            "security.crl_reload_interval",
            "security.password_failure_delay",
            "security.password_lockout",
        ],
        "{found:#?}"
    );
    assert!(found[4].contains("without a port"), "{found:?}");
    assert!(found[5].contains("without scheme"), "{found:?}");
    assert!(
        found[10].contains("10s is longer than password_failure_delay_max (1s)"),
        "{found:?}"
    );
    // Lockout off: no lockout duration needed.
    parse(&format!(
        "{BASE}\n[security]\npassword_lockout_after = 0\npassword_lockout = \"0s\"\n"
    ))
    .unwrap();
}

#[test]
fn admin_keys_without_an_admin_listener_are_refused() {
    let found = problems(&format!(
        "{BASE}\n[admin]\nreload_token_env = \"TOKEN\"\nallowed_hosts = [\"proxy.corp.example\"]\n"
    ));
    assert_eq!(
        found,
        [
            "admin.reload_token_env: only used with admin.bind",
            "admin.allowed_hosts: only used with admin.bind",
        ]
    );
    let c = parse(&format!(
        "{BASE}\n[admin]\nbind = \"unix:/run/rip/admin.sock\"\nreload_token_file = \"token\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.admin.reload_token_file.as_deref(),
        Some(Path::new("/etc/token")),
        "relative to the configuration's directory"
    );
}

#[test]
fn a_handshake_timeout_beyond_a_login_timeout_is_a_warning() {
    let text = BASE.replace(
        "client_ca = \"clients.pem\"",
        "client_ca = \"clients.pem\"\nlogin_timeout = \"2s\"",
    );
    assert_eq!(
        warnings(&text),
        [
            "limits.handshake_timeout: 5s is longer than listener \"certs\"'s login_timeout (2s), \
          which ends the handshake first there"
        ]
    );
}

#[test]
fn several_problems_in_several_sections_are_all_reported() {
    let text = format!(
        "{}\n[limits]\nmax_pending_per_source = 0\n",
        BASE.replace("name = \"people\"", "name = \"\"")
            .replace("targets = [\"cluster\"]", "targets = [\"wg\", \"gone\"]")
            .replace(
                "databases = [\"dev\"]",
                "databases = [\"dev\"]\ngroups = [\"g\"]"
            )
            .replace("host = \"wg.", "port = 0\nhost = \"wg.")
    );
    let found = problems(&text);
    assert_eq!(
        keys_of(&found),
        [
            "target[1].port",
            "policy.rule[0].name",
            "policy.rule[0].targets",
            "policy.rule[0].groups",
            "limits.max_pending_per_source",
        ],
        "{found:#?}"
    );
    let shown = parse(&text).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 5, "{shown}");
    assert!(
        shown.lines().all(|l| l.starts_with("/etc/proxy.toml: ")),
        "{shown}"
    );
}

#[test]
fn audit_rotation_needs_a_file_a_sane_size_and_a_file_to_keep() {
    let p = problems(&format!(
        "{BASE}\n[audit]\nmax_file_size = \"1KiB\"\nmax_files = 0\n"
    ));
    assert!(has(&p, "audit.max_file_size", "needs audit.path"), "{p:?}");
    assert!(has(&p, "audit.max_file_size", "at least 64KiB"), "{p:?}");
    assert!(has(&p, "audit.max_files", "at least 1"), "{p:?}");
    let err = parse(&format!(
        "{BASE}\n[audit]\npath = \"audit.jsonl\"\nmax_file_size = \"100 parsecs\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("audit.max_file_size"), "{err}");
    assert!(err.contains("unknown size unit"), "{err}");
    let ok = parse(&format!(
        "{BASE}\n[audit]\npath = \"audit.jsonl\"\nmax_file_size = \"100MiB\"\n"
    ))
    .unwrap();
    assert_eq!(ok.audit.max_file_size, Some(crate::ByteSize(100 << 20)));
}

#[test]
fn statement_audit_is_off_by_default_and_its_limits_are_checked() {
    let c = parse(BASE).unwrap();
    assert!(!c.audit.statements);
    assert_eq!(c.audit.statement_max_length, crate::ByteSize(4096));
    assert_eq!(c.audit.statement_queue_capacity, 8192);
    let p = problems(&format!(
        "{BASE}\n[audit]\nenabled = false\nstatements = true\n\
         statement_max_length = \"2MiB\"\nstatement_queue_capacity = 0\n"
    ));
    assert!(
        has(&p, "audit.statements", "audit.enabled = false"),
        "{p:?}"
    );
    assert!(
        has(&p, "audit.statement_max_length", "at most 1MiB"),
        "{p:?}"
    );
    assert!(
        has(&p, "audit.statement_queue_capacity", "greater than 0"),
        "{p:?}"
    );
    let ok = parse(&format!(
        "{BASE}\n[audit]\nstatements = true\nstatement_max_length = \"64KiB\"\n"
    ))
    .unwrap();
    assert!(ok.audit.statements);
    assert_eq!(ok.audit.statement_max_length, crate::ByteSize(64 << 10));
    // 64 KiB x 8,192 queued records: half a GiB of text in memory when the disk stalls.
    let warnings: Vec<String> = ok.warnings().iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("audit.statement_max_length") && w.contains("512 MiB")),
        "{warnings:?}"
    );
    assert!(parse(BASE).unwrap().warnings().is_empty());
    // Zero keeps no text at all: the records still carry the hash.
    let ok = parse(&format!(
        "{BASE}\n[audit]\nstatements = true\nstatement_max_length = 0\n"
    ))
    .unwrap();
    assert_eq!(ok.audit.statement_max_length, crate::ByteSize(0));
}

#[test]
fn resume_wait_has_a_per_kind_default_and_a_ceiling() {
    let c = parse(BASE).unwrap();
    let wait = |name: &str| {
        c.targets
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .resume_wait()
    };
    assert_eq!(wait("wg"), std::time::Duration::from_secs(30));
    assert_eq!(wait("cluster"), std::time::Duration::ZERO);
    let text = BASE.replace("with_iam = true", "with_iam = true\nresume_wait = \"10m\"");
    assert!(has(
        &problems(&text),
        "target[2].resume_wait",
        "at most 300s"
    ));
}

#[test]
fn role_session_names_follow_aws_and_templates_are_left_to_the_policy() {
    let ra = with_roles_anywhere;
    for ok in [
        "role_session_name = \"svc+proxy=1,a.b@c-d_e\"",
        "role_session_name = \"{cn}\"",
        "role_session_name = \"{cn} is checked against each rule\"",
        "max_sessions = 1",
    ] {
        parse(&ra(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, key) in [
        (
            "role_session_name = \"a\"",
            "aws.roles_anywhere.role_session_name",
        ),
        (
            "role_session_name = \"with space\"",
            "aws.roles_anywhere.role_session_name",
        ),
        ("max_sessions = 0", "aws.roles_anywhere.max_sessions"),
    ] {
        let found = problems(&ra(bad));
        assert!(has(&found, key, ""), "{bad}: {found:?}");
    }
}
