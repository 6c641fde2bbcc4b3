//! Shared helpers of the integration tests: stores to test against and sample documents.
//!
//! MongoDB tests read `MONGODB_URI` and PostgreSQL tests `POSTGRES_URI` (set by `scripts/test.sh`,
//! which starts the test servers) and **fail** when it is missing: a CI run without a server must
//! not pass by skipping them.

use audit_runtime::{Access, AccessView, DbConnection, Store};

pub mod siem;
use chrono::{DateTime, TimeZone, Utc};

/// A store plus whatever keeps it alive (the SQLite file's directory).
pub struct TestStore {
    /// The store.
    pub store: Store,
    /// The connection it was opened with.
    pub connection: DbConnection,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Runs each named `async fn(kind: &str)` once per store, as `sqlite::NAME`, `mongodb::NAME` and
/// `postgres::NAME`, on a two-thread runtime: one scenario, every store.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name("sqlite").await;
            })*
        }
        mod mongodb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name("mongodb").await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name("postgres").await;
            })*
        }
    };
}

/// The address of the plain MongoDB test server; panics with instructions when it is not set.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| {
        panic!("MONGODB_URI is not set: MongoDB tests need the test server. Run them with scripts/test.sh, which starts it.")
    })
}

/// A connection to a fresh SQLite file.
pub fn sqlite_connection() -> (DbConnection, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    (DbConnection::Sqlite(dir.path().join("audit.db")), dir)
}

/// A fresh connection of the store named `kind` (`"sqlite"`, `"mongodb"` or `"postgres"`), with
/// what keeps it alive (the SQLite file's directory).
pub fn connection(kind: &str) -> (DbConnection, Option<tempfile::TempDir>) {
    match kind {
        "sqlite" => {
            let (c, d) = sqlite_connection();
            (c, Some(d))
        }
        _ => (connection_in(kind, std::path::Path::new(".")), None),
    }
}

/// A fresh connection of the store named `kind`: for SQLite a file `audit.db` in `dir`, else a
/// new database on the test server.
pub fn connection_in(kind: &str, dir: &std::path::Path) -> DbConnection {
    match kind {
        "sqlite" => DbConnection::Sqlite(dir.join("audit.db")),
        "mongodb" => mongo_connection(),
        "postgres" => postgres_connection(),
        other => panic!("unknown store kind `{other}`"),
    }
}

/// The address of the PostgreSQL test server (a role that may create databases); panics with
/// instructions when it is not set.
pub fn postgres_uri() -> String {
    std::env::var("POSTGRES_URI").unwrap_or_else(|_| {
        panic!("POSTGRES_URI is not set: PostgreSQL tests need the test server. Run them with scripts/test.sh, which starts it.")
    })
}

/// A connection to a fresh PostgreSQL database on the test server (created here, with `psql`).
pub fn postgres_connection() -> DbConnection {
    let base = postgres_uri();
    let name = format!("audit_test_{}", bson::oid::ObjectId::new().to_hex());
    let out = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql runs (postgresql-client)");
    assert!(out.status.success(), "cannot create {name}: {out:?}");
    let (server, _) = base.rsplit_once('/').expect("a database in POSTGRES_URI");
    DbConnection::Postgres {
        uri: format!("{server}/{name}"),
    }
}

/// A fresh PostgreSQL store (its own database on the test server).
pub async fn postgres_store() -> TestStore {
    open(postgres_connection(), None).await
}

/// The connection as the `audit` command line's `--db` takes it: the SQLite path, or the MongoDB
/// URI with the database as its path.
pub fn db_arg(connection: &DbConnection) -> String {
    match connection {
        DbConnection::Sqlite(p) => p.display().to_string(),
        DbConnection::Mongo { uri, database } => {
            format!("{}/{database}", uri.trim_end_matches('/'))
        }
        DbConnection::Postgres { uri } => uri.clone(),
    }
}

/// Serves `app` on a loopback port with the client's address available to handlers (as
/// applications serve it); returns the address and the server task.
pub async fn serve(app: axum::Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .expect("the server runs");
    });
    (addr, task)
}

