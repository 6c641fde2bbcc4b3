//! Tamper evidence: seals, a hash chain over everything the writer stores.
//!
//! After each batch is stored the writer adds one *seal* to the `audit_seal` collection. A seal
//! names its stream (the writing process's `Process` id, so instances sharing one MongoDB never
//! coordinate), a sequence number, the time, the hash of the previous seal of the stream, and for
//! each record of the batch its collection, `_id`, date and the SHA-256 of the exact BSON bytes
//! stored. The seal's own `hash` covers all of that, and with a key configured an Ed25519
//! signature (`sig`) covers the hash. The audit collections themselves are not changed: nothing
//! is added to their documents.
//!
//! What it proves: a record edited, deleted or inserted afterwards, a seal removed, reordered or
//! altered, are all found by [`verify`](crate::seal::verify()) — as long as whoever edits cannot
//! also rewrite the chain. Without a key, someone with write access to the database can recompute
//! a whole chain after an edit; with a key, they also need the private key. Someone holding the
//! private key can rewrite history: keep it away from the database's administrators, and keep the
//! head that the writer logs now and then (see `seal_anchor_every`) in an external log.
//!
//! Seals of other kinds keep the chain verifiable through legitimate changes: `prune` (a ranged
//! delete, or the retention job) says which range of which collection was removed, and `erasure`
//! (personal data replaced by a tombstone) lists each changed record's old and new hash.

#[cfg(feature = "embedded-store")]
mod verify;
#[cfg(feature = "embedded-store")]
pub use verify::{verify, Finding, FindingKind, HeadSummary, Summary, VerifyError, VerifyOptions};

use crate::document::Collection;
use bson::oid::ObjectId;
use bson::raw::{RawBsonRef, RawDocument};
use bson::{doc, Bson, Document, RawDocumentBuf};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The collection holding the seals.
pub use crate::document::SEAL_COLLECTION;

/// Fields of a seal that its hash does not cover (they are computed from the hash).
const UNHASHED: [&str; 3] = ["hash", "sig", "key"];

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 key in PEM (PKCS#8 / SPKI) form.
    #[error("{path}: not an Ed25519 {what} key in PEM form: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// "private" or "public".
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
}

/// Writes a new Ed25519 private key to `path` (PKCS#8 PEM, mode 0600, refusing to overwrite or to
/// follow a symlink) and its public key to `path.pub` (SPKI PEM, the form `openssl pkey -pubout`
/// prints). Returns the public key.
pub fn keygen(path: &Path) -> Result<VerifyingKey, KeyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    write_new(path, private.as_bytes(), 0o600).map_err(io(path))?;
    let pub_path = public_key_path(path);
    write_new(&pub_path, public.as_bytes(), 0o644).map_err(io(&pub_path))?;
    Ok(key.verifying_key())
}

/// `PATH.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // `create_new` refuses any existing path, a symlink included, so a key is never written
    // through a link planted beside it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads the private key of [`keygen`].
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        what: "private",
        reason: e.to_string(),
    })
}

/// Reads a public key written by [`keygen`] (`PATH.pub`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        what: "public",
        reason: e.to_string(),
    })
}

/// The hash a seal should carry: the SHA-256 of its BSON bytes without `hash`, `sig` and `key`,
/// fields in stored order.
pub fn compute_seal_hash(seal: &RawDocument) -> Result<String, bson::raw::Error> {
    let mut covered = RawDocumentBuf::new();
    for element in seal {
        let (k, v) = element?;
        if !UNHASHED.contains(&k) {
            covered.append_ref(k, v);
        }
    }
    Ok(sha256_hex(covered.as_bytes()))
}

