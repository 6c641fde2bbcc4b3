//! Evidence read from the seals for someone who does not have the database: the signed checkpoint
//! of each stream, a receipt proving one record (an inclusion proof in C2SP `tlog-proof` form),
//! and consistency proofs between two sizes of a stream's tree.
//!
//! Every hash a proof needs is read from the seals, never recomputed from the records: a perfect
//! subtree's hash is stored in the seal of the batch that completed it, and that seal is found by
//! a binary search over the stream's sequence numbers (the seals' sizes only grow), so a proof
//! costs O(log n) seal reads. The record's own place in the tree is kept beside its salt.
//!
//! A receipt's `extra` line says what the leaf is made from, as its first byte:
//! - `0x01`, then the 32-byte salt and the record's stored bytes: the leaf is
//!   SHA-256(bytes || salt);
//! - `0x02`, then the record's stored bytes: the leaf is SHA-256(bytes) (a process document);
//! - `0x03`, then the 32-byte commitment: the record as sealed is no longer what is stored (it
//!   was erased, removed, or altered — `audit verify` says which), so the receipt proves that
//!   this commitment was sealed, and nothing about its content.

use super::merkle::{self, Hash, Node};
use super::note::{self, Checkpoint, NoteError, SignedNote, TlogProof};
use crate::commitment::{commitment, salt_of};
use crate::document::Collection;
use crate::store::{Filter, FindOptions, Order, Store, StoreError};
use bson::oid::ObjectId;
use bson::{Bson, Document, RawDocumentBuf};
use ed25519_dalek::{Signature, VerifyingKey};
use std::collections::{BTreeMap, HashMap};

/// What the leaf of a receipt is made from (the first byte of its `extra` data).
const SALTED_RECORD: u8 = 0x01;
const PLAIN_RECORD: u8 = 0x02;
const COMMITMENT_ONLY: u8 = 0x03;

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No seal covers the record, or nothing of that id is stored.
    #[error("{0}")]
    NotFound(String),
    /// The seals do not hold what the proof needs (unsigned, written by an earlier version, or
    /// altered).
    #[error("{0}")]
    Unprovable(String),
}

/// A seal's part of its stream's tree, read from its bytes (its record entries are decoded only
/// when a leaf of it is asked for: a proof mostly needs the stored nodes).
#[derive(Debug, Clone)]
pub(crate) struct SealTree {
    pub(crate) seq: i64,
    pub(crate) origin: String,
    /// The tree's size after the seal.
    pub(crate) size: u64,
    pub(crate) root: Hash,
    /// The index of the seal's first record in the tree.
    pub(crate) first: u64,
    /// The interior nodes its records completed.
    pub(crate) nodes: Vec<u8>,
    pub(crate) note_sig: Option<Vec<u8>>,
    pub(crate) key: Option<VerifyingKey>,
    raw: std::sync::Arc<RawDocumentBuf>,
}

fn raw_binary<'a>(doc: &'a bson::RawDocument, key: &str) -> Option<&'a [u8]> {
    match doc.get(key).ok()?? {
        bson::raw::RawBsonRef::Binary(b) => Some(b.bytes),
        _ => None,
    }
}

fn hash_of(bytes: &[u8]) -> Option<Hash> {
    Hash::try_from(bytes).ok()
}

impl SealTree {
    /// The tree fields of a seal; `None` for a seal without them (an earlier version's).
    pub(crate) fn of(seal: RawDocumentBuf) -> Option<SealTree> {
        let size = u64::try_from(seal.get_i64("size").ok()?).ok()?;
        let root = hash_of(raw_binary(&seal, "root")?)?;
        let records = match seal.get_array("records") {
            Ok(records) => records.into_iter().count() as u64,
            Err(_) => 0,
        };
        let key = seal
            .get_str("key")
            .ok()
            .and_then(super::keys::unhex)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .and_then(|k| VerifyingKey::from_bytes(&k).ok());
        Some(SealTree {
            seq: seal.get_i64("seq").ok()?,
            origin: seal.get_str("origin").ok()?.to_owned(),
            size,
            root,
            first: size.checked_sub(records)?,
            nodes: raw_binary(&seal, "nodes").unwrap_or_default().to_vec(),
            note_sig: raw_binary(&seal, "note_sig").map(<[u8]>::to_vec),
            key,
            raw: std::sync::Arc::new(seal),
        })
    }