/// A connection to a fresh, uniquely named MongoDB database.
pub fn mongo_connection() -> DbConnection {
    let db = format!("audit_test_{}", bson::oid::ObjectId::new().to_hex());
    DbConnection::Mongo {
        uri: mongodb_uri(),
        database: db,
    }
}

/// Opens a store on `connection` with every default index ensured.
pub async fn open(connection: DbConnection, dir: Option<tempfile::TempDir>) -> TestStore {
    let config = audit_runtime::AuditConfig::default().with_connection(connection.clone());
    let store = Store::connect(&config).await.expect("store opens");
    TestStore {
        store,
        connection,
        _dir: dir,
    }
}

/// A fresh SQLite store.
pub async fn sqlite_store() -> TestStore {
    let (c, dir) = sqlite_connection();
    open(c, Some(dir)).await
}

/// A fresh MongoDB store (its own database on the test server).
pub async fn mongo_store() -> TestStore {
    open(mongo_connection(), None).await
}

/// The query plan SQLite picks for `opts` on `c` (its `EXPLAIN QUERY PLAN` rows joined by ` | `);
/// panics unless `store` is SQLite.
pub async fn sqlite_plan(
    store: &Store,
    c: audit_runtime::Collection,
    opts: &audit_runtime::FindOptions,
) -> String {
    let Store::Sqlite(s) = store else {
        panic!("sqlite store expected")
    };
    s.explain(c, opts).await.unwrap().join(" | ")
}

/// A UTC datetime at millisecond precision (what BSON keeps).
pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid date")
}

/// An access to `path` at `t` by handler `full_name`.
pub fn access(path: &str, t: DateTime<Utc>, full_name: &str) -> Access {
    let (app, name) = match full_name.split_once("::") {
        Some((app, _)) => (app, full_name.rsplit("::").next().unwrap_or(full_name)),
        None => (full_name, full_name),
    };
    Access::new(path, t, AccessView::new(full_name, app, name))
}

/// The spill journal at `path` as an application's writer writes it when no seal key is
/// configured: its entries authenticated by the key kept beside it (`PATH.key`, created if
/// missing), so that the writer replays them.
pub fn writer_journal(path: &std::path::Path) -> audit_runtime::internals::Journal {
    use audit_runtime::internals::{Journal, JournalKey};
    let key = JournalKey::in_file(&JournalKey::file_beside(path)).expect("the journal's key file");
    Journal::keyed(path, key)
}

/// Handlers and models defined in this (second) crate, to prove their registrations are found from
/// the test binaries that link it.
pub mod fixtures {
    use audit_runtime::{audited_view, disable_audit, Audited};

    /// An audited handler living in another crate.
    #[audited_view]
    pub fn shared_handler() -> u32 {
        7
    }

    /// A disabled handler living in another crate.
    #[disable_audit]
    pub fn shared_disabled() {}

    /// A model living in another crate.
    #[derive(Audited, Debug, Clone)]
    pub struct SharedModel {
        /// Its id.
        pub id: i64,
    }
}

/// An auditor installed globally, whose writer runs on a runtime of its own, so it outlives the
/// per-test runtimes of `#[tokio::test]`. Every caller gets the same one.
pub fn global_auditor() -> &'static audit_runtime::Auditor {
    use std::sync::OnceLock;
    static AUDITOR: OnceLock<(audit_runtime::Auditor, tempfile::TempDir)> = OnceLock::new();
    &AUDITOR
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let (conn, dir) = sqlite_connection();
                    let config = audit_runtime::AuditConfig::default().with_connection(conn);
                    let (auditor, guard) = audit_runtime::Auditor::start(config)
                        .await
                        .expect("auditor starts");
                    auditor.install_global();
                    tx.send((auditor, dir)).expect("send");
                    // Keep the writer alive for the whole test binary.
                    std::future::pending::<()>().await;
                    drop(guard);
                });
            });
            rx.recv().expect("auditor")
        })
        .0
}
