//! The `audit` binary, run for real against both stores: argument parsing and every error case,
//! the inclusive end day, the default-No prompt, `--yes`, `--dry-run`, counts, idempotence of
//! `prepare`/`remove`, `--json` output parsed back, and a 100,000-document export in bounded memory.

use assert_cmd::Command;
use audit_runtime::{
    Access, AccessUser, AccessView, AuditConfig, Collection, DbConnection, Filter, FindOptions,
    Process, Store,
};
use bson::oid::ObjectId;
use chrono::{TimeZone, Utc};

struct Env {
    db: String,
    connection: DbConnection,
    _dir: Option<tempfile::TempDir>,
}

fn sqlite_env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    Env {
        db: path.display().to_string(),
        connection: DbConnection::Sqlite(path),
        _dir: Some(dir),
    }
}

fn mongo_env() -> Env {
    let base = std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| panic!("MONGODB_URI is not set: run the tests with scripts/test.sh, which starts the test server"));
    let db = format!("audit_cli_{}", ObjectId::new().to_hex());
    let uri = format!("{}/{db}", base.trim_end_matches('/'));
    Env {
        db: uri.clone(),
        connection: DbConnection::Mongo { uri, database: db },
        _dir: None,
    }
}

impl Env {
    fn audit(&self) -> Command {
        let mut c = Command::cargo_bin("audit").unwrap();
        c.env_remove("AUDIT_DB")
            .env_remove("AUDIT_CONFIG")
            .arg("--db")
            .arg(&self.db);
        c
    }

    async fn store(&self) -> Store {
        Store::connect(&AuditConfig::default().with_connection(self.connection.clone()))
            .await
            .unwrap()
    }
}

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap()
}

fn access(path: &str, t: chrono::DateTime<Utc>, process: Option<ObjectId>) -> Access {
    let mut a = Access::new(
        path,
        t,
        AccessView::new("demo::views::index", "demo", "index"),
    );
    a.user = Some(AccessUser::new(23, "bob"));
    a.process = process;
    a
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::sqlite_env()).await;
            })*
        }
        mod mongodb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::mongo_env()).await;
            })*
        }
    };
}

on_both_stores!(
    prepare_and_remove_are_idempotent,
    drop_rejects_bad_arguments_and_deletes_nothing,
    drop_deletes_to_the_end_of_the_last_day,
    drop_asks_with_no_as_the_default,
    drop_keeps_referenced_processes,
    list_filters_and_json_round_trip,
    list_prints_control_characters_escaped,
    export_streams_json_lines,
);

/// A client chooses its path and its user name: neither may forge a row of the table or send
/// escape sequences to the operator's terminal.
async fn list_prints_control_characters_escaped(env: Env) {
    let store = env.store().await;
    let forged = "/x\r\n2000-01-01 00:00:00  admin  GET /forged";
    let mut a = access(forged, at(2011, 1, 1, 0, 0, 0), None);
    a.user = Some(AccessUser::new(5, "mallory\u{1b}[2J\u{202e}evil"));
    store.insert_all(&[a]).await.unwrap();
    let out = env
        .audit()
        .args(["access", "list"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one access, one line: {text:?}");
    assert!(!text.contains(['\r', '\u{1b}', '\u{202e}']), "{text:?}");
    assert!(
        text.contains("/x\\r\\n2000-01-01 00:00:00  admin  GET /forged"),
        "{text:?}"
    );
    assert!(text.contains("mallory\\u{1b}[2J\\u{202e}evil"), "{text:?}");
}

async fn prepare_and_remove_are_idempotent(env: Env) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        "access_indexes = [['custom.polls.names', 'custom.polls.num_polls']]\n",
    )
    .unwrap();
    let first = env
        .audit()
        .arg("--config")
        .arg(&config)
        .arg("prepare")
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&first);
    assert!(
        text.contains("created  audit_access index custom.polls.names_1_custom.polls.num_polls_1"),
        "{text}"
    );
    assert!(
        text.contains("created  audit_process index pid_1_machine_1_creation_time_1"),
        "{text}"
    );
    assert!(text.contains(": 23 created, 0 already there"), "{text}");
    let second = env
        .audit()
        .arg("--config")
        .arg(&config)
        .arg("prepare")
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        stdout(&second).contains(": 0 created, 23 already there"),
        "{}",
        stdout(&second)
    );
    // Data survives `remove`, which takes the custom index away, once.
    env.store()
        .await
        .insert(&access("/kept", Utc::now(), None))
        .await
        .unwrap();
    let removed = env
        .audit()
        .arg("--config")
        .arg(&config)
        .arg("remove")
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(stdout(&removed)
        .contains("removed  audit_access index custom.polls.names_1_custom.polls.num_polls_1"));
    let again = env
        .audit()
        .arg("--config")
        .arg(&config)
        .arg("remove")
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&again).trim(), "nothing to remove");
    let store = env.store().await;
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1
    );
    let names: Vec<String> = store
        .list_indexes(Collection::Access)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("custom.")), "{names:?}");
    // --purge asks first; No keeps the data.
    env.audit()
        .args(["remove", "--purge"])
        .write_stdin("\n")
        .assert()
        .success();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1
    );
    env.audit()
        .args(["remove", "--purge", "--yes"])
        .assert()
        .success();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        0
    );
}

