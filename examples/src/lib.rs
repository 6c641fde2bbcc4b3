//! The demo application: a port of the original demo on axum, used by the `demo`
//! example (a scripted tour and a server) and by the end-to-end tests.
//!
//! Routes: `GET /`, `/access/class/`, `/access/function/`, `/access/decorator/`,
//! `/access/exception/`, `/access/panic/`, `/access/args/{n}/`, `/access/last/`,
//! `/access/disabled/`, `/access/slow/?ms=N`, `POST /login/`, `POST /modelaction/create/`, `/modelaction/update/`,
//! `/modelaction/delete/`, `GET /modelaction/last/`, `GET /api/polls/`.
//!
//! The polls live in a SQLite file of the application's own (beside the audit store, never inside
//! it), through SeaORM; their entity's hooks record every create, update and delete, so the routes
//! that write never call the auditor themselves.

use audit_runtime::bson;
use audit_runtime::http::{AuditLayer, ProviderContext};
use audit_runtime::{
    audited_view, disable_audit, Access, AccessUser, AuditDocument, Auditor, AuditorBuilder,
    ModelAction, Query,
};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait,
    ModelTrait, QueryOrder, Schema, Set,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The demo's model: a SeaORM entity whose model is also `Audited`, and whose hooks record its
/// model actions.
#[allow(unreachable_pub)] // SeaORM's entity items are `pub` by convention, and re-exported.
pub mod poll {
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    /// A poll, as stored (and as recorded, under `demo::poll::Model`).
    #[derive(
        Clone,
        Debug,
        PartialEq,
        Eq,
        DeriveEntityModel,
        audit_runtime::Audited,
        Serialize,
        Deserialize,
    )]
    #[sea_orm(table_name = "poll")]
    pub struct Model {
        /// Its id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        /// The question.
        pub question: String,
        /// When it was created or last changed.
        pub updated: DateTimeUtc,
        /// A secret-looking field: masked in snapshots by name.
        #[serde(skip_serializing)]
        pub admin_token: String,
    }

    /// Polls relate to nothing else.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {
        audit_runtime::sea_orm::audit_hooks!();
    }

    impl std::fmt::Display for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.question)
        }
    }
}

/// The demo's model.
pub type Poll = poll::Model;

/// The polls database: a SQLite file of the application's own, through SeaORM.
#[derive(Clone)]
pub struct Polls {
    db: DatabaseConnection,
    /// The last id given: ids are chosen here, so that a poll's default question can name its id
    /// and still be written by one insert.
    last_id: Arc<AtomicI64>,
    /// The questions, in id order, as of the last write: the `polls` provider reads them when a
    /// request ends, in code that cannot wait for the database.
    names: Arc<Mutex<Vec<String>>>,
    /// The directory of a temporary database, removed with the last clone.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl Polls {
    /// Opens the polls database at `path`, creating the file and its table on first run.
    pub async fn open(path: &std::path::Path) -> Result<Polls, DbErr> {
        Self::connect(path, None).await
    }

    /// A fresh database in a temporary directory, removed with the last clone (tests).
    pub async fn temporary() -> Result<Polls, DbErr> {
        let dir = tempfile::tempdir().map_err(|e| DbErr::Custom(e.to_string()))?;
        Self::connect(&dir.path().join("polls.db"), Some(Arc::new(dir))).await
    }

    async fn connect(
        path: &std::path::Path,
        dir: Option<Arc<tempfile::TempDir>>,
    ) -> Result<Polls, DbErr> {
        let db = Database::connect(format!("sqlite://{}?mode=rwc", path.display())).await?;
        let schema = Schema::new(db.get_database_backend());
        db.execute(
            schema
                .create_table_from_entity(poll::Entity)
                .if_not_exists(),
        )
        .await?;
        let last = poll::Entity::find()
            .order_by_desc(poll::Column::Id)
            .one(&db)
            .await?
            .map(|p| p.id);
        let polls = Polls {
            db,
            last_id: Arc::new(AtomicI64::new(last.unwrap_or(0))),
            names: Arc::default(),
            _dir: dir,
        };
        polls.refresh().await?;
        Ok(polls)
    }

    /// The connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The questions, in id order, as of the last write.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every poll, in id order.
    async fn all(&self) -> Result<Vec<Poll>, DbErr> {
        poll::Entity::find()
            .order_by_asc(poll::Column::Id)
            .all(&self.db)
            .await
    }

