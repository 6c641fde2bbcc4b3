//! Records that cannot be stored whole are stored degraded — the unusable parts replaced by
//! markers naming them — or, when even that is refused, quarantined to a file; never dropped, and
//! never in the way of the records after them.

use audit_runtime::internals::MARKER_KEY;
use audit_runtime::FindOptions;
use audit_runtime::{Access, AccessView, AuditConfig, Auditor, Collection, DbConnection, Filter};
use bson::doc;

fn sqlite_config(db: &std::path::Path, toml: &str) -> AuditConfig {
    AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.to_owned()))
}

fn job_access(path: &str) -> Access {
    Access::new(path, chrono::Utc::now(), AccessView::new("t::x", "t", "x"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_part_that_cannot_be_encoded_is_stored_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (auditor, guard) = Auditor::start(sqlite_config(&dir.path().join("audit.db"), ""))
        .await
        .unwrap();
    let mut access = job_access("/nul");
    // Built as a document directly, so no key escaping stands in the way: BSON keys cannot hold
    // a NUL byte.
    access.request.GET = doc! { "a\0b": "1", "c": "2" };
    access.request.POST = doc! { "kept": "yes" };
    access.custom = Some(doc! { "provider": { "also": "kept" } });
    auditor.record_access(access.clone()).await;
    auditor.record_access(job_access("/after")).await;
    auditor.flush().await;

    let store = auditor.store().unwrap();
    let raw = store
        .find_raw(
            Collection::Access,
            &FindOptions::new(Filter::eq("_id", access.id)),
        )
        .await
        .unwrap();
    assert_eq!(raw.len(), 1, "the record is stored");
    let req = raw[0].get_document("request").unwrap();
    let marker = req
        .get_document("GET")
        .unwrap()
        .get_str(MARKER_KEY)
        .unwrap();
    assert!(
        marker.starts_with("<not stored: request.GET could not be encoded"),
        "{marker}"
    );
    assert_eq!(req.get_str("path").unwrap(), "/nul");
    assert_eq!(req.get_document("POST").unwrap(), &doc! { "kept": "yes" });
    assert_eq!(
        raw[0].get_document("custom").unwrap(),
        &doc! { "provider": { "also": "kept" } }
    );
    // Typed reads still work on the degraded record.
    let all = Access::objects().fetch(store).await.unwrap();
    assert_eq!(all.len(), 2);
    let m = guard.shutdown().await;
    assert_eq!((m.degraded, m.written, m.failed), (1, 2, 0), "{m:?}");
}

const MIB: usize = 1024 * 1024;

/// Waits (bounded) until `done` holds for the auditor's counters; fails the test at the deadline.
async fn wait_for(
    auditor: &Auditor,
    what: &str,
    done: impl Fn(&audit_runtime::MetricsSnapshot) -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = auditor.metrics();
        if done(&m) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {m:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A record over the 16 MiB document limit is stored with its bodies trimmed; one that is still
/// too large trimmed (its path alone is over the limit) goes to the quarantine file; the records
/// around them are stored, and nothing waits on them.
async fn records_the_store_refuses_do_not_block_the_others(conn: DbConnection) {
    let dir = tempfile::tempdir().unwrap();
    let quarantine = dir.path().join("refused.quarantine");
    let toml = format!(
        "run_async = true\nquarantine_path = {:?}",
        quarantine.display()
    );
    let cfg = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn);
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    let mut big = job_access("/big");
    big.custom = Some(doc! { "blob": "x".repeat(17 * MIB) });
    big.request.GET = doc! { "q": "kept" };
    let huge = job_access(&format!("/{}", "p".repeat(17 * MIB)));
    auditor.record_access(job_access("/before")).await;
    auditor.record_access(big.clone()).await;
    auditor.record_access(huge.clone()).await;
    auditor.record_access(job_access("/after")).await;
    wait_for(&auditor, "every record settled", |m| {
        m.written + m.quarantined + m.failed == 4
    })
    .await;
    // And what comes later is stored too.
    auditor.record_access(job_access("/later")).await;
    wait_for(&auditor, "the later record", |m| m.written == 4).await;

    let store = auditor.store().unwrap();
    let mut paths: Vec<String> = Access::objects()
        .fetch(store)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    paths.sort();
    assert_eq!(paths, ["/after", "/before", "/big", "/later"]);
    let stored_big = store
        .find_raw(
            Collection::Access,
            &FindOptions::new(Filter::eq("_id", big.id)),
        )
        .await
        .unwrap()
        .remove(0);
    let custom = stored_big
        .get_document("custom")
        .unwrap()
        .get_str(MARKER_KEY)
        .unwrap();
    assert!(
        custom.starts_with("<not stored: custom trimmed, the store refused the record"),
        "{custom}"
    );
    let get = stored_big
        .get_document("request")
        .unwrap()
        .get_document("GET")
        .unwrap();
    assert!(get.contains_key(MARKER_KEY), "bodies are trimmed: {get}");

    let kept = audit_runtime::internals::Journal::new(&quarantine)
        .read_all()
        .unwrap();
    assert_eq!(kept.len(), 1, "the record refused even trimmed is kept");
    match &kept[0] {
        audit_runtime::internals::Item::Entry(Collection::Access, d) => {
            assert_eq!(d.get_object_id("_id").unwrap(), huge.id)
        }
        other => panic!("unexpected quarantine item {other:?}"),
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&quarantine).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the quarantine file is private");

    let m = guard.shutdown().await;
    assert_eq!(
        (m.written, m.degraded, m.quarantined, m.failed, m.enqueued),
        (4, 1, 1, 0, 5),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_records_the_store_refuses_do_not_block_the_others() {
    let (conn, _dir) = audit_tests::sqlite_connection();
    records_the_store_refuses_do_not_block_the_others(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_records_the_store_refuses_do_not_block_the_others() {
    records_the_store_refuses_do_not_block_the_others(audit_tests::mongo_connection()).await;
}

/// A record in the spill journal that the store refuses for good is quarantined; the others are
/// replayed, the journal is removed, and new records go to the store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_entry_the_store_refuses_does_not_wedge_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let journal = dir.path().join("audit.spill");
    // The middle one is over the document limit even with its bodies trimmed.
    let docs = vec![
        job_access("/j/0"),
        job_access(&format!("/{}", "p".repeat(17 * MIB))),
        job_access("/j/2"),
    ];
    let j = audit_tests::writer_journal(&journal);
    for d in &docs {
        let raw = audit_runtime::internals::encode(d).unwrap();
        j.append([(Collection::Access, &raw)]).unwrap();
    }
    let toml = format!("run_async = true\nspill_path = {:?}", journal.display());
    let (auditor, guard) = Auditor::start(sqlite_config(&db, &toml)).await.unwrap();
    auditor.flush().await;
    // New records reach the store afterwards, not the journal.
    for i in 0..5 {
        auditor
            .record_access(job_access(&format!("/new/{i}")))
            .await;
    }
    auditor.flush().await;
    let store = auditor.store().unwrap();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        7
    );
    let m = guard.shutdown().await;
    assert_eq!(
        (m.replayed, m.quarantined, m.spilled, m.written),
        (2, 1, 0, 7),
        "{m:?}"
    );
    assert!(!journal.exists());
    let kept = audit_runtime::internals::Journal::new(dir.path().join("audit.spill.quarantine"))
        .read_all()
        .unwrap();
    assert_eq!(kept.len(), 1);
}