async fn drop_rejects_bad_arguments_and_deletes_nothing(env: Env) {
    let store = env.store().await;
    store
        .insert(&access("/x", at(2000, 1, 5, 0, 0, 0), None))
        .await
        .unwrap();
    for args in [
        &["drop", "01/01/2000", "02/01/2000", "03/01/2000", "--yes"][..],
        &["drop", "31/02/2000", "--yes"],
        &["drop", "2000-13-01", "--yes"],
        &["drop", "02/01/2000", "01/01/2000", "--yes"],
        &["drop", "--bogus"],
    ] {
        let out = env.audit().args(args).assert().code(2).get_output().clone();
        assert!(!out.stderr.is_empty(), "{args:?} explains itself");
    }
    let e = env
        .audit()
        .args(["drop", "31/02/2000", "--yes"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid date `31/02/2000`"));
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1,
        "nothing deleted"
    );
    // An unreachable store is a runtime failure: exit 1.
    Command::cargo_bin("audit")
        .unwrap()
        .args([
            "--db",
            "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300",
            "prepare",
        ])
        .assert()
        .code(1);
}

async fn drop_deletes_to_the_end_of_the_last_day(env: Env) {
    let store = env.store().await;
    let docs = [
        access("/before", at(1999, 12, 31, 23, 59, 59), None),
        access("/first", at(2000, 1, 1, 0, 0, 0), None),
        access("/last", at(2000, 2, 1, 23, 59, 0), None),
        access("/after", at(2000, 2, 2, 0, 0, 0), None),
    ];
    store.insert_all(&docs).await.unwrap();
    let dry = env
        .audit()
        .args(["drop", "01/01/2000", "01/02/2000", "--dry-run"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        stdout(&dry).contains("would delete 2 documents from audit_access"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        4,
        "dry run deletes nothing"
    );
    let out = env
        .audit()
        .args(["drop", "2000-01-01", "2000-02-01", "--yes"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        stdout(&out).contains("deleted 2 documents from audit_access"),
        "{}",
        stdout(&out)
    );
    let left: Vec<String> = store
        .find::<Access>(&FindOptions::new(Filter::all()))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&"/before".to_owned()) && left.contains(&"/after".to_owned()));
    // One date: from that day to now.
    env.audit()
        .args(["drop", "02/02/2000", "--yes"])
        .assert()
        .success();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1
    );
    // No date: everything, and the store stays ready.
    env.audit().args(["drop", "--yes"]).assert().success();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        0
    );
    assert!(store
        .list_indexes(Collection::Process)
        .await
        .unwrap()
        .iter()
        .any(|i| i.name == "pid_1_machine_1_creation_time_1"));
}

async fn drop_asks_with_no_as_the_default(env: Env) {
    let store = env.store().await;
    store
        .insert(&access("/x", at(2001, 1, 1, 12, 0, 0), None))
        .await
        .unwrap();
    for answer in ["\n", "n\n", "whatever\n", ""] {
        let out = env
            .audit()
            .args(["drop", "01/01/2001", "01/01/2001"])
            .write_stdin(answer)
            .assert()
            .success()
            .get_output()
            .clone();
        assert!(String::from_utf8_lossy(&out.stderr).contains("[y/N]"));
        assert!(
            stdout(&out).contains("Aborted: nothing deleted."),
            "{answer:?}"
        );
    }
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        1
    );
    env.audit()
        .args(["drop", "01/01/2001", "01/01/2001"])
        .write_stdin("y\n")
        .assert()
        .success();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        0
    );
}

fn process(pid: i32, t: chrono::DateTime<Utc>) -> Process {
    Process {
        id: ObjectId::new(),
        interlink_id: None,
        name: "srv".into(),
        args: None,
        machine: "m".into(),
        user: "u".into(),
        pid,
        creation_time: t,
    }
}

