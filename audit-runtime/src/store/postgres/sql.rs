//! The PostgreSQL store's tables and the filter language as SQL.
//!
//! Each collection is a table of the same name with the record's exact BSON bytes (`bson`, what
//! the seals cover), the record as `jsonb` (`doc`, relaxed Extended JSON: what `psql` and BI
//! tools read), its `_id` (`id`, the ObjectId's hex) and one typed column per path the original's
//! indexes cover (`time_request timestamptz`, `request_path text`, ...). The columns and `doc`
//! are copies that no seal covers: the writer makes them from the bytes, verification checks them
//! against the bytes, and the commands that change records decide by the bytes.
//!
//! A filter on a path with a column reads the column (so the indexes serve it); on any other
//! path it reads `doc #> '{path}'` with the comparison BSON semantics want (numbers with numbers,
//! strings with strings, dates as dates).

use crate::document::Collection;
use bson::raw::{RawBsonRef, RawDocument};
use bson::Bson;
use chrono::{DateTime, Utc};

/// The SQL type of a typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `text COLLATE "C"`: byte order, as SQLite and MongoDB compare strings.
    Text,
    /// `timestamptz`.
    Time,
    /// `bigint`.
    Int,
    /// `jsonb`: the value as relaxed Extended JSON, whatever its BSON type (a user id is an
    /// integer or a string, and the two never match each other).
    Json,
}

impl Kind {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Kind::Text => "text COLLATE \"C\"",
            Kind::Time => "timestamptz",
            Kind::Int => "bigint",
            Kind::Json => "jsonb",
        }
    }

    fn array(self) -> &'static str {
        match self {
            Kind::Text => "text[]",
            Kind::Time => "timestamptz[]",
            Kind::Int => "bigint[]",
            Kind::Json => "text[]",
        }
    }
}

/// One typed column: the dotted path it copies, its name, its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) path: &'static str,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

const fn col(path: &'static str, name: &'static str, kind: Kind) -> Column {
    Column { path, name, kind }
}

const ACCESS: &[Column] = &[
    col("interlink_id", "interlink_id", Kind::Text),
    col("user.id", "user_id", Kind::Json),
    col("request.path", "request_path", Kind::Text),
    col("time.request", "time_request", Kind::Time),
    col("exception.type", "exception_type", Kind::Text),
    col("view.app", "view_app", Kind::Text),
    col("view.name", "view_name", Kind::Text),
    col(
        "request.METADATA.REQUEST_METHOD",
        "request_method",
        Kind::Text,
    ),
];
const PROCESS: &[Column] = &[
    col("interlink_id", "interlink_id", Kind::Text),
    col("pid", "pid", Kind::Int),
    col("machine", "machine", Kind::Text),
    col("creation_time", "creation_time", Kind::Time),
];
const MODEL_ACTION: &[Column] = &[
    col("timestamp", "timestamp", Kind::Time),
    col("action", "action", Kind::Text),
    col("model.app", "model_app", Kind::Text),
    col("model.name", "model_name", Kind::Text),
    col("instance.id", "instance_id", Kind::Text),
];
const SEAL: &[Column] = &[
    col("stream", "stream", Kind::Text),
    col("seq", "seq", Kind::Int),
    col("kind", "kind", Kind::Text),
];

/// The typed columns of each table: one per path of the original's default indexes.
pub(crate) fn columns(c: Collection) -> &'static [Column] {
    match c {
        Collection::Access => ACCESS,
        Collection::Process => PROCESS,
        Collection::ModelAction => MODEL_ACTION,
        Collection::Seal => SEAL,
        Collection::Salt => &[],
    }
}

/// The column a table is partitioned by month on, for the two that grow with traffic.
pub(crate) fn partition_column(c: Collection) -> Option<&'static Column> {
    match c {
        Collection::Access | Collection::ModelAction => {
            columns(c).iter().find(|col| col.path == c.date_field())
        }
        _ => None,
    }
}

/// Text columns hold at most this many bytes of their value (a btree entry must fit in a third
/// of a page): a longer path is indexed by its first 2,000 bytes, and an equality filter on a
/// longer value also checks `doc`.
pub(crate) const TEXT_LIMIT: usize = 2000;

