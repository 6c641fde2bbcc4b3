//! A small, typed filter language that every store understands: MongoDB receives it as a query
//! document, SQLite and PostgreSQL as a `WHERE` clause over the columns their indexes are built on
//! (and the stored document where there is none). [`Filter::matches`] evaluates it on one raw
//! document in Rust, with MongoDB's semantics: what the commands that change records use where
//! the store cannot read its own bytes.

#[cfg(any(feature = "postgres", test))]
use bson::raw::{RawBsonRef, RawDocument};
use bson::{doc, Bson, Document};

/// One condition on the stored documents. Paths are dotted (`request.path`, `view.app`).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `path == value` (`null` matches a missing field too, as in MongoDB).
    Eq(String, Bson),
    /// `path` is one of the values (an empty list matches nothing).
    In(String, Vec<Bson>),
    /// `path <op> value`.
    Cmp(String, CmpOp, Bson),
    /// `path` matches the regular expression (search semantics, unanchored unless the pattern anchors).
    Regex {
        /// The dotted path.
        path: String,
        /// The pattern, in the syntax shared by the `regex` crate and MongoDB's PCRE.
        pattern: String,
        /// Case-insensitive matching.
        case_insensitive: bool,
    },
    /// `path` starts with the literal prefix, case-sensitive. Kept apart from `Regex` so both stores
    /// can answer it from an index (an anchored regex in MongoDB, a range in SQLite).
    Prefix(String, String),
    /// Every condition holds.
    And(Vec<Filter>),
    /// At least one condition holds.
    Or(Vec<Filter>),
}

/// Comparison operators of [`Filter::Cmp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

impl CmpOp {
    fn mongo(self) -> &'static str {
        match self {
            CmpOp::Gt => "$gt",
            CmpOp::Gte => "$gte",
            CmpOp::Lt => "$lt",
            CmpOp::Lte => "$lte",
        }
    }

    #[cfg(feature = "embedded-store")]
    pub(crate) fn sql(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
        }
    }
}

impl Filter {
    /// Matches every document.
    pub fn all() -> Filter {
        Filter::And(Vec::new())
    }

    /// `path == value`.
    pub fn eq(path: impl Into<String>, value: impl Into<Bson>) -> Filter {
        Filter::Eq(path.into(), value.into())
    }

    /// `path >= value`.
    pub fn gte(path: impl Into<String>, value: impl Into<Bson>) -> Filter {
        Filter::Cmp(path.into(), CmpOp::Gte, value.into())
    }

    /// `path <= value`.
    pub fn lte(path: impl Into<String>, value: impl Into<Bson>) -> Filter {
        Filter::Cmp(path.into(), CmpOp::Lte, value.into())
    }

    /// `path` in `[from, to]` (both inclusive); used for ranged deletes.
    pub fn between(path: &str, from: impl Into<Bson>, to: impl Into<Bson>) -> Filter {
        Filter::And(vec![Filter::gte(path, from), Filter::lte(path, to)])
    }

    /// Every path this filter reads.
    pub fn paths(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::Eq(p, _) | Filter::In(p, _) | Filter::Cmp(p, _, _) | Filter::Prefix(p, _) => {
                out.push(p)
            }
            Filter::Regex { path, .. } => out.push(path),
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| f.collect_paths(out)),
        }
    }

    /// The MongoDB query document.
    pub fn to_mongo(&self) -> Document {
        match self {
            Filter::Eq(p, v) => doc! { p: v.clone() },
            Filter::In(p, vs) => doc! { p: { "$in": vs.clone() } },
            Filter::Cmp(p, op, v) => doc! { p: { op.mongo(): v.clone() } },
            Filter::Regex {
                path,
                pattern,
                case_insensitive,
            } => {
                let options = if *case_insensitive { "i" } else { "" };
                doc! { path: { "$regex": pattern.as_str(), "$options": options } }
            }
            Filter::Prefix(p, prefix) => {
                doc! { p: { "$regex": format!("^{}", regex::escape(prefix)) } }
            }
            Filter::And(fs) if fs.is_empty() => Document::new(),
            Filter::And(fs) if fs.len() == 1 => fs[0].to_mongo(),
            Filter::And(fs) => {
                doc! { "$and": fs.iter().map(|f| Bson::Document(f.to_mongo())).collect::<Vec<_>>() }
            }
            Filter::Or(fs) if fs.is_empty() => doc! { "_id": { "$in": [] } },
            Filter::Or(fs) => {
                doc! { "$or": fs.iter().map(|f| Bson::Document(f.to_mongo())).collect::<Vec<_>>() }
            }
        }
    }
}

