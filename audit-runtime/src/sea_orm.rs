//! Model actions recorded by SeaORM's own hooks: one line in an entity's
//! `impl ActiveModelBehavior for ActiveModel` and every insert, update and delete made through its
//! ActiveModel is recorded, with its old and new state and the changes, linked to the access of the
//! request being served, and only once it has committed. Nobody has to remember a call.
//!
//! ```no_run
//! mod poll {
//!     use sea_orm::entity::prelude::*;
//!
//!     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
//!     #[sea_orm(table_name = "poll")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i64,
//!         pub question: String,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {
//!         audit_runtime::sea_orm::audit_hooks!();
//!     }
//!
//!     impl std::fmt::Display for Model {
//!         fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!             f.write_str(&self.question)
//!         }
//!     }
//! }
//!
//! # async fn handler(db: sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
//! use sea_orm::{ActiveModelTrait, Set};
//!
//! // Recorded once the statement has run (there is no transaction to wait for).
//! let created = poll::ActiveModel { question: Set("What's up?".into()), ..Default::default() }
//!     .insert(&db)
//!     .await?;
//!
//! // Recorded when the transaction commits; nothing is recorded if it rolls back.
//! audit_runtime::sea_orm::transaction(&db, |txn| {
//!     Box::pin(async move {
//!         let mut poll: poll::ActiveModel = created.into();
//!         poll.question = Set("What's new?".into());
//!         poll.update(txn).await
//!     })
//! })
//! .await
//! .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
//! # Ok(())
//! # }
//! ```
//!
//! # What is recorded
//! - **insert**: the row as stored (what SeaORM returns), after the statement.
//! - **update**: the old row is loaded in `before_save`, through the same connection or
//!   transaction, so the changes are exact even when the caller set only some fields; an update
//!   that changes nothing records nothing.
//! - **delete**: the row is loaded in `before_delete`, the same way, and recorded as it was.
//!
//! Nothing is loaded for a model the auditor does not record (auditing off, or the model not among
//! `logged_models`). The records go to [`Auditor::current`]: the request's auditor, else the
//! global one.
//!
//! # Transactions: only what commits is recorded
//! Writes made through a transaction opened with [`transaction`] wait in a buffer tied to that
//! transaction: they are submitted in order when it commits and dropped when it rolls back (or is
//! dropped uncommitted: a panic, a cancelled request). A [`transaction`] opened inside another one
//! hands its actions to the outer one when it commits.
//!
//! Every other write is recorded per statement, right after it: writes on the connection itself
//! (each its own transaction) and, take care, writes in a transaction opened with SeaORM's own
//! `begin` or `transaction`, whose commit or rollback this crate cannot see (a warning says so,
//! once per process). Open transactions that write audited models with [`transaction`].
//!
//! # What bypasses the hooks
//! SeaORM runs these hooks for the ActiveModel API only: `ActiveModel::insert`, `update`, `save`
//! and `delete`, and `Model::delete`. Statements built on the entity (`Entity::insert(..).exec`,
//! `Entity::update(..).exec`, `Entity::delete_by_id`, `insert_many`, `update_many`,
//! `delete_many`), `update_without_returning` (which runs no hook after the statement) and raw
//! SQL are not seen. Record those with [`record_create`], [`record_update`] and
//! [`record_delete`], which follow the same transaction rule:
//!
//! ```no_run
//! # mod poll {
//! #     use sea_orm::entity::prelude::*;
//! #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
//! #     #[sea_orm(table_name = "poll")]
//! #     pub struct Model { #[sea_orm(primary_key)] pub id: i64, pub closed: bool }
//! #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! #     pub enum Relation {}
//! #     impl ActiveModelBehavior for ActiveModel { audit_runtime::sea_orm::audit_hooks!(); }
//! #     impl std::fmt::Display for Model {
//! #         fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}", self.id) }
//! #     }
//! # }
//! # async fn close_all(txn: &sea_orm::DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
//! use sea_orm::sea_query::Expr;
//! use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
//!
//! let open = poll::Column::Closed.eq(false);
//! let before = poll::Entity::find().filter(open.clone()).all(txn).await?;
//! poll::Entity::update_many()
//!     .col_expr(poll::Column::Closed, Expr::value(true))
//!     .filter(open)
//!     .exec(txn)
//!     .await?;
//! for old in before {
//!     let new = poll::Model { closed: true, ..old.clone() };
//!     audit_runtime::sea_orm::record_update(txn, &old, &new).await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Hooks of your own
//! [`audit_hooks!`] defines all four hooks. An entity that needs hooks of its own calls
//! [`before_save`], [`after_save`], [`before_delete`] and [`after_delete`] from them instead
//! (each takes and returns what the hook does), in an impl marked `#[async_trait::async_trait]`
//! as SeaORM asks.

