//! Evidence for a third party: checkpoints kept outside the database catch what the seals alone
//! cannot (the newest seals deleted with their records, a whole stream deleted, an emptied trail,
//! history rewritten by someone holding the key), and a receipt proves one record to someone
//! holding only the public key.
//!
//! Receipts are checked twice: by the crate, and by a verifier written here from RFC 6962 / 9162
//! and the C2SP formats (`independent`), which shares no code with the crate and is first held
//! against the RFC test vectors.

use audit_runtime::seal::{self, FindingKind, VerifyOptions};
use audit_runtime::{
    Access, AccessUser, AccessView, AuditConfig, Auditor, Collection, DbConnection, Filter,
    FindOptions, Order, Store,
};
use bson::oid::ObjectId;
use bson::{Bson, Document, RawDocumentBuf};
use chrono::{Duration, Utc};
use std::path::PathBuf;

/// A verifier of receipts written from the specifications, not from the crate.
mod independent {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    use sha2::{Digest, Sha256};

    pub(crate) type Hash = [u8; 32];

    pub(crate) fn leaf(data: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update([0]);
        h.update(data);
        h.finalize().into()
    }

    pub(crate) fn node(l: &Hash, r: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update([1]);
        h.update(l);
        h.update(r);
        h.finalize().into()
    }

    /// RFC 6962 2.1: MTH of a list of leaf hashes.
    pub(crate) fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// RFC 9162 2.1.3.2.
    pub(crate) fn inclusion(
        index: u64,
        size: u64,
        leaf: Hash,
        proof: &[Hash],
        root: &Hash,
    ) -> bool {
        if index >= size {
            return false;
        }
        let (mut fnode, mut snode, mut r) = (index, size - 1, leaf);
        for p in proof {
            if snode == 0 {
                return false;
            }
            if fnode % 2 == 1 || fnode == snode {
                r = node(p, &r);
                if fnode % 2 == 0 {
                    while fnode % 2 == 0 && fnode != 0 {
                        fnode /= 2;
                        snode /= 2;
                    }
                }
            } else {
                r = node(&r, p);
            }
            fnode /= 2;
            snode /= 2;
        }
        snode == 0 && r == *root
    }

    fn b64(s: &str) -> Result<Vec<u8>, String> {
        STANDARD.decode(s).map_err(|e| e.to_string())
    }

    fn hash(s: &str) -> Result<Hash, String> {
        b64(s)?.try_into().map_err(|_| "not 32 bytes".to_string())
    }

    fn decimal(s: &str) -> Result<u64, String> {
        let n: u64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
        if n.to_string() != s {
            return Err(format!("not canonical: {s}"));
        }
        Ok(n)
    }

    /// What a checked receipt says.
    #[derive(Debug)]
    pub(crate) struct Proven {
        pub(crate) origin: String,
        pub(crate) size: u64,
        pub(crate) index: u64,
        /// The record's bytes, when the receipt carries them.
        pub(crate) record: Option<Vec<u8>>,
    }

