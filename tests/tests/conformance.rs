//! One conformance suite, run unchanged against both stores: every test below is instantiated once
//! for SQLite and once for MongoDB (the test server started by `scripts/test.sh`).

use audit_runtime::Snapshot;
use audit_runtime::{
    Access, AccessException, AccessResponse, AccessUser, Action, AuditConfig, Audited, Collection,
    ModelAction, ModelActionContent, ModelActionInstance, ModelActionModel, ModelIdentity, Process,
    QueryError, Store, StoreError, UrlMatch,
};
use audit_runtime::{Filter, FindOptions, IndexSpec, Order};
use audit_tests::{access, at, TestStore};
use bson::{doc, oid::ObjectId, Bson};
use chrono::{Duration, Utc};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(audit_tests::sqlite_store().await).await;
            })*
        }
        mod mongodb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(audit_tests::mongo_store().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(audit_tests::postgres_store().await).await;
            })*
        }
    };
}

conformance!(
    access_round_trips_every_field_and_type,
    insert_is_idempotent_by_id,
    process_upsert_is_atomic_and_unique,
    default_indexes_exist_exactly,
    ensure_indexes_is_idempotent_and_adds_custom_ones,
    url_helpers_match_like_the_original,
    url_helpers_combine_with_plain_filters,
    get_by_returns_one_or_a_typed_error,
    conflicting_filters_are_an_error,
    view_and_exception_helpers,
    model_helpers_use_exact_names,
    ordering_window_and_count,
    delete_by_date_range_and_drop,
    batches_visit_every_document_once,
);

fn full_access() -> Access {
    let mut a = access(
        "/polls/ñandú/日本",
        at(2016, 1, 15, 23, 24, 0),
        "demo::views::index",
    );
    a.interlink_id = Some("req-1".into());
    a.request.GET = doc! { "a": ["1", "2"], "x%2Ey": "3" };
    a.request.POST = doc! { "name": "poll", "password": "********" };
    a.request.METADATA = doc! { "REQUEST_METHOD": "GET", "headers": { "user-agent": "test" } };
    a.response = Some(AccessResponse {
        content: Bson::Document(
            doc! { "big": Bson::Int64(1 << 40), "small": 7_i32, "pi": 3.5, "ok": true, "list": [1, "two"] },
        ),
        content_type: "application/json".into(),
        status_code: 200,
    });
    a.exception = Some(AccessException {
        kind: "std::io::Error".into(),
        message: "boom".into(),
        trace: "a\nb".into(),
    });
    a.time.response = Some(at(2016, 1, 15, 23, 24, 1) + Duration::milliseconds(123));
    a.view.args = vec![Bson::String("7".into())];
    a.view.kwargs = doc! { "arg1": 1, "arg2": true, "arg3": "test" };
    a.user = Some(AccessUser::new("2f1c-uuid", "josé"));
    a.custom = Some(doc! { "polls": { "names": ["poll_1", "poll_2"], "num_polls": 2 } });
    a.process = Some(ObjectId::new());
    a
}

async fn access_round_trips_every_field_and_type(s: TestStore) {
    let a = full_access();
    s.insert(&a).await.unwrap();
    let back: Vec<Access> = s
        .find(&FindOptions::new(Filter::eq("_id", a.id)))
        .await
        .unwrap();
    assert_eq!(back, vec![a.clone()]);
    // The raw document keeps the exact BSON types (an Int64 stays Int64, an Int32 stays Int32).
    let raw = s
        .find_raw(Collection::Access, &FindOptions::new(Filter::all()))
        .await
        .unwrap();
    let content = raw[0]
        .get_document("response")
        .unwrap()
        .get_document("content")
        .unwrap();
    assert_eq!(content.get("big"), Some(&Bson::Int64(1 << 40)));
    assert_eq!(content.get("small"), Some(&Bson::Int32(7)));
    assert_eq!(
        raw[0].get_document("user").unwrap().get("id"),
        Some(&Bson::String("2f1c-uuid".into()))
    );
    // Field order is the original's.
    let keys: Vec<&str> = raw[0].keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "_id",
            "interlink_id",
            "request",
            "response",
            "exception",
            "time",
            "view",
            "user",
            "custom",
            "process"
        ]
    );
    // Integer user ids stay integers.
    let mut b = access("/int", Utc::now(), "demo::x");
    b.user = Some(AccessUser::new(123, "test_user"));
    s.insert(&b).await.unwrap();
    let got = Access::objects().user_id(123).get(&s).await.unwrap();
    assert_eq!(got.user, b.user);
    assert_eq!(
        Access::objects().user_id("123").count(&s).await.unwrap(),
        0,
        "string id must not match an integer id"
    );
}

