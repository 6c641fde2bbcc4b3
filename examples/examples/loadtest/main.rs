//! Overhead of auditing, measured side by side in one run: the same axum app (one JSON handler
//! doing trivial work) bare, behind tower-http's `TraceLayer` writing JSON lines through a
//! non-blocking appender, and audited (sync and async on SQLite, async on MongoDB when
//! `MONGODB_URI` is set), driven with the same HTTP load over loopback, rounds interleaved.
//!
//! ```sh
//! cargo run --release --example loadtest -- --requests 20000 --concurrency 32
//! cargo run --release --example loadtest -- --rate 1000 --seconds 10      # open loop
//! ```
//!
//! Prints one JSON line per configuration, the ratios to `bare` and `trace-json`, and the batched
//! insert rate of the same documents straight into the same SQLite schema (`raw-store`).

use audit_runtime::bson;
use audit_runtime::http::AuditLayer;
use audit_runtime::internals::default_indexes;
use audit_runtime::internals::{create_index_sql, open_connection};
use audit_runtime::{Access, AuditConfig, Auditor, Collection, DbConnection, Filter, WriterGuard};
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
#[command(about = "Overhead of auditing against bare axum and tower-http tracing")]
struct Args {
    /// Requests per configuration (closed loop).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop at this many requests per second instead.
    #[arg(long)]
    rate: Option<u64>,
    /// Duration of an open-loop run per configuration.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Interleaved rounds (each configuration gets requests / rounds per round).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Only these configurations (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Where the audited SQLite stores go (a directory; default: a temporary one).
    #[arg(long)]
    db: Option<std::path::PathBuf>,
}

async fn work(Path(n): Path<u64>) -> Json<serde_json::Value> {
    let sum: u64 = (0..n % 100).sum();
    Json(serde_json::json!({ "n": n, "sum": sum, "ok": true }))
}

fn app() -> Router {
    Router::new().route("/work/{n}", get(work))
}

/// Latencies in 1 µs buckets up to 100 ms (then one overflow bucket): constant memory whatever the
/// number of requests, so the harness's own footprint does not grow with the run.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u32>,
    count: u64,
}

impl Histogram {
    const MAX_US: usize = 100_000;

    fn new() -> Self {
        Histogram {
            buckets: vec![0; Self::MAX_US + 1],
            count: 0,
        }
    }

    fn record(&mut self, us: u32) {
        self.buckets[(us as usize).min(Self::MAX_US)] += 1;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    fn percentile(&self, p: f64) -> u32 {
        let target = ((self.count as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (us, n) in self.buckets.iter().enumerate() {
            seen += *n as u64;
            if seen >= target {
                return us as u32;
            }
        }
        Self::MAX_US as u32
    }
}

struct Config {
    name: &'static str,
    addr: SocketAddr,
    auditor: Option<Auditor>,
    guard: Option<WriterGuard>,
    latencies: Histogram,
    elapsed: Duration,
    requests: usize,
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn audited(name: &'static str, conn: DbConnection, run_async: bool) -> Config {
    // A long deadline: the count after shutdown must be the whole story, even on a slow store.
    let toml = format!("run_async = {run_async}\nflush_timeout_ms = 600000");
    let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn);
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    let addr = serve(app().layer(AuditLayer::new(auditor.clone()))).await;
    Config {
        name,
        addr,
        auditor: Some(auditor),
        guard: Some(guard),
        latencies: Histogram::new(),
        elapsed: Duration::ZERO,
        requests: 0,
    }
}

/// Closed loop: `concurrency` clients send `n` requests in all; latencies in µs.
async fn closed_loop(
    client: &reqwest::Client,
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> (Histogram, Duration) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Histogram::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return lat;
                }
                let t = Instant::now();
                let res = client
                    .get(format!("http://{addr}/work/{i}"))
                    .send()
                    .await
                    .expect("request");
                assert!(res.status().is_success());
                let _ = res.bytes().await.expect("body");
                lat.record(t.elapsed().as_micros() as u32);
            }
        }));
    }
    let mut all = Histogram::new();
    for t in tasks {
        all.merge(&t.await.unwrap());
    }
    (all, start.elapsed())
}

/// Open loop: requests scheduled at a fixed rate; latency counted from the scheduled time, so a
/// slow server cannot hide its queueing (no coordinated omission).
async fn open_loop(
    client: &reqwest::Client,
    addr: SocketAddr,
    rate: u64,
    seconds: u64,
) -> (Histogram, Duration) {
    let total = (rate * seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .get(format!("http://{addr}/work/{i}"))
                .send()
                .await
                .expect("request");
            let _ = res.bytes().await.expect("body");
            at.elapsed().as_micros() as u32
        }));
    }
    let mut all = Histogram::new();
    for t in tasks {
        all.record(t.await.unwrap());
    }
    (all, start.elapsed())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The batched insert rate of these documents straight into the same schema with rusqlite.
