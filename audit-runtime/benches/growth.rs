//! How the embedded store behaves as the trail grows: insert throughput, and the latency of the
//! first page (20 newest) of a search by user, by view, by path prefix and by time range, at each
//! of several sizes of the same database (grown in place), plus the file's bytes per document.
//! Then, between the smallest and the largest size, the ratio of each figure against the ratio
//! log(n) allows: an indexed first page should grow no faster than the depth of its B-tree.
//!
//! `cargo bench -p audit-runtime --bench growth` (sizes 100,000 and 1,000,000);
//! `GROWTH_SIZES=100000,10000000 cargo bench -p audit-runtime --bench growth` for others (10
//! million documents take about 25 GB of disk).

use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Store,
    UrlMatch,
};
use bson::RawDocumentBuf;
use chrono::{Duration, TimeZone, Utc};
use std::time::Instant;

const USERS: usize = 1_000;
const VIEWS: usize = 50;
const PATHS: usize = 5_000;

fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// The `i`-th access: one request every 10 ms, spread over users, views and paths.
fn access(i: usize) -> RawDocumentBuf {
    let t = start() + Duration::milliseconds(i as i64 * 10);
    let view = i % VIEWS;
    let mut a = Access::new(
        format!("/app{}/item/{}/", view, (i * 7919) % PATHS),
        t,
        AccessView::new(
            format!("app{view}::views::v{view}"),
            format!("app{view}"),
            format!("v{view}"),
        ),
    );
    a.request.GET = bson::doc! { "page": (i % 7).to_string() };
    let mut meta = bson::doc! { "REQUEST_METHOD": if i % 5 == 0 { "POST" } else { "GET" }, "SERVER_PROTOCOL": "HTTP/1.1" };
    for h in 0..12 {
        meta.insert(format!("HTTP_X_HEADER_{h}"), "v".repeat(80));
    }
    a.request.METADATA = meta;
    a.response = Some(AccessResponse {
        content: bson::Bson::Document(bson::doc! { "ok": true, "n": i as i64 }),
        content_type: "application/json".into(),
        status_code: 200,
    });
    a.time.response = Some(t + Duration::milliseconds(3));
    a.user = Some(AccessUser::new(
        ((i * 31) % USERS) as i64,
        format!("user{}", (i * 31) % USERS),
    ));
    RawDocumentBuf::from_bytes(bson::to_vec(&a).unwrap()).unwrap()
}

/// Median microseconds of `f` over `n` runs.
async fn median_us<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        assert!(f(i).await > 0, "every search finds something");
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

async fn searches(store: &Store, n: usize) -> serde_json::Value {
    let runs = 300;
    // The trail spans `n` × 10 ms; time searches look at one minute (less for a short trail)
    // somewhere in it.
    let span_ms = n as i64 * 10;
    let window = Duration::milliseconds((span_ms / 100).min(60_000));
    let by_user = median_us(runs, |i| async move {
        let q = Access::objects()
            .user_id((i * 7 % USERS) as i64)
            .newest_first()
            .limit(20);
        q.fetch(store).await.unwrap().len()
    })
    .await;
    let by_view = median_us(runs, |i| async move {
        let v = i % VIEWS;
        let q = Access::objects()
            .view_app(&format!("app{v}"))
            .view_name(&format!("v{v}"))
            .newest_first()
            .limit(20);
        q.fetch(store).await.unwrap().len()
    })
    .await;
    let by_prefix = median_us(runs, |i| async move {
        let q = Access::objects()
            .filter_by_url(UrlMatch::StartsWith(format!("/app{}/item/", i % VIEWS)))
            .limit(20);
        q.fetch(store).await.unwrap().len()
    })
    .await;
    let by_time = median_us(runs, |i| async move {
        let from = start() + Duration::milliseconds(span_ms * ((i * 7919) % 990) as i64 / 1000);
        let q = Access::objects()
            .since(from)
            .until(from + window)
            .newest_first()
            .limit(20);
        q.fetch(store).await.unwrap().len()
    })
    .await;
    // Which index each search uses (SQLite's plan for the first of its runs).
    let mut plans = serde_json::Map::new();
    if let Store::Sqlite(s) = store {
        let v = 0;
        let from = start();
        for (name, q) in [
            (
                "by_user",
                Access::objects().user_id(0).newest_first().limit(20),
            ),
            (
                "by_view",
                Access::objects()
                    .view_app(&format!("app{v}"))
                    .view_name(&format!("v{v}"))
                    .newest_first()
                    .limit(20),
            ),
            (
                "by_path_prefix",
                Access::objects()
                    .filter_by_url(UrlMatch::StartsWith("/app0/item/".into()))
                    .limit(20),
            ),
            (
                "by_time_range",
                Access::objects()
                    .since(from)
                    .until(from + window)
                    .newest_first()
                    .limit(20),
            ),
        ] {
            let plan = s
                .explain(Collection::Access, &q.options().unwrap())
                .await
                .unwrap();
            plans.insert(name.into(), plan.join(" | ").into());
        }
    }
    serde_json::json!({
        "plans": plans,
        "by_user_us": by_user.round(),
        "by_view_us": by_view.round(),
        "by_path_prefix_us": by_prefix.round(),
        "by_time_range_us": by_time.round(),
    })
}

