//! The embedded store: one SQLite file (WAL, `synchronous=FULL`), one table per collection holding
//! each document as a raw BSON blob, so every type round-trips exactly (an Int64 stays Int64).
//!
//! Every path an index covers also has a column of its own, named `"$path"` (`"$request.path"`),
//! filled when the row is written: the writer reads those few values out of the raw bytes once,
//! and the indexes are plain column indexes. (Earlier versions indexed `bson_get(doc, 'path')`
//! expressions, which SQLite evaluated for every index on every insert, about twenty calls per
//! access; a file written that way is migrated when it is opened.) Paths without a column are read
//! with the deterministic SQL function `bson_get(doc, 'dotted.path')`, which gives exactly the
//! value the column holds, so the filter translator can use either and the planner uses the index
//! whenever there is one (checked by `EXPLAIN QUERY PLAN` in the tests). A second function,
//! `regexp(pattern, value)`, backs `REGEXP` with the `regex` crate.
//!
//! SQLite is a single writer and its calls block, so all work runs on tokio's blocking pool behind
//! one mutex-guarded connection; the async executor never waits on disk.

mod stored;

use super::filter::{literal_prefix, Filter, FindOptions, Order};
use super::index::{default_indexes, EnsuredIndex, IndexInfo, IndexSpec};
use super::{StoreError, StoreResult};
use crate::document::{Collection, Process};
use bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use bson::{Bson, Document};
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The embedded SQLite store. Clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    columns: Arc<Mutex<Columns>>,
    path: PathBuf,
}

/// The paths of each collection that have a column of their own, as of one schema version of the
/// file. Another connection (the command line, a second process) may add a column for a custom
/// index, so every write checks the version inside its transaction and reads the list again when
/// it moved: a row written after the column exists always fills it. Queries use the list as it is;
/// a path they do not know as a column yet is read with `bson_get`, which gives the same value.
#[derive(Default)]
struct Columns {
    version: i64,
    paths: BTreeMap<Collection, Arc<[String]>>,
}

