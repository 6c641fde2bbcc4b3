//! Where audit documents live: the embedded SQLite store (the default, no server needed),
//! MongoDB and PostgreSQL. All three implement the same operations with the same results; the
//! conformance suite in `tests/tests/conformance.rs` runs unchanged against each.
//!
//! [`Store`] is an enum rather than a trait object: there are exactly three stores, and an enum
//! keeps every call statically dispatched and the futures `Send` without boxing.

pub(crate) mod degrade;
pub(crate) mod filter;
pub(crate) mod index;
#[cfg(feature = "mongodb")]
pub(crate) mod mongo;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod prune;
#[cfg(feature = "embedded-store")]
pub(crate) mod sqlite;

pub(crate) use filter::{CmpOp, Filter, FindOptions, Order};
pub(crate) use index::{default_indexes, EnsuredIndex, IndexInfo, IndexSpec};

use crate::config::{AuditConfig, DbConnection};
use crate::document::{AuditDocument, Collection, Process};
use bson::{Bson, Document, RawDocumentBuf};

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The SQLite database failed.
    #[cfg(feature = "embedded-store")]
    #[error("sqlite store: {0}")]
    Sqlite(SqliteError),
    /// The MongoDB server or driver failed.
    #[cfg(feature = "mongodb")]
    #[error("mongodb store: {0}")]
    Mongo(MongoError),
    /// The PostgreSQL server or driver failed.
    #[cfg(feature = "postgres")]
    #[error("postgres store: {0}")]
    Postgres(PostgresError),
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
    /// A file of the store could not be created or opened.
    #[error("store file: {0}")]
    Io(#[from] std::io::Error),
    /// What was opened for reading is not an audit trail (an empty file, a database without the
    /// audit tables).
    #[error("not an audit trail: {0}")]
    NotATrail(String),
    /// A document is over the size limit both stores share (16 MiB, MongoDB's).
    #[error(
        "document of {size} bytes in {collection} is over the {MAX_DOCUMENT_BYTES}-byte limit"
    )]
    TooLarge {
        /// The collection.
        collection: Collection,
        /// The document's size in bytes.
        size: usize,
    },
}

/// The largest document a store accepts: MongoDB's limit, which the SQLite store enforces too, so
/// a record is refused (and then stored trimmed) the same way on both.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// MongoDB server error codes that mean "this document will never be accepted": retrying cannot
/// help, only changing the document can.
#[cfg(feature = "mongodb")]
const MONGO_PERMANENT_CODES: &[i32] = &[
    2,     // BadValue
    14,    // TypeMismatch
    22,    // InvalidBSON
    52,    // DollarPrefixedFieldName
    55,    // InvalidDBRef
    56,    // EmptyFieldName
    57,    // DottedFieldName
    10334, // BSONObjectTooLarge
    11000, // DuplicateKey (on another unique index than `_id`; those are skipped before)
    17280, // KeyTooLong
];

impl StoreError {
    /// True when the store refuses this for good (the document is too large, a key or value is
    /// invalid, a unique index other than `_id` rejects it): retrying the same document cannot
    /// succeed. False for what passes (connection lost, timeouts, the database busy or locked, a
    /// server down): retrying later can.
    pub fn is_permanent(&self) -> bool {
        match self {
            #[cfg(feature = "embedded-store")]
            StoreError::Sqlite(e) => match &e.0 {
                rusqlite::Error::SqliteFailure(f, _) => matches!(
                    f.code,
                    rusqlite::ErrorCode::TooBig
                        | rusqlite::ErrorCode::ConstraintViolation
                        | rusqlite::ErrorCode::TypeMismatch
                ),
                rusqlite::Error::ToSqlConversionFailure(_) => true,
                _ => false,
            },
            #[cfg(feature = "mongodb")]
            StoreError::Mongo(e) => mongo_is_permanent(&e.0),
            #[cfg(feature = "postgres")]
            StoreError::Postgres(e) => postgres_is_permanent(&e.0),
            StoreError::Encode(_)
            | StoreError::RawEncode(_)
            | StoreError::Decode(_)
            | StoreError::Raw(_)
            | StoreError::Filter(_)
            | StoreError::Duplicate { .. }
            | StoreError::NotATrail(_)
            | StoreError::TooLarge { .. } => true,
            // A query that ran out of time may pass on a quieter store.
            StoreError::Unsupported(_)
            | StoreError::Worker(_)
            | StoreError::Io(_)
            | StoreError::TimeLimit(_) => false,
        }
    }
}

