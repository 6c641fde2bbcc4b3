//! The console's JSON API through its real router, on both stores: every filter, keyset
//! pagination under concurrent inserts, 400s naming the parameter, 401s, and the read-only
//! guarantee. (Pages and the browser are in `console_browser.rs`.)

use audit_runtime::console::Console;
use audit_runtime::{
    Access, AccessException, AccessResponse, AccessUser, Action, Collection, Filter, ModelAction,
    ModelActionContent, ModelActionInstance, ModelActionModel, Process, Store,
};
use audit_tests::{access, at, TestStore};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use bson::{doc, oid::ObjectId};
use chrono::{DateTime, Duration, Utc};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::HashSet;
use tower::ServiceExt;

const TOKEN: &str = "console-test-token-7f3a";

macro_rules! both_stores {
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

both_stores!(
    each_access_filter_selects_exactly_its_records,
    each_model_action_filter_selects_exactly_its_records,
    documents_by_id,
    keyset_pagination_yields_each_record_once_under_inserts,
    stats_count_buckets_classes_errors_and_views,
    bad_parameters_answer_400_naming_them,
    without_the_token_the_api_answers_401,
    login_sets_a_strict_http_only_session_cookie,
    the_console_is_read_only,
    mounted_under_a_prefix_links_and_assets_follow_it,
);

fn router(store: &Store) -> Router {
    Console::new(store.clone()).token(TOKEN).router()
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.expect("router answers");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    send(app, req).await
}

/// The `_id`s of a list answer's items, and its `next`.
async fn ids(app: &Router, uri: &str) -> (Vec<String>, Option<String>) {
    let a = get(app, uri).await;
    assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.body);
    let v = a.json();
    let ids = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["_id"]["$oid"].as_str().expect("an ObjectId").to_owned())
        .collect();
    (ids, v["next"].as_str().map(str::to_owned))
}

fn set(ids: &[&ObjectId]) -> HashSet<String> {
    ids.iter().map(|i| i.to_hex()).collect()
}

fn resp(status_code: i32) -> AccessResponse {
    AccessResponse {
        content: bson::Bson::Null,
        content_type: "text/html".into(),
        status_code,
    }
}

fn t0() -> DateTime<Utc> {
    at(2024, 3, 10, 12, 0, 0)
}

/// Six accesses, each the only one with some value, so each filter selects a known set.
fn sample_accesses(process: ObjectId) -> Vec<Access> {
    let mut a1 = access("/polls/1/", t0(), "demo::views::detail");
    a1.user = Some(AccessUser::new(23, "bob"));
    a1.request.METADATA = doc! { "REQUEST_METHOD": "GET" };
    a1.response = Some(resp(200));
    a1.interlink_id = Some("req-a1".into());
    a1.process = Some(process);
    let mut a2 = access(
        "/polls/2/vote/",
        t0() + Duration::hours(1),
        "demo::views::vote",
    );
    a2.user = Some(AccessUser::new(23, "bob"));
    a2.request.METADATA = doc! { "REQUEST_METHOD": "POST" };
    a2.response = Some(resp(302));
    let mut a3 = access("/admin/", t0() + Duration::hours(2), "demo::views::admin");
    a3.user = Some(AccessUser::new("u-uuid-7", "carol"));
    a3.request.METADATA = doc! { "REQUEST_METHOD": "GET" };
    a3.response = Some(resp(500));
    a3.exception = Some(AccessException {
        kind: "Panic".into(),
        message: "boom".into(),
        trace: "at demo::views::admin".into(),
    });
    let mut a4 = access("/polls/", t0() + Duration::days(1), "demo::views::index");
    a4.request.METADATA = doc! { "REQUEST_METHOD": "GET" };
    a4.response = Some(resp(404));
    vec![a1, a2, a3, a4]
}

