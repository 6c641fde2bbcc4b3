//! The demo application: a port of the original demo on axum, used by the `demo`
//! example (a scripted tour and a server) and by the end-to-end tests.
//!
//! Routes: `GET /`, `/access/class/`, `/access/function/`, `/access/decorator/`,
//! `/access/exception/`, `/access/panic/`, `/access/args/{n}/`, `/access/last/`,
//! `/access/disabled/`, `/access/slow/?ms=N`, `POST /login/`, `POST /modelaction/create/`, `/modelaction/update/`,
//! `/modelaction/delete/`, `GET /modelaction/last/`, `GET /api/polls/`.

use audit_runtime::bson;
use audit_runtime::http::{AuditLayer, ProviderContext};
use audit_runtime::{
    audited_view, disable_audit, Access, AccessUser, AuditDocument, Audited, Auditor,
    AuditorBuilder, ModelAction, Query,
};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The demo's model.
#[derive(Audited, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Poll {
    /// Its id.
    pub id: i64,
    /// The question.
    pub question: String,
    /// When it was created or last changed.
    pub updated: chrono::DateTime<chrono::Utc>,
    /// A secret-looking field: masked in snapshots by name.
    #[serde(skip_serializing)]
    pub admin_token: String,
}

impl fmt::Display for Poll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.question)
    }
}

/// The in-memory "database" of polls.
#[derive(Clone, Default)]
pub struct Polls {
    rows: Arc<Mutex<BTreeMap<i64, Poll>>>,
    next: Arc<AtomicI64>,
}

impl Polls {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Poll>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The questions, in id order.
    pub fn names(&self) -> Vec<String> {
        self.lock().values().map(|p| p.question.clone()).collect()
    }
}

/// The application state.
#[derive(Clone)]
pub struct AppState {
    auditor: Auditor,
    polls: Polls,
}

/// The `polls` custom provider of the original documentation: the poll names and their number.
pub fn polls_provider(
    polls: Polls,
) -> impl Fn(&ProviderContext<'_>) -> bson::Bson + Send + Sync + 'static {
    move |_ctx| {
        let names = polls.names();
        bson::bson!({ "names": names.clone(), "num_polls": names.len() as i64 })
    }
}

/// The auditor builder with the demo's provider registered.
pub fn auditor_builder(config: audit_runtime::AuditConfig, polls: &Polls) -> AuditorBuilder {
    Auditor::builder(config).provider("polls", polls_provider(polls.clone()))
}

/// The user of a request: the demo reads `x-user: <id>:<name>` (a stand-in for real auth).
pub fn demo_user(parts: &axum::http::request::Parts) -> Option<AccessUser> {
    let v = parts.headers.get("x-user")?.to_str().ok()?;
    let (id, name) = v.split_once(':')?;
    Some(match id.parse::<i64>() {
        Ok(n) => AccessUser::new(n, name),
        Err(_) => AccessUser::new(id, name),
    })
}

/// The demo router, audited through `auditor`.
pub fn app(auditor: Auditor, polls: Polls) -> Router {
    let state = AppState {
        auditor: auditor.clone(),
        polls,
    };
    Router::new()
        .route("/", get(index))
        .route("/access/class/", get(ClassView::get))
        .route("/access/function/", get(function_view))
        .route("/access/decorator/", get(decorator_view))
        .route("/access/exception/", get(exception_view))
        .route("/access/panic/", get(panic_view))
        .route("/access/args/{n}/", get(args_view))
        .route("/access/last/", get(last_access))
        .route("/access/disabled/", get(disabled_view))
        .route("/access/slow/", get(slow_view))
        .route("/login/", post(login))
        .route("/modelaction/create/", post(create_poll))
        .route("/modelaction/update/", post(update_poll))
        .route("/modelaction/delete/", post(delete_poll))
        .route("/modelaction/last/", get(last_model_action))
        .route("/api/polls/", get(api_polls))
        .with_state(state)
        // `catch_panic`: a panicking handler answers 500 from the audit layer itself, so the
        // stored status is the one the client got.
        .layer(
            AuditLayer::new(auditor)
                .user_resolver(demo_user)
                .catch_panic(),
        )
}

async fn index() -> Html<&'static str> {
    Html("<h1>Audit demo</h1><p>Try /access/function/ or POST /modelaction/create/</p>")
}

/// A "class-based" view: a method, recorded as `demo::ClassView::get`.
pub struct ClassView;

impl ClassView {
    #[audited_view]
    async fn get() -> Json<serde_json::Value> {
        Json(serde_json::json!({ "view": "class" }))
    }
}

/// Not annotated: recorded with its route as the view.
async fn function_view() -> &'static str {
    "function view"
}

#[audited_view]
async fn decorator_view() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "response": "test" }))
}

/// The demo's handler error.
#[derive(Debug)]
pub struct DemoError(String);

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

impl IntoResponse for DemoError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

#[audited_view]
async fn exception_view() -> Result<String, DemoError> {
    Err(DemoError("Intended exception".into()))
}