impl Columns {
    fn read(conn: &Connection) -> rusqlite::Result<Columns> {
        let version = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        let mut paths = BTreeMap::new();
        for c in TABLES {
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", c.name()))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(1))?
                .filter_map(|n| match n {
                    Ok(n) => n.strip_prefix('$').map(|p| Ok(p.to_owned())),
                    Err(e) => Some(Err(e)),
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            paths.insert(c, names.into());
        }
        Ok(Columns { version, paths })
    }

    fn of(&self, c: Collection) -> Arc<[String]> {
        self.paths.get(&c).cloned().unwrap_or_else(|| Arc::new([]))
    }
}

/// Every table of an audit database.
const TABLES: [Collection; 5] = [
    Collection::Access,
    Collection::Process,
    Collection::ModelAction,
    Collection::Seal,
    Collection::Salt,
];

impl SqliteStore {
    /// Opens (creating if needed) the database file and its three tables.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, open_connection).await
    }

    /// The store on the connection `connect` opens (on the blocking pool).
    async fn open_with(
        path: &Path,
        connect: impl FnOnce(&Path) -> StoreResult<Connection> + Send + 'static,
    ) -> StoreResult<Self> {
        let p = path.to_owned();
        let (conn, columns) = tokio::task::spawn_blocking(move || {
            let conn = connect(&p)?;
            let columns = Columns::read(&conn)?;
            Ok::<_, StoreError>((conn, columns))
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            columns: Arc::new(Mutex::new(columns)),
            path: path.to_owned(),
        })
    }

    /// Opens an existing database file for reading only: nothing is created or migrated, and
    /// the file is never written (verification reads this way). A file that is not an audit
    /// database (empty, or without the audit tables) is [`StoreError::NotATrail`].
    pub async fn open_read_only(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, |p| {
            let conn = Connection::open_with_flags(
                p,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            register_functions(&conn)?;
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let missing: Vec<&str> = Collection::ALL
                .iter()
                .chain([&Collection::Seal])
                .map(|c| c.name())
                .filter(|n| !tables.iter().any(|t| t == n))
                .collect();
            if !missing.is_empty() {
                return Err(StoreError::NotATrail(format!(
                    "{} has no {} table{}",
                    p.display(),
                    missing.join(", "),
                    if missing.len() > 1 { "s" } else { "" }
                )));
            }
            Ok(conn)
        })
        .await
    }

    /// The column paths of `c` as last read (for translating queries).
    fn columns_of(&self, c: Collection) -> Arc<[String]> {
        lock(&self.columns).of(c)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    pub(crate) async fn insert_many(
        &self,
        c: Collection,
        docs: Vec<RawDocumentBuf>,
    ) -> StoreResult<u64> {
        self.insert_groups(vec![(c, docs)]).await
    }

    /// Inserts `docs`, then the salts of their commitments, then the `seal` covering them, in one
    /// transaction.
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

    /// Inserts each group's documents into its collection, in order, in one transaction;
    /// returns how many of the first group's were newly stored.
    async fn insert_groups(
        &self,
        groups: Vec<(Collection, Vec<RawDocumentBuf>)>,
    ) -> StoreResult<u64> {
        let groups = groups
            .into_iter()
            .map(|(c, docs)| {
                let rows = docs
                    .into_iter()
                    .map(|d| {
                        let id = d.get_object_id("_id").map_err(|_| {
                            StoreError::Raw(format!("document of {c} has no ObjectId `_id`"))
                        })?;
                        Ok((id.to_hex(), d))
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok((c, rows))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let columns = self.columns.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let mut first = None;
            for (c, rows) in &groups {
                let mut n = 0;
                let cols = fresh_columns(&tx, &columns, *c)?;
                let mut stmt = tx.prepare_cached(&insert_sql(*c, &cols, "(id)"))?;
                for (id, doc) in rows {
                    n +=
                        insert_row(&mut stmt, id, doc, &cols).map_err(|e| duplicate(*c, e))? as u64;
                }
                first.get_or_insert(n);
            }
            tx.commit()?;
            Ok(first.unwrap_or(0))
        })
        .await
    }

    pub(crate) async fn upsert_process(&self, p: &Process) -> StoreResult<Process> {
        let doc = RawDocumentBuf::from_document(&bson::to_document(p)?)?;
        let id = p.id.to_hex();
        let (pid, machine, created) =
            (p.pid, p.machine.clone(), p.creation_time.timestamp_millis());
        let columns = self.columns.clone();
        let stored: Vec<u8> = self
            .run(move |conn| {
                let c = Collection::Process;
                let tx = conn.transaction()?;
                let cols = fresh_columns(&tx, &columns, c)?;
                // `ON CONFLICT DO NOTHING` without a target covers the unique (pid, machine,
                // creation_time) index, so concurrent first calls store one document.
                insert_row(
                    &mut tx.prepare(&insert_sql(c, &cols, ""))?,
                    &id,
                    &doc,
                    &cols,
                )?;
                let stored = tx.query_row(
                    &format!(
                        "SELECT doc FROM audit_process WHERE {} = ?1 AND {} = ?2 AND {} = ?3",
                        expr(&cols, "pid"),
                        expr(&cols, "machine"),
                        expr(&cols, "creation_time")
                    ),
                    rusqlite::params![pid, machine, created],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok(stored)
            })
            .await?;
        Ok(bson::from_document(decode(&stored)?)?)
    }

    pub(crate) async fn find(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        self.find_blobs(c, opts)
            .await?
            .iter()
            .map(|b| decode(b))
            .collect()
    }

    /// The stored bytes of the documents matching `opts`, within its time limit.
    async fn find_blobs(&self, c: Collection, opts: &FindOptions) -> StoreResult<Vec<Vec<u8>>> {
        let (mut sql, params) = select_sql(c, &self.columns_of(c), opts)?;
        let limit = opts.limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        sql.push_str(&format!(
            " LIMIT {limit} OFFSET {}",
            opts.skip.min(i64::MAX as u64)
        ));
        let max_time = opts.max_time;
        self.run(move |conn| {
            with_time_limit(conn, max_time, |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(params.iter()), |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
        })
        .await
    }

    pub(crate) async fn count(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut params = Vec::new();
        let clause = where_sql(filter, &self.columns_of(c), &mut params)?;
        self.count_where(c, clause, params).await
    }

    /// `SELECT COUNT(*)` of `c` under a translated `WHERE` clause and its parameters.
    async fn count_where(
        &self,
        c: Collection,
        clause: String,
        params: Vec<Value>,
    ) -> StoreResult<u64> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {clause}", c.name());
        self.run(move |conn| {
            let n: i64 = conn
                .prepare_cached(&sql)?
                .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    pub(crate) async fn delete_many(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut params = Vec::new();
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            c.name(),
            where_sql(filter, &self.columns_of(c), &mut params)?
        );
        self.run(move |conn| Ok(conn.execute(&sql, params_from_iter(params.iter()))? as u64))
            .await
    }

    pub(crate) async fn drop_collection(&self, c: Collection) -> StoreResult<()> {
        let columns = self.columns.clone();
        self.run(move |conn| {
            // The new table keeps the columns the old one had (and the defaults), so rows
            // written next fill them; `ensure_indexes` builds the indexes again.
            let mut paths = default_paths(c);
            paths.extend(lock(&columns).of(c).iter().cloned());
            let tx = conn.transaction()?;
            tx.execute_batch(&format!("DROP TABLE IF EXISTS {};", c.name()))?;
            tx.execute_batch(&table_sql(c, &[]))?;
            ensure_columns(&tx, c, &paths)?;
            tx.commit()?;
            *lock(&columns) = Columns::read(conn)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn ensure_indexes(
        &self,
        c: Collection,
        specs: &[IndexSpec],
    ) -> StoreResult<Vec<EnsuredIndex>> {
        let specs = specs.to_vec();
        let columns = self.columns.clone();
        self.run(move |conn| {
            let mut out = Vec::new();
            let paths: Vec<String> = specs
                .iter()
                .flat_map(|s| s.keys.iter().map(|(p, _)| p.clone()))
                .collect();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let added = ensure_columns(&tx, c, &paths)?;
            tx.commit()?;
            if added {
                *lock(&columns) = Columns::read(conn)?;
            }
            for spec in &specs {
                let name = index_name(c, spec);
                let exists = conn
                    .query_row(
                        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
                        [&name],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !exists {
                    conn.execute_batch(&create_index_sql(c, spec))
                        .map_err(|e| duplicate(c, e))?;
                }
                out.push(EnsuredIndex {
                    collection: c,
                    name: spec.name(),
                    created: !exists,
                });
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn list_indexes(&self, c: Collection) -> StoreResult<Vec<IndexInfo>> {
        self.run(move |conn| {
            // Reported as MongoDB reports its `_id_` index (unique by nature, without the flag).
            let mut out = vec![IndexInfo { name: "_id_".into(), keys: vec![("_id".into(), 1)], unique: false }];
            let mut stmt = conn.prepare(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY rowid",
            )?;
            let prefix = format!("{}.", c.name());
            let rows = stmt.query_map([c.name()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            for row in rows {
                let (name, sql) = row?;
                let Some(short) = name.strip_prefix(&prefix) else { continue };
                out.push(IndexInfo { name: short.to_owned(), keys: parse_index_keys(&sql), unique: sql.starts_with("CREATE UNIQUE") });
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn drop_index(&self, c: Collection, name: &str) -> StoreResult<bool> {
        let full = format!("{}.{}", c.name(), name);
        self.run(move |conn| {
            let exists = conn
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    [&full],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if exists {
                conn.execute_batch(&format!("DROP INDEX \"{}\"", full.replace('"', "\"\"")))?;
            }
            Ok(exists)
        })
        .await
    }

    /// The journal mode and the `synchronous` level of the store's own connection (`("wal", 2)`:
    /// WAL, `synchronous=FULL`). The level is a setting of each connection, not of the file, so
    /// only the store can say which one its writes run at.
    pub async fn durability(&self) -> StoreResult<(String, i64)> {
        self.run(|conn| {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
        .await
    }

    /// The query plan SQLite picks for `filter` on `collection` (`EXPLAIN QUERY PLAN` detail rows), so
    /// tests and operators can check that a query shape uses an index.
    pub async fn explain(&self, c: Collection, opts: &FindOptions) -> StoreResult<Vec<String>> {
        let (select, params) = select_sql(c, &self.columns_of(c), opts)?;
        let sql = format!("EXPLAIN QUERY PLAN {select}");
        self.run(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows =
                stmt.query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Replaces the stored bytes of the document with `doc`'s `_id`, in one statement; `false`
    /// when there is none.
    pub(crate) async fn replace_bytes(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
    ) -> StoreResult<bool> {
        self.replace_where(c, doc, None).await
    }

    /// Replaces the row holding exactly `old` by `new` (see [`Store::replace_stored`]).
    ///
    /// [`Store::replace_stored`]: crate::store::Store::replace_stored
    pub(crate) async fn replace_stored(
        &self,
        c: Collection,
        old: &RawDocumentBuf,
        new: RawDocumentBuf,
    ) -> StoreResult<bool> {
        self.replace_where(c, new, Some(old.as_bytes().to_vec()))
            .await
    }

    /// `UPDATE` of the row with `doc`'s id (and, with `old`, those bytes: by id first, through
    /// its index, else by the bytes alone, for a row whose `id` copy was changed).
    async fn replace_where(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
        old: Option<Vec<u8>>,
    ) -> StoreResult<bool> {
        let id = doc
            .get_object_id("_id")
            .map_err(|_| StoreError::Raw("document has no ObjectId `_id`".into()))?
            .to_hex();
        let columns = self.columns.clone();
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let cols = fresh_columns(&tx, &columns, c)?;
            // The columns change with the bytes, so the indexes keep telling the truth.
            let sets: String = cols
                .iter()
                .enumerate()
                .map(|(i, p)| format!(", {} = ?{}", column(p), i + 3))
                .collect();
            let old_at = cols.len() + 3;
            let mut values = row_values(&id, &doc, &cols)?;
            // Copies of the same bytes under other ids are replaced too: they hold the same data.
            let n = match &old {
                None => tx.execute(
                    &format!("UPDATE {} SET doc = ?2{sets} WHERE id = ?1", c.name()),
                    params_from_iter(values.iter()),
                )?,
                Some(old) => {
                    values.push(ToSqlOutput::from(old.as_slice()));
                    let by_id = tx.execute(
                        &format!(
                            "UPDATE {} SET doc = ?2{sets} WHERE id = ?1 AND doc = ?{old_at}",
                            c.name()
                        ),
                        params_from_iter(values.iter()),
                    )?;
                    if by_id == 1 {
                        1
                    } else {
                        tx.execute(
                            &format!(
                                "UPDATE {} SET doc = ?2{sets} WHERE doc = ?{old_at} AND ?1 IS NOT NULL",
                                c.name()
                            ),
                            params_from_iter(values.iter()),
                        )?
                    }
                }
            };
            tx.commit()?;
            Ok(n >= 1)
        })
        .await
    }

    /// Like `find`, the documents' stored bytes (not decoded).
    pub(crate) async fn find_bytes(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<RawDocumentBuf>> {
        self.find_blobs(c, opts)
            .await?
            .into_iter()
            .map(|b| RawDocumentBuf::from_bytes(b).map_err(|e| StoreError::Raw(e.to_string())))
            .collect()
    }
}

// === time limits ===

/// How many virtual-machine steps SQLite runs between two looks at the clock: small enough that a
/// query stops within a millisecond or so of its limit, large enough to cost nothing measurable.
const PROGRESS_STEPS: std::ffi::c_int = 1000;

/// Runs `f` on `conn` with SQLite's progress handler watching the clock: past `max_time` the
/// handler asks SQLite to stop, the statement fails with `SQLITE_INTERRUPT`, and that becomes
/// [`StoreError::TimeLimit`]. The handler is removed afterwards, so other users of the shared
/// connection (the writer) never inherit it.
fn with_time_limit<R>(
    conn: &Connection,
    max_time: Option<std::time::Duration>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> StoreResult<R> {
    let Some(limit) = max_time else {
        return Ok(f(conn)?);
    };
    let deadline = std::time::Instant::now() + limit;
    conn.progress_handler(
        PROGRESS_STEPS,
        Some(move || std::time::Instant::now() >= deadline),
    )?;
    let res = f(conn);
    // Removing it fails only where installing it did (a connection rusqlite does not own), so
    // this error is reported only if the query itself succeeded.
    let removed = conn.progress_handler(PROGRESS_STEPS, None::<fn() -> bool>);
    res.and_then(|r| removed.map(|()| r)).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            StoreError::TimeLimit(limit)
        }
        e => StoreError::from(e),
    })
}

impl SqliteStore {
    /// [`count`](Self::count) under a time limit.
    pub(crate) async fn count_limited(
        &self,
        c: Collection,
        filter: &Filter,
        max_time: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        let mut params = Vec::new();
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE {}",
            c.name(),
            where_sql(filter, &self.columns_of(c), &mut params)?
        );
        self.run(move |conn| {
            with_time_limit(conn, max_time, |conn| {
                let n: i64 = conn
                    .prepare_cached(&sql)?
                    .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
                Ok(n as u64)
            })
        })
        .await
    }

    /// The values at `paths` of every document matching `opts` (sort, window and time limit
    /// honoured), read with `bson_get` inside SQLite: summaries over many documents never decode
    /// whole documents.
    pub(crate) async fn find_values(
        &self,
        c: Collection,
        opts: &FindOptions,
        paths: &[&str],
    ) -> StoreResult<Vec<Vec<Bson>>> {
        let columns = self.columns_of(c);
        let (select, params) = select_sql(c, &columns, opts)?;
        let cols: Vec<String> = paths.iter().map(|p| expr(&columns, p)).collect();
        let limit = opts.limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        let sql = format!(
            "SELECT {} FROM {} LIMIT {limit} OFFSET {}",
            cols.join(", "),
            select.replacen("SELECT doc FROM", "", 1),
            opts.skip.min(i64::MAX as u64)
        );
        let n = paths.len();
        let max_time = opts.max_time;
        self.run(move |conn| {
            with_time_limit(conn, max_time, |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(params.iter()), |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Bson::Null,
                                rusqlite::types::ValueRef::Integer(i) => Bson::Int64(i),
                                rusqlite::types::ValueRef::Real(f) => Bson::Double(f),
                                rusqlite::types::ValueRef::Text(t) => {
                                    Bson::String(String::from_utf8_lossy(t).into_owned())
                                }
                                // A sub-document or array: present, contents not needed.
                                rusqlite::types::ValueRef::Blob(_) => Bson::Boolean(true),
                            })
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?;
                rows.collect()
            })
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the connection usable (SQLite rolls back an open
    // transaction when the `Transaction` guard drops), and the column list is replaced whole, so a
    // poisoned lock is taken over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn duplicate(c: Collection, e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate {
                collection: c,
                detail: msg.unwrap_or_else(|| f.to_string()),
            }
        }
        e => StoreError::from(e),
    }
}

fn decode(blob: &[u8]) -> StoreResult<Document> {
    Document::from_reader(blob).map_err(|e| StoreError::Raw(e.to_string()))
}

/// Creates the database file, readable and writable by its owner only (0600, whatever the umask),
/// before SQLite opens it: SQLite creates the `-wal` and `-shm` files with the database file's
/// permissions, so they come out private too. An existing file is left as it is.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.as_os_str();
    if name.is_empty() || name == ":memory:" || path.to_string_lossy().starts_with("file:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        // The umask can only take bits away; this sets exactly 0600 even under an odd one.
        Ok(f) => f.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a connection with the store's pragmas and SQL functions, creates the tables, and moves a
/// file written by an earlier version (indexes on `bson_get` expressions) onto indexed columns. A
/// new database file is created with mode 0600.
pub fn open_connection(path: &Path) -> StoreResult<Connection> {
    create_private(path)?;
    let mut conn = Connection::open(path)?;
    prepare_connection(&conn)?;
    for c in TABLES {
        conn.execute_batch(&table_sql(c, &default_paths(c)))?;
    }
    if needs_migration(&conn)? {
        migrate(&mut conn)?;
    }
    Ok(conn)
}

/// The paths the default indexes of `c` cover, each once.
fn default_paths(c: Collection) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for spec in default_indexes(c) {
        for (p, _) in spec.keys {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
}

/// The indexes of `c` still built on `bson_get` expressions: `(name, sql)`.
fn expression_indexes(conn: &Connection, c: Collection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 \
         AND sql LIKE '%bson_get(doc,%'",
    )?;
    let rows = stmt.query_map([c.name()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Whether a default column is missing or an index is still on an expression (a read-only look, so
/// opening an up-to-date file never takes the write lock).
fn needs_migration(conn: &Connection) -> rusqlite::Result<bool> {
    let columns = Columns::read(conn)?;
    for c in TABLES {
        let have = columns.of(c);
        if default_paths(c).iter().any(|p| !have.contains(p))
            || !expression_indexes(conn, c)?.is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds the default columns (filled from the stored documents) and rebuilds every expression
/// index on columns, under its own name, in one write transaction: a second process opening the
/// file at the same time waits, then finds the work done.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for c in TABLES {
        let legacy = expression_indexes(&tx, c)?;
        let mut paths = default_paths(c);
        for (_, sql) in &legacy {
            paths.extend(parse_index_keys(sql).into_iter().map(|(p, _)| p));
        }
        ensure_columns(&tx, c, &paths)?;
        let cols: Vec<String> = Columns::read(&tx)?.of(c).to_vec();
        for (name, sql) in legacy {
            let keys = parse_index_keys(&sql);
            tx.execute_batch(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))?;
            tx.execute_batch(&index_sql(
                c,
                &name,
                &keys,
                sql.starts_with("CREATE UNIQUE"),
                &cols,
            ))?;
        }
    }
    tx.commit()
}

/// Adds a column for each of `paths` that has none yet and fills it from the stored documents;
/// `true` when one was added.
fn ensure_columns(conn: &Connection, c: Collection, paths: &[String]) -> rusqlite::Result<bool> {
    let have = Columns::read(conn)?.of(c);
    let mut added = Vec::new();
    for p in paths {
        if p == "_id" || have.contains(p) || added.contains(p) {
            continue;
        }
        conn.execute_batch(&format!(
            "ALTER TABLE {t} ADD COLUMN {col}; UPDATE {t} SET {col} = bson_get(doc,'{path}');",
            t = c.name(),
            col = column(p),
            path = p.replace('\'', "''"),
        ))?;
        added.push(p.clone());
    }
    Ok(!added.is_empty())
}

/// The column paths of `c` for a write inside `tx`: the cached list, read again first if the
/// schema changed since (another connection added a column).
fn fresh_columns(
    tx: &Connection,
    cache: &Mutex<Columns>,
    c: Collection,
) -> rusqlite::Result<Arc<[String]>> {
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    let mut cache = lock(cache);
    if cache.version != version {
        *cache = Columns::read(tx)?;
    }
    Ok(cache.of(c))
}

/// `INSERT ... (id, doc, "$path", ...) VALUES (?1, ?2, ?3, ...) ON CONFLICT <target> DO NOTHING`:
/// idempotent by id with the target `(id)`, by any unique index with none.
fn insert_sql(c: Collection, cols: &[String], conflict_target: &str) -> String {
    let names: String = cols.iter().map(|p| format!(", {}", column(p))).collect();
    let marks: String = (0..cols.len()).map(|i| format!(", ?{}", i + 3)).collect();
    format!(
        "INSERT INTO {} (id, doc{names}) VALUES (?1, ?2{marks}) ON CONFLICT {conflict_target} DO NOTHING",
        c.name()
    )
}

/// Executes an [`insert_sql`] statement for one document: the indexed values are read out of its
/// raw bytes here, once, borrowing them where SQLite can take them as they are.
fn insert_row(
    stmt: &mut rusqlite::Statement<'_>,
    id: &str,
    doc: &RawDocument,
    cols: &[String],
) -> rusqlite::Result<usize> {
    stmt.execute(params_from_iter(row_values(id, doc, cols)?.iter()))
}

/// The parameters of one row: `?1` the id, `?2` the document's bytes, then the value of each
/// column path, in order.
fn row_values<'a>(
    id: &'a str,
    doc: &'a RawDocument,
    cols: &[String],
) -> rusqlite::Result<Vec<ToSqlOutput<'a>>> {
    let mut values = Vec::with_capacity(cols.len() + 2);
    values.push(ToSqlOutput::from(id));
    values.push(ToSqlOutput::from(doc.as_bytes()));
    values.extend(cells(doc, cols)?);
    Ok(values)
}

/// The quoted column name of a path. `$` cannot start a path (nor any of the table's own
/// columns), so no path's column collides with another name.
fn column(path: &str) -> String {
    format!("\"${}\"", path.replace('"', "\"\""))
}

/// Sets WAL + `synchronous=FULL` and registers `bson_get` and `regexp` on a connection. Every
/// connection that touches an audit database needs the functions, since the indexes use them.
pub fn prepare_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    register_functions(conn)
}

/// Registers `bson_get` and `regexp`, which every reader needs too (the indexes and the filters
/// use them).
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("bson_get", 2, flags, bson_get)?;
    conn.create_scalar_function("regexp", 2, flags, regexp)?;
    Ok(())
}

/// The table of one collection: a rowid, the document's hex ObjectId (unique: the `_id_` index),
/// the raw BSON, and a column for each of `paths`. The columns have no declared type, so SQLite
/// keeps each value exactly as given, as it did for the expression `bson_get` yields.
fn table_sql(c: Collection, paths: &[String]) -> String {
    let cols: String = paths
        .iter()
        .filter(|p| *p != "_id")
        .map(|p| format!(", {}", column(p)))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc BLOB NOT NULL{cols});",
        c.name()
    )
}

fn index_name(c: Collection, spec: &IndexSpec) -> String {
    format!("{}.{}", c.name(), spec.name())
}

/// The `CREATE INDEX` statement of one index spec, on the columns of its paths (which
/// [`ensure_columns`] adds first).
fn create_index_sql(c: Collection, spec: &IndexSpec) -> String {
    let cols: Vec<String> = spec.keys.iter().map(|(p, _)| p.clone()).collect();
    index_sql(c, &index_name(c, spec), &spec.keys, spec.unique, &cols)
}

fn index_sql(
    c: Collection,
    name: &str,
    keys: &[(String, i32)],
    unique: bool,
    cols: &[String],
) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(p, d)| format!("{}{}", expr(cols, p), if *d < 0 { " DESC" } else { "" }))
        .collect();
    format!(
        "CREATE {}INDEX IF NOT EXISTS \"{}\" ON {} ({});",
        if unique { "UNIQUE " } else { "" },
        name.replace('"', "\"\""),
        c.name(),
        keys.join(", ")
    )
}

/// The statements earlier versions created a collection with: its table without indexed columns,
/// and each of `specs` an index on `bson_get` expressions over the raw BSON, under the name the
/// store gives it. For the tests of the migration and the benchmarks that compare against that
/// layout; the store never writes it.
#[cfg(feature = "internals")]
pub fn expression_schema_sql(c: Collection, specs: &[IndexSpec]) -> String {
    let mut sql = table_sql(c, &[]);
    for spec in specs {
        // With no column paths, every key is a `bson_get` expression.
        let index = index_sql(c, &index_name(c, spec), &spec.keys, spec.unique, &[]);
        sql.push('\n');
        sql.push_str(&index);
    }
    sql
}

/// The `(path, direction)` keys of an index's SQL: on columns (`"$path"`), or on the `bson_get`
/// expressions of earlier versions.
fn parse_index_keys(sql: &str) -> Vec<(String, i32)> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r#"(?:bson_get\(doc,'((?:[^']|'')*)'\)|"\$((?:[^"]|"")*)")( DESC)?"#)
            .expect("static regex")
    });
    re.captures_iter(sql)
        .map(|c| {
            let path = match (c.get(1), c.get(2)) {
                (Some(p), _) => p.as_str().replace("''", "'"),
                (_, Some(p)) => p.as_str().replace("\"\"", "\""),
                _ => unreachable!("one alternative matched"),
            };
            (path, if c.get(3).is_some() { -1 } else { 1 })
        })
        .collect()
}

/// The SQL expression for a dotted path: its column when it has one (what the indexes are built
/// on), `bson_get` otherwise.
fn expr(cols: &[String], path: &str) -> String {
    expr_from(Some(cols), path)
}

/// [`expr`] with a choice of source: `Some(columns)` reads a path from its column when it has
/// one (what the searches do, so the indexes serve them); `None` reads every path, `_id`
/// included, from the stored bytes (what the commands that change or remove records do, since
/// no seal covers the columns).
fn expr_from(cols: Option<&[String]>, path: &str) -> String {
    let Some(cols) = cols else {
        return format!("bson_get(doc,'{}')", path.replace('\'', "''"));
    };
    if path == "_id" {
        "id".to_owned()
    } else if cols.iter().any(|c| c == path) {
        column(path)
    } else {
        format!("bson_get(doc,'{}')", path.replace('\'', "''"))
    }
}

/// `SELECT doc ... WHERE ... ORDER BY ...` for `opts` (without the window), and its parameters.
fn select_sql(
    c: Collection,
    cols: &[String],
    opts: &FindOptions,
) -> StoreResult<(String, Vec<Value>)> {
    let mut params = Vec::new();
    let mut sql = format!(
        "SELECT doc FROM {} WHERE {}",
        c.name(),
        where_sql(&opts.filter, cols, &mut params)?
    );
    if !opts.sort.is_empty() {
        let keys: Vec<String> = opts
            .sort
            .iter()
            .map(|(p, o)| {
                format!(
                    "{} {}",
                    expr(cols, p),
                    if *o == Order::Asc { "ASC" } else { "DESC" }
                )
            })
            .collect();
        sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
    }
    Ok((sql, params))
}

/// Translates a filter into a `WHERE` clause over the columns where there are some, pushing its
/// parameters.
fn where_sql(f: &Filter, cols: &[String], params: &mut Vec<Value>) -> StoreResult<String> {
    where_from(f, Some(cols), params)
}

/// `WHERE` over the stored bytes found through the columns: both must agree, so the indexes
/// narrow the rows and no row is taken on the word of a column alone.
fn where_stored(f: &Filter, cols: &[String], params: &mut Vec<Value>) -> StoreResult<String> {
    let indexed = where_from(f, Some(cols), params)?;
    let stored = where_from(f, None, params)?;
    Ok(format!("({indexed}) AND ({stored})"))
}

/// [`where_sql`] with a choice of source (see [`expr_from`]).
fn where_from(f: &Filter, cols: Option<&[String]>, params: &mut Vec<Value>) -> StoreResult<String> {
    let expr = |p: &str| expr_from(cols, p);
    Ok(match f {
        Filter::Eq(p, Bson::Null) => format!("{} IS NULL", expr(p)),
        Filter::Eq(p, v) => {
            params.push(sql_value(v)?);
            format!("{} = ?", expr(p))
        }
        Filter::In(_, vs) if vs.is_empty() => "0".into(),
        Filter::In(p, vs) => {
            for v in vs {
                params.push(sql_value(v)?);
            }
            format!("{} IN ({})", expr(p), vec!["?"; vs.len()].join(", "))
        }
        Filter::Cmp(p, op, v) => {
            params.push(sql_value(v)?);
            format!("{} {} ?", expr(p), op.sql())
        }
        Filter::Regex {
            path,
            pattern,
            case_insensitive,
        } => {
            // An anchored pattern with a literal start (`^/polls/\w*$`) also gets the range of
            // that prefix, so the index narrows the rows the regex has to test (as MongoDB does).
            // Parameters are pushed in the order their placeholders appear.
            let range = match literal_prefix(pattern).filter(|_| !*case_insensitive) {
                Some(prefix) => Some(where_from(
                    &Filter::Prefix(path.clone(), prefix),
                    cols,
                    params,
                )?),
                None => None,
            };
            params.push(Value::Text(if *case_insensitive {
                format!("(?i){pattern}")
            } else {
                pattern.clone()
            }));
            let test = format!("regexp(?, {})", expr(path));
            match range {
                Some(range) => format!("({range} AND {test})"),
                None => test,
            }
        }
        Filter::Prefix(p, prefix) if prefix.is_empty() => format!("typeof({}) = 'text'", expr(p)),
        Filter::Prefix(p, prefix) => {
            // A range on the indexed expression: every string that starts with `prefix` sorts at or
            // after it and before `prefix` followed by the highest code point.
            params.push(Value::Text(prefix.clone()));
            params.push(Value::Text(format!("{prefix}\u{10FFFF}")));
            let e = expr(p);
            format!("({e} >= ? AND {e} < ?)")
        }
        Filter::And(fs) if fs.is_empty() => "1".into(),
        Filter::Or(fs) if fs.is_empty() => "0".into(),
        Filter::And(fs) | Filter::Or(fs) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts = fs
                .iter()
                .map(|f| where_from(f, cols, params))
                .collect::<StoreResult<Vec<_>>>()?;
            format!("({})", parts.join(joiner))
        }
    })
}

/// A filter value as the SQL value `bson_get` yields for the same BSON value.
fn sql_value(v: &Bson) -> StoreResult<Value> {
    Ok(match v {
        Bson::Null => Value::Null,
        Bson::Int32(i) => Value::Integer((*i).into()),
        Bson::Int64(i) => Value::Integer(*i),
        Bson::Double(d) => Value::Real(*d),
        Bson::Boolean(b) => Value::Integer((*b).into()),
        Bson::String(s) => Value::Text(s.clone()),
        Bson::DateTime(t) => Value::Integer(t.timestamp_millis()),
        Bson::ObjectId(o) => Value::Text(o.to_hex()),
        Bson::Decimal128(d) => Value::Text(d.to_string()),
        other => {
            return Err(StoreError::Filter(format!(
                "cannot compare against {other}"
            )))
        }
    })
}

/// `bson_get(doc, path)`: the value at a dotted path of a raw BSON blob, as an SQL value: the
/// same value [`cell`] stores in the path's column.
fn bson_get(ctx: &Context<'_>) -> rusqlite::Result<Value> {
    let blob = ctx
        .get_raw(0)
        .as_blob()
        .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?;
    let path = ctx
        .get_raw(1)
        .as_str()
        .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?;
    // A row whose bytes are not a document (damage, or a row planted by hand) has no value at any
    // path: it matches no search instead of failing every query that reads it. `audit verify`
    // reports it.
    let Ok(doc) = RawDocument::from_bytes(blob) else {
        return Ok(Value::Null);
    };
    let Ok(value) = cell(doc, path) else {
        return Ok(Value::Null);
    };
    Ok(match value {
        ToSqlOutput::Borrowed(v) => {
            Value::try_from(v).map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?
        }
        ToSqlOutput::Owned(v) => v,
        _ => unreachable!("`cell` borrows or owns"),
    })
}

/// The value at a dotted path of a raw document, as SQL stores and compares it: dates as
/// milliseconds, ObjectIds as hex, booleans as 0/1, sub-documents and arrays as their bytes, a
/// missing path as NULL. Strings and bytes are borrowed from the document.
fn cell<'a>(doc: &'a RawDocument, path: &str) -> rusqlite::Result<ToSqlOutput<'a>> {
    let mut cur = RawBsonRef::Document(doc);
    for seg in path.split('.') {
        let next = match cur {
            RawBsonRef::Document(d) => d.get(seg),
            RawBsonRef::Array(a) => match seg.parse::<usize>() {
                Ok(i) => a.get(i),
                Err(_) => return Ok(ToSqlOutput::Owned(Value::Null)),
            },
            _ => return Ok(ToSqlOutput::Owned(Value::Null)),
        };
        match next {
            Ok(Some(v)) => cur = v,
            Ok(None) => return Ok(ToSqlOutput::Owned(Value::Null)),
            Err(e) => return Err(rusqlite::Error::UserFunctionError(e.into())),
        }
    }
    Ok(sql_of(cur))
}

/// [`cell`] for several paths at once, in one walk of the document: each document on the way is
/// read once, element by element, instead of once per path (a row's dozen indexed values are
/// read this way when it is written, and again when it is verified). The first element of a
/// name wins, as with [`cell`].
fn cells<'a>(doc: &'a RawDocument, paths: &[String]) -> rusqlite::Result<Vec<ToSqlOutput<'a>>> {
    if paths.len() > 64 {
        return paths.iter().map(|p| cell(doc, p)).collect();
    }
    let split: Vec<Vec<&str>> = paths.iter().map(|p| p.split('.').collect()).collect();
    let mut found: Vec<Option<RawBsonRef<'a>>> = vec![None; paths.len()];
    let all = if paths.len() == 64 {
        u64::MAX
    } else {
        (1u64 << paths.len()) - 1
    };
    walk(RawBsonRef::Document(doc), &split, all, 0, &mut found)?;
    Ok(found
        .into_iter()
        .map(|v| v.map_or(ToSqlOutput::Owned(Value::Null), sql_of))
        .collect())
}

/// Finds, under `cur` at depth `depth`, the paths whose bit is set in `wanted`.
fn walk<'a>(
    cur: RawBsonRef<'a>,
    split: &[Vec<&str>],
    mut wanted: u64,
    depth: usize,
    found: &mut [Option<RawBsonRef<'a>>],
) -> rusqlite::Result<()> {
    let err = |e: bson::raw::Error| rusqlite::Error::UserFunctionError(e.into());
    match cur {
        RawBsonRef::Document(d) => {
            for element in d {
                if wanted == 0 {
                    break;
                }
                let (key, value) = element.map_err(err)?;
                let mut here = 0u64;
                for (i, segs) in split.iter().enumerate() {
                    if wanted & (1 << i) != 0 && segs[depth] == key {
                        here |= 1 << i;
                    }
                }
                if here == 0 {
                    continue;
                }
                // Later elements of the same name are not looked at: the first one answers.
                wanted &= !here;
                let mut deeper = 0u64;
                for (i, segs) in split.iter().enumerate() {
                    if here & (1 << i) != 0 {
                        if segs.len() == depth + 1 {
                            found[i] = Some(value);
                        } else {
                            deeper |= 1 << i;
                        }
                    }
                }
                if deeper != 0 {
                    walk(value, split, deeper, depth + 1, found)?;
                }
            }
        }
        RawBsonRef::Array(a) => {
            for (i, segs) in split.iter().enumerate() {
                if wanted & (1 << i) == 0 {
                    continue;
                }
                let Ok(at) = segs[depth].parse::<usize>() else {
                    continue;
                };
                if let Some(value) = a.get(at).map_err(err)? {
                    if segs.len() == depth + 1 {
                        found[i] = Some(value);
                    } else {
                        walk(value, split, 1 << i, depth + 1, found)?;
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A BSON value as SQL stores and compares it (see [`cell`]).
fn sql_of(v: RawBsonRef<'_>) -> ToSqlOutput<'_> {
    let owned = ToSqlOutput::Owned;
    let borrowed = ToSqlOutput::Borrowed;
    match v {
        RawBsonRef::Null | RawBsonRef::Undefined => owned(Value::Null),
        RawBsonRef::Int32(i) => owned(Value::Integer(i.into())),
        RawBsonRef::Int64(i) => owned(Value::Integer(i)),
        RawBsonRef::Double(d) => owned(Value::Real(d)),
        RawBsonRef::Boolean(b) => owned(Value::Integer(b.into())),
        RawBsonRef::String(s) => borrowed(ValueRef::Text(s.as_bytes())),
        RawBsonRef::DateTime(t) => owned(Value::Integer(t.timestamp_millis())),
        RawBsonRef::ObjectId(o) => owned(Value::Text(o.to_hex())),
        RawBsonRef::Decimal128(d) => owned(Value::Text(d.to_string())),
        RawBsonRef::Symbol(s) => borrowed(ValueRef::Text(s.as_bytes())),
        RawBsonRef::Timestamp(t) => {
            owned(Value::Integer(((t.time as i64) << 32) | t.increment as i64))
        }
        RawBsonRef::Document(d) => borrowed(ValueRef::Blob(d.as_bytes())),
        RawBsonRef::Array(a) => borrowed(ValueRef::Blob(a.as_bytes())),
        RawBsonRef::Binary(b) => borrowed(ValueRef::Blob(b.bytes)),
        other => owned(Value::Text(format!("{other:?}"))),
    }
}

/// `regexp(pattern, value)`: `value REGEXP pattern` with the `regex` crate; the compiled pattern is
/// cached per statement.
fn regexp(ctx: &Context<'_>) -> rusqlite::Result<bool> {
    // Compiled once per statement and kept as the function's auxiliary data.
    let re: Arc<regex::Regex> = ctx.get_or_create_aux(
        0,
        |vr| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(regex::Regex::new(vr.as_str()?)?)
        },
    )?;
    Ok(match ctx.get_raw(1) {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
            .map(|s| re.is_match(s))
            .unwrap_or(false),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::{cell, cells};
    use bson::rawdoc;

    #[test]
    fn one_walk_finds_what_a_walk_per_path_finds() {
        let doc = rawdoc! {
            "_id": bson::oid::ObjectId::new(),
            "request": { "path": "/a", "METADATA": { "REQUEST_METHOD": "GET" }, "path": "/second" },
            "user": { "id": 7i64 },
            "list": [ { "x": 1 }, 2 ],
            "time": { "request": bson::DateTime::from_millis(5) },
            "n": 1.5,
        };
        let paths: Vec<String> = [
            "request.path",
            "request.METADATA.REQUEST_METHOD",
            "user.id",
            "user.missing",
            "list.0.x",
            "list.1",
            "list.x",
            "time.request",
            "n.deeper",
            "n",
            "absent",
        ]
        .map(String::from)
        .to_vec();
        let together = cells(&doc, &paths).unwrap();
        for (p, v) in paths.iter().zip(&together) {
            assert_eq!(
                format!("{v:?}"),
                format!("{:?}", cell(&doc, p).unwrap()),
                "{p}"
            );
        }
    }
}
