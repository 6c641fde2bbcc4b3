//! What auditing costs, measured side by side in one run: the same axum app (one JSON handler
//! doing trivial work) bare, behind tower-http's `TraceLayer` writing JSON lines, and audited
//! (sync and async on SQLite; async on MongoDB when `MONGODB_URI` is set). Each configuration is
//! its own server process, pinned to one core; this process generates the load from another core,
//! so the generator never steals the servers' CPU. Rounds are interleaved, so a noisy moment of the
//! machine is spread over every configuration.
//!
//! ```sh
//! cargo run --release -p audit-examples --example loadtest -- --json target/loadtest.json
//! cargo run --release -p audit-examples --example loadtest -- --requests 2000 --rate 0   # smoke run
//! cargo run --release -p audit-examples --example loadtest -- --memory                  # + 1,000,000 requests
//! ```
//!
//! Prints one JSON line per configuration and loop (rps, p50/p99, request-path CPU per request,
//! writer CPU per record, records written, RSS), the ratios, then PASS/FAIL per target. Exits with
//! an error when an audited server stored a different number of records than it answered.

mod client;
mod server;
mod store;

use clap::Parser;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

#[derive(Parser, Clone)]
#[command(about = "Overhead of auditing against bare axum and tower-http tracing")]
struct Args {
    /// Requests per configuration in the closed loop.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent connections in the closed loop.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Requests per second of the open loop (0: no open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of open loop per configuration.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Interleaved rounds (each configuration gets a share of the requests per round).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Only these configurations (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// Also drive one audited server (`--memory-config`, default the async SQLite one) to
    /// 1,000,000 requests and compare its memory with the memory after 100,000.
    #[arg(long)]
    memory: bool,
    /// The configuration `--memory` drives.
    #[arg(long, default_value = "audited-async-sqlite")]
    memory_config: String,
    /// Do not pin servers and generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// Where the stores and the trace log go (default: a temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Also write every figure to this JSON file (input of `scripts/perf-chart.py`).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Internal: run one configuration's server.
    #[arg(long, hide = true)]
    serve: Option<String>,
}

const CONFIGS: [&str; 9] = [
    "bare",
    "trace-json",
    "audited-sync-sqlite",
    "audited-async-sqlite",
    "audited-async-sqlite-forward",
    "audited-async-mongodb",
    "audited-async-postgres",
    "audited-sync-postgres",
    "bare-again",
];

/// Warm-up requests per configuration (stored by the audited ones, and counted as such).
const WARM_UP: usize = 500;

