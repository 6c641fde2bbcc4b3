//! The console on a large SQLite trail: the first page of a search by user, by view, by path
//! prefix and by time range, and the dashboard, each through the console's real router. Prints the
//! median of 7 runs (after one warm-up) of each, against the targets (50 ms a search page, 500 ms
//! the dashboard).
//!
//! `cargo bench -p audit-runtime --bench console` stores 1,000,000 accesses (30 days, 1,000
//! users, 20 views) in a temporary directory, deleted afterwards; `AUDIT_BENCH_ROWS=N` changes
//! the count. Run by `cargo test` (no `--bench` argument), it stores 2,000 and only checks that
//! every query answers.

use audit_runtime::console::Console;
use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Store,
};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bson::doc;
use chrono::{Duration, Utc};
use http_body_util::BodyExt;
use std::time::Instant;
use tower::ServiceExt;

const SPAN_DAYS: i64 = 30;

fn access(i: u64, n: u64, now: chrono::DateTime<Utc>) -> Access {
    // Spread evenly over the last 30 days, oldest first (ids grow with time, as in production).
    let t = now - Duration::days(SPAN_DAYS)
        + Duration::milliseconds((i as i64) * (SPAN_DAYS * 86_400_000 / n as i64));
    let view = i % 20;
    let mut a = Access::new(
        format!("/polls/{}/vote/", i % 5000),
        t,
        AccessView::new(format!("demo::views::v{view}"), "demo", format!("v{view}")),
    );
    a.id = bson::oid::ObjectId::from_parts(t.timestamp() as u32, [1; 5], {
        let c = (i as u32).to_be_bytes();
        [c[1], c[2], c[3]]
    });
    a.user = Some(AccessUser::new(
        (i % 1000) as i64,
        format!("user{}", i % 1000),
    ));
    a.request.GET = doc! { "page": (i % 7).to_string() };
    a.request.METADATA = doc! { "REQUEST_METHOD": if i % 3 == 0 { "POST" } else { "GET" }, "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64)", "REMOTE_ADDR": "127.0.0.1:50000" };
    a.response = Some(AccessResponse {
        content: bson::Bson::Null,
        content_type: "text/html".into(),
        status_code: match i % 50 {
            0 => 500,
            1..=3 => 404,
            4..=6 => 302,
            _ => 200,
        },
    });
    a.time.response = Some(t + Duration::milliseconds(12));
    a
}

async fn fill(store: &Store, n: u64) {
    let now = Utc::now();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 20_000).min(n);
        let batch: Vec<Access> = (i..end).map(|j| access(j, n, now)).collect();
        store.insert_all(&batch).await.expect("insert");
        i = end;
        if i % 200_000 == 0 {
            eprintln!("  {i} stored ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    eprintln!("  {n} stored in {:.0} s", started.elapsed().as_secs_f64());
}

async fn time(app: &axum::Router, uri: &str, runs: usize) -> f64 {
    let once = || async {
        let t = Instant::now();
        let res = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        t.elapsed().as_secs_f64() * 1000.0
    };
    once().await;
    let mut v = Vec::new();
    for _ in 0..runs {
        v.push(once().await);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = match std::env::var("AUDIT_BENCH_ROWS") {
        Ok(s) => s.parse().expect("AUDIT_BENCH_ROWS is a number"),
        Err(_) if bench => 1_000_000,
        Err(_) => 2_000,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console-bench.db");
        let config = AuditConfig::default().with_connection(DbConnection::Sqlite(path.clone()));
        // Bulk-load first, index after: what a large existing trail looks like, built fast.
        let store = Store::open(&config.db_connection).await.unwrap();
        eprintln!("storing {n} accesses in {}", path.display());
        fill(&store, n).await;
        let t = Instant::now();
        store.ensure_indexes(&config).await.unwrap();
        eprintln!(
            "  default indexes built in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        assert_eq!(
            store
                .count(Collection::Access, &audit_runtime::Filter::all())
                .await
                .unwrap(),
            n
        );
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("  database: {} MB", size / 1_000_000);

        let app = Console::new(store.clone()).router();
        let now = Utc::now();
        let hour_ago = (now - Duration::hours(30))
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        let hour_end = (now - Duration::hours(29))
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        let runs = if bench { 7 } else { 1 };
        let cases = [
            (
                "search by user (API)",
                "/api/access?user_id=417".to_owned(),
                50.0,
            ),
            (
                "search by view (API)",
                "/api/access?view=demo::views::v7".to_owned(),
                50.0,
            ),
            (
                "search by path prefix (API)",
                "/api/access?url_regex=%5E/polls/123".to_owned(),
                50.0,
            ),
            (
                "search by time range (API)",
                format!("/api/access?from={hour_ago}&to={hour_end}"),
                50.0,
            ),
            (
                "search by user (page)",
                "/access?user_id=417".to_owned(),
                50.0,
            ),
            ("dashboard, last 24 h (page)", "/".to_owned(), 500.0),
            ("stats, last 24 h (API)", "/api/stats".to_owned(), 500.0),
        ];
        println!("console on {n} SQLite accesses: median of {runs} runs");
        println!("{:<32} {:>10} {:>10}", "query", "ms", "target");
        for (name, uri, target) in cases {
            let ms = time(&app, &uri, runs).await;
            println!(
                "{name:<32} {ms:>10.1} {:>8.0} ms {}",
                target,
                if ms <= target { "ok" } else { "MISSED" }
            );
        }
        drop(store);
        drop(dir);
    });
}
