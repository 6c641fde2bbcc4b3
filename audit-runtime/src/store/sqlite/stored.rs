//! What the SQLite store does by the stored bytes rather than by the columns beside them.
//!
//! Each row holds a document's exact bytes, which the seals cover, and copies of some of its
//! values (the `id` column and one `"$path"` column per indexed path) that nothing covers: they
//! exist so the indexes can serve searches. Someone who can write the file can change a copy and
//! leave the bytes alone. So the operations that change or remove records select by the bytes
//! (the columns only narrow the rows), and verification reads every row by its rowid and checks
//! each copy against the bytes.

use super::{cells, column, lock, where_from, where_stored, SqliteStore};
use crate::commitment::salt_of;
use crate::document::Collection;
use crate::store::{Filter, RecordDigest, StoreError, StoreResult};
use bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use std::sync::Arc;

impl SqliteStore {
    /// How many rows match `filter` by their stored bytes (found through the columns).
    pub(crate) async fn count_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut params = Vec::new();
        let clause = where_stored(filter, &self.columns_of(c), &mut params)?;
        self.count_where(c, clause, params).await
    }

    /// Deletes the rows that match `filter` by their stored bytes (found through the columns),
    /// and the salts of their commitments, in one transaction; returns how many rows.
    pub(crate) async fn prune_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let cols = self.columns_of(c);
        let (mut salt_params, mut params) = (Vec::new(), Vec::new());
        let salts = format!(
            "DELETE FROM {} WHERE id IN (SELECT bson_get(doc,'_id') FROM {} WHERE {})",
            Collection::Salt.name(),
            c.name(),
            where_stored(filter, &cols, &mut salt_params)?
        );
        let rows = format!(
            "DELETE FROM {} WHERE {}",
            c.name(),
            where_stored(filter, &cols, &mut params)?
        );
        self.run(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(&salts, params_from_iter(salt_params.iter()))?;
            let n = tx.execute(&rows, params_from_iter(params.iter()))?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    /// Visits, in batches of `batch` in storage order, the documents whose stored bytes match
    /// `filter` (every path read from the bytes; a row whose bytes are not a document matches
    /// nothing).
    pub(crate) async fn for_each_stored<F>(
        &self,
        c: Collection,
        filter: &Filter,
        batch: u64,
        mut f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<RawDocumentBuf>) -> StoreResult<()>,
    {
        let mut params = Vec::new();
        let sql = format!(
            "SELECT rowid, doc FROM {} WHERE rowid > ? AND {} ORDER BY rowid LIMIT {}",
            c.name(),
            where_from(filter, None, &mut params)?,
            batch.clamp(1, i64::MAX as u64)
        );
        let mut last = i64::MIN;
        let mut total = 0;
        loop {
            let (sql, mut all) = (sql.clone(), vec![Value::Integer(last)]);
            all.extend(params.iter().cloned());
            let rows: Vec<(i64, Vec<u8>)> = self
                .run(move |conn| {
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt
                        .query_map(params_from_iter(all.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await?;
            let Some((next, _)) = rows.last() else {
                return Ok(total);
            };
            last = *next;
            let n = rows.len() as u64;
            let docs: Vec<RawDocumentBuf> = rows
                .into_iter()
                .filter_map(|(_, b)| RawDocumentBuf::from_bytes(b).ok())
                .collect();
            total += docs.len() as u64;
            f(docs)?;
            if n < batch {
                return Ok(total);
            }
        }
    }

    /// Visits every row of `c` in rowid order, in batches of `batch`, as verification needs it:
    /// whether its bytes are a document, its commitments (with the salt stored for the row), and
    /// which of the row's copies disagree with the bytes. The digests are made on the blocking
    /// pool next to the bytes, and the next batch is read while `f` looks at this one.
    pub(crate) async fn scan_records<F>(
        &self,
        c: Collection,
        batch: u64,
        keep_bytes: bool,
        mut f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<RecordDigest>) -> StoreResult<()>,
    {
        let cols = self.columns_of(c);
        let has_salts = self
            .run(|conn| Ok(table_exists(conn, Collection::Salt.name())?))
            .await?;
        let copies: String = cols.iter().map(|p| format!(", t.{}", column(p))).collect();
        let (salt, join) = if has_salts {
            (
                "s.doc",
                format!("LEFT JOIN {} s ON s.id = t.id", Collection::Salt.name()),
            )
        } else {
            ("NULL", String::new())
        };
        // The first page has no lower bound (a row whose rowid is the smallest there is is read
        // too); the next ones start after the last rowid seen. Two statements, so that each
        // walks the table by rowid.
        let select = format!(
            "SELECT t.rowid, t.id, t.doc, {salt}{copies} FROM {} t {join}",
            c.name()
        );
        let first: Arc<str> = format!("{select} ORDER BY t.rowid LIMIT ?1").into();
        let after: Arc<str> =
            format!("{select} WHERE t.rowid > ?2 ORDER BY t.rowid LIMIT ?1").into();
        let batch = batch.clamp(1, i64::MAX as u64);
        let fetch = |from: Option<i64>| {
            let (conn, cols) = (self.conn.clone(), cols.clone());
            let sql = if from.is_some() {
                after.clone()
            } else {
                first.clone()
            };
            tokio::task::spawn_blocking(move || {
                read_digests(&lock(&conn), &sql, c, &cols, from, batch, keep_bytes)
            })
        };
        let mut total = 0;
        let mut next = Some(fetch(None));
        while let Some(pending) = next.take() {
            let rows = pending
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))??;
            let n = rows.len() as u64;
            if let Some(last) = rows.last().and_then(|r| r.row).filter(|_| n == batch) {
                next = Some(fetch(Some(last)));
            }
            total += n;
            if n > 0 {
                f(rows)?;
            }
        }
        Ok(total)
    }

    /// What is wrong with the file's structure (see [`Store::structure_findings`]): a trigger
    /// or a view; a table whose columns are not `rowid INTEGER PRIMARY KEY`, `id TEXT NOT NULL`
    /// (unique), `doc BLOB NOT NULL` and plain `"$path"` copies; an index that is not a plain
    /// index of such columns whose name says what it indexes, or is partial; and, with `deep`,
    /// what `PRAGMA integrity_check` finds (an index whose entries disagree with its table, among
    /// others: it reads every index whole, several times what verification costs otherwise).
    ///
    /// [`Store::structure_findings`]: crate::store::Store::structure_findings
    pub(crate) async fn structure_findings(&self, deep: bool) -> StoreResult<Vec<String>> {
        self.run(move |conn| Ok(structure_findings(conn, deep)?))
            .await
    }

    /// Before an erasure: freed space is overwritten with zeros from now on, so the replaced
    /// values do not stay behind in free pages of the file.
    pub(crate) async fn begin_erasure(&self) -> StoreResult<()> {
        self.run(|conn| Ok(conn.pragma_update(None, "secure_delete", "ON")?))
            .await
    }

    /// After an erasure: the write-ahead log, which still holds the pages as they were, is copied
    /// into the file and truncated. `false` when another connection's reading kept part of it.
    pub(crate) async fn finish_erasure(&self) -> StoreResult<bool> {
        self.run(|conn| {
            let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            conn.pragma_update(None, "secure_delete", "OFF")?;
            Ok(busy == 0)
        })
        .await
    }
}

/// One batch of [`SqliteStore::scan_records`]: the rows after rowid `after`.
fn read_digests(
    conn: &Connection,
    sql: &str,
    c: Collection,
    cols: &[String],
    after: Option<i64>,
    batch: u64,
    keep_bytes: bool,
) -> StoreResult<Vec<RecordDigest>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = match after {
        Some(after) => stmt.query(rusqlite::params![batch as i64, after])?,
        None => stmt.query(rusqlite::params![batch as i64])?,
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let bytes = match r.get_ref(2)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => b,
            _ => &[],
        };
        let salt = match r.get_ref(3)? {
            ValueRef::Blob(b) => RawDocument::from_bytes(b).ok().and_then(salt_of),
            _ => None,
        };
        let mut digest = RecordDigest::of(c, bytes, salt);
        digest.row = Some(r.get(0)?);
        if keep_bytes {
            digest.bytes = Some(bytes.to_vec());
        }
        if digest.malformed.is_none() {
            let copies = (0..cols.len())
                .map(|i| r.get_ref(4 + i))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            check_copies(&mut digest, bytes, r.get_ref(1)?, cols, &copies);
        }
        out.push(digest);
    }
    Ok(out)
}

