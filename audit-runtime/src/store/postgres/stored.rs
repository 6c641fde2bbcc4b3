//! What the PostgreSQL store does by the stored bytes rather than by the copies beside them.
//!
//! The server cannot read BSON, so the bytes are read here: the columns find the candidate rows
//! (their indexes serve that), and each candidate is taken only when its bytes match
//! ([`Filter::matches`]). A month partition whose every row is in a removed range goes whole
//! (`DROP TABLE`: no dead rows to vacuum); the rest row by row. Verification reads every row and
//! checks each copy (`id`, the typed columns, `doc`) against the bytes.

use super::sql::{self, columns, partition_column, Cell, Kind, Params};
use super::{bind_all, lock, safe, PgStore};
use crate::commitment::salt_of;
use crate::document::Collection;
use crate::store::{CmpOp, Filter, RecordDigest, StoreResult};
use bson::raw::{RawBsonRef, RawDocument, RawDocumentBuf};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

/// Rows read per round of a scan.
const ROUND: i64 = 1000;

/// A row's key: `_id` hex, and its date in a partitioned table.
type Key = (String, Option<DateTime<Utc>>);

impl PgStore {
    /// The rows of `c` after `after` (in key order) that `filter` may match by their columns, with
    /// their bytes: `(key, bytes)`.
    async fn candidates(
        &self,
        c: Collection,
        filter: Option<&Filter>,
        after: Option<&Key>,
        limit: i64,
    ) -> StoreResult<Vec<(Key, Vec<u8>)>> {
        let part = partition_column(c).map(|p| sql::quoted(p.name));
        let mut params = Params::default();
        let mut clauses = Vec::new();
        if let Some(f) = filter {
            clauses.push(sql::where_sql(c, f, &mut params));
        }
        let keys = match &part {
            Some(p) => format!("id, {p}"),
            None => "id".to_owned(),
        };
        let n = params.0.len();
        let mut extra = Vec::new();
        if let Some((id, t)) = after {
            match (&part, t) {
                (Some(p), Some(t)) => {
                    clauses.push(format!("(id, {p}) > (${}, ${})", n + 1, n + 2));
                    extra.push(sql::Param::Text(id.clone()));
                    extra.push(sql::Param::Time(*t));
                }
                _ => {
                    clauses.push(format!("id > ${}", n + 1));
                    extra.push(sql::Param::Text(id.clone()));
                }
            }
        }
        params.0.extend(extra);
        let where_ = if clauses.is_empty() {
            "TRUE".to_owned()
        } else {
            clauses.join(" AND ")
        };
        let stmt = format!(
            "SELECT {keys}, bson FROM {} WHERE {where_} ORDER BY {keys} LIMIT {limit}",
            c.name()
        );
        let rows = sqlx::query_with(safe(&stmt), bind_all(params)?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let (t, bytes) = if part.is_some() {
                    (r.try_get::<Option<DateTime<Utc>>, _>(1)?, r.try_get(2)?)
                } else {
                    (None, r.try_get(1)?)
                };
                Ok(((id, t), bytes))
            })
            .collect()
    }

    /// Visits the candidates of `filter` whose bytes match it, a round at a time.
    async fn each_match(
        &self,
        c: Collection,
        by_columns: Option<&Filter>,
        filter: &Filter,
        mut f: impl FnMut(Vec<(Key, RawDocumentBuf)>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut after: Option<Key> = None;
        loop {
            let rows = self
                .candidates(c, by_columns, after.as_ref(), ROUND)
                .await?;
            let done = (rows.len() as i64) < ROUND;
            after = rows.last().map(|(k, _)| k.clone());
            let matching: Vec<(Key, RawDocumentBuf)> = rows
                .into_iter()
                .filter_map(|(k, b)| {
                    let doc = RawDocumentBuf::from_bytes(b).ok()?;
                    filter.matches(&doc).then_some((k, doc))
                })
                .collect();
            if !matching.is_empty() {
                f(matching)?;
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Visits the documents whose stored bytes match `filter`, reading every row.
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
        let mut total = 0;
        let mut pending = Vec::new();
        self.each_match(c, None, filter, |rows| {
            for (_, d) in rows {
                pending.push(d);
                if pending.len() as u64 >= batch.max(1) {
                    total += pending.len() as u64;
                    f(std::mem::take(&mut pending))?;
                }
            }
            Ok(())
        })
        .await?;
        if !pending.is_empty() {
            total += pending.len() as u64;
            f(pending)?;
        }
        Ok(total)
    }

    /// How many rows match `filter` by their columns and their bytes.
    pub(crate) async fn count_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut n = 0;
        self.each_match(c, Some(filter), filter, |rows| {
            n += rows.len() as u64;
            Ok(())
        })
        .await?;
        Ok(n)
    }

    /// Removes the rows matching `filter` by their columns and their bytes, with their salts;
    /// whole month partitions when every row of one matches.
    pub(crate) async fn prune_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        let mut removed = 0;
        for (name, start, next) in self.partitions_within(c, filter).await? {
            removed += self
                .drop_partition_if_all(c, filter, &name, start, next)
                .await?;
        }
        let mut keys: Vec<Key> = Vec::new();
        self.each_match(c, Some(filter), filter, |rows| {
            keys.extend(rows.into_iter().map(|(k, _)| k));
            Ok(())
        })
        .await?;
        for chunk in keys.chunks(ROUND as usize) {
            removed += self.delete_keys(c, chunk).await?;
        }
        Ok(removed)
    }

    /// Deletes rows (and their salts) by key, in one transaction.
    async fn delete_keys(&self, c: Collection, keys: &[Key]) -> StoreResult<u64> {
        let ids: Vec<String> = keys.iter().map(|(id, _)| id.clone()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM audit_salt WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let n = match partition_column(c) {
            Some(p) => {
                let times: Vec<Option<DateTime<Utc>>> = keys.iter().map(|(_, t)| *t).collect();
                sqlx::query(safe(&format!(
                    "DELETE FROM {} t USING UNNEST($1::text[], $2::timestamptz[]) AS k(id, at)
                     WHERE t.id = k.id AND t.{} = k.at",
                    c.name(),
                    sql::quoted(p.name)
                )))
                .bind(&ids)
                .bind(&times)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            }
            None => sqlx::query(safe(&format!(
                "DELETE FROM {} WHERE id = ANY($1)",
                c.name()
            )))
            .bind(&ids)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        Ok(n)
    }

    /// The month partitions of `c` that lie wholly inside the date range of `filter`, when
    /// `filter` is a date range on the partition column: `(name, first day, first day after)`.
    async fn partitions_within(
        &self,
        c: Collection,
        filter: &Filter,
    ) -> StoreResult<Vec<(String, NaiveDate, NaiveDate)>> {
        let Some(part) = partition_column(c) else {
            return Ok(Vec::new());
        };
        let Some((from, to)) = date_range(filter, part.path) else {
            return Ok(Vec::new());
        };
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT child.relname::text FROM pg_inherits i
             JOIN pg_class parent ON parent.oid = i.inhparent
             JOIN pg_class child ON child.oid = i.inhrelid
             WHERE parent.relname = $1 AND parent.relnamespace = current_schema()::regnamespace",
        )
        .bind(c.name())
        .fetch_all(&self.pool)
        .await?;
        let prefix = format!("{}_", c.name());
        let mut out = Vec::new();
        for name in names {
            let Some(month) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(start) = NaiveDate::parse_from_str(&format!("{month}_01"), "%Y_%m_%d") else {
                continue;
            };
            let Some(next) = start.checked_add_months(chrono::Months::new(1)) else {
                continue;
            };
            let midnight = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
            let (lo, hi) = (midnight(start), midnight(next));
            // Every moment of the month (to its last millisecond, BSON's precision) is in range.
            let last = hi - chrono::Duration::milliseconds(1);
            let after_from =
                from.is_none_or(|(f, inclusive)| if inclusive { f <= lo } else { f < lo });
            let before_to = if to.1 { last <= to.0 } else { last < to.0 };
            if after_from && before_to {
                out.push((name, start, next));
            }
        }
        Ok(out)
    }

    /// Drops the partition `name` when every row in it matches `filter` by its bytes (its salts
    /// first); returns how many rows it held, 0 when it stays.
    async fn drop_partition_if_all(
        &self,
        c: Collection,
        filter: &Filter,
        name: &str,
        start: NaiveDate,
        _next: NaiveDate,
    ) -> StoreResult<u64> {
        let mut after: Option<String> = None;
        let mut ids = Vec::new();
        loop {
            let rows = sqlx::query(safe(&format!(
                "SELECT id, bson FROM {} WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT {ROUND}",
                sql::quoted(name)
            )))
            .bind(&after)
            .fetch_all(&self.pool)
            .await?;
            let done = (rows.len() as i64) < ROUND;
            for r in &rows {
                let id: String = r.try_get(0)?;
                let bytes: Vec<u8> = r.try_get(1)?;
                let all_match = RawDocument::from_bytes(&bytes).is_ok_and(|d| filter.matches(d));
                if !all_match {
                    // One row stays: the partition is removed row by row instead.
                    return Ok(0);
                }
                after = Some(id.clone());
                ids.push(id);
            }
            if done {
                break;
            }
        }
        let mut tx = self.pool.begin().await?;
        for chunk in ids.chunks(ROUND as usize) {
            sqlx::query("DELETE FROM audit_salt WHERE id = ANY($1)")
                .bind(chunk)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(safe(&format!("DROP TABLE {}", sql::quoted(name))))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        lock(&self.partitions).remove(&(c, start));
        Ok(ids.len() as u64)
    }

    /// Visits every row of `c` as verification reads it: its digest, and which of its copies
    /// disagree with its bytes.
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
        let cols = columns(c);
        let part = partition_column(c).map(|p| sql::quoted(p.name));
        let copies: String = cols
            .iter()
            .map(|col| match col.kind {
                Kind::Json => format!(", t.{}::text", sql::quoted(col.name)),
                _ => format!(", t.{}", sql::quoted(col.name)),
            })
            .collect();
        let keys = match &part {
            Some(p) => format!("t.id, t.{p}"),
            None => "t.id".to_owned(),
        };
        let limit = batch.clamp(1, i64::MAX as u64) as i64;
        let mut after: Option<Key> = None;
        let mut total = 0;
        loop {
            let cond = match (&after, &part) {
                (Some((_, Some(_))), Some(p)) => format!("(t.id, t.{p}) > ($1, $2)"),
                (Some(_), _) => "t.id > $1".to_owned(),
                (None, _) => "TRUE".to_owned(),
            };
            let stmt = format!(
                "SELECT {keys}, t.bson, t.doc::text, s.bson{copies} FROM {} t
                 LEFT JOIN audit_salt s ON s.id = t.id
                 WHERE {cond} ORDER BY {keys} LIMIT {limit}",
                c.name()
            );
            let mut q = sqlx::query(safe(&stmt));
            if let Some((id, t)) = &after {
                q = q.bind(id.clone());
                if let (Some(t), Some(_)) = (t, &part) {
                    q = q.bind(*t);
                }
            }
            let rows = q.fetch_all(&self.pool).await?;
            let n = rows.len() as u64;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let off = usize::from(part.is_some());
                let id: String = r.try_get(0)?;
                let t: Option<DateTime<Utc>> = if part.is_some() { r.try_get(1)? } else { None };
                let bytes: Vec<u8> = r.try_get(1 + off)?;
                let doc_text: Option<String> = r.try_get(2 + off)?;
                let salt_doc: Option<Vec<u8>> = r.try_get(3 + off)?;
                let salt = salt_doc
                    .as_deref()
                    .and_then(|s| RawDocument::from_bytes(s).ok())
                    .and_then(salt_of);
                let mut digest = RecordDigest::of(c, &bytes, salt);
                if keep_bytes {
                    digest.bytes = Some(bytes.clone());
                }
                if digest.malformed.is_none() {
                    if let Ok(doc) = RawDocument::from_bytes(&bytes) {
                        check_copies(&mut digest, doc, &id, doc_text.as_deref(), r, 4 + off, c);
                    }
                }
                out.push(digest);
                after = Some((id, t));
            }
            total += n;
            if !out.is_empty() {
                f(out)?;
            }
            if (n as i64) < limit {
                return Ok(total);
            }
        }
    }

    /// What is wrong with the database's structure for verification: a trigger, a rule or a
    /// row-level security policy on an audit table or one of its partitions, or an audit table
    /// that is not a table.
    pub(crate) async fn structure_findings(&self) -> StoreResult<Vec<String>> {
        let names: Vec<String> = [
            Collection::Access,
            Collection::Process,
            Collection::ModelAction,
            Collection::Seal,
            Collection::Salt,
        ]
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
        let rows = sqlx::query(
            "WITH ours AS (
                SELECT c.oid, c.relname::text AS name, c.relkind::text AS kind,
                       c.relrowsecurity AS rls
                FROM pg_class c
                WHERE c.relnamespace = current_schema()::regnamespace
                  AND (c.relname = ANY($1) OR c.oid IN (
                      SELECT i.inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                      WHERE p.relname = ANY($1) AND p.relnamespace = current_schema()::regnamespace)))
             SELECT name, 'is a ' || CASE kind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                 WHEN 'f' THEN 'foreign table' ELSE 'relation of kind ' || kind END || ', not a table'
                 FROM ours WHERE kind NOT IN ('r', 'p')
             UNION ALL SELECT o.name, 'has the trigger ' || t.tgname::text
                 FROM ours o JOIN pg_trigger t ON t.tgrelid = o.oid WHERE NOT t.tgisinternal
             UNION ALL SELECT o.name, 'has the rule ' || r.rulename::text
                 FROM ours o JOIN pg_rewrite r ON r.ev_class = o.oid WHERE r.rulename <> '_RETURN'
             UNION ALL SELECT name, 'has row-level security on' FROM ours WHERE rls",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let (name, what): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                Ok(format!("`{name}` {what}: the store makes none"))
            })
            .collect()
    }

    /// After an erasure: the old row versions are dead rows until the table is vacuumed.
    pub(crate) async fn finish_erasure(&self) -> StoreResult<bool> {
        for c in [
            Collection::Access,
            Collection::ModelAction,
            Collection::Salt,
        ] {
            sqlx::query(safe(&format!("VACUUM {}", c.name())))
                .execute(&self.pool)
                .await?;
        }
        Ok(true)
    }
}