#[cfg(any(feature = "postgres", test))]
impl Filter {
    /// Whether `doc` matches, by its values alone: `Eq(path, null)` matches a missing field,
    /// numbers compare with numbers whatever their BSON type, strings by bytes, dates with dates,
    /// ObjectIds with ObjectIds; a comparison between values of different kinds is false.
    pub(crate) fn matches(&self, doc: &RawDocument) -> bool {
        match self {
            Filter::Eq(p, v) => eq_value(value_at(doc, p), v),
            Filter::In(p, vs) => {
                let found = value_at(doc, p);
                vs.iter().any(|v| eq_value(found, v))
            }
            Filter::Cmp(p, op, v) => match value_at(doc, p).and_then(|found| compare(found, v)) {
                Some(o) => match op {
                    CmpOp::Gt => o.is_gt(),
                    CmpOp::Gte => o.is_ge(),
                    CmpOp::Lt => o.is_lt(),
                    CmpOp::Lte => o.is_le(),
                },
                None => false,
            },
            Filter::Regex {
                path,
                pattern,
                case_insensitive,
            } => match value_at(doc, path) {
                Some(RawBsonRef::String(s)) => regex::RegexBuilder::new(pattern)
                    .case_insensitive(*case_insensitive)
                    .build()
                    .is_ok_and(|re| re.is_match(s)),
                _ => false,
            },
            Filter::Prefix(p, prefix) => {
                matches!(value_at(doc, p), Some(RawBsonRef::String(s)) if s.starts_with(prefix.as_str()))
            }
            Filter::And(fs) => fs.iter().all(|f| f.matches(doc)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(doc)),
        }
    }
}

#[cfg(any(feature = "postgres", test))]
/// The value at a dotted path (array elements by index), the first element of a name winning.
fn value_at<'a>(doc: &'a RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
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

#[cfg(any(feature = "postgres", test))]
fn eq_value(found: Option<RawBsonRef<'_>>, v: &Bson) -> bool {
    match (found, v) {
        (None | Some(RawBsonRef::Null), Bson::Null) => true,
        (None, _) => false,
        (Some(found), v) => compare(found, v).is_some_and(|o| o.is_eq()),
    }
}

#[cfg(any(feature = "postgres", test))]
/// The order of a stored value and a filter value of the same kind.
fn compare(found: RawBsonRef<'_>, v: &Bson) -> Option<std::cmp::Ordering> {
    let number = |b: RawBsonRef<'_>| match b {
        RawBsonRef::Int32(i) => Some(f64::from(i)),
        RawBsonRef::Int64(i) => Some(i as f64),
        RawBsonRef::Double(d) => Some(d),
        _ => None,
    };
    match (found, v) {
        (RawBsonRef::Int64(a), Bson::Int64(b)) => Some(a.cmp(b)),
        (RawBsonRef::Int32(a), Bson::Int64(b)) => Some(i64::from(a).cmp(b)),
        (RawBsonRef::Int64(a), Bson::Int32(b)) => Some(a.cmp(&i64::from(*b))),
        (RawBsonRef::Int32(a), Bson::Int32(b)) => Some(a.cmp(b)),
        (f, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_)) => {
            let b = match v {
                Bson::Int32(i) => f64::from(*i),
                Bson::Int64(i) => *i as f64,
                Bson::Double(d) => *d,
                _ => return None,
            };
            number(f)?.partial_cmp(&b)
        }
        (RawBsonRef::String(a), Bson::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (RawBsonRef::DateTime(a), Bson::DateTime(b)) => Some(a.cmp(b)),
        (RawBsonRef::ObjectId(a), Bson::ObjectId(b)) => Some(a.bytes().cmp(&b.bytes())),
        (RawBsonRef::Boolean(a), Bson::Boolean(b)) => Some(a.cmp(b)),
        (found, v) => {
            let found = Bson::try_from(found.to_raw_bson()).ok()?;
            (found == *v).then_some(std::cmp::Ordering::Equal)
        }
    }
}

/// The literal text every match of an anchored pattern starts with, if there is some: the
/// characters after `^` up to the first metacharacter (minus one a quantifier applies to). No
/// prefix for patterns with alternation, whose branches need not share it.
pub(crate) fn literal_prefix(pattern: &str) -> Option<String> {
    let rest = pattern.strip_prefix('^')?;
    if pattern.contains('|') {
        return None;
    }
    let mut prefix: String = rest
        .chars()
        .take_while(|c| !"\\.+*?()|[]{}^$".contains(*c))
        .collect();
    if rest[prefix.len()..].starts_with(['*', '?', '{']) {
        prefix.pop();
    }
    (!prefix.is_empty()).then_some(prefix)
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest first.
    Asc,
    /// Largest (newest) first.
    Desc,
}

