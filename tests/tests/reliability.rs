//! Faults: store outages under load (MongoDB stopped, SQLite locked), shutdown with the store
//! down, a SIGKILL after journaling, idempotent replays — nothing lost, nothing duplicated, no
//! request broken — and the counters that make every such event visible.

use audit_runtime::{
    Access, AccessView, AuditConfig, Auditor, Collection, DbConnection, Filter, Store,
};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEMO_TOML: &str = include_str!("../../examples/demo.toml");

/// SQLite's write lock on `db`, held by another connection: the store cannot be written until
/// [`StoreLock::release`].
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

/// An access of a standalone job, to `path`.
fn job_access(path: String) -> Access {
    Access::new(path, chrono::Utc::now(), AccessView::new("t::x", "t", "x"))
}

/// Waits (bounded by a deadline) until `done` holds for the auditor's counters; fails the test
/// when the deadline passes.
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
        .expect("the memory checks need /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Records `n` job accesses under `/{prefix}/{i}`.
async fn record_jobs(auditor: &Auditor, prefix: &str, n: usize) {
    for i in 0..n {
        auditor
            .record_access(job_access(format!("/{prefix}/{i}")))
            .await;
    }
}

fn config(conn: DbConnection, journal: &std::path::Path, extra: &str) -> AuditConfig {
    let toml = format!("{DEMO_TOML}\n");
    // Settings that are not tables go before the demo's tables.
    let toml = format!(
        "run_async = true\nspill_path = {:?}\n{extra}\n{toml}",
        journal.display()
    );
    AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn)
}

/// Starts an auditor with the demo's provider registered (the demo config names it).
async fn start(
    cfg: AuditConfig,
) -> Result<(Auditor, audit_runtime::WriterGuard), audit_runtime::AuditError> {
    demo::auditor_builder(cfg, &demo::Polls::temporary().await.unwrap())
        .start()
        .await
}

