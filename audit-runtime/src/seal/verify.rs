//! Verification of a sealed trail: every chain recomputed, every stored record checked against
//! what the seals say of it.
//!
//! It streams: seals and records are read in batches, and what the seals say about each record
//! (its commitment, date and the seal that covered it) goes to a temporary SQLite index on disk,
//! so memory does not grow with the trail. Three passes:
//! 1. the seals, in `_id` order: each stream's sequence numbers must follow one another, each
//!    seal's `prev` must be the previous seal's hash, each seal's hash must match its content
//!    (and, with a key, its signature must be valid); batch seals fill the index, prune seals
//!    record the ranges removed legitimately (cut at their own time), erasure seals replace a
//!    record's expected commitment;
//! 2. every stored row, whatever the store's columns say: bytes that are not a document are
//!    `malformed`; a copy the store keeps of a value (SQLite's `id` and `"$path"` columns) that
//!    disagrees with the bytes is a `column_mismatch`; a document met a second time is a
//!    `duplicate`; a commitment that does not match is `modified`; no seal at all is `inserted`
//!    (unless it is dated inside the in-flight window, which ends a small clock skew after now,
//!    or before the date the operator gave as the start of sealing);
//! 3. the sealed records never seen in pass 2: `deleted`, unless a prune seal made after their
//!    batch seal covers their date — and no prune seal excuses more records than it states.
//!
//! Each stream's Merkle tree is rebuilt from the commitments its batch seals list, in order, and
//! must be what every seal states (size, root, the nodes it stores). Checkpoints kept outside the
//! database (`VerifyOptions::checkpoints`) are then held against the rebuilt trees: a stream
//! missing, a tree smaller than a checkpoint of it, or a different root at a checkpoint's size is
//! history removed or rewritten after the checkpoint was published, whoever holds the key.
//!
//! It opens nothing for writing: the store is opened read-only by the caller, and an empty trail
//! is an error, not a clean result (unless checkpoints say what it should hold: then each is a
//! finding).

use super::keys::{signature_is_valid, unhex};
use super::merkle::{self, Frontier, Hash};
use super::note::Checkpoint;
use super::tree::{self, Consistency};
use super::{compute_seal_hash, Head, CLOCK_SKEW};
use crate::commitment::is_salted;
use crate::document::Collection;
use crate::store::{RecordDigest, Store, StoreError};
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
    /// Unsealed records dated this long before now (up to [`CLOCK_SKEW`] after it) may not be
    /// sealed yet: not reported as inserted. A record dated later than that is.
    pub in_flight: Duration,
    /// Records dated before this with no seal are counted, not reported: a trail written before
    /// sealing was turned on. Whoever sets it accepts that records forged with an older date go
    /// unnoticed, so it is never assumed.
    pub accept_unsealed_before: Option<DateTime<Utc>>,
    /// Also check that every index agrees with its table, entry by entry (SQLite's `PRAGMA
    /// integrity_check`): a hand-edited index page can make a search miss or invent rows while
    /// the table is intact. It reads every index whole: several times slower.
    pub deep: bool,
    /// Checkpoints published earlier (read from the witness file with
    /// [`read_checkpoints`](crate::seal::read_checkpoints)): each stream's tree must still hold
    /// each of them.
    pub checkpoints: Vec<Checkpoint>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            key: None,
            from: None,
            to: None,
            in_flight: Duration::from_secs(600),
            accept_unsealed_before: None,
            deep: false,
            checkpoints: Vec::new(),
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
    /// A sealed record is missing (and no prune seal covers it), or more records are missing
    /// from a pruned range than its prune seal states.
    Deleted,
    /// A record that no seal covers, dated outside the in-flight window.
    Inserted,
    /// A seal missing, reordered or altered.
    ChainBroken,
    /// A seal without a valid signature by the given key.
    BadSignature,
    /// A copy of a stored value that the store keeps beside the bytes (SQLite's `id` column and
    /// its indexed `"$path"` columns, which the searches, the console and the commands read)
    /// disagrees with the bytes.
    ColumnMismatch,
    /// A document stored more than once (the same `_id` in several rows).
    Duplicate,
    /// Stored bytes that are not a document (or a document without an ObjectId `_id`).
    Malformed,
    /// The store's structure is not its own: a trigger, a view, a rule or a row-level policy on
    /// an audit table, a table or index definition the store does not make, or an index whose
    /// contents disagree with its table. What the searches read could then differ from what
    /// verification reads.
    Schema,
    /// A stream's tree is smaller than a checkpoint of it: its newest seals (and their records)
    /// were removed after the checkpoint was published.
    Truncated,
    /// A checkpoint names a stream of which no seal is stored.
    StreamMissing,
    /// A stream's tree does not extend a checkpoint of it: history older than the checkpoint
    /// was rewritten.
    Inconsistent,
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FindingKind::Modified => "modified",
            FindingKind::Deleted => "deleted",
            FindingKind::Inserted => "inserted",
            FindingKind::ChainBroken => "chain_broken",
            FindingKind::BadSignature => "bad_signature",
            FindingKind::ColumnMismatch => "column_mismatch",
            FindingKind::Duplicate => "duplicate",
            FindingKind::Malformed => "malformed",
            FindingKind::Schema => "schema",
            FindingKind::Truncated => "truncated",
            FindingKind::StreamMissing => "stream_missing",
            FindingKind::Inconsistent => "inconsistent",
        })
    }
}

