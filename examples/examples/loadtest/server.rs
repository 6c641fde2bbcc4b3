//! One configuration under test, in its own process: the same axum app bare, behind tower-http's
//! `TraceLayer` writing JSON lines, or audited. The driver talks to it over stdin/stdout, one JSON
//! line each way: `stats` (CPU and memory so far) and `finish` (shut the writer down, count what
//! was stored).
//!
//! The requests are served on a runtime of their own (threads named `http`); the audit writer and
//! the log appender run on threads named `audit-writer` and `trace-writer`. Their CPU time, read
//! per thread from `/proc/self/task/*/schedstat`, is the cost of storing; the rest of the process's
//! CPU time is the cost of the request path.

use audit_runtime::http::AuditLayer;
use audit_runtime::{AuditConfig, Auditor, Collection, DbConnection, Filter, WriterGuard};
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::io::BufRead;
use std::time::Duration;

async fn work(Path(n): Path<u64>) -> Json<serde_json::Value> {
    let sum: u64 = (0..n % 100).sum();
    Json(json!({ "n": n, "sum": sum, "ok": true }))
}

fn app() -> Router {
    Router::new().route("/work/{n}", get(work))
}

/// Threads whose CPU time is storage, not request handling.
const BACKGROUND: [&str; 2] = ["audit-writer", "trace-writer"];

pub(crate) fn run(config: &str, dir: &std::path::Path) {
    let http = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("http")
        .enable_all()
        .build()
        .expect("http runtime");
    // Kept alive so that their CPU time stays readable per thread until the end.
    let writer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("audit-writer")
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .expect("writer runtime");

    let mut _log_guard = None;
    let mut audit: Option<(Auditor, WriterGuard)> = None;
    let router = match config {
        "bare" | "bare-again" => app(),
        "trace-json" => {
            // What a Rust user would pick instead of auditing: TraceLayer + JSON lines through a
            // non-blocking appender.
            let log = tracing_appender::rolling::never(dir, "trace.jsonl");
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .thread_name("trace-writer")
                .finish(log);
            _log_guard = Some(guard);
            tracing_subscriber::fmt()
                .json()
                .with_writer(writer)
                .with_max_level(tracing::Level::DEBUG)
                .init();
            app().layer(tower_http::trace::TraceLayer::new_for_http())
        }
        audited => {
            let mut extra = String::new();
            let (run_async, conn) = match audited {
                "audited-sync-sqlite" => (false, DbConnection::Sqlite(dir.join("sync.db"))),
                "audited-async-sqlite" => (true, DbConnection::Sqlite(dir.join("async.db"))),
                // The same, every record also forwarded as OCSF to a JSON-lines file.
                "audited-async-sqlite-forward" => {
                    extra = format!(
                        "[forward]\nfile = {:?}",
                        dir.join("forward.ocsf.jsonl").display().to_string()
                    );
                    (true, DbConnection::Sqlite(dir.join("forward.db")))
                }
                "audited-async-mongodb" => (
                    true,
                    DbConnection::Mongo {
                        uri: std::env::var("MONGODB_URI").expect("MONGODB_URI"),
                        database: format!(
                            "audit_load_{}",
                            audit_runtime::bson::oid::ObjectId::new().to_hex()
                        ),
                    },
                ),
                "audited-async-postgres" => (true, postgres_database()),
                "audited-sync-postgres" => (false, postgres_database()),
                other => panic!("unknown configuration `{other}`"),
            };
            // A long deadline: the count after shutdown must be the whole story, even on a slow
            // store.
            let toml = format!("run_async = {run_async}\nflush_timeout_ms = 600000\n{extra}");
            let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
                .expect("settings")
                .with_connection(conn);
            let (auditor, guard) = writer_rt
                .block_on(Auditor::start(cfg))
                .expect("start the auditor");
            let router = app().layer(AuditLayer::new(auditor.clone()));
            audit = Some((auditor, guard));
            router
        }
    };

    let listener = http
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    http.spawn(async move { axum::serve(listener, router).await.expect("serve") });
    println!("{}", json!({ "listening": addr.to_string() }));

    for line in std::io::stdin().lock().lines() {
        match line.expect("stdin").trim() {
            "stats" => {
                let mut s = stats();
                if let Some((auditor, _)) = &audit {
                    // Records waiting in the writer's queue: bounded memory that fills under load.
                    let queued = auditor.metrics().queue_bytes as f64 / (1024.0 * 1024.0);
                    s["queue_mb"] = json!((queued * 10.0).round() / 10.0);
                }
                println!("{s}");
            }
            "finish" => {
                let mut out = json!({ "records": null });
                if let Some((auditor, guard)) = audit.take() {
                    let m = writer_rt.block_on(guard.shutdown());
                    let store = auditor.store().expect("a store");
                    let stored = writer_rt
                        .block_on(store.count(Collection::Access, &Filter::all()))
                        .expect("count");
                    out = json!({
                        "records": stored,
                        "failed": m.failed,
                        "dropped": m.dropped,
                        "spilled": m.spilled,
                        "forwarded": m.forwarded,
                    });
                }
                let mut s = stats();
                s.as_object_mut()
                    .unwrap()
                    .extend(out.as_object().unwrap().clone());
                println!("{s}");
                return;
            }
            other => panic!("unknown command `{other}`"),
        }
    }
}

/// CPU time of the whole process and of its background threads (µs), and memory (MB).
fn stats() -> serde_json::Value {
    let (rss, hwm) = memory_mb();
    // Bytes handed to write(2) and friends: files and sockets alike, so the difference between two
    // configurations is what storing writes.
    let written = std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    json!({ "cpu_us": process_cpu_us(), "background_us": background_cpu_us(), "rss_mb": rss, "hwm_mb": hwm, "written": written })
}

fn process_cpu_us() -> f64 {
    cpu_time::ProcessTime::now().as_duration().as_secs_f64() * 1e6
}

fn background_cpu_us() -> f64 {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !BACKGROUND.iter().any(|b| comm.trim().starts_with(b)) {
            continue;
        }
        // The first field is the thread's time on a CPU, in nanoseconds.
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        total += ns / 1e3;
    }
    total
}

fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A fresh database on the PostgreSQL server of `POSTGRES_URI` (a role that may create them).
fn postgres_database() -> DbConnection {
    let base = std::env::var("POSTGRES_URI").expect("POSTGRES_URI");
    let name = format!(
        "audit_load_{}",
        audit_runtime::bson::oid::ObjectId::new().to_hex()
    );
    let out = std::process::Command::new("psql")
        .arg(&base)
        .args(["-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "cannot create {name}: {out:?}");
    let (server, _) = base.rsplit_once('/').expect("a database in POSTGRES_URI");
    DbConnection::Postgres {
        uri: format!("{server}/{name}"),
    }
}
