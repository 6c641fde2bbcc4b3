//! A file written by earlier versions (every index an expression over the raw BSON, no indexed
//! columns) is moved onto indexed columns when a store opens it: the rows are kept, each index
//! keeps its name and keys, queries use it, and new rows fill the columns. Also: columns added for
//! a custom index by one connection are filled by another that opened the file earlier.

use audit_runtime::internals::{
    default_indexes, encode, expression_schema_sql, prepare_connection,
};
use audit_runtime::{
    AccessUser, AuditConfig, Collection, DbConnection, Filter, FindOptions, IndexSpec, Order, Store,
};
use audit_tests::{access, at, sqlite_plan};

/// The tables and indexes exactly as earlier versions created them.
fn legacy_file(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    prepare_connection(&conn).unwrap();
    for c in [
        Collection::Access,
        Collection::Process,
        Collection::ModelAction,
        Collection::Seal,
    ] {
        conn.execute_batch(&expression_schema_sql(c, &default_indexes(c)))
            .unwrap();
    }
    conn
}

fn columns(conn: &rusqlite::Connection, c: Collection) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", c.name()))
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(1))
        .unwrap()
        .map(Result::unwrap)
        .filter(|n| n.starts_with('$'))
        .collect()
}

fn index_sql(conn: &rusqlite::Connection, c: Collection) -> Vec<(String, String)> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name")
        .unwrap();
    stmt.query_map([c.name()], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn a_file_with_expression_indexes_is_moved_onto_indexed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let conn = legacy_file(&path);
    // A custom index an earlier version made from the settings, on a path no default covers.
    conn.execute_batch(&expression_schema_sql(
        Collection::Access,
        &[IndexSpec::from_fields(&["custom.tenant", "-time.request"])],
    ))
    .unwrap();
    let mut expected_ids = Vec::new();
    for i in 0..50 {
        let mut a = access(
            &format!("/polls/{}/", i % 5),
            at(2024, 1, 1, 0, 0, i),
            "polls::views::detail",
        );
        a.user = Some(AccessUser::new(i as i64 % 3, format!("u{}", i % 3)));
        a.custom = Some(bson::doc! { "tenant": format!("t{}", i % 2) });
        let raw = encode(&a).unwrap();
        conn.execute(
            "INSERT INTO audit_access (id, doc) VALUES (?1, ?2)",
            rusqlite::params![a.id.to_hex(), raw.as_bytes()],
        )
        .unwrap();
        expected_ids.push(a.id);
    }
    let before = index_sql(&conn, Collection::Access);
    assert!(before.iter().all(|(_, sql)| sql.contains("bson_get(doc,")));
    drop(conn);

    let config = AuditConfig::default().with_connection(DbConnection::Sqlite(path.clone()));
    let store = Store::connect(&config).await.unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    prepare_connection(&conn).unwrap();
    // Every index is still there under its name, now on columns.
    let after = index_sql(&conn, Collection::Access);
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    for (name, sql) in &after {
        assert!(!sql.contains("bson_get"), "{name}: {sql}");
    }
    let custom = after
        .iter()
        .find(|(n, _)| n == "audit_access.custom.tenant_1_time.request_-1")
        .unwrap();
    assert!(
        custom
            .1
            .contains("\"$custom.tenant\", \"$time.request\" DESC"),
        "{}",
        custom.1
    );
    let cols = columns(&conn, Collection::Access);
    for p in [
        "$user.id",
        "$request.path",
        "$time.request",
        "$custom.tenant",
    ] {
        assert!(cols.iter().any(|c| c == p), "{p} in {cols:?}");
    }
    // The columns were filled from the stored documents.
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit_access WHERE \"$user.id\" = 1 AND \"$custom.tenant\" = 't1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        n,
        (0..50).filter(|i| i % 3 == 1 && i % 2 == 1).count() as i64
    );

    // The store finds the old rows through the indexes.
    let opts = FindOptions::new(Filter::eq("user.id", 2)).sort("time.request", Order::Desc);
    let plan = sqlite_plan(&store, Collection::Access, &opts).await;
    assert!(
        plan.contains("USING INDEX audit_access.user.id_1"),
        "{plan}"
    );
    let found = store.find_raw(Collection::Access, &opts).await.unwrap();
    assert_eq!(found.len(), (0..50).filter(|i| i % 3 == 2).count());
    let opts = FindOptions::new(Filter::eq("custom.tenant", "t0"));
    let plan = sqlite_plan(&store, Collection::Access, &opts).await;
    assert!(plan.contains("custom.tenant_1_time.request_-1"), "{plan}");
    assert_eq!(
        store
            .count(Collection::Access, &Filter::eq("custom.tenant", "t0"))
            .await
            .unwrap(),
        25
    );
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        50
    );

    // New rows fill the columns, the custom one included.
    let mut a = access("/new/", at(2024, 2, 1, 0, 0, 0), "polls::views::detail");
    a.user = Some(AccessUser::new(2, "u2"));
    a.custom = Some(bson::doc! { "tenant": "t0" });
    store.insert(&a).await.unwrap();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::eq("custom.tenant", "t0"))
            .await
            .unwrap(),
        26
    );
    let path_col: String = conn
        .query_row(
            "SELECT \"$request.path\" FROM audit_access WHERE id = ?1",
            [a.id.to_hex()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(path_col, "/new/");

    // Opening it again changes nothing.
    let version = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
            .unwrap()
    };
    let v = version(&conn);
    drop(Store::connect(&config).await.unwrap());
    assert_eq!(version(&conn), v);
}

#[tokio::test]
async fn a_column_added_by_another_connection_is_filled_by_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let connection = DbConnection::Sqlite(dir.path().join("audit.db"));
    let first = Store::connect(&AuditConfig::default().with_connection(connection.clone()))
        .await
        .unwrap();
    // A second process (the command line, another instance) adds a custom index.
    let toml = "access_indexes = [\"custom.tenant\"]";
    let config = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(connection);
    let second = Store::connect(&config).await.unwrap();
    // The first store, opened before the column existed, writes a row.
    let mut a = access("/a/", at(2024, 3, 1, 0, 0, 0), "polls::views::detail");
    a.custom = Some(bson::doc! { "tenant": "acme" });
    first.insert(&a).await.unwrap();
    // The other store finds it through its index: the column was filled.
    let opts = FindOptions::new(Filter::eq("custom.tenant", "acme"));
    let plan = sqlite_plan(&second, Collection::Access, &opts).await;
    assert!(
        plan.contains("USING INDEX audit_access.custom.tenant_1"),
        "{plan}"
    );
    assert_eq!(
        second
            .find_raw(Collection::Access, &opts)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn replacing_a_document_updates_its_columns() {
    // Erasing a user's data rewrites documents in place; the indexes must follow.
    let s = audit_tests::sqlite_store().await;
    let mut a = access("/before/", at(2024, 4, 1, 0, 0, 0), "polls::views::detail");
    a.user = Some(AccessUser::new(7, "seven"));
    s.insert(&a).await.unwrap();
    a.request.path = "/after/".into();
    a.user = Some(AccessUser::new(8, "eight"));
    assert!(s
        .replace_bytes(Collection::Access, encode(&a).unwrap())
        .await
        .unwrap());
    assert_eq!(
        s.count(Collection::Access, &Filter::eq("user.id", 7))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.count(Collection::Access, &Filter::eq("user.id", 8))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.count(Collection::Access, &Filter::eq("request.path", "/after/"))
            .await
            .unwrap(),
        1
    );
}