/// MongoDB server error codes that pass (a primary stepping down, a shutdown, a timeout), even
/// when they come back as a document's write error in a bulk insert.
#[cfg(feature = "mongodb")]
const MONGO_PASSING_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

#[cfg(feature = "mongodb")]
fn mongo_is_permanent(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") {
        return false;
    }
    match &*e.kind {
        ErrorKind::InvalidArgument { .. }
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::BsonDeserialization(_) => true,
        // Write errors are about the documents; a write-concern error is about the servers.
        ErrorKind::Write(WriteFailure::WriteError(w)) => !MONGO_PASSING_CODES.contains(&w.code),
        ErrorKind::InsertMany(f) => {
            f.write_concern_error.is_none()
                && f.write_errors.as_ref().is_some_and(|w| {
                    !w.is_empty() && w.iter().all(|w| !MONGO_PASSING_CODES.contains(&w.code))
                })
        }
        ErrorKind::Command(c) => MONGO_PERMANENT_CODES.contains(&c.code),
        _ => false,
    }
}

/// Whether a PostgreSQL failure is about the document (it will fail again) rather than the server
/// or the connection. By SQLSTATE class: connection exceptions (08), transaction rollbacks such
/// as serialization failures and deadlocks (40), insufficient resources (53), operator
/// intervention such as a shutdown (57), system errors (58) and an object in use (55) pass;
/// data exceptions (22), integrity violations (23), program limits (54), and the others, do not.
#[cfg(feature = "postgres")]
fn postgres_is_permanent(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            !matches!(code.get(..2), Some("08" | "40" | "53" | "55" | "57" | "58"))
        }
        sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Configuration(_) => true,
        _ => false,
    }
}

/// The SQLite driver's error. Opaque, so that the driver's version is not part of this crate's
/// API; its message is the driver's, and [`source`](std::error::Error::source) gives the
/// driver's error itself.
#[cfg(feature = "embedded-store")]
#[derive(Debug)]
pub struct SqliteError(pub(crate) rusqlite::Error);

/// The MongoDB driver's error, opaque for the same reason as [`SqliteError`].
#[cfg(feature = "mongodb")]
#[derive(Debug)]
pub struct MongoError(pub(crate) Box<mongodb::error::Error>);

/// The PostgreSQL driver's error, opaque for the same reason as [`SqliteError`].
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct PostgresError(pub(crate) Box<sqlx::Error>);

#[cfg(feature = "postgres")]
impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "postgres")]
impl std::error::Error for PostgresError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(feature = "postgres")]
#[doc(hidden)]
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Postgres(PostgresError(Box::new(e)))
    }
}

#[cfg(feature = "embedded-store")]
impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "embedded-store")]
impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[cfg(feature = "mongodb")]
impl std::fmt::Display for MongoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "mongodb")]
impl std::error::Error for MongoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

// For `?` on driver calls inside the crate; hidden, since the drivers' types are not public API.
#[cfg(feature = "embedded-store")]
#[doc(hidden)]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(SqliteError(e))
    }
}

#[cfg(feature = "mongodb")]
#[doc(hidden)]
impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        StoreError::Mongo(MongoError(Box::new(e)))
    }
}

/// Result of store operations.
pub(crate) type StoreResult<T> = Result<T, StoreError>;

