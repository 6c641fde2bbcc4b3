//! Tamper evidence, tried as an attacker with write access to the database would: edit one byte of
//! a record, delete a record, insert a copy, delete a seal, swap two seals' contents, re-sign an
//! edited seal with another key. `verify` must name each one; and after legitimate changes (a
//! ranged drop, a purge, a spill-journal replay) it must stay clean. On both stores, with the
//! seals written by the real writer.

use audit_runtime::seal::{self, FindingKind, VerifyOptions};
use audit_runtime::{
    Access, AccessView, AuditConfig, Auditor, Collection, DbConnection, Filter, FindOptions, Store,
};
use bson::oid::ObjectId;
use bson::{Bson, RawDocumentBuf};
use chrono::{Duration, Utc};
use std::path::PathBuf;

struct Trail {
    store: Store,
    connection: DbConnection,
    key: PathBuf,
    /// The accesses recorded, in order.
    ids: Vec<ObjectId>,
    _dir: tempfile::TempDir,
}

fn connection(kind: &str, dir: &tempfile::TempDir) -> DbConnection {
    audit_tests::connection_in(kind, dir.path())
}

fn access(i: usize) -> Access {
    // Dated an hour ago: older than the in-flight window, so nothing is excused as "not yet sealed".
    Access::new(
        format!("/orders/{i}"),
        Utc::now() - Duration::hours(1) + Duration::seconds(i as i64),
        AccessView::new("shop::orders::show", "shop", "show"),
    )
}

/// A trail of `batches` batches of `per_batch` accesses, each batch flushed (so sealed) before the
/// next, written by a real auditor signing with a fresh key.
async fn trail(kind: &str, batches: usize, per_batch: usize, extra: &str) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let conn = connection(kind, &dir);
    let toml = format!("seal_key_file = {:?}\n{extra}", key.display().to_string());
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn.clone());
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let mut ids = Vec::new();
    for b in 0..batches {
        for i in 0..per_batch {
            let a = access(b * per_batch + i);
            ids.push(a.id);
            auditor.record_access(a).await;
        }
        auditor.flush().await;
    }
    let store = auditor.store().unwrap().clone();
    let m = guard.shutdown().await;
    assert_eq!(m.written as usize, batches * per_batch);
    Trail {
        store,
        connection: conn,
        key,
        ids,
        _dir: dir,
    }
}

impl Trail {
    fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        seal::load_verifying_key(&seal::public_key_path(&self.key)).unwrap()
    }

    async fn verify(&self) -> (Vec<seal::Finding>, seal::Summary) {
        let mut opts = VerifyOptions::default();
        opts.key = Some(self.public_key());
        let mut findings = Vec::new();
        let summary = seal::verify(&self.store, &opts, |f| findings.push(f.clone()), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.findings as usize, findings.len());
        (findings, summary)
    }

    async fn raw(&self, c: Collection, id: ObjectId) -> RawDocumentBuf {
        let docs = self
            .store
            .find_raw(c, &FindOptions::new(Filter::eq("_id", id)))
            .await
            .unwrap();
        RawDocumentBuf::from_document(&docs[0]).unwrap()
    }

    /// Replaces a stored document by other bytes under the same `_id` (what an edit does).
    async fn overwrite(&self, c: Collection, id: ObjectId, bytes: RawDocumentBuf) {
        self.store
            .delete_many(c, &Filter::eq("_id", id))
            .await
            .unwrap();
        self.store
            .insert_raw_documents(c, vec![bytes])
            .await
            .unwrap();
    }

    async fn seals(&self) -> Vec<bson::Document> {
        self.store
            .find_raw(
                Collection::Seal,
                &FindOptions::new(Filter::all()).sort("seq", audit_runtime::Order::Asc),
            )
            .await
            .unwrap()
    }
}

fn kinds(findings: &[seal::Finding]) -> Vec<(FindingKind, Option<String>)> {
    let mut k: Vec<_> = findings.iter().map(|f| (f.kind, f.id.clone())).collect();
    k.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    k
}

use audit_tests::on_both_stores;

on_both_stores!(
    an_untouched_trail_verifies_clean,
    edited_deleted_and_inserted_records_are_named,
    a_deleted_seal_breaks_the_chain,
    swapped_seal_contents_break_the_chain,
    a_seal_re_signed_with_another_key_is_caught,
    a_ranged_drop_leaves_the_trail_verifiable,
    an_erasure_keeps_the_trail_verifiable_and_other_edits_caught,
    a_spill_journal_replay_is_sealed,
    the_command_line_exits_by_what_it_found,
    retention_removes_old_records_and_the_trail_still_verifies,
);