async fn serve(auditor: Auditor) -> (String, tokio::task::JoinHandle<()>) {
    let polls = demo::Polls::temporary().await.unwrap();
    let app = demo::app(auditor, polls);
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

/// Sends `n` requests to distinct paths, each of which must succeed quickly.
async fn load(client: &reqwest::Client, base: &str, from: usize, n: usize) {
    for i in from..from + n {
        let started = Instant::now();
        let res = client
            .get(format!("{base}/access/args/{i}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} waited on the store"
        );
    }
}

/// Waits (bounded) until the store holds `n` accesses, then checks they are exactly the paths sent.
async fn all_stored_exactly_once(store: &Store, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap_or(0);
        if count as usize >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = Access::objects().fetch(store).await.unwrap();
    let paths: BTreeSet<String> = all.iter().map(|a| a.request.path.clone()).collect();
    let ids: BTreeSet<_> = all.iter().map(|a| a.id).collect();
    assert_eq!(all.len(), n, "every access stored, once");
    assert_eq!(ids.len(), n);
    // Every request went to its own path, but the model-action requests, which share one.
    let shared = all
        .iter()
        .filter(|a| a.request.path == "/modelaction/create/")
        .count();
    assert_eq!(paths.len(), n - shared + usize::from(shared > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_under_load_loses_nothing_and_blocks_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let (auditor, guard) = start(config(DbConnection::Sqlite(db.clone()), &journal, ""))
        .await
        .unwrap();
    let (base, task) = serve(auditor.clone()).await;
    let client = reqwest::Client::new();
    load(&client, &base, 0, 50).await;
    auditor.flush().await;

    // Another process-like connection takes the write lock: the store cannot be written.
    let locker = StoreLock::take(&db);
    load(&client, &base, 50, 200).await;
    // Model actions during the outage too.
    for _ in 0..20 {
        assert_eq!(
            client
                .post(format!("{base}/modelaction/create/"))
                .form(&[("question", "q")])
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // SQLite gives up waiting for the lock after 5 s; then the writer spills to the journal.
    wait_for(&auditor, "records to go to the journal", |m| m.spilled > 0).await;
    assert!(journal.exists());
    locker.release();

    load(&client, &base, 250, 50).await;
    auditor.flush().await;
    let store = auditor.store().unwrap().clone();
    // 300 accesses to /access/args/ and 20 to /modelaction/create/.
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap()
        < 320
        && Instant::now() < deadline
    {
        auditor.flush().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    all_stored_exactly_once(&store, 320).await;
    assert_eq!(
        store
            .count(Collection::ModelAction, &Filter::all())
            .await
            .unwrap(),
        20
    );
    task.abort();
    let m = guard.shutdown().await;
    assert_eq!((m.failed, m.dropped), (0, 0), "{m:?}");
    assert!(m.replayed > 0 && m.replayed == m.spilled, "{m:?}");
    assert!(!journal.exists(), "the journal is removed once replayed");
}

struct MongoServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl MongoServer {
    fn start(port: u16, dir: &std::path::Path) -> MongoServer {
        let server = std::env::var("SECANTUS_SERVER").unwrap_or_else(|_| {
            panic!("SECANTUS_SERVER is not set: run the tests with scripts/test.sh")
        });
        let child = Command::new(server)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--storage-path",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "test server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        MongoServer {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn restart(&mut self) {
        *self = MongoServer::start(self.port, &self.dir.clone());
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_stopped_for_ten_seconds_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("wt");
    std::fs::create_dir_all(&storage).unwrap();
    let mut server = MongoServer::start(free_port(), &storage);
    let uri = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
        server.port
    );
    let conn = DbConnection::Mongo {
        uri,
        database: "audit_outage".into(),
    };
    let journal = dir.path().join("audit.spill");
    let (auditor, guard) = start(config(conn, &journal, "")).await.unwrap();
    let (base, task) = serve(auditor.clone()).await;
    let client = reqwest::Client::new();
    load(&client, &base, 0, 50).await;
    auditor.flush().await;

    server.stop();
    let outage = Instant::now();
    let mut sent = 50;
    while outage.elapsed() < Duration::from_secs(10) {
        load(&client, &base, sent, 10).await;
        sent += 10;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.restart();
    load(&client, &base, sent, 50).await;
    sent += 50;
    let store = auditor.store().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    while (store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap_or(0) as usize)
        < sent
        && Instant::now() < deadline
    {
        auditor.flush().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    all_stored_exactly_once(&store, sent).await;
    task.abort();
    let m = guard.shutdown().await;
    assert_eq!((m.failed, m.dropped), (0, 0), "{m:?}");
    assert!(m.spilled > 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_store_down_spills_and_the_next_start_replays() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let cfg = config(
        DbConnection::Sqlite(db.clone()),
        &journal,
        "flush_timeout_ms = 20000",
    );
    let (auditor, guard) = start(cfg.clone()).await.unwrap();
    let locker = StoreLock::take(&db);
    record_jobs(&auditor, "s", 100).await;
    let started = Instant::now();
    let m = guard.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "within the deadline"
    );
    assert_eq!((m.spilled, m.failed), (100, 0), "{m:?}");
    assert!(journal.exists());
    locker.release();
    // The next start replays the journal first.
    let (auditor, guard) = start(cfg).await.unwrap();
    auditor.flush().await;
    all_stored_exactly_once(auditor.store().unwrap(), 100).await;
    let m = guard.shutdown().await;
    assert_eq!(m.replayed, 100);
    assert!(!journal.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_journaling_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_helper"))
        .arg(&db)
        .arg(&journal)
        .arg("500")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let locker = StoreLock::take(&db);
    writeln!(child.stdin.as_mut().unwrap()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "journaled 500 written 0",
        "acknowledged to the journal"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    locker.release();
    let cfg = config(DbConnection::Sqlite(db), &journal, "");
    let (auditor, guard) = start(cfg).await.unwrap();
    auditor.flush().await;
    all_stored_exactly_once(auditor.store().unwrap(), 500).await;
    assert_eq!(guard.shutdown().await.replayed, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_twice_never_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal_path = dir.path().join("audit.spill");
    let docs: Vec<Access> = (0..10).map(|i| job_access(format!("/r/{i}"))).collect();
    let raw: Vec<bson::RawDocumentBuf> = docs
        .iter()
        .map(|d| audit_runtime::internals::encode(d).unwrap())
        .collect();
    let journal = audit_tests::writer_journal(&journal_path);
    // Half of them already made it to the store before a crash (a timeout that actually wrote).
    let cfg = config(DbConnection::Sqlite(db), &journal_path, "");
    let store = Store::connect(&cfg).await.unwrap();
    store.insert_all(&docs[..5]).await.unwrap();
    // The same journal content is replayed twice: by one start, then (as after a crash that came
    // before the journal was removed) by the next.
    for round in 0..2 {
        journal
            .append(raw.iter().map(|d| (Collection::Access, d)))
            .unwrap();
        let (auditor, guard) = start(cfg.clone()).await.unwrap();
        auditor.flush().await;
        all_stored_exactly_once(auditor.store().unwrap(), 10).await;
        let m = guard.shutdown().await;
        assert_eq!((m.replayed, m.failed), (10, 0), "round {round}: {m:?}");
        assert!(!journal_path.exists(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drop_policy_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let toml = "run_async = true\nqueue_capacity = 1\nfull_policy = \"drop\"";
    let cfg = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = start(cfg).await.unwrap();
    let locker = StoreLock::take(&db);
    record_jobs(&auditor, "d", 50).await;
    let m = auditor.metrics();
    assert!(m.dropped >= 45, "{m:?}");
    locker.release();
    auditor.flush().await;
    let m = guard.shutdown().await;
    let stored = auditor
        .store()
        .unwrap()
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap();
    assert_eq!(
        stored + m.dropped,
        50,
        "every record is either stored or counted as dropped: {m:?}"
    );
}

/// The CI-sized soak: 20,000 requests in async mode on SQLite through a real server; every record
/// stored, nothing failed or dropped, and memory bounded. The long one (1,000,000 requests) is the
/// load-test harness: `cargo run --release --example loadtest -- --requests 1000000 --rounds 1
/// --only audited-async-sqlite` (README, Performance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short_async_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        DbConnection::Sqlite(dir.path().join("audit.db")),
        &dir.path().join("audit.spill"),
        "",
    );
    let (auditor, guard) = start(cfg).await.unwrap();
    let (base, task) = serve(auditor.clone()).await;
    let client = reqwest::Client::new();
    let mut after_warmup = 0;
    for round in 0..4 {
        let mut tasks = Vec::new();
        for c in 0..16 {
            let (client, base) = (client.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..(5_000 / 16 + 1) {
                    let n = round * 100_000 + c * 1_000 + i;
                    assert_eq!(
                        client
                            .get(format!("{base}/access/args/{n}/"))
                            .send()
                            .await
                            .unwrap()
                            .status(),
                        200
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        if round == 0 {
            after_warmup = rss_kib();
        }
    }
    task.abort();
    let m = guard.shutdown().await;
    let stored = auditor
        .store()
        .unwrap()
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap();
    assert_eq!(stored, 4 * 16 * (5_000 / 16 + 1));
    assert_eq!((m.failed, m.dropped, m.spilled), (0, 0, 0), "{m:?}");
    let grown_mib = rss_kib().saturating_sub(after_warmup) / 1024;
    assert!(
        grown_mib < 64,
        "memory grew {grown_mib} MiB after the first quarter"
    );
}

/// Without a journal, a store that is still down at the shutdown deadline loses records — and
/// every one of them is counted: nothing vanishes silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_a_journal_counts_every_record_it_could_not_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let toml = "run_async = true\nflush_timeout_ms = 1000";
    let cfg = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    let locker = StoreLock::take(&db);
    record_jobs(&auditor, "l", 60).await;
    let m = guard.shutdown().await;
    locker.release();
    let stored = auditor
        .store()
        .unwrap()
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap();
    assert_eq!(m.enqueued, 60);
    // The store call in flight at the deadline is let return, so each record is either stored or
    // counted as failed, never both and never neither.
    assert_eq!(
        stored + m.failed,
        60,
        "stored or counted as failed: {m:?}, {stored} stored"
    );
    assert!(m.failed > 0, "{m:?}");
}

/// Writes `docs` to a journal as the writer would.
fn journal_of(path: &std::path::Path, docs: &[Access]) -> Vec<u64> {
    let journal = audit_tests::writer_journal(path);
    let mut ends = Vec::new();
    for d in docs {
        let raw = audit_runtime::internals::encode(d).unwrap();
        journal.append([(Collection::Access, &raw)]).unwrap();
        ends.push(std::fs::metadata(path).unwrap().len());
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_entry_is_quarantined_and_the_others_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let docs: Vec<Access> = (0..3).map(|i| job_access(format!("/c/{i}"))).collect();
    let ends = journal_of(&journal, &docs);
    // One flipped byte inside the middle entry's document (past its 45-byte header).
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes[ends[0] as usize + 60] ^= 0x01;
    std::fs::write(&journal, &bytes).unwrap();

    let (auditor, guard) = start(config(DbConnection::Sqlite(db), &journal, ""))
        .await
        .unwrap();
    auditor.flush().await;
    let stored: BTreeSet<String> = Access::objects()
        .fetch(auditor.store().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    assert_eq!(stored, BTreeSet::from(["/c/0".into(), "/c/2".into()]));
    let m = guard.shutdown().await;
    assert_eq!((m.replayed, m.journal_corrupt), (2, 1), "{m:?}");
    assert!(
        !journal.exists(),
        "everything in it was stored or quarantined"
    );
    let quarantine =
        audit_runtime::internals::Journal::new(dir.path().join("audit.spill.quarantine"));
    let kept = quarantine.read_all().unwrap();
    assert_eq!(
        kept,
        vec![audit_runtime::internals::Item::Raw(
            bytes[ends[0] as usize..ends[1] as usize].to_vec()
        )],
        "the damaged entry's bytes are kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_entry_followed_by_later_appends_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let docs: Vec<Access> = (0..4).map(|i| job_access(format!("/t/{i}"))).collect();
    let ends = journal_of(&journal, &docs[..2]);
    // A crash in the middle of the second append: its entry is cut short ...
    let bytes = std::fs::read(&journal).unwrap();
    std::fs::write(&journal, &bytes[..ends[1] as usize - 7]).unwrap();
    // ... and the next run appended two more, acknowledged, records after it.
    journal_of(&journal, &docs[2..]);

    let (auditor, guard) = start(config(DbConnection::Sqlite(db), &journal, ""))
        .await
        .unwrap();
    auditor.flush().await;
    let stored: BTreeSet<String> = Access::objects()
        .fetch(auditor.store().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    assert_eq!(
        stored,
        BTreeSet::from(["/t/0".into(), "/t/2".into(), "/t/3".into()])
    );
    let m = guard.shutdown().await;
    assert_eq!((m.replayed, m.journal_corrupt), (3, 1), "{m:?}");
    assert!(!journal.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_journal_is_quarantined_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    let foreign = b"# notes someone kept at the journal's path\n".repeat(100);
    std::fs::write(&journal, &foreign).unwrap();
    let (auditor, guard) = start(config(DbConnection::Sqlite(db), &journal, ""))
        .await
        .unwrap();
    auditor.flush().await;
    record_jobs(&auditor, "after", 3).await;
    auditor.flush().await;
    let m = guard.shutdown().await;
    assert_eq!(
        (m.journal_corrupt, m.written, m.replayed),
        (1, 3, 0),
        "{m:?}"
    );
    assert!(!journal.exists());
    let kept = audit_runtime::internals::Journal::new(dir.path().join("audit.spill.quarantine"))
        .read_all()
        .unwrap();
    assert_eq!(
        kept,
        vec![audit_runtime::internals::Item::Raw(foreign)],
        "its bytes are kept whole"
    );
}