fn raw_store_rate(docs: &[Access], dir: &std::path::Path) -> f64 {
    let path = dir.join("raw.db");
    let mut conn = open_connection(&path).unwrap();
    for spec in default_indexes(Collection::Access) {
        conn.execute_batch(&create_index_sql(Collection::Access, &spec))
            .unwrap();
    }
    let start = Instant::now();
    for chunk in docs.chunks(100) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached("INSERT INTO audit_access (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING").unwrap();
            for a in chunk {
                let blob = bson::to_vec(a).unwrap();
                stmt.execute(rusqlite::params![bson::oid::ObjectId::new().to_hex(), blob])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().unwrap();
    let dir = args.db.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();

    // What a Rust user would pick instead of auditing: TraceLayer + JSON lines, non-blocking.
    let log = tracing_appender::rolling::never(&dir, "trace.jsonl");
    let (writer, _log_guard) = tracing_appender::non_blocking(log);
    tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_max_level(tracing::Level::DEBUG)
        .init();

    let wanted = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == name))
    };
    let mut configs = Vec::new();
    if wanted("bare") {
        configs.push(Config {
            name: "bare",
            addr: serve(app()).await,
            auditor: None,
            guard: None,
            latencies: Histogram::new(),
            elapsed: Duration::ZERO,
            requests: 0,
        });
    }
    if wanted("trace-json") {
        let addr = serve(app().layer(tower_http::trace::TraceLayer::new_for_http())).await;
        configs.push(Config {
            name: "trace-json",
            addr,
            auditor: None,
            guard: None,
            latencies: Histogram::new(),
            elapsed: Duration::ZERO,
            requests: 0,
        });
    }
    if wanted("audited-sync-sqlite") {
        configs.push(
            audited(
                "audited-sync-sqlite",
                DbConnection::Sqlite(dir.join("sync.db")),
                false,
            )
            .await,
        );
    }
    if wanted("audited-async-sqlite") {
        configs.push(
            audited(
                "audited-async-sqlite",
                DbConnection::Sqlite(dir.join("async.db")),
                true,
            )
            .await,
        );
    }
    if let (true, Ok(uri)) = (
        wanted("audited-async-mongodb"),
        std::env::var("MONGODB_URI"),
    ) {
        let conn = DbConnection::Mongo {
            uri,
            database: format!("audit_load_{}", bson::oid::ObjectId::new().to_hex()),
        };
        configs.push(audited("audited-async-mongodb", conn, true).await);
    }

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    // Warm-up: connections, caches, the stores' first pages.
    for c in &configs {
        closed_loop(&client, c.addr, 500.min(args.requests), args.concurrency).await;
    }
    let rounds = args.rounds.max(1);
    for _ in 0..rounds {
        for c in configs.iter_mut() {
            let (lat, took) = match args.rate {
                Some(rate) => {
                    open_loop(&client, c.addr, rate, (args.seconds / rounds as u64).max(1)).await
                }
                None => {
                    closed_loop(&client, c.addr, args.requests / rounds, args.concurrency).await
                }
            };
            c.requests += lat.count as usize;
            c.latencies.merge(&lat);
            c.elapsed += took;
        }
    }

    let mut rps = std::collections::BTreeMap::new();
    let mut template = None;
    for c in configs.iter_mut() {
        let mut records = serde_json::Value::Null;
        if let (Some(auditor), Some(guard)) = (c.auditor.clone(), c.guard.take()) {
            let m = guard.shutdown().await;
            let store = auditor.store().unwrap();
            let stored = store
                .count(Collection::Access, &Filter::all())
                .await
                .unwrap();
            // Warm-up requests are stored too.
            let expected = c.requests as u64 + 500.min(args.requests) as u64;
            records = serde_json::json!(stored);
            if stored != expected || m.failed > 0 || m.dropped > 0 {
                eprintln!(
                    "{}: {stored} records for {expected} requests ({m:?})",
                    c.name
                );
            }
            if template.is_none() {
                template = Access::objects().limit(1).fetch(store).await.unwrap().pop();
            }
        }
        let r = c.requests as f64 / c.elapsed.as_secs_f64();
        rps.insert(c.name, r);
        println!(
            "{}",
            serde_json::json!({
                "config": c.name,
                "requests": c.requests,
                "rps": r.round(),
                "p50_us": c.latencies.percentile(0.50),
                "p99_us": c.latencies.percentile(0.99),
                "records_written": records,
                "rss_mb": (rss_mb() * 10.0).round() / 10.0,
            })
        );
    }
    for (name, r) in &rps {
        let vs = |base: &str| rps.get(base).map(|b| ((r / b) * 100.0).round() / 100.0);
        println!(
            "{}",
            serde_json::json!({ "ratio": name, "rps_vs_bare": vs("bare"), "rps_vs_trace_json": vs("trace-json") })
        );
    }
    if let Some(t) = template {
        let docs: Vec<Access> = (0..20_000)
            .map(|_| Access {
                id: bson::oid::ObjectId::new(),
                ..t.clone()
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "config": "raw-store", "docs_per_s": raw_store_rate(&docs, &dir).round() })
        );
    }
}
