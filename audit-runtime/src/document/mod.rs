//! The three audit documents — [`Access`], [`Process`] and [`ModelAction`] — and their embedded parts.
//!
//! Field names, nesting and collection names are those of django-audit-tools, so documents written by
//! the original deserialise here and ours stay readable by its schema. Two deliberate departures, both
//! where the original lost data: a user id may be a string and process creation times keep their
//! full (millisecond, the BSON limit) precision in UTC.
//!
//! Every document and embedded document has [`items`](Items::items): its fields in declaration order,
//! nulls omitted, as the original's `to_mongo().items()` did.

mod access;
mod model_action;
mod process;
pub(crate) mod serde_util;

pub use access::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
    UserId, UserLookup,
};
pub use model_action::{
    Action, InstanceLookup, ModelAction, ModelActionContent, ModelActionInstance, ModelActionModel,
};
pub use process::Process;

use bson::{Bson, Document};
use serde::Serialize;

/// Name of the collection (MongoDB) or table (SQLite) holding [`Access`] documents.
pub(crate) const ACCESS_COLLECTION: &str = "audit_access";
/// Name of the collection (MongoDB) or table (SQLite) holding [`Process`] documents.
pub(crate) const PROCESS_COLLECTION: &str = "audit_process";
/// Name of the collection (MongoDB) or table (SQLite) holding [`ModelAction`] documents.
pub(crate) const MODEL_ACTION_COLLECTION: &str = "audit_model_action";
/// The collection of the hash chain that makes edits to the trail evident.
pub const SEAL_COLLECTION: &str = "audit_seal";
/// The collection of the random salts that the seals' record commitments are made with, one per
/// sealed record, kept apart from the seals so that an erasure can destroy a record's salt (and
/// with it any way to test a guess of what the record held) without touching a seal.
pub(crate) const SALT_COLLECTION: &str = "audit_salt";

/// Ordered field listing of a document, nulls omitted (the original's `items()`).
pub trait Items {
    /// The fields in declaration order; `None` fields are left out, empty maps and lists are kept.
    fn items(&self) -> Vec<(String, Bson)>;
}

/// The documents and their embedded documents list their fields through their serialised form
/// (every one of them serialises to a map).
macro_rules! items_through_serde {
    ($($ty:ty),* $(,)?) => {$(
        impl Items for $ty {
            fn items(&self) -> Vec<(String, Bson)> {
                match bson::to_document(self) {
                    Ok(doc) => doc.into_iter().collect(),
                    Err(_) => Vec::new(),
                }
            }
        }
    )*};
}

items_through_serde!(
    Access,
    AccessRequest,
    AccessResponse,
    AccessException,
    AccessTime,
    AccessView,
    AccessUser,
    ModelAction,
    ModelActionModel,
    ModelActionContent,
    ModelActionInstance,
    Process,
);

/// A stored document type: which collection it lives in and how to get its id.
pub trait AuditDocument:
    Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static
{
    /// The collection this document type is stored in.
    const COLLECTION: Collection;
    /// The document's `_id`.
    fn id(&self) -> bson::oid::ObjectId;
    /// Serialises to a BSON document with the exact stored field names.
    fn to_document(&self) -> Result<Document, bson::ser::Error> {
        bson::to_document(self)
    }
}

/// The three audit collections, and the seals that chain them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    /// `audit_access`
    Access,
    /// `audit_process`
    Process,
    /// `audit_model_action`
    ModelAction,
    /// `audit_seal`: the hash chain over the other three (see [`crate::seal`]); not one of the
    /// original's collections, so not in [`Collection::ALL`].
    Seal,
    /// `audit_salt`: the salt of each sealed record's commitment (see [`crate::seal`]); not one
    /// of the original's collections either.
    Salt,
}

impl Collection {
    /// The three audit collections, in the order setup creates them.
    pub const ALL: [Collection; 3] = [
        Collection::Access,
        Collection::Process,
        Collection::ModelAction,
    ];

    /// The exact collection (or table) name.
    pub const fn name(self) -> &'static str {
        match self {
            Collection::Access => ACCESS_COLLECTION,
            Collection::Process => PROCESS_COLLECTION,
            Collection::ModelAction => MODEL_ACTION_COLLECTION,
            Collection::Seal => SEAL_COLLECTION,
            Collection::Salt => SALT_COLLECTION,
        }
    }

    /// True for the three collections of audit records (what seals cover), false for the seals
    /// and the salts.
    pub const fn is_record(self) -> bool {
        matches!(
            self,
            Collection::Access | Collection::Process | Collection::ModelAction
        )
    }

    /// The date field that orders this collection and that ranged deletes apply to.
    pub const fn date_field(self) -> &'static str {
        match self {
            Collection::Access => "time.request",
            Collection::Process => "creation_time",
            Collection::ModelAction => "timestamp",
            Collection::Seal => "time",
            // A salt has no date of its own; its `_id` is the record's.
            Collection::Salt => "_id",
        }
    }
}

impl std::fmt::Display for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Formats a datetime the way Python's `str(datetime)` did in the original's strings
/// (`2016-01-15 23:24:00`, with microseconds only when there are some).
pub(crate) fn python_datetime(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}