async fn insert_is_idempotent_by_id(s: TestStore) {
    let a = access("/x", Utc::now(), "demo::x");
    assert_eq!(s.insert(&a).await.unwrap(), 1);
    // A retried write of the same record neither fails nor duplicates it.
    assert_eq!(s.insert(&a).await.unwrap(), 0);
    let b = access("/y", Utc::now(), "demo::x");
    assert_eq!(s.insert_all(&[a.clone(), b.clone()]).await.unwrap(), 1);
    assert_eq!(
        s.count(Collection::Access, &Filter::all()).await.unwrap(),
        2
    );
}

fn process(pid: i32) -> Process {
    Process {
        id: ObjectId::new(),
        interlink_id: None,
        name: "server".into(),
        args: Some("--port 80".into()),
        machine: "host-a".into(),
        user: "www".into(),
        pid,
        creation_time: at(2016, 1, 17, 19, 11, 0) + Duration::milliseconds(457),
    }
}

async fn process_upsert_is_atomic_and_unique(s: TestStore) {
    let first = s.upsert_process(&process(42)).await.unwrap();
    // A second process value with the same identity gets the stored one back.
    let again = s.upsert_process(&process(42)).await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(
        again.creation_time,
        process(42).creation_time,
        "creation time keeps its milliseconds"
    );
    // N concurrent first upserts of a new identity create one document.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store: Store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            store.upsert_process(&process(43)).await.unwrap().id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "all concurrent upserts return the same process"
    );
    assert_eq!(
        s.count(Collection::Process, &Filter::eq("pid", 43))
            .await
            .unwrap(),
        1
    );
    // The unique index refuses a plain duplicate insert.
    let dup = s.insert(&process(42)).await;
    assert!(
        matches!(dup, Err(StoreError::Duplicate { .. })),
        "got {dup:?}"
    );
    // Another creation time is another process.
    let mut later = process(42);
    later.creation_time += Duration::milliseconds(1);
    assert_ne!(s.upsert_process(&later).await.unwrap().id, first.id);
}

/// `(name, keys, unique)` of one index.
type IndexRow = (String, Vec<(String, i32)>, bool);

