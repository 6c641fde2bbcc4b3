//! MongoDB with authentication, as the seed installs it: an audit user with `readWrite` on the audit
//! database only, SCRAM-SHA-256, a password full of URI-reserved characters (percent-encoded).

use audit_runtime::{Access, AccessView, AuditConfig, Collection, DbConnection, Filter, Store};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test.sh, which starts the authenticated test server"))
}

fn host_port() -> (String, u16) {
    let uri = env("MONGODB_AUTH_URI");
    let hp = uri.trim_start_matches("mongodb://").trim_end_matches('/');
    let (h, p) = hp.rsplit_once(':').expect("host:port");
    (h.to_owned(), p.parse().expect("port"))
}

#[tokio::test]
async fn the_original_connection_table_with_credentials_connects() {
    let (host, port) = host_port();
    let toml = format!(
        "[db_connection]\nHOST = {host:?}\nPORT = {port}\nNAME = {:?}\nUSER = {:?}\nPASSWORD = {:?}\n",
        env("MONGODB_AUTH_DB"),
        env("MONGODB_AUTH_USER"),
        env("MONGODB_AUTH_PASSWORD")
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new()).unwrap();
    let DbConnection::Mongo { uri, .. } = &config.db_connection else {
        panic!("mongo connection expected")
    };
    assert!(
        uri.contains("p%40ss%3Aw%2Frd%25@"),
        "password is percent-encoded: {uri}"
    );
    assert!(
        !config.db_connection.to_string().contains("p%40ss"),
        "Display hides the password"
    );
    let store = Store::connect(&config)
        .await
        .expect("authenticated connect");
    let a = Access::new(
        "/secure",
        chrono::Utc::now(),
        AccessView::new("demo::x", "demo", "x"),
    );
    store.insert(&a).await.unwrap();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1
    );
    store.drop_collection(Collection::Access).await.unwrap();
}

#[tokio::test]
async fn credentials_from_the_environment_are_used() {
    let uri = format!("{}/{}", env("MONGODB_AUTH_URI"), env("MONGODB_AUTH_DB"));
    let config = AuditConfig::from_sources(
        None,
        [
            ("AUDIT_DB".to_owned(), uri),
            ("DB_AUDIT_USER".to_owned(), env("MONGODB_AUTH_USER")),
            ("DB_AUDIT_PASSWORD".to_owned(), env("MONGODB_AUTH_PASSWORD")),
        ],
    )
    .unwrap();
    let store = Store::connect(&config)
        .await
        .expect("connect with credentials from DB_AUDIT_USER/DB_AUDIT_PASSWORD");
    assert_eq!(
        store
            .count(Collection::Process, &Filter::all())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn without_credentials_the_server_refuses() {
    let conn = DbConnection::Mongo {
        uri: env("MONGODB_AUTH_URI"),
        database: env("MONGODB_AUTH_DB"),
    };
    let config = AuditConfig::default().with_connection(conn);
    let result = Store::connect(&config).await;
    assert!(
        result.is_err(),
        "an anonymous client must not be able to set up the audit database"
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_error() {
    let (host, port) = host_port();
    let toml = format!(
        "[db_connection]\nHOST = {host:?}\nPORT = {port}\nNAME = {:?}\nUSER = {:?}\nPASSWORD = \"wrong\"\n",
        env("MONGODB_AUTH_DB"),
        env("MONGODB_AUTH_USER"),
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new()).unwrap();
    let err = Store::connect(&config)
        .await
        .expect_err("authentication must fail");
    assert!(
        !err.to_string().contains("wrong"),
        "the password is not echoed: {err}"
    );
}