async fn an_untouched_trail_verifies_clean(kind: &str) {
    let t = trail(kind, 3, 4, "").await;
    let (findings, summary) = t.verify().await;
    assert_eq!(findings, []);
    assert_eq!(summary.records, 12 + 1, "12 accesses and the process");
    assert!(
        summary.seals >= 3,
        "one seal per batch at least: {summary:?}"
    );
    assert_eq!(summary.heads.len(), 1, "one writer, one stream");
    let seals = t.seals().await;
    assert!(seals.iter().all(|s| s.get_str("sig").is_ok()), "signed");
}

async fn edited_deleted_and_inserted_records_are_named(kind: &str) {
    let t = trail(kind, 2, 3, "").await;
    // One byte of a stored record: `/orders/0` becomes `/orders/8`.
    let edited = t.raw(Collection::Access, t.ids[0]).await;
    let mut bytes = edited.into_bytes();
    let at = bytes
        .windows(9)
        .position(|w| w == b"/orders/0")
        .expect("path in the record")
        + 8;
    bytes[at] = b'8';
    t.overwrite(
        Collection::Access,
        t.ids[0],
        RawDocumentBuf::from_bytes(bytes).unwrap(),
    )
    .await;
    // One record deleted.
    t.store
        .delete_many(Collection::Access, &Filter::eq("_id", t.ids[1]))
        .await
        .unwrap();
    // A copy inserted under a new `_id`.
    let mut copy = t
        .raw(Collection::Access, t.ids[2])
        .await
        .to_document()
        .unwrap();
    let new_id = ObjectId::new();
    copy.insert("_id", new_id);
    t.store
        .insert_raw_documents(
            Collection::Access,
            vec![RawDocumentBuf::from_document(&copy).unwrap()],
        )
        .await
        .unwrap();

    let (findings, _) = t.verify().await;
    assert_eq!(
        kinds(&findings),
        kinds(&[
            finding(FindingKind::Modified, t.ids[0]),
            finding(FindingKind::Deleted, t.ids[1]),
            finding(FindingKind::Inserted, new_id),
        ]),
        "{findings:#?}"
    );
}

fn finding(kind: FindingKind, id: ObjectId) -> seal::Finding {
    let mut f = seal::Finding::new(kind, "");
    f.collection = Some("audit_access".into());
    f.id = Some(id.to_hex());
    f
}

async fn a_deleted_seal_breaks_the_chain(kind: &str) {
    let t = trail(kind, 3, 2, "").await;
    let seals = t.seals().await;
    let middle = seals
        .iter()
        .find(|s| s.get_i64("seq") == Ok(1))
        .expect("a second seal");
    let covered = middle.get_array("records").unwrap().len();
    t.store
        .delete_many(
            Collection::Seal,
            &Filter::eq("_id", middle.get_object_id("_id").unwrap()),
        )
        .await
        .unwrap();
    let (findings, _) = t.verify().await;
    let broken: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::ChainBroken)
        .collect();
    assert_eq!(broken.len(), 1, "{findings:#?}");
    assert!(broken[0].detail.contains("missing"), "{broken:?}");
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.kind == FindingKind::Inserted)
            .count(),
        covered,
        "its records are no longer covered: {findings:#?}"
    );
}

async fn swapped_seal_contents_break_the_chain(kind: &str) {
    let t = trail(kind, 3, 2, "").await;
    let seals = t.seals().await;
    let (a, b) = (seals[0].clone(), seals[1].clone());
    let (ra, rb) = (
        a.get_array("records").unwrap().clone(),
        b.get_array("records").unwrap().clone(),
    );
    let mut a2 = a.clone();
    a2.insert("records", rb);
    let mut b2 = b.clone();
    b2.insert("records", ra);
    for d in [a2, b2] {
        t.overwrite(
            Collection::Seal,
            d.get_object_id("_id").unwrap(),
            RawDocumentBuf::from_document(&d).unwrap(),
        )
        .await;
    }
    let (findings, _) = t.verify().await;
    let altered = findings
        .iter()
        .filter(|f| f.kind == FindingKind::ChainBroken && f.detail.contains("altered"))
        .count();
    assert_eq!(altered, 2, "{findings:#?}");
}

