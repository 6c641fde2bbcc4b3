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
use rusqlite::{params_from_iter, Connection};
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
        let sql: Arc<str> = format!(
            "SELECT t.rowid, t.id, t.doc, {salt}{copies} FROM {} t {join} \
             WHERE t.rowid > ?1 ORDER BY t.rowid LIMIT ?2",
            c.name()
        )
        .into();
        let batch = batch.clamp(1, i64::MAX as u64);
        let fetch = |after: i64| {
            let (conn, sql, cols) = (self.conn.clone(), sql.clone(), cols.clone());
            tokio::task::spawn_blocking(move || {
                read_digests(&lock(&conn), &sql, c, &cols, after, batch)
            })
        };
        let mut total = 0;
        let mut next = Some(fetch(i64::MIN));
        while let Some(pending) = next.take() {
            let rows = pending
                .await
                .map_err(|e| StoreError::Worker(e.to_string()))??;
            let n = rows.len() as u64;
            if let Some(last) = rows.last().and_then(|r| r.row).filter(|_| n == batch) {
                next = Some(fetch(last));
            }
            total += n;
            if n > 0 {
                f(rows)?;
            }
        }
        Ok(total)
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
    after: i64,
    batch: u64,
) -> StoreResult<Vec<RecordDigest>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params![after, batch as i64])?;
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
