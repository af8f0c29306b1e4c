use crate::root::Config;
use crate::tests::{analysts_rule, prod_target};
use std::path::Path;

const BASE: &str = concat!(
    r#"
[[listener]]
name = "main"
bind = "127.0.0.1:5439"
tls_cert = "server.pem"
tls_key = "server.key"
client_ca = "clients.pem"
"#,
    prod_target!(),
    analysts_rule!()
);

fn config(text: &str) -> Config {
    Config::from_toml(text, Path::new("proxy.toml"), Path::new("/etc")).unwrap()
}

fn restart_changes(old: &str, new: &str) -> Vec<String> {
    let (old, new) = (config(old), config(new));
    old.restart_only().changes(&new.restart_only())
}

fn kept_changes(old: &str, new: &str) -> Vec<String> {
    let (old, new) = (config(old), config(new));
    old.kept_until_restart().changes(&new.kept_until_restart())
}

#[test]
fn reloadable_settings_change_nothing_restart_only() {
    let new = BASE
        .replace("users = [\"{cn}\"]", "users = [\"{cn}\", \"reporting\"]")
        .replace("client_ca = \"clients.pem\"", "client_ca = \"other.pem\"\nmax_connections = 5")
        .replace("kind = \"provisioned\"", "kind = \"provisioned\"\nport = 5440\ndial = \"10.0.0.1\"")
        + "\n[limits]\nidle_timeout = \"1h\"\n[security]\nstrict_key_permissions = true\n[audit]\npath = \"/var/log/a.jsonl\"\n";
    assert_eq!(restart_changes(BASE, &new), Vec::<String>::new());
    assert_eq!(kept_changes(BASE, &new), Vec::<String>::new());
    assert_eq!(config(BASE).restart_only(), config(&new).restart_only());
}

#[test]
fn restart_only_changes_name_the_part_and_its_keys() {
    let new = BASE.replace("127.0.0.1:5439", "127.0.0.1:6543").replace(
        "kind = \"provisioned\"",
        "kind = \"provisioned\"\nregion = \"eu-west-1\"\nwith_iam = true",
    ) + "\n[db_credentials]\nrefresh_before = \"1m\"\n";
    assert_eq!(
        restart_changes(BASE, &new),
        [
            "[[listener]] \"main\": bind",
            "[[target]] \"prod\": region, with_iam",
            "[db_credentials]: refresh_before",
        ]
    );
}

#[test]
fn adding_renaming_or_reordering_entries_changes_the_set() {
    let renamed = BASE.replace("name = \"main\"", "name = \"primary\"");
    assert_eq!(
        restart_changes(BASE, &renamed),
        ["the set of [[listener]]s (added, removed, renamed or reordered)"]
    );
    let second = format!(
        "{BASE}\n[[target]]\nname = \"wg\"\nkind = \"serverless\"\n\
         host = \"wg.123456789012.us-east-1.redshift-serverless.amazonaws.com\"\n"
    )
    .replace(
        "bind = \"127.0.0.1:5439\"",
        "bind = \"127.0.0.1:5439\"\ntarget = \"prod\"",
    );
    assert_eq!(
        restart_changes(BASE, &second),
        ["the set of [[target]]s (added, removed, renamed or reordered)"]
    );
}

#[test]
fn aws_changes_name_roles_anywhere_keys() {
    let ra = |role: &str| {
        format!(
            "{BASE}\n[aws]\nsource = \"roles_anywhere\"\n[aws.roles_anywhere]\n\
             certificate = \"ra.pem\"\nprivate_key = \"ra.key\"\n\
             trust_anchor_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t\"\n\
             profile_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p\"\n\
             role_arn = \"arn:aws:iam::123456789012:role/{role}\"\n"
        )
    };
    assert_eq!(
        restart_changes(&ra("a"), &ra("b")),
        ["[aws]: roles_anywhere.role_arn"]
    );
    assert_eq!(
        restart_changes(BASE, &ra("a")),
        ["[aws]: source, roles_anywhere"]
    );
}

#[test]
fn log_admin_and_audit_queue_are_kept_until_restart() {
    let new = format!(
        "{BASE}\n[log]\nlevel = \"debug\"\n[admin]\nbind = \"127.0.0.1:9187\"\n\
         [audit]\nqueue_capacity = 10\n"
    );
    assert_eq!(
        kept_changes(BASE, &new),
        ["[log]: level", "[admin]: bind", "[audit]: queue_capacity"]
    );
    assert_eq!(restart_changes(BASE, &new), Vec::<String>::new());
}

#[test]
fn the_peering_id_is_restart_only_and_peers_and_proxy_protocol_reload() {
    let peered = format!("{BASE}\n[peering]\nid = 1\n");
    let more = peered.replace(
        "bind = \"127.0.0.1:5439\"",
        "bind = \"127.0.0.1:5439\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]",
    ) + "[[peering.peer]]\nid = 2\naddress = \"10.0.3.8:5439\"\n";
    assert_eq!(restart_changes(&peered, &more), Vec::<String>::new());
    let renumbered = peered.replace("id = 1", "id = 4");
    assert_eq!(restart_changes(&peered, &renumbered), ["[peering]: id"]);
}