    /// Checks a receipt (c2sp.org/tlog-proof with the documented `extra` forms) against `key`.
    pub(crate) fn check(receipt: &str, key: &VerifyingKey) -> Result<Proven, String> {
        if receipt.chars().any(|c| c.is_control() && c != '\n') {
            return Err("control character".into());
        }
        let rest = receipt
            .strip_prefix("c2sp.org/tlog-proof@v1\n")
            .ok_or("header")?;
        let (head, note) = rest.split_once("\n\n").ok_or("no checkpoint")?;
        let mut lines = head.split('\n');
        let extra = b64(lines
            .next()
            .and_then(|l| l.strip_prefix("extra "))
            .ok_or("no extra")?)?;
        let index = decimal(
            lines
                .next()
                .and_then(|l| l.strip_prefix("index "))
                .ok_or("no index")?,
        )?;
        let proof = lines.map(hash).collect::<Result<Vec<_>, _>>()?;
        // The signed note: text, blank line, signature lines.
        let split = note.rfind("\n\n").ok_or("no signatures")?;
        let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
        let body: Vec<&str> = text.strip_suffix('\n').ok_or("text")?.split('\n').collect();
        let [origin, size, root] = body[..] else {
            return Err("checkpoint lines".into());
        };
        let (size, root) = (decimal(size)?, hash(root)?);
        // The leaf, from what `extra` carries.
        let (data, record) = match extra.split_first() {
            Some((1, rest)) if rest.len() > 32 => {
                let (salt, bytes) = rest.split_at(32);
                let mut h = Sha256::new();
                h.update(bytes);
                h.update(salt);
                (<Hash>::from(h.finalize()), Some(bytes.to_vec()))
            }
            Some((2, bytes)) => (Sha256::digest(bytes).into(), Some(bytes.to_vec())),
            Some((3, c)) if c.len() == 32 => (c.try_into().unwrap(), None),
            _ => return Err("extra".into()),
        };
        if let Some(r) = &record {
            let declared = u32::from_le_bytes(r.get(..4).ok_or("short")?.try_into().unwrap());
            if declared as usize != r.len() || r.last() != Some(&0) {
                return Err("not one document".into());
            }
            bson::Document::from_reader(&mut &r[..]).map_err(|e| e.to_string())?;
        }
        if !inclusion(index, size, leaf(&data), &proof, &root) {
            return Err("inclusion".into());
        }
        // The key named as the origin without its last part, id = SHA-256(name \n 0x01 key)[:4].
        let name = origin.rsplit_once('/').ok_or("origin")?.0;
        let mut id_input = name.as_bytes().to_vec();
        id_input.extend_from_slice(&[b'\n', 1]);
        id_input.extend_from_slice(key.as_bytes());
        let id = &Sha256::digest(&id_input)[..4];
        let sigs = sigs.strip_suffix('\n').ok_or("signature lines")?;
        let mut verified = false;
        for line in sigs.split('\n') {
            let rest = line.strip_prefix("\u{2014} ").ok_or("signature line")?;
            let (n, s) = rest.split_once(' ').ok_or("signature line")?;
            let s = b64(s)?;
            if n == name && s.len() == 68 && &s[..4] == id {
                let sig = Signature::from_slice(&s[4..]).map_err(|e| e.to_string())?;
                key.verify(text.as_bytes(), &sig)
                    .map_err(|e| e.to_string())?;
                verified = true;
            }
        }
        if !verified {
            return Err("not signed by the key".into());
        }
        Ok(Proven {
            origin: origin.to_owned(),
            size,
            index,
            record,
        })
    }

    fn unhex(s: &str) -> Hash {
        (0..32)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>()
            .try_into()
            .unwrap()
    }

    /// The RFC's test data (transparency-dev/merkle, testonly): the verifier agrees with it.
    #[test]
    fn the_independent_verifier_agrees_with_the_rfc_vectors() {
        let inputs: [&[u8]; 8] = [
            b"",
            &[0x00],
            &[0x10],
            &[0x20, 0x21],
            &[0x30, 0x31],
            &[0x40, 0x41, 0x42, 0x43],
            &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            &[
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ];
        let leaves: Vec<Hash> = inputs.iter().map(|d| leaf(d)).collect();
        assert_eq!(
            mth(&leaves[..3]),
            unhex("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77")
        );
        assert_eq!(
            mth(&leaves),
            unhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
        );
        let proof = [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ]
        .map(unhex);
        assert!(inclusion(5, 8, leaves[5], &proof, &mth(&leaves)));
        assert!(!inclusion(4, 8, leaves[5], &proof, &mth(&leaves)));
        let proof = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ]
        .map(unhex);
        assert!(inclusion(1, 5, leaves[1], &proof, &mth(&leaves[..5])));
        assert!(!inclusion(1, 10, leaves[1], &proof, &mth(&leaves[..5])));
    }
}