/// `(moment, inclusive)` bounds of a date range filter on `path`: `Lt`/`Lte` alone, or with a
/// `Gte`/`Gt` (as retention and `drop` build them).
type Bound = (DateTime<Utc>, bool);

fn date_range(filter: &Filter, path: &str) -> Option<(Option<Bound>, Bound)> {
    let bound = |f: &Filter| -> Option<(CmpOp, DateTime<Utc>)> {
        match f {
            Filter::Cmp(p, op, bson::Bson::DateTime(t)) if p == path => {
                Some((*op, DateTime::from_timestamp_millis(t.timestamp_millis())?))
            }
            _ => None,
        }
    };
    let parts: Vec<&Filter> = match filter {
        Filter::And(fs) => fs.iter().collect(),
        f => vec![f],
    };
    let (mut from, mut to) = (None, None);
    for p in parts {
        match bound(p)? {
            (CmpOp::Gte, t) => from = Some((t, true)),
            (CmpOp::Gt, t) => from = Some((t, false)),
            (CmpOp::Lte, t) => to = Some((t, true)),
            (CmpOp::Lt, t) => to = Some((t, false)),
        }
    }
    Some((from, to?))
}

/// Checks the `id` column, each typed column and the `jsonb` copy of a row against its bytes.
fn check_copies(
    digest: &mut RecordDigest,
    doc: &RawDocument,
    id: &str,
    doc_text: Option<&str>,
    row: &sqlx::postgres::PgRow,
    first: usize,
    c: Collection,
) {
    let mut note = |column: &str, held: String, says: String| {
        digest.mismatches.push((column.to_owned(), held, says));
    };
    match doc.get("_id") {
        Ok(Some(RawBsonRef::ObjectId(o))) if o.to_hex() == id => {}
        Ok(Some(RawBsonRef::ObjectId(o))) => {
            note("id", format!("{id:?}"), format!("{:?}", o.to_hex()))
        }
        _ => note("id", format!("{id:?}"), "no ObjectId `_id`".into()),
    }
    for (i, col) in columns(c).iter().enumerate() {
        let expected = sql::cell(col, doc);
        let held: Cell = match col.kind {
            Kind::Text => row
                .try_get::<Option<String>, _>(first + i)
                .ok()
                .flatten()
                .map_or(Cell::Null, Cell::Text),
            Kind::Time => row
                .try_get::<Option<DateTime<Utc>>, _>(first + i)
                .ok()
                .flatten()
                .map_or(Cell::Null, Cell::Time),
            Kind::Int => row
                .try_get::<Option<i64>, _>(first + i)
                .ok()
                .flatten()
                .map_or(Cell::Null, Cell::Int),
            Kind::Json => row
                .try_get::<Option<String>, _>(first + i)
                .ok()
                .flatten()
                .and_then(|t| serde_json::from_str(&t).ok())
                .map_or(Cell::Null, Cell::Json),
        };
        if held != expected {
            note(col.path, show(&held), show(&expected));
        }
    }
    let held: Option<serde_json::Value> = doc_text.and_then(|t| serde_json::from_str(t).ok());
    let expected = sql::doc_json(doc).ok();
    if held != expected {
        note(
            "doc",
            held.map_or("null".into(), |v| short(&v.to_string())),
            expected.map_or("null".into(), |v| short(&v.to_string())),
        );
    }
}

fn show(c: &Cell) -> String {
    match c {
        Cell::Null => "null".into(),
        Cell::Text(s) => short(&format!("{s:?}")),
        Cell::Time(t) => t.to_rfc3339(),
        Cell::Int(i) => i.to_string(),
        Cell::Json(v) => short(&v.to_string()),
    }
}

fn short(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    if short.len() < s.len() {
        format!("{short}…")
    } else {
        short
    }
}
