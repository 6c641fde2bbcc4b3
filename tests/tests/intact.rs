//! "Intact" means intact: tried as an attacker with write access to the database (but no key
//! material) would, every change that alters what an officer sees must make `audit verify`
//! report it, the commands that change or remove records must act on what the stored bytes say,
//! a signed trail must stay signed, the spill journal must not smuggle records in, and an erasure
//! must leave nothing of the person behind — not even a hash that confirms a guess.
//!
//! Each test drives the real writer and the real `audit` command line, then edits the store the
//! way an attacker would (SQL on the SQLite file, plain writes on MongoDB).

use audit_runtime::seal::{self, FindingKind, VerifyOptions};
use audit_runtime::{
    Access, AccessException, AccessUser, AccessView, AuditConfig, Auditor, Collection,
    DbConnection, Filter, FindOptions, Store,
};
use bson::oid::ObjectId;
use bson::{Bson, RawDocumentBuf};
use chrono::{Duration, Utc};
use std::path::PathBuf;

/// A signed trail written by a real auditor, and what keeps it alive.
struct Trail {
    store: Store,
    connection: DbConnection,
    key: PathBuf,
    /// The accesses recorded, in order.
    ids: Vec<ObjectId>,
    dir: tempfile::TempDir,
}

/// An access dated an hour ago (older than the in-flight window) by `user`.
fn access(i: usize, user: Option<(i64, &str)>) -> Access {
    let mut a = Access::new(
        format!("/orders/{i}"),
        Utc::now() - Duration::hours(1) + Duration::seconds(i as i64),
        AccessView::new("shop::orders::show", "shop", "show"),
    );
    a.user = user.map(|(id, name)| AccessUser::new(id, name));
    a
}

fn config(t_key: &std::path::Path, conn: &DbConnection, extra: &str) -> AuditConfig {
    let toml = format!("seal_key_file = {:?}\n{extra}", t_key.display().to_string());
    AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn.clone())
}

/// Records `accesses` through a real auditor signing with a fresh key, `per_batch` at a time
/// (each batch flushed, so sealed, before the next).
async fn trail(kind: &str, accesses: Vec<Access>, per_batch: usize) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let connection = audit_tests::connection_in(kind, dir.path());
    let (auditor, guard) = Auditor::start(config(&key, &connection, "")).await.unwrap();
    let mut ids = Vec::new();
    for chunk in accesses.chunks(per_batch.max(1)) {
        for a in chunk {
            ids.push(a.id);
            auditor.record_access(a.clone()).await;
        }
        auditor.flush().await;
    }
    let store = auditor.store().unwrap().clone();
    let m = guard.shutdown().await;
    assert_eq!(m.written as usize, ids.len(), "{m:?}");
    Trail {
        store,
        connection,
        key,
        ids,
        dir,
    }
}

/// Plain accesses by user 1 ("alice").
async fn plain_trail(kind: &str, n: usize, per_batch: usize) -> Trail {
    trail(
        kind,
        (0..n).map(|i| access(i, Some((1, "alice")))).collect(),
        per_batch,
    )
    .await
}

impl Trail {
    fn sqlite_path(&self) -> PathBuf {
        match &self.connection {
            DbConnection::Sqlite(p) => p.clone(),
            _ => panic!("a SQLite trail"),
        }
    }

    /// A connection to the SQLite file, as an attacker holding it would open one.
    fn sql(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c
    }

    /// The `audit` command on this trail, signing with its key.
    fn audit(&self) -> assert_cmd::Command {
        let mut c = self.audit_without_key();
        c.env("AUDIT_SEAL_KEY_FILE", &self.key);
        c
    }

    /// The `audit` command on this trail with no key configured.
    fn audit_without_key(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"));
        c.env_remove("AUDIT_DB")
            .env_remove("AUDIT_CONFIG")
            .env_remove("AUDIT_SEAL_KEY_FILE")
            .current_dir(self.dir.path())
            .args(["--db", &audit_tests::db_arg(&self.connection)]);
        c
    }

    /// `audit verify --json --key PUB`: the exit code, the findings and the summary line.
    fn verify_cli(
        &self,
    ) -> (
        Option<i32>,
        Vec<serde_json::Value>,
        serde_json::Value,
        String,
    ) {
        let out = self
            .audit()
            .args(["verify", "--json", "--key"])
            .arg(seal::public_key_path(&self.key))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let summary = lines.pop().unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            lines,
            summary,
            format!("{stdout}{stderr}"),
        )
    }

    /// `verify` through the library, with the trail's public key.
    async fn verify(&self, opts: VerifyOptions) -> Vec<seal::Finding> {
        let mut opts = opts;
        opts.key = Some(seal::load_verifying_key(&seal::public_key_path(&self.key)).unwrap());
        let mut findings = Vec::new();
        let summary = seal::verify(&self.store, &opts, |f| findings.push(f.clone()), |_| {})
            .await
            .unwrap();
        assert_eq!(summary.findings as usize, findings.len());
        findings
    }

    async fn raw(&self, c: Collection, id: ObjectId) -> bson::Document {
        let docs = self
            .store
            .find_raw(c, &FindOptions::new(Filter::eq("_id", id)))
            .await
            .unwrap();
        assert_eq!(docs.len(), 1, "{id}");
        docs.into_iter().next().unwrap()
    }

    async fn count(&self, c: Collection) -> u64 {
        self.store.count(c, &Filter::all()).await.unwrap()
    }

    /// Replaces a stored document by other bytes under the same `_id`.
    async fn overwrite(&self, c: Collection, id: ObjectId, doc: &bson::Document) {
        self.store
            .delete_many(c, &Filter::eq("_id", id))
            .await
            .unwrap();
        self.store
            .insert_raw_documents(c, vec![RawDocumentBuf::from_document(doc).unwrap()])
            .await
            .unwrap();
    }
}

