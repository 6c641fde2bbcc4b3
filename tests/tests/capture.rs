//! End to end, through a real axum server and a real HTTP client, on both stores: one scenario per
//! demo route, concurrency, the 404 and short-circuit cases, redaction, key escaping, body
//! caps, streaming, providers, activation off, and sync and async modes.

use audit_runtime::http::AuditLayer;
use audit_runtime::{
    Access, AuditConfig, Auditor, Collection, Filter, ModelAction, Order, Store, UrlMatch,
    WriterGuard,
};
use axum::routing::get;
use axum::Router;
use bson::{doc, Bson};

const DEMO_TOML: &str = include_str!("../../examples/demo.toml");

struct Server {
    base: String,
    auditor: Auditor,
    guard: Option<WriterGuard>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
    client: reqwest::Client,
}

impl Server {
    fn store(&self) -> &Store {
        self.auditor.store().expect("active")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .header("x-user", "23:bob")
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn accesses(&self) -> Vec<Access> {
        self.auditor.flush().await;
        Access::objects()
            .order_by("time.request", Order::Asc)
            .fetch(self.store())
            .await
            .unwrap()
    }

    async fn access_to(&self, path: &str) -> Access {
        self.auditor.flush().await;
        Access::objects()
            .get_by_url(UrlMatch::exact(path), self.store())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    async fn stop(mut self) -> audit_runtime::MetricsSnapshot {
        self.task.abort();
        self.guard.take().unwrap().shutdown().await
    }
}

fn config(
    kind: &str,
    toml: &str,
    env: &[(&str, &str)],
) -> (AuditConfig, Option<tempfile::TempDir>) {
    let (conn, dir) = audit_tests::connection(kind);
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    (
        AuditConfig::from_sources(Some(toml), env)
            .unwrap()
            .with_connection(conn),
        dir,
    )
}

async fn serve(
    app: Router,
    auditor: Auditor,
    guard: WriterGuard,
    dir: Option<tempfile::TempDir>,
) -> Server {
    let (addr, task) = audit_tests::serve(app).await;
    Server {
        base: format!("http://{addr}"),
        auditor,
        guard: Some(guard),
        task,
        _dir: dir,
        client: reqwest::Client::new(),
    }
}

async fn demo_server(kind: &str, env: &[(&str, &str)]) -> Server {
    let (config, dir) = config(kind, DEMO_TOML, env);
    let polls = demo::Polls::temporary().await.unwrap();
    let (auditor, guard) = demo::auditor_builder(config, &polls).start().await.unwrap();
    serve(demo::app(auditor.clone(), polls), auditor, guard, dir).await
}

use audit_tests::on_both_stores;

on_both_stores!(
    demo_access_routes_each_record_one_correct_access,
    demo_model_actions_link_to_their_access_and_process,
    concurrent_requests_get_distinct_correct_accesses,
    unmatched_and_short_circuited_requests_never_touch_another_record,
    secrets_are_redacted_and_keys_escaped,
    bodies_are_capped_streamed_and_byte_identical,
    failing_providers_never_stop_the_record,
    activate_off_records_nothing_and_passes_through,
    async_mode_stores_every_request_after_shutdown,
);

async fn demo_access_routes_each_record_one_correct_access(kind: &str) {
    let s = demo_server(kind, &[]).await;
    let t0 = chrono::Utc::now();
    assert_eq!(s.get("/").await.status(), 200);
    let class = s.get("/access/class/").await;
    assert!(
        class.headers().get("x-request-id").is_some(),
        "correlation id echoed"
    );
    let echoed = s
        .client
        .get(format!("{}/access/function/?page=2&page=3", s.base))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "req-42");
    assert_eq!(
        s.get("/access/decorator/").await.text().await.unwrap(),
        r#"{"response":"test"}"#
    );
    assert_eq!(s.get("/access/exception/").await.status(), 500);
    assert_eq!(s.get("/access/panic/").await.status(), 500);
    assert_eq!(s.get("/access/args/7/").await.status(), 200);
    assert_eq!(
        s.get("/access/disabled/").await.text().await.unwrap(),
        "not audited"
    );
    assert_eq!(
        s.post("/login/", &[("username", "alice"), ("password", "s3cret")])
            .await
            .status(),
        200
    );
    let polls = s.get("/api/polls/").await;
    assert_eq!(polls.headers()["content-type"], "application/json");

    let all = s.accesses().await;
    let paths: Vec<&str> = all.iter().map(|a| a.request.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/access/class/",
            "/access/function/",
            "/access/decorator/",
            "/access/exception/",
            "/access/panic/",
            "/access/args/7/",
            "/login/",
            "/api/polls/"
        ],
        "one access per audited request; `/` is blacklisted and the disabled view is not recorded"
    );
    let ids: std::collections::BTreeSet<_> = all.iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), all.len());

    let class = &all[0];
    assert_eq!(
        (
            class.view.full_name.as_str(),
            class.view.app.as_str(),
            class.view.name.as_str()
        ),
        ("demo::ClassView::get", "demo", "get")
    );
    assert_eq!(class.user.as_ref().unwrap().username, "bob");
    assert_eq!(
        class.user.as_ref().unwrap().id,
        audit_runtime::UserId::Int(23)
    );
    assert_eq!(
        class.request.METADATA.get_str("REQUEST_METHOD").unwrap(),
        "GET"
    );
    assert!(class
        .request
        .METADATA
        .get_str("REMOTE_ADDR")
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(class.time.request >= t0 - chrono::Duration::milliseconds(5));
    assert!(class.time.response.unwrap() >= class.time.request);
    assert!(class.process.is_some());

    let function = &all[1];
    assert_eq!(
        (function.view.full_name.as_str(), function.view.app.as_str()),
        ("/access/function/", "demo"),
        "unannotated: the route is the view"
    );
    assert_eq!(
        function.request.GET,
        doc! { "page": ["2", "3"] },
        "repeated keys keep every value "
    );
    assert_eq!(function.interlink_id.as_deref(), Some("req-42"));
    assert_eq!(
        function.response.as_ref().unwrap().content,
        Bson::Null,
        "text/plain content is not stored"
    );
    assert_eq!(
        function.response.as_ref().unwrap().content_type,
        "text/plain; charset=utf-8"
    );

    let decorator = &all[2];
    assert_eq!(
        decorator.response.as_ref().unwrap().content,
        Bson::Document(doc! { "response": "test" })
    );

    let exception = &all[3];
    let e = exception.exception.as_ref().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("demo::DemoError", "Intended exception")
    );
    assert_eq!(
        exception.response.as_ref().unwrap().status_code,
        500,
        "both exception and response"
    );

    let panic = &all[4];
    assert_eq!(panic.exception.as_ref().unwrap().kind, "panic");
    assert_eq!(panic.exception.as_ref().unwrap().message, "Intended panic");
    assert_eq!(panic.response.as_ref().unwrap().status_code, 500);

    let args = &all[5];
    assert_eq!(args.view.args, vec![Bson::String("7".into())]);
    assert_eq!(args.view.kwargs, doc! { "n": 7_i64 });

    let login = &all[6];
    assert_eq!(
        login.request.POST,
        doc! { "username": "alice", "password": "********" }
    );
    assert_eq!(
        login.user.as_ref().unwrap().username,
        "alice",
        "set inside the handler"
    );

    let api = &all[7];
    let api_id = api.id;
    assert_eq!(
        api.custom,
        Some(doc! { "polls": { "names": [], "num_polls": 0_i64 } })
    );
    drop(all);
    // The demo's /access/last/ serves the newest stored access as relaxed Extended JSON.
    let last = s
        .get("/access/last/")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(last["request"]["path"], "/api/polls/");
    assert_eq!(last["_id"]["$oid"], api_id.to_hex());
    s.stop().await;
}

