//! The PostgreSQL store: one table per collection in the connection's schema, through sqlx's
//! PostgreSQL driver and its connection pool (see [`sql`] for the tables and the translation of
//! filters).
//!
//! `audit_access` and `audit_model_action` are partitioned by month on their date column, each
//! with a default partition for what has no month of its own; the writer creates the partition of
//! a month before it stores the month's first record (and `prepare` creates the next months
//! ahead), so retention can drop a whole month in one statement.
//!
//! A batch is one `INSERT ... SELECT FROM UNNEST(...)` (one array parameter per column: one
//! prepared statement for any batch size), idempotent by `_id`; a batch and its seal are one
//! transaction.

mod sql;
mod stored;

use super::filter::{Filter, FindOptions, Order};
use super::index::{EnsuredIndex, IndexInfo, IndexSpec};
use super::{StoreError, StoreResult};
use crate::document::{Collection, Process};
use bson::{Bson, Document, RawDocumentBuf};
use chrono::{DateTime, NaiveDate, Utc};
use sql::{columns, partition_column, Cell, Kind, Param, Params};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Arguments, Executor, Row};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// The server's code for a statement stopped by its `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// The PostgreSQL store. Clones share the connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The month partitions known to exist (or known to be covered by the default partition).
    partitions: Arc<Mutex<HashSet<(Collection, NaiveDate)>>>,
}

/// The pool's size: the writer takes one connection at a time, the console and the commands the
/// others.
const POOL_SIZE: u32 = 8;

/// How many months ahead `prepare` (and the writer, at start) creates partitions.
const MONTHS_AHEAD: u32 = 2;

impl PgStore {
    /// Connects to `uri`; with `read_only`, every transaction of the pool is read-only (what
    /// verification asks for), and nothing is created.
    pub(crate) async fn connect(uri: &str, read_only: bool) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(uri)?;
        if read_only {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = PgStore {
            pool,
            partitions: Arc::default(),
        };
        if read_only {
            store.require_tables().await?;
        } else {
            store.create_tables().await?;
        }
        Ok(store)
    }

