//! Redaction and key escaping end to end, as an attacker (or a careless client) would send them:
//! through a real axum server with the default settings, the stored record is searched for every
//! secret sent. Every secret is long and unique (`s3cr3t-...`), so no random id or timestamp can
//! contain one by chance, and any of them found anywhere in the raw record is a leak.

use audit_runtime::http::AuditLayer;
use audit_runtime::{
    audited_view, Access, AuditConfig, Audited, Auditor, Collection, Filter, ModelAction, UrlMatch,
    WriterGuard,
};
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bson::{doc, Bson, Document};

/// A secret that nothing else in a record can contain by chance.
fn secret(name: &str) -> String {
    format!("s3cr3t-{name}-Qx7Lm2Vb9Kp4Zr6Tn1Wc8Hd5Fj3")
}

struct Server {
    base: String,
    auditor: Auditor,
    _guard: WriterGuard,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
    client: reqwest::Client,
}

impl Server {
    async fn start(kind: &str, toml: &str, app: Router) -> Server {
        let (conn, dir) = audit_tests::connection(kind);
        let config = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
            .unwrap()
            .with_connection(conn);
        let (auditor, guard) = Auditor::start(config).await.unwrap();
        let app = app.layer(AuditLayer::new(auditor.clone()));
        let (addr, task) = audit_tests::serve(app).await;
        Server {
            base: format!("http://{addr}"),
            auditor,
            _guard: guard,
            task,
            _dir: dir,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn access_to(&self, path: &str) -> Access {
        self.auditor.flush().await;
        Access::objects()
            .get_by_url(UrlMatch::exact(path), self.auditor.store().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    async fn count(&self) -> u64 {
        self.auditor.flush().await;
        self.auditor
            .store()
            .unwrap()
            .count(Collection::Access, &Filter::all())
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The record as stored, as text: what a reader of the trail (or of its backups) sees.
fn raw(access: &Access) -> String {
    let bytes = bson::to_vec(&bson::to_document(access).unwrap()).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Panics with the names of the secrets found in `text`.
fn assert_no_secret(text: &str, secrets: &[(String, String)]) {
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, s)| text.contains(s.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(leaked.is_empty(), "stored in clear: {leaked:?}\n{text}");
    assert!(
        !text.contains("s3cr3t-"),
        "a secret is stored in clear:\n{text}"
    );
}

fn names(list: &[&str]) -> Vec<(String, String)> {
    list.iter().map(|n| (n.to_string(), secret(n))).collect()
}

#[audited_view]
async fn failing() -> Result<&'static str, (http::StatusCode, String)> {
    Err((
        http::StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "login failed: password={} while connecting to mongodb://admin:{}@db.example/trail",
            secret("exception-password"),
            secret("exception-uri")
        ),
    ))
}

#[audited_view(args(token))]
async fn reset_view(Path(token): Path<String>) -> &'static str {
    let _ = token;
    "ok"
}

#[audited_view]
async fn failing_long() -> Result<&'static str, (http::StatusCode, String)> {
    Err((http::StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(100_000)))
}

fn app() -> Router {
    Router::new()
        .route("/echo", get(|| async { "ok" }).post(|| async { "ok" }))
        .route(
            "/json",
            get(|| async {
                axum::Json(serde_json::json!({
                    "private_key": secret("json-private-key"),
                    "Authorization": secret("json-authorization"),
                    "jwt": secret("json-jwt"),
                    "credentials": { "user": "bob", "pass": secret("json-credentials-pass") },
                    "author": "keep-author",
                    "spinner": "keep-spinner",
                    "design": "keep-design",
                    "dsn": format!("postgres://app:{}@db.example/app", secret("json-dsn")),
                }))
            }),
        )
        .route(
            "/xml",
            get(|| async {
                (
                    [("content-type", "application/xml")],
                    format!(
                        r#"<?xml version="1.0"?><user id="7" token="{}"><name>bob</name><password>{}</password><credentials><pass>{}</pass></credentials><author>keep-author</author></user>"#,
                        secret("xml-token-attribute"),
                        secret("xml-password"),
                        secret("xml-nested-pass")
                    ),
                )
            }),
        )
        .route(
            "/reset/{token}",
            get(|Path(_token): Path<String>| async { "ok" }),
        )
        .route("/view-reset/{token}", get(reset_view))
        .route(
            "/item/{id}",
            get(|Path(_id): Path<String>| async { "ok" }),
        )
        .route(
            "/login",
            get(|| async {
                (
                    [
                        ("set-cookie", format!("sessionid={}", secret("set-cookie"))),
                        (
                            "location",
                            format!("https://app.example/next?token={}", secret("location")),
                        ),
                    ],
                    "ok",
                )
            }),
        )
        .route("/fail", get(failing))
        .route("/fail-long", get(failing_long))
}

const SECRET_QUERY_KEYS: &[&str] = &[
    "api-key",
    "sig",
    "pwd",
    "jwt",
    "private_key",
    "auth",
    "X-Amz-Signature",
    "authorization",
    "credentials",
    "pin",
    "user_pin",
    "code",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_secrets_are_masked_by_default() {
    let s = Server::start("sqlite", "", app()).await;
    let mut secrets = Vec::new();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for k in SECRET_QUERY_KEYS {
        let v = secret(&format!("query-{k}"));
        query.append_pair(k, &v);
        secrets.push((format!("query {k}"), v));
    }
    // Secrets inside harmless-named values: a redirect URL's token, a connection string.
    let next = format!("https://app.example/cb?token={}", secret("next-token"));
    let db = format!("mongodb://admin:{}@db.example/trail", secret("db-password"));
    query.append_pair("next", &next);
    query.append_pair("db", &db);
    secrets.push(("next".into(), secret("next-token")));
    secrets.push(("db".into(), secret("db-password")));
    for (k, v) in [
        ("spinner", "keep-spinner"),
        ("author", "keep-author"),
        ("design", "keep-design"),
        ("zip_code", "keep-zip"),
    ] {
        query.append_pair(k, v);
    }
    let query = query.finish();
    let header_secrets = [
        ("X-Access-Token", secret("x-access-token")),
        ("X-Amz-Security-Token", secret("x-amz-security-token")),
        ("Private-Token", secret("private-token")),
        ("X-Goog-Api-Key", secret("x-goog-api-key")),
        (
            "Sec-WebSocket-Protocol",
            format!("bearer, {}", secret("websocket-protocol")),
        ),
        (
            "X-Anything",
            format!("Bearer {}", secret("bearer-anywhere")),
        ),
        (
            "Referer",
            format!(
                "https://app.example/callback?token={}&code={}&page=2",
                secret("referer-token"),
                secret("referer-code")
            ),
        ),
        (
            "Origin",
            format!("https://admin:{}@app.example", secret("origin-password")),
        ),
        (
            "X-Debug-Note",
            format!("see https://h.example/?password={}", secret("note-url")),
        ),
    ];
    let mut req = s.client.get(s.url(&format!("/echo?{query}")));
    for (name, value) in &header_secrets {
        req = req.header(*name, value);
        secrets.push((name.to_string(), value.clone()));
    }
    req.send().await.unwrap();
    // The same keys in a form body.
    let form: Vec<(String, String)> = SECRET_QUERY_KEYS
        .iter()
        .map(|k| (k.to_string(), secret(&format!("form-{k}"))))
        .chain([("author".to_owned(), "keep-author".to_owned())])
        .collect();
    secrets.extend(form.iter().take(SECRET_QUERY_KEYS.len()).cloned());
    s.client
        .post(s.url("/echo"))
        .form(&form)
        .send()
        .await
        .unwrap();

    let all = {
        s.auditor.flush().await;
        Access::objects()
            .filter_by_url(UrlMatch::exact("/echo"))
            .fetch(s.auditor.store().unwrap())
            .await
            .unwrap()
    };
    assert_eq!(all.len(), 2);
    for a in &all {
        assert_no_secret(&raw(a), &secrets);
    }
    let get = all.iter().find(|a| !a.request.GET.is_empty()).unwrap();
    for k in SECRET_QUERY_KEYS {
        assert_eq!(get.request.GET.get_str(k).unwrap(), "********", "{k}");
    }
    // Harmless names that hold a short secret word are kept.
    assert_eq!(get.request.GET.get_str("spinner").unwrap(), "keep-spinner");
    assert_eq!(get.request.GET.get_str("author").unwrap(), "keep-author");
    assert_eq!(get.request.GET.get_str("design").unwrap(), "keep-design");
    assert_eq!(get.request.GET.get_str("zip_code").unwrap(), "keep-zip");
    assert_eq!(
        get.request.GET.get_str("next").unwrap(),
        "https://app.example/cb?token=********"
    );
    assert_eq!(
        get.request.GET.get_str("db").unwrap(),
        "mongodb://admin:****@db.example/trail"
    );
    let meta = &get.request.METADATA;
    assert_eq!(meta.get_str("HTTP_X_ACCESS_TOKEN").unwrap(), "********");
    assert_eq!(
        meta.get_str("HTTP_REFERER").unwrap(),
        "https://app.example/callback?token=********&code=********&page=********",
        "a referring page's query values are all masked: its parameters are not ours to know"
    );
    assert_eq!(
        meta.get_str("HTTP_ORIGIN").unwrap(),
        "https://admin:****@app.example"
    );
    let post = all.iter().find(|a| !a.request.POST.is_empty()).unwrap();
    assert_eq!(post.request.POST.get_str("author").unwrap(), "keep-author");
    assert_eq!(post.request.POST.get_str("pin").unwrap(), "********");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_secrets_are_masked_by_default() {
    let s = Server::start("sqlite", "", app()).await;
    for path in ["/json", "/xml", "/login"] {
        s.client.get(s.url(path)).send().await.unwrap();
    }
    let secrets = names(&[
        "json-private-key",
        "json-authorization",
        "json-jwt",
        "json-credentials-pass",
        "json-dsn",
        "xml-token-attribute",
        "xml-password",
        "xml-nested-pass",
        "set-cookie",
        "location",
    ]);
    let json = s.access_to("/json").await;
    assert_no_secret(&raw(&json), &secrets);
    let content = json
        .response
        .as_ref()
        .unwrap()
        .content
        .as_document()
        .unwrap();
    assert_eq!(content.get_str("private_key").unwrap(), "********");
    assert_eq!(content.get_str("Authorization").unwrap(), "********");
    assert_eq!(content.get_str("jwt").unwrap(), "********");
    assert_eq!(content.get_str("author").unwrap(), "keep-author");
    assert_eq!(content.get_str("spinner").unwrap(), "keep-spinner");
    assert_eq!(content.get_str("design").unwrap(), "keep-design");

    let xml = s.access_to("/xml").await;
    assert_no_secret(&raw(&xml), &secrets);
    let text = xml
        .response
        .as_ref()
        .unwrap()
        .content
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("<name>bob</name>"), "{text}");
    assert!(text.contains("<author>keep-author</author>"), "{text}");
    assert!(text.contains("<password>********</password>"), "{text}");

    // Response headers (Set-Cookie, Location) are not stored at all: only the status, the content
    // type and the captured body.
    let login = s.access_to("/login").await;
    assert_no_secret(&raw(&login), &secrets);
    let response = bson::to_document(login.response.as_ref().unwrap()).unwrap();
    assert!(
        response
            .keys()
            .all(|k| ["content", "type", "status_code"].contains(&k.as_str())),
        "{response:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_parameters_named_like_secrets_are_masked_in_both_copies() {
    let s = Server::start("sqlite", "", app()).await;
    let token = secret("url-parameter");
    s.client
        .get(s.url(&format!("/reset/{token}")))
        .send()
        .await
        .unwrap();
    s.client.get(s.url("/item/42")).send().await.unwrap();
    let a = s.access_to(&format!("/reset/{token}")).await;
    assert_eq!(a.view.kwargs, doc! { "token": "********" });
    assert_eq!(a.view.args, vec![Bson::String("********".into())]);
    // The same through `#[audited_view(args(token))]`, which names the argument itself.
    let view_token = secret("view-argument");
    s.client
        .get(s.url(&format!("/view-reset/{view_token}")))
        .send()
        .await
        .unwrap();
    let v = s.access_to(&format!("/view-reset/{view_token}")).await;
    assert_eq!(v.view.kwargs, doc! { "token": "********" });
    assert_eq!(v.view.args, vec![Bson::String("********".into())]);
    // Harmless parameters are kept. (The request path itself still holds the token: masking it
    // needs the route at the time the layer captures the path, which it does not have yet.)
    let item = s.access_to("/item/42").await;
    assert_eq!(item.view.kwargs, doc! { "id": "42" });
    assert_eq!(item.view.args, vec![Bson::String("42".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_messages_are_redacted_and_capped() {
    let s = Server::start("sqlite", "[capture]\nmax_exception_bytes = 1000", app()).await;
    s.client.get(s.url("/fail")).send().await.unwrap();
    s.client.get(s.url("/fail-long")).send().await.unwrap();
    let a = s.access_to("/fail").await;
    let e = a.exception.as_ref().expect("an exception");
    assert!(
        e.message.contains("login failed: password=********"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("mongodb://admin:****@db.example/trail"),
        "{}",
        e.message
    );
    assert_no_secret(&raw(&a), &names(&["exception-password", "exception-uri"]));
    let long = s.access_to("/fail-long").await;
    let e = long.exception.as_ref().expect("an exception");
    assert!(e.message.len() <= 1100, "{} bytes stored", e.message.len());
    assert!(e.message.contains("truncated"), "the cut is said");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_settings_add_to_the_defaults_end_to_end() {
    let s = Server::start(
        "sqlite",
        "[capture]\nredact_keys = ['colour']\nredact_headers = ['X-Tenant']\nunredact_keys = ['session']",
        app(),
    )
    .await;
    s.client
        .get(s.url(&format!(
            "/echo?favourite_colour={}&password={}&session_count=7",
            secret("colour"),
            secret("password")
        )))
        .header("x-tenant", secret("tenant"))
        .header("x-api-key", secret("api-key"))
        .send()
        .await
        .unwrap();
    let a = s.access_to("/echo").await;
    assert_no_secret(
        &raw(&a),
        &names(&["colour", "password", "tenant", "api-key"]),
    );
    assert_eq!(
        a.request.GET.get_str("favourite_colour").unwrap(),
        "********"
    );
    assert_eq!(
        a.request.GET.get_str("password").unwrap(),
        "********",
        "defaults kept"
    );
    assert_eq!(
        a.request.GET.get_str("session_count").unwrap(),
        "7",
        "a default removed explicitly"
    );
    assert_eq!(
        a.request.METADATA.get_str("HTTP_X_TENANT").unwrap(),
        "********"
    );
    assert_eq!(
        a.request.METADATA.get_str("HTTP_X_API_KEY").unwrap(),
        "********"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_spelled_with_underscores_do_not_overwrite_the_real_ones() {
    let s = Server::start("sqlite", "", app()).await;
    s.client
        .get(s.url("/echo"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("x_forwarded_for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    let a = s.access_to("/echo").await;
    let meta = &a.request.METADATA;
    assert_eq!(meta.get_str("HTTP_X_FORWARDED_FOR").unwrap(), "203.0.113.7");
    let values: Vec<&str> = meta.values().filter_map(Bson::as_str).collect();
    assert!(values.contains(&"198.51.100.9"), "both kept: {meta:?}");
    assert_eq!(
        meta.get_str("HTTP_X%5FFORWARDED%5FFOR").unwrap(),
        "198.51.100.9"
    );
}

use audit_tests::on_both_stores;

on_both_stores!(keys_with_nul_bytes_are_stored_escaped);

async fn keys_with_nul_bytes_are_stored_escaped(kind: &str) {
    let app = Router::new()
        .route("/x", get(|| async { "ok" }).post(|| async { "ok" }))
        .route(
            "/json",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    r#"{"a\u0000b": 1, "n": {"\u0000": 2}}"#,
                )
            }),
        );
    let s = Server::start(kind, "", app).await;
    s.client.get(s.url("/x?%00=1")).send().await.unwrap();
    s.client
        .post(s.url("/x"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("form%00key=2")
        .send()
        .await
        .unwrap();
    s.client.get(s.url("/json")).send().await.unwrap();
    s.client
        .get(s.url("/x?lit%2500%2E=3&k%00.%25=4"))
        .send()
        .await
        .unwrap();
    assert_eq!(s.count().await, 4, "4 requests, 4 accesses: none lost");
    s.auditor.flush().await;
    let all = Access::objects()
        .fetch(s.auditor.store().unwrap())
        .await
        .unwrap();
    let gets: Vec<&Document> = all.iter().map(|a| &a.request.GET).collect();
    assert!(gets.contains(&&doc! { "%00": "1" }), "{gets:?}");
    assert!(
        gets.contains(&&doc! { "lit%2500%2E": "3", "k%00%2E%25": "4" }),
        "{gets:?}"
    );
    let post = all.iter().find(|a| !a.request.POST.is_empty()).unwrap();
    assert_eq!(post.request.POST, doc! { "form%00key": "2" });
    let json = s.access_to("/json").await;
    assert_eq!(
        json.response.unwrap().content,
        Bson::Document(doc! { "a%00b": 1, "n": { "%00": 2 } })
    );
}

#[derive(Audited, Clone)]
struct Account {
    id: i64,
    pin: String,
    user_pin: String,
    auth_token: String,
    spinner: String,
    author: String,
    design: String,
    #[audit(capture)]
    password: String,
    #[audit(mask)]
    email: String,
    note: String,
    extra: Document,
    #[audit(serde)]
    labels: std::collections::BTreeMap<String, i32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_fields_follow_the_runtime_policy_and_keys_are_escaped() {
    let s = Server::start("sqlite", "", Router::new()).await;
    audit_runtime::registry::register::<Account>();
    // A user's string that starts like the internal mask marker: it must be stored as it is,
    // not taken for a mask (and not hide the value either).
    let lookalike = format!("\u{0}audit-mask:{}", "0".repeat(32));
    let account = Account {
        id: 1,
        pin: secret("model-pin"),
        user_pin: secret("model-user-pin"),
        auth_token: secret("model-auth-token"),
        spinner: "keep-spinner".into(),
        author: "keep-author".into(),
        design: "keep-design".into(),
        password: "captured-on-purpose".into(),
        email: secret("model-email"),
        note: lookalike.clone(),
        extra: doc! { "a.b": 1, "$where": 2, "n\u{0}ul": 3, "deep": { "x.y": 4 } },
        labels: [("l.1".to_owned(), 1), ("nu\u{0}l".to_owned(), 2)].into(),
    };
    s.auditor.record_create(&account).await.expect("recorded");
    s.auditor.flush().await;
    let actions = ModelAction::objects()
        .filter_by_model::<Account>()
        .fetch(s.auditor.store().unwrap())
        .await
        .unwrap();
    assert_eq!(actions.len(), 1, "stored: no key made it fail to encode");
    let new = &actions[0].content.new;
    for masked in ["pin", "user_pin", "auth_token", "email"] {
        assert_eq!(new.get_str(masked).unwrap(), "********", "{masked}");
    }
    for (kept, v) in [
        ("spinner", "keep-spinner"),
        ("author", "keep-author"),
        ("design", "keep-design"),
        ("password", "captured-on-purpose"),
    ] {
        assert_eq!(new.get_str(kept).unwrap(), v, "{kept}");
    }
    assert_eq!(new.get_str("note").unwrap(), lookalike);
    assert_eq!(
        new.get_document("extra").unwrap(),
        &doc! { "a%2Eb": 1, "%24where": 2, "n%00ul": 3, "deep": { "x%2Ey": 4 } }
    );
    assert_eq!(
        new.get_document("labels").unwrap(),
        &doc! { "l%2E1": 1, "nu%00l": 2 }
    );
    let text =
        String::from_utf8_lossy(&bson::to_vec(&bson::to_document(&actions[0]).unwrap()).unwrap())
            .into_owned();
    assert_no_secret(
        &text,
        &names(&[
            "model-pin",
            "model-user-pin",
            "model-auth-token",
            "model-email",
        ]),
    );
}
