//! What an operator hits in the first hour with `audit`: the filters the console has
//! (`--status`, `--method`, `--access`), `audit prune` to run the retention job by hand, a pipe
//! closed early, keygen's failures (no half pair left, the right exit code), files another user
//! owns, and settings whose date arithmetic would overflow.

use assert_cmd::Command;
use audit_runtime::{
    Access, AccessResponse, AccessUser, Action, AuditConfig, Collection, DbConnection, Filter,
    ModelAction, ModelActionContent, ModelActionInstance, ModelActionModel, Store,
};
use bson::oid::ObjectId;
use chrono::{Duration, Utc};

fn audit(db: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audit_cli"));
    c.env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env_remove("AUDIT_SEAL_KEY_FILE")
        .arg("--db")
        .arg(db);
    c
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn access(path: &str, method: &str, status: i32, days_ago: i64) -> Access {
    let mut a = audit_tests::access(
        path,
        Utc::now() - Duration::days(days_ago),
        "clinic::views::x",
    );
    a.request
        .METADATA
        .insert("REQUEST_METHOD", method.to_owned());
    a.response = Some(AccessResponse {
        content: bson::Bson::Null,
        content_type: "application/json".into(),
        status_code: status,
    });
    a.user = Some(AccessUser::new(7, "dr-who"));
    a
}

async fn seeded() -> (tempfile::TempDir, std::path::PathBuf, Store, Vec<Access>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let store = Store::open(&DbConnection::Sqlite(db.clone()))
        .await
        .unwrap();
    let accesses = vec![
        access("/a", "GET", 200, 1),
        access("/b", "POST", 201, 1),
        access("/c", "GET", 404, 1),
        access("/d", "DELETE", 500, 1),
        access("/e", "GET", 503, 40),
    ];
    store.insert_all(&accesses).await.unwrap();
    (dir, db, store, accesses)
}

fn paths(out: &str) -> Vec<String> {
    let mut p: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request"]["path"].as_str().unwrap().to_owned()
        })
        .collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_list_filters_by_status_and_method() {
    let (_dir, db, _store, _) = seeded().await;
    let list = |args: &[&str]| {
        let out = audit(&db)
            .args(["access", "list", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        paths(&stdout(&out))
    };
    assert_eq!(list(&["--status", "404"]), ["/c"]);
    assert_eq!(list(&["--status", "5xx"]), ["/d", "/e"]);
    assert_eq!(list(&["--status", "2XX"]), ["/a", "/b"]);
    assert_eq!(list(&["--method", "get"]), ["/a", "/c", "/e"]);
    assert_eq!(list(&["--method", "GET", "--status", "5xx"]), ["/e"]);
    for bad in ["600", "9xx", "abc"] {
        let out = audit(&db)
            .args(["access", "list", "--status", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_action_list_filters_by_access() {
    let (_dir, db, store, accesses) = seeded().await;
    let action = |access: ObjectId| ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: "clinic::Patient".into(),
            app: "clinic".into(),
            name: "Patient".into(),
        },
        action: Action::Update,
        content: ModelActionContent::default(),
        instance: ModelActionInstance {
            id: "7".into(),
            description: "Patient 7".into(),
        },
        timestamp: Utc::now(),
        access: Some(access),
        process: None,
    };
    let (one, two) = (action(accesses[1].id), action(accesses[3].id));
    store.insert_all(&[one.clone(), two]).await.unwrap();
    let out = audit(&db)
        .args(["model-action", "list", "--json", "--access"])
        .arg(accesses[1].id.to_hex())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ids: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"]["$oid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, [one.id.to_hex()]);
    let bad = audit(&db)
        .args(["model-action", "list", "--access", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `audit prune --older-than 30d` runs the retention job now: the old records go, stated in a
/// prune seal, so the trail still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_runs_the_retention_job_by_hand() {
    let (_dir, db, store, _) = seeded().await;
    let dry = audit(&db)
        .args(["prune", "--older-than", "30d", "--dry-run"])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        stdout(&dry).contains("would delete 1 documents from audit_access"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        5
    );
    let no = audit(&db)
        .args(["prune", "--older-than", "30d"])
        .write_stdin("n\n")
        .output()
        .unwrap();
    assert!(stdout(&no).contains("Aborted"), "{no:?}");
    let out = audit(&db)
        .args(["prune", "--older-than", "30", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        4
    );
    for bad in ["0d", "x", "99999999d", "-3"] {
        let out = audit(&db)
            .args(["prune", "--yes", "--older-than", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}

/// `audit access list | head`: the reader going away is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_output_quietly() {
    let (_dir, db, store, _) = seeded().await;
    let many: Vec<Access> = (0..3000)
        .map(|i| access(&format!("/p/{i}"), "GET", 200, 2))
        .collect();
    store.insert_all(&many).await.unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_audit_cli"))
        .env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .arg("--db")
        .arg(&db)
        .args(["export", "access"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `head -1` does.
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with('{'));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Broken pipe") && !err.contains("error"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(0));
}

/// keygen: a directory that does not exist is a runtime failure (exit 1); a public key's path
/// that is taken (a planted symlink) is the caller's to fix (exit 2); neither leaves half a pair.
#[test]
fn keygen_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let out = audit(&db)
        .args(["keygen", "--out"])
        .arg(dir.path().join("missing/k"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let key = dir.path().join("seal.key");
    std::os::unix::fs::symlink("/tmp/somewhere-else", dir.path().join("seal.key.pub")).unwrap();
    let out = audit(&db)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!key.exists(), "no private key left without its public half");
}

/// `export --out` into a file another user made beforehand (readable by them) is refused, not
/// written and left theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_owned_by_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        panic!("this test makes a file of another user: it runs as root (the CI machine's user)");
    }
    let (dir, db, _store, _) = seeded().await;
    let planted = dir.path().join("planted.jsonl");
    std::fs::write(&planted, "").unwrap();
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(
        &planted,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = audit(&db)
        .args(["export", "access", "--out"])
        .arg(&planted)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another user"));
    assert_eq!(
        std::fs::read_to_string(&planted).unwrap(),
        "",
        "nothing written"
    );
}

/// Settings whose arithmetic would overflow are refused at start, naming the setting; `verify`
/// refuses an in-flight window past the calendar with exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_that_overflow_are_refused_up_front() {
    let e = AuditConfig::from_sources(None, [("AUDIT_RETENTION_DAYS", "4294967295")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("retention_days"), "{e}");
    assert!(AuditConfig::from_sources(None, [("AUDIT_RETENTION_DAYS", "36500")]).is_ok());
    let (_dir, db, _store, _) = seeded().await;
    let out = audit(&db)
        .args(["verify", "--in-flight-secs", "9000000000000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// One time limit everywhere: 5 s, in the help as in the README and the console.
#[test]
fn the_query_time_limit_defaults_to_five_seconds() {
    let out = Command::new(env!("CARGO_BIN_EXE_audit_cli"))
        .arg("--help")
        .output()
        .unwrap();
    let help = stdout(&out);
    assert!(help.contains("[default: 5000]"), "{help}");
    assert_eq!(
        audit_runtime::console::DEFAULT_QUERY_TIMEOUT,
        std::time::Duration::from_secs(5)
    );
}
