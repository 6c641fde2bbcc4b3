//! The hash chain of one stream: what a seal holds and how its hash is computed. A batch seal
//! lists, for every record of its batch, a commitment to its exact stored bytes (see
//! [`crate::commitment`]) made with a fresh salt, and hands the salt documents to the caller,
//! who stores them with the seal.
//!
//! The commitments of a stream, in order, are also the leaves of an RFC 6962 Merkle tree (see
//! [`super::merkle`]). Every seal states the tree after it (`size`, `root`, and `origin`, which
//! names the trail and the stream), a batch seal stores the interior nodes its records complete
//! (`nodes`), and a signed seal carries `note_sig`, the signature of that tree head as a C2SP
//! checkpoint: anyone holding the public key can check a checkpoint or a receipt made from the
//! seal without the database.

use super::keys::hex;
use super::merkle::{self, Frontier, Hash};
use super::note::Checkpoint;
use super::SealError;
use crate::commitment::{commitment, is_salted, record_date, SALTED, SALT_LEN};
use crate::document::Collection;
use bson::oid::ObjectId;
use bson::raw::{RawBsonRef, RawDocument};
use bson::{Document, RawDocumentBuf};
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// Fields of a seal that its hash does not cover (they are computed from the hash).
const UNHASHED: [&str; 3] = ["hash", "sig", "key"];

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
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

/// The hex form of a record entry's hash, whether stored as binary or as hex text.
pub fn entry_hash_hex(entry: &RawDocument) -> Option<String> {
    match entry.get("h").ok().flatten()? {
        RawBsonRef::Binary(b) => Some(hex(b.bytes)),
        RawBsonRef::String(s) => Some(s.to_owned()),
        _ => None,
    }
}

/// One stored record as a batch seal lists it, and the salt document its commitment needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Covered {
    /// `{c, id, h, t}`: collection, `_id`, commitment (32 bytes of binary) and date.
    pub entry: RawDocumentBuf,
    /// `{_id, c, s}` for the `audit_salt` collection: the record's `_id`, its collection and the
    /// salt (none for a process document, see [`SALTED`]). The seal that lists the record adds
    /// where it is in the tree (`st`: the stream, `i`: the leaf index), so that a receipt for
    /// the record is made without searching the seals.
    pub salt: Option<RawDocumentBuf>,
    /// The commitment (`h`): the record's leaf in the stream's tree.
    pub commitment: Hash,
}

fn binary(bytes: &[u8]) -> bson::RawBinaryRef<'_> {
    bson::RawBinaryRef {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes,
    }
}

/// The head of a stream: what the last seal was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The stream: a fresh ObjectId per writer (and per command that writes a seal), so writers
    /// never coordinate, even two in one process.
    pub stream: ObjectId,
    /// The last sequence number written (`-1` before the first seal).
    pub seq: i64,
    /// The last seal's hash (`""` before the first seal).
    pub hash: String,
    /// The stream's tree after the last seal.
    pub tree: Frontier,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stream {} seq {} hash {} tree size {}",
            self.stream,
            self.seq,
            self.hash,
            self.tree.size()
        )
    }
}

/// The name a trail's checkpoints carry when none is configured (`trail_name`).
pub const DEFAULT_TRAIL_NAME: &str = "audit-tools";

/// A seal made and not stored yet, with the salts its records' commitments were made with and
/// the head it moves the chain to.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The seal.
    pub seal: RawDocumentBuf,
    /// The salt documents, stored with (or before) the seal: a seal stored without them would
    /// leave its records unverifiable.
    pub salts: Vec<RawDocumentBuf>,
    /// The head once the seal is stored.
    pub head: Head,
}

/// Builds the seals of one stream, in order.
pub struct Sealer {
    head: Head,
    key: Option<SigningKey>,
    /// `<trail name>/<stream>`: the checkpoints' origin line.
    origin: String,
    /// Salts are drawn from a keyed pseudo-random function of this writer's own secret (taken
    /// from the operating system once) and a counter: unpredictable to anyone without the
    /// secret, which never leaves memory, and no system call per record.
    salt_key: [u8; 32],
    salts_drawn: AtomicU64,
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
    /// A new stream (nothing sealed yet) of the trail named [`DEFAULT_TRAIL_NAME`], signing with
    /// `key` when given.
    pub fn new(stream: ObjectId, key: Option<SigningKey>) -> Self {
        let mut salt_key = [0u8; 32];
        // The operating system's generator does not fail once the system has booted; without it
        // no key could be made either.
        getrandom::fill(&mut salt_key).expect("the operating system's random number generator");
        Sealer {
            head: Head {
                stream,
                seq: -1,
                hash: String::new(),
                tree: Frontier::new(),
            },
            key,
            origin: format!("{DEFAULT_TRAIL_NAME}/{}", stream.to_hex()),
            salt_key,
            salts_drawn: AtomicU64::new(0),
        }
    }