async fn each_access_filter_selects_exactly_its_records(store: TestStore) {
    let process = ObjectId::new();
    let acc = sample_accesses(process);
    store.insert_all(&acc).await.unwrap();
    let app = router(&store);
    let [a1, a2, a3, a4] = [&acc[0].id, &acc[1].id, &acc[2].id, &acc[3].id];
    let process_q = format!("process={}", process.to_hex());
    let cases: Vec<(&str, HashSet<String>)> = vec![
        ("", set(&[a1, a2, a3, a4])),
        ("user_id=23", set(&[a1, a2])),
        ("user_id=u-uuid-7", set(&[a3])),
        ("url=/polls/", set(&[a4])),
        ("url_regex=%5E/polls/%5Cd%2B/", set(&[a1, a2])),
        ("view=demo::views::vote", set(&[a2])),
        ("method=POST", set(&[a2])),
        ("method=get", set(&[a1, a3, a4])),
        ("status=500", set(&[a3])),
        ("status=404", set(&[a4])),
        ("exception=Panic", set(&[a3])),
        ("interlink_id=req-a1", set(&[a1])),
        (&process_q, set(&[a1])),
        ("from=2024-03-10T13:00", set(&[a2, a3, a4])),
        ("to=2024-03-10T13:00", set(&[a1, a2])),
        ("from=2024-03-10T12:30&to=2024-03-10", set(&[a2, a3])),
        ("from=2024-03-11", set(&[a4])),
        ("user_id=23&method=GET", set(&[a1])),
        ("user_id=999", set(&[])),
    ];
    for (q, want) in cases {
        let (got, next) = ids(&app, &format!("/api/access?{q}")).await;
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            want,
            "filter `{q}`"
        );
        assert_eq!(got.len(), want.len(), "filter `{q}`: no duplicates");
        assert_eq!(next, None, "filter `{q}`: one page");
    }
    // Newest first.
    let (got, _) = ids(&app, "/api/access").await;
    assert_eq!(
        got,
        vec![a4.to_hex(), a3.to_hex(), a2.to_hex(), a1.to_hex()]
    );
}

fn action(
    model: &str,
    action: Action,
    instance: &str,
    t: DateTime<Utc>,
    access: Option<ObjectId>,
) -> ModelAction {
    let (app, name) = model.split_once("::").unwrap();
    ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: model.into(),
            app: app.into(),
            name: name.into(),
        },
        action,
        content: ModelActionContent {
            old: doc! { "question": "old" },
            new: doc! { "question": "new" },
            changes: doc! { "question": { "old": "old", "new": "new" } },
        },
        instance: ModelActionInstance {
            id: instance.into(),
            description: format!("instance {instance}"),
        },
        timestamp: t,
        access,
        process: None,
    }
}

async fn each_model_action_filter_selects_exactly_its_records(store: TestStore) {
    let acc = ObjectId::new();
    let m = vec![
        action("demo::Poll", Action::Create, "1", t0(), Some(acc)),
        action(
            "demo::Poll",
            Action::Update,
            "1",
            t0() + Duration::hours(1),
            Some(acc),
        ),
        action(
            "demo::Choice",
            Action::Create,
            "7",
            t0() + Duration::hours(2),
            None,
        ),
        action(
            "demo::Poll",
            Action::Delete,
            "2",
            t0() + Duration::days(1),
            None,
        ),
    ];
    store.insert_all(&m).await.unwrap();
    let app = router(&store);
    let [m1, m2, m3, m4] = [&m[0].id, &m[1].id, &m[2].id, &m[3].id];
    let access_q = format!("access={}", acc.to_hex());
    let cases: Vec<(&str, HashSet<String>)> = vec![
        ("", set(&[m1, m2, m3, m4])),
        ("model=demo::Poll", set(&[m1, m2, m4])),
        ("action=create", set(&[m1, m3])),
        ("instance_id=1", set(&[m1, m2])),
        ("model=demo::Poll&instance_id=2", set(&[m4])),
        (&access_q, set(&[m1, m2])),
        ("from=2024-03-10T13:00", set(&[m2, m3, m4])),
        ("to=2024-03-10", set(&[m1, m2, m3])),
    ];
    for (q, want) in cases {
        let (got, _) = ids(&app, &format!("/api/model-action?{q}")).await;
        assert_eq!(
            got.iter().cloned().collect::<HashSet<_>>(),
            want,
            "filter `{q}`"
        );
    }
}