    /// Its records, in order: commitment and `_id` (`None` for an entry that is not one).
    pub(crate) fn leaves(&self) -> Vec<Option<(Hash, Option<Bson>)>> {
        let Ok(records) = self.raw.get_array("records") else {
            return Vec::new();
        };
        records
            .into_iter()
            .map(|e| {
                let e = e.ok()?;
                let e = e.as_document()?;
                let h = hash_of(raw_binary(e, "h")?)?;
                let id = e
                    .get("id")
                    .ok()
                    .flatten()
                    .and_then(|v| Bson::try_from(v.to_raw_bson()).ok());
                Some((h, id))
            })
            .collect()
    }

    /// The commitment of its record at `i` (0: its first).
    fn leaf(&self, i: usize) -> Option<Hash> {
        let records = self.raw.get_array("records").ok()?;
        let e = records.into_iter().nth(i)?.ok()?;
        hash_of(raw_binary(e.as_document()?, "h")?)
    }

    /// The tree head the seal states.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: self.origin.clone(),
            size: self.size,
            root: self.root,
        }
    }

    /// The tree head as a signed checkpoint, when the seal is signed.
    pub(crate) fn signed_checkpoint(&self) -> Option<String> {
        let (sig, key) = (self.note_sig.as_ref()?, self.key.as_ref()?);
        let sig = Signature::from_slice(sig).ok()?;
        let cp = self.checkpoint();
        let name = cp.key_name().to_owned();
        Some(format!(
            "{}\n{}",
            cp.text(),
            note::signature_line(&name, key, &sig)
        ))
    }

    /// The hash of `n` if this seal stores it (its records completed it).
    fn stored(&self, n: Node) -> Option<Hash> {
        if n.level == 0 {
            let i = usize::try_from(n.index.checked_sub(self.first)?).ok()?;
            return self.leaf(i).map(|h| merkle::leaf_hash(&h));
        }
        let at = usize::try_from(n.stored_offset(self.first)?).ok()? * 32;
        self.nodes.get(at..at + 32).and_then(hash_of)
    }
}

/// Reads one stream's tree from its seals, keeping what it read.
pub(crate) struct TreeReader<'a> {
    store: &'a Store,
    stream: ObjectId,
    seals: BTreeMap<i64, SealTree>,
    head: SealTree,
}