fn main() {
    let args = Args::parse();
    let dir_holder = tempfile::tempdir().unwrap();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| dir_holder.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(config) = &args.serve {
        return server::run(config, &dir);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = !args.no_pin && cpus >= 2 && which("taskset");
    if pin {
        // The generator on the last core, the servers on the first.
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &(cpus - 1).to_string()])
            .arg(std::process::id().to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("taskset");
        assert!(status.success(), "taskset failed: {status}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(drive(args, dir, cpus, pin));
    if !ok {
        std::process::exit(1);
    }
}

fn which(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One server process and what was measured against it.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Requests answered so far, warm-up included.
    sent: u64,
    runs: BTreeMap<&'static str, Run>,
}

#[derive(Default)]
struct Run {
    latencies: Option<client::Histogram>,
    elapsed: Duration,
    requests: u64,
    cpu_us: f64,
    background_us: f64,
    written: f64,
    generator_us: f64,
}

impl Server {
    async fn start(name: &'static str, dir: &std::path::Path, pin: bool) -> Server {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = if pin {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", "0"]).arg(exe);
            c
        } else {
            tokio::process::Command::new(exe)
        };
        let own = dir.join(name);
        std::fs::create_dir_all(&own).unwrap();
        let mut child = cmd
            .arg("--serve")
            .arg(name)
            .arg("--dir")
            .arg(&own)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a server");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let hello: Value = read_json(&mut stdout, name).await;
        let addr = hello["listening"].as_str().unwrap().parse().unwrap();
        Server {
            name,
            addr,
            child,
            stdin,
            stdout,
            sent: 0,
            runs: BTreeMap::new(),
        }
    }

    async fn ask(&mut self, command: &str) -> Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        read_json(&mut self.stdout, self.name).await
    }

    /// Runs one share of a loop against this server, adding its latencies and CPU times.
    async fn measure(&mut self, lp: &'static str, args: &Args, rounds: usize) {
        let before = self.ask("stats").await;
        let generator = cpu_time::ProcessTime::now();
        let (lat, took) = if lp == "open" {
            client::open_loop(self.addr, args.rate, (args.seconds / rounds as u64).max(1)).await
        } else {
            client::closed_loop(self.addr, args.requests / rounds, args.concurrency).await
        };
        let generator = generator.elapsed();
        let after = self.ask("stats").await;
        self.sent += lat.count;
        let run = self.runs.entry(lp).or_default();
        run.requests += lat.count;
        run.elapsed += took;
        run.cpu_us += f(&after["cpu_us"]) - f(&before["cpu_us"]);
        run.background_us += f(&after["background_us"]) - f(&before["background_us"]);
        run.written += f(&after["written"]) - f(&before["written"]);
        run.generator_us += generator.as_secs_f64() * 1e6;
        match &mut run.latencies {
            Some(h) => h.merge(&lat),
            None => run.latencies = Some(lat),
        }
    }
}

async fn read_json(lines: &mut Lines<BufReader<ChildStdout>>, name: &str) -> Value {
    let line = lines
        .next_line()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the `{name}` server exited"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{name}` said {line:?}: {e}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn round(x: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (x * p).round() / p
}

