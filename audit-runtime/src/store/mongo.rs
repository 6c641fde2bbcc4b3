//! The MongoDB store: the three collections in the configured database, through the official
//! `mongodb` driver. Filters become query documents ([`Filter::to_mongo`]); index names are the
//! driver's generated names, which are also mongoengine's, so an existing deployment's indexes are
//! recognised as already there.

use super::filter::{Filter, FindOptions};
use super::index::{EnsuredIndex, IndexInfo, IndexSpec};
use super::{StoreError, StoreResult};
use crate::document::{Collection, Process};
use bson::{doc, Document, RawDocumentBuf};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Database, IndexModel};

/// Server error code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// The MongoDB store. Clones share the driver's connection pool.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Connects to `uri` and uses `database`. The driver connects lazily; a ping here makes an
    /// unreachable or refusing server an error at startup rather than at the first write.
    pub async fn connect(uri: &str, database: &str) -> StoreResult<Self> {
        let client = Client::with_uri_str(uri).await?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 }).await?;
        Ok(MongoStore { db })
    }

    /// The database in use.
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn coll(&self, c: Collection) -> mongodb::Collection<Document> {
        self.db.collection(c.name())
    }

    pub(crate) async fn insert_many(
        &self,
        c: Collection,
        docs: Vec<RawDocumentBuf>,
    ) -> StoreResult<u64> {
        let n = docs.len() as u64;
        let coll = self.db.collection::<RawDocumentBuf>(c.name());
        match coll.insert_many(docs).ordered(false).await {
            Ok(r) => Ok(r.inserted_ids.len() as u64),
            Err(e) => match *e.kind {
                // An unordered insert stores every other document; the ones refused for a
                // duplicate `_id` were stored by an earlier attempt, which is what a retry wants.
                ErrorKind::InsertMany(ref f) => {
                    let errors = f.write_errors.as_deref().unwrap_or_default();
                    if f.write_concern_error.is_none()
                        && errors
                            .iter()
                            .all(|w| w.code == DUPLICATE_KEY && w.message.contains("_id_"))
                    {
                        Ok(n - errors.len() as u64)
                    } else if let Some(w) = errors.iter().find(|w| w.code == DUPLICATE_KEY) {
                        Err(StoreError::Duplicate {
                            collection: c,
                            detail: w.message.clone(),
                        })
                    } else {
                        Err(e.into())
                    }
                }
                _ => Err(e.into()),
            },
        }
    }

    pub(crate) async fn upsert_process(&self, p: &Process) -> StoreResult<Process> {
        let key = doc! {
            "pid": p.pid,
            "machine": &p.machine,
            "creation_time": bson::DateTime::from_chrono(p.creation_time),
        };
        let coll = self.db.collection::<Process>(Collection::Process.name());
        // Two first upserts racing on the unique index: one inserts, the other gets a duplicate
        // key error and then finds the winner's document.
        for _ in 0..3 {
            let res = coll
                .find_one_and_update(key.clone(), doc! { "$setOnInsert": bson::to_document(p)? })
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match res {
                Ok(Some(stored)) => return Ok(stored),
                Ok(None) => {}
                Err(e) if is_duplicate(&e) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(stored) = coll.find_one(key.clone()).await? {
                return Ok(stored);
            }
        }
        Err(StoreError::Raw("process upsert did not converge".into()))
    }

    pub(crate) async fn find(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        self.find_bytes(c, opts)
            .await?
            .iter()
            .map(|d| d.to_document().map_err(|e| StoreError::Raw(e.to_string())))
            .collect()
    }

    pub(crate) async fn count(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        Ok(self.coll(c).count_documents(filter.to_mongo()).await?)
    }

    pub(crate) async fn delete_many(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        Ok(self
            .coll(c)
            .delete_many(filter.to_mongo())
            .await?
            .deleted_count)
    }

    pub(crate) async fn drop_collection(&self, c: Collection) -> StoreResult<()> {
        Ok(self.coll(c).drop().await?)
    }

    pub(crate) async fn ensure_indexes(
        &self,
        c: Collection,
        specs: &[IndexSpec],
    ) -> StoreResult<Vec<EnsuredIndex>> {
        let existing: Vec<String> = self
            .list_indexes(c)
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect();
        let mut out = Vec::new();
        for spec in specs {
            let name = spec.name();
            let created = !existing.contains(&name);
            if created {
                let mut keys = Document::new();
                for (p, d) in &spec.keys {
                    keys.insert(p.clone(), *d);
                }
                let options = IndexOptions::builder()
                    .name(name.clone())
                    .unique(spec.unique.then_some(true))
                    .build();
                self.coll(c)
                    .create_index(IndexModel::builder().keys(keys).options(options).build())
                    .await
                    .map_err(|e| {
                        if is_duplicate(&e) {
                            StoreError::Duplicate {
                                collection: c,
                                detail: e.to_string(),
                            }
                        } else {
                            e.into()
                        }
                    })?;
            }
            out.push(EnsuredIndex {
                collection: c,
                name,
                created,
            });
        }
        Ok(out)
    }

    pub(crate) async fn list_indexes(&self, c: Collection) -> StoreResult<Vec<IndexInfo>> {
        let mut cursor = match self.coll(c).list_indexes().await {
            Ok(cursor) => cursor,
            // A collection that does not exist yet has no indexes.
            Err(e) if matches!(*e.kind, ErrorKind::Command(ref ce) if ce.code == 26) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        while cursor.advance().await? {
            let model = cursor.deserialize_current()?;
            let keys = model
                .keys
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_i32()
                            .or_else(|| v.as_i64().map(|i| i as i32))
                            .or_else(|| v.as_f64().map(|f| f as i32))
                            .unwrap_or(1),
                    )
                })
                .collect();
            let options = model.options.unwrap_or_default();
            out.push(IndexInfo {
                name: options.name.unwrap_or_default(),
                keys,
                unique: options.unique.unwrap_or(false),
            });
        }
        Ok(out)
    }

    pub(crate) async fn drop_index(&self, c: Collection, name: &str) -> StoreResult<bool> {
        let exists = self.list_indexes(c).await?.iter().any(|i| i.name == name);
        if exists {
            self.coll(c).drop_index(name).await?;
        }
        Ok(exists)
    }

    /// Replaces the document with `doc`'s `_id`; `false` when there is none.
    pub(crate) async fn replace_bytes(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
    ) -> StoreResult<bool> {
        let id = doc
            .get("_id")
            .map_err(|e| StoreError::Raw(e.to_string()))?
            .and_then(|v| bson::Bson::try_from(v.to_raw_bson()).ok())
            .ok_or_else(|| StoreError::Raw("document has no `_id`".into()))?;
        let coll = self.db.collection::<RawDocumentBuf>(c.name());
        let r = coll.replace_one(doc! { "_id": id }, doc).await?;
        Ok(r.matched_count == 1)
    }

    /// Deletes the documents matching `filter` and the salts of their commitments, a batch of
    /// ids at a time (the salts first: a salt without its record is harmless, a record without
    /// its salt would verify as modified); returns how many documents.
    pub(crate) async fn prune_stored(&self, c: Collection, filter: &Filter) -> StoreResult<u64> {
        const IDS_PER_ROUND: i64 = 10_000;
        let coll = self.db.collection::<Document>(c.name());
        let mut removed = 0;
        loop {
            let mut cursor = coll
                .find(filter.to_mongo())
                .projection(doc! { "_id": 1 })
                .limit(IDS_PER_ROUND)
                .await?;
            let mut ids = Vec::new();
            while cursor.advance().await? {
                if let Some(id) = cursor.deserialize_current()?.get("_id") {
                    ids.push(id.clone());
                }
            }
            if ids.is_empty() {
                return Ok(removed);
            }
            let these = doc! { "_id": { "$in": ids } };
            self.coll(Collection::Salt)
                .delete_many(these.clone())
                .await?;
            removed += coll.delete_many(these).await?.deleted_count;
        }
    }

    /// Every document of `c` as verification reads it, through one cursor in `_id` order (paging
    /// by `_id` would skip documents whose `_id` has another type than the last one seen), their
    /// salts looked up a batch at a time.
    #[cfg(feature = "embedded-store")]
    pub(crate) async fn scan_records<F>(
        &self,
        c: Collection,
        batch: u64,
        keep_bytes: bool,
        mut f: F,
    ) -> StoreResult<u64>
    where
        F: FnMut(Vec<crate::store::RecordDigest>) -> StoreResult<()>,
    {
        let coll = self.db.collection::<RawDocumentBuf>(c.name());
        let batch = batch.clamp(1, u32::MAX as u64) as usize;
        let mut cursor = coll
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .batch_size(batch as u32)
            .await?;
        let mut total = 0;
        let mut docs: Vec<RawDocumentBuf> = Vec::with_capacity(batch);
        loop {
            let more = cursor.advance().await?;
            if more {
                docs.push(cursor.current().to_raw_document_buf());
            }
            if docs.len() == batch || (!more && !docs.is_empty()) {
                let ids: Vec<bson::Bson> = docs
                    .iter()
                    .filter_map(|d| d.get("_id").ok().flatten())
                    .filter_map(|id| bson::Bson::try_from(id.to_raw_bson()).ok())
                    .collect();
                let salts: std::collections::HashMap<String, Vec<u8>> = self
                    .salts_for(ids)
                    .await?
                    .into_iter()
                    .map(|(id, salt)| (id.into_relaxed_extjson().to_string(), salt))
                    .collect();
                let records = std::mem::take(&mut docs)
                    .into_iter()
                    .map(|d| {
                        let salt = d
                            .get("_id")
                            .ok()
                            .flatten()
                            .and_then(|id| bson::Bson::try_from(id.to_raw_bson()).ok())
                            .and_then(|id| salts.get(&id.into_relaxed_extjson().to_string()));
                        let mut digest = crate::store::RecordDigest::of(
                            c,
                            d.as_bytes(),
                            salt.map(Vec::as_slice),
                        );
                        if keep_bytes {
                            digest.bytes = Some(d.into_bytes());
                        }
                        digest
                    })
                    .collect::<Vec<_>>();
                total += records.len() as u64;
                f(records)?;
            }
            if !more {
                return Ok(total);
            }
        }
    }

    /// What is wrong with the database's structure for verification: an audit collection that
    /// is a view (its documents would not be the stored ones).
    #[cfg(feature = "embedded-store")]
    pub(crate) async fn structure_findings(&self) -> StoreResult<Vec<String>> {
        let mut cursor = self.db.list_collections().await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            let spec = cursor.deserialize_current()?;
            let ours = [
                Collection::Access,
                Collection::Process,
                Collection::ModelAction,
                Collection::Seal,
                Collection::Salt,
            ]
            .iter()
            .any(|c| c.name() == spec.name);
            if ours
                && !matches!(
                    spec.collection_type,
                    mongodb::results::CollectionType::Collection
                )
            {
                out.push(format!(
                    "`{}` is a {:?}, not a collection: what it shows is not what is stored",
                    spec.name, spec.collection_type
                ));
            }
        }
        Ok(out)
    }

    /// The salts stored for `ids`, by `_id`.
    pub(crate) async fn salts_for(
        &self,
        ids: Vec<bson::Bson>,
    ) -> StoreResult<Vec<(bson::Bson, Vec<u8>)>> {
        let coll = self
            .db
            .collection::<RawDocumentBuf>(Collection::Salt.name());
        let mut cursor = coll.find(doc! { "_id": { "$in": ids } }).await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            let d = cursor.current();
            if let (Ok(Some(id)), Some(salt)) = (d.get("_id"), crate::commitment::salt_of(d)) {
                if let Ok(id) = bson::Bson::try_from(id.to_raw_bson()) {
                    out.push((id, salt.to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Like `find`, the documents as the server returns their bytes (not decoded).
    pub(crate) async fn find_bytes(
        &self,
        c: Collection,
        opts: &FindOptions,
    ) -> StoreResult<Vec<RawDocumentBuf>> {
        let coll = self.db.collection::<RawDocumentBuf>(c.name());
        let mut find = coll.find(opts.filter.to_mongo()).skip(opts.skip);
        if let Some(sort) = opts.mongo_sort() {
            find = find.sort(sort);
        }
        if let Some(limit) = opts.limit {
            find = find.limit(limit.min(i64::MAX as u64) as i64);
        }
        if let Some(t) = opts.max_time {
            find = find.max_time(t);
        }
        let limited = |e: mongodb::error::Error| time_limit(e, opts.max_time);
        let mut cursor = find.await.map_err(limited)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(limited)? {
            out.push(cursor.current().to_raw_document_buf());
        }
        Ok(out)
    }
}

// === time limits ===

/// The server's code for an operation stopped by its `maxTimeMS`.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// The server's "operation exceeded time limit" as [`StoreError::TimeLimit`].
fn time_limit(e: mongodb::error::Error, limit: Option<std::time::Duration>) -> StoreError {
    match (&*e.kind, limit) {
        (ErrorKind::Command(c), Some(limit)) if c.code == MAX_TIME_MS_EXPIRED => {
            StoreError::TimeLimit(limit)
        }
        _ => e.into(),
    }
}

impl MongoStore {
    /// [`count`](Self::count) under a time limit (`maxTimeMS`).
    pub(crate) async fn count_limited(
        &self,
        c: Collection,
        filter: &Filter,
        max_time: Option<std::time::Duration>,
    ) -> StoreResult<u64> {
        let coll = self.coll(c);
        let mut count = coll.count_documents(filter.to_mongo());
        if let Some(t) = max_time {
            count = count.max_time(t);
        }
        count.await.map_err(|e| time_limit(e, max_time))
    }

    /// The values at `paths` of every document matching `opts`: a projection, so the server
    /// sends only those fields.
    pub(crate) async fn find_values(
        &self,
        c: Collection,
        opts: &FindOptions,
        paths: &[&str],
    ) -> StoreResult<Vec<Vec<bson::Bson>>> {
        let mut projection = Document::new();
        for p in paths {
            projection.insert(*p, 1);
        }
        let coll = self.coll(c);
        let mut find = coll
            .find(opts.filter.to_mongo())
            .skip(opts.skip)
            .projection(projection);
        if let Some(sort) = opts.mongo_sort() {
            find = find.sort(sort);
        }
        if let Some(limit) = opts.limit {
            find = find.limit(limit.min(i64::MAX as u64) as i64);
        }
        if let Some(t) = opts.max_time {
            find = find.max_time(t);
        }
        let limited = |e: mongodb::error::Error| time_limit(e, opts.max_time);
        let mut cursor = find.await.map_err(limited)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(limited)? {
            let d: Document = cursor.deserialize_current()?;
            out.push(paths.iter().map(|p| value_at(&d, p)).collect());
        }
        Ok(out)
    }
}

/// The value at a dotted path, as `bson_get` gives it on SQLite: dates as milliseconds, a
/// sub-document or array as `true` (present), missing as null.
fn value_at(d: &Document, path: &str) -> bson::Bson {
    let mut cur = bson::Bson::Document(d.clone());
    for seg in path.split('.') {
        cur = match cur {
            bson::Bson::Document(mut doc) => doc.remove(seg).unwrap_or(bson::Bson::Null),
            _ => return bson::Bson::Null,
        };
    }
    match cur {
        bson::Bson::DateTime(t) => bson::Bson::Int64(t.timestamp_millis()),
        bson::Bson::Int32(i) => bson::Bson::Int64(i.into()),
        bson::Bson::Document(_) | bson::Bson::Array(_) => bson::Bson::Boolean(true),
        other => other,
    }
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}