async fn documents_by_id(store: TestStore) {
    let process = Process {
        id: ObjectId::new(),
        interlink_id: None,
        name: "demo".into(),
        args: Some("demo --serve".into()),
        machine: "host-1".into(),
        user: "www".into(),
        pid: 4242,
        creation_time: t0(),
    };
    let stored = store.upsert_process(&process).await.unwrap();
    let acc = sample_accesses(stored.id);
    store.insert_all(&acc).await.unwrap();
    let m = action("demo::Poll", Action::Update, "1", t0(), Some(acc[0].id));
    store.insert(&m).await.unwrap();
    let app = router(&store);

    let a = get(&app, &format!("/api/access/{}", acc[0].id.to_hex())).await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(v["request"]["path"], "/polls/1/");
    assert_eq!(v["user"]["username"], "bob");
    assert_eq!(
        v["time"]["request"]["$date"], "2024-03-10T12:00:00Z",
        "relaxed Extended JSON"
    );
    let a = get(&app, &format!("/api/model-action/{}", m.id.to_hex())).await;
    assert_eq!(a.json()["content"]["changes"]["question"]["new"], "new");
    let a = get(&app, &format!("/api/process/{}", stored.id.to_hex())).await;
    assert_eq!(a.json()["pid"], 4242);

    let missing = get(&app, &format!("/api/access/{}", ObjectId::new().to_hex())).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = get(&app, "/api/process/42").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["parameter"], "id");
}