async fn a_seal_re_signed_with_another_key_is_caught(kind: &str) {
    let t = trail(kind, 2, 2, "").await;
    // The attacker edits a record and rewrites its seal consistently, signed with their own key.
    let victim = t.ids[0];
    let mut record = t
        .raw(Collection::Access, victim)
        .await
        .to_document()
        .unwrap();
    record.insert("interlink_id", "forged");
    let record = RawDocumentBuf::from_document(&record).unwrap();
    t.overwrite(Collection::Access, victim, record.clone())
        .await;
    let seals = t.seals().await;
    let first = seals[0].clone();
    // The commitment is salted; the salt is in the store, readable to the attacker.
    let salt = t.raw(Collection::Salt, victim).await;
    let salt = seal::salt_of(&salt).unwrap().to_vec();
    let mut rewritten = bson::Document::new();
    for (k, v) in first.iter() {
        if ["hash", "sig", "key"].contains(&k.as_str()) {
            continue;
        }
        let v = if k == "records" {
            Bson::Array(
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let mut e = e.as_document().unwrap().clone();
                        if e.get_object_id("id") == Ok(victim) {
                            e.insert(
                                "h",
                                bson::Binary {
                                    subtype: bson::spec::BinarySubtype::Generic,
                                    bytes: seal::commitment(Some(&salt), record.as_bytes())
                                        .to_vec(),
                                },
                            );
                        }
                        Bson::Document(e)
                    })
                    .collect(),
            )
        } else {
            v.clone()
        };
        rewritten.insert(k, v);
    }
    let mut raw = RawDocumentBuf::from_document(&rewritten).unwrap();
    let hash = seal::sha256_hex(raw.as_bytes());
    raw.append("hash", hash.clone());
    let dir = tempfile::tempdir().unwrap();
    let attacker = seal::load_signing_key(&{
        let p = dir.path().join("attacker.key");
        seal::keygen(&p).unwrap();
        p
    })
    .unwrap();
    use ed25519_dalek::Signer;
    let sig: String = attacker
        .sign(hash.as_bytes())
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    raw.append("sig", sig);
    t.overwrite(Collection::Seal, first.get_object_id("_id").unwrap(), raw)
        .await;

    let (findings, _) = t.verify().await;
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::BadSignature && f.seq == Some(0)),
        "{findings:#?}"
    );
    assert!(
        !findings.iter().any(|f| f.kind == FindingKind::Modified),
        "the record matches the forged seal; the signature is what gives it away"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::ChainBroken && f.seq == Some(1)),
        "the next seal's `prev` no longer matches: {findings:#?}"
    );
}

async fn a_ranged_drop_leaves_the_trail_verifiable(kind: &str) {
    let t = trail(kind, 2, 5, "").await;
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
        .env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env("AUDIT_SEAL_KEY_FILE", &t.key)
        .args(["--db", &db_arg(&t.connection), "drop", "--yes"])
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
    let (findings, summary) = t.verify().await;
    assert_eq!(findings, [], "removed on purpose, not deleted");
    assert_eq!(
        summary.pruned,
        10 + 1,
        "ten accesses and the orphaned process"
    );
}

use audit_tests::db_arg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_lives_beside_the_original_collections_unchanged() {
    let t = trail("sqlite", 1, 2, "").await;
    let a = t.raw(Collection::Access, t.ids[0]).await;
    let keys: Vec<String> = a.iter().map(|e| e.unwrap().0.to_owned()).collect();
    assert!(
        !keys
            .iter()
            .any(|k| ["seal", "hash", "sig", "prev"].contains(&k.as_str())),
        "nothing added to the audit documents: {keys:?}"
    );
    let unsealed = trail("sqlite", 1, 2, "seal = false").await;
    assert!(
        unsealed.seals().await.is_empty(),
        "the setting turns it off"
    );
}

fn audit_cmd(t: &Trail) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"));
    c.env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env("AUDIT_SEAL_KEY_FILE", &t.key)
        .args(["--db", &db_arg(&t.connection)]);
    c
}

