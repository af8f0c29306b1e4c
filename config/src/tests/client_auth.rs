//! `client_auth`, `[[listener.users]]`, `trust_user`, `allow_plaintext` and Unix-socket
//! listeners: what loads, and what is refused with which key and message.

use super::{invalid as first_problem, parse as parse_file, prod_target};
use crate::{ClientAuthMode, Config, ConfigError, ListenAddress, PasswordMethod};

/// `pencil`, hashed by PostgreSQL 15.
const VERIFIER: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

const REST: &str = concat!(
    prod_target!(),
    r#"
[[policy.rule]]
name = "etl"
match = { local_user = "etl*" }
targets = ["*"]
users = ["{local_user}"]
databases = ["dev"]
"#
);

/// The file with `listener` as its one listener.
fn with_listener(listener: &str) -> String {
    format!("[[listener]]\n{listener}\n{REST}")
}

fn parse(listener: &str) -> Result<Config, ConfigError> {
    parse_file(&with_listener(listener))
}

/// The first problem of the configuration with `listener`, as (key, message).
fn invalid(listener: &str) -> (String, String) {
    first_problem(&with_listener(listener))
}

fn users() -> String {
    format!("[[listener.users]]\nname = \"etl\"\npassword_verifier = \"{VERIFIER}\"\n")
}

#[test]
fn a_password_listener_over_tls_loads_and_requests_no_client_ca() {
    let c = parse(&format!(
        "name = \"legacy\"\nbind = \"0.0.0.0:5440\"\nclient_auth = \"password\"\n\
         tls_cert = \"tls/proxy.pem\"\ntls_key = \"tls/proxy.key\"\n{}",
        users()
    ))
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.client_auth, ClientAuthMode::Password);
    assert_eq!(l.users[0].name, "etl");
    assert_eq!(
        l.users[0].password_verifier.parse().unwrap().method(),
        PasswordMethod::ScramSha256
    );
    assert!(!l.accepts_plaintext());
    assert_eq!(l.client_ca, None);
    // The verifier stays out of Debug output.
    assert!(!format!("{c:?}").contains("NxzLL"));
}