    /// Rereads the questions after a write.
    async fn refresh(&self) -> Result<(), DbErr> {
        let names = self.all().await?.into_iter().map(|p| p.question).collect();
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names;
        Ok(())
    }
}

/// A database failure, as the demo answers it.
fn db_error(e: impl fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
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
    async fn target<C: ConnectionTrait>(&self, db: &C) -> Result<Poll, (StatusCode, String)> {
        let found = match self.id {
            Some(id) => poll::Entity::find_by_id(id).one(db).await,
            None => {
                poll::Entity::find()
                    .order_by_desc(poll::Column::Id)
                    .one(db)
                    .await
            }
        }
        .map_err(db_error)?;
        found.ok_or_else(|| match self.id {
            Some(id) => (StatusCode::NOT_FOUND, format!("no poll {id}")),
            None => (StatusCode::NOT_FOUND, "no poll".into()),
        })
    }
}

#[audited_view]
async fn create_poll(
    State(s): State<AppState>,
    Form(f): Form<PollForm>,
) -> Result<Json<Poll>, (StatusCode, String)> {
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
) -> Result<Json<Poll>, (StatusCode, String)> {
    tokio::time::sleep(std::time::Duration::from_millis(q.ms.min(60_000))).await;
    create(&s, |_| format!("Slow poll after {} ms", q.ms)).await
}

/// Creates a poll whose question is made from its new id. The entity's hooks record it once the
/// insert has run: nothing here calls the auditor.
async fn create(
    s: &AppState,
    question: impl FnOnce(i64) -> String,
) -> Result<Json<Poll>, (StatusCode, String)> {
    let id = s.polls.last_id.fetch_add(1, Ordering::SeqCst) + 1;
    let poll = poll::ActiveModel {
        id: Set(id),
        question: Set(question(id)),
        updated: Set(chrono::Utc::now()),
        admin_token: Set(format!("token-{}", bson::oid::ObjectId::new())),
    }
    .insert(s.polls.connection())
    .await
    .map_err(db_error)?;
    s.polls.refresh().await.map_err(db_error)?;
    Ok(Json(poll))
}

/// What a route answers when it cannot do what it was asked; `Display`, so that a transaction can
/// end with it.
#[derive(Debug)]
pub struct Refused(StatusCode, String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

/// Changes a poll's question in a transaction: its update is recorded when the transaction
/// commits, with the row as it was before and after.
#[audited_view]
async fn update_poll(
    State(s): State<AppState>,
    Form(f): Form<PollForm>,
) -> Result<Json<Poll>, (StatusCode, String)> {
    let new = audit_runtime::sea_orm::transaction(s.polls.connection(), |txn| {
        Box::pin(async move {
            let old = f.target(txn).await.map_err(|(s, m)| Refused(s, m))?;
            let question = f
                .question
                .clone()
                .unwrap_or_else(|| format!("{} (modified)", old.question));
            let mut poll: poll::ActiveModel = old.into();
            poll.question = Set(question);
            poll.updated = Set(chrono::Utc::now());
            poll.update(txn).await.map_err(|e| {
                let (s, m) = db_error(e);
                Refused(s, m)
            })
        })
    })
    .await
    .map_err(|e| match e {
        sea_orm::TransactionError::Transaction(Refused(s, m)) => (s, m),
        sea_orm::TransactionError::Connection(e) => db_error(e),
    })?;
    s.polls.refresh().await.map_err(db_error)?;
    Ok(Json(new))
}

#[audited_view]
async fn delete_poll(
    State(s): State<AppState>,
    Form(f): Form<PollForm>,
) -> Result<Json<Poll>, (StatusCode, String)> {
    let db = s.polls.connection();
    let old = f.target(db).await?;
    old.clone().delete(db).await.map_err(db_error)?;
    s.polls.refresh().await.map_err(db_error)?;
    Ok(Json(old))
}

#[audited_view]
async fn last_model_action(State(s): State<AppState>) -> Json<serde_json::Value> {
    latest::<ModelAction>(&s.auditor).await
}

#[audited_view]
async fn api_polls(State(s): State<AppState>) -> Result<Json<Vec<Poll>>, (StatusCode, String)> {
    Ok(Json(s.polls.all().await.map_err(db_error)?))
}