/// A user's personal data replaced (the right to erasure): the erasure seal accounts for exactly
/// those changes, so the trail verifies, and any other edit is still found.
async fn an_erasure_keeps_the_trail_verifiable_and_other_edits_caught(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let conn = connection(kind, &dir);
    let toml = format!("seal_key_file = {:?}", key.display().to_string());
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn.clone());
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut a = access(i);
        let who = if i % 2 == 0 {
            (42, "alice")
        } else {
            (7, "bob")
        };
        a.user = Some(audit_runtime::AccessUser::new(who.0, who.1));
        a.request
            .METADATA
            .insert("REMOTE_ADDR", format!("203.0.113.{i}"));
        ids.push(a.id);
        auditor.record_access(a).await;
    }
    let store = auditor.store().unwrap().clone();
    guard.shutdown().await;
    let t = Trail {
        store,
        connection: conn,
        key,
        ids,
        _dir: dir,
    };
    let dry = audit_cmd(&t)
        .args(["erase", "--user-id", "42", "--dry-run"])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("3 accesses"),
        "{dry:?}"
    );
    // Asked, and the default is No.
    let no = audit_cmd(&t)
        .args(["erase", "--user-id", "42"])
        .write_stdin("\n")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no.stdout).contains("Aborted"));
    let yes = audit_cmd(&t)
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(yes.status.success(), "{yes:?}");

    let alice = t
        .raw(Collection::Access, t.ids[0])
        .await
        .to_document()
        .unwrap();
    assert_eq!(
        alice
            .get_document("user")
            .unwrap()
            .get_str("username")
            .unwrap(),
        seal::TOMBSTONE
    );
    assert_eq!(
        alice
            .get_document("request")
            .unwrap()
            .get_document("METADATA")
            .unwrap()
            .get_str("REMOTE_ADDR")
            .unwrap(),
        seal::TOMBSTONE
    );
    let bob = t
        .raw(Collection::Access, t.ids[1])
        .await
        .to_document()
        .unwrap();
    assert_eq!(
        bob.get_document("user")
            .unwrap()
            .get_str("username")
            .unwrap(),
        "bob",
        "only that user"
    );
    let (findings, summary) = t.verify().await;
    assert_eq!(findings, []);
    assert_eq!(summary.erased, 3);

    // An edit the erasure does not account for is still caught.
    let mut forged = bob.clone();
    forged.insert("interlink_id", "forged");
    t.overwrite(
        Collection::Access,
        t.ids[1],
        RawDocumentBuf::from_document(&forged).unwrap(),
    )
    .await;
    let (findings, _) = t.verify().await;
    assert_eq!(
        kinds(&findings),
        kinds(&[finding(FindingKind::Modified, t.ids[1])])
    );
}

/// Records that went to the spill journal while the store refused them are sealed when they are
/// replayed (the SQLite store is locked from another connection meanwhile).
async fn a_spill_journal_replay_is_sealed(kind: &str) {
    if kind != "sqlite" {
        // The outage is made by locking the SQLite file; the replay path is the same code for
        // both stores, and MongoDB outages are covered by the reliability tests.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let db = dir.path().join("audit.db");
    let toml = format!(
        "run_async = true\nspill_path = {:?}\nseal_key_file = {:?}",
        dir.path().join("audit.spill").display().to_string(),
        key.display().to_string()
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let a = access(i);
        ids.push(a.id);
        auditor.record_access(a).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while auditor.metrics().spilled < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            auditor.metrics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let store = auditor.store().unwrap().clone();
    let m = guard.shutdown().await;
    assert_eq!(m.replayed, 20, "{m:?}");
    let t = Trail {
        store,
        connection: DbConnection::Sqlite(db),
        key,
        ids,
        _dir: dir,
    };
    let (findings, summary) = t.verify().await;
    assert_eq!(findings, []);
    assert_eq!(summary.records, 21);
}

/// `audit verify`: exit 0 when intact, 1 with findings (one JSON object each, then a summary),
/// 2 on usage errors; a database that does not exist is an error, not an empty trail.
async fn the_command_line_exits_by_what_it_found(kind: &str) {
    let t = trail(kind, 2, 3, "").await;
    let public = seal::public_key_path(&t.key);
    let ok = audit_cmd(&t)
        .args(["verify", "--key"])
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("intact") && text.contains("head: stream"),
        "{text}"
    );

    t.store
        .delete_many(Collection::Access, &Filter::eq("_id", t.ids[4]))
        .await
        .unwrap();
    let bad = audit_cmd(&t)
        .args(["verify", "--json", "--key"])
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&bad.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["kind"], "deleted");
    assert_eq!(lines[0]["id"], t.ids[4].to_hex());
    assert_eq!(lines[1]["intact"], false);
    assert_eq!(lines[1]["summary"]["findings"], 1);

    let usage = audit_cmd(&t)
        .args(["verify", "--from", "31/02/2024"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    let wrong_key = audit_cmd(&t)
        .args(["verify", "--key"])
        .arg(&t.key)
        .output()
        .unwrap();
    assert_eq!(
        wrong_key.status.code(),
        Some(2),
        "a private key is not a public key"
    );
    if kind == "sqlite" {
        let missing = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
            .args(["--db", "/nonexistent/dir/audit.db", "verify"])
            .output()
            .unwrap();
        assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    }
}

/// Two application instances (two processes) writing into one MongoDB: two streams that never
/// coordinate, both verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_into_one_mongodb_make_two_streams() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let conn = audit_tests::mongo_connection();
    let DbConnection::Mongo { uri, database } = conn.clone() else {
        unreachable!()
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_writer_helper"))
            .args([&uri, &database, "300"])
            .arg(&key)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("written 300 seals"),
            "{out:?}"
        );
    }
    let store = Store::open(&conn).await.unwrap();
    let mut opts = VerifyOptions::default();
    opts.key = Some(seal::load_verifying_key(&seal::public_key_path(&key)).unwrap());
    let mut findings = Vec::new();
    let summary = seal::verify(&store, &opts, |f| findings.push(f.clone()), |_| {})
        .await
        .unwrap();
    assert_eq!(findings, []);
    assert_eq!(summary.heads.len(), 2, "{summary:?}");
    assert_eq!(summary.records, 600 + 2, "600 accesses and two processes");
}