impl<'a> TreeReader<'a> {
    /// The reader of `stream`'s tree; `None` when the stream has no seal with a tree.
    pub(crate) async fn open(
        store: &'a Store,
        stream: ObjectId,
    ) -> Result<Option<TreeReader<'a>>, ProofError> {
        let newest = store
            .find_bytes(
                Collection::Seal,
                &FindOptions::new(Filter::eq("stream", stream))
                    .sort("seq", Order::Desc)
                    .window(0, Some(1)),
            )
            .await?;
        let Some(head) = newest.into_iter().next().and_then(SealTree::of) else {
            return Ok(None);
        };
        Ok(Some(TreeReader {
            store,
            stream,
            seals: BTreeMap::new(),
            head,
        }))
    }

    /// The stream's newest seal.
    pub(crate) fn head(&self) -> &SealTree {
        &self.head
    }

    async fn seal(&mut self, seq: i64) -> Result<SealTree, ProofError> {
        if let Some(s) = self.seals.get(&seq) {
            return Ok(s.clone());
        }
        let found = self
            .store
            .find_bytes(
                Collection::Seal,
                &FindOptions::new(Filter::And(vec![
                    Filter::eq("stream", self.stream),
                    Filter::eq("seq", seq),
                ]))
                .window(0, Some(1)),
            )
            .await?;
        let tree = found
            .into_iter()
            .next()
            .and_then(SealTree::of)
            .ok_or_else(|| {
                ProofError::Unprovable(format!(
                    "seal {seq} of stream {} is missing or states no tree",
                    self.stream
                ))
            })?;
        self.seals.insert(seq, tree.clone());
        Ok(tree)
    }

    /// The first seal whose tree reaches past leaf `leaf` (`size > leaf`): the one that added it.
    pub(crate) async fn seal_adding(&mut self, leaf: u64) -> Result<SealTree, ProofError> {
        if leaf >= self.head.size {
            return Err(ProofError::NotFound(format!(
                "the stream's tree has {} leaves, not {}",
                self.head.size,
                leaf + 1
            )));
        }
        // The seals' sizes only grow, and batches are of similar sizes: the search guesses where
        // the leaf should be from the sizes at both ends (interpolation), and halves the range
        // every other step, so a few reads usually find it and O(log n) always do.
        let (mut lo, mut hi) = (0i64, self.head.seq);
        let (mut size_before_lo, mut size_at_hi) = (0u64, self.head.size);
        let mut step = 0u32;
        while lo < hi {
            let mid = if step % 2 == 0 && size_at_hi > size_before_lo {
                let span = (hi - lo) as u128;
                let guess =
                    (leaf - size_before_lo) as u128 * span / (size_at_hi - size_before_lo) as u128;
                lo + (guess as i64).clamp(0, hi - lo - 1)
            } else {
                lo + (hi - lo) / 2
            };
            step += 1;
            let size = self.seal(mid).await?.size;
            if size > leaf {
                hi = mid;
                size_at_hi = size;
            } else {
                lo = mid + 1;
                size_before_lo = size;
            }
        }
        self.seal(lo).await
    }

    /// The seal whose tree has exactly `size` leaves, if there is one.
    pub(crate) async fn seal_of_size(&mut self, size: u64) -> Result<Option<SealTree>, ProofError> {
        if size == 0 || size > self.head.size {
            return Ok(None);
        }
        let s = self.seal_adding(size - 1).await?;
        Ok((s.size == size).then_some(s))
    }

    /// The hashes of the leaf ranges `ranges`, from the stored nodes.
    pub(crate) async fn proof(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, ProofError> {
        let mut known: HashMap<Node, Hash> = HashMap::new();
        for &(lo, hi) in ranges {
            for n in merkle::range_nodes(lo, hi) {
                if known.contains_key(&n) {
                    continue;
                }
                let seal = self.seal_adding(n.last_leaf()).await?;
                let h = seal.stored(n).ok_or_else(|| {
                    ProofError::Unprovable(format!(
                        "seal {} of stream {} does not hold the node it should",
                        seal.seq, self.stream
                    ))
                })?;
                known.insert(n, h);
            }
        }
        Ok(merkle::proof_from(ranges, &mut |n| known[&n]))
    }
}

/// A proof that one record was sealed, for someone without the database.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Receipt {
    /// The proof, with what the leaf is made from and the signed checkpoint it leads to.
    pub proof: TlogProof,
    /// The record's collection.
    pub collection: Collection,
    /// The stream whose tree holds it.
    pub stream: ObjectId,
    /// True when what is stored is still what was sealed (the receipt then carries the record);
    /// false when only the commitment could be given (erased, removed or altered since).
    pub holds_record: bool,
}

impl Receipt {
    /// The receipt as the text written to a file.
    pub fn to_text(&self) -> String {
        self.proof.format()
    }
}