fn structure_findings(conn: &Connection, deep: bool) -> rusqlite::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY name",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })? {
        let (kind, name, table) = row?;
        out.push(format!(
            "a {kind} `{name}` on `{table}`: the store makes none"
        ));
    }
    static INDEX: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let index_sql = INDEX.get_or_init(|| {
        regex::Regex::new(
            r#"^CREATE (?:UNIQUE )?INDEX (?:IF NOT EXISTS )?"((?:[^"]|"")*)" ON ([a-z_]+) \(((?:"\$(?:[^"]|"")*"(?: DESC)?|id(?: DESC)?)(?:, (?:"\$(?:[^"]|"")*"(?: DESC)?|id(?: DESC)?))*)\)$"#,
        )
        .expect("static regex")
    });
    for c in super::TABLES {
        let t = c.name();
        if !table_exists(conn, t)? {
            continue;
        }
        let mut cols = conn.prepare(&format!("PRAGMA table_xinfo({t})"))?;
        let cols: Vec<(String, String, bool, Option<String>, i64, i64)> = cols
            .query_map([], |r| {
                Ok((
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let own = |i: usize,
                   (name, ty, notnull, default, pk, hidden): &(
            String,
            String,
            bool,
            Option<String>,
            i64,
            i64,
        )| match i {
            0 => name == "rowid" && ty == "INTEGER" && *pk == 1 && *hidden == 0,
            1 => {
                name == "id"
                    && ty == "TEXT"
                    && *notnull
                    && *pk == 0
                    && default.is_none()
                    && *hidden == 0
            }
            2 => {
                name == "doc"
                    && ty == "BLOB"
                    && *notnull
                    && *pk == 0
                    && default.is_none()
                    && *hidden == 0
            }
            _ => {
                name.starts_with('$')
                    && ty.is_empty()
                    && !*notnull
                    && *pk == 0
                    && default.is_none()
                    && *hidden == 0
            }
        };
        for (i, col) in cols.iter().enumerate() {
            if !own(i, col) {
                out.push(format!(
                    "table `{t}`: column `{}` is not one the store makes",
                    col.0
                ));
            }
        }
        if cols.len() < 3 {
            out.push(format!("table `{t}` lacks the store's columns"));
        }
        let mut list = conn.prepare(&format!("PRAGMA index_list({t})"))?;
        let indexes: Vec<(String, bool, String, bool)> = list
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut id_unique = false;
        for (name, unique, origin, partial) in &indexes {
            if partial.to_owned() {
                out.push(format!(
                    "index `{name}` on `{t}` is partial: the store makes none"
                ));
            }
            if origin == "u" && *unique {
                let cols: Vec<String> = conn
                    .prepare(&format!(
                        "PRAGMA index_info(\"{}\")",
                        name.replace('"', "\"\"")
                    ))?
                    .query_map([], |r| r.get(2))?
                    .collect::<rusqlite::Result<_>>()?;
                id_unique |= cols == ["id"];
                continue;
            }
            let sql: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            // The name says what the index is on (`audit_access.user.id_1`): SQL rewritten to
            // index another column no longer fits its name.
            let fits = sql
                .as_deref()
                .and_then(|s| index_sql.captures(s))
                .is_some_and(|m| {
                    let spec = crate::store::IndexSpec {
                        keys: super::parse_index_keys(&m[0]),
                        unique: m[0].starts_with("CREATE UNIQUE"),
                    };
                    m[1].replace("\"\"", "\"") == *name
                        && &m[2] == t
                        && *name == format!("{t}.{}", spec.name())
                });
            if !fits {
                out.push(format!(
                    "index `{name}` on `{t}` is not one the store makes: {}",
                    sql.unwrap_or_default()
                ));
            }
        }
        if !id_unique {
            out.push(format!("table `{t}`: its `id` column is not unique"));
        }
    }
    if deep {
        let mut check = conn.prepare("PRAGMA integrity_check(20)")?;
        let problems: Vec<String> = check
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if problems != ["ok"] {
            out.extend(problems.into_iter().map(|p| format!("integrity: {p}")));
        }
    }
    Ok(out)
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// Checks the `id` column and each `"$path"` copy of a row against its bytes.
fn check_copies(
    rec: &mut RecordDigest,
    bytes: &[u8],
    id: ValueRef<'_>,
    cols: &[String],
    copies: &[ValueRef<'_>],
) {
    let doc = match RawDocument::from_bytes(bytes) {
        Ok(doc) => doc,
        Err(e) => {
            rec.malformed = Some(e.to_string());
            return;
        }
    };
    match doc.get("_id") {
        Ok(Some(RawBsonRef::ObjectId(o))) => {
            let hex = o.to_hex();
            if id != ValueRef::Text(hex.as_bytes()) {
                rec.mismatches.push(("id".into(), show(id), hex));
            }
        }
        Ok(_) => {
            rec.malformed = Some("the document has no ObjectId `_id`".into());
            return;
        }
        Err(e) => {
            rec.malformed = Some(e.to_string());
            return;
        }
    }
    let values = match cells(doc, cols) {
        Ok(v) => v,
        Err(e) => {
            rec.malformed = Some(e.to_string());
            return;
        }
    };
    for ((path, copy), expected) in cols.iter().zip(copies).zip(&values) {
        let expected = match expected {
            ToSqlOutput::Borrowed(v) => *v,
            ToSqlOutput::Owned(v) => ValueRef::from(v),
            _ => continue,
        };
        if !same(*copy, expected) {
            rec.mismatches
                .push((path.clone(), show(*copy), show(expected)));
        }
    }
}

/// Equal values of the same SQL type (a REAL and an INTEGER are different copies).
fn same(a: ValueRef<'_>, b: ValueRef<'_>) -> bool {
    match (a, b) {
        (ValueRef::Null, ValueRef::Null) => true,
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x == y,
        (ValueRef::Real(x), ValueRef::Real(y)) => x.to_bits() == y.to_bits(),
        (ValueRef::Text(x), ValueRef::Text(y)) | (ValueRef::Blob(x), ValueRef::Blob(y)) => x == y,
        _ => false,
    }
}

/// A short, printable form of an SQL value for a finding.
fn show(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "null".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            let short: String = s.chars().take(60).collect();
            if short.len() < s.len() {
                format!("{short:?}…")
            } else {
                format!("{short:?}")
            }
        }
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_compared_with_their_type() {
        assert!(same(ValueRef::Integer(1), ValueRef::Integer(1)));
        assert!(!same(ValueRef::Integer(1), ValueRef::Real(1.0)));
        assert!(!same(ValueRef::Text(b"23"), ValueRef::Integer(23)));
        assert!(!same(ValueRef::Null, ValueRef::Text(b"")));
        assert_eq!(show(ValueRef::Text(b"/a")), "\"/a\"");
    }
}