/// True when the seal carries a valid signature of its `hash` by `key`.
pub fn signature_is_valid(seal: &RawDocument, key: &VerifyingKey) -> bool {
    let (Ok(hash), Ok(sig)) = (seal.get_str("hash"), seal.get_str("sig")) else {
        return false;
    };
    let Some(sig) = unhex(sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    key.verify(hash.as_bytes(), &Signature::from_bytes(&sig))
        .is_ok()
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

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// One record as a seal lists it: collection (`c`), `_id` (`id`), date (`t`) and the SHA-256 of
/// its exact bytes (`h`, 32 bytes of binary). Written as raw BSON straight away: the writer makes
/// one per stored record, so it stays off the `Document` and hex-string path.
pub fn record_entry(c: Collection, doc: &RawDocument) -> RawDocumentBuf {
    let mut entry = RawDocumentBuf::new();
    entry.append("c", c.name());
    match doc.get("_id") {
        Ok(Some(id)) => entry.append_ref("id", id),
        _ => entry.append("id", bson::RawBson::Null),
    }
    let hash = sha256(doc.as_bytes());
    entry.append_ref(
        "h",
        bson::RawBinaryRef {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: &hash,
        },
    );
    if let Some(t) = record_date(c, doc) {
        entry.append("t", t);
    }
    entry
}

/// The hex form of a record entry's hash, whether stored as binary or as hex text.
pub fn entry_hash_hex(entry: &RawDocument) -> Option<String> {
    match entry.get("h").ok().flatten()? {
        RawBsonRef::Binary(b) => Some(hex(b.bytes)),
        RawBsonRef::String(s) => Some(s.to_owned()),
        _ => None,
    }
}

/// The head of a stream: what the last seal was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The stream (the writing process's id).
    pub stream: ObjectId,
    /// The last sequence number written (`-1` before the first seal).
    pub seq: i64,
    /// The last seal's hash (`""` before the first seal).
    pub hash: String,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream {} seq {} hash {}",
            self.stream, self.seq, self.hash
        )
    }
}

/// Builds the seals of one stream, in order.
pub struct Sealer {
    head: Head,
    key: Option<SigningKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("head", &self.head)
            .field("signed", &self.key.is_some())
            .finish()
    }
}

impl Sealer {
    /// A new stream (nothing sealed yet), signing with `key` when given.
    pub fn new(stream: ObjectId, key: Option<SigningKey>) -> Self {
        Sealer {
            head: Head {
                stream,
                seq: -1,
                hash: String::new(),
            },
            key,
        }
    }

    /// Continues a stream from its last seal.
    pub fn resume(head: Head, key: Option<SigningKey>) -> Self {
        Sealer { head, key }
    }

    /// The last seal made.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The seal of a stored batch.
    pub fn batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (Collection, &'a RawDocument)>,
    ) -> RawDocumentBuf {
        let entries: Vec<RawDocumentBuf> = records
            .into_iter()
            .map(|(c, d)| record_entry(c, d))
            .collect();
        let (seal, head) = self.prepare_batch(None, &entries);
        self.head = head;
        seal
    }

    /// A batch seal over `entries` (from [`record_entry`]), naming the `process` it writes for;
    /// the head moves on at [`commit`](Self::commit).
    pub fn prepare_batch(
        &self,
        process: Option<ObjectId>,
        entries: &[RawDocumentBuf],
    ) -> (RawDocumentBuf, Head) {
        let mut records = bson::RawArrayBuf::new();
        for e in entries {
            records.push(e.clone());
        }
        self.prepare_raw("batch", |raw| {
            if let Some(p) = process {
                raw.append("process", p);
            }
            raw.append("records", records);
        })
    }

    /// A seal of `kind` with `body`'s fields after the chain fields. The stream's head moves on:
    /// the caller stores the returned seal before making the next (retrying the same bytes).
    pub fn seal(&mut self, kind: &str, body: Document) -> RawDocumentBuf {
        let (seal, head) = self.prepare(kind, body);
        self.head = head;
        seal
    }

    /// A seal that would follow the head, and the head it would make; nothing moves until
    /// [`commit`](Self::commit). For a seal stored together with its records: if that write
    /// fails, the next seal takes the same place in the chain.
    pub fn prepare(&self, kind: &str, body: Document) -> (RawDocumentBuf, Head) {
        self.prepare_raw(kind, |raw| {
            for (k, v) in body {
                if let Ok(v) = bson::RawBson::try_from(v) {
                    raw.append(k, v);
                }
            }
        })
    }

