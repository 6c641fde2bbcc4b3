//! Store throughput with 2 KB access documents and every default index: insert one (one commit
//! each), insert batches of 100, an indexed nested-path query, a regex query and a ranged delete.
//! Prints documents (or queries) per second for SQLite, for MongoDB when `MONGODB_URI` is set,
//! for PostgreSQL when `POSTGRES_URI` is, and for a raw rusqlite baseline doing the same batched
//! inserts into the schema of earlier versions (expression indexes), measured in the same run,
//! rounds interleaved; then the ratio store / raw.
//!
//! On PostgreSQL the baselines are the same rows (bytes, `jsonb`, typed columns) inserted plainly
//! into a table without indexes, batches of 100, in the same run: by sqlx (one `INSERT ... SELECT
//! FROM UNNEST`, as the store does), by tokio-postgres (the same statement: the other driver
//! considered), and by `COPY`; then the first page of a one-hour time range, on the btree index
//! the store makes and on a BRIN index of the same rows, with both indexes' sizes.
//!
//! `cargo bench -p audit-runtime --bench stores` (`-- --quick` for a short run).

use audit_runtime::internals::default_indexes;
use audit_runtime::internals::{expression_schema_sql, prepare_connection};
use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Store,
    UrlMatch,
};
use audit_runtime::{Filter, FindOptions};
use bson::doc;
use chrono::{Duration, TimeZone, Utc};
use std::time::Instant;

/// A realistic access of about 2 KB.
fn access(i: usize) -> Access {
    let t =
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::milliseconds(i as i64 * 10);
    let mut a = Access::new(
        format!("/polls/{}/vote/", i % 500),
        t,
        AccessView::new("demo::views::vote", "demo", "vote"),
    );
    a.interlink_id = Some(format!("{i:032x}"));
    a.request.GET = doc! { "page": (i % 7).to_string(), "sort": "newest" };
    let mut meta = doc! { "REQUEST_METHOD": "POST", "SERVER_PROTOCOL": "HTTP/1.1", "URL_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1:50000" };
    for h in 0..12 {
        meta.insert(format!("HTTP_X_HEADER_{h}"), "v".repeat(80));
    }
    a.request.METADATA = meta;
    a.response = Some(AccessResponse {
        content: bson::Bson::Document(doc! { "ok": true, "votes": i as i64 }),
        content_type: "application/json".into(),
        status_code: 200,
    });
    a.time.response = Some(t + Duration::milliseconds(3));
    a.user = Some(AccessUser::new(
        (i % 100) as i64,
        format!("user{}", i % 100),
    ));
    a
}

fn fresh_sqlite() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bench.db");
    (dir, p)
}

