//! What sealing costs, measured side by side in one run (the machine is shared: read the ratios).
//!
//! 1. The async writer into SQLite, with and without seals: rounds alternate, each round records
//!    the same accesses through a fresh auditor and waits for the shutdown flush; it prints
//!    documents per second for both and the ratio.
//! 2. `verify` over a sealed SQLite trail, opened read-only as `audit verify` opens it: records per
//!    second (every row re-hashed with its salt, and each of its indexed copies checked against
//!    its bytes).
//!
//! `cargo bench -p audit-runtime --bench seal` (`SEAL_BENCH_RECORDS` sets the trail's size).

use audit_runtime::seal::{self, VerifyOptions};
use audit_runtime::{Access, AccessUser, AccessView, AuditConfig, Auditor, DbConnection};
use std::time::{Duration, Instant};

fn access(i: usize) -> Access {
    let mut a = Access::new(
        format!("/polls/{}/vote", i % 500),
        chrono::Utc::now() - chrono::Duration::hours(1),
        AccessView::new("demo::views::vote", "demo", "vote"),
    );
    a.user = Some(AccessUser::new((i % 1000) as i64, "bench-user"));
    for h in 0..12 {
        a.request
            .METADATA
            .insert(format!("HTTP_X_HEADER_{h}"), "x".repeat(60));
    }
    a
}

async fn write_trail(dir: &std::path::Path, n: usize, sealed: bool) -> Duration {
    let db = dir.join(format!("audit-{}.db", bson::oid::ObjectId::new()));
    let toml = format!("run_async = true\nseal = {sealed}");
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db));
    let accesses: Vec<Access> = (0..n).map(access).collect();
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let started = Instant::now();
    for a in accesses {
        auditor.record_access(a).await;
    }
    let m = guard.shutdown().await;
    let took = started.elapsed();
    assert_eq!(m.written as usize, n);
    assert_eq!(m.seals > 0, sealed);
    took
}

fn main() {
    // `cargo test --all-targets` runs benches too, without `--bench` and in debug: then a small
    // trail only checks that everything runs.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("SEAL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 100_000 } else { 2_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let per_round = (n / 5).max(400);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        write_trail(dir.path(), per_round / 10, true).await; // warm-up
        for _ in 0..5 {
            without.push(write_trail(dir.path(), per_round, false).await);
            with.push(write_trail(dir.path(), per_round, true).await);
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let (w, wo) = (median(&mut with), median(&mut without));
        let rate = |d: Duration| per_round as f64 / d.as_secs_f64();
        println!(
            "async writer, SQLite, {per_round} accesses per round, 5 rounds each, median: \
             without seals {:.0} docs/s, with seals {:.0} docs/s, ratio {:.3}",
            rate(wo),
            rate(w),
            rate(w) / rate(wo)
        );

        // A sealed trail of n records, then verify it.
        let db = dir.path().join("verify.db");
        let config =
            AuditConfig::from_sources(Some("run_async = true"), Vec::<(String, String)>::new())
                .unwrap()
                .with_connection(DbConnection::Sqlite(db.clone()));
        let (auditor, guard) = Auditor::start(config).await.unwrap();
        for i in 0..n {
            auditor.record_access(access(i)).await;
        }
        guard.shutdown().await;
        // As `audit verify` opens it: read-only.
        let store = audit_runtime::Store::open_read_only(&DbConnection::Sqlite(db))
            .await
            .unwrap();
        let started = Instant::now();
        let mut findings = 0;
        let summary = seal::verify(&store, &VerifyOptions::default(), |_| findings += 1, |_| {})
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(findings, 0);
        println!(
            "verify, SQLite, {} records in {} seals: {:.2} s, {:.0} records/s",
            summary.records,
            summary.seals,
            took.as_secs_f64(),
            summary.records as f64 / took.as_secs_f64()
        );
    });
}