    fn prepare_raw(
        &self,
        kind: &str,
        body: impl FnOnce(&mut RawDocumentBuf),
    ) -> (RawDocumentBuf, Head) {
        let seq = self.head.seq + 1;
        let mut raw = RawDocumentBuf::new();
        raw.append("_id", ObjectId::new());
        raw.append("stream", self.head.stream);
        raw.append("seq", seq);
        raw.append("kind", kind);
        raw.append("time", bson::DateTime::now());
        raw.append("prev", self.head.hash.clone());
        body(&mut raw);
        let hash = sha256_hex(raw.as_bytes());
        raw.append("hash", hash.clone());
        if let Some(key) = &self.key {
            let sig = key.sign(hash.as_bytes());
            raw.append("sig", hex(&sig.to_bytes()));
            raw.append("key", hex(key.verifying_key().as_bytes()));
        }
        let head = Head {
            stream: self.head.stream,
            seq,
            hash,
        };
        (raw, head)
    }

    /// Moves the head to a prepared seal's, once that seal is stored.
    pub fn commit(&mut self, head: Head) {
        debug_assert_eq!(head.seq, self.head.seq + 1);
        self.head = head;
    }
}

/// Why a seal could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The signing key could not be read.
    #[error("seal_key_file: {0}")]
    Key(#[from] KeyError),
    /// The store refused the seal.
    #[error("cannot store the seal: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The signing key of `config` (`seal_key_file`), if one is set.
pub fn configured_key(config: &crate::AuditConfig) -> Result<Option<SigningKey>, KeyError> {
    config
        .seal_key_file
        .as_deref()
        .map(load_signing_key)
        .transpose()
}

/// A range of one collection removed on purpose (a ranged drop, a purge, the retention job).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedRange {
    /// The collection.
    pub collection: Collection,
    /// From this date (`None`: from the beginning).
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Up to this date, included.
    pub to: chrono::DateTime<chrono::Utc>,
    /// How many records the removal takes.
    pub count: u64,
}

/// Writes a `prune` seal stating what is about to be removed, so that `verify` reports those
/// records as pruned rather than deleted. Call it *before* deleting: a crash in between leaves a
/// seal for records still there, which verifies clean, instead of records gone without a seal.
///
/// The seal is the only one of a stream of its own (a command is not a writer): removing it makes
/// the removed records show up as deleted. Nothing is written when sealing is off.
pub async fn seal_prune(
    store: &crate::Store,
    config: &crate::AuditConfig,
    reason: &str,
    ranges: &[PrunedRange],
) -> Result<Option<Head>, SealError> {
    if !config.seal {
        return Ok(None);
    }
    let mut sealer = Sealer::new(ObjectId::new(), configured_key(config)?);
    let ranges: Vec<Bson> = ranges
        .iter()
        .map(|r| {
            let mut d = doc! { "c": r.collection.name() };
            if let Some(from) = r.from {
                d.insert("from", bson::DateTime::from_chrono(from));
            }
            d.insert("to", bson::DateTime::from_chrono(r.to));
            d.insert("count", r.count as i64);
            Bson::Document(d)
        })
        .collect();
    let seal = sealer.seal("prune", doc! { "reason": reason, "ranges": ranges });
    store
        .insert_raw_documents(Collection::Seal, vec![seal])
        .await?;
    Ok(Some(sealer.head().clone()))
}