/// The day `d` days ago, as `drop` takes it.
fn day(d: i64) -> String {
    (Utc::now() - Duration::days(d))
        .format("%Y-%m-%d")
        .to_string()
}

fn kinds_of(findings: &[serde_json::Value]) -> Vec<String> {
    let mut k: Vec<String> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    k.sort();
    k
}

use audit_tests::on_both_stores;

on_both_stores!(
    an_edited_process_document_is_not_sealed_again,
    a_replay_seals_with_the_salts_already_stored,
    an_erasure_run_again_after_an_interruption_verifies,
    sealing_off_on_a_sealed_trail_refuses_changes,
    future_dated_records_are_inserted_at_once,
    a_prune_range_never_reaches_past_its_seal,
    a_prune_excuses_no_more_records_than_it_states,
    a_signed_trail_refuses_unsigned_seals,
    a_forged_journal_entry_is_quarantined_not_sealed,
    erasure_keeps_only_what_was_done,
    no_stored_hash_confirms_a_guess_after_erasure,
    user_ids_are_matched_exactly,
    verify_of_an_empty_trail_is_an_error,
);

// === 1. The bytes are the only truth (SQLite keeps derived copies of them) ===

/// Every derived column (`"$path"`) and the `id` column are copies of values in the stored bytes
/// that no seal covers: editing any of them changes what the searches and the dashboard show, so
/// verify names each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_derived_column_that_disagrees_with_the_bytes() {
    let mut accesses: Vec<Access> = (0..6).map(|i| access(i, Some((1, "alice")))).collect();
    accesses[2].exception = Some(AccessException {
        kind: "std::io::Error".into(),
        message: "disk".into(),
        trace: String::new(),
    });
    let t = trail("sqlite", accesses, 3).await;
    let (code, findings, _, out) = t.verify_cli();
    assert_eq!((code, findings.len()), (Some(0), 0), "{out}");

    let sql = t.sql();
    let edit = |set: &str, id: ObjectId| {
        let n = sql
            .execute(
                &format!("UPDATE audit_access SET {set} WHERE id = ?1"),
                [id.to_hex()],
            )
            .unwrap();
        assert_eq!(n, 1, "{set}");
    };
    edit(r#""$user.id" = 99"#, t.ids[0]);
    edit(r#""$request.path" = '/hidden'"#, t.ids[1]);
    edit(r#""$exception.type" = NULL"#, t.ids[2]);
    edit(r#""$time.request" = 0"#, t.ids[3]);
    let forged_id = ObjectId::new().to_hex();
    edit(&format!("id = '{forged_id}'"), t.ids[4]);

    let (code, findings, _, out) = t.verify_cli();
    assert_eq!(code, Some(1), "{out}");
    let mut named: Vec<(String, String)> = findings
        .iter()
        .filter(|f| f["kind"] == "column_mismatch")
        .map(|f| {
            (
                f["id"].as_str().unwrap_or("?").to_owned(),
                f["column"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    named.sort();
    let mut want = vec![
        (t.ids[0].to_hex(), "user.id".to_owned()),
        (t.ids[1].to_hex(), "request.path".to_owned()),
        (t.ids[2].to_hex(), "exception.type".to_owned()),
        (t.ids[3].to_hex(), "time.request".to_owned()),
        (t.ids[4].to_hex(), "id".to_owned()),
    ];
    want.sort();
    assert_eq!(named, want, "{out}");
}

/// Copies of one access's bytes stored under new `id` values showed as more accesses than there
/// were; each copy is a finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_stored_twice_is_a_finding() {
    let t = plain_trail("sqlite", 4, 4).await;
    let sql = t.sql();
    let columns: Vec<String> = sql
        .prepare("SELECT name FROM pragma_table_info('audit_access') WHERE name LIKE '$%'")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|c| format!(", \"{}\"", c.unwrap()))
        .collect();
    let columns: String = columns.concat();
    for _ in 0..3 {
        sql.execute(
            &format!(
                "INSERT INTO audit_access (id, doc{columns}) SELECT ?1, doc{columns} FROM audit_access WHERE id = ?2"
            ),
            [ObjectId::new().to_hex(), t.ids[0].to_hex()],
        )
        .unwrap();
    }
    assert_eq!(t.count(Collection::Access).await, 7, "what a search shows");
    let (code, findings, _, out) = t.verify_cli();
    assert_eq!(code, Some(1), "{out}");
    let copies = findings
        .iter()
        .filter(|f| f["kind"] == "duplicate" && f["id"] == t.ids[0].to_hex())
        .count();
    assert_eq!(copies, 3, "{out}");
}

/// A garbage row beside a real edit: verify reports both and does not give up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_row_is_a_finding_and_the_edit_beside_it_still_named() {
    let t = plain_trail("sqlite", 4, 2).await;
    let mut edited = t.raw(Collection::Access, t.ids[1]).await;
    edited.insert("interlink_id", "forged");
    t.overwrite(Collection::Access, t.ids[1], &edited).await;
    t.sql()
        .execute(
            "INSERT INTO audit_access (id, doc) VALUES (?1, x'0b000000ff00010203040500')",
            [ObjectId::new().to_hex()],
        )
        .unwrap();
    let (code, findings, summary, out) = t.verify_cli();
    assert_eq!(code, Some(1), "{out}");
    let kinds = kinds_of(&findings);
    assert!(kinds.contains(&"malformed".to_owned()), "{out}");
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "modified" && f["id"] == t.ids[1].to_hex()),
        "{out}"
    );
    assert_eq!(summary["intact"], false, "{out}");
}

/// The commands that change or remove records decide by the stored bytes: a row whose column
/// says user 23 but whose bytes say user 1 is not erased as 23's, and a row whose column was
/// moved into a dropped range is not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_and_drop_select_by_the_stored_bytes() {
    let mut accesses: Vec<Access> = (0..3).map(|i| access(i, Some((1, "alice")))).collect();
    accesses.push(access(3, Some((23, "mallory"))));
    let t = trail("sqlite", accesses, 4).await;
    let sql = t.sql();
    sql.execute(
        r#"UPDATE audit_access SET "$user.id" = CASE "$user.id" WHEN 1 THEN 23 ELSE 1 END"#,
        [],
    )
    .unwrap();
    let out = t
        .audit()
        .args(["erase", "--user-id", "23", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for id in &t.ids[..3] {
        let a = t.raw(Collection::Access, *id).await;
        assert_eq!(
            a.get_document("user").unwrap().get_str("username").unwrap(),
            "alice",
            "user 1's record, whatever its column says"
        );
    }
    let m = t.raw(Collection::Access, t.ids[3]).await;
    assert_eq!(
        m.get_document("user").unwrap().get_str("username").unwrap(),
        seal::TOMBSTONE,
        "user 23's record, although its column says 1"
    );

    // An access dated an hour ago whose time column claims ten days ago.
    sql.execute(
        r#"UPDATE audit_access SET "$time.request" = ?1 WHERE id = ?2"#,
        rusqlite::params![
            (Utc::now() - Duration::days(10)).timestamp_millis(),
            t.ids[0].to_hex()
        ],
    )
    .unwrap();
    let out = t
        .audit()
        .args(["drop", &day(11), &day(9), "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(t.count(Collection::Access).await, 4, "nothing is that old");
}

/// After an erasure the erased values are gone from the database files, the write-ahead log
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_values_leave_the_database_files() {
    let name = "zelda-quartermain";
    let mut a = access(0, Some((42, name)));
    a.request
        .METADATA
        .insert("HTTP_X_USER", format!("42:{name}"));
    let t = trail("sqlite", vec![a, access(1, Some((7, "bob")))], 2).await;
    // The application is still running: its connection stays open.
    let _app = t.sql();
    let out = t
        .audit()
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for suffix in ["", "-wal"] {
        let path = PathBuf::from(format!("{}{suffix}", t.sqlite_path().display()));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{} still holds the erased name",
            path.display()
        );
    }
}

// === 2. Time is bounded ===

/// An unsealed access dated in the future is not "in flight": it is inserted, whatever window
/// verify is given.
async fn future_dated_records_are_inserted_at_once(kind: &str) {
    let t = plain_trail(kind, 2, 2).await;
    let mut forged = access(9, Some((1, "alice")));
    forged.time.request = Utc::now() + Duration::days(365 * 3);
    t.store.insert(&forged).await.unwrap();
    for in_flight in [600, 0] {
        let mut opts = VerifyOptions::default();
        opts.in_flight = std::time::Duration::from_secs(in_flight);
        let findings = t.verify(opts).await;
        assert!(
            findings
                .iter()
                .any(|f| f.kind == FindingKind::Inserted && f.id == Some(forged.id.to_hex())),
            "in-flight window {in_flight}s: {findings:#?}"
        );
    }
}

/// A prune range may not reach past its own seal: `drop` to 2099 or to the end of today removes
/// what exists now, and a record written afterwards and deleted by hand is `deleted`.
async fn a_prune_range_never_reaches_past_its_seal(kind: &str) {
    let t = plain_trail(kind, 3, 3).await;
    let today = Utc::now().format("%Y-%m-%d").to_string();
    for end in ["2099-12-31", today.as_str()] {
        let out = t
            .audit()
            .args(["drop", "2020-01-01", end, "--yes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // A record written after the drop, then deleted by hand.
        let late = access(50, Some((1, "alice")));
        let (auditor, guard) = Auditor::start(config(&t.key, &t.connection, ""))
            .await
            .unwrap();
        auditor.record_access(late.clone()).await;
        guard.shutdown().await;
        t.store
            .delete_many(Collection::Access, &Filter::eq("_id", late.id))
            .await
            .unwrap();
        let findings = t.verify(VerifyOptions::default()).await;
        assert!(
            findings
                .iter()
                .any(|f| f.kind == FindingKind::Deleted && f.id == Some(late.id.to_hex())),
            "drop to {end}: {findings:#?}"
        );
        // Put the trail back in order for the next round: the late record is pruned on purpose.
        let out = t.audit().args(["drop", "--yes"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// A prune seal states how many records it removes; verify excuses no more missing records than
/// that. Here a record's date is edited out of the dropped range (so the drop leaves it), then
/// the record is deleted: its seal still dates it inside the range.
async fn a_prune_excuses_no_more_records_than_it_states(kind: &str) {
    let accesses: Vec<Access> = (0..4)
        .map(|i| {
            let mut a = access(i, Some((1, "alice")));
            a.time.request = Utc::now() - Duration::days(5) + Duration::minutes(i as i64);
            a
        })
        .collect();
    let t = trail(kind, accesses, 4).await;
    let mut moved = t.raw(Collection::Access, t.ids[0]).await;
    moved.get_document_mut("time").unwrap().insert(
        "request",
        bson::DateTime::from_chrono(Utc::now() - Duration::days(40)),
    );
    t.overwrite(Collection::Access, t.ids[0], &moved).await;
    let out = t
        .audit()
        .args(["drop", &day(6), &day(4), "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deleted 3 documents from audit_access"),
        "{out:?}"
    );
    t.store
        .delete_many(Collection::Access, &Filter::eq("_id", t.ids[0]))
        .await
        .unwrap();
    let findings = t.verify(VerifyOptions::default()).await;
    assert!(
        findings.iter().any(|f| f.kind == FindingKind::Deleted),
        "a fourth record is missing where the prune states three: {findings:#?}"
    );
}

// === 3. A signed trail stays signed ===

/// Without the key, the commands that write a seal refuse on a signed trail (exit 2, naming the
/// setting, nothing changed); so do the retention job and an application starting without it.
async fn a_signed_trail_refuses_unsigned_seals(kind: &str) {
    let t = plain_trail(kind, 3, 3).await;
    let before = (
        t.count(Collection::Access).await,
        t.count(Collection::Seal).await,
    );
    for args in [
        vec!["erase", "--user-id", "1", "--yes"],
        vec!["drop", "--yes"],
        vec!["drop", &day(2), "--yes"],
        vec!["remove", "--purge", "--yes"],
    ] {
        let out = t.audit_without_key().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            stderr.contains("seal_key_file") && stderr.contains("AUDIT_SEAL_KEY_FILE"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            (
                t.count(Collection::Access).await,
                t.count(Collection::Seal).await
            ),
            before,
            "{args:?} changed nothing"
        );
    }
    let unsigned = AuditConfig::default().with_connection(t.connection.clone());
    assert!(
        seal::prune_older_than(&t.store, &unsigned, 1)
            .await
            .is_err(),
        "the retention job refuses too"
    );
    let started = Auditor::start(unsigned).await;
    let err = started
        .err()
        .expect("an application without the key refuses to start");
    assert!(err.to_string().contains("seal_key_file"), "{err}");
    assert_eq!(
        (
            t.count(Collection::Access).await,
            t.count(Collection::Seal).await
        ),
        before
    );
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(code, Some(0), "still signed throughout: {out}");
}

// === 4. The spill journal cannot smuggle records in ===

/// A journal entry built by hand (its checksum valid) at `spill_path` is not replayed into a
/// signed batch: it goes to the quarantine file, and the trail verifies without it.
async fn a_forged_journal_entry_is_quarantined_not_sealed(kind: &str) {
    let t = plain_trail(kind, 2, 2).await;
    let spill = t.dir.path().join("audit.spill");
    let mut forged = access(77, Some((0, "root-admin")));
    forged.request.path = "/admin/approve-wire/".into();
    let payload = bson::to_vec(&forged).unwrap();
    let mut entry = vec![0xA7, b'A', b'J', b'1', b'a'];
    entry.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"a");
    crc.update(&(payload.len() as u32).to_le_bytes());
    crc.update(&payload);
    entry.extend_from_slice(&crc.finalize().to_le_bytes());
    entry.extend_from_slice(&payload);
    std::fs::write(&spill, &entry).unwrap();

    let extra = format!("spill_path = {:?}", spill.display().to_string());
    let (_auditor, guard) = Auditor::start(config(&t.key, &t.connection, &extra))
        .await
        .unwrap();
    guard.shutdown().await;
    let found = t
        .store
        .count(Collection::Access, &Filter::eq("_id", forged.id))
        .await
        .unwrap();
    assert_eq!(found, 0, "the forged access was stored");
    let quarantine = std::fs::read(t.dir.path().join("audit.spill.quarantine")).unwrap_or_default();
    assert!(
        quarantine
            .windows(b"/admin/approve-wire/".len())
            .any(|w| w == b"/admin/approve-wire/"),
        "kept for a person to look at"
    );
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(code, Some(0), "{out}");
}

// === 5. Erasure that erases ===

const DEMO_TOML: &str = include_str!("../../examples/demo.toml");

/// The demo's requests by one user, her identity everywhere a real application puts it: the
/// identity header, query strings, forwarding headers, the response, provider data, a model
/// action she caused. After `erase`, nothing of her records holds her name; what was done stays.
async fn erasure_keeps_only_what_was_done(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let connection = audit_tests::connection_in(kind, dir.path());
    // The key first: the demo's file ends inside its `[capture]` table.
    let toml = format!(
        "seal_key_file = {:?}\n{DEMO_TOML}",
        key.display().to_string()
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(connection.clone());
    let polls = demo::Polls::temporary().await.unwrap();
    let (auditor, guard) = demo::auditor_builder(config, &polls).start().await.unwrap();
    let app = demo::app(auditor.clone(), polls);
    let (addr, task) = audit_tests::serve(app).await;
    let name = "Erin-Quartermain";
    let client = reqwest::Client::new();
    let erin = |rb: reqwest::RequestBuilder| {
        rb.header("x-user", format!("42:{name}"))
            .header("forwarded", format!("for=198.51.100.7;by={name}"))
            .header("true-client-ip", "198.51.100.7")
            .header("x-forwarded-email", format!("{name}@example.com"))
            .header("user-agent", "ErinBrowser/1.0")
    };
    let base = format!("http://{addr}");
    erin(client.get(format!("{base}/access/function/?who={name}&q=orders")))
        .send()
        .await
        .unwrap();
    erin(
        client
            .post(format!("{base}/modelaction/create/"))
            .form(&[("question", format!("Lunch with {name}?"))]),
    )
    .send()
    .await
    .unwrap();
    erin(client.get(format!("{base}/api/polls/")))
        .send()
        .await
        .unwrap();
    erin(client.get(format!("{base}/access/exception/")))
        .send()
        .await
        .unwrap();
    client
        .get(format!("{base}/access/function/?who=bob"))
        .header("x-user", "7:bob")
        .send()
        .await
        .unwrap();
    auditor.flush().await;
    let store = auditor.store().unwrap().clone();
    task.abort();
    guard.shutdown().await;

    let of_user = |id: i64| {
        let store = store.clone();
        async move {
            store
                .find_raw(
                    Collection::Access,
                    &FindOptions::new(Filter::eq("user.id", id)),
                )
                .await
                .unwrap()
        }
    };
    let before = of_user(42).await;
    assert_eq!(before.len(), 4, "{before:#?}");
    let bob_before = of_user(7).await;

    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
        .env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env("AUDIT_SEAL_KEY_FILE", &key)
        .current_dir(dir.path())
        .args(["--db", &audit_tests::db_arg(&connection)])
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let after = of_user(42).await;
    let ids: Vec<Bson> = after
        .iter()
        .map(|a| a.get("_id").unwrap().clone())
        .collect();
    let actions = store
        .find_raw(
            Collection::ModelAction,
            &FindOptions::new(Filter::In("access".into(), ids)),
        )
        .await
        .unwrap();
    assert!(!actions.is_empty(), "the poll she created");
    let lower = name.to_lowercase();
    for d in after.iter().chain(&actions) {
        let text = format!("{d:?}").to_lowercase();
        assert!(!text.contains(&lower), "her name is still there: {d:#?}");
        assert!(!text.contains("198.51.100.7"), "her address: {d:#?}");
        assert!(!text.contains("erinbrowser"), "her user agent: {d:#?}");
    }
    // What was done stays.
    let keep = |d: &bson::Document| {
        let r = d.get_document("request").unwrap();
        (
            r.get_str("path").unwrap().to_owned(),
            r.get_document("METADATA")
                .unwrap()
                .get_str("REQUEST_METHOD")
                .unwrap()
                .to_owned(),
            d.get_document("view")
                .unwrap()
                .get_str("full_name")
                .unwrap()
                .to_owned(),
            d.get_document("response")
                .ok()
                .and_then(|r| r.get("status_code").cloned()),
            d.get_document("time").unwrap().clone(),
            d.get_document("exception")
                .ok()
                .and_then(|e| e.get_str("type").ok().map(str::to_owned)),
            d.get("user")
                .and_then(|u| u.as_document())
                .and_then(|u| u.get("id").cloned()),
        )
    };
    let mut kept_before: Vec<_> = before.iter().map(keep).collect();
    let mut kept_after: Vec<_> = after.iter().map(keep).collect();
    kept_before.sort_by_key(|k| format!("{k:?}"));
    kept_after.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(kept_before, kept_after);
    assert_eq!(of_user(7).await, bob_before, "only her records");

    let t = Trail {
        store,
        connection,
        key,
        ids: Vec::new(),
        dir,
    };
    let (code, _, summary, out) = t.verify_cli();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        summary["summary"]["erased"].as_u64().unwrap_or(0) >= 4,
        "{out}"
    );
}

/// Once a record is erased, nothing stored lets anyone test a guess of what it was: no seal
/// holds a hash of the original bytes, salted or not, with any value the store still holds.
async fn no_stored_hash_confirms_a_guess_after_erasure(kind: &str) {
    let t = trail(
        kind,
        vec![access(0, Some((42, "erin"))), access(1, Some((7, "bob")))],
        2,
    )
    .await;
    let original = RawDocumentBuf::from_document(&t.raw(Collection::Access, t.ids[0]).await)
        .unwrap()
        .into_bytes();
    let out = t
        .audit()
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Everything the store holds, as byte strings: the candidates for a salt, and what a seal
    // could carry as a hash.
    let mut values: Vec<Vec<u8>> = vec![Vec::new()];
    fn collect(b: &Bson, out: &mut Vec<Vec<u8>>) {
        match b {
            Bson::Binary(bin) => out.push(bin.bytes.clone()),
            Bson::String(s) => {
                out.push(s.as_bytes().to_vec());
                if let Ok(h) = (0..s.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                {
                    out.push(h);
                }
            }
            Bson::Document(d) => d.values().for_each(|v| collect(v, out)),
            Bson::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let everything = match &t.store {
        Store::Sqlite(_) => {
            let sql = t.sql();
            let tables: Vec<String> = sql
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut docs = Vec::new();
            for table in tables {
                let mut stmt = sql
                    .prepare(&format!("SELECT doc FROM \"{table}\""))
                    .unwrap();
                let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
                for row in rows {
                    if let Ok(d) = bson::Document::from_reader(&row.unwrap()[..]) {
                        docs.push(d);
                    }
                }
            }
            docs
        }
        _ => {
            let mut docs = Vec::new();
            for c in [
                Collection::Access,
                Collection::ModelAction,
                Collection::Process,
                Collection::Seal,
            ] {
                docs.extend(
                    t.store
                        .find_raw(c, &FindOptions::new(Filter::all()))
                        .await
                        .unwrap(),
                );
            }
            docs
        }
    };
    for d in &everything {
        collect(&Bson::Document(d.clone()), &mut values);
    }
    use sha2::{Digest, Sha256};
    for salt in &values {
        for guess in [
            Sha256::new()
                .chain_update(salt)
                .chain_update(&original)
                .finalize()
                .to_vec(),
            Sha256::new()
                .chain_update(&original)
                .chain_update(salt)
                .finalize()
                .to_vec(),
        ] {
            assert!(
                !values.contains(&guess),
                "a stored hash confirms the original record (salt of {} bytes)",
                salt.len()
            );
        }
    }
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(code, Some(0), "{out}");
}

/// `--user-id` matches the id exactly as stored: `0023` and `+23` are not user 23, and string
/// ids that look like numbers can be named too.
async fn user_ids_are_matched_exactly(kind: &str) {
    let mut accesses = vec![
        access(0, Some((23, "int-23"))),
        access(1, Some((0, "placeholder"))),
        access(2, Some((0, "placeholder"))),
    ];
    accesses[1].user = Some(AccessUser::new("0023", "string-0023"));
    accesses[2].user = Some(AccessUser::new("23", "string-23"));
    let t = trail(kind, accesses, 3).await;
    let username = |id: ObjectId| {
        let t = &t;
        async move {
            t.raw(Collection::Access, id)
                .await
                .get_document("user")
                .unwrap()
                .get_str("username")
                .unwrap()
                .to_owned()
        }
    };
    let erase = |args: &[&str]| {
        let out = t
            .audit()
            .arg("erase")
            .args(args)
            .arg("--yes")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    erase(&["--user-id", "+23"]);
    assert_eq!(username(t.ids[0]).await, "int-23", "+23 is not 23");
    erase(&["--user-id", "0023"]);
    assert_eq!(username(t.ids[0]).await, "int-23", "0023 is not 23");
    assert_eq!(
        username(t.ids[1]).await,
        seal::TOMBSTONE,
        "the string id 0023"
    );
    assert_eq!(username(t.ids[2]).await, "string-23");
    erase(&["--user-id-string", "23"]);
    assert_eq!(
        username(t.ids[2]).await,
        seal::TOMBSTONE,
        "the string id 23"
    );
    assert_eq!(username(t.ids[0]).await, "int-23");
    erase(&["--user-id", "23"]);
    assert_eq!(username(t.ids[0]).await, seal::TOMBSTONE, "the integer 23");
}

// === 6. Verify reads, never writes ===

/// Verify of an empty or missing trail is an error (exit 2), and it creates nothing.
async fn verify_of_an_empty_trail_is_an_error(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let run = |db: &str| {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
            .env_remove("AUDIT_DB")
            .env_remove("AUDIT_CONFIG")
            .current_dir(dir.path())
            .args(["--db", db, "verify", "--key"])
            .arg(seal::public_key_path(&key))
            .output()
            .unwrap()
    };
    match kind {
        "sqlite" => {
            let empty = dir.path().join("empty.db");
            std::fs::write(&empty, b"").unwrap();
            let out = run(&empty.display().to_string());
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            assert_eq!(
                std::fs::metadata(&empty).unwrap().len(),
                0,
                "nothing written"
            );
            for side in ["empty.db-wal", "empty.db-shm", "empty.db-journal"] {
                assert!(!dir.path().join(side).exists(), "{side} created");
            }
            // A database with the tables but not one record.
            let prepared = dir.path().join("prepared.db");
            let config =
                AuditConfig::default().with_connection(DbConnection::Sqlite(prepared.clone()));
            drop(Store::connect(&config).await.unwrap());
            let out = run(&prepared.display().to_string());
            assert_eq!(out.status.code(), Some(2), "{out:?}");
        }
        "mongodb" => {
            let connection = audit_tests::mongo_connection();
            let out = run(&audit_tests::db_arg(&connection));
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            let store = Store::open(&connection).await.unwrap();
            let Store::Mongo(m) = &store else {
                unreachable!()
            };
            let names = m.database().list_collection_names().await.unwrap();
            assert!(names.is_empty(), "verify created {names:?}");
        }
        _ => {
            let connection = audit_tests::postgres_connection();
            let out = run(&audit_tests::db_arg(&connection));
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            let audit_runtime::DbConnection::Postgres { uri } = &connection else {
                unreachable!()
            };
            let tables = std::process::Command::new("psql")
                .arg(uri)
                .args(["-tAc", "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&tables.stdout).trim(),
                "0",
                "verify created tables"
            );
        }
    }
}

// === Second pass: what a review of the first found ===

/// Triggers, views, a rewritten index definition and a row at the smallest rowid are the
/// structure the store does not make: each is a finding, and the row is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sqlite_structure_is_a_finding() {
    let t = plain_trail("sqlite", 3, 3).await;
    let sql = t.sql();
    sql.execute_batch(
        "CREATE TRIGGER hide AFTER INSERT ON audit_access BEGIN SELECT 1; END;
         CREATE VIEW every_access AS SELECT * FROM audit_access;",
    )
    .unwrap();
    let forged = access(9, Some((1, "alice")));
    let bytes = bson::to_vec(&forged).unwrap();
    sql.execute(
        "INSERT INTO audit_access (rowid, id, doc) VALUES (-9223372036854775808, ?1, ?2)",
        rusqlite::params![forged.id.to_hex(), bytes],
    )
    .unwrap();
    // The definition of an index changed behind SQLite's back: it claims to index another column.
    sql.execute_batch(
        r#"PRAGMA writable_schema = ON;
           UPDATE sqlite_master SET sql = replace(sql, '"$user.id"', '"$request.path"')
               WHERE name = 'audit_access.user.id_1';
           PRAGMA writable_schema = OFF;"#,
    )
    .unwrap();
    drop(sql);
    let (code, findings, _, out) = t.verify_cli();
    assert_eq!(code, Some(1), "{out}");
    let schema: Vec<String> = findings
        .iter()
        .filter(|f| f["kind"] == "schema")
        .map(|f| f["detail"].as_str().unwrap_or_default().to_owned())
        .collect();
    for what in [
        "trigger `hide`",
        "view `every_access`",
        "audit_access.user.id_1",
    ] {
        assert!(schema.iter().any(|d| d.contains(what)), "{what}: {out}");
    }
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "inserted" && f["id"] == forged.id.to_hex()),
        "the row at the smallest rowid is read: {out}"
    );
}

/// An index whose definition was rewritten consistently (name and SQL) but whose entries are
/// another column's: only a deep verify, which reads every index against its table, can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_verify_reads_every_index_against_its_table() {
    let t = plain_trail("sqlite", 3, 3).await;
    let sql = t.sql();
    sql.execute_batch(
        r#"PRAGMA writable_schema = ON;
           UPDATE sqlite_master
               SET name = 'audit_access.view.app_-1',
                   sql = 'CREATE INDEX "audit_access.view.app_-1" ON audit_access ("$view.app" DESC)'
               WHERE name = 'audit_access.user.id_1';
           PRAGMA writable_schema = OFF;"#,
    )
    .unwrap();
    drop(sql);
    let deep = t
        .audit()
        .args(["verify", "--json", "--deep", "--key"])
        .arg(seal::public_key_path(&t.key))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&deep.stdout);
    assert_eq!(deep.status.code(), Some(1), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("\"schema\"") && l.contains("integrity")),
        "{out}"
    );
}

/// A MongoDB document whose `_id` is not an ObjectId sorts after every ObjectId: verify still
/// reads it, as malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_document_with_another_id_type_is_read() {
    let t = plain_trail("mongodb", 3, 3).await;
    let Store::Mongo(m) = &t.store else {
        unreachable!()
    };
    m.database()
        .collection::<bson::Document>("audit_access")
        .insert_one(bson::doc! { "_id": true, "request": { "path": "/admin/approve-wire/" } })
        .await
        .unwrap();
    let (code, findings, _, out) = t.verify_cli();
    assert_eq!(code, Some(1), "{out}");
    assert!(findings.iter().any(|f| f["kind"] == "malformed"), "{out}");
}

/// A process document edited in the store is not vouched for by the next writer of that process:
/// the edit stays a finding.
async fn an_edited_process_document_is_not_sealed_again(kind: &str) {
    let t = plain_trail(kind, 2, 2).await;
    let process = t
        .store
        .find_raw(Collection::Process, &FindOptions::new(Filter::all()))
        .await
        .unwrap()
        .remove(0);
    let id = process.get_object_id("_id").unwrap();
    let mut edited = process.clone();
    edited.insert("name", "innocent-process");
    t.overwrite(Collection::Process, id, &edited).await;
    // The same OS process starts another writer, which finds that document.
    let (auditor, guard) = Auditor::start(config(&t.key, &t.connection, ""))
        .await
        .unwrap();
    auditor.record_access(access(5, Some((1, "alice")))).await;
    guard.shutdown().await;
    let findings = t.verify(VerifyOptions::default()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.kind == FindingKind::Modified && f.id == Some(id.to_hex())),
        "{findings:#?}"
    );
}

/// A record stored with its salt by a writer that then could not store the seal, and spilled to
/// the journal: the replay seals it with the salt already stored, so it verifies.
async fn a_replay_seals_with_the_salts_already_stored(kind: &str) {
    let t = plain_trail(kind, 1, 1).await;
    let spill = t.dir.path().join("audit.spill");
    let record = access(3, Some((1, "alice")));
    let raw = audit_runtime::internals::encode(&record).unwrap();
    // What the first attempt left: the record and a salt, no seal.
    t.store
        .insert_raw_documents(Collection::Access, vec![raw.clone()])
        .await
        .unwrap();
    let mut salt = bson::RawDocumentBuf::new();
    salt.append("_id", record.id);
    salt.append("c", "audit_access");
    salt.append(
        "s",
        bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: vec![7u8; 32],
        },
    );
    t.store
        .insert_raw_documents(Collection::Salt, vec![salt])
        .await
        .unwrap();
    // ... and the record in the journal, as the writer spills it (keyed by the seal key).
    let key = audit_runtime::internals::JournalKey::derived_from(
        &seal::load_signing_key(&t.key).unwrap(),
    );
    audit_runtime::internals::Journal::keyed(&spill, key)
        .append([(Collection::Access, &raw)])
        .unwrap();
    let extra = format!("spill_path = {:?}", spill.display().to_string());
    let (_auditor, guard) = Auditor::start(config(&t.key, &t.connection, &extra))
        .await
        .unwrap();
    let m = guard.shutdown().await;
    assert!(!spill.exists(), "{m:?}");
    let findings = t.verify(VerifyOptions::default()).await;
    assert_eq!(findings, [], "{m:?}");
}

/// An erasure interrupted after its seal (a record left as it was, its salt kept) and run again
/// finishes, and the trail verifies.
async fn an_erasure_run_again_after_an_interruption_verifies(kind: &str) {
    let t = trail(
        kind,
        vec![access(0, Some((42, "erin"))), access(1, Some((42, "erin")))],
        2,
    )
    .await;
    let before = t.raw(Collection::Access, t.ids[1]).await;
    let salt = t
        .store
        .find_raw(
            Collection::Salt,
            &FindOptions::new(Filter::eq("_id", t.ids[1])),
        )
        .await
        .unwrap()
        .remove(0);
    let out = t
        .audit()
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // As if the second record had not been replaced yet: its old bytes and salt back.
    t.overwrite(Collection::Access, t.ids[1], &before).await;
    t.store
        .insert_raw_documents(
            Collection::Salt,
            vec![RawDocumentBuf::from_document(&salt).unwrap()],
        )
        .await
        .unwrap();
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(
        code,
        Some(0),
        "an erasure sealed and not yet applied: {out}"
    );
    let out = t
        .audit()
        .args(["erase", "--user-id", "42", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        t.raw(Collection::Access, t.ids[1])
            .await
            .get_document("user")
            .unwrap()
            .get_str("username")
            .unwrap(),
        seal::TOMBSTONE
    );
}

/// `seal = false` on a sealed trail: the commands that change records refuse (a change without a
/// seal would be tampering from then on).
async fn sealing_off_on_a_sealed_trail_refuses_changes(kind: &str) {
    let t = plain_trail(kind, 2, 2).await;
    for args in [
        vec!["erase", "--user-id", "1", "--yes"],
        vec!["drop", "--yes"],
        vec!["remove", "--purge", "--yes"],
    ] {
        let out = t
            .audit()
            .env("AUDIT_SEAL", "false")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("seal = false"),
            "{out:?}"
        );
    }
    assert_eq!(t.count(Collection::Access).await, 2);
}

/// Swapped `id` columns cannot make `erase` overwrite another user's record: the record to erase
/// is found by its bytes and replaced only where those bytes are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_never_replaces_a_row_by_its_id_column_alone() {
    let t = trail(
        "sqlite",
        vec![
            access(0, Some((1, "alice"))),
            access(1, Some((23, "mallory"))),
        ],
        2,
    )
    .await;
    let sql = t.sql();
    sql.execute_batch(&format!(
        "UPDATE audit_access SET id = 'x' WHERE id = '{a}';
         UPDATE audit_access SET id = '{a}' WHERE id = '{b}';
         UPDATE audit_access SET id = '{b}' WHERE id = 'x';",
        a = t.ids[0].to_hex(),
        b = t.ids[1].to_hex()
    ))
    .unwrap();
    let out = t
        .audit()
        .args(["erase", "--user-id", "23", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let usernames: Vec<String> = sql
        .prepare("SELECT doc FROM audit_access")
        .unwrap()
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|d| {
            bson::Document::from_reader(&d.unwrap()[..])
                .unwrap()
                .get_document("user")
                .unwrap()
                .get_str("username")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(usernames.contains(&"alice".to_owned()), "{usernames:?}");
    assert!(
        usernames.contains(&seal::TOMBSTONE.to_owned()),
        "{usernames:?}"
    );
}

/// A copy of a journal that was replayed whole, put back at `spill_path` (after its records were
/// dropped), is quarantined: the `journal` seal says it was replayed already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_replayed_before_is_not_replayed_again() {
    let t = plain_trail("sqlite", 1, 1).await;
    let spill = t.dir.path().join("audit.spill");
    let extra = format!(
        "run_async = true\nspill_path = {:?}",
        spill.display().to_string()
    );
    let (auditor, guard) = Auditor::start(config(&t.key, &t.connection, &extra))
        .await
        .unwrap();
    let lock = t.sql();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let late = access(20, Some((1, "alice")));
    auditor.record_access(late.clone()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while auditor.metrics().spilled < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            auditor.metrics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let copy = std::fs::read(&spill).unwrap();
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    guard.shutdown().await;
    assert!(!spill.exists());
    assert_eq!(
        t.store
            .count(Collection::Access, &Filter::eq("_id", late.id))
            .await
            .unwrap(),
        1
    );
    let out = t.audit().args(["drop", "--yes"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&spill, &copy).unwrap();
    let (_auditor, guard) = Auditor::start(config(&t.key, &t.connection, &extra))
        .await
        .unwrap();
    let m = guard.shutdown().await;
    assert!(
        m.journal_forged >= 1,
        "its record and seal quarantined: {m:?}"
    );
    assert_eq!(
        t.store
            .count(Collection::Access, &Filter::eq("_id", late.id))
            .await
            .unwrap(),
        0,
        "the dropped record did not come back"
    );
    let (code, _, _, out) = t.verify_cli();
    assert_eq!(code, Some(0), "{out}");
}
