//! Every request that reached the service leaves one access, tried the way a hostile client or a
//! careless operator would: hanging up mid-request, an outer timeout, a failing inner service,
//! a panicking handler, a truncated body, a JSON payload, an encoded slash aimed at the
//! blacklist. Through real axum (and bare hyper) servers and real clients, on both stores.

use audit_runtime::http::{AuditLayer, AuditRequestBody, BODY_NOTE_KEY, CANCELLED, JSON_VALUE_KEY};
use audit_runtime::{
    Access, AuditConfig, Auditor, ModelAction, Order, Store, UrlMatch, WriterGuard,
};
use axum::routing::{get, post};
use axum::Router;
use bson::doc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

struct Server {
    base: String,
    addr: SocketAddr,
    auditor: Auditor,
    guard: Option<WriterGuard>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn store(&self) -> &Store {
        self.auditor.store().expect("active")
    }

    async fn accesses(&self) -> Vec<Access> {
        self.auditor.flush().await;
        Access::objects()
            .order_by("time.request", Order::Asc)
            .fetch(self.store())
            .await
            .unwrap()
    }

    /// The one access to `path`, waiting for it up to a deadline (some are recorded when the
    /// server notices that a connection went away).
    async fn wait_access(&self, path: &str) -> Access {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.auditor.flush().await;
            let found = Access::objects()
                .filter_by_url(UrlMatch::exact(path))
                .fetch(self.store())
                .await
                .unwrap();
            match found.len() {
                0 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                1 => return found.into_iter().next().unwrap(),
                n => panic!("{n} accesses to {path}: {found:?}"),
            }
        }
    }

    async fn stop(mut self) -> audit_runtime::MetricsSnapshot {
        self.task.abort();
        self.guard.take().unwrap().shutdown().await
    }
}

fn config(kind: &str, toml: &str) -> (AuditConfig, Option<tempfile::TempDir>) {
    let (conn, dir) = audit_tests::connection(kind);
    let config = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(conn);
    (config, dir)
}

async fn start(kind: &str, toml: &str, app: impl FnOnce(Auditor) -> Router) -> Server {
    let (config, dir) = config(kind, toml);
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let app = app(auditor.clone());
    let (addr, task) = audit_tests::serve(app).await;
    Server {
        base: format!("http://{addr}"),
        addr,
        auditor,
        guard: Some(guard),
        task,
        _dir: dir,
    }
}

use audit_tests::on_both_stores;

on_both_stores!(
    a_client_that_hangs_up_still_leaves_its_access,
    an_outer_timeout_in_the_usual_stack_leaves_the_access,
    failing_inner_services_are_recorded_and_passed_through,
    panics_record_what_the_client_got,
    json_request_bodies_are_recorded_redacted,
    truncated_bodies_reach_the_handler_as_errors_and_are_recorded,
    encoded_slashes_cannot_dodge_the_blacklist,
    derived_models_are_recorded_without_configuration,
    a_request_rejected_by_an_extractor_keeps_its_handlers_view,
);

#[derive(Clone, Debug, audit_runtime::Audited)]
struct Transfer {
    id: i64,
    amount: i64,
}

