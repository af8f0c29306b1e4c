//! The README stays true: its Quickstart is exactly the sandbox command plus the test command
//! `.ci/run` runs, its CLI reference is the binary's current `--help` output, and its example
//! configurations are accepted by the configuration loader.
//!
//! After changing the CLI, regenerate the README's CLI block with
//! `README_UPDATE=1 cargo test -p proxy-testkit --test testkit readme::`.

use std::path::{Path, PathBuf};
use std::process::Command;

const CLI_BEGIN: &str = "<!-- cli-help:begin";
const CLI_END: &str = "<!-- cli-help:end -->";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn readme() -> String {
    std::fs::read_to_string(workspace().join("README.md")).expect("README.md")
}

/// The fenced code blocks of `markdown`, as (info string, body).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((info.trim().to_string(), body.join("\n")));
        }
    }
    blocks
}

/// `heading`'s section: from its `## ` line to the next one.
fn section<'a>(markdown: &'a str, heading: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no `## {heading}` section"));
    let rest = &markdown[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Shell commands of a block: non-empty lines that are not comments.
fn commands(block: &str) -> Vec<String> {
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn quickstart_is_two_commands_the_sandbox_and_the_ci_test_command() {
    let readme = readme();
    let quickstart = section(&readme, "Quickstart");
    let blocks = code_blocks(quickstart);
    let (_, first) = blocks.first().expect("a code block in the Quickstart");
    let quickstart_commands = commands(first);
    assert_eq!(
        quickstart_commands.len(),
        2,
        "the Quickstart must be exactly two commands: {quickstart_commands:?}"
    );
    assert_eq!(quickstart_commands[0], "cargo run --release --bin sandbox");

    let ci = std::fs::read_to_string(workspace().join(".ci/run")).expect(".ci/run");
    let ci_tests: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert_eq!(
        ci_tests,
        vec![quickstart_commands[1].as_str()],
        ".ci/run must run exactly the README's test command"
    );

    // The one-liner after the two commands uses the sandbox's service file and service.
    let (_, one_liner) = blocks.get(1).expect("the psql one-liner");
    assert_eq!(
        commands(one_liner),
        vec![
            "PGSERVICEFILE=target/sandbox/pg_service.conf psql service=sandbox -c 'select current_user'"
        ]
    );
}

/// `--help` of the binary and of each subcommand, as the README shows it.
fn cli_reference() -> String {
    let binary = proxy_testkit::proxy::proxy_binary();
    let help = |args: &[&str]| -> String {
        let mut command = Command::new(&binary);
        command.args(args).arg("--help").env("COLUMNS", "100");
        // Values of these variables would appear in the help text.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REDSHIFT_IAM_PROXY_") {
                command.env_remove(key);
            }
        }
        let out = command.output().expect("run redshift-iam-proxy --help");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("UTF-8 help")
    };
    let top = help(&[]);
    // Subcommands: the names listed under `Commands:`, up to the blank line.
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|name| name != "help")
        .collect();
    assert!(!subcommands.is_empty(), "no subcommands in:\n{top}");
    let mut text = format!("```text\n$ redshift-iam-proxy --help\n{top}");
    for sub in &subcommands {
        text.push_str(&format!(
            "\n$ redshift-iam-proxy {sub} --help\n{}",
            help(&[sub])
        ));
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("```\n");
    text
}

#[test]
fn cli_reference_is_the_binarys_help_output() {
    let path = workspace().join("README.md");
    let readme = readme();
    let begin = readme.find(CLI_BEGIN).expect("CLI block start marker");
    let body_start = begin + readme[begin..].find('\n').expect("marker line") + 1;
    let end = readme.find(CLI_END).expect("CLI block end marker");
    let current = &readme[body_start..end];
    let expected = cli_reference();
    if current == expected {
        return;
    }
    if std::env::var_os("README_UPDATE").is_some() {
        let updated = format!("{}{expected}{}", &readme[..body_start], &readme[end..]);
        std::fs::write(&path, updated).expect("rewrite README.md");
        return;
    }
    panic!(
        "the README's CLI reference differs from `redshift-iam-proxy --help`; regenerate it \
         with `README_UPDATE=1 cargo test -p proxy-testkit --test testkit readme::`.\nExpected:\n{expected}"
    );
}

#[test]
fn example_configurations_are_valid() {
    let readme = readme();
    let configs: Vec<String> = code_blocks(&readme)
        .into_iter()
        .filter(|(info, body)| info == "toml" && body.contains("[[listener]]"))
        .map(|(_, body)| body)
        .collect();
    assert!(!configs.is_empty(), "no complete example configuration");
    for config in configs {
        if let Err(e) = proxy_config::Config::from_toml(
            &config,
            Path::new("README.md"),
            Path::new("/etc/redshift-iam-proxy"),
        ) {
            panic!("README example configuration is invalid: {e}\n{config}");
        }
    }
}