#[cfg(feature = "embedded-store")]
pub(crate) use crate::commitment::RecordDigest;

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
    /// The PostgreSQL store.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
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
            #[cfg(feature = "postgres")]
            Store::Postgres($s) => $e,
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
            DbConnection::Postgres { uri } => Store::open_postgres(uri, false).await,
        }
    }

    async fn open_postgres(uri: &str, read_only: bool) -> StoreResult<Store> {
        #[cfg(feature = "postgres")]
        {
            Ok(Store::Postgres(
                postgres::PgStore::connect(uri, read_only).await?,
            ))
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = (uri, read_only);
            Err(StoreError::Unsupported(
                "db_connection is a PostgreSQL URI, but this build has no `postgres` feature"
                    .into(),
            ))
        }
    }

    /// Opens an existing store for reading only: nothing is created, migrated or written (what
    /// verification needs). A SQLite file that is not an audit database is
    /// [`StoreError::NotATrail`]; MongoDB is only connected to, as [`open`](Self::open) does.
    pub async fn open_read_only(conn: &DbConnection) -> StoreResult<Store> {
        match conn {
            #[cfg(feature = "embedded-store")]
            DbConnection::Sqlite(path) => Ok(Store::Sqlite(
                sqlite::SqliteStore::open_read_only(path).await?,
            )),
            DbConnection::Postgres { uri } => Store::open_postgres(uri, true).await,
            _ => Store::open(conn).await,
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
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => "postgres",
        }
    }

    /// Inserts documents. A document whose `_id` is already stored is skipped, not an error, so
    /// a retried write never duplicates a record. Returns how many were newly stored.
    pub async fn insert_documents(
        &self,
        collection: Collection,
        docs: Vec<Document>,
    ) -> StoreResult<u64> {
        let raw = docs
            .iter()
            .map(RawDocumentBuf::from_document)
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_raw_documents(collection, raw).await
    }

    /// Inserts already-encoded documents (what the writer sends: no intermediate `Document`).
    pub async fn insert_raw_documents(
        &self,
        collection: Collection,
        docs: Vec<RawDocumentBuf>,
    ) -> StoreResult<u64> {
        if docs.is_empty() {
            return Ok(0);
        }
        if let Some(d) = docs
            .iter()
            .find(|d| d.as_bytes().len() > MAX_DOCUMENT_BYTES)
        {
            return Err(StoreError::TooLarge {
                collection,
                size: d.as_bytes().len(),
            });
        }
        dispatch!(self, s => s.insert_many(collection, docs).await)
    }

    /// Inserts `docs`, then `salts` (the salts of their commitments), then `seal`, the seal
    /// covering them: on SQLite in one transaction, so the records are never stored without
    /// their seal (and one commit serves both); on MongoDB in that order, so a seal is never
    /// stored before the salts it needs. Idempotent by `_id` like
    /// [`insert_raw_documents`](Self::insert_raw_documents), so a failed call is simply repeated.
    pub async fn insert_raw_documents_sealed(
        &self,
        collection: Collection,
        docs: Vec<RawDocumentBuf>,
        salts: Vec<RawDocumentBuf>,
        seal: RawDocumentBuf,
    ) -> StoreResult<u64> {
        if let Some(d) = docs
            .iter()
            .find(|d| d.as_bytes().len() > MAX_DOCUMENT_BYTES)
        {
            return Err(StoreError::TooLarge {
                collection,
                size: d.as_bytes().len(),
            });
        }
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.insert_many_sealed(collection, docs, salts, seal).await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(s) => {
                let n = if docs.is_empty() {
                    0
                } else {
                    s.insert_many(collection, docs).await?
                };
                if !salts.is_empty() {
                    s.insert_many(Collection::Salt, salts).await?;
                }
                s.insert_many(Collection::Seal, vec![seal]).await?;
                Ok(n)
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.insert_many_sealed(collection, docs, salts, seal).await,
        }
    }

    /// Inserts one typed document (idempotent by `_id`).
    pub async fn insert<T: AuditDocument>(&self, doc: &T) -> StoreResult<u64> {
        self.insert_raw_documents(T::COLLECTION, vec![encode(doc)?])
            .await
    }

    /// Inserts typed documents in one batch (idempotent by `_id`).
    pub async fn insert_all<T: AuditDocument>(&self, docs: &[T]) -> StoreResult<u64> {
        let docs = docs.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        self.insert_raw_documents(T::COLLECTION, docs).await
    }

    /// Stores the process unless one with the same `(pid, machine, creation_time)` exists, atomically,
    /// and returns the stored one (so concurrent first calls all get the same id).
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

    /// The stored bytes of the documents matching `opts`.
    pub(crate) async fn find_bytes(
        &self,
        collection: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<RawDocumentBuf>> {
        dispatch!(self, s => s.find_bytes(collection, opts).await)
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
        self.for_each_raw_batch(collection, filter, batch, |raw| {
            let docs = raw
                .iter()
                .map(|d| d.to_document().map_err(|e| StoreError::Raw(e.to_string())))
                .collect::<StoreResult<Vec<_>>>()?;
            f(docs)
        })
        .await
    }

    /// Replaces the stored document that has `doc`'s `_id` by `doc`, atomically; `false` when
    /// there is none. Only the erasure of personal data uses it: audit records are otherwise
    /// never changed.
    pub async fn replace_bytes(
        &self,
        collection: Collection,
        doc: RawDocumentBuf,
    ) -> StoreResult<bool> {
        dispatch!(self, s => s.replace_bytes(collection, doc).await)
    }

    /// Replaces the stored record whose bytes are `old` by `new` (same `_id`): found by its id
    /// and its bytes together, so a row whose `id` copy was swapped with another's is never the
    /// one replaced; `false` when no row holds those bytes. What an erasure uses.
    pub(crate) async fn replace_stored(
        &self,
        collection: Collection,
        old: &RawDocumentBuf,
        new: RawDocumentBuf,
    ) -> StoreResult<bool> {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.replace_stored(collection, old, new).await,
            // The documents are the bytes: `_id` is the truth.
            #[cfg(feature = "mongodb")]
            Store::Mongo(s) => {
                let _ = old;
                s.replace_bytes(collection, new).await
            }
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.replace_stored(collection, old, new).await,
        }
    }

    /// Visits the stored bytes of every matching document in batches of `batch` (by ascending
    /// `_id`), never holding more than one batch in memory.
    pub async fn for_each_raw_batch<F>(
        &self,
        collection: Collection,
        filter: &Filter,
        batch: u64,
        mut f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<RawDocumentBuf>) -> StoreResult<()>,
    {
        let mut last: Option<Bson> = None;
        let mut total = 0;
        loop {
            let mut parts = vec![filter.clone()];
            if let Some(id) = last.take() {
                parts.push(Filter::Cmp("_id".into(), CmpOp::Gt, id));
            }
            let opts = FindOptions::new(Filter::And(parts))
                .sort("_id", Order::Asc)
                .window(0, Some(batch));
            let docs = dispatch!(self, s => s.find_bytes(collection, &opts).await)?;
            let n = docs.len() as u64;
            if n == 0 {
                return Ok(total);
            }
            last = docs
                .last()
                .and_then(|d| d.get("_id").ok().flatten())
                .and_then(|v| Bson::try_from(v.to_raw_bson()).ok());
            total += n;
            f(docs)?;
            if n < batch || last.is_none() {
                return Ok(total);
            }
        }
    }

    /// Visits the documents whose *stored bytes* match `filter`, in batches of `batch`. On SQLite
    /// every path is read from the bytes, not from the indexed copies beside them (which no seal
    /// covers), so an edited copy can neither hide a record nor put one in; it reads the whole
    /// table. On MongoDB the documents are the bytes. For the commands that change records.
    pub(crate) async fn for_each_stored<F>(
        &self,
        collection: Collection,
        filter: &Filter,
        batch: u64,
        f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<RawDocumentBuf>) -> StoreResult<()>,
    {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.for_each_stored(collection, filter, batch, f).await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(_) => self.for_each_raw_batch(collection, filter, batch, f).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.for_each_stored(collection, filter, batch, f).await,
        }
    }

    /// How many documents match `filter` by their stored bytes (on SQLite found through the
    /// indexed copies, and each checked against its bytes): what a removal will take.
    pub(crate) async fn count_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.count_stored(c, filter).await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(s) => s.count(c, filter).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.count_stored(c, filter).await,
        }
    }

    /// Removes the documents that match `filter` by their stored bytes, as
    /// [`count_stored`](Self::count_stored) counts them, with the salts of their commitments;
    /// returns how many documents. (A row whose indexed copy was edited out of the range stays,
    /// and `audit verify` reports the copy.)
    pub(crate) async fn prune_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        dispatch!(self, s => s.prune_stored(c, filter).await)
    }

    #[cfg(feature = "embedded-store")]
    /// Visits every stored record of `collection` as verification reads it ([`RecordDigest`]:
    /// worked out next to the bytes, which never leave the store's worker unless `keep_bytes`),
    /// in batches of `batch`: on SQLite every row by rowid, on PostgreSQL by key, on MongoDB
    /// through one cursor in `_id` order — whatever the copies beside the bytes say.
    pub(crate) async fn scan_records<F>(
        &self,
        collection: Collection,
        batch: u64,
        keep_bytes: bool,
        f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<RecordDigest>) -> StoreResult<()>,
    {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.scan_records(collection, batch, keep_bytes, f).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.scan_records(collection, batch, keep_bytes, f).await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(s) => s.scan_records(collection, batch, keep_bytes, f).await,
        }
    }

    /// What is wrong with the store's structure, in words, for verification: anything that
    /// could make what the searches read differ from what verification reads (SQLite: triggers,
    /// views, tables or indexes the store does not make, index contents that disagree with their
    /// table (with `deep`); PostgreSQL: triggers, rules, row-level security, tables replaced;
    /// MongoDB: a collection replaced by a view).
    #[cfg(feature = "embedded-store")]
    pub(crate) async fn structure_findings(&self, deep: bool) -> StoreResult<Vec<String>> {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.structure_findings(deep).await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(s) => s.structure_findings().await,
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.structure_findings().await,
        }
    }

    /// Before an erasure (SQLite: freed space is zeroed from now on).
    pub(crate) async fn begin_erasure(&self) -> StoreResult<()> {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.begin_erasure().await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Store::Postgres(_) => Ok(()),
        }
    }

    /// After an erasure (SQLite: the write-ahead log checkpointed and truncated); `false` when
    /// old pages may remain in the store's files.
    pub(crate) async fn finish_erasure(&self) -> StoreResult<bool> {
        match self {
            #[cfg(feature = "embedded-store")]
            Store::Sqlite(s) => s.finish_erasure().await,
            #[cfg(feature = "mongodb")]
            Store::Mongo(_) => Ok(true),
            #[cfg(feature = "postgres")]
            Store::Postgres(s) => s.finish_erasure().await,
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
        // The seals' own index is the store's business, not the original's: not reported.
        self.ensure_index_specs(Collection::Seal, &default_indexes(Collection::Seal))
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_and_permanent_store_errors() {
        let too_large = StoreError::TooLarge {
            collection: Collection::Access,
            size: MAX_DOCUMENT_BYTES + 1,
        };
        assert!(too_large.is_permanent());
        assert!(StoreError::Raw("no _id".into()).is_permanent());
        assert!(!StoreError::Worker("panicked".into()).is_permanent());
        assert!(!StoreError::Io(std::io::Error::other("disk")).is_permanent());
    }

    #[cfg(feature = "embedded-store")]
    #[test]
    fn sqlite_busy_and_locked_pass_too_big_does_not() {
        let sqlite = |code| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(!sqlite(rusqlite::ffi::SQLITE_BUSY).is_permanent());
        assert!(!sqlite(rusqlite::ffi::SQLITE_LOCKED).is_permanent());
        assert!(!sqlite(rusqlite::ffi::SQLITE_IOERR).is_permanent());
        assert!(sqlite(rusqlite::ffi::SQLITE_TOOBIG).is_permanent());
        assert!(sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_permanent());
    }

    #[cfg(feature = "mongodb")]
    #[test]
    fn mongodb_refusals_are_permanent_and_failovers_pass() {
        use mongodb::error::{CommandError, Error, ErrorKind, WriteError, WriteFailure};
        let command = |code: i32| {
            let c: CommandError =
                bson::from_document(bson::doc! { "code": code, "codeName": "x", "errmsg": "m" })
                    .unwrap();
            StoreError::from(Error::from(ErrorKind::Command(c)))
        };
        let write = |code: i32| {
            let w: WriteError =
                bson::from_document(bson::doc! { "code": code, "errmsg": "m" }).unwrap();
            StoreError::from(Error::from(ErrorKind::Write(WriteFailure::WriteError(w))))
        };
        assert!(command(10334).is_permanent(), "document too large");
        assert!(!command(189).is_permanent(), "primary stepped down");
        assert!(!command(424_242).is_permanent(), "unknown: retried");
        assert!(write(52).is_permanent(), "a `$` field name");
        assert!(!write(11602).is_permanent(), "interrupted by a failover");
        let io = Error::from(ErrorKind::Io(std::sync::Arc::new(std::io::Error::other(
            "reset",
        ))));
        assert!(!StoreError::from(io).is_permanent());
    }
}
