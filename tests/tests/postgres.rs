//! What only the PostgreSQL store has: tables a `psql` user reads (the `jsonb` copy, typed
//! columns), month partitions that retention drops whole, and the tampering those invite, done
//! through `psql` as a database administrator would. Every other feature runs on PostgreSQL in
//! the suites shared by all stores.

use audit_runtime::seal::{self, FindingKind, VerifyOptions};
use audit_runtime::{
    Access, AccessUser, AccessView, AuditConfig, Auditor, Collection, DbConnection, Filter, Store,
};
use bson::oid::ObjectId;
use chrono::{Datelike, Duration, Utc};
use std::path::PathBuf;

struct Trail {
    store: Store,
    uri: String,
    key: PathBuf,
    ids: Vec<ObjectId>,
    _dir: tempfile::TempDir,
}

fn access(i: usize, at: chrono::DateTime<Utc>) -> Access {
    let mut a = Access::new(
        format!("/patients/{i}"),
        at,
        AccessView::new("clinic::patients::show", "clinic", "show"),
    );
    a.user = Some(AccessUser::new(7, "dr-who"));
    a
}

fn config(key: &std::path::Path, uri: &str, extra: &str) -> AuditConfig {
    let toml = format!("seal_key_file = {:?}\n{extra}", key.display().to_string());
    AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Postgres { uri: uri.into() })
}

/// A signed trail of `accesses` written by a real auditor.
async fn trail(accesses: Vec<Access>) -> Trail {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    let DbConnection::Postgres { uri } = audit_tests::postgres_connection() else {
        unreachable!()
    };
    let (auditor, guard) = Auditor::start(config(&key, &uri, "")).await.unwrap();
    let ids = accesses.iter().map(|a| a.id).collect();
    for a in accesses {
        auditor.record_access(a).await;
    }
    let store = auditor.store().unwrap().clone();
    guard.shutdown().await;
    Trail {
        store,
        uri,
        key,
        ids,
        _dir: dir,
    }
}

impl Trail {
    /// Runs SQL through `psql`, as an administrator of the database would; returns its output.
    fn psql(&self, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .arg(&self.uri)
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "{sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn verify(&self) -> Vec<seal::Finding> {
        let store = Store::open_read_only(&DbConnection::Postgres {
            uri: self.uri.clone(),
        })
        .await
        .unwrap();
        let mut opts = VerifyOptions::default();
        opts.key = Some(seal::load_verifying_key(&seal::public_key_path(&self.key)).unwrap());
        let mut findings = Vec::new();
        seal::verify(&store, &opts, |f| findings.push(f.clone()), |_| {})
            .await
            .unwrap();
        findings
    }
}

fn hours_ago(h: i64) -> chrono::DateTime<Utc> {
    Utc::now() - Duration::hours(h)
}

/// The README's queries work in `psql`: the record as `jsonb`, the typed columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_reads_in_psql() {
    let t = trail((0..3).map(|i| access(i, hours_ago(2))).collect()).await;
    assert_eq!(
        t.psql("SELECT DISTINCT doc->'user'->>'username' FROM audit_access"),
        "dr-who"
    );
    assert_eq!(
        t.psql(
            "SELECT count(*) FROM audit_access WHERE user_id = '7' AND time_request > now() - interval '1 day'"
        ),
        "3"
    );
    assert_eq!(
        t.psql("SELECT view_app || '.' || view_name FROM audit_access LIMIT 1"),
        "clinic.show"
    );
}

