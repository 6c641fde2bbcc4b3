//! Where audit documents live: the embedded SQLite store (the default, no server needed) and
//! MongoDB. Both implement the same operations with the same results; the conformance suite in
//! `tests/tests/conformance.rs` runs unchanged against each.
//!
//! [`Store`] is an enum rather than a trait object: there are exactly two stores, and an enum keeps
//! every call statically dispatched and the futures `Send` without boxing.

pub mod filter;
pub mod index;
#[cfg(feature = "mongodb")]
pub mod mongo;
#[cfg(feature = "embedded-store")]
pub mod sqlite;

pub use filter::{CmpOp, Filter, FindOptions, Order};
pub use index::{default_indexes, EnsuredIndex, IndexInfo, IndexSpec};

use crate::config::{AuditConfig, DbConnection};
use crate::document::{AuditDocument, Collection, Process};
use bson::{Document, RawDocumentBuf};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database failed.
    #[cfg(feature = "embedded-store")]
    #[error("sqlite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The MongoDB server or driver failed.
    #[cfg(feature = "mongodb")]
    #[error("mongodb store: {0}")]
    Mongo(Box<mongodb::error::Error>),
    /// A document could not be encoded.
    #[error("cannot encode document: {0}")]
    Encode(#[from] bson::ser::Error),
    /// A raw document could not be built.
    #[error("cannot encode document: {0}")]
    RawEncode(#[from] bson::raw::Error),
    /// A stored document could not be decoded into its type.
    #[error("cannot decode stored document: {0}")]
    Decode(#[from] bson::de::Error),
    /// A raw stored document was malformed.
    #[error("malformed stored document: {0}")]
    Raw(String),
    /// The filter cannot be run on this store.
    #[error("unsupported filter: {0}")]
    Filter(String),
    /// A uniqueness index refused the document.
    #[error("duplicate key in {collection}: {detail}")]
    Duplicate {
        /// The collection.
        collection: Collection,
        /// What the store said.
        detail: String,
    },
    /// The connection setting names a store that this build does not include.
    #[error("{0}")]
    Unsupported(String),
    /// The query ran past its time limit ([`FindOptions::max_time`]) and was stopped.
    #[error("the query ran past its time limit of {0:?} and was stopped")]
    TimeLimit(std::time::Duration),
    /// The blocking worker of the SQLite store died.
    #[error("store worker failed: {0}")]
    Worker(String),
}

#[cfg(feature = "mongodb")]
impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        StoreError::Mongo(Box::new(e))
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Encodes a document straight to BSON bytes (no intermediate `Document`).
pub fn encode<T: serde::Serialize>(doc: &T) -> StoreResult<RawDocumentBuf> {
    RawDocumentBuf::from_bytes(bson::to_vec(doc)?).map_err(|e| StoreError::Raw(e.to_string()))
}

/// An audit store: SQLite (embedded) or MongoDB. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub enum Store {
    /// The embedded store.
    #[cfg(feature = "embedded-store")]
    Sqlite(sqlite::SqliteStore),
    /// The MongoDB store.
    #[cfg(feature = "mongodb")]
    Mongo(mongo::MongoStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite($s) => $e,
            #[cfg(feature = "mongodb")]
            Store::Mongo($s) => $e,
        }
    };
}