    /// The same stream, in the trail named `name` (a valid key name: no spaces, no `+`): the
    /// name its checkpoints carry, and the name of the key that signs them.
    pub fn trail(mut self, name: &str) -> Self {
        self.origin = format!("{name}/{}", self.head.stream.to_hex());
        self
    }

    /// The origin line of this stream's checkpoints.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The last seal made.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// True when the seals are signed.
    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    /// The key the seals are signed with.
    pub(crate) fn signing_key(&self) -> Option<&SigningKey> {
        self.key.as_ref()
    }

    /// The stream's tree head after the last seal, as a checkpoint states it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            origin: self.origin.clone(),
            size: self.head.tree.size(),
            root: self.head.tree.root(),
        }
    }

    /// A fresh salt.
    fn salt(&self) -> [u8; SALT_LEN] {
        let n = self.salts_drawn.fetch_add(1, Ordering::Relaxed);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.salt_key)
            .expect("HMAC takes a key of any length");
        m.update(&n.to_le_bytes());
        m.finalize().into_bytes().into()
    }

    /// What the next batch seal lists about the stored record `doc` of `c`, with a fresh salt.
    pub fn cover(&self, c: Collection, doc: &RawDocument) -> Covered {
        self.cover_with(c, doc, None)
    }

    /// [`cover`](Self::cover) with the salt `salt` (one already stored for the record) instead
    /// of a fresh one.
    pub fn cover_with(&self, c: Collection, doc: &RawDocument, salt: Option<&[u8]>) -> Covered {
        let salt = is_salted(Some(SALTED), c.name()).then(|| {
            salt.and_then(|s| <[u8; SALT_LEN]>::try_from(s).ok())
                .unwrap_or_else(|| self.salt())
        });
        let id = doc.get("_id").ok().flatten();
        let mut entry = RawDocumentBuf::new();
        entry.append("c", c.name());
        match id {
            Some(id) => entry.append_ref("id", id),
            None => entry.append("id", bson::RawBson::Null),
        }
        let h = commitment(salt.as_ref().map(|s| &s[..]), doc.as_bytes());
        entry.append_ref("h", binary(&h));
        if let Some(t) = record_date(c, doc) {
            entry.append("t", t);
        }
        let salt = salt.map(|salt| {
            let mut salt_doc = RawDocumentBuf::new();
            match id {
                Some(id) => salt_doc.append_ref("_id", id),
                None => salt_doc.append("_id", bson::RawBson::Null),
            }
            salt_doc.append("c", c.name());
            salt_doc.append_ref("s", binary(&salt));
            salt_doc
        });
        Covered {
            entry,
            salt,
            commitment: h,
        }
    }

    /// The seal of a batch of stored records, moving the head on at once (for callers that store
    /// it before anything else).
    pub fn batch<'a>(
        &mut self,
        records: impl IntoIterator<Item = (Collection, &'a RawDocument)>,
    ) -> Prepared {
        let covered: Vec<Covered> = records.into_iter().map(|(c, d)| self.cover(c, d)).collect();
        let prepared = self.prepare_batch(None, &covered);
        self.head = prepared.head.clone();
        prepared
    }

    /// A batch seal over `covered` (from [`cover`](Self::cover)), naming the `process` it writes
    /// for; the head moves on at [`commit`](Self::commit).
    pub fn prepare_batch(&self, process: Option<ObjectId>, covered: &[Covered]) -> Prepared {
        let mut records = bson::RawArrayBuf::new();
        let mut tree = self.head.tree.clone();
        let mut nodes = Vec::with_capacity(covered.len() * 32);
        let mut salts = Vec::with_capacity(covered.len());
        for c in covered {
            records.push(c.entry.clone());
            if let Some(salt) = &c.salt {
                let mut salt = salt.clone();
                salt.append("st", self.head.stream);
                salt.append("i", tree.size() as i64);
                salts.push(salt);
            }
            tree.push(merkle::leaf_hash(&c.commitment), &mut |n| {
                nodes.extend_from_slice(&n)
            });
        }
        let (seal, head) = self.prepare_raw("batch", tree, Some(nodes), |raw| {
            if let Some(p) = process {
                raw.append("process", p);
            }
            raw.append("commit", SALTED);
            raw.append("records", records);
        });
        Prepared { seal, salts, head }
    }

    /// A seal of `kind` with `body`'s fields after the chain fields. The stream's head moves on:
    /// the caller stores the returned seal before making the next (retrying the same bytes).
    pub fn seal(&mut self, kind: &str, body: Document) -> Result<RawDocumentBuf, SealError> {
        let (seal, head) = self.prepare(kind, body)?;
        self.head = head;
        Ok(seal)
    }

    /// A seal that would follow the head, and the head it would make; nothing moves until
    /// [`commit`](Self::commit). For a seal stored together with its records: if that write
    /// fails, the next seal takes the same place in the chain.
    ///
    /// The whole body is sealed or nothing is: a body that cannot be encoded (a key with a NUL
    /// byte, at any depth) is an error, never a seal that silently leaves that part out.
    pub fn prepare(&self, kind: &str, body: Document) -> Result<(RawDocumentBuf, Head), SealError> {
        let body = RawDocumentBuf::from_document(&body)
            .map_err(|e| SealError::Unencodable(e.to_string()))?;
        let mut elements = Vec::new();
        for element in &body {
            elements.push(element.map_err(|e| SealError::Unencodable(e.to_string()))?);
        }
        Ok(self.prepare_raw(kind, self.head.tree.clone(), None, |raw| {
            for (k, v) in elements {
                raw.append_ref(k, v);
            }
        }))
    }

    /// A seal of `kind` after the head, stating `tree` (with the interior nodes `nodes` its
    /// records completed, for a batch seal).
    fn prepare_raw(
        &self,
        kind: &str,
        tree: Frontier,
        nodes: Option<Vec<u8>>,
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
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: tree.size(),
            root: tree.root(),
        };
        raw.append("origin", checkpoint.origin.as_str());
        raw.append("size", checkpoint.size as i64);
        raw.append_ref("root", binary(&checkpoint.root));
        if let Some(nodes) = &nodes {
            raw.append_ref("nodes", binary(nodes));
        }
        if let Some(key) = &self.key {
            let sig = key.sign(checkpoint.text().as_bytes());
            raw.append_ref("note_sig", binary(&sig.to_bytes()));
        }
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
            tree,
        };
        (raw, head)
    }

    /// Moves the head to a prepared seal's, once that seal is stored.
    pub fn commit(&mut self, head: Head) {
        debug_assert_eq!(head.seq, self.head.seq + 1);
        self.head = head;
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::{keygen, load_signing_key, load_verifying_key, public_key_path};
    use super::super::keys::{signature_is_valid, KeyError};
    use super::*;
    use crate::commitment::salt_of;
    use bson::{doc, rawdoc};

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
        let (first, second) = (first.seal, second.seal);
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
    fn a_commitment_needs_the_salt_and_every_salt_differs() {
        let s = Sealer::new(ObjectId::new(), None);
        let a = access(1);
        let (one, two) = (
            s.cover(Collection::Access, &a),
            s.cover(Collection::Access, &a),
        );
        let (one_salt, two_salt) = (one.salt.unwrap(), two.salt.unwrap());
        let salt = salt_of(&one_salt).unwrap();
        assert_ne!(salt, salt_of(&two_salt).unwrap(), "a fresh salt each time");
        assert_eq!(one_salt.get_object_id("_id"), a.get_object_id("_id"));
        let h = entry_hash_hex(&one.entry).unwrap();
        assert_eq!(h, hex(&commitment(Some(salt), a.as_bytes())));
        assert_ne!(
            h,
            sha256_hex(a.as_bytes()),
            "the bytes alone do not give it"
        );
        let process = s.cover(Collection::Process, &a);
        assert!(process.salt.is_none(), "a process document is never erased");
        assert_eq!(
            entry_hash_hex(&process.entry).unwrap(),
            sha256_hex(a.as_bytes())
        );
    }

    #[test]
    fn a_body_that_cannot_be_encoded_is_an_error_not_a_shorter_seal() {
        let s = Sealer::new(ObjectId::new(), None);
        let nested = doc! { "changes": [ { "c": "audit_access", "id\u{0}x": 1 } ] };
        assert!(matches!(
            s.prepare("erasure", nested),
            Err(SealError::Unencodable(_))
        ));
        let top = doc! { "bad\u{0}key": 1 };
        assert!(matches!(
            s.prepare("erasure", top),
            Err(SealError::Unencodable(_))
        ));
        let (seal, _) = s.prepare("prune", doc! { "reason": "ok" }).unwrap();
        assert_eq!(seal.get_str("reason").unwrap(), "ok");
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
        let seal = s.batch([(Collection::Access, &*a)]).seal;
        assert!(signature_is_valid(&seal, &public));
        let other = keygen(&dir.path().join("other.key")).unwrap();
        assert!(!signature_is_valid(&seal, &other));
        assert!(matches!(
            load_verifying_key(&path),
            Err(KeyError::Format { what: "public", .. })
        ));
    }
}