struct Trail {
    store: Store,
    connection: DbConnection,
    key: PathBuf,
    checkpoints: PathBuf,
    ids: Vec<ObjectId>,
    dir: tempfile::TempDir,
}

fn access(i: usize) -> Access {
    let mut a = Access::new(
        format!("/patients/{i}"),
        Utc::now() - Duration::hours(1) + Duration::seconds(i as i64),
        AccessView::new("clinic::patients::show", "clinic", "show"),
    );
    a.user = Some(if i.is_multiple_of(2) {
        AccessUser::new(42, "erin")
    } else {
        AccessUser::new(7, "dr-who")
    });
    a
}

fn config(
    t_key: &std::path::Path,
    checkpoints: &std::path::Path,
    conn: &DbConnection,
    extra: &str,
) -> AuditConfig {
    let toml = format!(
        "seal_key_file = {:?}\ncheckpoint_file = {:?}\nseal_anchor_every = 1\n\
         checkpoint_interval_secs = 0\n{extra}",
        t_key.display().to_string(),
        checkpoints.display().to_string()
    );
    AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn.clone())
}

/// A signed trail of `batches` sealed batches of `per_batch` accesses, every seal published as a
/// checkpoint to the witness file.
async fn trail(kind: &str, batches: usize, per_batch: usize) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let checkpoints = dir.path().join("audit.checkpoints");
    let connection = audit_tests::connection_in(kind, dir.path());
    let mut t = Trail {
        store: Store::open(&connection).await.unwrap(),
        connection,
        key,
        checkpoints,
        ids: Vec::new(),
        dir,
    };
    t.write(batches, per_batch).await;
    t
}

impl Trail {
    /// Another writer (a new stream) adds `batches` batches.
    async fn write(&mut self, batches: usize, per_batch: usize) {
        let config = config(&self.key, &self.checkpoints, &self.connection, "");
        let (auditor, guard) = Auditor::start(config).await.unwrap();
        for _ in 0..batches {
            for _ in 0..per_batch {
                let a = access(self.ids.len());
                self.ids.push(a.id);
                auditor.record_access(a).await;
            }
            auditor.flush().await;
        }
        let m = guard.shutdown().await;
        assert_eq!(m.written as usize, batches * per_batch, "{m:?}");
        assert!(m.checkpoints >= 1, "{m:?}");
        assert_eq!(m.checkpoint_failures, 0, "{m:?}");
    }

    fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        seal::load_verifying_key(&seal::public_key_path(&self.key)).unwrap()
    }

    fn published(&self) -> Vec<seal::note::Checkpoint> {
        let text = std::fs::read_to_string(&self.checkpoints).unwrap();
        seal::read_checkpoints(&text, Some(&self.public_key())).unwrap()
    }

    async fn verify(&self, with_checkpoints: bool) -> Vec<seal::Finding> {
        let mut opts = VerifyOptions::default();
        opts.key = Some(self.public_key());
        if with_checkpoints {
            opts.checkpoints = self.published();
        }
        let store = Store::open_read_only(&self.connection).await.unwrap();
        let mut findings = Vec::new();
        seal::verify(&store, &opts, |f| findings.push(f.clone()), |_| {})
            .await
            .unwrap();
        findings
    }

    /// The seals of `stream`, in order.
    async fn seals_of(&self, stream: ObjectId) -> Vec<Document> {
        self.store
            .find_raw(
                Collection::Seal,
                &FindOptions::new(Filter::eq("stream", stream)).sort("seq", Order::Asc),
            )
            .await
            .unwrap()
    }

    /// The stream of the first writer (the one that sealed the first access).
    async fn first_stream(&self) -> ObjectId {
        let seals = self
            .store
            .find_raw(
                Collection::Seal,
                &FindOptions::new(Filter::eq("kind", "batch")),
            )
            .await
            .unwrap();
        seals
            .iter()
            .find(|s| {
                s.get_array("records").unwrap().iter().any(|e| {
                    e.as_document().unwrap().get("id") == Some(&Bson::ObjectId(self.ids[0]))
                })
            })
            .unwrap()
            .get_object_id("stream")
            .unwrap()
    }

    /// Deletes `seal` and the accesses and salts it lists (what an attacker removing the newest
    /// part of the trail deletes).
    async fn delete_with_records(&self, seal: &Document) {
        for e in seal.get_array("records").unwrap() {
            let e = e.as_document().unwrap();
            if e.get_str("c").unwrap() != Collection::Access.name() {
                continue;
            }
            let id = e.get("id").unwrap().clone();
            for c in [Collection::Access, Collection::Salt] {
                self.store
                    .delete_many(c, &Filter::Eq("_id".into(), id.clone()))
                    .await
                    .unwrap();
            }
        }
        self.store
            .delete_many(
                Collection::Seal,
                &Filter::eq("_id", seal.get_object_id("_id").unwrap()),
            )
            .await
            .unwrap();
    }

    fn audit(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"));
        c.env_remove("AUDIT_DB")
            .env_remove("AUDIT_CONFIG")
            .env("AUDIT_SEAL_KEY_FILE", &self.key)
            .args(["--db", &audit_tests::db_arg(&self.connection)]);
        c
    }
}