async fn drop_keeps_referenced_processes(env: Env) {
    let store = env.store().await;
    let lonely = store
        .upsert_process(&process(1, at(2000, 1, 2, 0, 0, 0)))
        .await
        .unwrap();
    let busy = store
        .upsert_process(&process(2, at(2000, 1, 3, 0, 0, 0)))
        .await
        .unwrap();
    store
        .insert(&access("/in", at(2000, 1, 4, 0, 0, 0), Some(lonely.id)))
        .await
        .unwrap();
    store
        .insert(&access("/out", at(2005, 1, 1, 0, 0, 0), Some(busy.id)))
        .await
        .unwrap();
    let out = env
        .audit()
        .args(["drop", "01/01/2000", "31/12/2000", "--yes"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    assert!(
        text.contains("deleted 1 documents from audit_access"),
        "{text}"
    );
    assert!(
        text.contains("deleted 1 documents from audit_process"),
        "{text}"
    );
    let left: Vec<Process> = store.find(&FindOptions::new(Filter::all())).await.unwrap();
    assert_eq!(
        left.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![busy.id],
        "the referenced process stays"
    );
}

async fn list_filters_and_json_round_trip(env: Env) {
    let store = env.store().await;
    let mut docs = Vec::new();
    for i in 0..30 {
        let mut a = access(&format!("/polls/{i}"), at(2010, 1, 1, 0, i, 0), None);
        if i % 3 == 0 {
            a.user = Some(AccessUser::new(7, "seven"));
        }
        docs.push(a);
    }
    store.insert_all(&docs).await.unwrap();
    let out = env
        .audit()
        .args(["access", "list", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20, "default limit");
    assert_eq!(lines[0]["request"]["path"], "/polls/29", "newest first");
    // Each line is the stored document, field names and `_id` included.
    let stored = store
        .find_raw(
            Collection::Access,
            &FindOptions::new(Filter::eq("_id", docs[29].id)),
        )
        .await
        .unwrap();
    assert_eq!(
        lines[0],
        bson::Bson::Document(stored[0].clone()).into_relaxed_extjson()
    );
    let out = env
        .audit()
        .args(["access", "list", "--user-id", "7", "--limit", "100"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&out).lines().count(), 10);
    assert!(
        stdout(&out)
            .lines()
            .all(|l| l.contains("seven") && l.contains("/polls/")),
        "{}",
        stdout(&out)
    );
    let out = env
        .audit()
        .args(["access", "list", "--url", "/polls/3", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&out).lines().count(), 1);
    let out = env
        .audit()
        .args([
            "access",
            "list",
            "--url-regex",
            "^/polls/1[0-9]$",
            "--limit",
            "50",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&out).lines().count(), 10);
    let out = env
        .audit()
        .args([
            "access",
            "list",
            "--from",
            "2010-01-01T00:25",
            "--to",
            "01/01/2010",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&out).lines().count(), 5, "{}", stdout(&out));
    env.audit()
        .args(["access", "list", "--from", "yesterday"])
        .assert()
        .code(2);
    env.audit()
        .args(["access", "list", "--action", "create"])
        .assert()
        .code(2);
    env.audit()
        .args(["model-action", "list", "--action", "destroy"])
        .assert()
        .code(2);
    env.audit()
        .args([
            "model-action",
            "list",
            "--model",
            "a::B",
            "--model",
            "c::D",
            "--action",
            "update",
        ])
        .assert()
        .success();
    env.audit().args(["process", "list"]).assert().success();
}

async fn export_streams_json_lines(env: Env) {
    let store = env.store().await;
    let docs: Vec<Access> = (0..2500)
        .map(|i| access(&format!("/e/{i}"), at(2011, 1, 1, 0, 0, 0), None))
        .collect();
    store.insert_all(&docs).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    env.audit()
        .args(["export", "access", "--out"])
        .arg(&file)
        .assert()
        .success();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2500);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["_id"]["$oid"], docs[0].id.to_hex());
    let out = env
        .audit()
        .args(["export", "access", "--from", "2012-01-01"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
}

/// Peak resident memory (VmHWM, KiB) of a child, sampled until it exits.
fn run_measuring_peak(mut cmd: std::process::Command) -> (std::process::ExitStatus, u64) {
    let mut child = cmd.spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status, peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_100_000_documents_keeps_memory_bounded() {
    let env = sqlite_env();
    let store = env.store().await;
    // About 1 KB each: 100 MB of output, far more than the bound below.
    let filler = "x".repeat(900);
    for chunk in 0..100 {
        let docs: Vec<Access> = (0..1000)
            .map(|i| {
                let mut a = access(&format!("/bulk/{chunk}/{i}"), at(2012, 1, 1, 0, 0, 0), None);
                a.request.METADATA.insert("filler", filler.as_str());
                a
            })
            .collect();
        store.insert_all(&docs).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulk.jsonl");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("audit"));
    cmd.args(["--db", &env.db, "export", "access", "--out"])
        .arg(&file);
    let (status, peak_kib) = run_measuring_peak(cmd);
    assert!(status.success());
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size > 100_000_000, "output is {size} bytes");
    let lines =
        std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&file).unwrap()))
            .count();
    assert_eq!(lines, 100_000);
    assert!(
        peak_kib < 80 * 1024,
        "peak RSS {peak_kib} KiB while exporting {size} bytes: not streaming"
    );
}
