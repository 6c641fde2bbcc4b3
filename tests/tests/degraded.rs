//! Records that cannot be stored whole are stored degraded — the unusable parts replaced by
//! markers naming them — or, when even that is refused, quarantined to a file; never dropped, and
//! never in the way of the records after them.

use audit_runtime::store::degrade::MARKER_KEY;
use audit_runtime::store::FindOptions;
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
