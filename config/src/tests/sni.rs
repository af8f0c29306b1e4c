//! `[[listener.certificates]]` and `strict_sni`: parsing, path resolution and the errors
//! that name the key. (Whether a certificate covers its names needs the files: the proxy
//! checks that when it loads them.)

use super::{analysts_rule, invalid, parse};
use std::path::Path;

const BASE: &str = concat!(
    r#"
[[listener]]
bind = "127.0.0.1:5439"
target = "cluster"
tls_cert = "certs/server.pem"
tls_key = "certs/server.key"
client_ca = "/etc/pki/clients.pem"

[[listener.certificates]]
server_names = ["analytics.abc123.eu-west-1.redshift.amazonaws.com", "*.Corp.Example"]
tls_cert = "certs/analytics.pem"
tls_key = "certs/analytics.key"
target = "analytics"

[[target]]
name = "cluster"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"

[[target]]
name = "analytics"
kind = "provisioned"
host = "analytics.abc123.eu-west-1.redshift.amazonaws.com"
dial = "vpce-0a1b2c3d.vpce-svc-0123.eu-west-1.vpce.amazonaws.com"
"#,
    analysts_rule!()
);

#[test]
fn certificates_entries_parse_with_resolved_paths_and_strict_sni_off() {
    let c = parse(BASE).unwrap();
    let l = &c.listeners[0];
    assert!(!l.strict_sni);
    assert_eq!(l.certificates.len(), 1);
    let e = &l.certificates[0];
    assert_eq!(e.tls_cert, Path::new("/etc/certs/analytics.pem"));
    assert_eq!(e.tls_key, Path::new("/etc/certs/analytics.key"));
    assert_eq!(e.target.as_deref(), Some("analytics"));
    assert_eq!(e.server_names[1], "*.Corp.Example");
}

#[test]
fn bad_entries_are_refused_with_the_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "target = \"analytics\"",
            "target = \"nope\"",
            "listener[0].certificates[0].target",
            "no [[target]] named \"nope\"",
        ),
        (
            "\"*.Corp.Example\"",
            "\"db*.corp.example\"",
            "listener[0].certificates[0].server_names",
            "wildcard",
        ),
        (
            "\"*.Corp.Example\"",
            "\"*.*.corp.example\"",
            "listener[0].certificates[0].server_names",
            "wildcard",
        ),
        (
            "\"*.Corp.Example\"",
            "\"10.0.0.5\"",
            "listener[0].certificates[0].server_names",
            "IP address",
        ),
        (
            "\"*.Corp.Example\"",
            "\"bad_-.name-.example\"",
            "listener[0].certificates[0].server_names",
            "not a DNS name",
        ),
        (
            "server_names = [\"analytics.abc123.eu-west-1.redshift.amazonaws.com\", \"*.Corp.Example\"]",
            "server_names = []",
            "listener[0].certificates[0].server_names",
            "at least one",
        ),
        (
            "client_ca = \"/etc/pki/clients.pem\"",
            "client_ca = \"/etc/pki/clients.pem\"\nstrict_sni = true",
            "listener[0].strict_sni",
            "at least one",
        ),
    ];
    for (from, to, key, text) in cases {
        let edited = if from.starts_with("client_ca") {
            // strict_sni on a listener without entries.
            let head = BASE.split("[[listener.certificates]]").next().unwrap();
            let tail = &BASE[BASE.find("[[target]]").unwrap()..];
            format!("{head}{tail}").replacen(from, to, 1)
        } else {
            assert!(BASE.contains(from), "{from}");
            BASE.replacen(from, to, 1)
        };
        let (got, problem) = invalid(&edited);
        assert_eq!(&got, key, "{to}: {problem}");
        assert!(problem.contains(text), "{to}: {problem}");
    }
}

#[test]
fn a_name_may_be_served_by_one_entry_only() {
    let second = r#"
[[listener.certificates]]
server_names = ["*.corp.example"]
tls_cert = "certs/corp.pem"
tls_key = "certs/corp.key"
"#;
    let text = BASE.replacen("\n[[target]]", &format!("{second}\n[[target]]"), 1);
    let (key, problem) = invalid(&text);
    assert_eq!(key, "listener[0].certificates[1].server_names");
    assert!(
        problem.contains("also listed in listener[0].certificates[0]"),
        "{problem}"
    );
}

#[test]
fn entries_need_the_default_certificate() {
    // A loopback trust listener may run without TLS, but not with SNI entries and no
    // default certificate for the clients no entry serves.
    let text = BASE
        .replacen("tls_cert = \"certs/server.pem\"\n", "", 1)
        .replacen("tls_key = \"certs/server.key\"\n", "", 1)
        .replacen(
            "client_ca = \"/etc/pki/clients.pem\"",
            "client_auth = \"trust\"\ntrust_user = \"svc\"\nallow_plaintext = true",
            1,
        );
    let (key, problem) = invalid(&text);
    assert_eq!(key, "listener[0].tls_cert");
    assert!(problem.contains("default certificate"), "{problem}");
}