/// The stored bytes of record `id`, and its collection.
async fn stored_record(
    store: &Store,
    id: ObjectId,
) -> Result<Option<(Collection, RawDocumentBuf)>, StoreError> {
    for c in Collection::ALL {
        let mut found = None;
        store
            .for_each_raw_batch(c, &Filter::eq("_id", id), 1, |docs| {
                if found.is_none() {
                    found = docs.into_iter().next();
                }
                Ok(())
            })
            .await?;
        if let Some(doc) = found {
            return Ok(Some((c, doc)));
        }
    }
    Ok(None)
}

/// Where a record is in the seals: stream, leaf index, the seal, its collection, its commitment.
struct Located {
    stream: ObjectId,
    leaf: u64,
    collection: Option<Collection>,
    commitment: Hash,
}

/// Finds record `id` in the seals: through the place its salt document keeps (`salt` is that
/// document), else (a process document, a salt destroyed by an erasure) by reading the batch
/// seals. Returns the reader of its stream too.
async fn locate<'a>(
    store: &'a Store,
    id: ObjectId,
    salt: Option<&RawDocumentBuf>,
) -> Result<(Located, TreeReader<'a>), ProofError> {
    let hint = salt.and_then(|d| Some((d.get_object_id("st").ok()?, d.get_i64("i").ok()?)));
    if let Some((stream, i)) = hint {
        if let (Some(mut reader), Ok(leaf)) =
            (TreeReader::open(store, stream).await?, u64::try_from(i))
        {
            if let Ok(seal) = reader.seal_adding(leaf).await {
                let leaves = seal.leaves();
                if let Some(Some((h, Some(Bson::ObjectId(found))))) =
                    leaves.get((leaf - seal.first) as usize)
                {
                    if *found == id {
                        let located = Located {
                            stream,
                            leaf,
                            collection: None,
                            commitment: *h,
                        };
                        return Ok((located, reader));
                    }
                }
            }
        }
    }
    // No usable hint: read the batch seals (newest last), the last one listing the id wins.
    let mut found = None;
    store
        .for_each_raw_batch(
            Collection::Seal,
            &Filter::eq("kind", "batch"),
            200,
            |seals| {
                for raw in seals {
                    let Ok(stream) = raw.get_object_id("stream") else {
                        continue;
                    };
                    let Some(tree) = SealTree::of(raw) else {
                        continue;
                    };
                    for (pos, leaf) in tree.leaves().into_iter().enumerate() {
                        if let Some((h, Some(Bson::ObjectId(entry_id)))) = leaf {
                            if entry_id == id {
                                found = Some(Located {
                                    stream,
                                    leaf: tree.first + pos as u64,
                                    collection: None,
                                    commitment: h,
                                });
                            }
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
    let located = found.ok_or_else(|| {
        ProofError::NotFound(format!(
            "no seal with a tree covers {id} (not sealed, or sealed by a version without trees)"
        ))
    })?;
    let reader = TreeReader::open(store, located.stream)
        .await?
        .ok_or_else(|| ProofError::NotFound(format!("stream {} has no seal", located.stream)))?;
    Ok((located, reader))
}

/// A receipt for record `id`: its stored bytes (with its salt) or, when they are no longer what
/// was sealed, its commitment; the inclusion proof of its leaf; and the signed checkpoint of its
/// stream's tree with `size` leaves (the newest when `None`). Reads O(log n) seals.
pub async fn prove(store: &Store, id: ObjectId, size: Option<u64>) -> Result<Receipt, ProofError> {
    let mut salt_doc = None;
    store
        .for_each_raw_batch(Collection::Salt, &Filter::eq("_id", id), 1, |docs| {
            salt_doc = docs.into_iter().next();
            Ok(())
        })
        .await?;
    let salt = salt_doc
        .as_ref()
        .and_then(|d| salt_of(d).map(<[u8]>::to_vec));
    let (mut located, mut reader) = locate(store, id, salt_doc.as_ref()).await?;
    let record = stored_record(store, id).await?;
    let seal = match size {
        None => reader.head().clone(),
        Some(n) => reader.seal_of_size(n).await?.ok_or_else(|| {
            ProofError::NotFound(format!(
                "no seal of stream {} states a tree of {n} leaves",
                located.stream
            ))
        })?,
    };
    if located.leaf >= seal.size {
        return Err(ProofError::NotFound(format!(
            "the record is leaf {} of its stream, after the tree of {} leaves",
            located.leaf, seal.size
        )));
    }
    let checkpoint = seal.signed_checkpoint().ok_or_else(|| {
        ProofError::Unprovable(
            "the stream's seals are not signed: a receipt needs a checkpoint signed with the seal \
             key (seal_key_file)"
                .into(),
        )
    })?;
    let hashes = reader
        .proof(&merkle::inclusion_ranges(located.leaf, seal.size))
        .await?;

    let mut extra;
    let mut holds_record = false;
    match &record {
        Some((c, bytes)) if commitment(salt.as_deref(), bytes.as_bytes()) == located.commitment => {
            located.collection = Some(*c);
            holds_record = true;
            match &salt {
                Some(s) => {
                    extra = vec![SALTED_RECORD];
                    extra.extend_from_slice(s);
                }
                None => extra = vec![PLAIN_RECORD],
            }
            extra.extend_from_slice(bytes.as_bytes());
        }
        other => {
            located.collection = other.as_ref().map(|(c, _)| *c);
            extra = vec![COMMITMENT_ONLY];
            extra.extend_from_slice(&located.commitment);
        }
    }
    Ok(Receipt {
        proof: TlogProof {
            extra: Some(extra),
            index: located.leaf,
            hashes,
            checkpoint,
        },
        collection: located.collection.unwrap_or(Collection::Access),
        stream: located.stream,
        holds_record,
    })
}

/// What a valid receipt proves.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckedReceipt {
    /// The checkpoint it leads to (signature checked).
    pub checkpoint: Checkpoint,
    /// The record's leaf index in its stream's tree.
    pub index: u64,
    /// The commitment sealed.
    pub commitment: Hash,
    /// The record as sealed, when the receipt carries it.
    pub record: Option<Document>,
}

/// Checks a receipt with the trail's public key alone: the checkpoint's signature, that its
/// `extra` data makes the leaf, and that the inclusion proof leads from that leaf to the
/// checkpoint's root.
pub fn check_receipt(text: &str, key: &VerifyingKey) -> Result<CheckedReceipt, NoteError> {
    let bad = |what: &str| Err(NoteError(what.into()));
    let proof = TlogProof::parse(text)?;
    let signed = SignedNote::parse(&proof.checkpoint)?;
    let checkpoint = Checkpoint::parse(&signed.text)?;
    let Some(extra) = proof.extra.as_deref() else {
        return bad("the receipt does not say what its leaf is made from (no `extra` line)");
    };
    let record_at = |bytes: &[u8]| -> Result<Document, NoteError> {
        // The whole rest must be exactly one document.
        let declared = bytes
            .get(..4)
            .map(|l| i32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        if declared != Some(bytes.len()) {
            return Err(NoteError("the record's bytes are not one document".into()));
        }
        let raw = bson::RawDocument::from_bytes(bytes)
            .map_err(|e| NoteError(format!("the record's bytes are not a document: {e}")))?;
        Document::try_from(raw).map_err(|e| NoteError(format!("the record is malformed: {e}")))
    };
    let (commitment_bytes, record) = match extra.split_first() {
        Some((&SALTED_RECORD, rest)) if rest.len() > 32 => {
            let (salt, bytes) = rest.split_at(32);
            (commitment(Some(salt), bytes), Some(record_at(bytes)?))
        }
        Some((&PLAIN_RECORD, bytes)) => (commitment(None, bytes), Some(record_at(bytes)?)),
        Some((&COMMITMENT_ONLY, h)) if h.len() == 32 => {
            (Hash::try_from(h).expect("32 bytes"), None)
        }
        _ => return bad("the receipt's `extra` data is not one of the documented forms"),
    };
    let leaf = merkle::leaf_hash(&commitment_bytes);
    if !merkle::verify_inclusion(
        proof.index,
        checkpoint.size,
        &leaf,
        &proof.hashes,
        &checkpoint.root,
    ) {
        return bad("the inclusion proof does not lead from the record to the checkpoint's root");
    }
    // Last, as it is the costliest check.
    signed.verify(checkpoint.key_name(), key)?;
    Ok(CheckedReceipt {
        checkpoint,
        index: proof.index,
        commitment: commitment_bytes,
        record,
    })
}

/// The newest signed checkpoint of every stream whose tree is not empty, as signed notes (each
/// ends with its signature line), oldest stream first. Reads every seal once.
pub async fn checkpoints(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut newest: HashMap<ObjectId, (i64, Option<String>)> = HashMap::new();
    let mut order = Vec::new();
    store
        .for_each_raw_batch(Collection::Seal, &Filter::all(), 500, |seals| {
            for raw in seals {
                let Ok(stream) = raw.get_object_id("stream") else {
                    continue;
                };
                let Some(tree) = SealTree::of(raw) else {
                    continue;
                };
                if tree.size == 0 {
                    continue;
                }
                let e = newest.entry(stream).or_insert_with(|| {
                    order.push(stream);
                    (-1, None)
                });
                if tree.seq > e.0 {
                    *e = (tree.seq, tree.signed_checkpoint());
                }
            }
            Ok(())
        })
        .await?;
    Ok(order
        .into_iter()
        .filter_map(|s| newest.remove(&s).and_then(|(_, cp)| cp))
        .collect())
}

/// Whether the stream's tree as the seals store it (read through `reader`, the stream's) extends
/// the checkpoint `cp`: a consistency proof from it to the newest seal's tree, made from the
/// stored nodes, checks.
#[cfg(feature = "embedded-store")]
pub(crate) async fn extends(
    reader: &mut TreeReader<'_>,
    cp: &Checkpoint,
) -> Result<Consistency, ProofError> {
    let head = reader.head().clone();
    if head.size < cp.size {
        return Ok(Consistency::Truncated { size: head.size });
    }
    if cp.size == 0 {
        return Ok(Consistency::Extends);
    }
    let proof = reader
        .proof(&merkle::consistency_ranges(cp.size, head.size))
        .await?;
    Ok(
        if merkle::verify_consistency(cp.size, head.size, &cp.root, &head.root, &proof) {
            Consistency::Extends
        } else {
            Consistency::Inconsistent
        },
    )
}

/// How a stream's stored tree relates to a checkpoint of it.
#[cfg(feature = "embedded-store")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Consistency {
    /// It is the checkpoint's tree, or grew from it.
    Extends,
    /// It is smaller than the checkpoint's tree.
    Truncated { size: u64 },
    /// Its first leaves are not those the checkpoint's root commits to.
    Inconsistent,
}

/// The checkpoints of a witness file (signed notes, each followed by a blank line). With `key`,
/// each must carry a valid signature of it; a note that does not parse or verify is an error
/// naming its position, since a checkpoint that cannot be trusted proves nothing either way.
pub fn read_checkpoints(
    file: &str,
    key: Option<&VerifyingKey>,
) -> Result<Vec<Checkpoint>, NoteError> {
    let mut out = Vec::new();
    for (i, note) in note::parse_notes(file).into_iter().enumerate() {
        let which = |e: NoteError| NoteError(format!("checkpoint {}: {e}", i + 1));
        let note = note.map_err(which)?;
        let cp = Checkpoint::parse(&note.text).map_err(which)?;
        if let Some(key) = key {
            note.verify(cp.key_name(), key).map_err(which)?;
        }
        out.push(cp);
    }
    Ok(out)
}