use crate::document::{Action, ModelAction};
use crate::model::{diff_snapshots, Audited, Snapshot};
use crate::Auditor;
use ::sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait,
    Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter, TransactionError, TransactionSession,
    TransactionTrait,
};
use bson::oid::ObjectId;
use std::any::{type_name, Any};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The model of an ActiveModel.
type ModelOf<A> = <<A as ActiveModelTrait>::Entity as EntityTrait>::Model;

// === transactions ===

/// A connection as the hooks see it: its address and its type. A transaction stays borrowed for
/// as long as it is registered, so its address can neither change nor be taken by another value
/// meanwhile; the type tells it from a value that shares its address (a struct that holds it
/// first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    addr: usize,
    ty: &'static str,
}

fn key_of<C>(conn: &C) -> ConnKey {
    ConnKey {
        addr: conn as *const C as usize,
        ty: type_name::<C>(),
    }
}

/// A model action waiting for its transaction, with the auditor it goes to.
struct Pending {
    auditor: Auditor,
    action: ModelAction,
}

/// The buffers of the transactions opened with [`transaction`] and not yet ended.
static OPEN: LazyLock<Mutex<HashMap<ConnKey, Vec<Pending>>>> = LazyLock::new(Default::default);

fn open() -> MutexGuard<'static, HashMap<ConnKey, Vec<Pending>>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registration of one open transaction: its buffer goes away with it, whatever ends it (an
/// error, a panic, a dropped future), so nothing it buffered is ever recorded unless
/// [`Registration::take`] handed it over for a commit.
struct Registration(ConnKey);

impl Registration {
    fn new(key: ConnKey) -> Self {
        open().insert(key, Vec::new());
        Registration(key)
    }

    /// The buffered actions, in order; the transaction is no longer registered.
    fn take(self) -> Vec<Pending> {
        open().remove(&self.0).unwrap_or_default()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        open().remove(&self.0);
    }
}

/// Runs `callback` in a transaction on `db`, like SeaORM's `TransactionTrait::transaction`:
/// committed when it returns `Ok`, rolled back when it returns `Err`. The model actions of the
/// writes made through the transaction are recorded when it commits, in order, and never when it
/// rolls back. Called with a transaction as `db`, it opens a nested one (a savepoint) whose
/// actions join the outer transaction's when it commits.
pub async fn transaction<C, F, T, E>(db: &C, callback: F) -> Result<T, TransactionError<E>>
where
    C: TransactionTrait,
    F: for<'c> FnOnce(
            &'c C::Transaction,
        ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
        + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let txn = db.begin().await.map_err(TransactionError::Connection)?;
    let registration = Registration::new(key_of(&txn));
    let result = callback(&txn).await;
    // The buffer leaves the registry before the transaction ends: once ended, its address may be
    // another transaction's.
    let pending = registration.take();
    match result {
        Ok(value) => {
            txn.commit().await.map_err(TransactionError::Connection)?;
            committed(key_of(db), pending).await;
            Ok(value)
        }
        Err(e) => {
            txn.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(e))
        }
    }
}