/// The original's indexes on `c`, written out from its models' `meta` (and the unique index its
/// `unique_with` implies), not taken from the code under test: `_id`, then every listed index,
/// ascending unless the original says `-`.
fn original_indexes(c: Collection) -> Vec<IndexRow> {
    let (indexes, unique): (&[&[&str]], &[&[&str]]) = match c {
        Collection::Access => (
            &[
                &["interlink_id"],
                &["user.id"],
                &["request.path"],
                &["time.request"],
                &["exception.type"],
                &["request.path", "time.request"],
                &["view.app", "view.name"],
                &["view.app", "view.name", "user.id"],
                &["view.app", "view.name", "time.request"],
                &["view.app", "view.name", "user.id", "time.request"],
                &["request.path", "request.METADATA.REQUEST_METHOD"],
            ],
            &[],
        ),
        Collection::Process => (
            &[&["interlink_id"], &["pid", "machine", "-creation_time"]],
            &[&["pid", "machine", "creation_time"]],
        ),
        Collection::ModelAction => (
            &[
                &["timestamp"],
                &["action", "timestamp"],
                &["model.app", "model.name"],
                &["model.app", "model.name", "action"],
                &["model.app", "model.name", "instance.id"],
                &["model.app", "model.name", "timestamp"],
                &["model.app", "model.name", "action", "timestamp"],
                &["model.app", "model.name", "instance.id", "timestamp"],
            ],
            &[],
        ),
        Collection::Seal | Collection::Salt => {
            panic!("the seal and salt collections are not the original's")
        }
    };
    let row = |fields: &&[&str], unique: bool| -> IndexRow {
        let keys: Vec<(String, i32)> = fields
            .iter()
            .map(|f| match f.strip_prefix('-') {
                Some(path) => (path.to_owned(), -1),
                None => (f.to_string(), 1),
            })
            .collect();
        // MongoDB's generated name, which deployments of the original already have.
        let name = keys
            .iter()
            .map(|(p, d)| format!("{p}_{d}"))
            .collect::<Vec<_>>()
            .join("_");
        (name, keys, unique)
    };
    let mut rows = vec![("_id_".to_owned(), vec![("_id".to_owned(), 1)], false)];
    rows.extend(indexes.iter().map(|f| row(f, false)));
    rows.extend(unique.iter().map(|f| row(f, true)));
    rows
}

async fn default_indexes_exist_exactly(s: TestStore) {
    let mut counts = Vec::new();
    for c in Collection::ALL {
        let listed = s.list_indexes(c).await.unwrap();
        let mut got: Vec<IndexRow> = listed
            .into_iter()
            .map(|i| (i.name, i.keys, i.unique))
            .collect();
        got.sort();
        let mut want = original_indexes(c);
        want.sort();
        assert_eq!(got, want, "indexes of {c}");
        counts.push(want.len());
    }
    // `_id` plus 11, 3 and 8: the original's lists, none dropped from the expectation.
    assert_eq!(counts, [12, 4, 9]);
    // Spot-check the exact names and directions of the original.
    let names: Vec<String> = s
        .list_indexes(Collection::Process)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        names.contains(&"pid_1_machine_1_creation_time_-1".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"pid_1_machine_1_creation_time_1".to_owned()),
        "{names:?}"
    );
    let access_names: Vec<String> = s
        .list_indexes(Collection::Access)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(access_names.contains(&"view.app_1_view.name_1_user.id_1_time.request_1".to_owned()));
    assert!(access_names.contains(&"request.path_1_request.METADATA.REQUEST_METHOD_1".to_owned()));
}

async fn ensure_indexes_is_idempotent_and_adds_custom_ones(s: TestStore) {
    let config = AuditConfig::from_sources(
        Some(r#"access_indexes = ["custom.polls.names", ["custom.polls.names", "custom.polls.num_polls"]]
               model_action_indexes = [["-timestamp", "action"]]"#),
        Vec::<(String, String)>::new(),
    )
    .unwrap()
    .with_connection(s.connection.clone());
    let first = s.ensure_indexes(&config).await.unwrap();
    let created: Vec<&str> = first
        .iter()
        .filter(|e| e.created)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        created,
        [
            "custom.polls.names_1",
            "custom.polls.names_1_custom.polls.num_polls_1",
            "timestamp_-1_action_1"
        ]
    );
    let second = s.ensure_indexes(&config).await.unwrap();
    assert!(
        second.iter().all(|e| !e.created),
        "second ensure creates nothing"
    );
    assert_eq!(first.len(), second.len());
    let listed = s.list_indexes(Collection::ModelAction).await.unwrap();
    let custom = listed
        .iter()
        .find(|i| i.name == "timestamp_-1_action_1")
        .expect("custom index listed");
    assert_eq!(
        custom.keys,
        vec![("timestamp".to_owned(), -1), ("action".to_owned(), 1)]
    );
    // Dropping it and ensuring again re-creates exactly it.
    assert!(s
        .drop_index(Collection::ModelAction, "timestamp_-1_action_1")
        .await
        .unwrap());
    assert!(!s
        .drop_index(Collection::ModelAction, "timestamp_-1_action_1")
        .await
        .unwrap());
    let third = s.ensure_indexes(&config).await.unwrap();
    let recreated: Vec<&str> = third
        .iter()
        .filter(|e| e.created)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(recreated, ["timestamp_-1_action_1"]);
    let _ = IndexSpec::from_fields(&["x"]);
}