fn has(findings: &[seal::Finding], kind: FindingKind) -> bool {
    findings.iter().any(|f| f.kind == kind)
}

use audit_tests::on_both_stores;

on_both_stores!(
    a_clean_trail_holds_every_published_checkpoint,
    the_newest_seals_deleted_with_their_records_are_a_truncation,
    a_deleted_stream_and_an_emptied_trail_are_found,
    history_rewritten_with_the_key_is_inconsistent_with_the_checkpoints,
    receipts_prove_one_record_without_the_database,
    erasure_drop_and_retention_keep_the_checkpoints_held,
    the_command_line_publishes_proves_and_checks,
);

async fn a_clean_trail_holds_every_published_checkpoint(kind: &str) {
    let t = trail(kind, 4, 3).await;
    let published = t.published();
    assert!(published.len() >= 2, "{published:?}");
    assert_eq!(
        published.last().unwrap().size,
        12 + 1,
        "the last checkpoint covers every access and the process"
    );
    assert_eq!(t.verify(true).await, []);
    // What the seals hold is what was published: the newest checkpoint read from the store.
    let current = seal::checkpoints(&t.store).await.unwrap();
    assert_eq!(current.len(), 1);
    let note = seal::note::SignedNote::parse(&current[0]).unwrap();
    assert_eq!(
        seal::note::Checkpoint::parse(&note.text).unwrap(),
        *published.last().unwrap()
    );
}

async fn the_newest_seals_deleted_with_their_records_are_a_truncation(kind: &str) {
    let t = trail(kind, 5, 2).await;
    let stream = t.first_stream().await;
    let seals = t.seals_of(stream).await;
    for s in &seals[seals.len() - 3..] {
        t.delete_with_records(s).await;
    }
    assert_eq!(
        t.verify(false).await,
        [],
        "the seals alone cannot tell: what remains still chains"
    );
    let findings = t.verify(true).await;
    assert!(has(&findings, FindingKind::Truncated), "{findings:#?}");
    let f = findings
        .iter()
        .find(|f| f.kind == FindingKind::Truncated)
        .unwrap();
    assert_eq!(f.stream.as_deref(), Some(stream.to_hex().as_str()));
}

