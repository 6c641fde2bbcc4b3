//! How the seals commit to a stored record, as plain data and pure functions: the salted SHA-256
//! of its exact bytes, where a salt document keeps the salt, and the date a record is ordered
//! by. The writer (through the seal module) makes commitments; the stores and verification
//! recompute them. Nothing here touches a store.
//!
//! A commitment is the SHA-256 of the record's bytes followed by a random 32-byte salt. The salt
//! lives apart from the seal, in `audit_salt`, so that an erasure can destroy it: a plain hash of
//! the bytes would let anyone test a guess of what an erased record held (guess the name, the
//! address, the user agent; hash; compare).

use crate::document::Collection;
use bson::raw::{RawBsonRef, RawDocument};
use sha2::{Digest, Sha256};

/// The `commit` field of batch seals whose record entries are salted commitments, except those of
/// `audit_process`: a process document is never erased, holds nothing of a user, and every
/// writer of the process seals the same one, so it is committed to by the SHA-256 of its bytes
/// ([`is_salted`]). Batch seals of earlier versions have no `commit` field: all their entries
/// hold the SHA-256 of the bytes alone.
pub const SALTED: &str = "salted-sha256";

/// The length of a record's salt.
pub const SALT_LEN: usize = 32;

/// Whether the entry of a record of collection `c` (its name) in a batch seal whose `commit`
/// field is `commit` is a salted commitment.
pub fn is_salted(commit: Option<&str>, c: &str) -> bool {
    commit == Some(SALTED) && c != Collection::Process.name()
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A record's commitment: SHA-256 of its bytes followed by `salt`, or of the bytes alone when it
/// has no salt (seals of earlier versions, process documents, and the state an erasure leaves,
/// which holds nothing to guess). The salt comes last so that one pass over the bytes gives both
/// forms (verification needs both).
pub fn commitment(salt: Option<&[u8]>, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    if let Some(salt) = salt {
        h.update(salt);
    }
    h.finalize().into()
}

/// The plain SHA-256 of `bytes` and, with a salt, their salted commitment, in one pass.
#[cfg(feature = "embedded-store")]
pub(crate) fn both_commitments(salt: Option<&[u8]>, bytes: &[u8]) -> ([u8; 32], Option<[u8; 32]>) {
    let mut h = Sha256::new();
    h.update(bytes);
    let salted = salt.map(|s| {
        let mut h = h.clone();
        h.update(s);
        h.finalize().into()
    });
    (h.finalize().into(), salted)
}

/// The salt a salt document (`{_id, c, s}`) holds, if it is one.
pub fn salt_of(salt_doc: &RawDocument) -> Option<&[u8]> {
    match salt_doc.get("s").ok().flatten()? {
        RawBsonRef::Binary(b) if b.bytes.len() == SALT_LEN => Some(b.bytes),
        _ => None,
    }
}

/// The date a record is ordered and pruned by (`time.request`, `timestamp`, `creation_time`).
pub fn record_date(c: Collection, doc: &RawDocument) -> Option<bson::DateTime> {
    let mut cur = doc;
    let mut parts = c.date_field().split('.').peekable();
    while let Some(p) = parts.next() {
        match cur.get(p).ok().flatten()? {
            RawBsonRef::Document(d) if parts.peek().is_some() => cur = d,
            RawBsonRef::DateTime(t) if parts.peek().is_none() => return Some(t),
            _ => return None,
        }
    }
    None
}

/// A stored record as verification needs it, read from its bytes where they are (on the store's
/// worker, so the bytes never travel): its `_id`, its date, its commitments, and what the store
/// keeps beside the bytes that disagrees with them. (Verification keeps its index in SQLite, so
/// it needs the embedded store's feature.)
#[cfg(feature = "embedded-store")]
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordDigest {
    /// Where the row is when the store locates it by more than `_id` (SQLite's rowid).
    pub(crate) row: Option<i64>,
    /// Why the bytes are not a readable document, when they are not (then nothing else is set).
    pub(crate) malformed: Option<String>,
    /// The `_id`: an ObjectId's hex, anything else as relaxed Extended JSON.
    pub(crate) id: String,
    /// The record's date.
    pub(crate) date: Option<bson::DateTime>,
    /// The SHA-256 of the bytes.
    pub(crate) plain: [u8; 32],
    /// The commitment with the record's stored salt, when it has one.
    pub(crate) salted: Option<[u8; 32]>,
    /// The store's copies of values of the bytes that disagree with them: the column, what it
    /// holds, what the bytes say.
    pub(crate) mismatches: Vec<(String, String, String)>,
    /// The bytes themselves, when the scan was asked to keep them (the seals).
    pub(crate) bytes: Option<Vec<u8>>,
}

#[cfg(feature = "embedded-store")]
impl RecordDigest {
    /// The digest of the record of `c` stored as `bytes` with `salt`.
    pub(crate) fn of(c: Collection, bytes: &[u8], salt: Option<&[u8]>) -> RecordDigest {
        let doc = match RawDocument::from_bytes(bytes) {
            Ok(doc) => doc,
            Err(e) => {
                return RecordDigest {
                    malformed: Some(e.to_string()),
                    ..RecordDigest::default()
                }
            }
        };
        // Every record this library writes has an ObjectId `_id`; anything else was put there.
        let id = match doc.get("_id") {
            Ok(Some(RawBsonRef::ObjectId(o))) => o.to_hex(),
            Ok(Some(other)) => {
                return RecordDigest {
                    malformed: Some(format!(
                        "its `_id` is not an ObjectId ({:?})",
                        bson::Bson::try_from(other.to_raw_bson())
                            .map(|b| b.into_relaxed_extjson().to_string())
                            .unwrap_or_default()
                    )),
                    ..RecordDigest::default()
                }
            }
            Ok(None) => {
                return RecordDigest {
                    malformed: Some("it has no `_id`".into()),
                    ..RecordDigest::default()
                }
            }
            Err(e) => {
                return RecordDigest {
                    malformed: Some(e.to_string()),
                    ..RecordDigest::default()
                }
            }
        };
        let (plain, salted) = both_commitments(salt, bytes);
        RecordDigest {
            row: None,
            malformed: None,
            id,
            date: record_date(c, doc),
            plain,
            salted,
            mismatches: Vec::new(),
            bytes: None,
        }
    }
}