async fn seed_paths(s: &Store) -> Vec<Access> {
    let paths = [
        "/foo",
        "/foo/bar",
        "/Foo/Baz",
        "/polls/",
        "/polls/12",
        "/POLLS/x",
        "/ñandú/Árbol",
        "/a.b/c",
        "/foo?x",
    ];
    let base = at(2020, 5, 1, 12, 0, 0);
    let docs: Vec<Access> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut a = access(p, base + Duration::minutes(i as i64), "demo::views::index");
            a.user = Some(AccessUser::new(if i % 2 == 0 { 23 } else { 24 }, "u"));
            a
        })
        .collect();
    s.insert_all(&docs).await.unwrap();
    docs
}

async fn paths_of(s: &Store, q: audit_runtime::Query<Access>) -> Vec<String> {
    let mut v: Vec<String> = q
        .fetch(s)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    v.sort();
    v
}

async fn url_helpers_match_like_the_original(s: TestStore) {
    seed_paths(&s).await;
    let q = |m| Access::objects().filter_by_url(m);
    assert_eq!(
        paths_of(&s, q(UrlMatch::Exact("/foo".into()))).await,
        ["/foo"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::Exact("foo".into()))).await,
        Vec::<String>::new()
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IExact("/FOO".into()))).await,
        ["/foo"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::Contains("oo/b".into()))).await,
        ["/foo/bar"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IContains("POLL".into()))).await,
        ["/POLLS/x", "/polls/", "/polls/12"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::StartsWith("/foo".into()))).await,
        ["/foo", "/foo/bar", "/foo?x"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IStartsWith("/foo/".into()))).await,
        ["/Foo/Baz", "/foo/bar"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::EndsWith("/".into()))).await,
        ["/polls/"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IEndsWith("BAZ".into()))).await,
        ["/Foo/Baz"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::Regex(r"^/polls/\w*$".into()))).await,
        ["/polls/", "/polls/12"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IRegex(r"^/polls/\w*$".into()))).await,
        ["/POLLS/x", "/polls/", "/polls/12"]
    );
    // Regex metacharacters in literal modifiers are literal.
    assert_eq!(
        paths_of(&s, q(UrlMatch::Contains("a.b".into()))).await,
        ["/a.b/c"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::Contains("?x".into()))).await,
        ["/foo?x"]
    );
    // Unicode paths, exact and case-insensitive.
    assert_eq!(
        paths_of(&s, q(UrlMatch::Exact("/ñandú/Árbol".into()))).await,
        ["/ñandú/Árbol"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::StartsWith("/ñan".into()))).await,
        ["/ñandú/Árbol"]
    );
    assert_eq!(
        paths_of(&s, q(UrlMatch::IContains("árbol".into()))).await,
        ["/ñandú/Árbol"]
    );
    // An invalid regex is a typed error, not a store failure.
    assert!(matches!(
        q(UrlMatch::Regex("(".into())).fetch(&s).await,
        Err(QueryError::InvalidRegex(..))
    ));
}

async fn url_helpers_combine_with_plain_filters(s: TestStore) {
    seed_paths(&s).await;
    let q = Access::objects()
        .filter_by_url(UrlMatch::StartsWith("/foo".into()))
        .user_id(23);
    assert_eq!(paths_of(&s, q).await, ["/foo", "/foo?x"]);
    let since = at(2020, 5, 1, 12, 1, 0);
    let q = Access::objects()
        .filter_by_url(UrlMatch::StartsWith("/foo".into()))
        .since(since);
    assert_eq!(paths_of(&s, q).await, ["/foo/bar", "/foo?x"]);
    let q = Access::objects()
        .filter_by_url(UrlMatch::StartsWith("/foo".into()))
        .until(since);
    assert_eq!(paths_of(&s, q).await, ["/foo", "/foo/bar"]);
}