fn truncated(s: &str) -> &str {
    if s.len() <= TEXT_LIMIT {
        return s;
    }
    let mut end = TEXT_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A value of a typed column, as made from the bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
    Json(serde_json::Value),
}

/// The value at a dotted path of a raw document (arrays by index), as [`RawDocument::get`] walks
/// it: the first element of a name.
pub(crate) fn value_at<'a>(doc: &'a RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
    let mut cur = RawBsonRef::Document(doc);
    for seg in path.split('.') {
        cur = match cur {
            RawBsonRef::Document(d) => d.get(seg).ok()??,
            RawBsonRef::Array(a) => a.get(seg.parse().ok()?).ok()??,
            _ => return None,
        };
    }
    Some(cur)
}

/// The column's value for a record: what the writer stores and verification expects.
pub(crate) fn cell(column: &Column, doc: &RawDocument) -> Cell {
    let Some(v) = value_at(doc, column.path) else {
        return Cell::Null;
    };
    match (column.kind, v) {
        (_, RawBsonRef::Null) => Cell::Null,
        (Kind::Text, RawBsonRef::String(s)) => Cell::Text(clean(truncated(s)).into_owned()),
        (Kind::Text, RawBsonRef::ObjectId(o)) => Cell::Text(o.to_hex()),
        (Kind::Time, RawBsonRef::DateTime(t)) => match t.to_chrono_checked() {
            Some(t) => Cell::Time(t),
            None => Cell::Null,
        },
        (Kind::Int, RawBsonRef::Int32(i)) => Cell::Int(i.into()),
        (Kind::Int, RawBsonRef::Int64(i)) => Cell::Int(i),
        (Kind::Json, v) => match Bson::try_from(v.to_raw_bson()) {
            Ok(b) => Cell::Json(json(b)),
            Err(_) => Cell::Null,
        },
        _ => Cell::Null,
    }
}

trait ToChronoChecked {
    fn to_chrono_checked(self) -> Option<DateTime<Utc>>;
}

impl ToChronoChecked for bson::DateTime {
    fn to_chrono_checked(self) -> Option<DateTime<Utc>> {
        // timestamptz spans 4713 BC to 294276 AD; BSON's milliseconds go further.
        DateTime::from_timestamp_millis(self.timestamp_millis())
            .filter(|t| t.timestamp() > -210_000_000_000 && t.timestamp() < 9_000_000_000_000)
    }
}

/// PostgreSQL refuses NUL in text and jsonb: the copy holds U+2400 (␀) in its place. The bytes
/// keep the NUL; verification makes the copy the same way.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{2400}").into()
    } else {
        s.into()
    }
}

/// A BSON value as the `jsonb` copy holds it: relaxed Extended JSON, NULs replaced.
pub(crate) fn json(b: Bson) -> serde_json::Value {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => *s = clean(s).into_owned(),
            serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
            serde_json::Value::Object(o) => {
                if o.keys().any(|k| k.contains('\0')) {
                    let old = std::mem::take(o);
                    for (k, mut v) in old {
                        scrub(&mut v);
                        o.insert(clean(&k).into_owned(), v);
                    }
                } else {
                    o.values_mut().for_each(scrub);
                }
            }
            _ => {}
        }
    }
    let mut v = b.into_relaxed_extjson();
    scrub(&mut v);
    v
}

/// The whole record as its `jsonb` copy.
pub(crate) fn doc_json(doc: &RawDocument) -> Result<serde_json::Value, bson::raw::Error> {
    let d: bson::Document = doc.try_into()?;
    Ok(json(Bson::Document(d)))
}

/// A parameter of a statement.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
    Float(f64),
    Time(DateTime<Utc>),
    /// Bound as text and cast: `$n::jsonb`.
    Json(String),
}

/// A `WHERE` clause being built, with its parameters in placeholder order.
#[derive(Default)]
pub(crate) struct Params(pub(crate) Vec<Param>);

impl Params {
    fn push(&mut self, p: Param) -> String {
        self.0.push(p);
        format!("${}", self.0.len())
    }

    fn json(&mut self, v: &Bson) -> String {
        let text = json(v.clone()).to_string();
        format!("{}::jsonb", self.push(Param::Json(text)))
    }
}

