//! The PostgreSQL server stopped for ten seconds in the middle of the traffic: every request is
//! answered, and every record is stored exactly once (spilled to the journal meanwhile, replayed
//! once the server is back). A test binary of its own, so that stopping the shared test server
//! cannot disturb another test.

use audit_runtime::http::AuditLayer;
use audit_runtime::{Access, AuditConfig, Auditor, DbConnection, Filter};
use axum::routing::get;
use axum::Router;
use std::time::{Duration, Instant};

/// Runs `pg_ctl` on the test server, as the user it runs as.
fn pg_ctl(args: &[&str]) {
    let bin = std::env::var("POSTGRES_BIN").expect("POSTGRES_BIN (scripts/pg-test-server.sh)");
    let data = std::env::var("POSTGRES_DATA").expect("POSTGRES_DATA");
    let run_as = std::env::var("POSTGRES_RUN_AS").expect("POSTGRES_RUN_AS");
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let pg_ctl = format!("{bin}/pg_ctl");
    let mut cmd = if me == run_as {
        std::process::Command::new(&pg_ctl)
    } else {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", &run_as, "--", &pg_ctl]);
        c
    };
    let log = format!("{data}/restart.log");
    let status = cmd
        .args(["-D", &data, "-l", &log, "-w", "-t", "60"])
        .args(args)
        .status()
        .expect("pg_ctl runs");
    assert!(status.success(), "pg_ctl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_loses_no_record_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let connection = audit_tests::postgres_connection();
    let toml = format!(
        "run_async = true\nspill_path = {:?}",
        dir.path().join("audit.spill").display().to_string()
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(connection.clone());
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let app = Router::new()
        .route("/ping/{n}", get(|| async { "pong" }))
        .layer(AuditLayer::new(auditor.clone()));
    let (addr, server) = audit_tests::serve(app).await;
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut answered = 0;
    let mut stopped = false;
    let mut restarted = false;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(16) {
        if !stopped && started.elapsed() > Duration::from_secs(2) {
            pg_ctl(&["-m", "fast", "stop"]);
            stopped = true;
        }
        if stopped && !restarted && started.elapsed() > Duration::from_secs(12) {
            pg_ctl(&["start"]);
            restarted = true;
        }
        let r = client
            .get(format!("http://{addr}/ping/{n}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("every request is answered, the store down or not");
        assert_eq!(r.status(), 200);
        answered += 1;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped && restarted);
    server.abort();
    let m = guard.shutdown().await;
    assert!(m.spilled > 0, "the outage went to the journal: {m:?}");
    assert_eq!(m.failed + m.dropped, 0, "{m:?}");

    let store = audit_runtime::Store::open(&connection).await.unwrap();
    let stored = store
        .count(audit_runtime::Collection::Access, &Filter::all())
        .await
        .unwrap();
    assert_eq!(stored, answered, "{m:?}");
    let accesses = Access::objects().fetch(&store).await.unwrap();
    let mut paths: Vec<&str> = accesses.iter().map(|a| a.request.path.as_str()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len() as u64, answered, "each request once");
    let DbConnection::Postgres { .. } = connection else {
        unreachable!()
    };
}
