//! Model actions recorded by SeaORM's hooks, through SeaORM on SQLite (sqlx's driver, in the same
//! binary as the embedded store): inserts, updates and deletes through the ActiveModel API each
//! leave one action with the right old, new and changes; only what commits is recorded; actions
//! link to the access of the request that made them, through a real axum server with the audit
//! layer. Also the explicit calls for bulk statements, and the `Tracked` guard for data layers
//! without hooks. On both audit stores.

use audit_runtime::http::AuditLayer;
use audit_runtime::sea_orm::{record_update, transaction};
use audit_runtime::{
    Access, Action, AuditConfig, Auditor, ModelAction, Tracked, UrlMatch, WriterGuard,
};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use bson::{doc, Bson};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, DbErr,
    EntityTrait, ModelTrait, QueryFilter, Schema, Set, TransactionError,
};
use std::time::Duration;

/// The audited entity: `#[derive(Audited)]` beside `DeriveEntityModel`, field attributes of both.
#[allow(unreachable_pub)] // SeaORM's entity items are `pub` by convention.
mod poll {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
    #[sea_orm(table_name = "poll")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub question: String,
        pub votes: i32,
        pub closed: bool,
        /// Never in the trail: a counter that changes on every read.
        #[audit(skip)]
        pub views: i32,
    }

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

/// An entity without the hooks: its writes are never recorded.
#[allow(unreachable_pub)]
mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
    #[sea_orm(table_name = "note")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub text: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The application's own SQLite database, with its tables.
async fn database() -> (DatabaseConnection, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let db = Database::connect(&url).await.unwrap();
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(poll::Entity))
        .await
        .unwrap();
    db.execute(&schema.create_table_from_entity(note::Entity))
        .await
        .unwrap();
    (db, dir)
}

struct Fixture {
    base: String,
    client: reqwest::Client,
    auditor: Auditor,
    db: DatabaseConnection,
    guard: Option<WriterGuard>,
    task: tokio::task::JoinHandle<()>,
    _dirs: (Option<tempfile::TempDir>, tempfile::TempDir),
}

/// An auditor on the store `kind`, the application's database, and `routes` served under the
/// audit layer.
async fn fixture(kind: &str, routes: Router<DatabaseConnection>) -> Fixture {
    let (conn, audit_dir) = audit_tests::connection(kind);
    let config = AuditConfig::default().with_connection(conn);
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let (db, db_dir) = database().await;
    let app = routes
        .with_state(db.clone())
        .layer(AuditLayer::new(auditor.clone()));
    let (addr, task) = audit_tests::serve(app).await;
    Fixture {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        auditor,
        db,
        guard: Some(guard),
        task,
        _dirs: (audit_dir, db_dir),
    }
}

impl Fixture {
    /// POSTs to `path` and returns the body of the success it must be.
    async fn post(&self, path: &str) -> String {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Every stored model action, in the order they were made.
    async fn actions(&self) -> Vec<ModelAction> {
        self.auditor.flush().await;
        let mut all = ModelAction::objects()
            .fetch(self.auditor.store().unwrap())
            .await
            .unwrap();
        // Ids grow with each action made in this process.
        all.sort_by_key(|m| m.id);
        all
    }

    async fn access(&self, path: &str) -> Access {
        self.auditor.flush().await;
        let mut found = Access::objects()
            .filter_by_url(UrlMatch::exact(path))
            .fetch(self.auditor.store().unwrap())
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "one access to {path}");
        found.remove(0)
    }

    async fn stop(mut self) {
        self.task.abort();
        self.guard.take().unwrap().shutdown().await;
    }
}

fn new_poll(question: &str, votes: i32) -> poll::ActiveModel {
    poll::ActiveModel {
        question: Set(question.to_owned()),
        votes: Set(votes),
        closed: Set(false),
        views: Set(0),
        ..Default::default()
    }
}

/// The stored row, read without the hooks.
async fn row(db: &DatabaseConnection, id: i64) -> Option<poll::Model> {
    poll::Entity::find_by_id(id).one(db).await.unwrap()
}

