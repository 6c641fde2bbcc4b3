//! The `audit` binary, run for real against both stores: argument parsing and every error case,
//! the inclusive end day, the default-No prompt, `--yes`, `--dry-run`, counts, idempotence of
//! `prepare`/`remove`, `--json` output parsed back, `show`, readers refusing a missing database
//! file, the store's rule for which processes a ranged drop takes, and a 100,000-document export
//! in bounded memory.

use assert_cmd::Command;
use audit_runtime::{
    Access, AccessUser, Action, Collection, DbConnection, Filter, FindOptions, ModelAction,
    ModelActionContent, ModelActionInstance, ModelActionModel, Process, Store,
};
use audit_tests::{at, connection, db_arg, on_both_stores};
use bson::oid::ObjectId;
use chrono::{DateTime, Utc};

/// A fresh store of one kind that `audit` is pointed at. Nothing is created in it until a
/// command or [`Target::store`] does (so `prepare` finds it empty).
struct Target {
    connection: DbConnection,
    _dir: Option<tempfile::TempDir>,
}

fn target(kind: &str) -> Target {
    let (connection, dir) = connection(kind);
    Target {
        connection,
        _dir: dir,
    }
}

/// `audit` with no configuration from the environment.
fn audit_bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audit_cli"));
    c.env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env_remove("AUDIT_CONSOLE_TOKEN");
    c
}

impl Target {
    /// `audit --db <this store>`.
    fn audit(&self) -> Command {
        let mut c = audit_bare();
        c.arg("--db").arg(db_arg(&self.connection));
        c
    }

    /// The store, its default indexes ensured.
    async fn store(&self) -> Store {
        audit_tests::open(self.connection.clone(), None).await.store
    }
}

fn access(path: &str, t: DateTime<Utc>, process: Option<ObjectId>) -> Access {
    let mut a = audit_tests::access(path, t, "demo::views::index");
    a.user = Some(AccessUser::new(23, "bob"));
    a.process = process;
    a
}

fn model_action(
    full_name: &str,
    action: Action,
    instance: &str,
    t: DateTime<Utc>,
    access: Option<ObjectId>,
    process: Option<ObjectId>,
) -> ModelAction {
    let (app, name) = full_name.split_once("::").expect("crate::Type");
    ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: full_name.into(),
            app: app.into(),
            name: name.into(),
        },
        action,
        content: ModelActionContent {
            old: bson::doc! { "question": "old" },
            new: bson::doc! { "question": "new" },
            changes: bson::doc! { "question": { "old": "old", "new": "new" } },
        },
        instance: ModelActionInstance {
            id: instance.into(),
            description: format!("instance {instance}"),
        },
        timestamp: t,
        access,
        process,
    }
}