async fn get_by_returns_one_or_a_typed_error(s: TestStore) {
    let docs = seed_paths(&s).await;
    let one = Access::objects()
        .get_by_url(UrlMatch::exact("/polls/12"), &s)
        .await
        .unwrap();
    assert_eq!(one.id, docs[4].id);
    let none = Access::objects()
        .get_by_url(UrlMatch::exact("/nope"), &s)
        .await;
    assert!(
        matches!(none, Err(QueryError::NotFound("audit_access"))),
        "{none:?}"
    );
    let many = Access::objects()
        .get_by_url(UrlMatch::StartsWith("/polls".into()), &s)
        .await;
    assert!(
        matches!(many, Err(QueryError::MultipleFound("audit_access", 2))),
        "{many:?}"
    );
}

async fn conflicting_filters_are_an_error(s: TestStore) {
    let q = Access::objects()
        .filter_by_url(UrlMatch::exact("/x"))
        .eq("request.path", "/y");
    let e = q.fetch(&s).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "you cannot call filter_by_url together with a filter on `request.path`"
    );
    let q = Access::objects()
        .view_app("demo")
        .filter_by_view("demo::views::index");
    assert!(matches!(
        q.count(&s).await,
        Err(QueryError::Conflict {
            helper: "filter_by_view",
            ..
        })
    ));
    let q = ModelAction::objects()
        .filter_by_model_name("a::B")
        .filter_by_instance_id("a::B", "1");
    assert!(matches!(
        q.count(&s).await,
        Err(QueryError::Conflict { .. })
    ));
}

async fn view_and_exception_helpers(s: TestStore) {
    let t = Utc::now();
    let a = access("/a", t, "demo::views::index");
    let b = access("/b", t, "demo::views::index_other");
    let mut c = access("/c", t, "other::views::index");
    c.exception = Some(AccessException {
        kind: "demo::Error".into(),
        message: "m".into(),
        trace: String::new(),
    });
    s.insert_all(&[a.clone(), b, c.clone()]).await.unwrap();
    let got = Access::objects()
        .get_by_view("demo::views::index", &s)
        .await
        .unwrap();
    assert_eq!(got.id, a.id);
    let got = Access::objects()
        .get_by_exception("demo::Error", &s)
        .await
        .unwrap();
    assert_eq!(got.id, c.id);
    assert_eq!(
        Access::objects()
            .filter_by_exception("Error")
            .count(&s)
            .await
            .unwrap(),
        0,
        "type paths match exactly"
    );
    assert_eq!(
        Access::objects().view_app("demo").count(&s).await.unwrap(),
        2
    );
}

struct User;
struct UserProfile;

impl Audited for User {
    const MODEL: ModelIdentity = ModelIdentity {
        full_name: "app::models::User",
        app: "app",
        name: "User",
    };
    fn audit_id(&self) -> Option<String> {
        Some("7".into())
    }
    fn audit_description(&self) -> String {
        "user 7".into()
    }
    fn audit_snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
}

impl Audited for UserProfile {
    const MODEL: ModelIdentity = ModelIdentity {
        full_name: "app::models::UserProfile",
        app: "app",
        name: "UserProfile",
    };
    fn audit_id(&self) -> Option<String> {
        Some("7".into())
    }
    fn audit_description(&self) -> String {
        "profile 7".into()
    }
    fn audit_snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
}

fn action(model: &ModelIdentity, id: &str, act: Action, minutes: i64) -> ModelAction {
    ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: model.full_name.into(),
            app: model.app.into(),
            name: model.name.into(),
        },
        action: act,
        content: ModelActionContent::default(),
        instance: ModelActionInstance {
            id: id.into(),
            description: format!("#{id}"),
        },
        timestamp: at(2021, 3, 1, 0, 0, 0) + Duration::minutes(minutes),
        access: None,
        process: None,
    }
}