async fn a_deleted_stream_and_an_emptied_trail_are_found(kind: &str) {
    let mut t = trail(kind, 2, 2).await;
    t.write(1, 2).await;
    let first = t.first_stream().await;
    for s in t.seals_of(first).await {
        t.delete_with_records(&s).await;
    }
    assert_eq!(t.verify(false).await, [], "the other stream still chains");
    let findings = t.verify(true).await;
    assert!(
        findings.iter().any(|f| f.kind == FindingKind::StreamMissing
            && f.stream.as_deref() == Some(first.to_hex().as_str())),
        "{findings:#?}"
    );

    for c in Collection::ALL
        .into_iter()
        .chain([Collection::Seal, Collection::Salt])
    {
        t.store.delete_many(c, &Filter::all()).await.unwrap();
    }
    let store = Store::open_read_only(&t.connection).await.unwrap();
    let empty = seal::verify(&store, &VerifyOptions::default(), |_| {}, |_| {}).await;
    assert!(
        matches!(empty, Err(seal::VerifyError::EmptyTrail)),
        "without checkpoints an emptied trail is an error: {empty:?}"
    );
    let findings = t.verify(true).await;
    assert!(
        !findings.is_empty()
            && findings
                .iter()
                .all(|f| f.kind == FindingKind::StreamMissing),
        "with checkpoints it is a finding per stream: {findings:#?}"
    );
}

/// Someone holding the private key edits an old record and re-seals the whole stream: the seals
/// verify, signed and chained, but the checkpoints published before say otherwise.
async fn history_rewritten_with_the_key_is_inconsistent_with_the_checkpoints(kind: &str) {
    let t = trail(kind, 4, 3).await;
    let stream = t.first_stream().await;
    let seals = t.seals_of(stream).await;
    assert!(seals.iter().all(|s| s.get_str("kind").unwrap() == "batch"));

    // The edit: the path of the fourth access.
    let target = t.ids[3];
    let docs = t
        .store
        .find_raw(
            Collection::Access,
            &FindOptions::new(Filter::eq("_id", target)),
        )
        .await
        .unwrap();
    let mut edited = docs[0].clone();
    edited
        .get_document_mut("request")
        .unwrap()
        .insert("path", "/patients/nobody");
    t.store
        .delete_many(Collection::Access, &Filter::eq("_id", target))
        .await
        .unwrap();
    t.store
        .insert_raw_documents(
            Collection::Access,
            vec![RawDocumentBuf::from_document(&edited).unwrap()],
        )
        .await
        .unwrap();

    // The re-sealing, with the key, of every batch of the stream in its order.
    let key = seal::load_signing_key(&t.key).unwrap();
    let mut sealer = seal::Sealer::new(stream, Some(key));
    for old in &seals {
        let mut records = Vec::new();
        for e in old.get_array("records").unwrap() {
            let e = e.as_document().unwrap();
            let c = Collection::ALL
                .into_iter()
                .find(|c| c.name() == e.get_str("c").unwrap())
                .unwrap();
            let id = e.get("id").unwrap().clone();
            let mut bytes = None;
            t.store
                .for_each_raw_batch(c, &Filter::Eq("_id".into(), id.clone()), 1, |d| {
                    bytes = d.into_iter().next();
                    Ok(())
                })
                .await
                .unwrap();
            records.push((c, bytes.unwrap()));
            t.store
                .delete_many(Collection::Salt, &Filter::Eq("_id".into(), id))
                .await
                .unwrap();
        }
        let prepared = sealer.batch(records.iter().map(|(c, d)| (*c, &**d)));
        t.store
            .delete_many(
                Collection::Seal,
                &Filter::eq("_id", old.get_object_id("_id").unwrap()),
            )
            .await
            .unwrap();
        t.store
            .insert_raw_documents(Collection::Salt, prepared.salts)
            .await
            .unwrap();
        t.store
            .insert_raw_documents(Collection::Seal, vec![prepared.seal])
            .await
            .unwrap();
    }
    assert_eq!(
        t.verify(false).await,
        [],
        "re-sealed with the key, the trail alone looks intact"
    );
    let findings = t.verify(true).await;
    assert!(has(&findings, FindingKind::Inconsistent), "{findings:#?}");
}