/// Edits through `psql`: the bytes, the `jsonb`, a typed column, a deleted row, a month
/// partition dropped without a prune seal. Each is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_through_psql_are_named() {
    let old = Utc::now() - Duration::days(70);
    let mut accesses: Vec<Access> = (0..5).map(|i| access(i, hours_ago(2))).collect();
    accesses.extend((5..7).map(|i| access(i, old)));
    let t = trail(accesses).await;
    assert_eq!(t.verify().await, []);
    let id = |i: usize| t.ids[i].to_hex();
    t.psql(&format!(
        "UPDATE audit_access SET bson = overlay(bson PLACING '\\x21'::bytea FROM 40 FOR 1) WHERE id = '{}'",
        id(0)
    ));
    t.psql(&format!(
        "UPDATE audit_access SET doc = jsonb_set(doc, '{{request,path}}', '\"/hidden\"') WHERE id = '{}'",
        id(1)
    ));
    t.psql(&format!(
        "UPDATE audit_access SET user_id = '99' WHERE id = '{}'",
        id(2)
    ));
    t.psql(&format!("DELETE FROM audit_access WHERE id = '{}'", id(3)));
    let partition = format!("audit_access_{}_{:02}", old.year(), old.month());
    t.psql(&format!("DROP TABLE {partition}"));

    let findings = t.verify().await;
    let named = |kind: FindingKind, i: usize, column: Option<&str>| {
        findings.iter().any(|f| {
            f.kind == kind
                && f.id.as_deref() == Some(id(i).as_str())
                && f.column.as_deref() == column
        })
    };
    assert!(
        named(FindingKind::Modified, 0, None),
        "bytes: {findings:#?}"
    );
    assert!(
        named(FindingKind::ColumnMismatch, 1, Some("doc")),
        "jsonb: {findings:#?}"
    );
    assert!(
        named(FindingKind::ColumnMismatch, 2, Some("user.id")),
        "column: {findings:#?}"
    );
    for i in [3, 5, 6] {
        assert!(named(FindingKind::Deleted, i, None), "{i}: {findings:#?}");
    }
}

/// Retention on month partitions: a month wholly older than the cutoff goes in one statement (its
/// table dropped, no dead rows left), the edge month row by row, each stated in a prune seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_whole_months_and_the_trail_verifies() {
    let now = Utc::now();
    let three_months = now - Duration::days(95);
    let edge = now - Duration::days(35);
    let mut accesses: Vec<Access> = (0..4).map(|i| access(i, three_months)).collect();
    accesses.extend((4..6).map(|i| access(i, edge)));
    accesses.extend((6..8).map(|i| access(i, hours_ago(1))));
    let t = trail(accesses).await;
    let old_partition = format!(
        "audit_access_{}_{:02}",
        three_months.year(),
        three_months.month()
    );
    assert_eq!(
        t.psql(&format!("SELECT count(*) FROM {old_partition}")),
        "4"
    );

    let (_auditor, guard) = Auditor::start(config(&t.key, &t.uri, "retention_days = 30"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while t
        .store
        .count(Collection::Access, &Filter::all())
        .await
        .unwrap()
        != 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    guard.shutdown().await;
    assert_eq!(
        t.psql(&format!("SELECT to_regclass('{old_partition}') IS NULL")),
        "t",
        "the whole month went as a table"
    );
    assert_eq!(
        t.psql("SELECT count(*) FROM audit_salt"),
        // Two accesses and the process kept their salts (processes have none); the others went.
        "2"
    );
    let findings = t.verify().await;
    assert_eq!(findings, []);
}

/// Months are created ahead, and on demand for a record of a month without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_and_on_demand() {
    let far = Utc::now() - Duration::days(400);
    let t = trail(vec![access(0, far), access(1, hours_ago(1))]).await;
    let next = (Utc::now() + Duration::days(31)).date_naive();
    for (year, month) in [(far.year(), far.month()), (next.year(), next.month())] {
        assert_eq!(
            t.psql(&format!(
                "SELECT to_regclass('audit_access_{year}_{month:02}') IS NOT NULL"
            )),
            "t",
            "{year}-{month}"
        );
    }
    assert_eq!(t.psql("SELECT count(*) FROM audit_access_default"), "0");
}

/// The commands that only read (list, show, export, verify, serve) open PostgreSQL read-only and
/// create nothing, so they run against a read replica: here a database whose every transaction
/// is read-only, as on a hot standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_commands_run_on_a_read_only_replica() {
    let t = trail((0..3).map(|i| access(i, hours_ago(2))).collect()).await;
    let db = t.uri.rsplit('/').next().unwrap().to_owned();
    t.psql(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = on"
    ));
    let run = |args: &[&str]| {
        let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
            .env_remove("AUDIT_DB")
            .env_remove("AUDIT_CONFIG")
            .args(["--db", &t.uri])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["access", "list", "--json"]).lines().count(), 3);
    assert_eq!(run(&["export", "access"]).lines().count(), 3);
    let public = seal::public_key_path(&t.key);
    assert!(run(&["verify", "--key", public.to_str().unwrap()]).contains("intact"));
    // Writing really is refused there: the replica is read-only.
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
        .env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .args(["--db", &t.uri, "prepare"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}