async fn demo_model_actions_link_to_their_access_and_process(kind: &str) {
    let s = demo_server(kind, &[]).await;
    s.post("/modelaction/create/", &[("question", "What's up?")])
        .await;
    s.post("/modelaction/update/", &[("question", "What's new?")])
        .await;
    s.post("/modelaction/delete/", &[]).await;
    let last = s
        .get("/modelaction/last/")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(last["action"], "delete");
    let api = s.get("/api/polls/").await;
    assert_eq!(api.text().await.unwrap(), "[]");
    s.auditor.flush().await;
    let actions = ModelAction::objects()
        .newest_first()
        .fetch(s.store())
        .await
        .unwrap();
    assert_eq!(actions.len(), 3);
    let process = s.auditor.process_id().await.unwrap();
    for (m, path) in actions.iter().rev().zip([
        "/modelaction/create/",
        "/modelaction/update/",
        "/modelaction/delete/",
    ]) {
        let access = s.access_to(path).await;
        assert_eq!(
            m.access,
            Some(access.id),
            "{path}: linked to its request's access"
        );
        assert_eq!(m.process, Some(process));
        assert_eq!(access.process, Some(process));
    }
    let update = &actions[1];
    assert_eq!(
        update.content.changes.keys().collect::<Vec<_>>(),
        ["question", "updated"]
    );
    assert_eq!(
        update.content.old.get_str("question").unwrap(),
        "What's up?"
    );
    assert_eq!(
        update.content.new.get_str("admin_token").unwrap(),
        "********",
        "secret-named fields are masked"
    );
    // Outside any request a model action links to no access.
    let p = demo::Poll {
        id: 99,
        question: "q".into(),
        updated: chrono::Utc::now(),
        admin_token: String::new(),
    };
    let id = s.auditor.record_create(&p).await.unwrap();
    s.auditor.flush().await;
    let m = ModelAction::objects()
        .eq("_id", id)
        .get(s.store())
        .await
        .unwrap();
    assert_eq!(m.access, None);
    s.stop().await;
}