/// A client acts (the handler records a model action), then hangs up before the response: the
/// access is still recorded, marked as cancelled, and the model action points at it.
async fn a_client_that_hangs_up_still_leaves_its_access(kind: &str) {
    let acted = Arc::new(Notify::new());
    let signal = acted.clone();
    let s = start(kind, "", move |auditor| {
        let recorder = auditor.clone();
        Router::new()
            .route(
                "/transfer",
                get(move || {
                    let (auditor, signal) = (recorder.clone(), signal.clone());
                    async move {
                        auditor
                            .record_create(&Transfer { id: 1, amount: 500 })
                            .await
                            .expect("recorded");
                        signal.notify_one();
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        "done"
                    }
                }),
            )
            .layer(AuditLayer::new(auditor))
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(b"GET /transfer HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), acted.notified())
        .await
        .expect("the handler acted");
    drop(conn);

    let access = s.wait_access("/transfer").await;
    let exception = access.exception.as_ref().expect("marked");
    assert_eq!(exception.kind, CANCELLED);
    assert!(access.response.is_none(), "no response was sent");
    let ended = access.time.response.expect("timed up to the drop");
    assert!(
        (ended - access.time.request).num_seconds() < 20,
        "recorded when the client left, not when the handler would have finished"
    );
    let actions = ModelAction::objects()
        .filter_by_model::<Transfer>()
        .fetch(s.store())
        .await
        .unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].access,
        Some(access.id),
        "the action points at an access that exists"
    );
    let m = s.stop().await;
    assert_eq!(m.failed, 0);
}

/// Trace → Cors → Timeout → Audit in one `ServiceBuilder`, the usual order: it compiles, and a
/// request the outer timeout answers with 408 still leaves its access.
async fn an_outer_timeout_in_the_usual_stack_leaves_the_access(kind: &str) {
    let s = start(kind, "", |auditor| {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(
                tower::ServiceBuilder::new()
                    .layer(tower_http::trace::TraceLayer::new_for_http())
                    .layer(tower_http::cors::CorsLayer::permissive())
                    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                        http::StatusCode::REQUEST_TIMEOUT,
                        Duration::from_millis(300),
                    ))
                    .layer(AuditLayer::new(auditor)),
            )
    })
    .await;
    let client = reqwest::Client::new();
    let res = client.get(format!("{}/slow", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 408);
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{}/fast", s.base))
        .header("origin", "http://example.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "the CORS layer answers");
    assert_eq!(
        client
            .get(format!("{}/fast", s.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let slow = s.wait_access("/slow").await;
    assert_eq!(slow.exception.as_ref().unwrap().kind, CANCELLED);
    assert!(slow.response.is_none());
    let fast = s.wait_access("/fast").await;
    assert_eq!(fast.response.as_ref().unwrap().status_code, 200);
    s.stop().await;
}

/// A failing inner service (a tower stack that is not `Infallible`, here over hyper's own
/// `Incoming` body): the error reaches the caller unchanged and is recorded.
async fn failing_inner_services_are_recorded_and_passed_through(kind: &str) {
    use hyper::body::Incoming;
    use tower::{Layer, ServiceExt};

    let (config, _dir) = config(kind, "");
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let inner = tower::service_fn(
        |req: http::Request<AuditRequestBody<Incoming>>| async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.map_err(|e| e.to_string())?;
            if body.to_bytes().as_ref() == b"fail" {
                return Err::<http::Response<String>, _>(
                    "the inner service failed: out of cheese".to_owned(),
                );
            }
            Ok(http::Response::new("fine".to_owned()))
        },
    );
    let svc = AuditLayer::new(auditor.clone()).layer(inner);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = svc.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    svc.clone().oneshot(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("http://{addr}/ok"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "fine");
    // hyper answers a failed service by closing the connection.
    assert!(client
        .post(format!("http://{addr}/bad"))
        .body("fail")
        .send()
        .await
        .is_err());

    auditor.flush().await;
    let store = auditor.store().unwrap();
    let ok = Access::objects()
        .get_by_url(UrlMatch::exact("/ok"), store)
        .await
        .unwrap();
    assert_eq!(ok.response.unwrap().status_code, 200);
    assert_eq!(
        ok.request.POST,
        doc! { "a": "1" },
        "the form, read over Incoming"
    );
    let bad = Access::objects()
        .get_by_url(UrlMatch::exact("/bad"), store)
        .await
        .unwrap();
    let e = bad.exception.expect("recorded");
    assert_eq!(e.kind, "alloc::string::String");
    assert_eq!(e.message, "the inner service failed: out of cheese");
    assert!(bad.response.is_none());
    server.abort();
    guard.shutdown().await;
}

/// Without a catch-panic layer the client's connection is closed: no response is stored. With the
/// layer's own `catch_panic`, the client gets a 500 and that is what is stored.
async fn panics_record_what_the_client_got(kind: &str) {
    fn app(auditor: Auditor, catch: bool) -> Router {
        let layer = AuditLayer::new(auditor);
        let layer = if catch { layer.catch_panic() } else { layer };
        Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom at the handler");
                    }
                    "never"
                }),
            )
            .layer(layer)
    }
    let s = start(kind, "", |a| app(a, false)).await;
    let client = reqwest::Client::new();
    assert!(
        client.get(format!("{}/boom", s.base)).send().await.is_err(),
        "the connection was closed"
    );
    let a = s.wait_access("/boom").await;
    assert_eq!(a.exception.as_ref().unwrap().kind, "panic");
    assert_eq!(a.exception.as_ref().unwrap().message, "boom at the handler");
    assert!(a.response.is_none(), "the client got no 500");
    s.stop().await;

    let s = start(kind, "", |a| app(a, true)).await;
    let res = client.get(format!("{}/boom", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 500);
    let a = s.wait_access("/boom").await;
    assert_eq!(a.exception.as_ref().unwrap().kind, "panic");
    assert_eq!(a.response.as_ref().unwrap().status_code, 500);
    s.stop().await;
}

/// A JSON API's writes: the payload is in `request.POST`, redacted and key-escaped, whether its
/// length is announced or it is sent in chunks; non-objects, invalid JSON and oversized bodies
/// are marked.
async fn json_request_bodies_are_recorded_redacted(kind: &str) {
    let s = start(kind, "[capture]\nmax_body_bytes = 2000", |auditor| {
        Router::new()
            .route(
                "/{name}",
                post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .layer(AuditLayer::new(auditor))
    })
    .await;
    let client = reqwest::Client::new();
    let send = |path: &str, body: reqwest::Body| {
        client
            .post(format!("{}{path}", s.base))
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .send()
    };
    let secret = "pw-7f3a9c2e5b8d41f6a0c3e9b7d2f5a8c1";
    let object = serde_json::json!({
        "user": { "name": "alice", "password": secret },
        "a.b": 1,
        "items": [1, 2]
    })
    .to_string();
    assert_eq!(
        send("/object", object.clone().into())
            .await
            .unwrap()
            .status(),
        200
    );
    send("/array", "[1, \"two\"]".into()).await.unwrap();
    send("/invalid", "{not json".into()).await.unwrap();
    send("/big", format!("[\"{}\"]", "x".repeat(5000)).into())
        .await
        .unwrap();
    // No content-length: chunks, teed while the handler reads them.
    let chunks = futures_util::stream::iter(
        object
            .clone()
            .into_bytes()
            .chunks(7)
            .map(|c| {
                Ok::<_, std::io::Error>(http_body::Frame::data(axum::body::Bytes::copy_from_slice(
                    c,
                )))
            })
            .collect::<Vec<_>>(),
    );
    send(
        "/chunked",
        reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)),
    )
    .await
    .unwrap();

    let all = s.accesses().await;
    assert_eq!(all.len(), 5);
    let post = |path: &str| {
        all.iter()
            .find(|a| a.request.path == path)
            .unwrap_or_else(|| panic!("{path} recorded"))
            .request
            .POST
            .clone()
    };
    let expected = doc! {
        "user": { "name": "alice", "password": "********" },
        "a%2Eb": 1,
        "items": [1, 2],
    };
    assert_eq!(post("/object"), expected);
    assert_eq!(post("/chunked"), expected);
    assert_eq!(
        post("/array"),
        doc! { JSON_VALUE_KEY: [1, "two"] },
        "a body that is not an object"
    );
    assert!(post("/invalid")
        .get_str(BODY_NOTE_KEY)
        .unwrap()
        .contains("not valid JSON"));
    assert!(post("/big")
        .get_str(BODY_NOTE_KEY)
        .unwrap()
        .contains("over the 2000-byte cap"));
    let raw = format!("{all:?}");
    assert!(
        !raw.contains(secret),
        "the password is nowhere in the trail"
    );
    s.stop().await;
}