async fn receipts_prove_one_record_without_the_database(kind: &str) {
    let t = trail(kind, 3, 3).await;
    let key = t.public_key();
    let id = t.ids[4];
    let receipt = seal::prove(&t.store, id, None).await.unwrap();
    assert!(receipt.holds_record);
    let text = receipt.to_text();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");

    // Both verifiers accept it and read the record back, byte for byte.
    let checked = seal::check_receipt(&text, &key).unwrap();
    let proven = independent::check(&text, &key).unwrap();
    let mut stored = None;
    t.store
        .for_each_raw_batch(Collection::Access, &Filter::eq("_id", id), 1, |d| {
            stored = d.into_iter().next();
            Ok(())
        })
        .await
        .unwrap();
    let stored = stored.unwrap();
    assert_eq!(proven.record.as_deref(), Some(stored.as_bytes()));
    assert_eq!(checked.record.unwrap(), stored.to_document().unwrap());
    assert_eq!(proven.index, checked.index);
    assert_eq!(proven.size, 9 + 1);
    assert!(proven.origin.starts_with("audit-tools/"));

    // Against an earlier checkpoint the auditor already holds.
    let earlier = t
        .published()
        .into_iter()
        .find(|c| c.size > proven.index && c.size < proven.size)
        .expect("an earlier checkpoint covering the record");
    let old = seal::prove(&t.store, id, Some(earlier.size)).await.unwrap();
    let p = independent::check(&old.to_text(), &key).unwrap();
    assert_eq!(p.size, earlier.size);

    // The process document: committed to without a salt.
    let process = t
        .store
        .find_raw(Collection::Process, &FindOptions::new(Filter::all()))
        .await
        .unwrap()[0]
        .get_object_id("_id")
        .unwrap();
    let r = seal::prove(&t.store, process, None).await.unwrap();
    assert!(r.holds_record);
    assert!(independent::check(&r.to_text(), &key).is_ok());

    // One bit flipped anywhere: neither verifier accepts it.
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut b = bytes.to_vec();
            b[i] ^= 1 << bit;
            let Ok(flipped) = String::from_utf8(b) else {
                continue;
            };
            assert!(
                independent::check(&flipped, &key).is_err(),
                "byte {i} bit {bit} flipped still checks (independent)"
            );
            assert!(
                seal::check_receipt(&flipped, &key).is_err(),
                "byte {i} bit {bit} flipped still checks (crate)"
            );
        }
    }
    // Another key does not vouch for it.
    let other = tempfile::tempdir().unwrap();
    let other = seal::keygen(&other.path().join("k")).unwrap();
    assert!(independent::check(&text, &other).is_err());
    assert!(seal::check_receipt(&text, &other).is_err());

    // Altered afterwards: the old receipt still proves what was sealed, a new one can only give
    // the commitment, and verify names the alteration.
    let docs = t
        .store
        .find_raw(Collection::Access, &FindOptions::new(Filter::eq("_id", id)))
        .await
        .unwrap();
    let mut edited = docs[0].clone();
    edited.insert("interlink_id", "forged");
    t.store
        .delete_many(Collection::Access, &Filter::eq("_id", id))
        .await
        .unwrap();
    t.store
        .insert_raw_documents(
            Collection::Access,
            vec![RawDocumentBuf::from_document(&edited).unwrap()],
        )
        .await
        .unwrap();
    assert!(independent::check(&text, &key).is_ok());
    let after = seal::prove(&t.store, id, None).await.unwrap();
    assert!(!after.holds_record);
    let p = independent::check(&after.to_text(), &key).unwrap();
    assert_eq!(p.record, None);
    assert_eq!(p.index, proven.index);
    let findings = t.verify(false).await;
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::Modified && f.id == Some(id.to_hex())),
        "{findings:#?}"
    );
}