/// One thing found wrong, with the ids that locate it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The record's collection (record findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The record's `_id` (record findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The column that disagrees with the stored bytes (`column_mismatch`): `id`, or the dotted
    /// path an indexed column copies (`user.id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The row (SQLite's rowid), where the record cannot be named by its `_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<i64>,
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

impl Finding {
    /// A finding of `kind` about nothing yet; the builder methods say what it locates.
    pub fn new(kind: FindingKind, detail: impl Into<String>) -> Finding {
        Finding {
            kind,
            collection: None,
            id: None,
            column: None,
            row: None,
            seal: None,
            stream: None,
            seq: None,
            detail: detail.into(),
        }
    }

    fn record(mut self, c: impl Into<String>, id: Option<String>) -> Finding {
        self.collection = Some(c.into());
        self.id = id;
        self
    }

    fn sealed_by(
        mut self,
        seal: Option<String>,
        stream: Option<String>,
        seq: Option<i64>,
    ) -> Finding {
        self.seal = seal;
        self.stream = stream;
        self.seq = seq;
        self
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<15}", self.kind.to_string())?;
        match (&self.collection, &self.id) {
            (Some(c), Some(id)) => write!(f, " {c} {id}")?,
            (Some(c), None) => write!(f, " {c}")?,
            _ => {}
        }
        if let Some(row) = self.row {
            write!(f, " row {row}")?;
        }
        if let Some(column) = &self.column {
            write!(f, " column {column}")?;
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
    /// Records read (rows, on SQLite: malformed ones and copies included).
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
    /// How many records its tree holds.
    pub size: u64,
}

impl From<&Head> for HeadSummary {
    fn from(h: &Head) -> Self {
        HeadSummary {
            stream: h.stream.to_hex(),
            seq: h.seq,
            hash: h.hash.clone(),
            size: h.tree.size(),
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
    /// The trail holds neither a seal nor a record: there is nothing to vouch for (a mistyped
    /// store, or one emptied whole).
    #[error("the trail is empty: no seal and no record to verify")]
    EmptyTrail,
    /// An option is out of range (an in-flight window longer than the calendar).
    #[error("{0}")]
    Option(String),
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
        // One thread uses it at a time: SQLite's own locking would only cost.
        let conn = Connection::open_with_flags(
            dir.0.join("index.db"),
            rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Up to 64 MiB of its pages stay in memory (about 700,000 records); a longer trail
        // spills to the file, so memory stays bounded. `h`: the 32 bytes the seal commits to; `scheme`: 1 when it is a salted commitment, 0
        // a plain hash; `st`: when the batch seal that covered the record was made;
        // `before_scheme` the scheme of `h_before_erasure`.
        conn.execute_batch(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA cache_size = -65536;
             CREATE TABLE covered (c TEXT NOT NULL, id TEXT NOT NULL, h BLOB NOT NULL,
                 scheme INTEGER NOT NULL, t INTEGER, seal TEXT NOT NULL, st INTEGER,
                 erased INTEGER NOT NULL DEFAULT 0, h_before_erasure BLOB, before_scheme INTEGER,
                 seen INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (c, id)) WITHOUT ROWID;
             CREATE TABLE pruned (rid INTEGER PRIMARY KEY, c TEXT NOT NULL, t_from INTEGER,
                 t_to INTEGER NOT NULL, ptime INTEGER NOT NULL, stated INTEGER NOT NULL,
                 excused INTEGER NOT NULL DEFAULT 0, seal TEXT NOT NULL, stream TEXT, seq INTEGER);
             CREATE INDEX pruned_by_time ON pruned (c, ptime);
             CREATE TABLE erasures (c TEXT NOT NULL, id TEXT NOT NULL, old BLOB NOT NULL,
                 new BLOB NOT NULL, seal TEXT NOT NULL, stream TEXT, seq INTEGER, t INTEGER);
             CREATE TABLE unsealed (c TEXT NOT NULL, id TEXT NOT NULL,
                 PRIMARY KEY (c, id)) WITHOUT ROWID;
             CREATE TABLE chain (stream TEXT NOT NULL, seq INTEGER NOT NULL, prev TEXT NOT NULL,
                 hash TEXT NOT NULL, seal TEXT NOT NULL, size INTEGER, root BLOB, nodes BLOB,
                 leaves BLOB);
             CREATE INDEX chain_order ON chain (stream, seq);",
        )?;
        Ok(Index { conn, _dir: dir })
    }
}

/// The moments that bound what pass 2 excuses.
struct Window {
    /// Unsealed records dated from here ...
    in_flight_start: bson::DateTime,
    /// ... up to here may still be on their way to a seal.
    latest: bson::DateTime,
    accept_before: Option<bson::DateTime>,
    from: Option<bson::DateTime>,
    to: Option<bson::DateTime>,
}

impl Window {
    fn new(opts: &VerifyOptions) -> Result<Window, VerifyError> {
        let now = Utc::now();
        let back = chrono::Duration::from_std(opts.in_flight)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .ok_or_else(|| {
                VerifyError::Option(format!(
                    "the in-flight window of {} s reaches before the earliest date there is",
                    opts.in_flight.as_secs()
                ))
            })?;
        let skew = chrono::Duration::from_std(CLOCK_SKEW).expect("a few minutes");
        Ok(Window {
            in_flight_start: bson::DateTime::from_chrono(back),
            latest: bson::DateTime::from_chrono(now + skew),
            accept_before: opts.accept_unsealed_before.map(bson::DateTime::from_chrono),
            from: opts.from.map(bson::DateTime::from_chrono),
            to: opts.to.map(bson::DateTime::from_chrono),
        })
    }

    fn outside_range(&self, date: Option<bson::DateTime>) -> bool {
        match date {
            Some(t) => self.from.is_some_and(|f| t < f) || self.to.is_some_and(|to| t > to),
            // A record without a date is checked whatever the range.
            None => false,
        }
    }
}

/// Verifies every chain and every stored record of `store` (open it with
/// [`Store::open_read_only`]); each finding goes to `report` as it is found, and `progress` is
/// told how many seals and records were read so far.
pub async fn verify(
    store: &Store,
    opts: &VerifyOptions,
    mut report: impl FnMut(&Finding),
    mut progress: impl FnMut(u64),
) -> Result<Summary, VerifyError> {
    let window = Window::new(opts)?;
    let index = Index::new()?;
    let mut summary = Summary::default();
    let mut heads: HashMap<ObjectId, Head> = HashMap::new();
    let mut order: Vec<ObjectId> = Vec::new();
    let mut seen = 0u64;
    let mut emit = |f: Finding, summary: &mut Summary| {
        summary.findings += 1;
        report(&f);
    };

    // 0. The store's structure: what the searches read must be what is read here.
    for problem in store.structure_findings(opts.deep).await? {
        emit(Finding::new(FindingKind::Schema, problem), &mut summary);
    }

    // 1. The seals, every stored one (each copy beside its bytes checked too).
    let mut failure: Option<VerifyError> = None;
    store
        .scan_records(Collection::Seal, 500, true, |seals| {
            let tx = match index.conn.unchecked_transaction() {
                Ok(tx) => tx,
                Err(e) => {
                    failure = Some(e.into());
                    return Ok(());
                }
            };
            for rec in &seals {
                summary.seals += 1;
                report_copies(Collection::Seal, rec, &mut |f| emit(f, &mut summary));
                let seal = match (
                    &rec.malformed,
                    rec.bytes.clone().map(RawDocumentBuf::from_bytes),
                ) {
                    (None, Some(Ok(seal))) => seal,
                    (why, _) => {
                        let mut f = Finding::new(
                            FindingKind::Malformed,
                            format!(
                                "the stored bytes are not a seal ({})",
                                why.clone().unwrap_or_else(|| "not a document".into())
                            ),
                        )
                        .record(Collection::Seal.name(), None);
                        f.row = rec.row;
                        emit(f, &mut summary);
                        continue;
                    }
                };
                if let Err(e) =
                    check_seal(&seal, opts, &tx, &mut order, &mut |f| emit(f, &mut summary))
                {
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
    let mut roots_at = RootsAt::new();
    check_chains(
        &index,
        &mut heads,
        &opts.checkpoints,
        &mut roots_at,
        &mut |f| emit(f, &mut summary),
    )?;
    check_checkpoints(store, &opts.checkpoints, &heads, &roots_at, &mut |f| {
        emit(f, &mut summary)
    })
    .await;
    apply_erasures(&index, &mut |f| emit(f, &mut summary))?;

    // 2. The records.
    for c in Collection::ALL {
        store
            .scan_records(c, 1000, false, |records| {
                let result = (|| -> rusqlite::Result<()> {
                    let tx = index.conn.unchecked_transaction()?;
                    for rec in &records {
                        summary.records += 1;
                        check_record(c, rec, &window, &tx, &mut summary, &mut emit)?;
                    }
                    tx.commit()
                })();
                seen += records.len() as u64;
                progress(seen);
                result.map_err(|e| StoreError::Raw(format!("verification index: {e}")))
            })
            .await?;
    }

    // 3. Sealed records never seen.
    missing(&index, &window, &mut summary, &mut emit)?;
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
    if summary.seals == 0 && summary.records == 0 && opts.checkpoints.is_empty() {
        return Err(VerifyError::EmptyTrail);
    }
    Ok(summary)
}

/// The roots of stream trees at the sizes the checkpoints name, as rebuilt from the seals.
type RootsAt = HashMap<(ObjectId, u64), Hash>;

/// Every stream's chain, in sequence order: each seal must follow the previous one (`seq` one
/// more, `prev` its hash); gaps, repeats and breaks are findings. Each stream's tree is rebuilt
/// from its batch seals' commitments and must be what each seal states. Fills the heads (their
/// trees as rebuilt), and the roots at the sizes of `checkpoints`.
fn check_chains(
    index: &Index,
    heads: &mut HashMap<ObjectId, Head>,
    checkpoints: &[Checkpoint],
    roots_at: &mut RootsAt,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), VerifyError> {
    let mut wanted: HashMap<ObjectId, Vec<u64>> = HashMap::new();
    for cp in checkpoints {
        if let Some(stream) = cp.stream() {
            wanted.entry(stream).or_default().push(cp.size);
        }
    }
    let mut stmt = index.conn.prepare(
        "SELECT stream, seq, prev, hash, seal, size, root, nodes, leaves FROM chain
         ORDER BY stream, seq, rowid",
    )?;
    let mut rows = stmt.query([])?;
    // Per stream: whether its seals state trees, and whether the rebuilt one still agrees (after
    // a first disagreement every later seal would disagree too: it is reported once).
    let mut trees: HashMap<ObjectId, (bool, bool)> = HashMap::new();
    while let Some(r) = rows.next()? {
        let (stream, seq, prev, hash, seal): (String, i64, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        let size: Option<i64> = r.get(5)?;
        let root: Option<Vec<u8>> = r.get(6)?;
        let nodes: Option<Vec<u8>> = r.get(7)?;
        let leaves: Option<Vec<u8>> = r.get(8)?;
        let Ok(stream_id) = ObjectId::parse_str(&stream) else {
            continue;
        };
        let head = heads.entry(stream_id).or_insert_with(|| Head {
            stream: stream_id,
            seq: -1,
            hash: String::new(),
            tree: Frontier::new(),
        });
        let finding = |detail: String| {
            Finding::new(FindingKind::ChainBroken, detail).sealed_by(
                Some(seal.clone()),
                Some(stream.clone()),
                Some(seq),
            )
        };
        if seq == head.seq {
            emit(finding(format!(
                "a second seal claims seq {seq} of the stream"
            )));
            continue;
        }
        let gap = seq > head.seq + 1;
        if gap {
            emit(finding(format!(
                "seals {} to {} of the stream are missing",
                head.seq + 1,
                seq - 1
            )));
        } else if prev != head.hash {
            emit(finding(
                "`prev` is not the hash of the stream's previous seal".into(),
            ));
        }
        head.seq = seq;
        head.hash = hash;

        // Whether a stream's seals state trees is decided by its first seal: every seal of a
        // stream is made by one version.
        let (has_tree, agrees) = trees
            .entry(stream_id)
            .or_insert((size.is_some() && root.is_some(), true));
        if gap {
            // Without the missing seals' leaves the tree cannot be rebuilt past the gap, which
            // is reported already.
            *agrees = false;
        }
        match (size, root) {
            (Some(size), Some(root)) if *has_tree => {
                if !*agrees {
                    continue;
                }
                let sizes = wanted.get(&stream_id);
                let mut made = Vec::new();
                let leaves = leaves.unwrap_or_default();
                for leaf in leaves.chunks(32) {
                    head.tree
                        .push(merkle::leaf_hash(leaf), &mut |n| made.extend_from_slice(&n));
                    if sizes.is_some_and(|s| s.contains(&head.tree.size())) {
                        roots_at.insert((stream_id, head.tree.size()), head.tree.root());
                    }
                }
                if leaves.len() % 32 != 0
                    || u64::try_from(size) != Ok(head.tree.size())
                    || root[..] != head.tree.root()[..]
                    || made != nodes.unwrap_or_default()
                {
                    *agrees = false;
                    emit(finding(
                        "the tree the seal states (size, root or stored nodes) is not the one \
                         the commitments of its stream make"
                            .into(),
                    ));
                }
            }
            (Some(_), Some(_)) => emit(finding(
                "the seal states a tree, though its stream's first seal states none".into(),
            )),
            (Some(_), None) | (None, Some(_)) => emit(finding(
                "the seal states half a tree (a size without a root, or a root without a size)"
                    .into(),
            )),
            (None, None) if *has_tree => emit(finding(
                "the seal states no tree, though its stream's earlier seals do".into(),
            )),
            (None, None) => {}
        }
    }
    Ok(())
}

/// Holds each checkpoint against the rebuilt trees, then against the consistency proof the
/// stored nodes give.
async fn check_checkpoints(
    store: &Store,
    checkpoints: &[Checkpoint],
    heads: &HashMap<ObjectId, Head>,
    roots_at: &RootsAt,
    emit: &mut dyn FnMut(Finding),
) {
    let mut readers = HashMap::new();
    for cp in checkpoints {
        let finding = |kind, detail: String| {
            let mut f = Finding::new(
                kind,
                format!("checkpoint of {} at size {}: {detail}", cp.origin, cp.size),
            );
            f.stream = cp.stream().map(|s| s.to_hex());
            f
        };
        let Some(head) = cp.stream().and_then(|s| heads.get(&s)) else {
            emit(finding(
                FindingKind::StreamMissing,
                "no seal of this stream is stored".into(),
            ));
            continue;
        };
        if head.tree.size() < cp.size {
            emit(finding(
                FindingKind::Truncated,
                format!(
                    "the stream's tree now holds {} records: its newest seals and records are gone",
                    head.tree.size()
                ),
            ));
            continue;
        }
        let root = if cp.size == 0 {
            Some(merkle::empty_root())
        } else {
            roots_at.get(&(head.stream, cp.size)).copied()
        };
        if root != Some(cp.root) {
            emit(finding(
                FindingKind::Inconsistent,
                "the stream's records make another root at this size: history older than the \
                 checkpoint was rewritten"
                    .into(),
            ));
            continue;
        }
        // One reader per stream: the checkpoints of a stream share the seals they read.
        let reader = match readers.entry(head.stream) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match tree::TreeReader::open(store, head.stream).await {
                    Ok(Some(r)) => e.insert(r),
                    Ok(None) => {
                        emit(finding(
                            FindingKind::Inconsistent,
                            "the stream's newest seal states no tree".into(),
                        ));
                        continue;
                    }
                    Err(err) => {
                        emit(finding(
                            FindingKind::Inconsistent,
                            format!("no consistency proof can be made from the seals: {err}"),
                        ));
                        continue;
                    }
                }
            }
        };
        match tree::extends(reader, cp).await {
            Ok(Consistency::Extends) => {}
            Ok(_) => emit(finding(
                FindingKind::Inconsistent,
                "the consistency proof made from the stored nodes does not check".into(),
            )),
            Err(e) => emit(finding(
                FindingKind::Inconsistent,
                format!("no consistency proof can be made from the seals: {e}"),
            )),
        }
    }
}

/// Applies the erasure seals, in the order they were sealed (seals of different streams, the
/// writer's and the commands', are not ordered among themselves, so this waits for all of them).
fn apply_erasures(index: &Index, emit: &mut dyn FnMut(Finding)) -> Result<(), VerifyError> {
    let mut changes = index
        .conn
        .prepare("SELECT c, id, old, new, seal, stream, seq FROM erasures ORDER BY t, rowid")?;
    // After a first erasure the record's state is the plain hash it left: a second erasure's
    // "before" is plain too.
    let mut update = index.conn.prepare(
        "UPDATE covered SET h = ?4, h_before_erasure = ?3,
             before_scheme = CASE erased WHEN 1 THEN 0 ELSE scheme END, erased = 1
         WHERE c = ?1 AND id = ?2 AND h = ?3",
    )?;
    // An erasure run again after one that was interrupted states some changes a second time.
    let mut already = index.conn.prepare(
        "SELECT EXISTS (SELECT 1 FROM covered WHERE c = ?1 AND id = ?2 AND erased = 1
             AND h = ?4 AND h_before_erasure = ?3)",
    )?;
    let mut rows = changes.query([])?;
    while let Some(r) = rows.next()? {
        let (c, id, old, new): (String, String, Vec<u8>, Vec<u8>) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if update.execute(params![c, id, old, new])? == 0
            && !already.query_row(params![c, id, old, new], |r| r.get::<_, bool>(0))?
        {
            emit(
                Finding::new(
                    FindingKind::ChainBroken,
                    "an erasure names a record state that no seal recorded",
                )
                .record(c, Some(id))
                .sealed_by(r.get(4)?, r.get(5)?, r.get(6)?),
            );
        }
    }
    Ok(())
}

/// A `column_mismatch` for each copy of the record that disagrees with its bytes.
fn report_copies(c: Collection, rec: &RecordDigest, emit: &mut dyn FnMut(Finding)) {
    for (column, held, says) in &rec.mismatches {
        let mut f = Finding::new(
            FindingKind::ColumnMismatch,
            format!("the column holds {held}, the stored bytes say {says}"),
        )
        .record(c.name(), Some(rec.id.clone()));
        f.column = Some(column.clone());
        f.row = rec.row;
        emit(f);
    }
}

/// Pass 2 for one stored record.
fn check_record(
    c: Collection,
    rec: &RecordDigest,
    window: &Window,
    tx: &rusqlite::Transaction<'_>,
    summary: &mut Summary,
    emit: &mut impl FnMut(Finding, &mut Summary),
) -> rusqlite::Result<()> {
    if let Some(why) = &rec.malformed {
        let mut f = Finding::new(
            FindingKind::Malformed,
            format!("the stored bytes are not a document ({why})"),
        )
        .record(c.name(), None);
        f.row = rec.row;
        emit(f, summary);
        return Ok(());
    }
    if window.outside_range(rec.date) {
        summary.records -= 1;
        return Ok(());
    }
    let id = &rec.id;
    report_copies(c, rec, &mut |f| emit(f, summary));
    type Sealed = (
        Vec<u8>,
        i64,
        String,
        Option<Vec<u8>>,
        Option<i64>,
        bool,
        i64,
    );
    let sealed: Option<Sealed> = tx
        .prepare_cached(
            "UPDATE covered SET seen = seen + 1 WHERE c = ?1 AND id = ?2
             RETURNING h, scheme, seal, h_before_erasure, before_scheme, erased, seen",
        )?
        .query_row(params![c.name(), id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let duplicate = |summary: &mut Summary, emit: &mut dyn FnMut(Finding, &mut Summary)| {
        let mut f = Finding::new(
            FindingKind::Duplicate,
            "the document is stored more than once: this row is another copy",
        )
        .record(c.name(), Some(id.clone()));
        f.row = rec.row;
        emit(f, summary);
    };
    let Some((expected, scheme, seal, before, before_scheme, erased, times)) = sealed else {
        let first = tx
            .prepare_cached("INSERT OR IGNORE INTO unsealed (c, id) VALUES (?1, ?2)")?
            .execute(params![c.name(), id])?
            == 1;
        if !first {
            duplicate(summary, emit);
            return Ok(());
        }
        let date = rec.date;
        if date.is_some_and(|t| t >= window.in_flight_start && t <= window.latest) {
            return Ok(());
        }
        if date.zip(window.accept_before).is_some_and(|(t, a)| t < a) {
            summary.unsealed_accepted += 1;
            return Ok(());
        }
        let detail = if date.is_some_and(|t| t > window.latest) {
            "no seal covers this record, and it is dated in the future"
        } else {
            "no seal covers this record"
        };
        emit(
            Finding::new(FindingKind::Inserted, detail).record(c.name(), Some(id.clone())),
            summary,
        );
        return Ok(());
    };
    if times > 1 {
        duplicate(summary, emit);
        return Ok(());
    }
    let matches = |h: &[u8], scheme: i64| match scheme {
        1 => rec.salted.is_some_and(|s| s[..] == *h),
        _ => rec.plain[..] == *h,
    };
    // An erasure is sealed before it is applied: a record still in its state before the
    // erasure is fine too. What an erasure leaves is committed to without a salt.
    let intact = if erased {
        matches(&expected, 0)
            || before
                .as_deref()
                .is_some_and(|b| matches(b, before_scheme.unwrap_or(scheme)))
    } else {
        matches(&expected, scheme)
    };
    if !intact {
        let detail = if !erased && scheme == 1 && rec.salted.is_none() {
            "the salt of the record's commitment is missing, so its bytes cannot be checked"
        } else {
            "the stored bytes differ from what the seal commits to"
        };
        emit(
            Finding::new(FindingKind::Modified, detail)
                .record(c.name(), Some(id.clone()))
                .sealed_by(Some(seal), None, None),
            summary,
        );
    }
    Ok(())
}

/// Pass 3: the sealed records never seen, each excused by the first prune seal that came after
/// its batch seal and covers its date, or reported; then every prune seal that excused more
/// records than it states.
fn missing(
    index: &Index,
    window: &Window,
    summary: &mut Summary,
    emit: &mut impl FnMut(Finding, &mut Summary),
) -> Result<(), VerifyError> {
    let from = window.from.map(|t| t.timestamp_millis());
    let to = window.to.map(|t| t.timestamp_millis());
    let mut unseen = index.conn.prepare(
        "SELECT c, id, seal, t, st FROM covered WHERE seen = 0
             AND (t IS NULL OR ((?1 IS NULL OR t >= ?1) AND (?2 IS NULL OR t <= ?2)))",
    )?;
    // The first prune seal after the record's batch seal that covers its date and still has
    // room (excused fewer than it states); when none has room, the first of them, which then
    // excuses more than it states and is reported.
    let mut prune = index.conn.prepare(
        "SELECT rid FROM pruned WHERE c = ?1 AND ptime > ?2 AND t_to >= ?3
             AND (t_from IS NULL OR t_from <= ?3) ORDER BY excused >= stated, ptime LIMIT 1",
    )?;
    let mut excuse = index
        .conn
        .prepare("UPDATE pruned SET excused = excused + 1 WHERE rid = ?1")?;
    let mut rows = unseen.query(params![from, to])?;
    while let Some(row) = rows.next()? {
        let (c, id, seal, t, st): (String, String, String, Option<i64>, Option<i64>) = (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        );
        let by = match (t, st) {
            (Some(t), Some(st)) => prune
                .query_row(params![c, st, t], |r| r.get::<_, i64>(0))
                .optional()?,
            _ => None,
        };
        if let Some(rid) = by {
            excuse.execute([rid])?;
            summary.pruned += 1;
            continue;
        }
        emit(
            Finding::new(FindingKind::Deleted, "a sealed record is missing")
                .record(c, Some(id))
                .sealed_by(Some(seal), None, None),
            summary,
        );
    }
    let mut over = index.conn.prepare(
        "SELECT c, stated, excused, seal, stream, seq FROM pruned WHERE excused > stated",
    )?;
    let mut rows = over.query([])?;
    while let Some(r) = rows.next()? {
        let (c, stated, excused): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        emit(
            Finding::new(
                FindingKind::Deleted,
                format!(
                    "the prune seal states {stated} records of {c} in its range, but {excused} \
                     sealed records there are missing"
                ),
            )
            .record(c, None)
            .sealed_by(r.get(3)?, r.get(4)?, r.get(5)?),
            summary,
        );
    }
    Ok(())
}

/// Pass 1 for one seal: the chain, the signature, and what it says about records.
fn check_seal(
    seal: &RawDocumentBuf,
    opts: &VerifyOptions,
    tx: &rusqlite::Transaction<'_>,
    order: &mut Vec<ObjectId>,
    emit: &mut dyn FnMut(Finding),
) -> Result<(), VerifyError> {
    let seal_id = id_key(seal.get("_id").ok().flatten());
    let stream = seal.get_object_id("stream").ok();
    let seq = seal.get_i64("seq").ok();
    let finding = |kind, detail: String| {
        Finding::new(kind, detail).sealed_by(Some(seal_id.clone()), stream.map(|s| s.to_hex()), seq)
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
    // The chain is checked once every seal is read (`check_chains`): the order seals are
    // stored in is not theirs (a seal replayed from the journal is stored after later ones).
    if !order.contains(&stream) {
        order.push(stream);
    }
    let tree = tree_fields(seal);
    if let (Some(key), Some((size, root, _))) = (&opts.key, &tree) {
        if !checkpoint_signature_is_valid(seal, *size, root, key) {
            emit(finding(
                FindingKind::BadSignature,
                "the seal's checkpoint signature (`note_sig`) is missing or not valid for the \
                 given key"
                    .into(),
            ));
        }
    }
    let leaves = (seal.get_str("kind") == Ok("batch")).then(|| leaves_of(seal));
    tx.prepare_cached(
        "INSERT INTO chain (stream, seq, prev, hash, seal, size, root, nodes, leaves)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        stream.to_hex(),
        seq,
        seal.get_str("prev").unwrap_or(""),
        stored_hash,
        seal_id,
        tree.as_ref().map(|t| t.0),
        tree.as_ref().map(|t| t.1.clone()),
        tree.as_ref().map(|t| t.2.clone()),
        leaves
    ])?;

    let time = seal.get_datetime("time").ok().map(|t| t.timestamp_millis());
    match seal.get_str("kind").unwrap_or("") {
        "batch" => {
            let commit = seal.get_str("commit").ok();
            let mut insert = tx.prepare_cached(
                "INSERT INTO covered (c, id, h, scheme, t, seal, st)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (c, id) DO UPDATE SET h = excluded.h, scheme = excluded.scheme,
                     t = excluded.t, seal = excluded.seal, st = excluded.st",
            )?;
            for entry in seal.get_array("records").into_iter().flatten().flatten() {
                let Some(e) = entry.as_document() else {
                    continue;
                };
                let (Ok(c), Some(h)) = (e.get_str("c"), entry_hash(e)) else {
                    continue;
                };
                let t = e.get_datetime("t").ok().map(|t| t.timestamp_millis());
                insert.execute(params![
                    c,
                    id_key(e.get("id").ok().flatten()),
                    h,
                    i64::from(is_salted(commit, c)),
                    t,
                    seal_id,
                    time
                ])?;
            }
        }
        "prune" => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO pruned (c, t_from, t_to, ptime, stated, seal, stream, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            // A prune seal without a time speaks for nothing.
            let Some(ptime) = time else {
                return Ok(());
            };
            for range in seal.get_array("ranges").into_iter().flatten().flatten() {
                let Some(r) = range.as_document() else {
                    continue;
                };
                let (Ok(c), Ok(to)) = (r.get_str("c"), r.get_datetime("to")) else {
                    continue;
                };
                let from = r.get_datetime("from").ok().map(|t| t.timestamp_millis());
                // A range cannot reach past the seal that states it.
                let to = to.timestamp_millis().min(ptime);
                let stated = r.get_i64("count").unwrap_or(0);
                insert.execute(params![
                    c,
                    from,
                    to,
                    ptime,
                    stated,
                    seal_id,
                    stream.to_hex(),
                    seq
                ])?;
            }
        }
        "erasure" => {
            // Applied once every seal is read (see `apply_erasures`).
            let mut insert = tx.prepare_cached(
                "INSERT INTO erasures (c, id, old, new, seal, stream, seq, t)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for change in seal.get_array("changes").into_iter().flatten().flatten() {
                let Some(ch) = change.as_document() else {
                    continue;
                };
                let (Ok(c), Some(old), Some(new)) = (
                    ch.get_str("c"),
                    ch.get_str("old").ok().and_then(unhex),
                    ch.get_str("new").ok().and_then(unhex),
                ) else {
                    continue;
                };
                let id = id_key(ch.get("id").ok().flatten());
                insert.execute(params![
                    c,
                    id,
                    old,
                    new,
                    seal_id,
                    stream.to_hex(),
                    seq,
                    time
                ])?;
            }
        }
        // A spill journal replayed whole: only its place in the chain matters here.
        "journal" => {}
        other => emit(finding(
            FindingKind::ChainBroken,
            format!("unknown seal kind `{other}`"),
        )),
    }
    Ok(())
}

/// The tree a seal states: its size, root and stored nodes (`None` for a seal of an earlier
/// version, which states none).
fn tree_fields(seal: &bson::RawDocument) -> Option<(i64, Vec<u8>, Vec<u8>)> {
    let bin = |k: &str| match seal.get(k).ok().flatten() {
        Some(RawBsonRef::Binary(b)) => Some(b.bytes.to_vec()),
        _ => None,
    };
    Some((
        seal.get_i64("size").ok()?,
        bin("root")?,
        bin("nodes").unwrap_or_default(),
    ))
}

/// The commitments a batch seal lists, in order, one after the other: its leaves. An entry
/// without a 32-byte commitment leaves a gap the tree check then reports.
fn leaves_of(seal: &bson::RawDocument) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in seal.get_array("records").into_iter().flatten().flatten() {
        if let Some(h) = entry.as_document().and_then(entry_hash) {
            out.extend_from_slice(&h);
        }
    }
    out
}

/// Whether the seal's `note_sig` is `key`'s signature of the checkpoint it states.
fn checkpoint_signature_is_valid(
    seal: &bson::RawDocument,
    size: i64,
    root: &[u8],
    key: &VerifyingKey,
) -> bool {
    let (Ok(origin), Ok(Some(RawBsonRef::Binary(sig))), Ok(root), Ok(size)) = (
        seal.get_str("origin"),
        seal.get("note_sig"),
        Hash::try_from(root),
        u64::try_from(size),
    ) else {
        return false;
    };
    let text = Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
    }
    .text();
    ed25519_dalek::Signature::from_slice(sig.bytes)
        .is_ok_and(|sig| ed25519_dalek::Verifier::verify(key, text.as_bytes(), &sig).is_ok())
}

/// The bytes a record entry commits to, stored as binary (or, by earlier versions, as hex).
fn entry_hash(entry: &bson::RawDocument) -> Option<Vec<u8>> {
    match entry.get("h").ok().flatten()? {
        RawBsonRef::Binary(b) => Some(b.bytes.to_vec()),
        RawBsonRef::String(s) => unhex(s),
        _ => None,
    }
}
