//! The pages, rendered on the server with `maud`: its `html!` templates are checked at compile
//! time and escape every interpolated value unless it is explicitly wrapped in `PreEscaped` (which
//! this module never does with stored data). The trail holds attacker-controlled text (paths,
//! headers, user names, model fields), so "escaped unless proven safe" is the only safe default.
//! No page needs JavaScript; links and forms are plain HTML under the mount prefix.

use super::api::{by_id, page};
use super::params::{self, BadParam, Search};
use super::stats::{self, CLASSES};
use super::{auth, base, charts, store_status, Shared};
use crate::document::Collection;
use crate::store::{Filter, FindOptions, Order, StoreError};
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, Response, StatusCode, Uri};
use bson::oid::ObjectId;
use bson::{Bson, Document};
use maud::{html, Markup, DOCTYPE};

/// How many actions an instance history shows at most.
const HISTORY_LIMIT: u64 = 1000;

fn html_response(status: StatusCode, m: Markup) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(m.into_string()))
        .expect("html response")
}

fn layout(base: &str, title: &str, logged_in: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · audit console" }
                link rel="stylesheet" href={ (base) "/assets/style.css" };
            }
            body {
                header.top {
                    a.brand href={ (base) "/" } { "audit console" }
                    nav {
                        a href={ (base) "/" } { "Dashboard" }
                        a href={ (base) "/access" } { "Accesses" }
                        a href={ (base) "/model-action" } { "Model actions" }
                    }
                    @if logged_in {
                        form.logout method="post" action={ (base) "/logout" } {
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Context every page handler starts from: the mount prefix and whether the visitor may see it.
struct Page {
    base: String,
    logout: bool,
}

fn enter(
    state: &Shared,
    original: &Uri,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Page, Box<Response<Body>>> {
    let base = base(original, uri);
    if !state.auth.page_ok(headers) {
        return Err(Box::new(auth::to_login(&base)));
    }
    Ok(Page {
        base,
        logout: !state.auth.open(),
    })
}

fn error_page(p: &Page, status: StatusCode, title: &str, message: &str) -> Response<Body> {
    html_response(
        status,
        layout(&p.base, title, p.logout, html! { p.error { (message) } }),
    )
}

fn store_failed(p: &Page, e: &StoreError) -> Response<Body> {
    let (status, message) = store_status(e);
    error_page(p, status, "The search failed", &message)
}

fn bad_param_msg(e: &BadParam) -> String {
    format!("Invalid parameter `{}`: {}", e.name, e.message)
}

pub(crate) fn login_page(base: &str, error: Option<&str>, status: StatusCode) -> Response<Body> {
    html_response(
        status,
        layout(
            base,
            "Log in",
            false,
            html! {
                @if let Some(e) = error { p.error { (e) } }
                form.login method="post" action={ (base) "/login" } {
                    label for="token" { "Console token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            },
        ),
    )
}

// === value helpers ===

/// The value at a dotted path.
fn at<'a>(d: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut cur: Option<&Bson> = None;
    let mut doc = d;
    for (i, seg) in path.split('.').enumerate() {
        let v = doc.get(seg)?;
        if i + 1 < path.split('.').count() {
            doc = v.as_document()?;
        }
        cur = Some(v);
    }
    cur
}

/// A value as short text for a table cell.
fn text(v: Option<&Bson>) -> String {
    match v {
        None | Some(Bson::Null) => "–".into(),
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::DateTime(t)) => t.to_chrono().format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        Some(Bson::ObjectId(o)) => o.to_hex(),
        Some(Bson::Int32(i)) => i.to_string(),
        Some(Bson::Int64(i)) => i.to_string(),
        Some(other) => other.clone().into_relaxed_extjson().to_string(),
    }
}

fn s(d: &Document, path: &str) -> String {
    text(at(d, path))
}

/// A value as indented JSON, for `<pre>`.
fn pretty(v: &Bson) -> String {
    serde_json::to_string_pretty(&v.clone().into_relaxed_extjson()).unwrap_or_default()
}

/// A response body stored as JSON text is shown indented; anything else as stored.
fn pretty_body(v: &Bson) -> String {
    if let Bson::String(s) = v {
        if let Ok(j) = serde_json::from_str::<serde_json::Value>(s) {
            if j.is_object() || j.is_array() {
                return serde_json::to_string_pretty(&j).unwrap_or_else(|_| s.clone());
            }
        }
        return s.clone();
    }
    pretty(v)
}

fn oid(d: &Document, path: &str) -> Option<ObjectId> {
    match at(d, path) {
        Some(Bson::ObjectId(o)) => Some(*o),
        _ => None,
    }
}

/// `base + path + ?query`, the query encoded.
fn link(base: &str, path: &str, query: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{q}")
    }
}

fn duration_ms(d: &Document) -> String {
    match (at(d, "time.request"), at(d, "time.response")) {
        (Some(Bson::DateTime(a)), Some(Bson::DateTime(b))) => {
            format!("{} ms", b.timestamp_millis() - a.timestamp_millis())
        }
        _ => "–".into(),
    }
}

/// A document's fields as a two-column table (nested values as indented JSON).
fn kv_table(d: &Document) -> Markup {
    html! {
        @if d.is_empty() { p.muted { "(empty)" } } @else {
            table.kv {
                @for (k, v) in d {
                    tr {
                        th { (k) }
                        td {
                            @match v {
                                Bson::Document(_) | Bson::Array(_) => pre { (pretty(v)) },
                                _ => (text(Some(v))),
                            }
                        }
                    }
                }
            }
        }
    }
}

fn sub(d: &Document, path: &str) -> Document {
    at(d, path)
        .and_then(Bson::as_document)
        .cloned()
        .unwrap_or_default()
}

// === search pages ===

fn form_value<'a>(search: &'a [(String, String)], name: &str) -> &'a str {
    search
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn field(pairs: &[(String, String)], name: &str, label: &str, kind: &str) -> Markup {
    html! {
        label {
            span { (label) }
            input type=(kind) name=(name) value=(form_value(pairs, name));
        }
    }
}

fn pager(p: &Page, path: &str, search: &Search, next: &Option<String>) -> Markup {
    let echo: Vec<(&str, &str)> = search
        .echo
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    html! {
        nav.pager {
            @if search.cursor.is_some() {
                a href=(link(&p.base, path, &echo)) { "« First page" }
            }
            @if let Some(n) = next {
                @let q: Vec<(&str, &str)> = echo.iter().copied().chain([("cursor", n.as_str())]).collect();
                a.next href=(link(&p.base, path, &q)) { "Next page »" }
            }
        }
    }
}

fn access_rows(p: &Page, docs: &[Document]) -> Markup {
    html! {
        table.list {
            thead { tr { th { "Time" } th { "User" } th { "Method" } th { "Path" } th { "Status" } th { "View" } th { "Duration" } } }
            tbody {
                @for d in docs {
                    @let id = oid(d, "_id").map(|o| o.to_hex()).unwrap_or_default();
                    tr {
                        td { a href=(link(&p.base, &format!("/access/{id}"), &[])) { (s(d, "time.request")) } }
                        td { (s(d, "user.username")) }
                        td { (s(d, "request.METADATA.REQUEST_METHOD")) }
                        td.path { a href=(link(&p.base, &format!("/access/{id}"), &[])) { (s(d, "request.path")) } }
                        td {
                            @if d.contains_key("exception") { span.bad { "!" (s(d, "exception.type")) } " " }
                            (s(d, "response.status_code"))
                        }
                        td { (s(d, "view.full_name")) }
                        td { (duration_ms(d)) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn access_search(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let pairs = params::pairs(uri.query());
    let form = html! {
        form.search method="get" action={ (p.base) "/access" } {
            (field(&pairs, "user_id", "User id", "text"))
            (field(&pairs, "url", "Path (exact)", "text"))
            (field(&pairs, "url_regex", "Path (regex)", "text"))
            (field(&pairs, "view", "View", "text"))
            (field(&pairs, "method", "Method", "text"))
            (field(&pairs, "status", "Status", "number"))
            (field(&pairs, "exception", "Exception type", "text"))
            (field(&pairs, "interlink_id", "Interlink id", "text"))
            (field(&pairs, "process", "Process id", "text"))
            (field(&pairs, "from", "From (UTC)", "text"))
            (field(&pairs, "to", "To (UTC)", "text"))
            (field(&pairs, "limit", "Per page", "number"))
            button type="submit" { "Search" }
        }
    };
    let search = match params::access_search(&pairs) {
        Ok(s) => s,
        Err(e) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                layout(
                    &p.base,
                    "Accesses",
                    p.logout,
                    html! { (form) p.error { (bad_param_msg(&e)) } },
                ),
            )
        }
    };
    let (docs, next) = match page(&state, Collection::Access, &search).await {
        Ok(x) => x,
        Err(e) => return store_failed(&p, &e),
    };
    html_response(
        StatusCode::OK,
        layout(
            &p.base,
            "Accesses",
            p.logout,
            html! {
                (form)
                @if docs.is_empty() { p.muted { "No access matches." } } @else { (access_rows(&p, &docs)) }
                (pager(&p, "/access", &search, &next))
            },
        ),
    )
}

fn model_action_rows(p: &Page, docs: &[Document]) -> Markup {
    html! {
        table.list {
            thead { tr { th { "Time" } th { "Model" } th { "Action" } th { "Instance" } th { "Changed fields" } th { "Access" } } }
            tbody {
                @for d in docs {
                    @let id = oid(d, "_id").map(|o| o.to_hex()).unwrap_or_default();
                    tr {
                        td { a href=(link(&p.base, &format!("/model-action/{id}"), &[])) { (s(d, "timestamp")) } }
                        td { (s(d, "model.full_name")) }
                        td { span class={ "action " (s(d, "action")) } { (s(d, "action")) } }
                        td {
                            a href=(link(&p.base, "/history", &[("model", &s(d, "model.full_name")), ("instance_id", &s(d, "instance.id"))])) {
                                (s(d, "instance.id")) " " span.muted { (s(d, "instance.description")) }
                            }
                        }
                        td { (sub(d, "content.changes").keys().cloned().collect::<Vec<_>>().join(", ")) }
                        td {
                            @if let Some(a) = oid(d, "access") {
                                a href=(link(&p.base, &format!("/access/{}", a.to_hex()), &[])) { "access" }
                            } @else { "–" }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn model_action_search(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let pairs = params::pairs(uri.query());
    let form = html! {
        form.search method="get" action={ (p.base) "/model-action" } {
            (field(&pairs, "model", "Model", "text"))
            label {
                span { "Action" }
                select name="action" {
                    @for a in ["", "create", "update", "delete"] {
                        option value=(a) selected[form_value(&pairs, "action") == a] { (if a.is_empty() { "any" } else { a }) }
                    }
                }
            }
            (field(&pairs, "instance_id", "Instance id", "text"))
            (field(&pairs, "access", "Access id", "text"))
            (field(&pairs, "from", "From (UTC)", "text"))
            (field(&pairs, "to", "To (UTC)", "text"))
            (field(&pairs, "limit", "Per page", "number"))
            button type="submit" { "Search" }
        }
    };
    let search = match params::model_action_search(&pairs) {
        Ok(s) => s,
        Err(e) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                layout(
                    &p.base,
                    "Model actions",
                    p.logout,
                    html! { (form) p.error { (bad_param_msg(&e)) } },
                ),
            )
        }
    };
    let (docs, next) = match page(&state, Collection::ModelAction, &search).await {
        Ok(x) => x,
        Err(e) => return store_failed(&p, &e),
    };
    html_response(
        StatusCode::OK,
        layout(
            &p.base,
            "Model actions",
            p.logout,
            html! {
                (form)
                @if docs.is_empty() { p.muted { "No model action matches." } } @else { (model_action_rows(&p, &docs)) }
                (pager(&p, "/model-action", &search, &next))
            },
        ),
    )
}

// === detail pages ===

async fn load(
    state: &Shared,
    p: &Page,
    c: Collection,
    id: &str,
) -> Result<Document, Response<Body>> {
    let Ok(o) = ObjectId::parse_str(id) else {
        return Err(error_page(
            p,
            StatusCode::BAD_REQUEST,
            "Not an id",
            &format!("`{id}` is not an id (24 hexadecimal digits)."),
        ));
    };
    match by_id(state, c, o).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(error_page(
            p,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No {} with id {o}.", c.name()),
        )),
        Err(e) => Err(store_failed(p, &e)),
    }
}

pub(crate) async fn access_detail(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let d = match load(&state, &p, Collection::Access, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let hex = oid(&d, "_id").map(|o| o.to_hex()).unwrap_or_default();
    let actions = FindOptions::new(Filter::eq("access", oid(&d, "_id").unwrap_or_default()))
        .sort("_id", Order::Asc)
        .window(0, Some(HISTORY_LIMIT))
        .max_time(state.query_timeout);
    let actions = match state
        .store
        .find_raw(Collection::ModelAction, &actions)
        .await
    {
        Ok(a) => a,
        Err(e) => return store_failed(&p, &e),
    };
    let req = sub(&d, "request");
    let body = html! {
        table.kv {
            tr { th { "Id" } td { (hex) " · " a href=(link(&p.base, &format!("/api/access/{hex}"), &[])) { "JSON" } } }
            tr { th { "Requested" } td { (s(&d, "time.request")) } }
            tr { th { "Answered" } td { (s(&d, "time.response")) " (" (duration_ms(&d)) ")" } }
            tr { th { "Method" } td { (s(&d, "request.METADATA.REQUEST_METHOD")) } }
            tr { th { "Path" } td.path { (s(&d, "request.path")) } }
            tr { th { "Status" } td { (s(&d, "response.status_code")) } }
            tr { th { "User" } td {
                (s(&d, "user.username")) " (id " (s(&d, "user.id")) ") · "
                a href=(link(&p.base, "/access", &[("user_id", &s(&d, "user.id"))])) { "accesses of this user" }
            } }
            tr { th { "View" } td {
                (s(&d, "view.full_name")) " · "
                a href=(link(&p.base, "/access", &[("view", &s(&d, "view.full_name"))])) { "accesses of this view" }
            } }
            tr { th { "Interlink id" } td { (s(&d, "interlink_id")) } }
            tr { th { "Process" } td {
                @if let Some(pr) = oid(&d, "process") {
                    a href=(link(&p.base, &format!("/process/{}", pr.to_hex()), &[])) { (pr.to_hex()) }
                } @else { "–" }
            } }
        }
        h2 { "Model actions it caused" }
        @if actions.is_empty() { p.muted { "None." } } @else { (model_action_rows(&p, &actions)) }
        @if let Some(e) = at(&d, "exception").and_then(Bson::as_document) {
            h2.bad { "Exception" }
            table.kv {
                tr { th { "Type" } td { (s(e, "type")) } }
                tr { th { "Message" } td { (s(e, "message")) } }
            }
            @if let Some(tb) = at(e, "trace") {
                h3 { "Trace" }
                pre.trace { (match tb { Bson::String(t) => t.clone(), other => pretty(other) }) }
            }
            @let rest: Document = e.iter().filter(|(k, _)| !matches!(k.as_str(), "type" | "message" | "trace")).map(|(k, v)| (k.clone(), v.clone())).collect();
            @if !rest.is_empty() { (kv_table(&rest)) }
        }
        h2 { "Request" }
        h3 { "Query (GET)" } (kv_table(&sub(&req, "GET")))
        h3 { "Form / body (POST)" } (kv_table(&sub(&req, "POST")))
        h3 { "Cookies" } (kv_table(&sub(&req, "COOKIES")))
        h3 { "Metadata and headers" } (kv_table(&sub(&req, "METADATA")))
        @if let Some(r) = at(&d, "response").and_then(Bson::as_document) {
            h2 { "Response" }
            table.kv {
                @for (k, v) in r {
                    tr { th { (k) } td {
                        @if k == "content" { pre { (pretty_body(v)) } }
                        @else if matches!(v, Bson::Document(_) | Bson::Array(_)) { pre { (pretty(v)) } }
                        @else { (text(Some(v))) }
                    } }
                }
            }
        }
        h2 { "View arguments" }
        h3 { "args" } pre { (pretty(at(&d, "view.args").unwrap_or(&Bson::Null))) }
        h3 { "kwargs" } pre { (pretty(at(&d, "view.kwargs").unwrap_or(&Bson::Null))) }
        @if let Some(c) = at(&d, "custom") {
            h2 { "Custom provider data" }
            pre { (pretty(c)) }
        }
    };
    html_response(StatusCode::OK, layout(&p.base, "Access", p.logout, body))
}

/// The diff table: every field of the old and new values, changed ones highlighted.
fn diff_table(d: &Document) -> Markup {
    let old = sub(d, "content.old");
    let new = sub(d, "content.new");
    let changes = sub(d, "content.changes");
    let mut keys: Vec<&String> = old.keys().collect();
    for k in new.keys().chain(changes.keys()) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let cell = |doc: &Document, k: &str| -> String {
        match doc.get(k) {
            None => "–".into(),
            Some(v @ (Bson::Document(_) | Bson::Array(_))) => pretty(v),
            Some(v) => text(Some(v)),
        }
    };
    html! {
        table.diff {
            thead { tr { th { "Field" } th { "Old" } th { "New" } } }
            tbody {
                @for k in keys {
                    @let changed = changes.contains_key(k.as_str());
                    @let change = changes.get(k.as_str()).and_then(Bson::as_document);
                    tr class=[changed.then_some("changed")] {
                        th { (k) @if changed { " " span.badge { "changed" } } }
                        td.old { (change.map_or_else(|| cell(&old, k), |c| cell(c, "old"))) }
                        td.new { (change.map_or_else(|| cell(&new, k), |c| cell(c, "new"))) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn model_action_detail(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let d = match load(&state, &p, Collection::ModelAction, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let hex = oid(&d, "_id").map(|o| o.to_hex()).unwrap_or_default();
    let body = html! {
        table.kv {
            tr { th { "Id" } td { (hex) " · " a href=(link(&p.base, &format!("/api/model-action/{hex}"), &[])) { "JSON" } } }
            tr { th { "When" } td { (s(&d, "timestamp")) } }
            tr { th { "Model" } td { (s(&d, "model.full_name")) } }
            tr { th { "Action" } td { span class={ "action " (s(&d, "action")) } { (s(&d, "action")) } } }
            tr { th { "Instance" } td {
                (s(&d, "instance.id")) " — " (s(&d, "instance.description")) " · "
                a id="history" href=(link(&p.base, "/history", &[("model", &s(&d, "model.full_name")), ("instance_id", &s(&d, "instance.id"))])) { "instance history" }
            } }
            tr { th { "Access" } td {
                @if let Some(a) = oid(&d, "access") {
                    a href=(link(&p.base, &format!("/access/{}", a.to_hex()), &[])) { (a.to_hex()) }
                } @else { "– (outside a request)" }
            } }
            tr { th { "Process" } td {
                @if let Some(pr) = oid(&d, "process") {
                    a href=(link(&p.base, &format!("/process/{}", pr.to_hex()), &[])) { (pr.to_hex()) }
                } @else { "–" }
            } }
        }
        h2 { "Changes" }
        (diff_table(&d))
    };
    html_response(
        StatusCode::OK,
        layout(&p.base, "Model action", p.logout, body),
    )
}

pub(crate) async fn history(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let pairs = params::pairs(uri.query());
    let get = |n: &str| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let unknown = pairs
        .iter()
        .find(|(k, _)| k != "model" && k != "instance_id");
    let (Some(model), Some(instance), None) = (get("model"), get("instance_id"), unknown) else {
        return error_page(
            &p,
            StatusCode::BAD_REQUEST,
            "Instance history",
            "Give exactly `model` and `instance_id`.",
        );
    };
    let opts = FindOptions::new(Filter::And(vec![
        Filter::eq("model.full_name", model.as_str()),
        Filter::eq("instance.id", instance.as_str()),
    ]))
    .sort("timestamp", Order::Asc)
    .sort("_id", Order::Asc)
    .window(0, Some(HISTORY_LIMIT))
    .max_time(state.query_timeout);
    let docs = match state.store.find_raw(Collection::ModelAction, &opts).await {
        Ok(d) => d,
        Err(e) => return store_failed(&p, &e),
    };
    let body = html! {
        p { "Every action on " code { (model) } " instance " code { (instance) } ", oldest first"
            @if docs.len() as u64 == HISTORY_LIMIT { " (the first " (HISTORY_LIMIT) ")" } "." }
        @if docs.is_empty() { p.muted { "No action recorded." } }
        @for d in &docs {
            @let hex = oid(d, "_id").map(|o| o.to_hex()).unwrap_or_default();
            section.history-item {
                h3 {
                    a href=(link(&p.base, &format!("/model-action/{hex}"), &[])) { (s(d, "timestamp")) }
                    " " span class={ "action " (s(d, "action")) } { (s(d, "action")) }
                    @if let Some(a) = oid(d, "access") {
                        " · " a href=(link(&p.base, &format!("/access/{}", a.to_hex()), &[])) { "its access" }
                    }
                }
                (diff_table(d))
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout(&p.base, "Instance history", p.logout, body),
    )
}

pub(crate) async fn process_detail(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let d = match load(&state, &p, Collection::Process, &id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let o = oid(&d, "_id").unwrap_or_default();
    let hex = o.to_hex();
    let accesses = state
        .store
        .count_limited(
            Collection::Access,
            &Filter::eq("process", o),
            Some(state.query_timeout),
        )
        .await;
    let body = html! {
        table.kv {
            tr { th { "Id" } td { (hex) " · " a href=(link(&p.base, &format!("/api/process/{hex}"), &[])) { "JSON" } } }
            tr { th { "Name" } td { (s(&d, "name")) } }
            tr { th { "Arguments" } td { (s(&d, "args")) } }
            tr { th { "Machine" } td { (s(&d, "machine")) } }
            tr { th { "User" } td { (s(&d, "user")) } }
            tr { th { "Pid" } td { (s(&d, "pid")) } }
            tr { th { "Started" } td { (s(&d, "creation_time")) } }
            tr { th { "Interlink id" } td { (s(&d, "interlink_id")) } }
            tr { th { "Accesses" } td {
                (match &accesses { Ok(n) => n.to_string(), Err(e) => store_status(e).1 })
                " · " a href=(link(&p.base, "/access", &[("process", &hex)])) { "list them" }
            } }
        }
    };
    html_response(StatusCode::OK, layout(&p.base, "Process", p.logout, body))
}

// === dashboard ===

pub(crate) async fn dashboard(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let p = match enter(&state, &original, &uri, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let pairs = params::pairs(uri.query());
    let form = html! {
        form.search method="get" action={ (p.base) "/" } {
            (field(&pairs, "from", "From (UTC)", "text"))
            (field(&pairs, "to", "To (UTC)", "text"))
            label {
                span { "Bucket" }
                select name="bucket" {
                    @for b in ["hour", "minute", "day"] {
                        option value=(b) selected[form_value(&pairs, "bucket") == b] { (b) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    };
    let sp = match params::stats_params(&pairs, chrono::Utc::now()) {
        Ok(sp) => sp,
        Err(e) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                layout(
                    &p.base,
                    "Dashboard",
                    p.logout,
                    html! { (form) p.error { (bad_param_msg(&e)) } },
                ),
            )
        }
    };
    let st = match stats::compute(&state.store, sp, state.query_timeout).await {
        Ok(s) => s,
        Err(e) => return store_failed(&p, &e),
    };
    let recent = FindOptions::new(Filter::all())
        .sort("_id", Order::Desc)
        .window(0, Some(10))
        .max_time(state.query_timeout);
    let recent = match state.store.find_raw(Collection::ModelAction, &recent).await {
        Ok(r) => r,
        Err(e) => return store_failed(&p, &e),
    };
    let chart = |r: Result<String, String>, alt: &str| -> Markup {
        match r {
            Ok(svg) => html! { img.chart src=(charts::data_url(&svg)) alt=(alt); },
            Err(e) => html! { p.error { "Chart failed: " (e) } },
        }
    };
    let body = html! {
        (form)
        p.summary {
            "From " (st.params.from.format("%Y-%m-%d %H:%M")) " to " (st.params.to.format("%Y-%m-%d %H:%M")) " UTC: "
            strong { (st.total) } " requests, "
            span.bad { strong { (st.errors) } " errors" }
            " (exceptions or 5xx) · "
            a href=(link(&p.base, "/api/stats", &[("from", &st.params.from.to_rfc3339()), ("to", &st.params.to.to_rfc3339()), ("bucket", st.params.bucket.as_str())])) { "JSON" }
        }
        (chart(charts::requests_over_time(&st), "Requests over time by status class"))
        div.charts {
            (chart(charts::status_classes(&st), "Status classes"))
            (chart(charts::top_views(&st), "Top views"))
        }
        div.columns {
            section {
                h2 { "Status classes" }
                table.kv { @for (c, n) in CLASSES.iter().zip(st.classes) { tr { th { (c) } td { (n) } } } }
            }
            section {
                h2 { "Top views" }
                table.kv {
                    @for (i, (v, n)) in st.top_views.iter().enumerate() {
                        tr { th { "#" (i + 1) " " a href=(link(&p.base, "/access", &[("view", v)])) { (v) } } td { (n) } }
                    }
                }
            }
        }
        h2 { "Recent model actions" }
        @if recent.is_empty() { p.muted { "None yet." } } @else { (model_action_rows(&p, &recent)) }
    };
    html_response(StatusCode::OK, layout(&p.base, "Dashboard", p.logout, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_are_escaped() {
        let mut d = Document::new();
        d.insert("x", r#""><svg onload=alert(1)><script>alert(2)</script>"#);
        let out = kv_table(&d).into_string();
        assert!(!out.contains("<svg"), "{out}");
        assert!(!out.contains("<script"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
    }

    #[test]
    fn links_encode_their_query() {
        assert_eq!(
            link(
                "/audit",
                "/history",
                &[("model", "a::B"), ("instance_id", "1&x=\"")]
            ),
            "/audit/history?model=a%3A%3AB&instance_id=1%26x%3D%22"
        );
    }
}
