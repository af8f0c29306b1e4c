//! Statement audit (issue 17): with `[audit] statements = true`, every statement a client
//! sends is one audit record carrying the person behind the session, even on a serverless
//! target where every session logs in as the same IAM role; bound parameter values never
//! reach the audit file.

use proxy_testkit::adversary::{message, raw_login, read_reply, Reply};
use proxy_testkit::config::{ProxyConfig, Rule};
use proxy_testkit::observe::eventually;
use proxy_testkit::pki::ClientCert;
use proxy_testkit::world::{TestProxy, World};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The world's configuration with alice's listener on the serverless target and
/// statement records on.
fn serverless_with_statements(world: &World) -> ProxyConfig {
    world
        .config()
        .set("audit", "statements", true)
        .edit_listener("main", |l| l.target("serverless"))
        .rule(
            Rule::new("serverless")
                .matching("cn", "*")
                .targets(["serverless"])
                .users(["{cn}"])
                .databases(["dev"]),
        )
}

/// The statement records of the audit file once `done` holds for them (10 s at most).
async fn statements_when(h: &TestProxy, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let read = || {
        std::fs::read_to_string(&h.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("each audit line is JSON"))
            .filter(|r| r["record"] == "statement")
            .collect::<Vec<Value>>()
    };
    eventually(Duration::from_secs(10), || async {
        let records = read();
        done(&records).then_some(records)
    })
    .await
    .unwrap_or_else(read)
}

fn assert_identity(record: &Value, alice: &ClientCert) {
    let subject = record["client_certificate"]["subject"].as_str().unwrap();
    assert!(subject.contains(&alice.common_name), "{record}");
    assert_eq!(
        record["client_certificate"]["fingerprint_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64,
        "{record}"
    );
    // Serverless logs everyone in as the role: only the record says who it was.
    assert!(
        record["db_user"].as_str().unwrap().starts_with("IAMR:"),
        "{record}"
    );
    assert_eq!(record["target"], "serverless", "{record}");
    assert_eq!(record["database"], "dev", "{record}");
    assert_eq!(record["session_id"].as_str().unwrap().len(), 32, "{record}");
}

/// pgbench `-M extended` running `script` as `alice`, `transactions` times.
async fn pgbench(world: &World, h: &TestProxy, alice: &ClientCert, script: &str) {
    let file = h.audit_path.with_file_name("statement-audit.pgbench");
    std::fs::write(&file, script).unwrap();
    // psql's libpq environment (verify-full, alice's certificate), for pgbench.
    let env = h.psql(alice).user(&alice.common_name).command("");
    let mut command = tokio::process::Command::new(world.pg.bindir().join("pgbench"));
    for (key, value) in env.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command
        .args(["-n", "-M", "extended", "-c", "1", "-t", "3", "-f"])
        .arg(&file)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("pgbench in time")
        .expect("run pgbench");
    assert!(
        out.status.success(),
        "pgbench: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_and_extended_statements_are_recorded_with_the_identity_never_the_values() {
    let world = World::start().await;
    let h = world.proxy(serverless_with_statements(&world)).await;
    let alice = world.client("alice");

    let client = h.login(&alice).await.expect("login");
    client
        .simple_query("select 'statement audit' as simple")
        .await
        .unwrap();
    drop(client);
    pgbench(&world, &h, &alice, "\\set v 424242\nselect :v as bound;\n").await;

    let records = statements_when(&h, |r| {
        r.iter()
            .filter(|r| r["statement"] == "execute" && r["parameters"] == 1)
            .count()
            >= 3
    })
    .await;
    let query = records
        .iter()
        .find(|r| r["text"] == "select 'statement audit' as simple")
        .unwrap_or_else(|| panic!("no simple query record in {records:#?}"));
    assert_eq!(query["statement"], "query");
    assert_eq!(query["truncated"], false);
    let sha = hex::encode(Sha256::digest(b"select 'statement audit' as simple"));
    assert_eq!(query["sha256"], sha);
    assert_identity(query, &alice);

    // pgbench turns `:v` into `$1` and sends 424242 as the bound value.
    let parse = records
        .iter()
        .find(|r| r["statement"] == "parse" && r["text"] == "select $1 as bound;")
        .unwrap_or_else(|| panic!("no parse record in {records:#?}"));
    assert_identity(parse, &alice);
    let executes: Vec<&Value> = records
        .iter()
        .filter(|r| r["statement"] == "execute" && r["sha256"] == parse["sha256"])
        .collect();
    assert_eq!(executes.len(), 3, "{records:#?}");
    for execute in executes {
        assert_identity(execute, &alice);
        assert_eq!(execute["statement_name"], parse["statement_name"]);
        assert_eq!(execute["parameters"], 1);
    }

    let file = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(
        !file.contains("424242"),
        "a bound value reached the audit file"
    );
    let metrics = h.metrics();
    assert!(
        metrics.contains("redshift_iam_proxy_audit_statements_dropped_total 0"),
        "{metrics}"
    );
    assert!(
        h.metric("redshift_iam_proxy_audit_statements_written_total")
            .unwrap()
            >= 5.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_and_a_10mb_query_are_served_and_recorded_cut_short() {
    let world = World::start().await;
    let h = world.proxy(serverless_with_statements(&world)).await;
    let alice = world.client("alice");
    let mut s = raw_login(&h, &alice, &alice.common_name, "dev").await;

    let huge = format!("select length('{}')", "x".repeat(10 << 20));
    let invalid = b"select 'caf\xe9 \xff'";
    for sql in [&invalid[..], huge.as_bytes()] {
        s.write_all(&message(b'Q', &[sql, b"\0"].concat()))
            .await
            .unwrap();
        s.flush().await.unwrap();
        // An ErrorResponse (PostgreSQL refuses the bytes) or a row, then ReadyForQuery.
        loop {
            match read_reply(&mut s).await {
                Reply::Message { tag: b'Z', .. } => break,
                Reply::Closed => panic!("the session ended"),
                _ => {}
            }
        }
    }
    drop(s);

    let records = statements_when(&h, |r| r.len() >= 2).await;
    let bad = &records[0];
    assert_eq!(bad["text"], "select 'caf\u{fffd} \u{fffd}'", "{bad}");
    assert_eq!(bad["sha256"], hex::encode(Sha256::digest(invalid)));
    let big = &records[1];
    assert_eq!(big["truncated"], true);
    assert_eq!(big["length"], huge.len());
    assert_eq!(big["text"].as_str().unwrap(), &huge[..4096]);
    assert_eq!(big["sha256"], hex::encode(Sha256::digest(huge.as_bytes())));
    assert_identity(big, &alice);
    h.login(&alice).await.expect("still serving");
}
