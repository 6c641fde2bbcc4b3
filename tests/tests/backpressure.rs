//! Back-pressure that bounds memory and loses nothing: with the store locked and a tiny queue,
//! responses whose records are finished at the end of their JSON body wait for room in the queue
//! (or, with a journal, the records go there), the writer never holds more than
//! `queue_max_bytes`, and once the store is back every record is stored.

use audit_runtime::{AuditConfig, Auditor, Collection, DbConnection, Filter};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEMO_TOML: &str = include_str!("../../examples/demo.toml");

/// SQLite's write lock on `db`, held by another connection until [`StoreLock::release`].
struct StoreLock(rusqlite::Connection);

impl StoreLock {
    fn take(db: &std::path::Path) -> StoreLock {
        let conn = audit_runtime::internals::open_connection(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        StoreLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Starts an auditor with the demo's provider registered (the demo config names it).
async fn start(cfg: AuditConfig) -> (Auditor, audit_runtime::WriterGuard) {
    demo::auditor_builder(cfg, &demo::Polls::temporary().await.unwrap())
        .start()
        .await
        .unwrap()
}

async fn serve(auditor: Auditor) -> (String, tokio::task::JoinHandle<()>) {
    let app = demo::app(auditor, demo::Polls::temporary().await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), task)
}

/// Sends `n` requests to distinct paths, each of which must succeed.
async fn load(client: &reqwest::Client, base: &str, from: usize, n: usize) {
    for i in from..from + n {
        let res = client
            .get(format!("{base}/access/args/{i}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Waits (bounded by a deadline) until `done` holds for the auditor's counters.
async fn wait_for(
    auditor: &Auditor,
    what: &str,
    done: impl Fn(&audit_runtime::MetricsSnapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&auditor.metrics()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            auditor.metrics()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This process's resident memory in KiB. Fails the test when it cannot be read: a memory bound
/// that reads 0 would pass without checking anything.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("the memory check needs /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
}

/// With the store locked and a tiny queue, 2,000 requests whose records are finished at the end
/// of a JSON body hold no more than `queue_max_bytes` of records and no task per record; without
/// a journal they wait for the store, with one they go on; once the store is back every record is
/// stored.
async fn a_full_queue_holds_bounded_memory(with_journal: bool) {
    eprintln!("with a journal: {with_journal}");
    const REQUESTS: usize = 2_000;
    const MAX_BYTES: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let spill = if with_journal {
        format!(
            "spill_path = {:?}\n",
            dir.path().join("audit.spill").display()
        )
    } else {
        String::new()
    };
    let toml = format!(
        "run_async = true\nqueue_capacity = 4\nqueue_max_bytes = {MAX_BYTES}\nflush_timeout_ms = 60000\n{spill}{DEMO_TOML}\n"
    );
    let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = start(cfg).await;
    let (base, task) = serve(auditor.clone()).await;
    let client = reqwest::Client::new();
    load(&client, &base, 0, 20).await;
    auditor.flush().await;

    let locker = StoreLock::take(&db);
    let written_before = auditor.metrics().written;
    let before = rss_kib();
    // The bytes held, sampled while the requests are answered.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (auditor, sampling) = (auditor.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(auditor.metrics().queue_bytes);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, base, answered) = (client.clone(), base.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let pad = "p".repeat(20_000);
            for i in (c..REQUESTS).step_by(8) {
                // A 20 KB query string, captured into the record: 2,000 of them would take
                // 40 MB if the writer held them all.
                let res = client
                    .get(format!("{base}/access/args/{}/?pad={pad}", 1_000 + i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                res.bytes().await.unwrap();
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    if with_journal {
        // The writer moves what it cannot store to the journal, so the requests go on.
        for t in tasks.drain(..) {
            t.await.unwrap();
        }
    } else {
        // Nowhere to put the records: the responses wait for room in the queue (back-pressure),
        // and no record is dropped.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let n = answered.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n < 100,
            "{n} requests answered while the store was locked and the queue full"
        );
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    eprintln!("memory grew {grown_mib} MiB while the store was locked");
    assert_eq!(
        auditor.metrics().written,
        written_before,
        "the store was locked throughout"
    );
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.await.unwrap();
    assert!(
        most <= MAX_BYTES,
        "the writer held {most} bytes, over its {MAX_BYTES}"
    );
    assert!(
        grown_mib < 16,
        "memory grew {grown_mib} MiB while the store was locked"
    );
    locker.release();
    for t in tasks {
        t.await.unwrap();
    }

    wait_for(&auditor, "every record settled", |m| {
        m.queue_depth == 0 && m.written - m.replayed + m.spilled + m.failed == m.enqueued
    })
    .await;
    auditor.flush().await;
    task.abort();
    let m = guard.shutdown().await;
    let stored = auditor
        .store()
        .unwrap()
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap();
    let requests = (REQUESTS + 20) as u64;
    assert_eq!(
        (stored, m.dropped, m.failed),
        (requests, 0, 0),
        "every request stored: {m:?}"
    );
    if with_journal {
        assert!(m.spilled > 0, "{m:?}");
    } else {
        assert_eq!(m.spilled, 0, "{m:?}");
    }
}

/// One test, run in its own binary, so no other test's allocations show in the memory measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_holds_bounded_memory_and_every_record_is_stored_or_counted() {
    // Without a journal, the responses wait for the store ...
    a_full_queue_holds_bounded_memory(false).await;
    // ... with one, the records are journaled and stored once the store is back.
    a_full_queue_holds_bounded_memory(true).await;
}

fn config(toml: &str, env: &[(&str, &str)]) -> Result<AuditConfig, audit_runtime::ConfigError> {
    AuditConfig::from_sources(Some(toml), env.iter().map(|(k, v)| (*k, *v)))
}

#[test]
fn queue_max_bytes_is_read_validated_and_defaults_to_64_mib() {
    assert_eq!(config("", &[]).unwrap().queue_max_bytes, 64 * 1024 * 1024);
    assert_eq!(
        config("queue_max_bytes = 1000", &[])
            .unwrap()
            .queue_max_bytes,
        1000
    );
    assert_eq!(
        config(
            "queue_max_bytes = 1000",
            &[("AUDIT_QUEUE_MAX_BYTES", "2048")]
        )
        .unwrap()
        .queue_max_bytes,
        2048
    );
    for bad in [
        "queue_max_bytes = 0",
        "queue_max_bytes = -5",
        "queue_max_bytes = \"x\"",
    ] {
        let e = config(bad, &[]).unwrap_err().to_string();
        assert!(e.contains("queue_max_bytes"), "{bad}: {e}");
    }
    let e = config("", &[("AUDIT_QUEUE_MAX_BYTES", "lots")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("AUDIT_QUEUE_MAX_BYTES"), "{e}");
}

#[test]
fn the_quarantine_file_is_set_or_sits_beside_the_journal_or_the_database() {
    let db = DbConnection::Sqlite("/data/audit.db".into());
    let q = |toml: &str| {
        config(toml, &[])
            .unwrap()
            .with_connection(db.clone())
            .quarantine_file()
    };
    assert_eq!(q(""), std::path::PathBuf::from("/data/audit.db.quarantine"));
    assert_eq!(
        q("spill_path = \"/spill/audit.spill\""),
        std::path::PathBuf::from("/spill/audit.spill.quarantine")
    );
    assert_eq!(
        q("spill_path = \"/s\"\nquarantine_path = \"/q/refused\""),
        std::path::PathBuf::from("/q/refused")
    );
    assert_eq!(
        config("", &[("AUDIT_QUARANTINE_PATH", "/env/q")])
            .unwrap()
            .quarantine_file(),
        std::path::PathBuf::from("/env/q")
    );
}
