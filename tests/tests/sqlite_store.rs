//! SQLite-only checks: the indexed query shapes use their expression indexes, the file round-trips
//! raw BSON, and the pragmas are the durable ones.

use audit_runtime::{Access, Collection, Store, UrlMatch};
use audit_runtime::{Filter, FindOptions, Order};
use audit_tests::{sqlite_plan, sqlite_store};

async fn plan(store: &Store, c: Collection, opts: FindOptions) -> String {
    sqlite_plan(store, c, &opts).await
}

#[tokio::test]
async fn indexed_query_shapes_use_their_expression_index() {
    let s = sqlite_store().await;
    // Equality on a nested path.
    let p = plan(
        &s,
        Collection::Access,
        FindOptions::new(Filter::eq("user.id", 23)),
    )
    .await;
    assert!(p.contains("USING INDEX audit_access.user.id_1 "), "{p}");
    // Compound equality.
    let f = Filter::And(vec![
        Filter::eq("view.app", "demo"),
        Filter::eq("view.name", "index"),
    ]);
    let p = plan(&s, Collection::Access, FindOptions::new(f)).await;
    assert!(
        p.contains("USING INDEX audit_access.view.app_1_view.name_1"),
        "{p}"
    );
    // Range on a datetime.
    let t = bson::DateTime::now();
    let p = plan(
        &s,
        Collection::Access,
        FindOptions::new(Filter::gte("time.request", t)),
    )
    .await;
    assert!(
        p.contains("USING INDEX audit_access.time.request_1 "),
        "{p}"
    );
    // Prefix (startswith) on the path.
    let opts = Access::objects()
        .filter_by_url(UrlMatch::StartsWith("/polls/".into()))
        .options()
        .unwrap();
    let p = plan(&s, Collection::Access, opts).await;
    assert!(p.contains("USING INDEX audit_access.request.path"), "{p}");
    // An anchored regex with a literal start narrows by the same index.
    let opts = Access::objects()
        .filter_by_url(UrlMatch::regex(r"^/polls/\w*$"))
        .options()
        .unwrap();
    let p = plan(&s, Collection::Access, opts).await;
    assert!(p.contains("USING INDEX audit_access.request.path"), "{p}");
    // Newest first without a filter walks the date index instead of sorting.
    let p = plan(
        &s,
        Collection::Access,
        FindOptions::new(Filter::all()).sort("time.request", Order::Desc),
    )
    .await;
    assert!(
        p.contains("audit_access.time.request_1") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    // Model actions by model and instance.
    let f = Filter::And(vec![
        Filter::eq("model.app", "a"),
        Filter::eq("model.name", "B"),
        Filter::eq("instance.id", "1"),
    ]);
    let p = plan(&s, Collection::ModelAction, FindOptions::new(f)).await;
    assert!(
        p.contains("audit_model_action.model.app_1_model.name_1_instance.id_1"),
        "{p}"
    );
}

#[tokio::test]
async fn the_file_is_wal_with_full_sync() {
    let s = sqlite_store().await;
    let Store::Sqlite(st) = &*s else { panic!() };
    assert!(st.path().exists());
    // WAL is stored in the file: a plain connection that sets nothing reads it back. A new file is
    // in rollback-journal mode ("delete"), so "wal" can only come from the store.
    let journal_mode = |path: &std::path::Path| -> String {
        let plain = rusqlite::Connection::open(path).unwrap();
        plain
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(journal_mode(st.path()).to_lowercase(), "wal");
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(journal_mode(&dir.path().join("plain.db")), "delete");

    // `synchronous` is per connection: it is read from the store's own one.
    let (mode, sync) = st.durability().await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    assert_eq!(sync, 2, "synchronous=FULL on the store's connection");
    // SQLite's built-in default is FULL too, so the check above only catches a weaker level set
    // by the store; this one proves the store's setup sets FULL itself, from OFF.
    let conn = rusqlite::Connection::open(dir.path().join("prepared.db")).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    audit_runtime::internals::prepare_connection(&conn).unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "prepare_connection sets synchronous=FULL");
}