/// A handler's error: the message of a failed statement.
type Failed = (axum::http::StatusCode, String);

fn failed(e: impl std::fmt::Display) -> Failed {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The error a test transaction returns to roll back.
#[derive(Debug)]
struct RollBack;

impl std::fmt::Display for RollBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rolled back on purpose")
    }
}

impl From<DbErr> for RollBack {
    fn from(e: DbErr) -> Self {
        panic!("unexpected database error: {e}")
    }
}

use audit_tests::on_both_stores;

on_both_stores!(
    insert_update_delete_each_record_one_action,
    an_update_of_one_field_diffs_against_the_whole_stored_row,
    an_update_that_changes_nothing_records_nothing,
    a_rolled_back_transaction_records_nothing,
    a_committed_transaction_records_each_action_once_in_order_at_commit,
    nested_transactions_record_only_what_the_outermost_commits,
    a_cancelled_transaction_records_nothing,
    concurrent_requests_keep_their_own_actions,
    bulk_statements_are_recorded_with_the_explicit_call,
    the_tracked_guard_records_updates_from_the_loaded_state,
);

/// Through the ActiveModel API outside any transaction: each statement leaves one action, with
/// the row as stored, linked to its request's access.
async fn insert_update_delete_each_record_one_action(kind: &str) {
    async fn create(State(db): State<DatabaseConnection>) -> Result<String, Failed> {
        let m = new_poll("What's up?", 1)
            .insert(&db)
            .await
            .map_err(failed)?;
        Ok(m.id.to_string())
    }
    async fn update(
        State(db): State<DatabaseConnection>,
        Path(id): Path<i64>,
    ) -> Result<(), Failed> {
        let stored = poll::Entity::find_by_id(id)
            .one(&db)
            .await
            .map_err(failed)?
            .unwrap();
        let mut am: poll::ActiveModel = stored.into();
        am.question = Set("What's new?".into());
        am.votes = Set(2);
        am.views = Set(40);
        am.save(&db).await.map_err(failed)?;
        Ok(())
    }
    async fn delete(
        State(db): State<DatabaseConnection>,
        Path(id): Path<i64>,
    ) -> Result<(), Failed> {
        let stored = row_or_500(&db, id).await?;
        stored.delete(&db).await.map_err(failed)?;
        Ok(())
    }
    let f = fixture(
        kind,
        Router::new()
            .route("/create", post(create))
            .route("/update/{id}", post(update))
            .route("/delete/{id}", post(delete)),
    )
    .await;
    let id = f.post("/create").await;
    f.post(&format!("/update/{id}")).await;
    f.post(&format!("/delete/{id}")).await;
    assert_eq!(row(&f.db, id.parse().unwrap()).await, None);

    let actions = f.actions().await;
    assert_eq!(actions.len(), 3, "{actions:#?}");
    let (create, update, delete) = (&actions[0], &actions[1], &actions[2]);
    let id_num: i64 = id.parse().unwrap();
    let first = doc! { "id": id_num, "question": "What's up?", "votes": 1, "closed": false };
    let second = doc! { "id": id_num, "question": "What's new?", "votes": 2, "closed": false };

    assert_eq!(create.action, Action::Create);
    assert_eq!(create.model.full_name, "sea_orm_hooks::poll::Model");
    assert_eq!(create.instance.id, id);
    assert_eq!(create.instance.description, "What's up?");
    assert_eq!(create.content.old, doc! {});
    assert_eq!(create.content.new, first, "skipped fields stay out");

    assert_eq!(update.action, Action::Update);
    assert_eq!(update.content.old, first);
    assert_eq!(update.content.new, second);
    assert_eq!(
        update.content.changes,
        doc! {
            "question": { "old": "What's up?", "new": "What's new?" },
            "votes": { "old": 1, "new": 2 },
        }
    );

    assert_eq!(delete.action, Action::Delete);
    assert_eq!(
        delete.content.old, second,
        "the whole row, though only its id was known"
    );
    assert_eq!(delete.content.new, doc! {});

    for (m, path) in actions.iter().zip([
        "/create".to_owned(),
        format!("/update/{id}"),
        format!("/delete/{id}"),
    ]) {
        assert_eq!(m.access, Some(f.access(&path).await.id), "{path}");
    }
    f.stop().await;
}