async fn drive(args: Args, dir: std::path::PathBuf, cpus: usize, pin: bool) -> bool {
    let wanted = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == name))
            && (name != "audited-async-mongodb" || std::env::var("MONGODB_URI").is_ok())
            && (!name.ends_with("-postgres") || std::env::var("POSTGRES_URI").is_ok())
    };
    let mut servers = Vec::new();
    for name in CONFIGS.into_iter().filter(|n| wanted(n)) {
        servers.push(Server::start(name, &dir, pin).await);
    }

    // Measured first, while every server is idle.
    let (capture_us, capture_bytes) = store::capture_and_serialise_us();

    let rounds = args.rounds.max(1);
    for s in servers.iter_mut() {
        let (lat, _) = client::closed_loop(s.addr, WARM_UP, args.concurrency).await;
        s.sent += lat.count;
    }
    for _ in 0..rounds {
        for s in servers.iter_mut() {
            s.measure("closed", &args, rounds).await;
        }
    }
    if args.rate > 0 {
        for _ in 0..rounds {
            for s in servers.iter_mut() {
                s.measure("open", &args, rounds).await;
            }
        }
    }

    let mut memory = None;
    if args.memory {
        if let Some(s) = servers.iter_mut().find(|s| s.name == args.memory_config) {
            memory = Some(memory_growth(s, args.concurrency).await);
        }
    }

    let mut ok = true;
    let mut runs = Vec::new();
    for s in servers.iter_mut() {
        let end = s.ask("finish").await;
        let _ = s.child.wait().await;
        let audited = s.name.starts_with("audited");
        if audited {
            let stored = end["records"].as_u64().unwrap_or(0);
            if stored != s.sent {
                ok = false;
                eprintln!(
                    "{}: {stored} records stored for {} requests answered ({end})",
                    s.name, s.sent
                );
            }
            // With forwarding, every stored record also reached the destination.
            if s.name.ends_with("-forward") && end["forwarded"].as_u64() != Some(stored) {
                ok = false;
                eprintln!(
                    "{}: {stored} records stored, {} forwarded",
                    s.name, end["forwarded"]
                );
            }
        }
        for (lp, run) in &s.runs {
            let lat = run.latencies.as_ref().unwrap();
            let n = run.requests.max(1) as f64;
            let line = json!({
                "config": s.name,
                "loop": lp,
                "rate": (*lp == "open").then_some(args.rate),
                "requests": run.requests,
                "rps": round(run.requests as f64 / run.elapsed.as_secs_f64(), 0),
                "p50_us": lat.percentile(0.50),
                "p99_us": lat.percentile(0.99),
                "cpu_us_per_request": round(run.cpu_us / n, 1),
                "request_path_cpu_us": round((run.cpu_us - run.background_us) / n, 1),
                "writer_cpu_us_per_record": (s.name != "bare" && s.name != "bare-again")
                    .then(|| round(run.background_us / n, 1)),
                "written_bytes_per_request": round(run.written / n, 0),
                // The generator's share of its own core: near 1.0, it (not the server) set the pace.
                "generator_busy": round(run.generator_us / 1e6 / run.elapsed.as_secs_f64(), 2),
                "records_written": audited.then(|| end["records"].clone()),
                "records_expected": audited.then_some(s.sent),
                "rss_mb": end["rss_mb"],
            });
            println!("{line}");
            runs.push(line);
        }
    }

    // The store alone: the same documents through the store and into the earlier schema.
    let template = {
        let mut a = audit_runtime::Access::new(
            "/work/42",
            chrono::Utc::now(),
            audit_runtime::AccessView::new("loadtest::work", "loadtest", "work"),
        );
        a.request.METADATA = audit_runtime::bson::doc! { "REQUEST_METHOD": "GET" };
        for i in 0..12 {
            a.request
                .METADATA
                .insert(format!("HTTP_X_HEADER_{i}"), "v".repeat(80));
        }
        a.user = Some(audit_runtime::AccessUser::anonymous());
        a
    };
    let n = args.requests.clamp(1_000, 50_000);
    let docs = store::documents(&template, n);
    // Two rounds, interleaved, each into fresh files; the mean of both.
    let mut store_rates = (0.0, 0.0);
    for round in 0..2 {
        let d = dir.join(format!("stores-{round}"));
        std::fs::create_dir_all(&d).unwrap();
        store_rates.0 += store::expression_schema_rate(&docs, &d) / 2.0;
        store_rates.1 += store::store_rate(&docs, &d).await / 2.0;
    }
    let stores = json!({
        "docs": n,
        "doc_bytes": docs[0].as_bytes().len(),
        "store_docs_per_s": round(store_rates.1, 0),
        "expression_schema_docs_per_s": round(store_rates.0, 0),
        "capture_serialise_us": round(capture_us, 2),
        "capture_bytes": capture_bytes,
    });
    println!("{stores}");

    let get = |config: &str, lp: &str, key: &str| {
        runs.iter()
            .find(|r| r["config"] == config && r["loop"] == lp)
            .and_then(|r| r[key].as_f64())
    };
    let ratio = |a: Option<f64>, b: Option<f64>| Some(round(a? / b?, 2));
    let diff = |a: Option<f64>, b: Option<f64>| Some(round(a? - b?, 1));
    let rps = |c: &str| get(c, "closed", "rps");
    let mut ratios = serde_json::Map::new();
    for c in CONFIGS {
        if rps(c).is_some() {
            ratios.insert(
                c.to_owned(),
                json!({ "rps_vs_bare": ratio(rps(c), rps("bare")), "rps_vs_trace_json": ratio(rps(c), rps("trace-json")) }),
            );
        }
    }
    println!("{}", json!({ "ratios": ratios }));

    let p99 = |c: &str| get(c, "open", "p99_us");
    let path_cpu = |c: &str| get(c, "closed", "request_path_cpu_us");
    let targets = vec![
        target(
            "async SQLite rps / trace-json rps",
            ratio(rps("audited-async-sqlite"), rps("trace-json")),
            ">=",
            1.0,
        ),
        target(
            "async MongoDB rps / trace-json rps",
            ratio(rps("audited-async-mongodb"), rps("trace-json")),
            ">=",
            1.2,
        ),
        target(
            "async SQLite forwarding to a file rps / without",
            ratio(
                rps("audited-async-sqlite-forward"),
                rps("audited-async-sqlite"),
            ),
            ">=",
            0.95,
        ),
        target(
            "async PostgreSQL rps / trace-json rps",
            ratio(rps("audited-async-postgres"), rps("trace-json")),
            ">=",
            1.0,
        ),
        target(
            "sync SQLite rps / async SQLite rps",
            ratio(rps("audited-sync-sqlite"), rps("audited-async-sqlite")),
            ">=",
            0.8,
        ),
        target(
            "request-path CPU above bare (us)",
            diff(path_cpu("audited-async-sqlite"), path_cpu("bare")),
            "<=",
            5.0,
        ),
        target(
            "capture and serialise one access (us)",
            Some(round(capture_us, 2)),
            "<=",
            3.0,
        ),
        target(
            "store docs/s / expression-index schema docs/s",
            ratio(Some(store_rates.1), Some(store_rates.0)),
            ">=",
            2.0,
        ),
        target(
            "open-loop p99 above bare (us)",
            diff(p99("audited-async-sqlite"), p99("bare")),
            "<=",
            100.0,
        ),
        target(
            "open-loop p99 above trace-json (us)",
            diff(p99("audited-async-sqlite"), p99("trace-json")),
            "<=",
            50.0,
        ),
        target(
            "RSS after 1M / after 100k requests",
            memory.as_ref().and_then(|m: &Value| m["ratio"].as_f64()),
            "<=",
            1.10,
        ),
    ];
    if let (Some(a), Some(b)) = (p99("bare"), p99("bare-again")) {
        println!(
            "{}",
            json!({ "noise": { "open_loop_p99_bare_vs_bare_us": round((a - b).abs(), 1) } })
        );
    }
    for t in &targets {
        println!(
            "{:<4} {:<48} {:>10} {} {}",
            match t["pass"].as_bool() {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a",
            },
            t["target"].as_str().unwrap(),
            t["value"]
                .as_f64()
                .map_or("not run".into(), |v| v.to_string()),
            t["op"].as_str().unwrap(),
            t["limit"]
        );
    }

    if let Some(path) = &args.json {
        let doc = json!({
            "machine": { "cpus": cpus, "pinned": pin },
            "args": { "requests": args.requests, "concurrency": args.concurrency, "rate": args.rate, "seconds": args.seconds, "rounds": rounds },
            "runs": runs,
            "stores": stores,
            "memory": memory,
            "ratios": ratios,
            "targets": targets,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    ok
}

fn target(name: &str, value: Option<f64>, op: &str, limit: f64) -> Value {
    let pass = value.map(|v| if op == ">=" { v >= limit } else { v <= limit });
    json!({ "target": name, "value": value, "op": op, "limit": limit, "pass": pass })
}

/// Drives `s` to 1,000,000 requests in all, reading its memory (and the bytes its writer's queue
/// holds) at 100,000, 250,000, 500,000 and 1,000,000.
async fn memory_growth(s: &mut Server, concurrency: usize) -> Value {
    let mut at = Vec::new();
    for goal in [100_000u64, 250_000, 500_000, 1_000_000] {
        while s.sent < goal {
            let n = (goal - s.sent).min(50_000) as usize;
            let (lat, _) = client::closed_loop(s.addr, n, concurrency).await;
            s.sent += lat.count;
        }
        let stats = s.ask("stats").await;
        at.push(
            json!({ "requests": goal, "rss_mb": stats["rss_mb"], "queue_mb": stats["queue_mb"] }),
        );
    }
    let rss = |i: usize| f(&at[i]["rss_mb"]);
    let m = json!({
        "rss_mb_100k": rss(0),
        "rss_mb_1m": rss(3),
        "ratio": round(rss(3) / rss(0), 2),
        "series": at,
    });
    println!("{}", json!({ "memory": m, "config": s.name }));
    m
}