impl Store {
    /// Opens the store a connection setting names, without creating anything in it.
    pub async fn open(conn: &DbConnection) -> StoreResult<Store> {
        match conn {
            DbConnection::Sqlite(path) => {
                #[cfg(feature = "embedded-store")]
                {
                    Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?))
                }
                #[cfg(not(feature = "embedded-store"))]
                {
                    Err(StoreError::Unsupported(format!(
                        "db_connection `{}` is a SQLite path, but this build has no `embedded-store` feature",
                        path.display()
                    )))
                }
            }
            DbConnection::Mongo { uri, database } => {
                #[cfg(feature = "mongodb")]
                {
                    Ok(Store::Mongo(
                        mongo::MongoStore::connect(uri, database).await?,
                    ))
                }
                #[cfg(not(feature = "mongodb"))]
                {
                    let _ = (uri, database);
                    Err(StoreError::Unsupported(
                        "db_connection is a MongoDB URI, but this build has no `mongodb` feature"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Opens the configured store and ensures its collections and every default and custom index
    /// (idempotent; what mongoengine did implicitly on first use).
    pub async fn connect(config: &AuditConfig) -> StoreResult<Store> {
        let store = Store::open(&config.db_connection).await?;
        store.ensure_indexes(config).await?;
        Ok(store)
    }

    /// `sqlite` or `mongodb`.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(_) => "sqlite",
            #[cfg(feature = "mongodb")]
            Store::Mongo(_) => "mongodb",
        }
    }

    /// Inserts documents. A document whose `_id` is already stored is skipped, not an error, so
    /// a retried write never duplicates a record. Returns how many were newly stored.
    pub async fn insert_many_raw(
        &self,
        collection: Collection,
        docs: Vec<Document>,
    ) -> StoreResult<u64> {
        let raw = docs
            .iter()
            .map(RawDocumentBuf::from_document)
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_many_bytes(collection, raw).await
    }

    /// Inserts already-encoded documents (what the writer sends: no intermediate `Document`).
    pub async fn insert_many_bytes(
        &self,
        collection: Collection,
        docs: Vec<RawDocumentBuf>,
    ) -> StoreResult<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        dispatch!(self, s => s.insert_many(collection, docs).await)
    }

    /// Inserts one typed document (idempotent by `_id`).
    pub async fn insert<T: AuditDocument>(&self, doc: &T) -> StoreResult<u64> {
        self.insert_many_bytes(T::COLLECTION, vec![encode(doc)?])
            .await
    }

    /// Inserts typed documents in one batch (idempotent by `_id`).
    pub async fn insert_all<T: AuditDocument>(&self, docs: &[T]) -> StoreResult<u64> {
        let docs = docs.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        self.insert_many_bytes(T::COLLECTION, docs).await
    }

    /// Stores the process unless one with the same `(pid, machine, creation_time)` exists, atomically,
    /// and returns the stored one (so concurrent first calls all get the same id, F64).
    pub async fn upsert_process(&self, process: &Process) -> StoreResult<Process> {
        dispatch!(self, s => s.upsert_process(process).await)
    }

    /// Raw documents matching `opts`.
    pub async fn find_raw(
        &self,
        collection: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        dispatch!(self, s => s.find(collection, opts).await)
    }

    /// Typed documents matching `opts`.
    pub async fn find<T: AuditDocument>(&self, opts: &FindOptions) -> StoreResult<Vec<T>> {
        self.find_raw(T::COLLECTION, opts)
            .await?
            .into_iter()
            .map(|d| bson::from_document(d).map_err(StoreError::from))
            .collect()
    }

    /// Visits every matching document in batches of `batch` (by ascending `_id`), never holding more
    /// than one batch in memory.
    pub async fn for_each_batch<F>(
        &self,
        collection: Collection,
        filter: &Filter,
        batch: u64,
        mut f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<Document>) -> StoreResult<()>,
    {
        let mut last: Option<bson::oid::ObjectId> = None;
        let mut total = 0;
        loop {
            let mut parts = vec![filter.clone()];
            if let Some(id) = last {
                parts.push(Filter::Cmp("_id".into(), CmpOp::Gt, id.into()));
            }
            let opts = FindOptions::new(Filter::And(parts))
                .sort("_id", Order::Asc)
                .window(0, Some(batch));
            let docs = self.find_raw(collection, &opts).await?;
            let n = docs.len() as u64;
            if n == 0 {
                return Ok(total);
            }
            last = docs.last().and_then(|d| d.get_object_id("_id").ok());
            total += n;
            f(docs)?;
            if n < batch || last.is_none() {
                return Ok(total);
            }
        }
    }

    /// How many documents match.
    pub async fn count(&self, collection: Collection, filter: &Filter) -> StoreResult<u64> {
        dispatch!(self, s => s.count(collection, filter).await)
    }

    /// How many documents match, giving up after `max_time` with [`StoreError::TimeLimit`].
    pub async fn count_limited(
        &self,
        collection: Collection,
        filter: &Filter,
        max_time: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        dispatch!(self, s => s.count_limited(collection, filter, max_time).await)
    }

    /// The values at `paths` (dotted) of every document matching `opts`, one row per document:
    /// integers as `Int64`, dates as `Int64` milliseconds, a sub-document or array as `true`,
    /// a missing field as null. Summaries read these instead of whole documents.
    pub async fn find_values(
        &self,
        collection: Collection,
        opts: &FindOptions,
        paths: &[&str],
    ) -> StoreResult<Vec<Vec<bson::Bson>>> {
        dispatch!(self, s => s.find_values(collection, opts, paths).await)
    }

    /// Deletes the matching documents; returns how many.
    pub async fn delete_many(&self, collection: Collection, filter: &Filter) -> StoreResult<u64> {
        dispatch!(self, s => s.delete_many(collection, filter).await)
    }

    /// Drops the collection with its indexes (it is re-created empty by the next ensure step).
    pub async fn drop_collection(&self, collection: Collection) -> StoreResult<()> {
        dispatch!(self, s => s.drop_collection(collection).await)
    }

    /// Creates the missing indexes among `specs` on `collection`; reports each as created or existing.
    pub async fn ensure_index_specs(
        &self,
        collection: Collection,
        specs: &[IndexSpec],
    ) -> StoreResult<Vec<EnsuredIndex>> {
        dispatch!(self, s => s.ensure_indexes(collection, specs).await)
    }

    /// Ensures every default index and the custom ones of `config`, on all three collections.
    pub async fn ensure_indexes(&self, config: &AuditConfig) -> StoreResult<Vec<EnsuredIndex>> {
        let mut out = Vec::new();
        for c in Collection::ALL {
            out.extend(self.ensure_index_specs(c, &config.indexes_for(c)).await?);
        }
        Ok(out)
    }

    /// The indexes on `collection`, `_id_` first.
    pub async fn list_indexes(&self, collection: Collection) -> StoreResult<Vec<IndexInfo>> {
        dispatch!(self, s => s.list_indexes(collection).await)
    }

    /// Drops one index by name; `false` when there was none.
    pub async fn drop_index(&self, collection: Collection, name: &str) -> StoreResult<bool> {
        dispatch!(self, s => s.drop_index(collection, name).await)
    }
}