async fn row_or_500(db: &DatabaseConnection, id: i64) -> Result<poll::Model, Failed> {
    poll::Entity::find_by_id(id)
        .one(db)
        .await
        .map_err(failed)?
        .ok_or_else(|| failed(format!("no poll {id}")))
}

/// The caller sets one field; the action still holds the whole old and new row, with exactly that
/// field changed.
async fn an_update_of_one_field_diffs_against_the_whole_stored_row(kind: &str) {
    async fn vote(State(db): State<DatabaseConnection>, Path(id): Path<i64>) -> Result<(), Failed> {
        poll::ActiveModel {
            id: Set(id),
            votes: Set(8),
            ..Default::default()
        }
        .update(&db)
        .await
        .map_err(failed)?;
        Ok(())
    }
    let f = fixture(kind, Router::new().route("/vote/{id}", post(vote))).await;
    // Stored outside any request: no auditor is current there, so nothing is recorded.
    let stored = new_poll("Tea or coffee?", 7).insert(&f.db).await.unwrap();
    assert_eq!(f.actions().await.len(), 0);
    f.post(&format!("/vote/{}", stored.id)).await;
    let actions = f.actions().await;
    assert_eq!(actions.len(), 1);
    let m = &actions[0];
    assert_eq!(m.action, Action::Update);
    assert_eq!(
        m.content.old,
        doc! { "id": stored.id, "question": "Tea or coffee?", "votes": 7, "closed": false }
    );
    assert_eq!(
        m.content.new,
        doc! { "id": stored.id, "question": "Tea or coffee?", "votes": 8, "closed": false }
    );
    assert_eq!(m.content.changes, doc! { "votes": { "old": 7, "new": 8 } });
    f.stop().await;
}

/// Saving the values a row already has records nothing; nor does a change to a skipped field.
/// A real change after them is the one action.
async fn an_update_that_changes_nothing_records_nothing(kind: &str) {
    async fn touch(
        State(db): State<DatabaseConnection>,
        Path(id): Path<i64>,
    ) -> Result<(), Failed> {
        let stored = row_or_500(&db, id).await?;
        let mut am: poll::ActiveModel = stored.clone().into();
        am.question = Set(stored.question.clone());
        am.votes = Set(stored.votes);
        am.update(&db).await.map_err(failed)?;
        let mut am: poll::ActiveModel = stored.clone().into();
        am.views = Set(99);
        am.update(&db).await.map_err(failed)?;
        // Then a real change, the only action.
        let mut am: poll::ActiveModel = stored.clone().into();
        am.votes = Set(stored.votes + 1);
        am.update(&db).await.map_err(failed)?;
        Ok(())
    }
    let f = fixture(kind, Router::new().route("/touch/{id}", post(touch))).await;
    let stored = new_poll("Same?", 3).insert(&f.db).await.unwrap();
    f.post(&format!("/touch/{}", stored.id)).await;
    assert_eq!(
        row(&f.db, stored.id).await.unwrap().views,
        99,
        "it did write"
    );
    let actions = f.actions().await;
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert_eq!(
        actions[0].content.changes,
        doc! { "votes": { "old": 3, "new": 4 } }
    );
    f.stop().await;
}