/// The baseline: the same documents, serialised the same way, with rusqlite and nothing else, into
/// the schema of earlier versions: a table of blobs and every default index an expression
/// `bson_get(doc, 'path')`, evaluated by SQLite on every insert.
fn raw_batched(docs: &[Access], batch: usize) -> f64 {
    let (_dir, path) = fresh_sqlite();
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    prepare_connection(&conn).unwrap();
    conn.execute_batch(&expression_schema_sql(
        Collection::Access,
        &default_indexes(Collection::Access),
    ))
    .unwrap();
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached("INSERT INTO audit_access (id, doc) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING").unwrap();
            for a in chunk {
                let mut blob = Vec::with_capacity(2048);
                bson::to_document(a).unwrap().to_writer(&mut blob).unwrap();
                stmt.execute(rusqlite::params![a.id.to_hex(), blob])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

async fn store_batched(store: &Store, docs: &[Access], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in docs.chunks(batch) {
        store.insert_all(chunk).await.unwrap();
    }
    docs.len() as f64 / start.elapsed().as_secs_f64()
}

async fn open_store(conn: DbConnection) -> Store {
    Store::connect(&AuditConfig::default().with_connection(conn))
        .await
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn queries(store: &Store, label: &str, n: usize) {
    let start = Instant::now();
    for i in 0..n {
        let q = Access::objects().user_id((i % 100) as i64).limit(20);
        std::hint::black_box(q.fetch(store).await.unwrap());
    }
    println!(
        "{label:<8} indexed query (user.id, 20 docs)  {:>10.0} queries/s",
        n as f64 / start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    for i in 0..n / 10 {
        let q = Access::objects()
            .filter_by_url(UrlMatch::Regex(format!("^/polls/{}/", i % 500)))
            .limit(20);
        std::hint::black_box(q.fetch(store).await.unwrap());
    }
    println!(
        "{label:<8} regex query on request.path        {:>10.0} queries/s",
        (n / 10) as f64 / start.elapsed().as_secs_f64()
    );
    let t0 = bson::DateTime::from_chrono(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
    let t1 = bson::DateTime::from_chrono(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 30).unwrap());
    let start = Instant::now();
    let deleted = store
        .delete_many(Collection::Access, &Filter::between("time.request", t0, t1))
        .await
        .unwrap();
    println!(
        "{label:<8} delete by date range               {:>10.0} docs/s ({deleted} deleted)",
        deleted as f64 / start.elapsed().as_secs_f64()
    );
    std::hint::black_box(
        store
            .find_raw(
                Collection::Access,
                &FindOptions::new(Filter::all()).window(0, Some(1)),
            )
            .await
            .unwrap(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this once, briefly; `--quick` does too.
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test")
        || std::env::args().all(|a| a != "--bench");
    let (total, singles, rounds) = if quick {
        (2_000, 100, 1)
    } else {
        (20_000, 1_000, 5)
    };
    let docs: Vec<Access> = (0..total).map(access).collect();
    let size = bson::to_vec(&bson::to_document(&docs[0]).unwrap())
        .unwrap()
        .len();
    println!("documents of {size} bytes, all default indexes; {rounds} interleaved round(s) of {total} documents");

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..rounds {
        let fresh: Vec<Access> = docs
            .iter()
            .map(|a| Access {
                id: bson::oid::ObjectId::new(),
                ..a.clone()
            })
            .collect();
        raw.push(raw_batched(&fresh, 100));
        let (_dir, path) = fresh_sqlite();
        let store = open_store(DbConnection::Sqlite(path)).await;
        ours.push(store_batched(&store, &fresh, 100).await);
    }
    let (raw, ours) = (median(raw), median(ours));
    println!("raw      rusqlite, expression indexes, batches of 100 {raw:>10.0} docs/s");
    println!("sqlite   store, batches of 100                  {ours:>10.0} docs/s   ratio store/raw = {:.2}", ours / raw);

    let (_dir, path) = fresh_sqlite();
    let store = open_store(DbConnection::Sqlite(path)).await;
    let start = Instant::now();
    for a in &docs[..singles] {
        store.insert(a).await.unwrap();
    }
    println!(
        "sqlite   store, one per commit                  {:>10.0} docs/s",
        singles as f64 / start.elapsed().as_secs_f64()
    );
    store_batched(&store, &docs[singles..], 100).await;
    queries(&store, "sqlite", if quick { 100 } else { 2_000 }).await;

    match std::env::var("POSTGRES_URI") {
        Ok(uri) => postgres::bench(&uri, &docs, rounds, quick).await,
        Err(_) => println!(
            "postgres skipped: set POSTGRES_URI (scripts/pg-test-server.sh starts a server)"
        ),
    }

    match std::env::var("MONGODB_URI") {
        Ok(uri) => {
            let db = format!("audit_bench_{}", bson::oid::ObjectId::new().to_hex());
            let store = open_store(DbConnection::Mongo { uri, database: db }).await;
            let rate = store_batched(&store, &docs, 100).await;
            println!("mongodb  store, batches of 100                  {rate:>10.0} docs/s");
            let fresh: Vec<Access> = docs[..singles]
                .iter()
                .map(|a| Access {
                    id: bson::oid::ObjectId::new(),
                    ..a.clone()
                })
                .collect();
            let start = Instant::now();
            for a in &fresh {
                store.insert(a).await.unwrap();
            }
            println!(
                "mongodb  store, one per insert                  {:>10.0} docs/s",
                singles as f64 / start.elapsed().as_secs_f64()
            );
            queries(&store, "mongodb", if quick { 100 } else { 1_000 }).await;
            for c in Collection::ALL {
                store.drop_collection(c).await.unwrap();
            }
        }
        Err(_) => println!(
            "mongodb  skipped: set MONGODB_URI (scripts/mongo-test-server.sh starts a server)"
        ),
    }
}

mod postgres {
    use super::*;
    use sqlx::Executor;

    /// A fresh database on the server of `base` (a role that may create them).
    fn database(base: &str) -> String {
        let name = format!("audit_bench_{}", bson::oid::ObjectId::new().to_hex());
        let out = std::process::Command::new("psql")
            .arg(base)
            .args(["-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{out:?}");
        format!("{}/{name}", base.rsplit_once('/').expect("a database").0)
    }

    /// The rows the store writes for `docs`, column by column, as the baselines insert them.
    struct Rows {
        ids: Vec<String>,
        bsons: Vec<Vec<u8>>,
        docs: Vec<String>,
        users: Vec<String>,
        paths: Vec<String>,
        times: Vec<chrono::DateTime<Utc>>,
        apps: Vec<String>,
        names: Vec<String>,
        methods: Vec<String>,
        interlinks: Vec<String>,
    }

    fn rows(docs: &[Access]) -> Rows {
        let mut r = Rows {
            ids: vec![],
            bsons: vec![],
            docs: vec![],
            users: vec![],
            paths: vec![],
            times: vec![],
            apps: vec![],
            names: vec![],
            methods: vec![],
            interlinks: vec![],
        };
        for a in docs {
            let d = bson::to_document(a).unwrap();
            r.ids.push(a.id.to_hex());
            r.bsons.push(bson::to_vec(&d).unwrap());
            r.docs
                .push(bson::Bson::Document(d).into_relaxed_extjson().to_string());
            r.users.push(a.user.as_ref().unwrap().id.to_string());
            r.paths.push(a.request.path.clone());
            r.times.push(a.time.request);
            r.apps.push(a.view.app.clone());
            r.names.push(a.view.name.clone());
            r.methods.push("POST".into());
            r.interlinks
                .push(a.interlink_id.clone().unwrap_or_default());
        }
        r
    }

    const PLAIN: &str = "CREATE TABLE plain (id text, bson bytea, doc jsonb, interlink_id text,
        user_id jsonb, request_path text, time_request timestamptz, exception_type text,
        view_app text, view_name text, request_method text)";
    const INSERT: &str = "INSERT INTO plain SELECT u.a, u.b, u.c::jsonb, u.i, u.u::jsonb, u.p, u.t,
        NULL, u.va, u.vn, u.m FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::text[],
        $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::text[], $10::text[])
        AS u(a, b, c, i, u, p, t, va, vn, m)";

    async fn plain_sqlx(uri: &str, docs: &[Access]) -> f64 {
        let pool = sqlx::PgPool::connect(uri).await.unwrap();
        pool.execute("DROP TABLE IF EXISTS plain").await.unwrap();
        pool.execute(PLAIN).await.unwrap();
        let start = Instant::now();
        for chunk in docs.chunks(100) {
            let r = rows(chunk);
            sqlx::query(INSERT)
                .bind(r.ids)
                .bind(r.bsons)
                .bind(r.docs)
                .bind(r.interlinks)
                .bind(r.users)
                .bind(r.paths)
                .bind(r.times)
                .bind(r.apps)
                .bind(r.names)
                .bind(r.methods)
                .execute(&pool)
                .await
                .unwrap();
        }
        docs.len() as f64 / start.elapsed().as_secs_f64()
    }

    async fn plain_tokio_postgres(uri: &str, docs: &[Access]) -> f64 {
        let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS plain; {PLAIN}"))
            .await
            .unwrap();
        let stmt = client.prepare(INSERT).await.unwrap();
        let start = Instant::now();
        for chunk in docs.chunks(100) {
            let r = rows(chunk);
            client
                .execute(
                    &stmt,
                    &[
                        &r.ids,
                        &r.bsons,
                        &r.docs,
                        &r.interlinks,
                        &r.users,
                        &r.paths,
                        &r.times,
                        &r.apps,
                        &r.names,
                        &r.methods,
                    ],
                )
                .await
                .unwrap();
        }
        docs.len() as f64 / start.elapsed().as_secs_f64()
    }

    /// `COPY ... FROM STDIN` in text format, one statement per batch.
    async fn plain_copy(uri: &str, docs: &[Access]) -> f64 {
        let pool = sqlx::PgPool::connect(uri).await.unwrap();
        pool.execute("DROP TABLE IF EXISTS plain").await.unwrap();
        pool.execute(PLAIN).await.unwrap();
        let text = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
        };
        let start = Instant::now();
        for chunk in docs.chunks(100) {
            let r = rows(chunk);
            let mut data = String::new();
            for i in 0..chunk.len() {
                let hex: String = r.bsons[i].iter().map(|b| format!("{b:02x}")).collect();
                data.push_str(&format!(
                    "{}\t\\\\x{hex}\t{}\t{}\t{}\t{}\t{}\t\\N\t{}\t{}\t{}\n",
                    r.ids[i],
                    text(&r.docs[i]),
                    text(&r.interlinks[i]),
                    text(&r.users[i]),
                    text(&r.paths[i]),
                    r.times[i].to_rfc3339(),
                    text(&r.apps[i]),
                    text(&r.names[i]),
                    text(&r.methods[i]),
                ));
            }
            let mut conn = pool.acquire().await.unwrap();
            let mut copy = conn.copy_in_raw("COPY plain FROM STDIN").await.unwrap();
            copy.send(data.as_bytes()).await.unwrap();
            copy.finish().await.unwrap();
        }
        docs.len() as f64 / start.elapsed().as_secs_f64()
    }

    /// Binary `COPY ... FROM STDIN (FORMAT binary)` by tokio-postgres, one per batch.
    async fn plain_binary_copy(uri: &str, docs: &[Access]) -> f64 {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::{ToSql, Type};
        let (client, conn) = tokio_postgres::connect(uri, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS plain; {PLAIN}"))
            .await
            .unwrap();
        let types = [
            Type::TEXT,
            Type::BYTEA,
            Type::JSONB,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ];
        let start = Instant::now();
        for chunk in docs.chunks(100) {
            let r = rows(chunk);
            let sink = client
                .copy_in("COPY plain FROM STDIN (FORMAT binary)")
                .await
                .unwrap();
            let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
            for i in 0..chunk.len() {
                let doc: serde_json::Value = serde_json::from_str(&r.docs[i]).unwrap();
                let user: serde_json::Value = serde_json::from_str(&r.users[i]).unwrap();
                let none: Option<String> = None;
                let row: [&(dyn ToSql + Sync); 11] = [
                    &r.ids[i],
                    &r.bsons[i],
                    &doc,
                    &r.interlinks[i],
                    &user,
                    &r.paths[i],
                    &r.times[i],
                    &none,
                    &r.apps[i],
                    &r.names[i],
                    &r.methods[i],
                ];
                writer.as_mut().write(&row).await.unwrap();
            }
            writer.finish().await.unwrap();
        }
        docs.len() as f64 / start.elapsed().as_secs_f64()
    }

    /// The plain UNNEST insert by sqlx into a table with the store's indexes (the original's
    /// set, on the same columns): what index maintenance alone costs; with `idempotent`, the
    /// insert skips rows already stored (`ON CONFLICT DO NOTHING`, as the store's does so that a
    /// retried batch stores nothing twice).
    async fn plain_indexed(uri: &str, docs: &[Access], idempotent: bool) -> f64 {
        let pool = sqlx::PgPool::connect(uri).await.unwrap();
        pool.execute("DROP TABLE IF EXISTS plain").await.unwrap();
        pool.execute(PLAIN).await.unwrap();
        pool.execute(
            "CREATE UNIQUE INDEX ON plain (id, time_request);
             CREATE INDEX ON plain (interlink_id); CREATE INDEX ON plain (user_id);
             CREATE INDEX ON plain (request_path); CREATE INDEX ON plain (time_request);
             CREATE INDEX ON plain (exception_type);
             CREATE INDEX ON plain (request_path, time_request);
             CREATE INDEX ON plain (view_app, view_name);
             CREATE INDEX ON plain (view_app, view_name, user_id);
             CREATE INDEX ON plain (view_app, view_name, time_request);
             CREATE INDEX ON plain (view_app, view_name, user_id, time_request);
             CREATE INDEX ON plain (request_path, request_method);",
        )
        .await
        .unwrap();
        let insert = if idempotent {
            format!("{INSERT} ON CONFLICT (id, time_request) DO NOTHING")
        } else {
            INSERT.to_owned()
        };
        let start = Instant::now();
        for chunk in docs.chunks(100) {
            let r = rows(chunk);
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(r.ids)
                .bind(r.bsons)
                .bind(r.docs)
                .bind(r.interlinks)
                .bind(r.users)
                .bind(r.paths)
                .bind(r.times)
                .bind(r.apps)
                .bind(r.names)
                .bind(r.methods)
                .execute(&pool)
                .await
                .unwrap();
        }
        docs.len() as f64 / start.elapsed().as_secs_f64()
    }

    pub(super) async fn bench(base: &str, docs: &[Access], rounds: usize, quick: bool) {
        let (mut store_rates, mut sqlx_rates, mut tp_rates, mut copy_rates) =
            (vec![], vec![], vec![], vec![]);
        let (mut binary_rates, mut indexed_rates, mut idempotent_rates) = (vec![], vec![], vec![]);
        for _ in 0..rounds {
            let fresh: Vec<Access> = docs
                .iter()
                .map(|a| Access {
                    id: bson::oid::ObjectId::new(),
                    ..a.clone()
                })
                .collect();
            let uri = database(base);
            let store = open_store(DbConnection::Postgres { uri: uri.clone() }).await;
            store_rates.push(store_batched(&store, &fresh, 100).await);
            sqlx_rates.push(plain_sqlx(&uri, &fresh).await);
            tp_rates.push(plain_tokio_postgres(&uri, &fresh).await);
            copy_rates.push(plain_copy(&uri, &fresh).await);
            binary_rates.push(plain_binary_copy(&uri, &fresh).await);
            indexed_rates.push(plain_indexed(&uri, &fresh, false).await);
            idempotent_rates.push(plain_indexed(&uri, &fresh, true).await);
        }
        let (binary, indexed, idempotent) = (
            median(binary_rates),
            median(indexed_rates),
            median(idempotent_rates),
        );
        let (ours, plain, tp, copy) = (
            median(store_rates),
            median(sqlx_rates),
            median(tp_rates),
            median(copy_rates),
        );
        println!("postgres store, batches of 100, every default index {ours:>10.0} docs/s   ratio store/plain = {:.2}", ours / plain);
        println!("postgres plain INSERT (UNNEST), sqlx, no index   {plain:>10.0} docs/s");
        println!("postgres plain INSERT (UNNEST), tokio-postgres   {tp:>10.0} docs/s   ratio tokio-postgres/sqlx = {:.2}", tp / plain);
        println!("postgres plain COPY, sqlx, no index              {copy:>10.0} docs/s   ratio copy/insert = {:.2}", copy / plain);
        println!("postgres plain binary COPY, tokio-postgres      {binary:>10.0} docs/s   ratio binary copy/insert = {:.2}", binary / plain);
        println!("postgres plain INSERT, the store's indexes       {indexed:>10.0} docs/s   ratio store/indexed plain = {:.2}", ours / indexed);
        println!("postgres ... and ON CONFLICT DO NOTHING          {idempotent:>10.0} docs/s   ratio store/idempotent plain = {:.2}", ours / idempotent);

        let uri = database(base);
        let store = open_store(DbConnection::Postgres { uri: uri.clone() }).await;
        let start = Instant::now();
        for a in &docs[..docs.len().min(if quick { 100 } else { 1_000 })] {
            store.insert(a).await.unwrap();
        }
        println!(
            "postgres store, one per commit                  {:>10.0} docs/s",
            docs.len().min(if quick { 100 } else { 1_000 }) as f64 / start.elapsed().as_secs_f64()
        );
        store_batched(
            &store,
            &docs[docs.len().min(if quick { 100 } else { 1_000 })..],
            100,
        )
        .await;
        brin_against_btree(&uri).await;
        queries(&store, "postgres", if quick { 100 } else { 2_000 }).await;
    }

    /// The first page (20 newest) of a one-hour range, on the store's btree index on
    /// `time_request` and on a BRIN index of a copy of the same rows; with the indexes' sizes.
    async fn brin_against_btree(uri: &str) {
        let pool = sqlx::PgPool::connect(uri).await.unwrap();
        pool.execute(
            "CREATE TABLE brin_copy AS SELECT * FROM audit_access;
             CREATE INDEX brin_copy_time ON brin_copy USING brin (time_request);
             ANALYZE brin_copy; ANALYZE audit_access;",
        )
        .await
        .unwrap();
        let page = |table: &str| {
            format!(
                "SELECT bson FROM {table} WHERE time_request >= '2024-01-01 00:00:30+00'
                 AND time_request < '2024-01-01 01:00:30+00' ORDER BY time_request DESC LIMIT 20"
            )
        };
        for (label, table) in [("btree", "audit_access"), ("brin", "brin_copy")] {
            let sql = page(table);
            let n = 200;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .fetch_all(&pool)
                        .await
                        .unwrap(),
                );
            }
            println!(
                "postgres first page of a time range, {label:<5}     {:>10.0} queries/s",
                n as f64 / start.elapsed().as_secs_f64()
            );
        }
        let size: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT sum(pg_relation_size(i.indexrelid))::bigint FROM pg_index i
                      JOIN pg_class c ON c.oid = i.indexrelid
                      WHERE obj_description(i.indrelid, 'pg_class') IS NULL
                        AND pg_get_indexdef(i.indexrelid) LIKE '%(time_request)%'
                        AND c.relname LIKE 'audit_access%'),
                    pg_relation_size('brin_copy_time')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        println!(
            "postgres time index size: btree {} KiB (all partitions), brin {} KiB",
            size.0 / 1024,
            size.1 / 1024
        );
    }
}