fn process(pid: i32, t: DateTime<Utc>) -> Process {
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

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

on_both_stores!(
    prepare_and_remove_are_idempotent,
    drop_rejects_bad_arguments_and_deletes_nothing,
    drop_deletes_to_the_end_of_the_last_day,
    drop_asks_with_no_as_the_default,
    drop_keeps_referenced_processes,
    list_filters_and_json_round_trip,
    list_shows_model_actions_with_their_access_and_processes,
    list_prints_control_characters_escaped,
    show_prints_one_whole_record,
    export_streams_json_lines,
    orphaned_processes_are_those_no_remaining_record_references,
);

/// A client chooses its path and its user name: neither may forge a row of the table or send
/// escape sequences to the operator's terminal.
/// How many records `collection` holds.
async fn count(store: &Store, collection: Collection) -> u64 {
    store.count(collection, &Filter::all()).await.unwrap()
}

async fn list_prints_control_characters_escaped(kind: &str) {
    let env = target(kind);
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

async fn prepare_and_remove_are_idempotent(kind: &str) {
    let env = target(kind);
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
    assert_eq!(count(&store, Collection::Access).await, 1);
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
    assert_eq!(count(&store, Collection::Access).await, 1);
    env.audit()
        .args(["remove", "--purge", "--yes"])
        .assert()
        .success();
    assert_eq!(count(&store, Collection::Access).await, 0);
}

async fn drop_rejects_bad_arguments_and_deletes_nothing(kind: &str) {
    let env = target(kind);
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
    let e = env
        .audit()
        .args(["drop", "01/01/2000", "02/01/2000", "03/01/2000", "--yes"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&e).contains("drop takes at most two dates, got 3"),
        "{}",
        stderr(&e)
    );
    assert_eq!(
        count(&store, Collection::Access).await,
        1,
        "nothing deleted"
    );
    // An unreachable store is a runtime failure: exit 1.
    audit_bare()
        .args([
            "--db",
            "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300",
            "prepare",
        ])
        .assert()
        .code(1);
}

async fn drop_deletes_to_the_end_of_the_last_day(kind: &str) {
    let env = target(kind);
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
        count(&store, Collection::Access).await,
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
    assert_eq!(count(&store, Collection::Access).await, 1);
    // No date: everything, and the store stays ready.
    env.audit().args(["drop", "--yes"]).assert().success();
    assert_eq!(count(&store, Collection::Access).await, 0);
    assert!(store
        .list_indexes(Collection::Process)
        .await
        .unwrap()
        .iter()
        .any(|i| i.name == "pid_1_machine_1_creation_time_1"));
}

async fn drop_asks_with_no_as_the_default(kind: &str) {
    let env = target(kind);
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
    assert_eq!(count(&store, Collection::Access).await, 1);
    env.audit()
        .args(["drop", "01/01/2001", "01/01/2001"])
        .write_stdin("y\n")
        .assert()
        .success();
    assert_eq!(count(&store, Collection::Access).await, 0);
}

async fn drop_keeps_referenced_processes(kind: &str) {
    let env = target(kind);
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

/// The store's rule, on its own: of the processes created in the range, those that a record
/// staying after the drop (an access or a model action dated outside the range) references stay;
/// a process created outside the range stays whatever references it.
async fn orphaned_processes_are_those_no_remaining_record_references(kind: &str) {
    let env = target(kind);
    let store = env.store().await;
    let (from, to) = (at(2000, 1, 1, 0, 0, 0), at(2000, 12, 31, 23, 59, 59));
    let mut stored = Vec::new();
    for (pid, created) in [
        (1, at(2000, 1, 2, 0, 0, 0)),      // only records inside the range: goes
        (2, at(2000, 2, 1, 0, 0, 0)),      // referenced by none: goes
        (3, at(2000, 3, 1, 0, 0, 0)),      // an access after the range: stays
        (4, at(2000, 4, 1, 0, 0, 0)),      // a model action before the range: stays
        (5, at(1999, 6, 1, 0, 0, 0)),      // created before the range, referenced by none: stays
        (6, at(2000, 12, 31, 23, 59, 59)), // created on the range's last moment: goes
    ] {
        stored.push(
            store
                .upsert_process(&process(pid, created))
                .await
                .unwrap()
                .id,
        );
    }
    let inside = at(2000, 6, 1, 0, 0, 0);
    store
        .insert_all(&[
            access("/in/1", inside, Some(stored[0])),
            access("/in/3", inside, Some(stored[2])),
            access("/after/3", at(2001, 1, 1, 0, 0, 0), Some(stored[2])),
        ])
        .await
        .unwrap();
    store
        .insert_all(&[
            model_action(
                "demo::Poll",
                Action::Create,
                "1",
                inside,
                None,
                Some(stored[0]),
            ),
            model_action(
                "demo::Poll",
                Action::Update,
                "1",
                at(1999, 12, 31, 23, 59, 59),
                None,
                Some(stored[3]),
            ),
        ])
        .await
        .unwrap();
    let mut orphans = store.orphaned_processes(from, to).await.unwrap();
    orphans.sort();
    let mut expected = vec![stored[0], stored[1], stored[5]];
    expected.sort();
    assert_eq!(orphans, expected);
    assert_eq!(count(&store, Collection::Process).await, 6, "it only reads");
}

async fn list_filters_and_json_round_trip(kind: &str) {
    let env = target(kind);
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
        .args(["access", "list", "--url", "/a", "--url-contains", "a"])
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

/// Model actions and processes listed from collections that hold some: the filters select the
/// right rows, and each row carries the fields it should, the access id of a model action
/// included (or `-` for one made outside a request).
async fn list_shows_model_actions_with_their_access_and_processes(kind: &str) {
    let env = target(kind);
    let store = env.store().await;
    let p_old = store
        .upsert_process(&process(4242, at(2009, 5, 1, 8, 0, 0)))
        .await
        .unwrap();
    let mut p_new = process(4343, at(2009, 6, 1, 8, 0, 0));
    p_new.name = "worker".into();
    p_new.user = "deploy".into();
    p_new.machine = "host-b".into();
    p_new.interlink_id = Some("ilk-process-77".into());
    let p_new = store.upsert_process(&p_new).await.unwrap();
    let request = access("/polls/1/vote", at(2010, 1, 1, 9, 0, 0), Some(p_new.id));
    store.insert(&request).await.unwrap();
    let actions = [
        model_action(
            "demo::Poll",
            Action::Create,
            "1",
            at(2010, 1, 1, 9, 0, 1),
            Some(request.id),
            Some(p_new.id),
        ),
        model_action(
            "demo::Poll",
            Action::Update,
            "1",
            at(2010, 1, 1, 9, 0, 2),
            Some(request.id),
            Some(p_new.id),
        ),
        model_action(
            "demo::Choice",
            Action::Create,
            "9",
            at(2010, 1, 1, 9, 0, 3),
            None,
            Some(p_old.id),
        ),
    ];
    store.insert_all(&actions).await.unwrap();

    let out = env
        .audit()
        .args(["model-action", "list"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    // Newest first: the choice (no access), then the update and the create of the poll.
    assert!(rows[0].starts_with("2010-01-01 09:00:03"), "{text}");
    assert!(
        rows[0].contains("demo::Choice") && rows[0].contains("create"),
        "{text}"
    );
    assert!(
        rows[0].contains("access - "),
        "made outside a request: {text}"
    );
    for (row, act) in [(rows[1], "update"), (rows[2], "create")] {
        assert!(row.contains("demo::Poll") && row.contains(act), "{text}");
        assert!(
            row.contains(&format!("access {}", request.id.to_hex())),
            "the access id leads to the request: {text}"
        );
        assert!(row.ends_with("question"), "the changed fields: {text}");
    }

    let out = env
        .audit()
        .args([
            "model-action",
            "list",
            "--model",
            "demo::Poll",
            "--action",
            "update",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .clone();
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["_id"]["$oid"], actions[1].id.to_hex());
    assert_eq!(lines[0]["access"]["$oid"], request.id.to_hex());
    assert_eq!(lines[0]["content"]["changes"]["question"]["new"], "new");
    let out = env
        .audit()
        .args(["model-action", "list", "--instance", "9"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("demo::Choice"), "{}", stdout(&out));

    let out = env
        .audit()
        .args(["process", "list"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].starts_with("2009-06-01 08:00:00"),
        "newest first: {text}"
    );
    for field in ["worker", "pid 4343", "deploy", "host-b"] {
        assert!(rows[0].contains(field), "{field}: {text}");
    }
    assert!(
        rows[1].contains("srv") && rows[1].contains("pid 4242"),
        "{text}"
    );
    let out = env
        .audit()
        .args(["process", "list", "--interlink", "ilk-process-77", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["_id"]["$oid"], p_new.id.to_hex());
    assert_eq!(lines[0]["pid"], 4343);
}

/// `show` prints the whole stored record as indented JSON (parsed back, it is the stored
/// document); a model action's access id leads to its access. An id that is not one is a usage
/// error, an unknown id a failure, both saying so.
async fn show_prints_one_whole_record(kind: &str) {
    let env = target(kind);
    let store = env.store().await;
    let p = store
        .upsert_process(&process(77, at(2012, 3, 1, 0, 0, 0)))
        .await
        .unwrap();
    let mut request = access("/polls/5/edit", at(2012, 3, 1, 10, 0, 0), Some(p.id));
    // What the layer stored in place of a secret is shown as stored.
    request
        .request
        .METADATA
        .insert("HTTP_AUTHORIZATION", "********");
    store.insert(&request).await.unwrap();
    let action = model_action(
        "demo::Poll",
        Action::Update,
        "5",
        at(2012, 3, 1, 10, 0, 1),
        Some(request.id),
        Some(p.id),
    );
    store.insert(&action).await.unwrap();

    let shown = |args: &[&str]| -> serde_json::Value {
        let out = env
            .audit()
            .args(args)
            .assert()
            .success()
            .get_output()
            .clone();
        let text = stdout(&out);
        assert!(text.lines().count() > 3, "indented: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let stored = |c: Collection, id: ObjectId| {
        let store = store.clone();
        async move {
            let docs = store
                .find_raw(c, &FindOptions::new(Filter::eq("_id", id)))
                .await
                .unwrap();
            bson::Bson::Document(docs[0].clone()).into_relaxed_extjson()
        }
    };
    let hex = action.id.to_hex();
    let a = shown(&["model-action", "show", &hex]);
    assert_eq!(a, stored(Collection::ModelAction, action.id).await);
    let access_id = a["access"]["$oid"].as_str().unwrap().to_owned();
    assert_eq!(access_id, request.id.to_hex());
    let r = shown(&["access", "show", &access_id]);
    assert_eq!(r, stored(Collection::Access, request.id).await);
    assert_eq!(r["request"]["path"], "/polls/5/edit");
    assert_eq!(r["request"]["METADATA"]["HTTP_AUTHORIZATION"], "********");
    let pr = shown(&["process", "show", &p.id.to_hex()]);
    assert_eq!(pr, stored(Collection::Process, p.id).await);
    assert_eq!(pr["pid"], 77);

    let bad = env
        .audit()
        .args(["access", "show", "not-an-id"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    assert!(
        stderr(&bad).contains("invalid id `not-an-id`: expected 24 hexadecimal digits"),
        "{}",
        stderr(&bad)
    );
    // A model action's id is not an access's.
    let unknown = env
        .audit()
        .args(["access", "show", &hex])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        stderr(&unknown).contains(&format!("no record in audit_access has the id {hex}")),
        "{}",
        stderr(&unknown)
    );
    assert!(unknown.stdout.is_empty());
}

async fn export_streams_json_lines(kind: &str) {
    let env = target(kind);
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

/// A mistyped `--db` path: every command that only reads says there is no database there (exit
/// 2) and leaves no file behind; a command that writes still creates the database.
#[test]
fn readers_refuse_a_missing_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let id = ObjectId::new().to_hex();
    let readers: &[&[&str]] = &[
        &["access", "list"],
        &["model-action", "list"],
        &["process", "list"],
        &["access", "show", &id],
        &["model-action", "show", &id],
        &["process", "show", &id],
        &["export", "access"],
        &["verify"],
        &["erase", "--user-id", "7", "--yes"],
        &["serve", "--addr", "127.0.0.1:0"],
    ];
    for args in readers {
        let out = audit_bare()
            .arg("--db")
            .arg(&missing)
            .args(*args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("no audit database at {}", missing.display())),
            "{args:?} names the path: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    audit_bare()
        .arg("--db")
        .arg(&missing)
        .arg("prepare")
        .assert()
        .success();
    assert!(missing.exists(), "prepare creates the database");
    audit_bare()
        .arg("--db")
        .arg(&missing)
        .args(["access", "list"])
        .assert()
        .success()
        .stdout("");
}

/// `--help` of each list names only the filters that apply to its records.
#[test]
fn list_help_shows_only_the_filters_of_its_kind() {
    let help = |kind: &str| {
        let out = audit_bare()
            .args([kind, "list", "--help"])
            .assert()
            .success()
            .get_output()
            .clone();
        stdout(&out)
    };
    let access = help("access");
    for flag in [
        "--url-regex",
        "--user-id",
        "--view",
        "--exception",
        "--interlink",
        "--from",
        "--limit",
        "--json",
    ] {
        assert!(access.contains(flag), "{flag}: {access}");
    }
    for flag in ["--model", "--action", "--instance"] {
        assert!(!access.contains(flag), "{flag}: {access}");
    }
    let actions = help("model-action");
    for flag in ["--model", "--action", "--instance", "--from", "--to"] {
        assert!(actions.contains(flag), "{flag}: {actions}");
    }
    for flag in ["--url", "--user-id", "--view", "--exception", "--interlink"] {
        assert!(!actions.contains(flag), "{flag}: {actions}");
    }
    let processes = help("process");
    assert!(processes.contains("--interlink"), "{processes}");
    for flag in [
        "--url",
        "--user-id",
        "--model",
        "--action",
        "--instance",
        "--exception",
    ] {
        assert!(!processes.contains(flag), "{flag}: {processes}");
    }
    assert!(access.contains("Usage: audit access list"), "{access}");
}

/// The store of the command line: `--db`, else the config file's, else `AUDIT_DB`. A file that
/// sets `db_connection` wins over an `AUDIT_DB` left in the shell.
#[test]
fn the_config_files_store_wins_over_audit_db() {
    let dir = tempfile::tempdir().unwrap();
    let from_file = dir.path().join("from-file.db");
    let from_env = dir.path().join("from-env.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (db, path) in [(&from_file, "/in-the-file"), (&from_env, "/in-the-env")] {
        rt.block_on(async {
            let store = audit_tests::open(DbConnection::Sqlite(db.clone()), None).await;
            store
                .insert(&access(path, at(2013, 1, 1, 0, 0, 0), None))
                .await
                .unwrap();
        });
    }
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!("db_connection = {:?}\n", from_file.display().to_string()),
    )
    .unwrap();
    // Run where no audit.toml is found by default.
    let elsewhere = tempfile::tempdir().unwrap();
    let listed = |extra: &[&std::ffi::OsStr]| {
        let out = audit_bare()
            .current_dir(elsewhere.path())
            .env("AUDIT_DB", &from_env)
            .args(extra)
            .args(["access", "list"])
            .assert()
            .success()
            .get_output()
            .clone();
        stdout(&out)
    };
    let with_file = listed(&["--config".as_ref(), config.as_os_str()]);
    assert!(with_file.contains("/in-the-file"), "{with_file}");
    assert!(!with_file.contains("/in-the-env"), "{with_file}");
    let no_file = listed(&[]);
    assert!(no_file.contains("/in-the-env"), "{no_file}");
    let flag = listed(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--db".as_ref(),
        from_env.as_os_str(),
    ]);
    assert!(flag.contains("/in-the-env"), "{flag}");
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
    let env = target("sqlite");
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
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_audit_cli"));
    cmd.args([
        "--db",
        &db_arg(&env.connection),
        "export",
        "access",
        "--out",
    ])
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