#[test]
fn the_old_key_scram_verifier_still_reads() {
    let c = parse(&format!(
        "name = \"legacy\"\nbind = \"0.0.0.0:5440\"\nclient_auth = \"password\"\n\
         tls_cert = \"tls/proxy.pem\"\ntls_key = \"tls/proxy.key\"\n\
         [[listener.users]]\nname = \"etl\"\nscram_verifier = \"{VERIFIER}\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.listeners[0].users[0]
            .password_verifier
            .parse()
            .unwrap()
            .method(),
        PasswordMethod::ScramSha256
    );
}

#[test]
fn md5_and_sha256_verifiers_are_accepted_per_user() {
    let md5 = format!("md5{}", "0a".repeat(16));
    let sha = format!("sha256|{}|{}", "1b".repeat(32), "2c".repeat(32));
    let c = parse(&format!(
        "name = \"legacy\"\nbind = \"0.0.0.0:5440\"\nclient_auth = \"password\"\n\
         tls_cert = \"tls/proxy.pem\"\ntls_key = \"tls/proxy.key\"\n\
         [[listener.users]]\nname = \"bi\"\npassword_verifier = \"{md5}\"\n\
         [[listener.users]]\nname = \"etl\"\npassword_verifier = \"{sha}\"\n"
    ))
    .unwrap();
    let methods: Vec<_> = c.listeners[0]
        .users
        .iter()
        .map(|u| u.password_verifier.parse().unwrap().method())
        .collect();
    assert_eq!(
        methods,
        [PasswordMethod::Md5, PasswordMethod::RedshiftSha256]
    );
}

#[test]
fn certificate_mode_stays_the_default_and_needs_its_files() {
    let (key, problem) =
        invalid("bind = \"0.0.0.0:5439\"\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"");
    assert_eq!(key, "listener[0].client_ca");
    assert!(
        problem.contains("required for client_auth = \"certificate\""),
        "{problem}"
    );
}

#[test]
fn trust_over_a_unix_socket_loads() {
    let c = parse(
        "name = \"sidecar\"\nbind = \"unix:/run/rip/.s.PGSQL.5439\"\nclient_auth = \"trust\"\n\
         trust_user = \"etl_sidecar\"\nunix_socket_mode = 0o600",
    )
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.bind, ListenAddress::Unix("/run/rip/.s.PGSQL.5439".into()));
    assert_eq!(l.display_name(), "sidecar");
    assert_eq!(l.unix_socket_mode(), 0o600);
    assert!(l.accepts_plaintext());
    assert!(l.is_local_only());
}

#[test]
fn trust_is_refused_beyond_loopback_naming_the_listener() {
    let (key, problem) = invalid(
        "name = \"oops\"\nbind = \"0.0.0.0:5439\"\nclient_auth = \"trust\"\ntrust_user = \"t\"\n\
         allow_plaintext = true",
    );
    assert_eq!(key, "listener[0].client_auth");
    assert!(problem.contains("\"oops\""), "{problem}");
    assert!(problem.contains("0.0.0.0:5439"), "{problem}");
    assert!(problem.contains("loopback"), "{problem}");
    // Loopback is fine, on IPv4 and IPv6.
    for bind in ["127.0.0.1:5439", "[::1]:5439"] {
        parse(&format!(
            "bind = \"{bind}\"\nclient_auth = \"trust\"\ntrust_user = \"t\"\nallow_plaintext = true"
        ))
        .unwrap();
    }
}

#[test]
fn plaintext_is_refused_beyond_loopback() {
    let (key, problem) = invalid(&format!(
        "name = \"legacy\"\nbind = \"10.0.0.5:5440\"\nclient_auth = \"password\"\n\
         allow_plaintext = true\n{}",
        users()
    ));
    assert_eq!(key, "listener[0].allow_plaintext");
    assert!(problem.contains("loopback"), "{problem}");
    assert!(problem.contains("\"legacy\""), "{problem}");
    // On loopback a password listener may go without TLS altogether.
    let c = parse(&format!(
        "bind = \"127.0.0.1:5440\"\nclient_auth = \"password\"\nallow_plaintext = true\n{}",
        users()
    ))
    .unwrap();
    assert!(c.listeners[0].accepts_plaintext());
}

#[test]
fn certificates_cannot_be_used_over_a_unix_socket() {
    let (key, problem) =
        invalid("name = \"sock\"\nbind = \"unix:/run/rip/.s.PGSQL.5439\"\nclient_ca = \"ca.pem\"");
    // client_ca is fine for certificate mode; the socket is what cannot work.
    assert_eq!(key, "listener[0].client_auth");
    assert!(problem.contains("Unix socket"), "{problem}");
    assert!(problem.contains("cannot carry TLS"), "{problem}");
}

#[test]
fn a_password_listener_on_a_unix_socket_must_allow_plaintext_and_has_no_tls() {
    let base = format!(
        "bind = \"unix:/run/rip/.s.PGSQL.5439\"\nclient_auth = \"password\"\n{}",
        users()
    );
    let (key, problem) = invalid(&base);
    assert_eq!(key, "listener[0].allow_plaintext");
    assert!(problem.contains("never carries TLS"), "{problem}");
    parse(&format!("allow_plaintext = true\n{base}")).unwrap();
    let (key, problem) = invalid(&format!(
        "allow_plaintext = true\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n{base}"
    ));
    assert_eq!(key, "listener[0].tls_cert");
    assert!(problem.contains("never carries TLS"), "{problem}");
}

#[test]
fn a_password_listener_needs_tls_or_explicit_plaintext() {
    let (key, problem) = invalid(&format!(
        "bind = \"127.0.0.1:5440\"\nclient_auth = \"password\"\n{}",
        users()
    ));
    assert_eq!(key, "listener[0].tls_cert");
    assert!(problem.contains("allow_plaintext"), "{problem}");
}

#[test]
fn keys_of_other_modes_are_refused() {
    let tls = "tls_cert = \"a.pem\"\ntls_key = \"a.key\"\n";
    let cases = [
        (
            format!("bind = \"0.0.0.0:5439\"\n{tls}client_ca = \"ca.pem\"\ntrust_user = \"t\""),
            "listener[0].trust_user",
        ),
        (
            format!("bind = \"0.0.0.0:5439\"\n{tls}client_ca = \"ca.pem\"\n{}", users()),
            "listener[0].users",
        ),
        (
            format!(
                "bind = \"0.0.0.0:5439\"\n{tls}client_ca = \"ca.pem\"\nallow_plaintext = true"
            ),
            "listener[0].allow_plaintext",
        ),
        (
            format!(
                "bind = \"0.0.0.0:5439\"\n{tls}client_auth = \"password\"\nclient_ca = \"ca.pem\"\n{}",
                users()
            ),
            "listener[0].client_ca",
        ),
        (
            format!("bind = \"0.0.0.0:5439\"\n{tls}client_ca = \"ca.pem\"\nunix_socket_mode = 0o600"),
            "listener[0].unix_socket_mode",
        ),
    ];
    for (listener, expected) in cases {
        assert_eq!(invalid(&listener).0, expected, "{listener}");
    }
}

#[test]
fn password_users_must_exist_be_unique_and_printable() {
    let tls = "bind = \"0.0.0.0:5440\"\nclient_auth = \"password\"\ntls_cert = \"a.pem\"\ntls_key = \"a.key\"\n";
    assert_eq!(invalid(tls).0, "listener[0].users");
    let (key, problem) = invalid(&format!("{tls}{}{}", users(), users()));
    assert_eq!(key, "listener[0].users[1].name");
    assert!(problem.contains("duplicate"), "{problem}");
    let (key, _) = invalid(&format!(
        "{tls}[[listener.users]]\nname = \"a\\u0007b\"\npassword_verifier = \"{VERIFIER}\"\n"
    ));
    assert_eq!(key, "listener[0].users[0].name");
}

#[test]
fn a_bad_verifier_is_refused_without_being_echoed() {
    let secret_ish = "SCRAM-SHA-256$4096:c2FsdA==$bm90MzJieXRlcw==:bm90MzJieXRlcw==";
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:5440\"\nclient_auth = \"password\"\nallow_plaintext = true\n\
         [[listener.users]]\nname = \"etl\"\npassword_verifier = \"{secret_ish}\"\n{REST}"
    );
    let err = parse_file(&text).unwrap_err().to_string();
    assert!(err.contains("StoredKey is not 32 bytes long"), "{err}");
    assert!(
        err.contains("listener[0].users[0].password_verifier"),
        "{err}"
    );
    assert!(!err.contains("bm90MzJieXRlcw"), "{err}");
}