/// 2,500 records walked 97 at a time while new records keep arriving (newer ones, and older
/// ones that land behind the cursor): every record present at the start comes exactly once.
async fn keyset_pagination_yields_each_record_once_under_inserts(store: TestStore) {
    let start = t0();
    let mut originals = HashSet::new();
    for chunk in 0..5 {
        let batch: Vec<Access> = (0..500)
            .map(|i| {
                let mut a = access(
                    &format!("/items/{}", chunk * 500 + i),
                    start + Duration::seconds(chunk * 500 + i),
                    "demo::views::item",
                );
                a.user = Some(AccessUser::new(i % 2, "walker"));
                a
            })
            .collect();
        originals.extend(batch.iter().map(|a| a.id.to_hex()));
        store.insert_all(&batch).await.unwrap();
    }
    assert_eq!(originals.len(), 2500);
    let app = router(&store);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    let mut inserted_older = HashSet::new();
    loop {
        let uri = match &cursor {
            None => "/api/access?limit=97".to_owned(),
            Some(c) => format!("/api/access?limit=97&cursor={c}"),
        };
        let (page, next) = ids(&app, &uri).await;
        assert!(page.len() <= 97);
        seen.extend(page);
        pages += 1;
        // Concurrent traffic: a new request (newest id) and a late write of an older request
        // (an id from before every original, as a delayed async writer produces).
        let mut newer = access("/items/new", Utc::now(), "demo::views::item");
        newer.id = ObjectId::new();
        let mut older = access("/items/late", start, "demo::views::item");
        older.id = ObjectId::from_parts(1_000_000 + pages, [0; 5], [0, 0, pages as u8]);
        inserted_older.insert(older.id.to_hex());
        store.insert_all(&[newer, older]).await.unwrap();
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
        assert!(pages < 100, "the walk ends");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    for id in &originals {
        assert!(unique.contains(id), "original {id} missing from the walk");
    }
    // Late writes with ids behind the cursor are reached by the walk: each exactly once too.
    assert!(
        seen.iter()
            .all(|id| originals.contains(id) || inserted_older.contains(id)),
        "only originals and late older writes; newer records are ahead of the cursor"
    );
    assert!(pages >= 26, "2,500 records in pages of 97: {pages} pages");

    // A filtered walk: half of the records, in pages of 1000.
    let mut seen = HashSet::new();
    let mut uri = "/api/access?user_id=1&limit=1000".to_owned();
    loop {
        let (page, next) = ids(&app, &uri).await;
        for id in page {
            assert!(seen.insert(id), "no record twice");
        }
        match next {
            Some(n) => uri = format!("/api/access?user_id=1&limit=1000&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1250);
}

async fn stats_count_buckets_classes_errors_and_views(store: TestStore) {
    let acc = sample_accesses(ObjectId::new());
    store.insert_all(&acc).await.unwrap();
    let app = router(&store);
    let a = get(
        &app,
        "/api/stats?from=2024-03-10T11:00&to=2024-03-10T15:59&bucket=hour",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    assert_eq!(v["total"], 3, "{v}");
    assert_eq!(v["errors"], 1, "the 500 with its exception");
    assert_eq!(v["status_classes"]["2xx"], 1);
    assert_eq!(v["status_classes"]["3xx"], 1);
    assert_eq!(v["status_classes"]["5xx"], 1);
    assert_eq!(v["status_classes"]["4xx"], 0);
    let buckets = v["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 5, "11:00 to 15:00");
    let counts: Vec<u64> = buckets
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![0, 1, 1, 1, 0]);
    assert_eq!(buckets[1]["start"], "2024-03-10T12:00:00Z");
    assert_eq!(buckets[3]["status_classes"]["5xx"], 1);
    let views: Vec<&str> = v["top_views"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["view"].as_str().unwrap())
        .collect();
    assert_eq!(views.len(), 3);
    assert!(views.contains(&"demo::views::admin"));
    let day = get(&app, "/api/stats?from=2024-03-01&to=2024-03-31&bucket=day")
        .await
        .json();
    assert_eq!(day["total"], 4);
    assert_eq!(day["buckets"].as_array().unwrap().len(), 31);
}

async fn bad_parameters_answer_400_naming_them(store: TestStore) {
    let app = router(&store);
    let cases = [
        ("/api/access?user=1", "user"),
        ("/api/access?url_regex=(unclosed", "url_regex"),
        ("/api/access?status=abc", "status"),
        ("/api/access?status=700", "status"),
        ("/api/access?limit=0", "limit"),
        ("/api/access?limit=1001", "limit"),
        ("/api/access?limit=-5", "limit"),
        ("/api/access?cursor=not-an-id", "cursor"),
        ("/api/access?process=12", "process"),
        ("/api/access?from=yesterday", "from"),
        ("/api/access?to=2024-13-45", "to"),
        ("/api/access?from=2024-02-01&to=2024-01-01", "to"),
        ("/api/access?url=/a&url_regex=b", "url_regex"),
        ("/api/access?view=a&view=b", "view"),
        ("/api/model-action?action=upsert", "action"),
        ("/api/model-action?access=xyz", "access"),
        ("/api/model-action?user_id=1", "user_id"),
        ("/api/stats?bucket=week", "bucket"),
        ("/api/stats?from=2000-01-01&bucket=minute", "bucket"),
        ("/api/access/zzz", "id"),
    ];
    for (uri, param) in cases {
        let a = get(&app, uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.body);
        let v = a.json();
        assert_eq!(v["parameter"], param, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains(param), "{uri}: {v}");
    }
}

const API_ROUTES: [&str; 6] = [
    "/api/access",
    "/api/access/65f0a0000000000000000000",
    "/api/model-action",
    "/api/model-action/65f0a0000000000000000000",
    "/api/process/65f0a0000000000000000000",
    "/api/stats",
];

const PAGES: [&str; 8] = [
    "/",
    "/access",
    "/access/65f0a0000000000000000000",
    "/model-action",
    "/model-action/65f0a0000000000000000000",
    "/history?model=demo::Poll&instance_id=1",
    "/process/65f0a0000000000000000000",
    "/access?user_id=1",
];

async fn without_the_token_the_api_answers_401(store: TestStore) {
    store
        .insert_all(&sample_accesses(ObjectId::new()))
        .await
        .unwrap();
    let app = router(&store);
    for uri in API_ROUTES {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer console-test-token-7f3"),
            Some(TOKEN),
        ] {
            let mut req = Request::get(uri);
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let a = send(&app, req.body(Body::empty()).unwrap()).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri} with {auth:?}");
            assert!(!a.body.contains("/polls/"), "nothing of the trail leaks");
        }
        let ok = get(&app, uri).await;
        assert_ne!(ok.status, StatusCode::UNAUTHORIZED, "{uri} with the token");
    }
    for uri in PAGES {
        let a = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(a.headers[header::LOCATION], "/login", "{uri}");
    }
}

async fn login_sets_a_strict_http_only_session_cookie(store: TestStore) {
    let app = router(&store);
    let login = send(&app, Request::get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains(r#"name="token""#));
    let post = |token: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let wrong = send(&app, post("nope")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());
    let right = send(&app, post(TOKEN)).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    let cookie = right.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is a session id, not the token"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for uri in PAGES {
        let a = send(
            &app,
            Request::get(uri)
                .header(header::COOKIE, &pair)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_ne!(a.status, StatusCode::SEE_OTHER, "{uri} with the session");
        let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'none'"), "{csp}");
    }
    let out = send(
        &app,
        Request::post("/logout")
            .header(header::COOKIE, &pair)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = send(
        &app,
        Request::get("/")
            .header(header::COOKIE, &pair)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "the session ended");
}

async fn counts(store: &Store) -> [u64; 3] {
    let mut out = [0; 3];
    for (i, c) in Collection::ALL.into_iter().enumerate() {
        out[i] = store.count(c, &Filter::all()).await.unwrap();
    }
    out
}

async fn the_console_is_read_only(store: TestStore) {
    let acc = sample_accesses(ObjectId::new());
    store.insert_all(&acc).await.unwrap();
    store
        .insert(&action(
            "demo::Poll",
            Action::Create,
            "1",
            t0(),
            Some(acc[0].id),
        ))
        .await
        .unwrap();
    let before = counts(&store).await;
    let app = router(&store);
    let id = acc[0].id.to_hex();
    let routes = [
        "/api/access".to_owned(),
        format!("/api/access/{id}"),
        "/api/model-action".to_owned(),
        "/api/stats".to_owned(),
        "/access".to_owned(),
        format!("/access/{id}"),
        "/".to_owned(),
    ];
    for uri in &routes {
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let req = Request::builder()
                .method(m.clone())
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"request":{"path":"/forged"}}"#))
                .unwrap();
            let a = send(&app, req).await;
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
        }
        // GETs read and change nothing either.
        get(&app, uri).await;
    }
    assert_eq!(counts(&store).await, before);
    let stored: Vec<Access> = store
        .find(&audit_runtime::FindOptions::new(Filter::eq(
            "_id", acc[0].id,
        )))
        .await
        .unwrap();
    assert_eq!(stored[0], acc[0], "the document is unchanged");
}

async fn mounted_under_a_prefix_links_and_assets_follow_it(store: TestStore) {
    let acc = sample_accesses(ObjectId::new());
    store.insert_all(&acc).await.unwrap();
    // Behind the application's own auth: no console token.
    let app = Router::new().nest("/admin/audit", Console::new(store.store.clone()).router());
    let page = send(
        &app,
        Request::get("/admin/audit/access?user_id=23")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page
        .body
        .contains(r#"href="/admin/audit/assets/style.css""#));
    assert!(page.body.contains(&format!(
        r#"href="/admin/audit/access/{}""#,
        acc[0].id.to_hex()
    )));
    assert!(page.body.contains(r#"action="/admin/audit/access""#));
    let css = send(
        &app,
        Request::get("/admin/audit/assets/style.css")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let api = send(
        &app,
        Request::get("/admin/audit/api/access")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(api.status, StatusCode::OK, "no token configured: no check");
    // With a token, the login redirect stays under the prefix too.
    let guarded = Router::new().nest("/audit", router(&store));
    let r = send(
        &guarded,
        Request::get("/audit/access").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.headers[header::LOCATION], "/audit/login");
}

/// A query past its time limit answers 503 instead of running on. SQLite's progress handler
/// checks the clock every thousand steps; a limit of one nanosecond has passed at the first check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_query_past_its_time_limit_answers_503() {
    let store = audit_tests::sqlite_store().await;
    let batch: Vec<Access> = (0..2000)
        .map(|i| access(&format!("/items/{i}"), t0(), "demo::views::item"))
        .collect();
    store.insert_all(&batch).await.unwrap();
    let app = Console::new(store.store.clone())
        .token(TOKEN)
        .query_timeout(std::time::Duration::from_nanos(1))
        .router();
    for uri in [
        "/api/access?url_regex=%5E(a%2B)%2B%24",
        "/api/stats?from=2024-03-01&to=2024-03-31&bucket=day",
    ] {
        let a = get(&app, uri).await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            a.body
        );
        assert!(a.json()["error"].as_str().unwrap().contains("time limit"));
    }
    // The connection is usable afterwards, with the limit gone.
    let ok = router(&store);
    let (page, _) = ids(&ok, "/api/access?url_regex=%5E/items/1&limit=5").await;
    assert_eq!(page.len(), 5);
}
