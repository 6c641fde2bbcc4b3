//! Verification of a sealed trail: every chain recomputed, every covered record re-hashed.
//!
//! It streams: seals and records are read in batches, and what the seals say about each record
//! (its hash and date) goes to a temporary SQLite index on disk, so memory does not grow with the
//! trail. Three passes:
//! 1. the seals, in `_id` order: each stream's sequence numbers must follow one another, each
//!    seal's `prev` must be the previous seal's hash, each seal's hash must match its content
//!    (and, with a key, its signature must be valid); batch seals fill the index, prune seals
//!    record the ranges removed legitimately, erasure seals replace a record's expected hash;
//! 2. the stored records: each is hashed and looked up — a different hash is `modified`, no seal
//!    at all is `inserted` (unless it is younger than the in-flight window, or dated before the
//!    date the operator gave as the start of sealing);
//! 3. the sealed records never seen in pass 2: `deleted`, unless a prune seal covers their date.

use super::{compute_seal_hash, record_date, sha256_hex, signature_is_valid, Head};
use crate::document::Collection;
use crate::store::{Filter, Store, StoreError};
use bson::oid::ObjectId;
use bson::raw::RawBsonRef;
use bson::{Bson, RawDocumentBuf};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::time::Duration;

/// What `verify` checks.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Every seal must carry a valid signature by this key.
    pub key: Option<VerifyingKey>,
    /// Only records dated from then (seals are always checked whole).
    pub from: Option<DateTime<Utc>>,
    /// Only records dated until then.
    pub to: Option<DateTime<Utc>>,
    /// Records younger than this may not be sealed yet: not reported as inserted.
    pub in_flight: Duration,
    /// Records dated before this with no seal are counted, not reported: a trail written before
    /// sealing was turned on. Whoever sets it accepts that records forged with an older date go
    /// unnoticed, so it is never assumed.
    pub accept_unsealed_before: Option<DateTime<Utc>>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            key: None,
            from: None,
            to: None,
            in_flight: Duration::from_secs(600),
            accept_unsealed_before: None,
        }
    }
}

/// The kinds of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A record's bytes differ from what its seal says.
    Modified,
    /// A sealed record is missing (and no prune seal covers it).
    Deleted,
    /// A record that no seal covers, older than the in-flight window.
    Inserted,
    /// A seal missing, reordered or altered.
    ChainBroken,
    /// A seal without a valid signature by the given key.
    BadSignature,
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FindingKind::Modified => "modified",
            FindingKind::Deleted => "deleted",
            FindingKind::Inserted => "inserted",
            FindingKind::ChainBroken => "chain_broken",
            FindingKind::BadSignature => "bad_signature",
        })
    }
}

/// One thing found wrong, with the ids that locate it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The record's collection (record findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The record's `_id` (record findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The seal's `_id` (seal findings; for record findings, the seal that covered it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// The stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The sequence number in the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Plain words.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<13}", self.kind.to_string())?;
        if let (Some(c), Some(id)) = (&self.collection, &self.id) {
            write!(f, " {c} {id}")?;
        }
        if let Some(stream) = &self.stream {
            write!(f, " stream {stream}")?;
        }
        if let Some(seq) = self.seq {
            write!(f, " seq {seq}")?;
        }
        if let Some(seal) = &self.seal {
            write!(f, " seal {seal}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What a verification went through.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Seals read.
    pub seals: u64,
    /// Records re-hashed.
    pub records: u64,
    /// Sealed records missing because a prune seal (drop, retention) removed them.
    pub pruned: u64,
    /// Records whose change an erasure seal accounts for.
    pub erased: u64,
    /// Records with no seal dated before `accept_unsealed_before`, accepted as written before
    /// sealing was turned on.
    pub unsealed_accepted: u64,
    /// Findings reported.
    pub findings: u64,
    /// The head of each stream verified.
    pub heads: Vec<HeadSummary>,
}

/// A stream's last seal, as verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeadSummary {
    /// The stream.
    pub stream: String,
    /// Its last sequence number.
    pub seq: i64,
    /// Its last seal's hash.
    pub hash: String,
}

impl From<&Head> for HeadSummary {
    fn from(h: &Head) -> Self {
        HeadSummary {
            stream: h.stream.to_hex(),
            seq: h.seq,
            hash: h.hash.clone(),
        }
    }
}

