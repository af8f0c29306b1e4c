//! Attribution (issue 17): what Redshift itself records names the person behind each
//! session, even where every session logs in as one IAM role.

use proxy_testkit::config::Rule;
use proxy_testkit::stack::WORKGROUP;
use proxy_testkit::world::World;

#[tokio::test(flavor = "multi_thread")]
async fn redshifts_connection_log_names_the_client_through_application_name() {
    let world = World::start().await;
    let config = world
        .config()
        .edit_listener("main", |l| l.target("serverless"))
        .edit_target("serverless", |t| {
            t.set(
                "application_name",
                "{client_application} via redshift-iam-proxy for {identity}",
            )
        })
        .rule(Rule::everyone_on("serverless"));
    let proxy = world.proxy(config).await;
    let alice = world.client("alice");
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .hostaddr([127, 0, 0, 1].into())
        .port(proxy.addr().port())
        .user(&alice.common_name)
        .dbname("dev")
        .application_name("Tableau")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(proxy_testkit::client::client_tls(
        &proxy.ca,
        Some(&alice),
    ));
    let (client, connection) = pg.connect(tls).await.expect("login");
    tokio::spawn(connection);

    // Serverless logs in as the role (IAMR:...), yet the session says who it is for.
    let row = client
        .query_one(
            "select current_user, current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    let (user, application): (String, String) = (row.get(0), row.get(1));
    assert!(user.starts_with("IAMR:"), "{user}");
    let expected = format!("Tableau via redshift-iam-proxy for {}", alice.common_name);
    assert_eq!(application, expected[..expected.len().min(63)]);
    let standin = world.emulator.standin(WORKGROUP).unwrap();
    let login = standin.logins().pop().unwrap();
    assert_eq!(login.param("application_name"), Some(application.as_str()));
}