/// A trail written before sealing was turned on: its records are reported, unless the operator
/// says from when sealing began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_before_sealing_are_reported_unless_accepted() {
    let t = trail("sqlite", 1, 2, "").await;
    let mut old = access(99);
    old.time.request = Utc::now() - Duration::days(30);
    t.store.insert(&old).await.unwrap();
    let (findings, _) = t.verify().await;
    assert_eq!(
        kinds(&findings),
        kinds(&[finding(FindingKind::Inserted, old.id)])
    );
    let mut opts = VerifyOptions::default();
    opts.accept_unsealed_before = Some(Utc::now() - Duration::days(1));
    let mut n = 0;
    let summary = seal::verify(&t.store, &opts, |_| n += 1, |_| {})
        .await
        .unwrap();
    assert_eq!((n, summary.unsealed_accepted), (0, 1));
}

/// `retention_days`: the writer removes what is older, after a prune seal saying so; the trail
/// still verifies, the removed records counted as pruned.
async fn retention_removes_old_records_and_the_trail_still_verifies(kind: &str) {
    let t = trail(kind, 1, 3, "").await;
    // Five more, dated three days ago, written by an auditor without retention.
    let toml = format!("seal_key_file = {:?}", t.key.display().to_string());
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(t.connection.clone());
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    for i in 0..5 {
        let mut a = access(100 + i);
        a.time.request = Utc::now() - Duration::days(3);
        auditor.record_access(a).await;
    }
    guard.shutdown().await;
    assert_eq!(
        t.store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        8
    );

    let toml = format!("{toml}\nretention_days = 1");
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(t.connection.clone());
    let (_auditor, guard) = Auditor::start(config).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t
        .store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap()
        != 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    guard.shutdown().await;
    let (findings, summary) = t.verify().await;
    assert_eq!(findings, []);
    assert_eq!(summary.pruned, 5);
    let seals = t.seals().await;
    assert!(
        seals
            .iter()
            .any(|s| s.get_str("kind") == Ok("prune") && s.get_str("reason") == Ok("retention")),
        "the removal is stated in a prune seal"
    );
}

#[test]
fn retention_days_must_be_a_positive_number() {
    for bad in [
        "retention_days = 0",
        "retention_days = -3",
        "retention_days = \"30\"",
    ] {
        let err = AuditConfig::from_sources(Some(bad), Vec::<(String, String)>::new()).unwrap_err();
        assert!(err.to_string().contains("retention_days"), "{err}");
    }
    let c = AuditConfig::from_sources(None, [("AUDIT_RETENTION_DAYS", "30")]).unwrap();
    assert_eq!(c.retention_days, Some(30));
}