/// The quoted name of a typed column.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `doc #> '{a,b}'`: the `jsonb` at a dotted path (a segment quoted if it needs to be).
pub(crate) fn json_path(path: &str) -> String {
    let segs: Vec<String> = path
        .split('.')
        .map(|s| {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                s.to_owned()
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect();
    format!("(doc #> '{{{}}}')", segs.join(",").replace('\'', "''"))
}

/// Where a path is read from.
enum Source {
    Id,
    Column(&'static Column),
    Json(String),
}

fn source(c: Collection, path: &str) -> Source {
    if path == "_id" {
        return Source::Id;
    }
    match columns(c).iter().find(|col| col.path == path) {
        Some(col) => Source::Column(col),
        None => Source::Json(json_path(path)),
    }
}

/// The SQL an ordering key reads.
pub(crate) fn order_expr(c: Collection, path: &str) -> String {
    match source(c, path) {
        Source::Id => "id".into(),
        Source::Column(col) => quoted(col.name),
        Source::Json(e) => e,
    }
}

/// The SQL a value of `find_values` reads.
pub(crate) fn value_expr(c: Collection, path: &str) -> (String, Option<Kind>) {
    match source(c, path) {
        Source::Id => ("id".into(), Some(Kind::Text)),
        Source::Column(col) if col.kind == Kind::Text && path != "_id" => {
            // The column may hold a prefix only: the value itself comes from `doc`.
            (format!("({} #>> '{{}}')", json_path(path)), None)
        }
        Source::Column(col) => (quoted(col.name), Some(col.kind)),
        Source::Json(e) => (e, None),
    }
}

/// Translates a filter on `c` into a `WHERE` clause.
pub(crate) fn where_sql(c: Collection, f: &crate::store::Filter, p: &mut Params) -> String {
    use crate::store::{CmpOp, Filter};
    let op_sql = |op: CmpOp| match op {
        CmpOp::Gt => ">",
        CmpOp::Gte => ">=",
        CmpOp::Lt => "<",
        CmpOp::Lte => "<=",
    };
    match f {
        Filter::Eq(path, v) => eq(c, path, v, p),
        Filter::In(_, vs) if vs.is_empty() => "FALSE".into(),
        Filter::In(path, vs) => {
            if matches!(source(c, path), Source::Id) && vs.iter().all(|v| id_text(v).is_some()) {
                let ids = vs.iter().filter_map(id_text).collect();
                return format!("id = ANY({}::text[])", p.push(Param::Texts(ids)));
            }
            let parts: Vec<String> = vs.iter().map(|v| eq(c, path, v, p)).collect();
            format!("({})", parts.join(" OR "))
        }
        Filter::Cmp(path, op, v) => {
            let op = op_sql(*op);
            match (source(c, path), v) {
                (Source::Id, v) => match id_text(v) {
                    Some(id) => format!("id {op} {}", p.push(Param::Text(id))),
                    None => "FALSE".into(),
                },
                (Source::Column(col), v) => match (col.kind, v) {
                    (Kind::Time, Bson::DateTime(t)) => match t.to_chrono_checked() {
                        Some(t) => format!("{} {op} {}", quoted(col.name), p.push(Param::Time(t))),
                        None => "FALSE".into(),
                    },
                    (Kind::Text, Bson::String(s)) => {
                        format!(
                            "{} {op} {}",
                            quoted(col.name),
                            p.push(Param::Text(clean(s).into()))
                        )
                    }
                    (Kind::Int, v) => match number(v) {
                        Some(Num::I(i)) => {
                            format!("{} {op} {}", quoted(col.name), p.push(Param::Int(i)))
                        }
                        Some(Num::F(x)) => {
                            format!("{} {op} {}", quoted(col.name), p.push(Param::Float(x)))
                        }
                        None => "FALSE".into(),
                    },
                    (Kind::Json, v) => json_cmp(&quoted(col.name), op, v, p),
                    _ => "FALSE".into(),
                },
                (Source::Json(e), v) => json_cmp(&e, op, v, p),
            }
        }
        Filter::Regex {
            path,
            pattern,
            case_insensitive,
        } => {
            let op = if *case_insensitive { "~*" } else { "~" };
            let pat = p.push(Param::Text(pattern.clone()));
            match source(c, path) {
                Source::Id => format!("id {op} {pat}"),
                Source::Column(col) if col.kind == Kind::Text => {
                    // The column holds the value, or for a long one its first bytes: a long one
                    // is matched in `doc`. An anchored literal start narrows the rows through the
                    // index first, as on the other stores.
                    let name = quoted(col.name);
                    let full = format!("({} #>> '{{}}')", json_path(path));
                    // The column sorts bytewise ("C"), which folds only ASCII letters: a
                    // case-insensitive match folds as the database's own locale does, as the
                    // `jsonb` text of a long value does.
                    let folded = if *case_insensitive {
                        format!("({name} COLLATE \"default\")")
                    } else {
                        name.clone()
                    };
                    let test = format!(
                        "(CASE WHEN octet_length({name}) < {} THEN {folded} {op} {pat} ELSE {full} {op} {pat} END)",
                        TEXT_LIMIT - 3
                    );
                    match crate::store::filter::literal_prefix(pattern)
                        .filter(|x| !*case_insensitive && x.len() < TEXT_LIMIT - 3)
                    {
                        Some(prefix) => {
                            let lo = p.push(Param::Text(clean(&prefix).into()));
                            let hi = p.push(Param::Text(format!("{}\u{10FFFF}", clean(&prefix))));
                            format!("({name} >= {lo} AND {name} < {hi} AND {test})")
                        }
                        None => format!("({name} IS NOT NULL AND {test})"),
                    }
                }
                Source::Column(col) => format!(
                    "(jsonb_typeof(to_jsonb({0})) = 'string' AND ({0} #>> '{{}}') {op} {pat})",
                    quoted(col.name)
                ),
                Source::Json(e) => {
                    format!("(jsonb_typeof({e}) = 'string' AND ({e} #>> '{{}}') {op} {pat})")
                }
            }
        }
        Filter::Prefix(path, prefix) => match source(c, path) {
            Source::Column(col) if col.kind == Kind::Text && prefix.len() <= TEXT_LIMIT => {
                let name = quoted(col.name);
                if prefix.is_empty() {
                    return format!("{name} IS NOT NULL");
                }
                // A range on the column, in byte order: the index serves it.
                let lo = p.push(Param::Text(clean(prefix).into()));
                let hi = p.push(Param::Text(format!("{}\u{10FFFF}", clean(prefix))));
                format!("({name} >= {lo} AND {name} < {hi})")
            }
            Source::Id => {
                let lo = p.push(Param::Text(prefix.clone()));
                format!("starts_with(id, {lo})")
            }
            _ => {
                let e = json_path(path);
                let lo = p.push(Param::Text(clean(prefix).into()));
                format!("(jsonb_typeof({e}) = 'string' AND starts_with({e} #>> '{{}}', {lo}))")
            }
        },
        Filter::And(fs) if fs.is_empty() => "TRUE".into(),
        Filter::Or(fs) if fs.is_empty() => "FALSE".into(),
        Filter::And(fs) | Filter::Or(fs) => {
            let joiner = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts: Vec<String> = fs.iter().map(|f| where_sql(c, f, p)).collect();
            format!("({})", parts.join(joiner))
        }
    }
}

enum Num {
    I(i64),
    F(f64),
}

fn number(v: &Bson) -> Option<Num> {
    match v {
        Bson::Int32(i) => Some(Num::I((*i).into())),
        Bson::Int64(i) => Some(Num::I(*i)),
        Bson::Double(d) => Some(Num::F(*d)),
        _ => None,
    }
}

fn id_text(v: &Bson) -> Option<String> {
    match v {
        Bson::ObjectId(o) => Some(o.to_hex()),
        _ => None,
    }
}

fn eq(c: Collection, path: &str, v: &Bson, p: &mut Params) -> String {
    match source(c, path) {
        Source::Id => match id_text(v) {
            Some(id) => format!("id = {}", p.push(Param::Text(id))),
            None => "FALSE".into(),
        },
        Source::Column(col) => {
            let name = quoted(col.name);
            match (col.kind, v) {
                (_, Bson::Null) => format!("{name} IS NULL"),
                (Kind::Text, Bson::String(s)) if s.len() > TEXT_LIMIT => {
                    let short = p.push(Param::Text(clean(truncated(s)).into()));
                    let full = p.push(Param::Text(clean(s).into()));
                    format!(
                        "({name} = {short} AND ({} #>> '{{}}') = {full})",
                        json_path(path)
                    )
                }
                (Kind::Text, Bson::String(s)) => {
                    format!("{name} = {}", p.push(Param::Text(clean(s).into())))
                }
                (Kind::Text, Bson::ObjectId(o)) => {
                    format!("{name} = {}", p.push(Param::Text(o.to_hex())))
                }
                (Kind::Time, Bson::DateTime(t)) => match t.to_chrono_checked() {
                    Some(t) => format!("{name} = {}", p.push(Param::Time(t))),
                    None => "FALSE".into(),
                },
                (Kind::Int, v) => match number(v) {
                    Some(Num::I(i)) => format!("{name} = {}", p.push(Param::Int(i))),
                    Some(Num::F(x)) => format!("{name} = {}", p.push(Param::Float(x))),
                    None => "FALSE".into(),
                },
                (Kind::Json, v) => format!("{name} = {}", p.json(v)),
                _ => "FALSE".into(),
            }
        }
        Source::Json(e) => match v {
            // A missing field matches null, as in MongoDB.
            Bson::Null => format!("({e} IS NULL OR {e} = 'null'::jsonb)"),
            v => format!("{e} = {}", p.json(v)),
        },
    }
}

/// A comparison on a `jsonb` value, only between values of the same kind.
fn json_cmp(e: &str, op: &str, v: &Bson, p: &mut Params) -> String {
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => {
            format!("(jsonb_typeof({e}) = 'number' AND {e} {op} {})", p.json(v))
        }
        Bson::String(_) => format!("(jsonb_typeof({e}) = 'string' AND {e} {op} {})", p.json(v)),
        Bson::Boolean(_) => format!("(jsonb_typeof({e}) = 'boolean' AND {e} {op} {})", p.json(v)),
        Bson::DateTime(t) => match t.to_chrono_checked() {
            Some(t) => format!(
                "(jsonb_typeof({e} -> '$date') = 'string' AND ({e} ->> '$date')::timestamptz {op} {})",
                p.push(Param::Time(t))
            ),
            None => "FALSE".into(),
        },
        Bson::ObjectId(o) => format!(
            "(jsonb_typeof({e} -> '$oid') = 'string' AND ({e} ->> '$oid') {op} {})",
            p.push(Param::Text(o.to_hex()))
        ),
        _ => "FALSE".into(),
    }
}

/// The `INSERT` of a batch into `c`: every column as one array parameter, unnested, so one
/// prepared statement serves any batch size. A document whose `_id` is stored already is skipped
/// (`ON CONFLICT` on the key), so a retried batch never duplicates one; any other unique index
/// that refuses a document is an error, as on the other stores. With `any_conflict`, a document
/// any unique index refuses is skipped (the process upsert).
pub(crate) fn insert_sql(c: Collection, any_conflict: bool) -> String {
    let cols = columns(c);
    let mut names = vec!["id".to_owned(), "bson".to_owned(), "doc".to_owned()];
    names.extend(cols.iter().map(|col| quoted(col.name)));
    let mut arrays = vec![
        "$1::text[]".to_owned(),
        "$2::bytea[]".to_owned(),
        "$3::text[]".to_owned(),
    ];
    let mut select = vec![
        "u.c1".to_owned(),
        "u.c2".to_owned(),
        "u.c3::jsonb".to_owned(),
    ];
    for (i, col) in cols.iter().enumerate() {
        arrays.push(format!("${}::{}", i + 4, col.kind.array()));
        select.push(if col.kind == Kind::Json {
            format!("u.c{}::jsonb", i + 4)
        } else {
            format!("u.c{}", i + 4)
        });
    }
    let aliases: Vec<String> = (1..=names.len()).map(|i| format!("c{i}")).collect();
    let target = if any_conflict {
        String::new()
    } else {
        match partition_column(c) {
            Some(p) => format!(" (id, {})", quoted(p.name)),
            None => " (id)".to_owned(),
        }
    };
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS u({}) ON CONFLICT{target} DO NOTHING",
        c.name(),
        names.join(", "),
        select.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
}

/// `CREATE TABLE` of `c` (and, for the partitioned ones, its default partition).
pub(crate) fn table_sql(c: Collection) -> String {
    let mut cols = vec![
        "id text COLLATE \"C\" NOT NULL".to_owned(),
        "bson bytea NOT NULL".to_owned(),
        "doc jsonb NOT NULL".to_owned(),
    ];
    for col in columns(c) {
        cols.push(format!("{} {}", quoted(col.name), col.kind.sql()));
    }
    match partition_column(c) {
        Some(part) => {
            cols.push(format!("PRIMARY KEY (id, {})", quoted(part.name)));
            format!(
                "CREATE TABLE IF NOT EXISTS {t} ({}) PARTITION BY RANGE ({});
                 CREATE TABLE IF NOT EXISTS {t}_default PARTITION OF {t} DEFAULT;",
                cols.join(", "),
                quoted(part.name),
                t = c.name()
            )
        }
        None => {
            cols.push("PRIMARY KEY (id)".to_owned());
            format!(
                "CREATE TABLE IF NOT EXISTS {} ({});",
                c.name(),
                cols.join(", ")
            )
        }
    }
}

/// The name of the partition of `c` holding the month starting at `start` (`audit_access_2026_12`).
pub(crate) fn partition_name(c: Collection, start: chrono::NaiveDate) -> String {
    format!("{}_{}", c.name(), start.format("%Y_%m"))
}

/// The first day of the month of `t`, and of the month after.
pub(crate) fn month_of(t: DateTime<Utc>) -> (chrono::NaiveDate, chrono::NaiveDate) {
    use chrono::Datelike;
    let start = t.date_naive().with_day(1).expect("day 1 exists");
    let next = start
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(chrono::NaiveDate::MAX);
    (start, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Filter;

    #[test]
    fn paths_read_their_column_or_the_jsonb() {
        let mut p = Params::default();
        let sql = where_sql(
            Collection::Access,
            &Filter::And(vec![
                Filter::eq("user.id", 23i64),
                Filter::eq("request.path", "/a"),
                Filter::eq("custom.x", "y"),
                Filter::gte("time.request", bson::DateTime::from_millis(0)),
            ]),
            &mut p,
        );
        assert_eq!(
            sql,
            "(\"user_id\" = $1::jsonb AND \"request_path\" = $2 AND (doc #> '{custom,x}') = $3::jsonb AND \"time_request\" >= $4)"
        );
        assert_eq!(p.0.len(), 4);
        assert_eq!(json_path("a.b-c.d'e"), "(doc #> '{a,\"b-c\",\"d''e\"}')");
    }

    #[test]
    fn the_insert_unnests_one_array_per_column() {
        let sql = insert_sql(Collection::Seal, false);
        assert_eq!(
            sql,
            "INSERT INTO audit_seal (id, bson, doc, \"stream\", \"seq\", \"kind\") SELECT u.c1, u.c2, u.c3::jsonb, u.c4, u.c5, u.c6 FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS u(c1, c2, c3, c4, c5, c6) ON CONFLICT (id) DO NOTHING"
        );
    }

    #[test]
    fn copies_are_made_from_the_bytes() {
        let doc = bson::rawdoc! {
            "_id": bson::oid::ObjectId::new(),
            "user": { "id": 23i64 },
            "request": { "path": "/a\u{0}b", "METADATA": { "REQUEST_METHOD": "GET" } },
            "time": { "request": bson::DateTime::from_millis(1_000) },
        };
        let get = |path: &str| {
            let col = columns(Collection::Access)
                .iter()
                .find(|c| c.path == path)
                .unwrap();
            cell(col, &doc)
        };
        assert_eq!(get("user.id"), Cell::Json(serde_json::json!(23)));
        assert_eq!(get("request.path"), Cell::Text("/a\u{2400}b".into()));
        assert_eq!(
            get("request.METADATA.REQUEST_METHOD"),
            Cell::Text("GET".into())
        );
        assert_eq!(
            get("time.request"),
            Cell::Time(DateTime::from_timestamp_millis(1_000).unwrap())
        );
        assert_eq!(get("exception.type"), Cell::Null);
        let long = "x".repeat(TEXT_LIMIT + 10);
        assert_eq!(truncated(&long).len(), TEXT_LIMIT);
    }
}