async fn erasure_drop_and_retention_keep_the_checkpoints_held(kind: &str) {
    let t = trail(kind, 3, 4).await;
    let config = config(&t.key, &t.checkpoints, &t.connection, "");
    let erased = seal::erase_user(&t.store, &config, &Bson::Int64(42), false)
        .await
        .unwrap();
    assert!(erased.accesses > 0, "{erased:?}");
    assert_eq!(t.verify(true).await, []);
    // An erased record is still provable: its receipt carries the commitment that was sealed.
    let r = seal::prove(&t.store, t.ids[0], None).await.unwrap();
    assert!(!r.holds_record);
    assert!(independent::check(&r.to_text(), &t.public_key()).is_ok());

    let out = t
        .audit()
        .args(["drop", "--yes"])
        .arg(
            (Utc::now() - Duration::days(1))
                .format("%Y-%m-%d")
                .to_string(),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        t.store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        0
    );
    assert_eq!(t.verify(true).await, [], "the tree keeps its leaves");

    // Retention: records three days old, written by another instance, then removed by the
    // retention job of a third; every checkpoint is still held.
    let (auditor, guard) = Auditor::start(config.clone()).await.unwrap();
    for i in 0..3 {
        let mut a = access(100 + i);
        a.time.request = Utc::now() - Duration::days(3);
        auditor.record_access(a).await;
    }
    guard.shutdown().await;
    let old = t
        .store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap();
    assert_eq!(old, 3);
    let retention = self::config(&t.key, &t.checkpoints, &t.connection, "retention_days = 1");
    let (_auditor, guard) = Auditor::start(retention).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t
        .store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap()
        != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    guard.shutdown().await;
    assert_eq!(t.verify(true).await, []);
}

async fn the_command_line_publishes_proves_and_checks(kind: &str) {
    let t = trail(kind, 2, 3).await;
    let public = seal::public_key_path(&t.key);
    let out = t.audit().arg("checkpoint").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let cps = seal::read_checkpoints(&printed, Some(&t.public_key())).unwrap();
    assert_eq!(cps.len(), 1);
    assert_eq!(cps[0], *t.published().last().unwrap());

    let receipt = t.dir.path().join("r.tlog-proof");
    let out = t
        .audit()
        .args(["prove", "--id", &t.ids[1].to_hex(), "--out"])
        .arg(&receipt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let check = |key: &str| {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
            .env_remove("AUDIT_CONFIG")
            .args(["check-receipt", "--key", key])
            .arg(&receipt)
            .output()
            .unwrap()
    };
    let ok = check(public.to_str().unwrap());
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid: leaf"));
    // The verifier key string that keygen prints works as well.
    let vkey = seal::note::vkey("audit-tools", &t.public_key());
    assert_eq!(check(&vkey).status.code(), Some(0));
    let mut text = std::fs::read_to_string(&receipt).unwrap();
    text = text.replacen("index ", "index 1", 1);
    std::fs::write(&receipt, text).unwrap();
    let bad = check(public.to_str().unwrap());
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");

    let verify = |t: &Trail| {
        t.audit()
            .args(["verify", "--key"])
            .arg(&public)
            .arg("--checkpoints")
            .arg(&t.checkpoints)
            .output()
            .unwrap()
    };
    let ok = verify(&t);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let stream = t.first_stream().await;
    let seals = t.seals_of(stream).await;
    t.delete_with_records(seals.last().unwrap()).await;
    let bad = verify(&t);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stdout).contains("truncated"));

    // A checkpoint file that is not one, or not signed by the key: a usage error.
    let junk = t.dir.path().join("junk");
    std::fs::write(&junk, "not a checkpoint\n").unwrap();
    let out = t
        .audit()
        .args(["verify", "--key"])
        .arg(&public)
        .arg("--checkpoints")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// The witness sinks: the file and an HTTP endpoint get the checkpoints; an endpoint that fails
