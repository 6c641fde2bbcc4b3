//! Index definitions, as plain data: the defaults of the original, exactly (existing data and
//! tools rely on them), and the validation of the custom paths the `*_indexes` settings add. One
//! [`IndexSpec`] describes an index for both stores; its name is MongoDB's generated name
//! (`request.path_1_time.request_1`), so existing deployments keep theirs.
//!
//! This module depends on [`crate::document`] only: the configuration reads custom indexes
//! through it and the stores create them through it, and neither has to know the other.

use crate::document::Collection;

/// One index: its keys in order (1 ascending, -1 descending) and whether it is unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexSpec {
    /// `(path, direction)` pairs.
    pub keys: Vec<(String, i32)>,
    /// Rejects a second document with the same keys.
    pub unique: bool,
}

impl IndexSpec {
    /// An ascending or descending index from mongoengine-style specs: `"path"` or `"-path"`.
    pub fn from_fields<S: AsRef<str>>(fields: &[S]) -> Self {
        let keys = fields
            .iter()
            .map(|f| {
                let f = f.as_ref();
                match f.strip_prefix('-') {
                    Some(p) => (p.to_owned(), -1),
                    None => (f.strip_prefix('+').unwrap_or(f).to_owned(), 1),
                }
            })
            .collect();
        IndexSpec {
            keys,
            unique: false,
        }
    }

    fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// MongoDB's default index name: `path_1_other_-1`.
    pub fn name(&self) -> String {
        self.keys
            .iter()
            .map(|(p, d)| format!("{p}_{d}"))
            .collect::<Vec<_>>()
            .join("_")
    }
}

/// Checks one index field path (`custom.polls.names`, `-time.request`): dotted segments of letters,
/// digits and `_`, none empty, not starting with `$`.
pub fn validate_index_path(path: &str) -> Result<(), String> {
    let p = path
        .strip_prefix('-')
        .or_else(|| path.strip_prefix('+'))
        .unwrap_or(path);
    if p.is_empty() {
        return Err("an index path is empty".into());
    }
    for seg in p.split('.') {
        if seg.is_empty() {
            return Err(format!("index path `{path}` has an empty segment"));
        }
        if !seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "index path `{path}` may only hold letters, digits, `_` and `.`"
            ));
        }
    }
    Ok(())
}

/// The original's indexes on `collection`, in its order, without `_id`.
pub fn default_indexes(collection: Collection) -> Vec<IndexSpec> {
    let f = |fields: &[&str]| IndexSpec::from_fields(fields);
    match collection {
        Collection::Access => vec![
            f(&["interlink_id"]),
            f(&["user.id"]),
            f(&["request.path"]),
            f(&["time.request"]),
            f(&["exception.type"]),
            f(&["request.path", "time.request"]),
            f(&["view.app", "view.name"]),
            f(&["view.app", "view.name", "user.id"]),
            f(&["view.app", "view.name", "time.request"]),
            f(&["view.app", "view.name", "user.id", "time.request"]),
            f(&["request.path", "request.METADATA.REQUEST_METHOD"]),
        ],
        Collection::Process => vec![
            f(&["interlink_id"]),
            f(&["pid", "machine", "-creation_time"]),
            f(&["pid", "machine", "creation_time"]).unique(),
        ],
        Collection::ModelAction => vec![
            f(&["timestamp"]),
            f(&["action", "timestamp"]),
            f(&["model.app", "model.name"]),
            f(&["model.app", "model.name", "action"]),
            f(&["model.app", "model.name", "instance.id"]),
            f(&["model.app", "model.name", "timestamp"]),
            f(&["model.app", "model.name", "action", "timestamp"]),
            f(&["model.app", "model.name", "instance.id", "timestamp"]),
        ],
        // `kind`: an erasure finds the erasure seals that name a record without reading every
        // batch seal.
        Collection::Seal => vec![f(&["stream", "seq"]).unique(), f(&["kind"])],
        // Looked up by `_id` only (the record's).
        Collection::Salt => Vec::new(),
    }
}