/// Bytes of the access table and of its indexes (the `_id` one included), from SQLite's `dbstat`.
fn table_and_index_bytes(path: &std::path::Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    audit_runtime::internals::prepare_connection(&conn).unwrap();
    let sum = |filter: &str| -> u64 {
        conn.query_row(
            &format!("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE {filter}"),
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as u64
    };
    (
        sum("name = 'audit_access'"),
        sum("name IN (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_access')"),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this once, small.
    let quick = std::env::args().all(|a| a != "--bench");
    let sizes: Vec<usize> = match std::env::var("GROWTH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("GROWTH_SIZES: `{n}` is not a number"))
            })
            .collect(),
        Err(_) if quick => vec![2_000, 20_000],
        Err(_) => vec![100_000, 1_000_000],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("growth.db");
    let store =
        Store::connect(&AuditConfig::default().with_connection(DbConnection::Sqlite(path.clone())))
            .await
            .unwrap();
    let mut stored = 0;
    let mut results = Vec::new();
    for &n in &sizes {
        // Throughput over the last tenth of the way to `n`: the rate at that size.
        let tail_from = stored.max(n - n / 10);
        let mut tail_start = Instant::now();
        while stored < n {
            if stored == tail_from {
                tail_start = Instant::now();
            }
            let end = (stored + 512)
                .min(n)
                .min(if stored < tail_from { tail_from } else { n });
            let batch: Vec<RawDocumentBuf> = (stored..end).map(access).collect();
            store
                .insert_raw_documents(Collection::Access, batch)
                .await
                .unwrap();
            stored = end;
        }
        let rate = (n - tail_from) as f64 / tail_start.elapsed().as_secs_f64();
        let bytes = ["", "-wal"]
            .iter()
            .map(|s| std::fs::metadata(format!("{}{s}", path.display())).map_or(0, |m| m.len()))
            .sum::<u64>();
        let (table, indexes) = table_and_index_bytes(&path);
        let line = serde_json::json!({
            "documents": n,
            "insert_docs_per_s": rate.round(),
            "file_bytes_per_doc": (bytes as f64 / n as f64).round(),
            "table_bytes_per_doc": (table as f64 / n as f64).round(),
            "index_bytes_per_doc": (indexes as f64 / n as f64).round(),
            "first_page": searches(&store, n).await,
        });
        println!("{line}");
        results.push(line);
    }
    if let (Some(small), Some(large)) = (results.first(), results.last()) {
        let (a, b) = (
            small["documents"].as_f64().unwrap(),
            large["documents"].as_f64().unwrap(),
        );
        let allowed = b.ln() / a.ln();
        let mut ratios = serde_json::Map::new();
        for k in [
            "by_user_us",
            "by_view_us",
            "by_path_prefix_us",
            "by_time_range_us",
        ] {
            let r =
                large["first_page"][k].as_f64().unwrap() / small["first_page"][k].as_f64().unwrap();
            ratios.insert(k.into(), serde_json::json!((r * 100.0).round() / 100.0));
        }
        let insert = large["insert_docs_per_s"].as_f64().unwrap()
            / small["insert_docs_per_s"].as_f64().unwrap();
        println!(
            "{}",
            serde_json::json!({
                "growth": format!("{a} -> {b} documents"),
                "first_page_time_ratio": ratios,
                "log_n_ratio_allowed": (allowed * 100.0).round() / 100.0,
                "insert_rate_ratio": (insert * 100.0).round() / 100.0,
            })
        );
    }
}