/// Inserts, updates and deletes in a transaction that rolls back leave nothing in the trail (nor
/// in the database).
async fn a_rolled_back_transaction_records_nothing(kind: &str) {
    async fn attempt(State(db): State<DatabaseConnection>) -> Result<(), Failed> {
        let kept = new_poll("Kept", 1).insert(&db).await.map_err(failed)?;
        let res = transaction(&db, |txn| {
            Box::pin(async move {
                let m = new_poll("Never", 1).insert(txn).await?;
                let mut am: poll::ActiveModel = m.into();
                am.votes = Set(5);
                am.update(txn).await?;
                kept.delete(txn).await?;
                Err::<(), _>(RollBack)
            })
        })
        .await;
        assert!(matches!(res, Err(TransactionError::Transaction(RollBack))));
        Ok(())
    }
    let f = fixture(kind, Router::new().route("/attempt", post(attempt))).await;
    f.post("/attempt").await;
    let all = poll::Entity::find().all(&f.db).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.question.as_str()).collect::<Vec<_>>(),
        ["Kept"]
    );
    let actions = f.actions().await;
    assert_eq!(actions.len(), 1, "only the insert outside the transaction");
    assert_eq!(actions[0].action, Action::Create);
    assert_eq!(actions[0].instance.description, "Kept");
    f.stop().await;
}

/// A committed transaction's actions are recorded once each, in statement order, linked to the
/// request's access, and not before the commit.
async fn a_committed_transaction_records_each_action_once_in_order_at_commit(kind: &str) {
    async fn work(State(db): State<DatabaseConnection>) -> Result<String, Failed> {
        let auditor = Auditor::current().unwrap();
        let before_commit = transaction(&db, |txn| {
            let auditor = auditor.clone();
            Box::pin(async move {
                let a = new_poll("A", 0).insert(txn).await?;
                let b = new_poll("B", 0).insert(txn).await?;
                let mut am: poll::ActiveModel = a.clone().into();
                am.votes = Set(1);
                am.update(txn).await?;
                b.delete(txn).await?;
                auditor.flush().await;
                let stored = ModelAction::objects()
                    .fetch(auditor.store().unwrap())
                    .await
                    .unwrap();
                Ok::<_, DbErr>(stored.len())
            })
        })
        .await
        .map_err(failed)?;
        Ok(before_commit.to_string())
    }
    let f = fixture(kind, Router::new().route("/work", post(work))).await;
    assert_eq!(
        f.post("/work").await,
        "0",
        "nothing is stored before the commit"
    );
    let actions = f.actions().await;
    let seen: Vec<(Action, &str)> = actions
        .iter()
        .map(|m| (m.action, m.instance.description.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (Action::Create, "A"),
            (Action::Create, "B"),
            (Action::Update, "A"),
            (Action::Delete, "B"),
        ]
    );
    let access = f.access("/work").await;
    for m in &actions {
        assert_eq!(m.access, Some(access.id));
    }
    assert_eq!(
        actions[2].content.changes,
        doc! { "votes": { "old": 0, "new": 1 } }
    );
    f.stop().await;
}

/// A nested transaction's actions wait for the outer one: an inner rollback drops only its own, an
/// outer rollback drops everything, even what an inner transaction committed.
async fn nested_transactions_record_only_what_the_outermost_commits(kind: &str) {
    async fn nest(State(db): State<DatabaseConnection>, Path(commit): Path<bool>) -> String {
        let res = transaction(&db, |outer| {
            Box::pin(async move {
                new_poll("outer", 0).insert(outer).await?;
                transaction(outer, |inner| {
                    Box::pin(async move {
                        new_poll("inner committed", 0).insert(inner).await?;
                        Ok::<_, RollBack>(())
                    })
                })
                .await
                .unwrap();
                let dropped = transaction(outer, |inner| {
                    Box::pin(async move {
                        new_poll("inner rolled back", 0).insert(inner).await?;
                        Err::<(), _>(RollBack)
                    })
                })
                .await;
                assert!(dropped.is_err());
                if commit {
                    Ok(())
                } else {
                    Err(RollBack)
                }
            })
        })
        .await;
        format!("{}", res.is_ok())
    }
    let f = fixture(kind, Router::new().route("/nest/{commit}", post(nest))).await;
    assert_eq!(f.post("/nest/false").await, "false");
    assert_eq!(f.actions().await, vec![]);
    assert_eq!(f.post("/nest/true").await, "true");
    let actions = f.actions().await;
    let seen: Vec<&str> = actions
        .iter()
        .map(|m| m.instance.description.as_str())
        .collect();
    assert_eq!(seen, ["outer", "inner committed"]);
    let questions: Vec<String> = poll::Entity::find()
        .all(&f.db)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.question)
        .collect();
    assert_eq!(questions, ["outer", "inner committed"]);
    f.stop().await;
}