/// for a while costs counted failures, never a request; the store down (records to the journal)
/// and back, the checkpoints go on, and every one published is held by the trail at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_sinks_get_checkpoints_through_failures_and_an_outage() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let failing = Arc::new(AtomicBool::new(false));
    let app = {
        let (received, failing) = (received.clone(), failing.clone());
        axum::Router::new().route(
            "/add-checkpoint",
            axum::routing::post(move |body: String| {
                let (received, failing) = (received.clone(), failing.clone());
                async move {
                    if failing.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    received.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let (addr, server) = audit_tests::serve(app).await;

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let checkpoints = dir.path().join("audit.checkpoints");
    let db = dir.path().join("audit.db");
    let conn = DbConnection::Sqlite(db.clone());
    let extra = format!(
        "run_async = true\nspill_path = {:?}\ncheckpoint_url = \"http://{addr}/add-checkpoint\"",
        dir.path().join("audit.spill").display().to_string()
    );
    let (auditor, guard) = Auditor::start(config(&key, &checkpoints, &conn, &extra))
        .await
        .unwrap();
    async fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "waited for {what}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let mut n = 0;
    let mut record = |count: usize| {
        let batch: Vec<Access> = (0..count)
            .map(|_| {
                n += 1;
                access(n)
            })
            .collect();
        batch
    };
    for a in record(3) {
        auditor.record_access(a).await;
    }
    auditor.flush().await;
    wait_for("the first checkpoint", || {
        !received.lock().unwrap().is_empty()
    })
    .await;

    // The endpoint fails: publications fail, counted; records are still stored and sealed.
    failing.store(true, Ordering::SeqCst);
    for a in record(3) {
        auditor.record_access(a).await;
    }
    auditor.flush().await;
    wait_for("a failed publication", || {
        auditor.metrics().checkpoint_failures > 0
    })
    .await;
    failing.store(false, Ordering::SeqCst);

    // The store down: records go to the journal; back up, they are stored, sealed, published.
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for a in record(4) {
        auditor.record_access(a).await;
    }
    wait_for("the records journaled", || auditor.metrics().spilled >= 4).await;
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let m = guard.shutdown().await;
    assert_eq!(m.written, 10, "{m:?}");
    assert!(m.checkpoint_failures >= 1, "{m:?}");
    server.abort();

    let public = seal::load_verifying_key(&seal::public_key_path(&key)).unwrap();
    let in_file = seal::read_checkpoints(
        &std::fs::read_to_string(&checkpoints).unwrap(),
        Some(&public),
    )
    .unwrap();
    let posted: Vec<seal::note::Checkpoint> = received
        .lock()
        .unwrap()
        .iter()
        .map(|n| seal::read_checkpoints(n, Some(&public)).unwrap().remove(0))
        .collect();
    assert_eq!(
        in_file.last().unwrap().size,
        10 + 1,
        "the last checkpoint covers every record, the journaled ones included"
    );
    assert_eq!(
        posted.last(),
        in_file.last(),
        "the endpoint got the last one too"
    );
    let mut opts = VerifyOptions::default();
    opts.key = Some(public);
    opts.checkpoints = in_file.into_iter().chain(posted).collect();
    let store = Store::open_read_only(&conn).await.unwrap();
    let mut findings = Vec::new();
    seal::verify(&store, &opts, |f| findings.push(f.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(findings, []);
}

/// Checkpoint sinks without a key to sign with, or an endpoint that is not HTTP: refused at start.
#[test]
fn witness_settings_are_checked_at_start() {
    let refused = |toml: &str| {
        AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
            .unwrap_err()
            .to_string()
    };
    assert!(refused("checkpoint_file = \"/tmp/x\"").contains("seal_key_file"));
    assert!(
        refused("seal_key_file = \"k\"\ncheckpoint_url = \"ftp://x\"").contains("checkpoint_url")
    );
    assert!(refused("trail_name = \"a b\"").contains("trail_name"));
    let ok = AuditConfig::from_sources(
        None,
        [
            ("AUDIT_SEAL_KEY_FILE", "k"),
            ("AUDIT_CHECKPOINT_FILE", "/tmp/cp"),
            ("AUDIT_TRAIL_NAME", "clinic.example/audit"),
        ],
    )
    .unwrap();
    assert_eq!(ok.trail_name, "clinic.example/audit");
    assert_eq!(ok.checkpoint_file, Some(PathBuf::from("/tmp/cp")));
}