/// Why verification could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The temporary index failed.
    #[error("verification index: {0}")]
    Index(#[from] rusqlite::Error),
    /// The temporary index could not be created.
    #[error("verification index: {0}")]
    Io(#[from] std::io::Error),
}

fn id_key(v: Option<RawBsonRef<'_>>) -> String {
    match v {
        Some(RawBsonRef::ObjectId(o)) => o.to_hex(),
        Some(other) => Bson::try_from(other.to_raw_bson())
            .map(|b| b.into_relaxed_extjson().to_string())
            .unwrap_or_else(|_| "?".into()),
        None => "?".into(),
    }
}

/// The temporary on-disk index of what the seals say.
struct Index {
    conn: Connection,
    _dir: TempDir,
}

/// A private temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Index {
    fn new() -> Result<Index, VerifyError> {
        let dir = std::env::temp_dir().join(format!(
            "audit-verify-{}-{}",
            std::process::id(),
            ObjectId::new().to_hex()
        ));
        std::fs::create_dir(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let dir = TempDir(dir);
        let conn = Connection::open(dir.0.join("index.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             CREATE TABLE covered (c TEXT NOT NULL, id TEXT NOT NULL, h TEXT NOT NULL, t INTEGER,
                 seal TEXT NOT NULL, erased INTEGER NOT NULL DEFAULT 0, h_before_erasure TEXT,
                 seen INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (c, id)) WITHOUT ROWID;
             CREATE TABLE pruned (c TEXT NOT NULL, t_from INTEGER, t_to INTEGER NOT NULL);
             CREATE TABLE erasures (c TEXT NOT NULL, id TEXT NOT NULL, old TEXT NOT NULL,
                 new TEXT NOT NULL, seal TEXT NOT NULL, stream TEXT, seq INTEGER, t INTEGER);",
        )?;
        Ok(Index { conn, _dir: dir })
    }
}

/// Verifies every chain and every covered record of `store`; each finding goes to `report` as it
/// is found, and `progress` is told how many seals and records were read so far.
pub async fn verify(
    store: &Store,
    opts: &VerifyOptions,
    mut report: impl FnMut(&Finding),
    mut progress: impl FnMut(u64),
) -> Result<Summary, VerifyError> {
    let index = Index::new()?;
    let mut summary = Summary::default();
    let mut heads: HashMap<ObjectId, Head> = HashMap::new();
    let mut order: Vec<ObjectId> = Vec::new();
    let mut seen = 0u64;
    let mut emit = |f: Finding, summary: &mut Summary| {
        summary.findings += 1;
        report(&f);
    };

    // 1. The seals.
    let mut failure: Option<VerifyError> = None;
    store
        .for_each_raw_batch(Collection::Seal, &Filter::all(), 500, |seals| {
            let tx = match index.conn.unchecked_transaction() {
                Ok(tx) => tx,
                Err(e) => {
                    failure = Some(e.into());
                    return Ok(());
                }
            };
            for seal in &seals {
                summary.seals += 1;
                if let Err(e) = check_seal(seal, opts, &tx, &mut heads, &mut order, &mut |f| {
                    emit(f, &mut summary)
                }) {
                    failure = Some(e);
                }
            }
            if let Err(e) = tx.commit() {
                failure = Some(e.into());
            }
            seen += seals.len() as u64;
            progress(seen);
            Ok(())
        })
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }

    // The erasures, in the order they were sealed.
    {
        let mut changes = index
            .conn
            .prepare("SELECT c, id, old, new, seal, stream, seq FROM erasures ORDER BY t, rowid")?;
        let mut update = index.conn.prepare(
            "UPDATE covered SET h = ?4, h_before_erasure = ?3, erased = 1
             WHERE c = ?1 AND id = ?2 AND h = ?3",
        )?;
        let mut rows = changes.query([])?;
        while let Some(r) = rows.next()? {
            let (c, id, old, new): (String, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if update.execute(params![c, id, old, new])? == 0 {
                emit(
                    Finding {
                        kind: FindingKind::ChainBroken,
                        collection: Some(c),
                        id: Some(id),
                        seal: Some(r.get(4)?),
                        stream: r.get(5)?,
                        seq: r.get(6)?,
                        detail: "an erasure names a record state that no seal recorded".into(),
                    },
                    &mut summary,
                );
            }
        }
    }

    // 2. The records.
    let in_flight_start =
        Utc::now() - chrono::Duration::from_std(opts.in_flight).unwrap_or(chrono::Duration::MAX);
    let in_flight_start = bson::DateTime::from_chrono(in_flight_start);
    let accept_before = opts.accept_unsealed_before.map(bson::DateTime::from_chrono);
    for c in Collection::ALL {
        let mut parts = Vec::new();
        if let Some(from) = opts.from {
            parts.push(Filter::gte(c.date_field(), from));
        }
        if let Some(to) = opts.to {
            parts.push(Filter::lte(c.date_field(), to));
        }
        let filter = if parts.is_empty() {
            Filter::all()
        } else {
            Filter::And(parts)
        };
        store
            .for_each_raw_batch(c, &filter, 1000, |docs| {
                let result = (|| -> rusqlite::Result<()> {
                    let tx = index.conn.unchecked_transaction()?;
                    {
                        let mut find =
                            tx.prepare_cached("SELECT h, seal, h_before_erasure FROM covered WHERE c = ?1 AND id = ?2")?;
                        let mut mark =
                            tx.prepare_cached("UPDATE covered SET seen = 1 WHERE c = ?1 AND id = ?2")?;
                        for doc in &docs {
                            summary.records += 1;
                            let id = id_key(doc.get("_id").ok().flatten());
                            let hash = sha256_hex(doc.as_bytes());
                            let sealed: Option<(String, String, Option<String>)> = find
                                .query_row(params![c.name(), id], |r| {
                                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                                })
                                .optional()?;
                            match sealed {
                                Some((expected, seal, before_erasure)) => {
                                    mark.execute(params![c.name(), id])?;
                                    // An erasure is sealed before it is applied: a record still
                                    // in its sealed state before the erasure is fine too.
                                    if expected != hash
                                        && before_erasure.as_deref() != Some(hash.as_str())
                                    {
                                        emit(
                                            Finding {
                                                kind: FindingKind::Modified,
                                                collection: Some(c.name().into()),
                                                id: Some(id),
                                                seal: Some(seal),
                                                stream: None,
                                                seq: None,
                                                detail: "the stored bytes differ from the sealed hash".into(),
                                            },
                                            &mut summary,
                                        );
                                    }
                                }
                                None => {
                                    let date = record_date(c, doc);
                                    if date.is_some_and(|t| t >= in_flight_start) {
                                        continue;
                                    }
                                    if date.zip(accept_before).is_some_and(|(t, a)| t < a) {
                                        summary.unsealed_accepted += 1;
                                        continue;
                                    }
                                    emit(
                                        Finding {
                                            kind: FindingKind::Inserted,
                                            collection: Some(c.name().into()),
                                            id: Some(id),
                                            seal: None,
                                            stream: None,
                                            seq: None,
                                            detail: "no seal covers this record".into(),
                                        },
                                        &mut summary,
                                    );
                                }
                            }
                        }
                    }
                    tx.commit()
                })();
                seen += docs.len() as u64;
                progress(seen);
                result.map_err(|e| StoreError::Raw(format!("verification index: {e}")))
            })
            .await?;
    }

    // 3. Sealed records never seen.
    let from = opts.from.map(|t| t.timestamp_millis());
    let to = opts.to.map(|t| t.timestamp_millis());
    let mut missing = index.conn.prepare(
        "SELECT c, id, seal, t, EXISTS (SELECT 1 FROM pruned p WHERE p.c = covered.c
             AND covered.t IS NOT NULL AND (p.t_from IS NULL OR covered.t >= p.t_from)
             AND covered.t <= p.t_to)
         FROM covered WHERE seen = 0
             AND (?1 IS NULL OR t >= ?1) AND (?2 IS NULL OR t <= ?2)",
    )?;
    let mut rows = missing.query(params![from, to])?;
    while let Some(row) = rows.next()? {
        if row.get::<_, bool>(4)? {
            summary.pruned += 1;
            continue;
        }
        emit(
            Finding {
                kind: FindingKind::Deleted,
                collection: Some(row.get(0)?),
                id: Some(row.get(1)?),
                seal: Some(row.get(2)?),
                stream: None,
                seq: None,
                detail: "a sealed record is missing".into(),
            },
            &mut summary,
        );
    }
    summary.erased =
        index
            .conn
            .query_row("SELECT COUNT(*) FROM covered WHERE erased = 1", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
    summary.heads = order
        .iter()
        .filter_map(|s| heads.get(s))
        .map(HeadSummary::from)
        .collect();
    Ok(summary)
}

/// Pass 1 for one seal: the chain, the signature, and what it says about records.
fn check_seal(
    seal: &RawDocumentBuf,
    opts: &VerifyOptions,
    tx: &rusqlite::Transaction<'_>,
    heads: &mut HashMap<ObjectId, Head>,
    order: &mut Vec<ObjectId>,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), VerifyError> {
    let seal_id = id_key(seal.get("_id").ok().flatten());
    let stream = seal.get_object_id("stream").ok();
    let seq = seal.get_i64("seq").ok();
    let finding = |kind, detail: String| Finding {
        kind,
        collection: None,
        id: None,
        seal: Some(seal_id.clone()),
        stream: stream.map(|s| s.to_hex()),
        seq,
        detail,
    };
    let stored_hash = seal.get_str("hash").unwrap_or("").to_owned();
    match compute_seal_hash(seal) {
        Ok(h) if h == stored_hash => {}
        _ => emit(finding(
            FindingKind::ChainBroken,
            "the seal was altered: its hash does not match its content".into(),
        )),
    }
    if let Some(key) = &opts.key {
        if !signature_is_valid(seal, key) {
            let detail = if seal.get_str("sig").is_ok() {
                "the signature is not valid for the given key"
            } else {
                "the seal is not signed"
            };
            emit(finding(FindingKind::BadSignature, detail.into()));
        }
    }
    let (Some(stream), Some(seq)) = (stream, seq) else {
        emit(finding(
            FindingKind::ChainBroken,
            "the seal has no stream or sequence number".into(),
        ));
        return Ok(());
    };
    let prev = seal.get_str("prev").unwrap_or("");
    let head = heads.entry(stream).or_insert_with(|| {
        order.push(stream);
        Head {
            stream,
            seq: -1,
            hash: String::new(),
        }
    });
    if seq != head.seq + 1 {
        emit(finding(
            FindingKind::ChainBroken,
            if seq > head.seq + 1 {
                format!(
                    "seals {} to {} of the stream are missing",
                    head.seq + 1,
                    seq - 1
                )
            } else {
                format!("out of order: seq {seq} after seq {}", head.seq)
            },
        ));
    } else if prev != head.hash {
        emit(finding(
            FindingKind::ChainBroken,
            "`prev` is not the hash of the stream's previous seal".into(),
        ));
    }
    *head = Head {
        stream,
        seq,
        hash: stored_hash,
    };

    let kind = seal.get_str("kind").unwrap_or("");
    match kind {
        "batch" => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO covered (c, id, h, t, seal) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (c, id) DO UPDATE SET h = excluded.h, t = excluded.t",
            )?;
            for entry in seal.get_array("records").into_iter().flatten().flatten() {
                let Some(e) = entry.as_document() else {
                    continue;
                };
                let (Ok(c), Some(h)) = (e.get_str("c"), super::entry_hash_hex(e)) else {
                    continue;
                };
                let t = e.get_datetime("t").ok().map(|t| t.timestamp_millis());
                insert.execute(params![
                    c,
                    id_key(e.get("id").ok().flatten()),
                    h,
                    t,
                    seal_id
                ])?;
            }
        }
        "prune" => {
            let mut insert =
                tx.prepare_cached("INSERT INTO pruned (c, t_from, t_to) VALUES (?1, ?2, ?3)")?;
            for range in seal.get_array("ranges").into_iter().flatten().flatten() {
                let Some(r) = range.as_document() else {
                    continue;
                };
                let (Ok(c), Ok(to)) = (r.get_str("c"), r.get_datetime("to")) else {
                    continue;
                };
                let from = r.get_datetime("from").ok().map(|t| t.timestamp_millis());
                insert.execute(params![c, from, to.timestamp_millis()])?;
            }
        }
        "erasure" => {
            // Applied once every seal is read: seals of different streams (the writer's, the
            // command's) are not ordered among themselves.
            let mut insert = tx.prepare_cached(
                "INSERT INTO erasures (c, id, old, new, seal, stream, seq, t)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let t = seal.get_datetime("time").ok().map(|t| t.timestamp_millis());
            for change in seal.get_array("changes").into_iter().flatten().flatten() {
                let Some(ch) = change.as_document() else {
                    continue;
                };
                let (Ok(c), Ok(old), Ok(new)) =
                    (ch.get_str("c"), ch.get_str("old"), ch.get_str("new"))
                else {
                    continue;
                };
                let id = id_key(ch.get("id").ok().flatten());
                insert.execute(params![c, id, old, new, seal_id, stream.to_hex(), seq, t])?;
            }
        }
        other => emit(finding(
            FindingKind::ChainBroken,
            format!("unknown seal kind `{other}`"),
        )),
    }
    Ok(())
}