#[test]
fn unix_socket_paths_are_checked() {
    let trust = "client_auth = \"trust\"\ntrust_user = \"t\"\n";
    let (key, problem) = invalid(&format!("bind = \"unix:relative/.s.PGSQL.5439\"\n{trust}"));
    assert_eq!(key, "listener[0].bind");
    assert!(problem.contains("absolute"), "{problem}");
    let long = format!("/{}/.s.PGSQL.5439", "d".repeat(120));
    let (key, problem) = invalid(&format!("bind = \"unix:{long}\"\n{trust}"));
    assert_eq!(key, "listener[0].bind");
    assert!(problem.contains("limit"), "{problem}");
    let (_, problem) = invalid(&format!(
        "bind = \"unix:/run/a\"\n{trust}unix_socket_mode = 0o1777"
    ));
    assert!(problem.contains("permission mode"), "{problem}");
}

#[test]
fn a_rule_cannot_mix_certificate_fields_and_local_user() {
    let text = format!(
        "[[listener]]\nbind = \"unix:/run/a\"\nclient_auth = \"trust\"\ntrust_user = \"t\"\n{REST}\n\
         [[policy.rule]]\nname = \"mixed\"\nmatch = {{ cn = \"alice\", local_user = \"alice\" }}\n\
         targets = [\"*\"]\nusers = [\"alice\"]\ndatabases = [\"dev\"]\n"
    );
    let (key, message) = first_problem(&text);
    assert_eq!(key, "policy.rule[1].match");
    assert!(
        message.contains("local_user cannot be combined"),
        "{message}"
    );
}