/// Hands the actions of a committed transaction to the one it was opened in, if that one is open,
/// else submits them.
async fn committed(outer: ConnKey, pending: Vec<Pending>) {
    let pending = match open().get_mut(&outer) {
        Some(buffer) => {
            buffer.extend(pending);
            return;
        }
        None => pending,
    };
    for p in pending {
        p.auditor.record_model_action(p.action).await;
    }
}

/// Records `action` of `obj` through the current auditor: into the buffer of the transaction `db`
/// is, else at once.
async fn record<C, M: Audited>(
    db: &C,
    action: Action,
    old: Snapshot,
    new: Snapshot,
    obj: &M,
) -> Option<ObjectId> {
    let auditor = Auditor::current()?;
    let model_action = auditor.model_action(action, old, new, obj)?;
    let id = model_action.id;
    let key = key_of(db);
    let model_action = {
        let mut open = open();
        match open.get_mut(&key) {
            Some(buffer) => {
                buffer.push(Pending {
                    auditor,
                    action: model_action,
                });
                return Some(id);
            }
            None => model_action,
        }
    };
    if key.ty == type_name::<DatabaseTransaction>() {
        warn_unseen_transaction();
    }
    auditor.record_model_action(model_action).await;
    Some(id)
}

fn warn_unseen_transaction() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            target: "audit",
            "a model was written in a transaction not opened with audit_runtime::sea_orm::transaction: \
             its action is recorded now, and stays recorded if the transaction rolls back"
        );
    });
}

/// Records the creation of `obj`, written through `db` by a statement the hooks do not see (see
/// the [module docs](self)): at once, or when `db`'s transaction commits.
pub async fn record_create<C, M: Audited>(db: &C, obj: &M) -> Option<ObjectId> {
    record(
        db,
        Action::Create,
        Snapshot::default(),
        obj.audit_snapshot(),
        obj,
    )
    .await
}

/// Records the update of a row from `old` to `new`, written through `db` by a statement the hooks
/// do not see: at once, or when `db`'s transaction commits. Nothing is recorded when nothing
/// changed.
pub async fn record_update<C, M: Audited>(db: &C, old: &M, new: &M) -> Option<ObjectId> {
    let (old, snapshot) = (old.audit_snapshot(), new.audit_snapshot());
    if diff_snapshots(&old, &snapshot).is_empty() {
        return None;
    }
    record(db, Action::Update, old, snapshot, new).await
}

/// Records the deletion of `obj`, deleted through `db` by a statement the hooks do not see: at
/// once, or when `db`'s transaction commits.
pub async fn record_delete<C, M: Audited>(db: &C, obj: &M) -> Option<ObjectId> {
    record(
        db,
        Action::Delete,
        obj.audit_snapshot(),
        Snapshot::default(),
        obj,
    )
    .await
}

// === the hooks ===

/// What a `before_*` hook loaded, for the `after_*` hook of the same statement: keyed by the task,
/// the connection, the model and its primary key, so that statements running at once never take
/// each other's rows.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LoadKey {
    task: Option<tokio::task::Id>,
    conn: ConnKey,
    model: &'static str,
    primary_key: String,
    delete: bool,
}

impl LoadKey {
    fn new<C, M>(db: &C, primary_key: &::sea_orm::sea_query::ValueTuple, delete: bool) -> Self {
        LoadKey {
            task: tokio::task::try_id(),
            conn: key_of(db),
            model: type_name::<M>(),
            primary_key: format!("{primary_key:?}"),
            delete,
        }
    }
}

/// The old rows loaded by `before_*` hooks whose statement has not finished, with when.
type Loaded = HashMap<LoadKey, (Instant, Box<dyn Any + Send>)>;

static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(Default::default);

