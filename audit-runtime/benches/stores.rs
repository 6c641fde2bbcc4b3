//! Store throughput with 2 KB access documents and every default index: insert one (one commit
//! each), insert batches of 100, an indexed nested-path query, a regex query and a ranged delete.
//! Prints documents (or queries) per second for SQLite, for MongoDB when `MONGODB_URI` is set, and
//! for a raw rusqlite baseline doing the same batched inserts into the schema of earlier versions
//! (expression indexes), measured in the same run, rounds interleaved; then the ratio store / raw.
//!
//! `cargo bench -p audit-runtime --bench stores` (`-- --quick` for a short run).

use audit_runtime::internals::default_indexes;
use audit_runtime::internals::{expression_schema_sql, prepare_connection};
use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Store,
    UrlMatch,
};
use audit_runtime::{Filter, FindOptions};
use bson::doc;
use chrono::{Duration, TimeZone, Utc};
use std::time::Instant;

/// A realistic access of about 2 KB.
fn access(i: usize) -> Access {
    let t =
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::milliseconds(i as i64 * 10);
    let mut a = Access::new(
        format!("/polls/{}/vote/", i % 500),
        t,
        AccessView::new("demo::views::vote", "demo", "vote"),
    );
    a.interlink_id = Some(format!("{i:032x}"));
    a.request.GET = doc! { "page": (i % 7).to_string(), "sort": "newest" };
    let mut meta = doc! { "REQUEST_METHOD": "POST", "SERVER_PROTOCOL": "HTTP/1.1", "URL_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1:50000" };
    for h in 0..12 {
        meta.insert(format!("HTTP_X_HEADER_{h}"), "v".repeat(80));
    }
    a.request.METADATA = meta;
    a.response = Some(AccessResponse {
        content: bson::Bson::Document(doc! { "ok": true, "votes": i as i64 }),
        content_type: "application/json".into(),
        status_code: 200,
    });
    a.time.response = Some(t + Duration::milliseconds(3));
    a.user = Some(AccessUser::new(
        (i % 100) as i64,
        format!("user{}", i % 100),
    ));
    a
}

fn fresh_sqlite() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bench.db");
    (dir, p)
}

/// The baseline: the same documents, serialised the same way, with rusqlite and nothing else, into
/// the schema of earlier versions: a table of blobs and every default index an expression
/// `bson_get(doc, 'path')`, evaluated by SQLite on every insert.
fn raw_batched(docs: &[Access], batch: usize) -> f64 {
    let (_dir, path) = fresh_sqlite();
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    prepare_connection(&conn).unwrap();
    conn.execute_batch(&expression_schema_sql(
        Collection::Access,
        &default_indexes(Collection::Access),
    ))
    .unwrap();
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached("INSERT INTO audit_access (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING").unwrap();
            for a in chunk {
                let mut blob = Vec::with_capacity(2048);
                bson::to_document(a).unwrap().to_writer(&mut blob).unwrap();
                stmt.execute(rusqlite::params![a.id.to_hex(), blob])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

async fn store_batched(store: &Store, docs: &[Access], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        store.insert_all(chunk).await.unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

async fn open_store(conn: DbConnection) -> Store {
    Store::connect(&AuditConfig::default().with_connection(conn))
        .await
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn queries(store: &Store, label: &str, n: usize) {
    let start = Instant::now();
    for i in 0..n {
        let q = Access::objects().user_id((i % 100) as i64).limit(20);
        std::hint::black_box(q.fetch(store).await.unwrap());
    }
    println!(
        "{label:<8} indexed query (user.id, 20 docs)  {:>10.0} queries/s",
        n as f64 / start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    for i in 0..n / 10 {
        let q = Access::objects()
            .filter_by_url(UrlMatch::Regex(format!("^/polls/{}/", i % 500)))
            .limit(20);
        std::hint::black_box(q.fetch(store).await.unwrap());
    }
    println!(
        "{label:<8} regex query on request.path        {:>10.0} queries/s",
        (n / 10) as f64 / start.elapsed().as_secs_f64()
    );
    let t0 = bson::DateTime::from_chrono(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
    let t1 = bson::DateTime::from_chrono(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 30).unwrap());
    let start = Instant::now();
    let deleted = store
        .delete_many(Collection::Access, &Filter::between("time.request", t0, t1))
        .await
        .unwrap();
    println!(
        "{label:<8} delete by date range               {:>10.0} docs/s ({deleted} deleted)",
        deleted as f64 / start.elapsed().as_secs_f64()
    );
    std::hint::black_box(
        store
            .find_raw(
                Collection::Access,
                &FindOptions::new(Filter::all()).window(0, Some(1)),
            )
            .await
            .unwrap(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this once, briefly; `--quick` does too.
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test")
        || std::env::args().all(|a| a != "--bench");
    let (total, singles, rounds) = if quick {
        (2_000, 100, 1)
    } else {
        (20_000, 1_000, 5)
    };
    let docs: Vec<Access> = (0..total).map(access).collect();
    let size = bson::to_vec(&bson::to_document(&docs[0]).unwrap())
        .unwrap()
        .len();
    println!("documents of {size} bytes, all default indexes; {rounds} interleaved round(s) of {total} documents");

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..rounds {
        let fresh: Vec<Access> = docs
            .iter()
            .map(|a| Access {
                id: bson::oid::ObjectId::new(),
                ..a.clone()
            })
            .collect();
        raw.push(raw_batched(&fresh, 100));
        let (_dir, path) = fresh_sqlite();
        let store = open_store(DbConnection::Sqlite(path)).await;
        ours.push(store_batched(&store, &fresh, 100).await);
    }
    let (raw, ours) = (median(raw), median(ours));
    println!("raw      rusqlite, expression indexes, batches of 100 {raw:>10.0} docs/s");
    println!("sqlite   store, batches of 100                  {ours:>10.0} docs/s   ratio store/raw = {:.2}", ours / raw);

    let (_dir, path) = fresh_sqlite();
    let store = open_store(DbConnection::Sqlite(path)).await;
    let start = Instant::now();
    for a in &docs[..singles] {
        store.insert(a).await.unwrap();
    }
    println!(
        "sqlite   store, one per commit                  {:>10.0} docs/s",
        singles as f64 / start.elapsed().as_secs_f64()
    );
    store_batched(&store, &docs[singles..], 100).await;
    queries(&store, "sqlite", if quick { 100 } else { 2_000 }).await;

    match std::env::var("MONGODB_URI") {
        Ok(uri) => {
            let db = format!("audit_bench_{}", bson::oid::ObjectId::new().to_hex());
            let store = open_store(DbConnection::Mongo { uri, database: db }).await;
            let rate = store_batched(&store, &docs, 100).await;
            println!("mongodb  store, batches of 100                  {rate:>10.0} docs/s");
            let fresh: Vec<Access> = docs[..singles]
                .iter()
                .map(|a| Access {
                    id: bson::oid::ObjectId::new(),
                    ..a.clone()
                })
                .collect();
            let start = Instant::now();
            for a in &fresh {
                store.insert(a).await.unwrap();
            }
            println!(
                "mongodb  store, one per insert                  {:>10.0} docs/s",
                singles as f64 / start.elapsed().as_secs_f64()
            );
            queries(&store, "mongodb", if quick { 100 } else { 1_000 }).await;
            for c in Collection::ALL {
                store.drop_collection(c).await.unwrap();
            }
        }
        Err(_) => println!(
            "mongodb  skipped: set MONGODB_URI (scripts/mongo-test-server.sh starts a server)"
        ),
    }
}
