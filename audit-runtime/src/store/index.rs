//! What the stores report about indexes. The definitions themselves (the original's defaults and
//! the custom ones of the settings) are plain data in [`crate::index`], shared with the
//! configuration; they are re-exported here so `store::IndexSpec` and `store::default_indexes`
//! keep working.

pub(crate) use crate::index::{default_indexes, IndexSpec};

use crate::document::Collection;

/// An index as a store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    /// Its name (`_id_` for the id index).
    pub name: String,
    /// `(path, direction)` pairs.
    pub keys: Vec<(String, i32)>,
    /// Whether it is unique.
    pub unique: bool,
}

/// What an ensure step did with one index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredIndex {
    /// The collection.
    pub collection: Collection,
    /// The index name.
    pub name: String,
    /// `true` when this call created it, `false` when it already existed.
    pub created: bool,
}