/// A statement whose `after_*` hook never runs (it failed, or it was an
/// `update_without_returning`) leaves its row behind; past this many rows, those older than
/// [`LOADED_MAX_AGE`] are dropped.
const LOADED_PRUNE_AT: usize = 1024;
const LOADED_MAX_AGE: Duration = Duration::from_secs(600);

fn loaded() -> MutexGuard<'static, Loaded> {
    LOADED.lock().unwrap_or_else(|p| p.into_inner())
}

fn keep_loaded<M: Send + 'static>(key: LoadKey, old: M) {
    let mut loaded = loaded();
    if loaded.len() >= LOADED_PRUNE_AT {
        let now = Instant::now();
        loaded.retain(|_, (at, _)| now.duration_since(*at) < LOADED_MAX_AGE);
    }
    loaded.insert(key, (Instant::now(), Box::new(old)));
}

fn take_loaded<M: 'static>(key: &LoadKey) -> Option<M> {
    let (_, old) = loaded().remove(key)?;
    old.downcast().ok().map(|b| *b)
}

/// True when the current auditor records `M`: otherwise nothing is loaded.
fn recorded<M: Audited>() -> bool {
    Auditor::current().is_some_and(|a| a.records::<M>())
}

/// The stored row `am` names by its primary key, through `db`.
async fn load<A, C>(am: &A, db: &C) -> Result<Option<ModelOf<A>>, DbErr>
where
    A: ActiveModelTrait,
    C: ConnectionTrait,
{
    let mut select = <A::Entity as EntityTrait>::find();
    for key in <<A::Entity as EntityTrait>::PrimaryKey as Iterable>::iter() {
        let column = key.into_column();
        let Some(value) = am.get(column).into_value() else {
            return Ok(None);
        };
        select = select.filter(column.eq(value));
    }
    select.one(db).await
}

/// `before_save`: before an update, loads the row as stored, for [`after_save`] to diff against.
pub async fn before_save<A, C>(am: A, db: &C, insert: bool) -> Result<A, DbErr>
where
    A: ActiveModelTrait,
    C: ConnectionTrait,
    ModelOf<A>: Audited + 'static,
{
    if insert || !recorded::<ModelOf<A>>() {
        return Ok(am);
    }
    if let Some(primary_key) = am.get_primary_key_value() {
        if let Some(old) = load(&am, db).await? {
            keep_loaded(LoadKey::new::<C, ModelOf<A>>(db, &primary_key, false), old);
        }
    }
    Ok(am)
}

/// `after_save`: records the insert, or the update against the row [`before_save`] loaded
/// (nothing when no field changed).
pub async fn after_save<M, C>(model: M, db: &C, insert: bool) -> Result<M, DbErr>
where
    M: ModelTrait + Audited + 'static,
    C: ConnectionTrait,
{
    if insert {
        record_create(db, &model).await;
        return Ok(model);
    }
    let key = LoadKey::new::<C, M>(db, &model.get_primary_key_value(), false);
    if let Some(old) = take_loaded::<M>(&key) {
        record_update(db, &old, &model).await;
    }
    Ok(model)
}

/// `before_delete`: loads the row as stored, for [`after_delete`] to record.
pub async fn before_delete<A, C>(am: A, db: &C) -> Result<A, DbErr>
where
    A: ActiveModelTrait,
    C: ConnectionTrait,
    ModelOf<A>: Audited + 'static,
{
    if !recorded::<ModelOf<A>>() {
        return Ok(am);
    }
    if let Some(primary_key) = am.get_primary_key_value() {
        if let Some(old) = load(&am, db).await? {
            keep_loaded(LoadKey::new::<C, ModelOf<A>>(db, &primary_key, true), old);
        }
    }
    Ok(am)
}

/// `after_delete`: records the deletion of the row [`before_delete`] loaded.
pub async fn after_delete<A, C>(am: A, db: &C) -> Result<A, DbErr>
where
    A: ActiveModelTrait,
    C: ConnectionTrait,
    ModelOf<A>: Audited + 'static,
{
    if let Some(primary_key) = am.get_primary_key_value() {
        let key = LoadKey::new::<C, ModelOf<A>>(db, &primary_key, true);
        if let Some(old) = take_loaded::<ModelOf<A>>(&key) {
            record_delete(db, &old).await;
        }
    }
    Ok(am)
}