/// A transaction whose future is dropped before it ends (a timeout, a client gone) rolls back, and
/// its actions go with it: a later transaction records only its own.
async fn a_cancelled_transaction_records_nothing(kind: &str) {
    async fn cancel(State(db): State<DatabaseConnection>) -> String {
        let slow = transaction(&db, |txn| {
            Box::pin(async move {
                new_poll("cancelled", 0).insert(txn).await?;
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, DbErr>(())
            })
        });
        let timed_out = tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err();
        transaction(&db, |txn| {
            Box::pin(async move {
                new_poll("after", 0).insert(txn).await?;
                Ok::<_, DbErr>(())
            })
        })
        .await
        .unwrap();
        timed_out.to_string()
    }
    let f = fixture(kind, Router::new().route("/cancel", post(cancel))).await;
    assert_eq!(f.post("/cancel").await, "true");
    let actions = f.actions().await;
    let seen: Vec<&str> = actions
        .iter()
        .map(|m| m.instance.description.as_str())
        .collect();
    assert_eq!(seen, ["after"]);
    f.stop().await;
}

/// Requests running at once, each writing in and out of transactions with pauses in between, get
/// exactly their own actions linked to their own access.
async fn concurrent_requests_keep_their_own_actions(kind: &str) {
    async fn pair(State(db): State<DatabaseConnection>, Path(i): Path<i32>) -> Result<(), Failed> {
        let m = transaction(&db, |txn| {
            Box::pin(async move {
                let m = new_poll(&format!("q{i}"), 0).insert(txn).await?;
                tokio::task::yield_now().await;
                let mut am: poll::ActiveModel = m.into();
                am.votes = Set(i + 1);
                am.update(txn).await
            })
        })
        .await
        .map_err(failed)?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut am: poll::ActiveModel = m.into();
        am.closed = Set(true);
        am.update(&db).await.map_err(failed)?;
        Ok(())
    }
    let f = fixture(kind, Router::new().route("/pair/{i}", post(pair))).await;
    let n = 16;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, url) = (f.client.clone(), format!("{}/pair/{i}", f.base));
        tasks.push(tokio::spawn(async move {
            client.post(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_success());
    }
    let actions = f.actions().await;
    assert_eq!(actions.len(), 3 * n as usize);
    for i in 0..n {
        let access = f.access(&format!("/pair/{i}")).await;
        let mine: Vec<&ModelAction> = actions
            .iter()
            .filter(|m| m.access == Some(access.id))
            .collect();
        let seen: Vec<(Action, String)> = mine
            .iter()
            .map(|m| (m.action, m.instance.description.clone()))
            .collect();
        let q = format!("q{i}");
        assert_eq!(
            seen,
            [
                (Action::Create, q.clone()),
                (Action::Update, q.clone()),
                (Action::Update, q)
            ],
            "request {i}"
        );
        assert_eq!(
            mine[1].content.changes,
            doc! { "votes": { "old": 0, "new": i + 1 } }
        );
        assert_eq!(
            mine[2].content.changes,
            doc! { "closed": { "old": false, "new": true } }
        );
    }
    f.stop().await;
}

/// `update_many` bypasses the hooks; the explicit call records it, with the transaction's rule,
/// and an entity without the hooks records nothing.
async fn bulk_statements_are_recorded_with_the_explicit_call(kind: &str) {
    async fn close_all(
        State(db): State<DatabaseConnection>,
        Path(commit): Path<bool>,
    ) -> Result<(), Failed> {
        let res = transaction(&db, |txn| {
            Box::pin(async move {
                let open = poll::Column::Closed.eq(false);
                let before = poll::Entity::find().filter(open.clone()).all(txn).await?;
                poll::Entity::update_many()
                    .col_expr(poll::Column::Closed, Expr::value(true))
                    .filter(open)
                    .exec(txn)
                    .await?;
                for old in before {
                    let new = poll::Model {
                        closed: true,
                        ..old.clone()
                    };
                    record_update(txn, &old, &new).await;
                }
                if commit {
                    Ok(())
                } else {
                    Err(RollBack)
                }
            })
        })
        .await;
        assert_eq!(res.is_ok(), commit);
        Ok(())
    }
    async fn silent(State(db): State<DatabaseConnection>) -> Result<(), Failed> {
        poll::Entity::update_many()
            .col_expr(poll::Column::Votes, Expr::value(100))
            .exec(&db)
            .await
            .map_err(failed)?;
        note::ActiveModel {
            text: Set("unaudited".into()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .map_err(failed)?;
        Ok(())
    }
    let f = fixture(
        kind,
        Router::new()
            .route("/close/{commit}", post(close_all))
            .route("/silent", post(silent)),
    )
    .await;
    let a = new_poll("a", 1).insert(&f.db).await.unwrap();
    let b = new_poll("b", 2).insert(&f.db).await.unwrap();
    f.post("/silent").await;
    assert_eq!(row(&f.db, a.id).await.unwrap().votes, 100);
    assert_eq!(
        f.actions().await,
        vec![],
        "bulk statements bypass the hooks"
    );
    f.post("/close/false").await;
    assert_eq!(f.actions().await, vec![], "rolled back");
    f.post("/close/true").await;
    let actions = f.actions().await;
    let access = f.access("/close/true").await;
    assert_eq!(actions.len(), 2);
    for (m, p) in actions.iter().zip([&a, &b]) {
        assert_eq!(m.action, Action::Update);
        assert_eq!(m.instance.id, p.id.to_string());
        assert_eq!(m.access, Some(access.id));
        assert_eq!(
            m.content.changes,
            doc! { "closed": { "old": false, "new": true } }
        );
        assert_eq!(m.content.old.get("votes"), Some(&Bson::Int32(100)));
    }
    f.stop().await;
}

/// For data layers without hooks (raw SQL here): the guard snapshots the row as loaded and records
/// the update from it once saved; a save that changed nothing records nothing; a delete records
/// the row as it was stored.
async fn the_tracked_guard_records_updates_from_the_loaded_state(kind: &str) {
    let f = fixture(kind, Router::new()).await;
    f.db.execute_unprepared(
        "INSERT INTO poll (id, question, votes, closed, views) VALUES (5, 'Raw?', 1, 0, 0)",
    )
    .await
    .unwrap();
    let mut p = Tracked::new(row(&f.db, 5).await.unwrap());
    assert!(!p.is_changed());
    p.votes += 1;
    p.question = "Raw!".into();
    assert!(p.is_changed());
    f.db.execute_unprepared("UPDATE poll SET votes = 2, question = 'Raw!' WHERE id = 5")
        .await
        .unwrap();
    let id = p.saved(&f.auditor).await.expect("recorded");
    assert_eq!(p.saved(&f.auditor).await, None, "nothing changed since");
    p.closed = true;
    p.saved(&f.auditor).await.expect("recorded");
    f.db.execute_unprepared("DELETE FROM poll WHERE id = 5")
        .await
        .unwrap();
    p.deleted(&f.auditor).await.expect("recorded");
    let actions = f.actions().await;
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[0].id, id);
    assert_eq!(
        actions[0].content.changes,
        doc! {
            "question": { "old": "Raw?", "new": "Raw!" },
            "votes": { "old": 1, "new": 2 },
        }
    );
    assert_eq!(
        actions[1].content.changes,
        doc! { "closed": { "old": false, "new": true } }
    );
    assert_eq!(actions[2].action, Action::Delete);
    assert_eq!(
        actions[2].content.old,
        doc! { "id": 5_i64, "question": "Raw!", "votes": 2, "closed": true }
    );
    f.stop().await;
}
