//! Client matrix: psql / libpq through the proxy (`sslmode=verify-full`, `sslcert`,
//! `sslkey`). psql 15 has no `\bind`, so the extended-protocol step runs libpq's
//! `PQexecParams` path through `pgbench -M extended` from the same installation. Ctrl-C
//! cancel is covered by the e2e binary (`session::psql_ctrl_c_cancels_a_running_query`).

use crate::common::{big_query, expected_big, Checksum};
use proxy_testkit::programs::APT_INSTALL;
use proxy_testkit::world::World;
use sha2::{Digest, Sha256};
use std::process::Output;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn run(command: std::process::Command, what: &str) -> Output {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    tokio::time::timeout(TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; install with: {APT_INSTALL}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_runs_the_client_matrix_through_the_proxy() {
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let db_user = world.iam_user(&alice);
    let big = expected_big(world.pg).await;
    let psql = h
        .psql(&alice)
        .user(&alice.common_name)
        .application_name("matrix-psql");

    let mut version = psql.command("");
    version.args(["--version"]);
    println!(
        "client matrix: {}",
        text(&run(version, "psql --version").await.stdout).trim()
    );

    // 10 MiB in one result, one row per line (`-A -t`).
    let out = run(psql.command(&big_query()), "psql (large result)").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut sha = Sha256::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        sha.update(line);
        rows += 1;
        bytes += line.len() as u64;
    }
    let received = Checksum {
        rows,
        bytes,
        sha256: hex::encode(sha.finalize()),
    };
    assert_eq!(received, big, "10 MiB result checksum");

    // One session, one Query message per -c: transaction, error, and what comes after.
    let mut session = psql.command("\\set VERBOSITY verbose");
    for sql in [
        "select current_user",
        "create temp table matrix_tx (v int)",
        "begin",
        "insert into matrix_tx values (1)",
        "rollback",
        "select 'rolled back: ' || count(*) from matrix_tx",
        "select 1/0",
        "select 'after error: ' || 1",
        "select 'application_name: ' || current_setting('application_name')",
    ] {
        session.args(["-c", sql]);
    }
    // Keep going after the deliberate error (a later -v wins).
    session.args(["-v", "ON_ERROR_STOP=0", "-q"]);
    let out = run(session, "psql (session)").await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            db_user.as_str(),
            "rolled back: 0",
            "after error: 1",
            "application_name: matrix-psql",
        ],
        "{stderr}"
    );
    assert!(
        stderr.contains("ERROR:  22012: division by zero"),
        "{stderr}"
    );

    // Extended protocol: pgbench sends :a and :b as bound parameters ($1, $2) and echoes
    // the result through \shell.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "\\set a 40\n\\set b 2\nselect :a::int + :b::int as total \\gset\n\\shell echo total :total\n",
    )
    .unwrap();
    let base = psql.command("");
    let pgbench_path = proxy_testkit::pg::find_bindir()
        .map(|dir| dir.join("pgbench"))
        .unwrap_or_else(|_| "pgbench".into());
    let mut pgbench = std::process::Command::new(pgbench_path);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => pgbench.env(key, value),
            None => pgbench.env_remove(key),
        };
    }
    pgbench
        .args(["-n", "-M", "extended", "-t", "1", "-f"])
        .arg(script.path());
    let out = run(pgbench, "pgbench -M extended").await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).lines().any(|l| l == "total 42"),
        "{}",
        text(&out.stdout)
    );
}