async fn concurrent_requests_get_distinct_correct_accesses(kind: &str) {
    let s = demo_server(kind, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = s.client.clone();
        let url = format!("{}/access/args/{i}/", s.base);
        tasks.push(tokio::spawn(async move {
            client
                .get(url)
                .header("x-user", format!("{i}:user{i}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let all = s.accesses().await;
    assert_eq!(all.len(), 100);
    for a in &all {
        let n: i64 = a
            .request
            .path
            .trim_start_matches("/access/args/")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        assert_eq!(
            a.view.kwargs,
            doc! { "n": n },
            "arguments belong to this request"
        );
        assert_eq!(a.user.as_ref().unwrap().username, format!("user{n}"));
    }
    s.stop().await;
}

async fn unmatched_and_short_circuited_requests_never_touch_another_record(kind: &str) {
    let s = demo_server(kind, &[]).await;
    s.get("/access/decorator/").await;
    let before = s.access_to("/access/decorator/").await;
    assert_eq!(s.get("/access/nope/").await.status(), 404);
    // The form extractor rejects a request without a form body before the handler runs.
    let rejected = s
        .client
        .post(format!("{}/modelaction/create/", s.base))
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 415);
    assert_eq!(
        s.access_to("/access/decorator/").await,
        before,
        "A is unchanged"
    );
    let missing = s.access_to("/access/nope/").await;
    assert_eq!(missing.response.as_ref().unwrap().status_code, 404);
    assert_eq!(missing.view.full_name, "<unmatched>");
    let short = s.access_to("/modelaction/create/").await;
    assert_eq!(short.response.as_ref().unwrap().status_code, 415);
    assert_eq!(
        short.view.full_name, "/modelaction/create/",
        "the handler never ran: the route is the view"
    );
    assert_eq!(
        s.store()
            .count(Collection::ModelAction, &Filter::all())
            .await
            .unwrap(),
        0
    );
    s.stop().await;
}

// Secrets long and unique enough that a random id or a timestamp cannot contain them by chance:
// the raw record is searched for each of them.
const TOKEN: &str = "s3cr3t-query-token-Zq7Xw2Lm9Kp4Rt6Vb1Nc8Hd5";
const BEARER: &str = "s3cr3t-bearer-Fj3Gk8Lp2Qw7Er4Ty9Ui6Op1Za";
const SESSION: &str = "s3cr3t-session-Mn5Bv8Cx2Zl7Kj4Hg9Fd6Sa3Qw";
const CSRF: &str = "s3cr3t-csrf-Po9Iu4Yt7Re2Wq5Lk8Jh3Gf6Ds";
const API_KEY: &str = "s3cr3t-api-key-Xc4Vb7Nm2As9Df5Gh8Jk3Lq6W";
const JSON_PASSWORD: &str = "s3cr3t-json-password-Rt5Yu8Io2Pa7Sd4Fg9Hj3K";
const JSON_KEY: &str = "s3cr3t-json-api-key-Bn6Mq9Wv3Ex8Rc5Tz2Yk7Ul";

fn secrets_router() -> Router {
    Router::new()
        .route("/json", get(|| async { axum::Json(serde_json::json!({ "user": "u", "password": JSON_PASSWORD, "nested": { "api_key": JSON_KEY, "a.b": 1 } })) }))
        .route("/echo", get(|| async { "ok" }).post(|| async { "ok" }))
}

async fn secrets_are_redacted_and_keys_escaped(kind: &str) {
    let (config, dir) = config(kind, "", &[]);
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let s = serve(
        secrets_router().layer(AuditLayer::new(auditor.clone())),
        auditor,
        guard,
        dir,
    )
    .await;
    s.client
        .get(format!(
            "{}/echo?token={TOKEN}&a.b=1&a_b=2&%24where=3&q=%C3%B1",
            s.base
        ))
        .header("authorization", format!("Bearer {BEARER}"))
        .header("cookie", format!("sessionid={SESSION}; csrftoken={CSRF}"))
        .header("x-api-key", API_KEY)
        .header("x-trace", "visible")
        .send()
        .await
        .unwrap();
    s.get("/json").await;
    let a = s.access_to("/echo").await;
    assert_eq!(
        a.request.GET,
        doc! { "token": "********", "a%2Eb": "1", "a_b": "2", "%24where": "3", "q": "ñ" }
    );
    assert_eq!(
        a.request.COOKIES,
        doc! { "sessionid": "********", "csrftoken": "********" }
    );
    let meta = &a.request.METADATA;
    assert_eq!(meta.get_str("HTTP_AUTHORIZATION").unwrap(), "********");
    assert_eq!(meta.get_str("HTTP_COOKIE").unwrap(), "********");
    assert_eq!(meta.get_str("HTTP_X_API_KEY").unwrap(), "********");
    assert_eq!(meta.get_str("HTTP_X_TRACE").unwrap(), "visible");
    assert!(!meta.get_str("QUERY_STRING").unwrap().contains(TOKEN));
    assert!(
        !meta.contains_key("PATH"),
        "the server's environment is never stored"
    );
    let raw = bson::to_vec(&bson::to_document(&a).unwrap()).unwrap();
    for secret in [TOKEN, BEARER, SESSION, CSRF, API_KEY] {
        assert!(
            !String::from_utf8_lossy(&raw).contains(secret),
            "{secret} stored in clear"
        );
    }
    let j = s.access_to("/json").await;
    let raw = bson::to_vec(&bson::to_document(&j).unwrap()).unwrap();
    for secret in [JSON_PASSWORD, JSON_KEY] {
        assert!(
            !String::from_utf8_lossy(&raw).contains(secret),
            "{secret} stored in clear"
        );
    }
    assert_eq!(
        j.response.unwrap().content,
        Bson::Document(
            doc! { "user": "u", "password": "********", "nested": { "api_key": "********", "a%2Eb": 1 } }
        )
    );
    s.stop().await;
}

async fn bodies_are_capped_streamed_and_byte_identical(kind: &str) {
    let (config, dir) = config(kind, "[capture]\nmax_body_bytes = 1000", &[]);
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let big: String = "x".repeat(5000);
    let big_json = serde_json::json!({ "data": big }).to_string();
    let small_json = r#"{"a":[1,2,{"b":null}],"c":"ñ"}"#;
    let app = Router::new()
        .route(
            "/big",
            get({
                let body = big_json.clone();
                move || async move { ([("content-type", "application/json")], body) }
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = vec![
                    Ok::<_, std::io::Error>(bytes_of("{\"a\":[1,2,")),
                    Ok(bytes_of("{\"b\":null}],\"c\":\"ñ\"}")),
                ];
                (
                    [("content-type", "application/json")],
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
                )
            }),
        )
        .route(
            "/xml",
            get(|| async { ([("content-type", "application/xml")], "<tag>test</tag>") }),
        )
        .route(
            "/bad",
            get(|| async { ([("content-type", "application/json")], "{\"asd]") }),
        )
        .route(
            "/form",
            axum::routing::post(|body: String| async move { body.len().to_string() }),
        );
    let s = serve(
        app.layer(AuditLayer::new(auditor.clone())),
        auditor,
        guard,
        dir,
    )
    .await;
    assert_eq!(
        s.get("/big").await.text().await.unwrap(),
        big_json,
        "byte-identical"
    );
    assert_eq!(
        s.get("/stream").await.text().await.unwrap(),
        small_json,
        "streamed body intact"
    );
    s.get("/xml").await;
    assert_eq!(s.get("/bad").await.status(), 200);
    let long_value = "v".repeat(3000);
    let got = s
        .post("/form", &[("field", long_value.as_str())])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        got,
        (long_value.len() + 6).to_string(),
        "the handler still gets the whole body"
    );
    let big = s.access_to("/big").await.response.unwrap();
    assert!(
        big.content
            .as_str()
            .unwrap()
            .starts_with("<body not stored"),
        "{:?}",
        big.content
    );
    let stream = s.access_to("/stream").await.response.unwrap();
    assert_eq!(
        stream.content,
        Bson::Document(doc! { "a": [1, 2, { "b": Bson::Null }], "c": "ñ" })
    );
    assert_eq!(
        s.access_to("/xml").await.response.unwrap().content,
        Bson::String("<tag>test</tag>".into())
    );
    let bad = s.access_to("/bad").await.response.unwrap();
    assert_eq!((bad.content, bad.status_code), (Bson::Null, 200));
    let form = s.access_to("/form").await.request.POST;
    assert_eq!(
        form.keys().collect::<Vec<_>>(),
        [audit_runtime::http::BODY_NOTE_KEY],
        "a form over the cap is not stored, only a note saying so"
    );
    s.stop().await;
}

fn bytes_of(s: &str) -> axum::body::Bytes {
    axum::body::Bytes::copy_from_slice(s.as_bytes())
}

async fn failing_providers_never_stop_the_record(kind: &str) {
    let (config, dir) = config(kind, "[capture]\nmax_body_bytes = 2000", &[]);
    let (auditor, guard) = Auditor::builder(config)
        .provider("good", |ctx: &audit_runtime::http::ProviderContext<'_>| bson::bson!({ "path": ctx.path, "status": ctx.status.map(i32::from) }))
        .provider("empty", |_: &audit_runtime::http::ProviderContext<'_>| bson::Document::new())
        .provider("null", |_: &audit_runtime::http::ProviderContext<'_>| Bson::Null)
        .provider("panics", |_: &audit_runtime::http::ProviderContext<'_>| -> Bson { panic!("provider bug") })
        .provider("huge", |_: &audit_runtime::http::ProviderContext<'_>| Bson::String("h".repeat(10_000)))
        .provider("dotted", |_: &audit_runtime::http::ProviderContext<'_>| bson::bson!({ "a.b": { "$x": 1 } }))
        .start()
        .await
        .unwrap();
    let layer = AuditLayer::new(auditor.clone());
    let app = Router::new()
        .route("/p", get(|| async { "ok" }))
        .layer(layer.clone());
    let s = serve(app, auditor, guard, dir).await;
    assert_eq!(s.get("/p").await.status(), 200);
    let a = s.access_to("/p").await;
    let custom = a.custom.unwrap();
    assert_eq!(
        custom.get_document("good").unwrap(),
        &doc! { "path": "/p", "status": 200 }
    );
    assert!(
        !custom.contains_key("empty")
            && !custom.contains_key("null")
            && !custom.contains_key("panics")
    );
    assert!(custom
        .get_str("huge")
        .unwrap()
        .starts_with("<provider data not stored"));
    assert_eq!(
        custom.get_document("dotted").unwrap(),
        &doc! { "a%2Eb": { "%24x": 1 } }
    );
    assert_eq!(layer.provider_failures(), 1);
    s.stop().await;
}

async fn activate_off_records_nothing_and_passes_through(kind: &str) {
    let (config, dir) = config(kind, DEMO_TOML, &[("AUDIT_ACTIVATE", "false")]);
    let polls = demo::Polls::temporary().await.unwrap();
    let (auditor, guard) = demo::auditor_builder(config.clone(), &polls)
        .start()
        .await
        .unwrap();
    assert!(
        auditor.store().is_none(),
        "no connection is opened when auditing is off"
    );
    let s = serve(demo::app(auditor.clone(), polls), auditor, guard, None).await;
    let res = s.get("/access/decorator/").await;
    assert!(
        res.headers().get("x-request-id").is_none(),
        "response untouched"
    );
    assert_eq!(res.text().await.unwrap(), r#"{"response":"test"}"#);
    s.post("/modelaction/create/", &[("question", "q")]).await;
    s.task.abort();
    // Nothing in the store either.
    let store = Store::connect(&config).await.unwrap();
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count(Collection::ModelAction, &Filter::all())
            .await
            .unwrap(),
        0
    );
    drop(dir);
}

async fn async_mode_stores_every_request_after_shutdown(kind: &str) {
    let s = demo_server(kind, &[("AUDIT_RUN_ASYNC", "true")]).await;
    assert!(s.auditor.config().run_async);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = s.client.clone();
        let url = format!("{}/access/args/{i}/", s.base);
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let store = s.store().clone();
    let metrics = s.stop().await;
    assert_eq!(metrics.written, 200);
    assert_eq!((metrics.failed, metrics.dropped), (0, 0));
    assert_eq!(
        store
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap(),
        200,
        "count of accesses equals count of requests"
    );
}

mod sync_mode {
    use super::*;

    /// Sync mode: when the client has the response, the record is already in the store (no
    /// flush): for a body that is not captured and for a small JSON body alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_are_stored_before_the_response_is_returned() {
        let s = demo_server("sqlite", &[]).await;
        assert!(!s.auditor.config().run_async);
        let store = s.store().clone();
        for (i, path) in ["/access/function/", "/access/decorator/", "/access/args/3/"]
            .iter()
            .enumerate()
        {
            let res = s.get(path).await;
            assert_eq!(res.status(), 200);
            // No flush here: the write happened before the response was sent.
            let n = store
                .count(Collection::Access, &Filter::all())
                .await
                .unwrap();
            assert_eq!(n, i as u64 + 1, "{path} stored before its response");
        }
        s.stop().await;
    }
}

mod providers {
    use super::*;

    #[tokio::test]
    async fn custom_provider_setting_selects_and_renames_registered_providers() {
        let (config, _dir) = config("sqlite", "[custom_provider]\nmy_app = \"counter\"", &[]);
        let (auditor, guard) = Auditor::builder(config.clone())
            .provider("counter", |_: &audit_runtime::http::ProviderContext<'_>| {
                7_i32
            })
            .provider("unused", |_: &audit_runtime::http::ProviderContext<'_>| {
                1_i32
            })
            .start()
            .await
            .unwrap();
        let app = Router::new()
            .route("/p", get(|| async { "ok" }))
            .layer(AuditLayer::new(auditor.clone()));
        let s = serve(app, auditor, guard, None).await;
        s.get("/p").await;
        assert_eq!(
            s.access_to("/p").await.custom,
            Some(doc! { "my_app": 7 }),
            "under the app key; `unused` not run"
        );
        s.stop().await;
        // A setting naming a provider nobody registered is a startup error naming it.
        let err = Auditor::builder(config)
            .start()
            .await
            .err()
            .expect("unknown provider");
        assert_eq!(
            err.to_string(),
            "custom_provider.my_app: no provider named `counter` is registered (registered: )"
        );
    }
}

fn resolve_from_header(parts: &http::request::Parts) -> Option<audit_runtime::AccessUser> {
    let _ = parts;
    None
}

/// The layer and its service print what they are configured with — closures by their type name —
/// and never a password of the store's connection string.
#[tokio::test]
async fn the_layer_and_service_debug_without_secrets() {
    let config = AuditConfig::from_sources(
        Some(
            "activate = false\ndb_connection = 'mongodb://audit:s3cr3t-pw@db.example:27017/trail'",
        ),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let (auditor, _guard) = Auditor::start(config).await.unwrap();
    let layer = AuditLayer::new(auditor)
        .user_resolver(resolve_from_header)
        .catch_panic();
    let shown = format!("{layer:?}");
    assert!(shown.starts_with("AuditLayer {"), "{shown}");
    assert!(shown.contains("capture::resolve_from_header"), "{shown}");
    assert!(shown.contains("catch_panic: true"), "{shown}");
    assert!(shown.contains("db.example"), "{shown}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    let service = tower::Layer::layer(
        &layer,
        tower::service_fn(
            |_: http::Request<audit_runtime::http::AuditRequestBody<String>>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
            },
        ),
    );
    let shown = format!("{service:?}");
    assert!(shown.starts_with("AuditService {"), "{shown}");
}