    /// The audit tables exist (verification refuses a database that is not a trail).
    async fn require_tables(&self) -> StoreResult<()> {
        let names: Vec<String> = Collection::ALL
            .iter()
            .chain([&Collection::Seal])
            .map(|c| c.name().to_owned())
            .collect();
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let missing: Vec<&String> = names.iter().filter(|n| !found.contains(n)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NotATrail(format!(
                "the database has no {} table{}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() > 1 { "s" } else { "" }
            )))
        }
    }

    async fn create_tables(&self) -> StoreResult<()> {
        let mut tables = String::new();
        for c in ALL_TABLES {
            tables.push_str(&sql::table_sql(c));
        }
        // Several instances may start at once: one creates, the others wait for its lock.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7274926133001)")
            .execute(&mut *tx)
            .await?;
        tx.execute(sqlx::raw_sql(safe(&tables))).await?;
        tx.commit().await?;
        let now = Utc::now();
        for c in [Collection::Access, Collection::ModelAction] {
            let mut month = sql::month_of(now).0;
            for _ in 0..=MONTHS_AHEAD {
                self.ensure_partition(c, month).await?;
                month = month
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(month);
            }
        }
        Ok(())
    }

    /// The partition of `c` for the month starting `start` exists (or its records go to the
    /// default partition).
    async fn ensure_partition(&self, c: Collection, start: NaiveDate) -> StoreResult<()> {
        if lock(&self.partitions).contains(&(c, start)) {
            return Ok(());
        }
        let next = start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX);
        let stmt = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ('{start} 00:00:00+00') TO ('{next} 00:00:00+00')",
            sql::quoted(&sql::partition_name(c, start)),
            c.name()
        );
        match sqlx::query(safe(&stmt)).execute(&self.pool).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e))
                if matches!(
                    e.code().as_deref(),
                    // Another instance created it meanwhile; or the default partition already
                    // holds rows of that month, which then stay there.
                    Some("42P07") | Some("23505") | Some("23514") | Some("42P17")
                ) => {}
            Err(e) => return Err(e.into()),
        }
        lock(&self.partitions).insert((c, start));
        Ok(())
    }

    /// The partitions the months of `docs` need.
    async fn partitions_for(&self, c: Collection, docs: &[RawDocumentBuf]) -> StoreResult<()> {
        let Some(part) = partition_column(c) else {
            return Ok(());
        };
        let mut months = HashSet::new();
        for d in docs {
            if let Cell::Time(t) = sql::cell(part, d) {
                months.insert(sql::month_of(t).0);
            }
        }
        for m in months {
            self.ensure_partition(c, m).await?;
        }
        Ok(())
    }

    pub(crate) async fn insert_many(
        &self,
        c: Collection,
        docs: Vec<RawDocumentBuf>,
    ) -> StoreResult<u64> {
        self.insert_groups(vec![(c, docs)]).await
    }

    /// Inserts `docs`, their salts and the seal covering them in one transaction.
    pub(crate) async fn insert_many_sealed(
        &self,
        c: Collection,
        docs: Vec<RawDocumentBuf>,
        salts: Vec<RawDocumentBuf>,
        seal: RawDocumentBuf,
    ) -> StoreResult<u64> {
        self.insert_groups(vec![
            (c, docs),
            (Collection::Salt, salts),
            (Collection::Seal, vec![seal]),
        ])
        .await
    }

    /// Inserts each group into its table, in order, in one transaction; returns how many of the
    /// first group's documents were newly stored.
    async fn insert_groups(
        &self,
        groups: Vec<(Collection, Vec<RawDocumentBuf>)>,
    ) -> StoreResult<u64> {
        self.insert_groups_with(groups, false).await
    }

    async fn insert_groups_with(
        &self,
        groups: Vec<(Collection, Vec<RawDocumentBuf>)>,
        any_conflict: bool,
    ) -> StoreResult<u64> {
        let mut batches = Vec::with_capacity(groups.len());
        for (c, docs) in &groups {
            if docs.is_empty() {
                continue;
            }
            self.partitions_for(*c, docs).await?;
            batches.push((*c, Batch::of(*c, docs)?));
        }
        // One statement is atomic by itself: no transaction to open and commit around it.
        if batches.len() == 1 {
            let (c, batch) = batches.remove(0);
            let stmt = sql::insert_sql(c, any_conflict);
            return Ok(sqlx::query_with(safe(&stmt), batch.arguments(c)?)
                .execute(&self.pool)
                .await
                .map_err(|e| duplicate(c, e))?
                .rows_affected());
        }
        let mut tx = self.pool.begin().await?;
        let mut first = None;
        for (c, batch) in batches {
            let stmt = sql::insert_sql(c, any_conflict);
            let n = sqlx::query_with(safe(&stmt), batch.arguments(c)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| duplicate(c, e))?
                .rows_affected();
            first.get_or_insert(n);
        }
        tx.commit().await?;
        Ok(first.unwrap_or(0))
    }

    pub(crate) async fn upsert_process(&self, p: &Process) -> StoreResult<Process> {
        let doc = RawDocumentBuf::from_document(&bson::to_document(p)?)?;
        // Skipped when the unique (pid, machine, creation_time) index already holds one.
        self.insert_groups_with(vec![(Collection::Process, vec![doc])], true)
            .await?;
        // A concurrent first call may have stored its own document: the stored one answers.
        let stored: Vec<u8> = sqlx::query_scalar(
            "SELECT bson FROM audit_process WHERE pid = $1 AND machine = $2 AND creation_time = $3",
        )
        .bind(i64::from(p.pid))
        .bind(&p.machine)
        .bind(p.creation_time)
        .fetch_one(&self.pool)
        .await?;
        Ok(bson::from_slice(&stored)?)
    }

    /// `SELECT <what> FROM c WHERE ... ORDER BY ... LIMIT ... OFFSET ...` for `opts`.
    fn select(&self, c: Collection, what: &str, opts: &FindOptions) -> (String, Params) {
        let mut params = Params::default();
        let mut stmt = format!(
            "SELECT {what} FROM {} WHERE {}",
            c.name(),
            sql::where_sql(c, &opts.filter, &mut params)
        );
        if !opts.sort.is_empty() {
            let keys: Vec<String> = opts
                .sort
                .iter()
                .map(|(p, o)| {
                    format!(
                        "{} {}",
                        sql::order_expr(c, p),
                        if *o == Order::Asc { "ASC" } else { "DESC" }
                    )
                })
                .collect();
            stmt.push_str(&format!(" ORDER BY {}", keys.join(", ")));
        }
        if let Some(limit) = opts.limit {
            stmt.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as u64)));
        }
        if opts.skip > 0 {
            stmt.push_str(&format!(" OFFSET {}", opts.skip.min(i64::MAX as u64)));
        }
        (stmt, params)
    }

    /// Runs a query under the time limit (`statement_timeout`, in a transaction of its own).
    async fn fetch_limited(
        &self,
        stmt: &str,
        params: Params,
        max_time: Option<std::time::Duration>,
    ) -> StoreResult<Vec<sqlx::postgres::PgRow>> {
        let args = bind_all(params)?;
        let Some(limit) = max_time else {
            return Ok(sqlx::query_with(safe(stmt), args)
                .fetch_all(&self.pool)
                .await?);
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(safe(&format!(
            "SET LOCAL statement_timeout = {}",
            limit.as_millis().clamp(1, i32::MAX as u128)
        )))
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query_with(safe(stmt), args)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some(QUERY_CANCELED) => {
                    StoreError::TimeLimit(limit)
                }
                _ => StoreError::from(e),
            })?;
        tx.commit().await?;
        Ok(rows)
    }

    pub(crate) async fn find(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        self.find_bytes(c, opts)
            .await?
            .iter()
            .map(|d| d.to_document().map_err(|e| StoreError::Raw(e.to_string())))
            .collect()
    }

    /// The stored bytes of the documents matching `opts`.
    pub(crate) async fn find_bytes(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<RawDocumentBuf>> {
        let (stmt, params) = self.select(c, "bson", opts);
        self.fetch_limited(&stmt, params, opts.max_time)
            .await?
            .into_iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get(0)?;
                RawDocumentBuf::from_bytes(bytes).map_err(|e| StoreError::Raw(e.to_string()))
            })
            .collect()
    }

    pub(crate) async fn count(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        self.count_limited(c, filter, None).await
    }

    pub(crate) async fn count_limited(
        &self,
        c: Collection,
        filter: &Filter,
        max_time: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        let (stmt, params) = self.select(c, "count(*)", &FindOptions::new(filter.clone()));
        let rows = self.fetch_limited(&stmt, params, max_time).await?;
        let n: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(n as u64)
    }

    pub(crate) async fn find_values(
        &self,
        c: Collection,
        opts: &FindOptions,
        paths: &[&str],
    ) -> StoreResult<Vec<Vec<Bson>>> {
        let exprs: Vec<(String, Option<Kind>)> =
            paths.iter().map(|p| sql::value_expr(c, p)).collect();
        let what: Vec<String> = exprs
            .iter()
            .map(|(e, kind)| match kind {
                Some(Kind::Text) | Some(Kind::Int) | Some(Kind::Time) => e.clone(),
                _ => format!("({e})::text"),
            })
            .collect();
        let (stmt, params) = self.select(c, &what.join(", "), opts);
        let rows = self.fetch_limited(&stmt, params, opts.max_time).await?;
        rows.iter()
            .map(|r| {
                exprs
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| {
                        Ok(match kind {
                            Some(Kind::Text) => r
                                .try_get::<Option<String>, _>(i)?
                                .map_or(Bson::Null, Bson::String),
                            Some(Kind::Int) => r
                                .try_get::<Option<i64>, _>(i)?
                                .map_or(Bson::Null, Bson::Int64),
                            Some(Kind::Time) => r
                                .try_get::<Option<DateTime<Utc>>, _>(i)?
                                .map_or(Bson::Null, |t| Bson::Int64(t.timestamp_millis())),
                            _ => r
                                .try_get::<Option<String>, _>(i)?
                                .and_then(|t| serde_json::from_str(&t).ok())
                                .map_or(Bson::Null, |v| summary_value(&v)),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    pub(crate) async fn delete_many(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut params = Params::default();
        let stmt = format!(
            "DELETE FROM {} WHERE {}",
            c.name(),
            sql::where_sql(c, filter, &mut params)
        );
        Ok(sqlx::query_with(safe(&stmt), bind_all(params)?)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    pub(crate) async fn drop_collection(&self, c: Collection) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        tx.execute(sqlx::raw_sql(safe(&format!(
            "DROP TABLE IF EXISTS {} CASCADE; {}",
            c.name(),
            sql::table_sql(c)
        ))))
        .await?;
        tx.commit().await?;
        lock(&self.partitions).retain(|(pc, _)| *pc != c);
        Ok(())
    }

    pub(crate) async fn ensure_indexes(
        &self,
        c: Collection,
        specs: &[IndexSpec],
    ) -> StoreResult<Vec<EnsuredIndex>> {
        let existing: Vec<String> = self
            .list_indexes(c)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect();
        let mut out = Vec::new();
        for spec in specs {
            let name = spec.name();
            let created = !existing.contains(&name);
            if created {
                let keys: Vec<String> = spec
                    .keys
                    .iter()
                    .map(|(p, d)| {
                        let e = sql::order_expr(c, p);
                        let e = if e.starts_with('(') {
                            format!("({e})")
                        } else {
                            e
                        };
                        format!("{e}{}", if *d < 0 { " DESC" } else { "" })
                    })
                    .collect();
                let pg_name = index_name(c, &name);
                let comment = serde_json::json!({
                    "name": name,
                    "keys": spec.keys,
                    "unique": spec.unique,
                })
                .to_string();
                let stmt = format!(
                    "CREATE {}INDEX IF NOT EXISTS {} ON {} ({}); COMMENT ON INDEX {} IS '{}';",
                    if spec.unique { "UNIQUE " } else { "" },
                    sql::quoted(&pg_name),
                    c.name(),
                    keys.join(", "),
                    sql::quoted(&pg_name),
                    comment.replace('\'', "''")
                );
                let mut tx = self.pool.begin().await?;
                tx.execute(sqlx::raw_sql(safe(&stmt)))
                    .await
                    .map_err(|e| duplicate(c, e))?;
                tx.commit().await?;
            }
            out.push(EnsuredIndex {
                collection: c,
                name,
                created,
            });
        }
        Ok(out)
    }

    pub(crate) async fn list_indexes(&self, c: Collection) -> StoreResult<Vec<IndexInfo>> {
        let rows = sqlx::query(
            "SELECT obj_description(i.indexrelid, 'pg_class')
             FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
             WHERE t.relname = $1 AND t.relnamespace = current_schema()::regnamespace
               AND NOT i.indisprimary
             ORDER BY i.indexrelid",
        )
        .bind(c.name())
        .fetch_all(&self.pool)
        .await?;
        // Reported as MongoDB reports its `_id_` index (the primary key here).
        let mut out = vec![IndexInfo {
            name: "_id_".into(),
            keys: vec![("_id".into(), 1)],
            unique: false,
        }];
        for r in rows {
            let Some(comment) = r.try_get::<Option<String>, _>(0)? else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&comment) else {
                continue;
            };
            let keys = v["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| Some((k[0].as_str()?.to_owned(), k[1].as_i64()? as i32)))
                .collect();
            out.push(IndexInfo {
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                keys,
                unique: v["unique"].as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }

    pub(crate) async fn drop_index(&self, c: Collection, name: &str) -> StoreResult<bool> {
        let exists = self.list_indexes(c).await?.iter().any(|i| i.name == name);
        if exists {
            sqlx::query(safe(&format!(
                "DROP INDEX IF EXISTS {}",
                sql::quoted(&index_name(c, name))
            )))
            .execute(&self.pool)
            .await?;
        }
        Ok(exists)
    }

    /// Replaces the row holding exactly `old` by `new` (see `Store::replace_stored`): by id and
    /// bytes, else by the bytes alone.
    pub(crate) async fn replace_stored(
        &self,
        c: Collection,
        old: &RawDocumentBuf,
        new: RawDocumentBuf,
    ) -> StoreResult<bool> {
        let guard = old.as_bytes().to_vec();
        if self
            .replace_guarded(c, new.clone(), Some((&guard, true)))
            .await?
        {
            return Ok(true);
        }
        self.replace_guarded(c, new, Some((&guard, false))).await
    }

    /// Replaces the stored document with `doc`'s `_id` (bytes, `jsonb` and columns together);
    /// `false` when there is none.
    pub(crate) async fn replace_bytes(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
    ) -> StoreResult<bool> {
        self.replace_guarded(c, doc, None).await
    }

    /// The `UPDATE` of [`replace_bytes`](Self::replace_bytes); with `guard`, only the row holding
    /// those bytes (and, when its flag is set, also that id).
    async fn replace_guarded(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
        guard: Option<(&[u8], bool)>,
    ) -> StoreResult<bool> {
        let batch = Batch::of(c, std::slice::from_ref(&doc))?;
        let cols = columns(c);
        let sets: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, col)| {
                let cast = if col.kind == Kind::Json {
                    "::jsonb"
                } else {
                    ""
                };
                format!("{} = ${}{cast}", sql::quoted(col.name), i + 4)
            })
            .collect();
        let mut stmt = format!("UPDATE {} SET bson = $2, doc = $3::jsonb", c.name());
        for s in &sets {
            stmt.push_str(", ");
            stmt.push_str(s);
        }
        let at = cols.len() + 4;
        stmt.push_str(
            match guard {
                None => " WHERE id = $1".to_owned(),
                Some((_, true)) => format!(" WHERE id = $1 AND bson = ${at}"),
                Some((_, false)) => format!(" WHERE bson = ${at} AND $1::text IS NOT NULL"),
            }
            .as_str(),
        );
        self.partitions_for(c, std::slice::from_ref(&doc)).await?;
        let mut args = batch.row_arguments(c, 0)?;
        if let Some((old, _)) = guard {
            args.add(old.to_vec())
                .map_err(|e| StoreError::Raw(format!("cannot bind a parameter: {e}")))?;
        }
        let n = sqlx::query_with(safe(&stmt), args)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n >= 1)
    }
}

/// Every table of an audit database.
const ALL_TABLES: [Collection; 5] = [
    Collection::Access,
    Collection::Process,
    Collection::ModelAction,
    Collection::Seal,
    Collection::Salt,
];

/// The name of the PostgreSQL index standing for the index `name` of `c` (index names are
/// per schema, and MongoDB's can be longer than PostgreSQL's 63 bytes): the table and a hash of
/// the name. The name itself is in the index's comment.
fn index_name(c: Collection, name: &str) -> String {
    let h = crate::commitment::sha256(name.as_bytes());
    let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", c.name())
}

/// A `jsonb` value as a summary reads it (like the other stores' `find_values`): integers as
/// Int64, dates as milliseconds, a sub-document or array as `true`.
fn summary_value(v: &serde_json::Value) -> Bson {
    use serde_json::Value as J;
    match v {
        J::Null => Bson::Null,
        J::Bool(b) => Bson::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Bson::String(s.clone()),
        J::Object(o) => match o.get("$date") {
            Some(J::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Bson::Int64(t.timestamp_millis()))
                .unwrap_or(Bson::Boolean(true)),
            _ => Bson::Boolean(true),
        },
        J::Array(_) => Bson::Boolean(true),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn duplicate(c: Collection, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => StoreError::Duplicate {
            collection: c,
            detail: d.message().to_owned(),
        },
        _ => e.into(),
    }
}

/// A statement this store built: its SQL comes from the store's own table, column and index
/// names (quoted) and `$n` placeholders; every value is bound as a parameter, never spliced in.
fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}

/// Binds every parameter of a translated filter.
fn bind_all(params: Params) -> StoreResult<PgArguments> {
    let mut args = PgArguments::default();
    for p in params.0 {
        let r = match p {
            Param::Text(s) | Param::Json(s) => args.add(s),
            Param::Texts(v) => args.add(v),
            Param::Int(i) => args.add(i),
            Param::Float(f) => args.add(f),
            Param::Time(t) => args.add(t),
        };
        r.map_err(|e| StoreError::Raw(format!("cannot bind a parameter: {e}")))?;
    }
    Ok(args)
}

/// The rows of a batch, column by column, made from the documents' bytes.
struct Batch {
    ids: Vec<String>,
    bsons: Vec<Vec<u8>>,
    docs: Vec<String>,
    cells: Vec<Vec<Cell>>,
}

impl Batch {
    fn of(c: Collection, docs: &[RawDocumentBuf]) -> StoreResult<Batch> {
        let cols = columns(c);
        let mut b = Batch {
            ids: Vec::with_capacity(docs.len()),
            bsons: Vec::with_capacity(docs.len()),
            docs: Vec::with_capacity(docs.len()),
            cells: vec![Vec::with_capacity(docs.len()); cols.len()],
        };
        for d in docs {
            let id = d
                .get_object_id("_id")
                .map_err(|_| StoreError::Raw(format!("document of {c} has no ObjectId `_id`")))?;
            b.ids.push(id.to_hex());
            b.bsons.push(d.as_bytes().to_vec());
            b.docs.push(
                sql::doc_json(d)
                    .map_err(|e| StoreError::Raw(e.to_string()))?
                    .to_string(),
            );
            for (i, col) in cols.iter().enumerate() {
                b.cells[i].push(sql::cell(col, d));
            }
        }
        Ok(b)
    }

    /// The arguments of [`sql::insert_sql`]: one array per column.
    fn arguments(self, c: Collection) -> StoreResult<PgArguments> {
        let mut args = PgArguments::default();
        let bind = |r: Result<(), sqlx::error::BoxDynError>| {
            r.map_err(|e| StoreError::Raw(format!("cannot bind a parameter: {e}")))
        };
        bind(args.add(self.ids))?;
        bind(args.add(self.bsons))?;
        bind(args.add(self.docs))?;
        for (col, cells) in columns(c).iter().zip(self.cells) {
            match col.kind {
                Kind::Text => {
                    bind(args.add(cells.into_iter().map(Cell::into_text).collect::<Vec<_>>()))?
                }
                Kind::Json => bind(
                    args.add(
                        cells
                            .into_iter()
                            .map(Cell::into_json_text)
                            .collect::<Vec<_>>(),
                    ),
                )?,
                Kind::Time => {
                    bind(args.add(cells.into_iter().map(Cell::into_time).collect::<Vec<_>>()))?
                }
                Kind::Int => {
                    bind(args.add(cells.into_iter().map(Cell::into_int).collect::<Vec<_>>()))?
                }
            }
        }
        Ok(args)
    }

    /// The arguments of one row (`$1` id, `$2` bytes, `$3` document, then each column).
    fn row_arguments(mut self, c: Collection, i: usize) -> StoreResult<PgArguments> {
        let mut args = PgArguments::default();
        let bind = |r: Result<(), sqlx::error::BoxDynError>| {
            r.map_err(|e| StoreError::Raw(format!("cannot bind a parameter: {e}")))
        };
        bind(args.add(std::mem::take(&mut self.ids[i])))?;
        bind(args.add(std::mem::take(&mut self.bsons[i])))?;
        bind(args.add(std::mem::take(&mut self.docs[i])))?;
        for (col, cells) in columns(c).iter().zip(&mut self.cells) {
            let cell = std::mem::replace(&mut cells[i], Cell::Null);
            match col.kind {
                Kind::Text => bind(args.add(cell.into_text()))?,
                Kind::Json => bind(args.add(cell.into_json_text()))?,
                Kind::Time => bind(args.add(cell.into_time()))?,
                Kind::Int => bind(args.add(cell.into_int()))?,
            }
        }
        Ok(args)
    }
}

impl Cell {
    fn into_text(self) -> Option<String> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
    fn into_json_text(self) -> Option<String> {
        match self {
            Cell::Json(v) => Some(v.to_string()),
            _ => None,
        }
    }
    fn into_time(self) -> Option<DateTime<Utc>> {
        match self {
            Cell::Time(t) => Some(t),
            _ => None,
        }
    }
    fn into_int(self) -> Option<i64> {
        match self {
            Cell::Int(i) => Some(i),
            _ => None,
        }
    }
}