#[audited_view]
async fn panic_view() -> String {
    panic!("Intended panic")
}

#[audited_view(args(n))]
async fn args_view(Path(n): Path<u32>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "n": n }))
}

fn relaxed<T: Serialize>(doc: &T) -> serde_json::Value {
    bson::to_bson(doc)
        .map(bson::Bson::into_relaxed_extjson)
        .unwrap_or(serde_json::Value::Null)
}

/// The newest stored document of a kind, as relaxed Extended JSON (null when there is none).
async fn latest<T: AuditDocument>(auditor: &Auditor) -> Json<serde_json::Value> {
    let Some(store) = auditor.store() else {
        return Json(serde_json::Value::Null);
    };
    auditor.flush().await;
    let last = Query::<T>::new()
        .newest_first()
        .limit(1)
        .fetch(store)
        .await
        .unwrap_or_default();
    Json(last.first().map(relaxed).unwrap_or(serde_json::Value::Null))
}

#[audited_view]
async fn last_access(State(s): State<AppState>) -> Json<serde_json::Value> {
    latest::<Access>(&s.auditor).await
}

#[disable_audit]
async fn disabled_view() -> &'static str {
    "not audited"
}

/// The login form.
#[derive(Deserialize)]
pub struct Login {
    username: String,
    #[allow(dead_code)]
    password: String,
}

#[audited_view]
async fn login(Form(form): Form<Login>) -> String {
    audit_runtime::set_user(AccessUser::new(1, form.username.clone()));
    format!("welcome {}", form.username)
}

/// The poll forms.
#[derive(Deserialize)]
pub struct PollForm {
    id: Option<i64>,
    question: Option<String>,
}

impl PollForm {
    /// The poll the form names, else the newest one.
    fn target(&self, polls: &Polls) -> Result<i64, (StatusCode, String)> {
        self.id
            .or_else(|| polls.lock().keys().next_back().copied())
            .ok_or((StatusCode::NOT_FOUND, "no poll".into()))
    }
}

#[audited_view]
async fn create_poll(State(s): State<AppState>, Form(f): Form<PollForm>) -> Json<Poll> {
    create(&s, |id| f.question.unwrap_or_else(|| format!("Poll {id}"))).await
}

/// The query of `/access/slow/`.
#[derive(Deserialize)]
pub struct SlowQuery {
    /// How long to wait before acting, in milliseconds (at most a minute).
    #[serde(default)]
    ms: u64,
}

/// Waits `ms` milliseconds, then creates a poll (and records it). Hang up before the end
/// (`curl --max-time 1 '/access/slow/?ms=5000'`) and the trail still holds the access, marked
/// `cancelled`, with no poll created.
#[audited_view]
async fn slow_view(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SlowQuery>,
) -> Json<Poll> {
    tokio::time::sleep(std::time::Duration::from_millis(q.ms.min(60_000))).await;
    create(&s, |_| format!("Slow poll after {} ms", q.ms)).await
}

/// Creates a poll whose question is made from its new id, and records it.
async fn create(s: &AppState, question: impl FnOnce(i64) -> String) -> Json<Poll> {
    let id = s.polls.next.fetch_add(1, Ordering::SeqCst) + 1;
    let poll = Poll {
        id,
        question: question(id),
        updated: chrono::Utc::now(),
        admin_token: format!("token-{id}"),
    };
    s.polls.lock().insert(id, poll.clone());
    // Recorded after the change is "committed": a change rolled back is never recorded.
    s.auditor.record_create(&poll).await;
    Json(poll)
}

#[audited_view]
async fn update_poll(
    State(s): State<AppState>,
    Form(f): Form<PollForm>,
) -> Result<Json<Poll>, (StatusCode, String)> {
    let id = f.target(&s.polls)?;
    let old = s
        .polls
        .lock()
        .get(&id)
        .cloned()
        .ok_or((StatusCode::NOT_FOUND, format!("no poll {id}")))?;
    let mut new = old.clone();
    new.question = f
        .question
        .unwrap_or_else(|| format!("{} (modified)", old.question));
    new.updated = chrono::Utc::now();
    s.polls.lock().insert(id, new.clone());
    s.auditor.record_update(&old, &new).await;
    Ok(Json(new))
}

#[audited_view]
async fn delete_poll(
    State(s): State<AppState>,
    Form(f): Form<PollForm>,
) -> Result<Json<Poll>, (StatusCode, String)> {
    let id = f.target(&s.polls)?;
    let old = s
        .polls
        .lock()
        .remove(&id)
        .ok_or((StatusCode::NOT_FOUND, format!("no poll {id}")))?;
    s.auditor.record_delete(&old).await;
    Ok(Json(old))
}

#[audited_view]
async fn last_model_action(State(s): State<AppState>) -> Json<serde_json::Value> {
    latest::<ModelAction>(&s.auditor).await
}

#[audited_view]
async fn api_polls(State(s): State<AppState>) -> Json<Vec<Poll>> {
    Json(s.polls.lock().values().cloned().collect())
}
