//! Client matrix: tokio-postgres with rustls (`tokio-postgres-rustls`) through the proxy
//! with a client certificate. The e2e binary's `session` module covers more of this client
//! (COPY, policy refusals); this module runs the same steps as every other client of the
//! matrix.

use crate::common::{big_query, expected_big, Checksum};
use futures::TryStreamExt;
use proxy_testkit::client::{client_tls, sqlstate};
use proxy_testkit::observe::wait_for_query;
use proxy_testkit::world::World;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// The version of `package` this workspace builds, from `Cargo.lock`.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .expect("Cargo.lock");
    let needle = format!("name = \"{package}\"\nversion = \"");
    lock.split_once(&needle)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(version, _)| version.to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokio_postgres_runs_the_client_matrix_through_the_proxy() {
    println!(
        "client matrix: tokio-postgres {} with tokio-postgres-rustls {}, rustls {}",
        locked_version("tokio-postgres"),
        locked_version("tokio-postgres-rustls"),
        locked_version("rustls"),
    );
    let world = World::start().await;
    let h = world.proxy(world.config()).await;
    let alice = world.client("alice");
    let db_user = world.iam_user(&alice);
    let big = expected_big(world.pg).await;

    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(h.addr().port())
        .user(&alice.common_name)
        .dbname("dev")
        .application_name("matrix-tokio-postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    // rustls always verifies the certificate chain and host name (verify-full).
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(&h.ca, Some(&alice)));
    let (mut client, connection) = config.connect(tls).await.expect("connect");
    tokio::spawn(connection);

    let who: String = client
        .simple_query("select current_user")
        .await
        .unwrap()
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row");
    assert_eq!(who, db_user);

    let row = client
        .query_one(
            "select $1::int + $2::int, $3::text",
            &[&40i32 as &(dyn ToSql + Sync), &2i32, &"x&user=y"],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, &str>(1)),
        (42, "x&user=y")
    );

    // Streamed row by row, not collected.
    let rows = client
        .query_raw(big_query().as_str(), std::iter::empty::<i32>())
        .await
        .unwrap();
    futures::pin_mut!(rows);
    let (mut sha, mut count, mut bytes) = (Sha256::new(), 0u64, 0u64);
    while let Some(row) = rows.try_next().await.unwrap() {
        let v: &str = row.get(0);
        sha.update(v.as_bytes());
        count += 1;
        bytes += v.len() as u64;
    }
    let received = Checksum {
        rows: count,
        bytes,
        sha256: hex::encode(sha.finalize()),
    };
    assert_eq!(received, big, "10 MiB result checksum");

    client
        .batch_execute("create temp table matrix_tx (v int)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("insert into matrix_tx values (1)", &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let n: i64 = client
        .query_one("select count(*) from matrix_tx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    let err = client.query_one("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"), "{err}");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    let token = client.cancel_token();
    let cancel_tls = h.tls_connector(None);
    let (pg, role) = (world.pg, world.role(&alice));
    let canceller = tokio::spawn(async move {
        wait_for_query(pg, &role, "pg_sleep(30)").await;
        token.cancel_query(cancel_tls).await
    });
    let started = Instant::now();
    let err = client.query("select pg_sleep(30)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.await.unwrap().unwrap();

    let app: String = client
        .query_one("select current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "matrix-tokio-postgres");
}