/// A body cut short by the client: the handler sees the read error it would see without the
/// layer (not an empty form), and the access says the body could not be read.
async fn truncated_bodies_reach_the_handler_as_errors_and_are_recorded(kind: &str) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let s = start(kind, "", move |auditor| {
        Router::new()
            .route(
                "/form",
                post(
                    move |body: Result<
                        axum::body::Bytes,
                        axum::extract::rejection::BytesRejection,
                    >| {
                        let tx = tx.clone();
                        async move {
                            let _ = tx.send(body.is_err());
                            "seen"
                        }
                    },
                ),
            )
            .layer(AuditLayer::new(auditor))
    })
    .await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(
        b"POST /form HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\na=1&b=2",
    )
    .await
    .unwrap();
    conn.shutdown().await.unwrap();
    let saw_error = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the handler ran")
        .unwrap();
    assert!(
        saw_error,
        "the handler saw the read error, not an empty form"
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;

    let a = s.wait_access("/form").await;
    let note = a.request.POST.get_str(BODY_NOTE_KEY).expect("marked");
    assert!(note.contains("could not be read"), "{note}");
    s.stop().await;
}

/// The router routes on the raw path, where `%2F` is not a separator: the blacklist and the
/// stored path must see the same thing, so `/static%2Facme/settings` (routed to
/// `/{tenant}/settings`) is audited, and `/a%2Fb` and `/a/b` stay distinct in the trail.
async fn encoded_slashes_cannot_dodge_the_blacklist(kind: &str) {
    let s = start(kind, "[blacklist]\n\"\" = [\"^/static/\"]", |auditor| {
        Router::new()
            .route("/{tenant}/settings", post(|| async { "settings changed" }))
            .route("/static/{*file}", get(|| async { "file" }))
            .route("/{one}", get(|| async { "one segment" }))
            .route("/a/b", get(|| async { "two segments" }))
            .layer(AuditLayer::new(auditor))
    })
    .await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/static%2Facme/settings", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "settings changed");
    client
        .get(format!("{}/static/app.css", s.base))
        .send()
        .await
        .unwrap();
    for p in ["/a%2Fb", "/a/b", "/a%252Fb"] {
        client.get(format!("{}{p}", s.base)).send().await.unwrap();
    }
    let paths: Vec<String> = s
        .accesses()
        .await
        .into_iter()
        .map(|a| a.request.path)
        .collect();
    assert_eq!(
        paths,
        ["/static%2Facme/settings", "/a%2Fb", "/a/b", "/a%252Fb"],
        "the settings change is audited, the static file is not, and the paths stay distinct"
    );
    s.stop().await;
}