/// How often the retention job runs after its first run (at start).
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The writer's retention job: at start, then hourly, removes the accesses and model actions
/// older than `days`, each removal first stated in a `prune` seal so that `verify` reports the
/// records as pruned, not deleted. Processes stay (they are few, and records that stay may
/// reference them). Failures are logged and tried again at the next run.
pub async fn retention_job(store: crate::Store, config: crate::AuditConfig, days: u32) {
    loop {
        if let Err(e) = prune_older_than(&store, &config, days).await {
            tracing::error!(target: "audit", error = %e, retention_days = days,
                "audit retention run failed; tried again in an hour");
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}

/// One retention run: what is older than `days` days goes, after its prune seal.
pub async fn prune_older_than(
    store: &crate::Store,
    config: &crate::AuditConfig,
    days: u32,
) -> Result<u64, SealError> {
    use crate::store::{CmpOp, Filter};
    let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
    let older = |c: Collection| {
        Filter::Cmp(
            c.date_field().into(),
            CmpOp::Lt,
            Bson::DateTime(bson::DateTime::from_chrono(cutoff)),
        )
    };
    let mut ranges = Vec::new();
    for c in [Collection::Access, Collection::ModelAction] {
        let count = store.count(c, &older(c)).await?;
        if count > 0 {
            ranges.push(PrunedRange {
                collection: c,
                from: None,
                to: cutoff,
                count,
            });
        }
    }
    if ranges.is_empty() {
        return Ok(0);
    }
    seal_prune(store, config, "retention", &ranges).await?;
    let mut removed = 0;
    for r in &ranges {
        removed += store
            .delete_many(r.collection, &older(r.collection))
            .await?;
    }
    tracing::info!(target: "audit", removed, retention_days = days, cutoff = %cutoff,
        "audit retention removed old records");
    Ok(removed)
}

/// What replaces erased personal data.
pub const TOMBSTONE: &str = "<erased>";

/// What an erasure changed (or, with `dry_run`, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Accesses of the user changed.
    pub accesses: u64,
    /// Model actions of those accesses changed.
    pub model_actions: u64,
}

/// Replaces the personal data of the user `user_id` with [`TOMBSTONE`]: in each of their
/// accesses the user name and every path of `erase_fields`, and the same paths in the model
/// actions those accesses caused. Each chunk of changes is first stated in a signed `erasure`
/// seal (each record's old and new hash), then applied, so `verify` accepts exactly these changes
/// and still catches any other edit; a crash in between leaves records that still match their
/// old hash, which verifies clean too, and running the erasure again finishes it.
pub async fn erase_user(
    store: &crate::Store,
    config: &crate::AuditConfig,
    user_id: &Bson,
    dry_run: bool,
) -> Result<Erasure, SealError> {
    use crate::store::Filter;
    let mut sealer = config
        .seal
        .then(|| Ok::<_, KeyError>(Sealer::new(ObjectId::new(), configured_key(config)?)))
        .transpose()?;
    let mut report = Erasure::default();
    let mut access_ids = Vec::new();
    let mut chunks: Vec<Vec<RawDocumentBuf>> = Vec::new();
    store
        .for_each_raw_batch(
            Collection::Access,
            &Filter::eq("user.id", user_id.clone()),
            500,
            |docs| {
                for d in &docs {
                    if let Ok(Some(id)) = d.get("_id") {
                        if let Ok(id) = Bson::try_from(id.to_raw_bson()) {
                            access_ids.push(id);
                        }
                    }
                }
                chunks.push(docs);
                Ok(())
            },
        )
        .await?;
    for docs in chunks {
        report.accesses += erase_chunk(
            store,
            sealer.as_mut(),
            Collection::Access,
            docs,
            config,
            dry_run,
        )
        .await?;
    }
    for ids in access_ids.chunks(500) {
        let mut actions = Vec::new();
        store
            .for_each_raw_batch(
                Collection::ModelAction,
                &Filter::In("access".into(), ids.to_vec()),
                500,
                |docs| {
                    actions.push(docs);
                    Ok(())
                },
            )
            .await?;
        for docs in actions {
            report.model_actions += erase_chunk(
                store,
                sealer.as_mut(),
                Collection::ModelAction,
                docs,
                config,
                dry_run,
            )
            .await?;
        }
    }
    Ok(report)
}

async fn erase_chunk(
    store: &crate::Store,
    sealer: Option<&mut Sealer>,
    c: Collection,
    docs: Vec<RawDocumentBuf>,
    config: &crate::AuditConfig,
    dry_run: bool,
) -> Result<u64, SealError> {
    let mut changed = Vec::new();
    for old in docs {
        let Ok(mut doc) = old.to_document() else {
            continue;
        };
        let mut touched = false;
        let paths =
            std::iter::once("user.username").chain(config.erase_fields.iter().map(String::as_str));
        for path in paths {
            touched |= tombstone(&mut doc, path);
        }
        if !touched {
            continue;
        }
        let Ok(new) = RawDocumentBuf::from_document(&doc) else {
            continue;
        };
        changed.push((old, new));
    }
    let n = changed.len() as u64;
    if dry_run || changed.is_empty() {
        return Ok(n);
    }
    if let Some(sealer) = sealer {
        let changes: Vec<Bson> = changed
            .iter()
            .map(|(old, new)| {
                let id = old
                    .get("_id")
                    .ok()
                    .flatten()
                    .and_then(|v| Bson::try_from(v.to_raw_bson()).ok())
                    .unwrap_or(Bson::Null);
                Bson::Document(doc! {
                    "c": c.name(),
                    "id": id,
                    "old": sha256_hex(old.as_bytes()),
                    "new": sha256_hex(new.as_bytes()),
                })
            })
            .collect();
        let seal = sealer.seal("erasure", doc! { "changes": changes });
        store
            .insert_raw_documents(Collection::Seal, vec![seal])
            .await?;
    }
    for (_, new) in changed {
        store.replace_bytes(c, new).await?;
    }
    Ok(n)
}

/// Replaces the value at a dotted `path` (when present and not already erased) by the tombstone.
fn tombstone(doc: &mut Document, path: &str) -> bool {
    let mut cur = doc;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            return match cur.get(p) {
                Some(Bson::String(s)) if s == TOMBSTONE => false,
                Some(_) => {
                    cur.insert(p, TOMBSTONE);
                    true
                }
                None => false,
            };
        }
        match cur.get_mut(p) {
            Some(Bson::Document(d)) => cur = d,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn access(n: i32) -> RawDocumentBuf {
        rawdoc! { "_id": ObjectId::new(), "time": { "request": bson::DateTime::from_millis(1000 * n as i64) }, "n": n }
    }

    #[test]
    fn seals_chain_and_their_hash_covers_every_field_but_itself() {
        let stream = ObjectId::new();
        let mut s = Sealer::new(stream, None);
        let (a, b) = (access(1), access(2));
        let first = s.batch([(Collection::Access, &*a), (Collection::Access, &*b)]);
        let second = s.batch([(Collection::Access, &*a)]);
        assert_eq!(first.get_i64("seq").unwrap(), 0);
        assert_eq!(first.get_str("prev").unwrap(), "");
        assert_eq!(second.get_i64("seq").unwrap(), 1);
        assert_eq!(
            second.get_str("prev").unwrap(),
            first.get_str("hash").unwrap()
        );
        for seal in [&first, &second] {
            assert_eq!(
                compute_seal_hash(seal).unwrap(),
                seal.get_str("hash").unwrap()
            );
        }
        let records = first.get_array("records").unwrap();
        let entry = records.into_iter().next().unwrap().unwrap();
        let entry = entry.as_document().unwrap();
        assert_eq!(entry_hash_hex(entry).unwrap(), sha256_hex(a.as_bytes()));
        assert_eq!(entry.get_str("c").unwrap(), "audit_access");
        assert_eq!(
            entry.get_datetime("t").unwrap(),
            bson::DateTime::from_millis(1000)
        );
        // One changed byte anywhere in the covered part changes the hash.
        let mut edited = first.clone().into_bytes();
        let pos = edited.len() / 2;
        edited[pos] ^= 1;
        let edited = RawDocumentBuf::from_bytes(edited);
        if let Ok(edited) = edited {
            assert_ne!(
                compute_seal_hash(&edited).ok().as_deref(),
                Some(first.get_str("hash").unwrap())
            );
        }
        assert_eq!(s.head().seq, 1);
        assert_eq!(s.head().stream, stream);
    }

    #[test]
    fn signed_seals_verify_with_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let public = keygen(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(keygen(&path).is_err(), "never overwrites a key");
        assert_eq!(load_verifying_key(&public_key_path(&path)).unwrap(), public);
        let mut s = Sealer::new(ObjectId::new(), Some(load_signing_key(&path).unwrap()));
        let a = access(1);
        let seal = s.batch([(Collection::Access, &*a)]);
        assert!(signature_is_valid(&seal, &public));
        let other = keygen(&dir.path().join("other.key")).unwrap();
        assert!(!signature_is_valid(&seal, &other));
        assert!(matches!(
            load_verifying_key(&path),
            Err(KeyError::Format { what: "public", .. })
        ));
    }
}
