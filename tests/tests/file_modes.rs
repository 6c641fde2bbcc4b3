//! The files of the audit trail are readable by their owner only (0600) whatever the umask: the
//! SQLite database with its `-wal` and `-shm`, the spill journal, the quarantine file and
//! `audit export --out` files; and the journal and export files are never written through a
//! symlink. One test, because the umask is the whole process's.

use audit_runtime::{Access, AccessView, AuditConfig, Auditor, DbConnection};
use clap::Parser;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(p: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

fn job_access(path: &str) -> Access {
    Access::new(path, chrono::Utc::now(), AccessView::new("t::x", "t", "x"))
}

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

async fn export(db: &Path, out: &Path) -> Result<(), audit_runtime::cli::CliError> {
    let cli = audit_runtime::cli::Cli::try_parse_from([
        "audit".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "export".as_ref(),
        "access".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
    .unwrap();
    audit_runtime::cli::run(cli).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_files_are_private_and_never_written_through_a_symlink() {
    // The usual umask, under which a plain create makes 0644 files.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let spill = dir.path().join("audit.spill");
    let quarantine = dir.path().join("audit.quarantine");
    let toml = format!(
        "run_async = true\nflush_timeout_ms = 20000\nspill_path = {:?}\nquarantine_path = {:?}",
        spill.display(),
        quarantine.display()
    );
    let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    auditor.record_access(job_access("/one")).await;
    auditor.flush().await;
    assert_eq!(mode(&db), 0o600, "the database");
    assert_eq!(mode(&with_suffix(&db, "-wal")), 0o600, "its -wal");
    assert_eq!(mode(&with_suffix(&db, "-shm")), 0o600, "its -shm");

    // A record the store refuses even trimmed goes to the quarantine file.
    auditor
        .record_access(job_access(&"p".repeat(17 * 1024 * 1024)))
        .await;
    wait_for(&auditor, "the quarantined record", |m| m.quarantined == 1).await;
    assert_eq!(mode(&quarantine), 0o600, "the quarantine file");

    // The store locked by another connection: the writer spills to the journal.
    let locker = audit_runtime::internals::open_connection(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    auditor.record_access(job_access("/two")).await;
    wait_for(&auditor, "the spill", |m| m.spilled >= 1).await;
    assert_eq!(mode(&spill), 0o600, "the spill journal");
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    let m = guard.shutdown().await;
    assert_eq!((m.written, m.failed), (2, 0), "{m:?}");

    let out = dir.path().join("export.jsonl");
    export(&db, &out).await.unwrap();
    assert_eq!(mode(&out), 0o600, "the export file");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2);

    // Symlinks are refused, and what they point to is left untouched.
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"").unwrap();
    let link = dir.path().join("export-link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = export(&db, &link).await.unwrap_err();
    assert!(format!("{err:?}").contains("symlink"), "{err:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"");

    let journal_link = dir.path().join("spill-link");
    std::os::unix::fs::symlink(&target, &journal_link).unwrap();
    let toml = format!(
        "run_async = true\nflush_timeout_ms = 20000\nspill_path = {:?}\nquarantine_path = {:?}",
        journal_link.display(),
        quarantine.display()
    );
    let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    let locker = audit_runtime::internals::open_connection(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    auditor.record_access(job_access("/three")).await;
    // The journal refuses the link, so the record stays in memory and the store is retried.
    wait_for(&auditor, "a store retry after the refused spill", |m| {
        m.retried >= 1
    })
    .await;
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    auditor.flush().await;
    let m = guard.shutdown().await;
    assert_eq!(
        (m.written, m.spilled, m.failed),
        (1, 0, 0),
        "stored once the store is back, not lost: {m:?}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "nothing written through the link"
    );
}