/// What to find: a filter, an ordering, and a window.
#[derive(Debug, Clone, PartialEq)]
pub struct FindOptions {
    /// Which documents.
    pub filter: Filter,
    /// Sort keys, most significant first.
    pub sort: Vec<(String, Order)>,
    /// Documents to pass over.
    pub skip: u64,
    /// At most this many (`None`: all).
    pub limit: Option<u64>,
    /// How long the store may work on the query before giving up with
    /// [`StoreError::TimeLimit`](super::StoreError::TimeLimit) (`None`: no limit). Queries built
    /// from untrusted input (the console, the command line) set it, so a pathological filter
    /// cannot hold a worker or the database.
    pub max_time: Option<std::time::Duration>,
}

impl FindOptions {
    /// Every document matching `filter`, in store order.
    pub fn new(filter: Filter) -> Self {
        FindOptions {
            filter,
            sort: Vec::new(),
            skip: 0,
            limit: None,
            max_time: None,
        }
    }

    /// Sets the time limit of the query.
    pub fn max_time(mut self, limit: std::time::Duration) -> Self {
        self.max_time = Some(limit);
        self
    }

    /// Adds a sort key.
    pub fn sort(mut self, path: impl Into<String>, order: Order) -> Self {
        self.sort.push((path.into(), order));
        self
    }

    /// Sets the window.
    pub fn window(mut self, skip: u64, limit: Option<u64>) -> Self {
        self.skip = skip;
        self.limit = limit;
        self
    }

    #[cfg(feature = "mongodb")]
    pub(crate) fn mongo_sort(&self) -> Option<Document> {
        if self.sort.is_empty() {
            return None;
        }
        let mut d = Document::new();
        for (p, o) in &self.sort {
            d.insert(p.clone(), if *o == Order::Asc { 1 } else { -1 });
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn literal_prefixes_of_anchored_patterns() {
        assert_eq!(literal_prefix(r"^/polls/\w*$").as_deref(), Some("/polls/"));
        assert_eq!(literal_prefix("^/polls/12/").as_deref(), Some("/polls/12/"));
        assert_eq!(
            literal_prefix("^/ab*c").as_deref(),
            Some("/a"),
            "the quantified `b` is not part of it"
        );
        assert_eq!(literal_prefix("/polls/"), None, "unanchored");
        assert_eq!(literal_prefix("^/a|/b"), None, "alternation");
        assert_eq!(literal_prefix(r"^\d+"), None);
    }

    #[test]
    fn a_filter_evaluated_on_the_bytes_agrees_with_the_stores() {
        let id = bson::oid::ObjectId::new();
        let doc = rawdoc! {
            "_id": id,
            "user": { "id": 23i32, "name": "erin" },
            "time": { "request": bson::DateTime::from_millis(5_000) },
            "tags": ["a", "b"],
            "n": bson::RawBson::Null,
        };
        let yes = [
            Filter::eq("user.id", 23i64),
            Filter::eq("user.id", 23.0),
            Filter::eq("missing", Bson::Null),
            Filter::eq("n", Bson::Null),
            Filter::eq("_id", id),
            Filter::eq("tags.1", "b"),
            Filter::In("user.id".into(), vec![Bson::from(1), Bson::from(23)]),
            Filter::Cmp(
                "time.request".into(),
                CmpOp::Lt,
                bson::DateTime::from_millis(6_000).into(),
            ),
            Filter::gte("user.id", 23i64),
            Filter::Prefix("user.name".into(), "er".into()),
            Filter::Regex {
                path: "user.name".into(),
                pattern: "^E".into(),
                case_insensitive: true,
            },
            Filter::all(),
        ];
        for f in yes {
            assert!(f.matches(&doc), "{f:?}");
        }
        let no = [
            Filter::eq("user.id", "23"),
            Filter::eq("user.id", Bson::Null),
            Filter::Cmp("user.name".into(), CmpOp::Gt, Bson::from(5)),
            Filter::Cmp(
                "time.request".into(),
                CmpOp::Gt,
                bson::DateTime::from_millis(6_000).into(),
            ),
            Filter::Prefix("user.id".into(), "2".into()),
            Filter::Or(Vec::new()),
        ];
        for f in no {
            assert!(!f.matches(&doc), "{f:?}");
        }
    }
}
