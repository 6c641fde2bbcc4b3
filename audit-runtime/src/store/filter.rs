//! A small, typed filter language that both stores understand: MongoDB receives it as a query
//! document, SQLite as a `WHERE` clause over `bson_get(doc, 'path')` expressions, so that the same
//! expressions the indexes are built on are the ones queries use.

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