async fn model_helpers_use_exact_names(s: TestStore) {
    let docs = vec![
        action(&User::MODEL, "7", Action::Create, 0),
        action(&User::MODEL, "7", Action::Update, 1),
        action(&User::MODEL, "8", Action::Create, 2),
        action(&UserProfile::MODEL, "7", Action::Create, 3),
    ];
    s.insert_all(&docs).await.unwrap();
    assert_eq!(
        ModelAction::objects()
            .filter_by_model::<User>()
            .count(&s)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_model_list(&["app::models.User"])
            .count(&s)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_model_list(&["app::models::User"])
            .count(&s)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_model_list(&["app::models::User", "app::models::UserProfile"])
            .count(&s)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_model_list::<&str>(&[])
            .count(&s)
            .await
            .unwrap(),
        0,
        "empty list matches nothing"
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_instance(&User)
            .count(&s)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        ModelAction::objects()
            .filter_by_instance(&User)
            .action(Action::Update)
            .get(&s)
            .await
            .unwrap()
            .id,
        docs[1].id
    );
    let got = ModelAction::objects()
        .get_by_model::<UserProfile>(&s)
        .await
        .unwrap();
    assert_eq!(got.id, docs[3].id);
}

async fn ordering_window_and_count(s: TestStore) {
    let docs = seed_paths(&s).await;
    let newest = Access::objects()
        .newest_first()
        .limit(3)
        .fetch(&s)
        .await
        .unwrap();
    let want: Vec<ObjectId> = docs.iter().rev().take(3).map(|a| a.id).collect();
    assert_eq!(newest.iter().map(|a| a.id).collect::<Vec<_>>(), want);
    let page = Access::objects()
        .order_by("time.request", Order::Asc)
        .skip(2)
        .limit(2)
        .fetch(&s)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![docs[2].id, docs[3].id]
    );
    assert_eq!(
        Access::objects().skip(2).limit(2).count(&s).await.unwrap(),
        docs.len() as u64,
        "count ignores the window"
    );
}

async fn delete_by_date_range_and_drop(s: TestStore) {
    let docs = seed_paths(&s).await;
    let from = bson::DateTime::from_chrono(at(2020, 5, 1, 12, 2, 0));
    let to = bson::DateTime::from_chrono(at(2020, 5, 1, 12, 4, 0));
    let deleted = s
        .delete_many(
            Collection::Access,
            &Filter::between("time.request", from, to),
        )
        .await
        .unwrap();
    assert_eq!(deleted, 3, "both ends inclusive");
    assert_eq!(
        s.count(Collection::Access, &Filter::all()).await.unwrap(),
        docs.len() as u64 - 3
    );
    s.drop_collection(Collection::Access).await.unwrap();
    assert_eq!(
        s.count(Collection::Access, &Filter::all()).await.unwrap(),
        0
    );
    // The store is usable again after ensuring indexes.
    s.ensure_indexes(&AuditConfig::default()).await.unwrap();
    s.insert(&docs[0]).await.unwrap();
    assert_eq!(
        s.count(Collection::Access, &Filter::all()).await.unwrap(),
        1
    );
}

async fn batches_visit_every_document_once(s: TestStore) {
    let t = Utc::now();
    let docs: Vec<Access> = (0..25)
        .map(|i| access(&format!("/p/{i}"), t, "demo::x"))
        .collect();
    s.insert_all(&docs).await.unwrap();
    let mut seen = Vec::new();
    let mut batches = 0;
    let n = s
        .for_each_batch(Collection::Access, &Filter::all(), 10, |b| {
            batches += 1;
            seen.extend(b.into_iter().map(|d| d.get_object_id("_id").unwrap()));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(n, 25);
    assert_eq!(batches, 3);
    let mut want: Vec<ObjectId> = docs.iter().map(|d| d.id).collect();
    want.sort();
    assert_eq!(seen, want);
}