#[derive(Clone, Debug, audit_runtime::Audited)]
struct Invoice {
    id: i64,
    total: i64,
}

/// Deriving `Audited` is the opt-in: with no `logged_models` a derived model is recorded;
/// `logged_models` narrows the set.
async fn derived_models_are_recorded_without_configuration(kind: &str) {
    let (config, _dir) = config(kind, "");
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let invoice = Invoice { id: 9, total: 120 };
    let id = auditor.record_create(&invoice).await.expect("recorded");
    auditor.flush().await;
    let stored = ModelAction::objects()
        .filter_by_instance(&invoice)
        .fetch(auditor.store().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, id);
    assert_eq!(stored[0].content.new.get_i64("total").unwrap(), 120);
    guard.shutdown().await;

    let (config, _dir2) = config_narrowed(kind);
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    assert_eq!(
        auditor.record_create(&invoice).await,
        None,
        "not in the narrowed set"
    );
    assert!(auditor
        .record_create(&Transfer { id: 2, amount: 1 })
        .await
        .is_some());
    guard.shutdown().await;
}

fn config_narrowed(kind: &str) -> (AuditConfig, Option<tempfile::TempDir>) {
    config(kind, "logged_models = [\"trail::Transfer\"]")
}

#[audit_runtime::audited_view]
async fn create_poll(axum::Json(_poll): axum::Json<serde_json::Value>) -> &'static str {
    "created"
}

/// One endpoint is one view in the trail: a request that an extractor rejects before the handler
/// runs (malformed JSON) is stored under the handler's view, like the accepted ones, not under the
/// route's path.
async fn a_request_rejected_by_an_extractor_keeps_its_handlers_view(kind: &str) {
    let s = start(kind, "", |auditor| {
        Router::new()
            .route("/polls", post(create_poll))
            .layer(AuditLayer::new(auditor))
    })
    .await;
    let client = reqwest::Client::new();
    let send = |body: &'static str| {
        client
            .post(format!("{}/polls", s.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(send(r#"{"question": "why?"}"#).await.unwrap().status(), 200);
    let rejected = send("{not json").await.unwrap().status();
    assert!(rejected.is_client_error(), "{rejected}");
    let accesses = s.accesses().await;
    let views: Vec<(&str, &str, Option<i32>)> = accesses
        .iter()
        .map(|a| {
            (
                a.view.full_name.as_str(),
                a.view.name.as_str(),
                a.response.as_ref().map(|r| r.status_code),
            )
        })
        .collect();
    assert_eq!(
        views,
        [
            ("trail::create_poll", "create_poll", Some(200)),
            (
                "trail::create_poll",
                "create_poll",
                Some(i32::from(rejected.as_u16()))
            ),
        ]
    );
    s.stop().await;
}
