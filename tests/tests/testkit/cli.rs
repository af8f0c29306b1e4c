//! The command line as an operator meets it: `--help`, `check-config`, and `run` with a
//! broken configuration. (Configurations are literal TOML here: what the loader and its
//! messages make of a file is what these tests are about.)

use std::path::Path;
use std::process::Command;

/// The `redshift-iam-proxy` binary of this build, without the developer's `AWS_*`
/// environment.
fn proxy() -> Command {
    proxy_testkit::proxy::proxy_command()
}

/// A self-signed CA and a server certificate signed by it, written as PEM files.
fn write_pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "CLI Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

const CONFIG: &str = r#"
[[listener]]
bind = "127.0.0.1:0"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "ca.pem"

[[target]]
name = "prod"
kind = "provisioned"
host = "examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
ca_bundle = "ca.pem"

[[policy.rule]]
name = "everyone"
match = { cn = "*" }
targets = ["*"]
users = ["{cn}"]
databases = ["dev"]
"#;

#[test]
fn help_lists_every_subcommand() {
    let out = proxy().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["run", "check-config", "check", "--config", "--log-format"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn check_config_loads_every_file_and_summarises() {
    let (code, stdout, stderr) = check_config(CONFIG);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("target prod: examplecluster"), "{stdout}");
    assert!(stdout.contains("GetClusterCredentials"), "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn check_config_names_the_missing_file() {
    let (code, _, stderr) = check_config_with(CONFIG, |dir| {
        std::fs::remove_file(dir.join("server.key")).unwrap();
    });
    assert_eq!(code, Some(1));
    assert!(stderr.contains("server.key"), "{stderr}");
}

#[test]
fn invalid_configuration_names_file_and_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, CONFIG.replace("127.0.0.1:0", "nowhere")).unwrap();
    for command in ["check-config", "run"] {
        let out = proxy()
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(all.contains("proxy.toml"), "{command}: {all}");
        assert!(all.contains("listener[0].bind"), "{command}: {all}");
    }
}

#[cfg(unix)]
#[test]
fn strict_key_permissions_refuse_a_key_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let key = dir.path().join("server.key");
    let chmod = |mode| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let run = |command: &str, config: &str| {
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config).unwrap();
        let out = proxy()
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), all)
    };
    let strict = format!("[security]\nstrict_key_permissions = true\n{CONFIG}");
    chmod(0o644);

    // By default a readable key is loaded (the proxy warns when it loads it).
    let (code, all) = run("check-config", CONFIG);
    assert_eq!(code, Some(0), "{all}");

    // Strict: refused before anything is bound, naming the file and its mode only.
    let pem = std::fs::read_to_string(&key).unwrap();
    for command in ["check-config", "run"] {
        let (code, all) = run(command, &strict);
        assert_eq!(code, Some(1), "{command}: {all}");
        for part in [
            "listener[0].tls_key",
            &key.display().to_string(),
            "mode 0644",
            "strict_key_permissions",
        ] {
            assert!(
                all.contains(part),
                "{command}: {part:?} missing from: {all}"
            );
        }
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!all.contains(line), "{command}: key material in: {all}");
        }
    }

    chmod(0o600);
    let (code, all) = run("check-config", &strict);
    assert_eq!(code, Some(0), "{all}");
}

/// Runs `check-config` on `config` (next to the PKI files): exit code, stdout, stderr.
fn check_config(config: &str) -> (Option<i32>, String, String) {
    check_config_with(config, |_| {})
}

/// [`check_config`], after `prepare` has changed the directory of the PKI files.
fn check_config_with(config: &str, prepare: impl FnOnce(&Path)) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    prepare(dir.path());
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = proxy()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_every_problem_on_its_own_line() {
    let broken = CONFIG
        .replace("ca_bundle = \"ca.pem\"", "ca_bundle = \"ca.pem\"\nport = 0")
        .replace("databases = [\"dev\"]", "databases = []");
    let (code, _, stderr) = check_config(&broken);
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].ends_with("proxy.toml: target[0].port: must not be 0"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("proxy.toml: policy.rule[0].databases: must list at least one database"),
        "{stderr}"
    );
}

#[test]
fn check_config_compiles_the_policy() {
    // Templates are checked by the policy compiler, which knows what each rule matches.
    let (code, _, stderr) = check_config(&CONFIG.replace("{cn}", "{san_uri_path}"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("policy rule \"everyone\""), "{stderr}");
    assert!(stderr.contains("{san_uri_path}"), "{stderr}");
}

#[test]
fn check_config_prints_warnings_and_still_succeeds() {
    let serverless = r#"
[[target]]
name = "wg"
kind = "serverless"
host = "wg.123456789012.us-east-1.redshift-serverless.amazonaws.com"
"#;
    let config = format!("{CONFIG}{serverless}")
        .replace(
            "client_ca = \"ca.pem\"",
            "client_ca = \"ca.pem\"\ntarget = \"prod\"",
        )
        .replace(
            "databases = [\"dev\"]",
            "databases = [\"dev\"]\ngroups = [\"analysts\"]",
        );
    let (code, stdout, stderr) = check_config(&config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("configuration OK, 2 warning(s)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("proxy.toml: policy.rule[0].groups: groups [\"analysts\"] are ignored on target \"wg\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("policy.rule[0].users: sessions on target \"wg\" log in as IAMR:<role>"),
        "{stderr}"
    );
}
