//! Measurements taken in the driver's own process, while every server is idle: the store's insert
//! rate against the schema of earlier versions (every index an expression over the raw BSON,
//! evaluated on each insert), and the capture and serialisation of one access on its own.

use audit_runtime::bson::{self, oid::ObjectId, RawDocumentBuf};
use audit_runtime::http::{capture_request, Capture};
use audit_runtime::internals::{default_indexes, expression_schema_sql, prepare_connection};
use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Store,
};
use std::path::Path;
use std::time::Instant;

/// What the writer sends in one store call.
const BATCH: usize = 512;

/// Copies of `template` with fresh ids, spread over 5,000 paths, 50 views and 1,000 users as a
/// real trail is (identical values would all land on the same few index pages), encoded as the
/// request path encodes them.
pub(crate) fn documents(template: &Access, n: usize) -> Vec<RawDocumentBuf> {
    (0..n)
        .map(|i| {
            let mut a = Access {
                id: ObjectId::new(),
                ..template.clone()
            };
            let view = i % 50;
            a.request.path = format!("/app{view}/item/{}/", (i * 7919) % 5_000);
            a.view = AccessView::new(
                format!("app{view}::views::v{view}"),
                format!("app{view}"),
                format!("v{view}"),
            );
            a.user = Some(AccessUser::new(
                ((i * 31) % 1_000) as i64,
                format!("user{}", (i * 31) % 1_000),
            ));
            RawDocumentBuf::from_bytes(bson::to_vec(&a).unwrap()).unwrap()
        })
        .collect()
}

/// Documents per second through [`Store`] (every default index), in the writer's batches.
pub(crate) async fn store_rate(docs: &[RawDocumentBuf], dir: &Path) -> f64 {
    let cfg = AuditConfig::default().with_connection(DbConnection::Sqlite(dir.join("store.db")));
    let store = Store::connect(&cfg).await.unwrap();
    let start = Instant::now();
    for chunk in docs.chunks(BATCH) {
        store
            .insert_raw_documents(Collection::Access, chunk.to_vec())
            .await
            .unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Documents per second with rusqlite alone into the schema earlier versions used: one table
/// (rowid, hex id, BSON blob) and every default index an expression `bson_get(doc, 'path')`. The
/// same batches, the same durability (WAL, `synchronous=FULL`).
pub(crate) fn expression_schema_rate(docs: &[RawDocumentBuf], dir: &Path) -> f64 {
    let path = dir.join("expression.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    prepare_connection(&conn).unwrap();
    conn.execute_batch(&expression_schema_sql(
        Collection::Access,
        &default_indexes(Collection::Access),
    ))
    .unwrap();
    let start = Instant::now();
    for chunk in docs.chunks(BATCH) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO audit_access (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
                .unwrap();
            for d in chunk {
                let id = d.get_object_id("_id").unwrap().to_hex();
                stmt.execute(rusqlite::params![id, d.as_bytes()]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Microseconds to capture a request with 16 headers and a query string and serialise its access
/// (about 1.9 KB), as the layer does on the request path; the median of several rounds.
pub(crate) fn capture_and_serialise_us() -> (f64, usize) {
    let mut b =
        http::Request::builder().uri("http://localhost/polls/42/vote/?page=2&sort=newest&page=3");
    for i in 0..12 {
        b = b.header(format!("x-header-{i}"), "v".repeat(80));
    }
    let req = b
        .header("cookie", "sessionid=abc; csrftoken=def")
        .header("user-agent", "loadtest/1.0")
        .body(())
        .unwrap();
    let capture = Capture::new(AuditConfig::default().capture);
    let one = || {
        let mut a = Access::new(
            "/",
            chrono::Utc::now(),
            AccessView::new("demo::views::vote", "demo", "vote"),
        );
        a.request = capture_request(std::hint::black_box(&req), &capture);
        a.response = Some(AccessResponse {
            content: bson::Bson::Null,
            content_type: "application/json".into(),
            status_code: 200,
        });
        a.user = Some(AccessUser::anonymous());
        bson::to_vec(&a).unwrap()
    };
    let size = one().len();
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let n = 20_000;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(one());
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    (rounds[rounds.len() / 2], size)
}