/// Defines the four hooks of `ActiveModelBehavior` so that every insert, update and delete made
/// through the ActiveModel is recorded (see the [module docs](self)). Use it inside the impl,
/// with no `#[async_trait]` on it:
///
/// ```no_run
/// # mod poll {
/// use sea_orm::entity::prelude::*;
///
/// #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
/// #[sea_orm(table_name = "poll")]
/// pub struct Model {
///     #[sea_orm(primary_key)]
///     pub id: i64,
///     pub question: String,
/// }
/// # #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// # pub enum Relation {}
///
/// impl ActiveModelBehavior for ActiveModel {
///     audit_runtime::sea_orm::audit_hooks!();
/// }
/// # }
/// ```
///
/// The entity's `Model` must implement [`Audited`] (`#[derive(Audited)]` beside
/// `DeriveEntityModel`; `#[sea_orm(...)]` attributes are left to SeaORM).
#[doc(inline)]
pub use crate::__audit_sea_orm_hooks as audit_hooks;

// The methods are written as `#[async_trait]` writes the trait's (SeaORM declares it with
// `#[async_trait]`): a macro inside an impl is expanded after any attribute on that impl has run,
// so the attribute could not rewrite them.
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_sea_orm_hooks {
    () => {
        fn before_save<'life0, 'async_trait, C>(
            self,
            db: &'life0 C,
            insert: bool,
        ) -> ::core::pin::Pin<
            ::std::boxed::Box<
                dyn ::core::future::Future<
                        Output = ::core::result::Result<Self, $crate::sea_orm::__private::DbErr>,
                    > + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            C: 'async_trait + $crate::sea_orm::__private::ConnectionTrait,
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            ::std::boxed::Box::pin($crate::sea_orm::before_save(self, db, insert))
        }

        fn after_save<'life0, 'async_trait, C>(
            model: <<Self as $crate::sea_orm::__private::ActiveModelTrait>::Entity as $crate::sea_orm::__private::EntityTrait>::Model,
            db: &'life0 C,
            insert: bool,
        ) -> ::core::pin::Pin<
            ::std::boxed::Box<
                dyn ::core::future::Future<
                        Output = ::core::result::Result<
                            <<Self as $crate::sea_orm::__private::ActiveModelTrait>::Entity as $crate::sea_orm::__private::EntityTrait>::Model,
                            $crate::sea_orm::__private::DbErr,
                        >,
                    > + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            C: 'async_trait + $crate::sea_orm::__private::ConnectionTrait,
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            ::std::boxed::Box::pin($crate::sea_orm::after_save(model, db, insert))
        }

        fn before_delete<'life0, 'async_trait, C>(
            self,
            db: &'life0 C,
        ) -> ::core::pin::Pin<
            ::std::boxed::Box<
                dyn ::core::future::Future<
                        Output = ::core::result::Result<Self, $crate::sea_orm::__private::DbErr>,
                    > + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            C: 'async_trait + $crate::sea_orm::__private::ConnectionTrait,
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            ::std::boxed::Box::pin($crate::sea_orm::before_delete(self, db))
        }

        fn after_delete<'life0, 'async_trait, C>(
            self,
            db: &'life0 C,
        ) -> ::core::pin::Pin<
            ::std::boxed::Box<
                dyn ::core::future::Future<
                        Output = ::core::result::Result<Self, $crate::sea_orm::__private::DbErr>,
                    > + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            C: 'async_trait + $crate::sea_orm::__private::ConnectionTrait,
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            ::std::boxed::Box::pin($crate::sea_orm::after_delete(self, db))
        }
    };
}

// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use ::sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait};
}
