//! The [`Auditor`]: the configured store, the writer, the process, and the recording API for
//! accesses and model actions. One per application; the HTTP layer, the macros and the model
//! API all go through it. [`Auditor::install_global`] makes it the one used outside requests.

use crate::config::AuditConfig;
use crate::context::{self, RequestState};
use crate::document::{
    Access, AccessRequest, AccessTime, AccessView, Action, ModelAction, ModelActionContent,
    ModelActionInstance, ModelActionModel,
};
use crate::model::{diff_snapshots, finalize_masks, Audited, Snapshot};
use crate::process::ProcessInfo;
use crate::registry::{self, RegistryError};
use crate::store::{Store, StoreError};
use crate::writer::{self, MetricsSnapshot, Record, Writer, WriterGuard};
use bson::oid::ObjectId;
use chrono::Utc;
use std::sync::{Arc, Mutex, RwLock};

/// Why the auditor could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened or prepared.
    #[error("audit store {connection}: {source}")]
    Store {
        /// The connection (password hidden).
        connection: String,
        /// The failure.
        source: Box<StoreError>,
    },
    /// `logged_models` names an unknown model.
    #[error("logged_models: {0}")]
    Registry(#[from] RegistryError),
    /// `seal_key_file` cannot be read as a signing key.
    #[error("seal_key_file: {0}")]
    SealKey(#[from] crate::seal::KeyError),
    /// `custom_provider` names a provider that was not registered.
    #[error(
        "custom_provider.{app}: no provider named `{name}` is registered (registered: {known})"
    )]
    UnknownProvider {
        /// The app key.
        app: String,
        /// The provider name.
        name: String,
        /// The registered names.
        known: String,
    },
}

/// A custom provider: called once per audited request at response or exception time; its
/// result is stored under `custom.<key>`. Null and empty results are dropped; a provider that
/// fails or panics is logged and counted and never stops the record.
#[cfg(feature = "http")]
pub type ProviderFn = Arc<dyn Fn(&crate::http::ProviderContext<'_>) -> bson::Bson + Send + Sync>;

/// The application's audit recorder. Cheap to clone.
#[derive(Clone)]
pub struct Auditor(Arc<Inner>);

struct Inner {
    config: AuditConfig,
    /// `None` when auditing is off: nothing is opened.
    active: Option<Active>,
    #[cfg(feature = "http")]
    providers: Vec<(String, ProviderFn)>,
}

struct Active {
    store: Store,
    writer: Writer,
    /// The stored process of this pid (recomputed after a fork: a child is a process of its own).
    process: Mutex<Option<(u32, ObjectId)>>,
}

static GLOBAL: RwLock<Option<Auditor>> = RwLock::new(None);

/// Builds an [`Auditor`]: the configuration plus the providers registered in code.
pub struct AuditorBuilder {
    config: AuditConfig,
    #[cfg(feature = "http")]
    providers: Vec<(String, ProviderFn)>,
}

impl AuditorBuilder {
    /// Registers a custom provider under `name`. With no `custom_provider` setting every registered
    /// provider is used under its own name; with the setting, only those it names, under its keys.
    #[cfg(feature = "http")]
    pub fn provider<F, V>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(&crate::http::ProviderContext<'_>) -> V + Send + Sync + 'static,
        V: Into<bson::Bson>,
    {
        self.providers
            .push((name.to_owned(), Arc::new(move |ctx| f(ctx).into())));
        self
    }

    /// Opens the store (ensuring its indexes), stores the process, registers `logged_models` and
    /// starts the writer. With `activate = false` nothing is opened and every call is a no-op.
    pub async fn start(self) -> Result<(Auditor, WriterGuard), AuditError> {
        let config = self.config;
        #[cfg(feature = "http")]
        let providers = select_providers(&config, self.providers)?;
        registry::register_models(&config)?;
        let store_err = |source| AuditError::Store {
            connection: config.db_connection.to_string(),
            source: Box::new(source),
        };
        let (active, guard) = if config.activate {
            let store = Store::connect(&config).await.map_err(store_err)?;
            let process = store
                .upsert_process(&ProcessInfo::current().to_process())
                .await
                .map_err(store_err)?;
            tracing::debug!(target: "audit", process = %process, "audit process stored");
            let sealing = if config.seal {
                let key = crate::seal::configured_key(&config)?;
                Some(writer::Sealing {
                    // A stream per writer, so that writers never coordinate, even two in one
                    // process; the seals also name the process they write for.
                    sealer: crate::seal::Sealer::new(ObjectId::new(), key),
                    process: process.id,
                    anchor_every: config.seal_anchor_every,
                })
            } else {
                None
            };
            let (writer, guard) = writer::spawn(store.clone(), &config, sealing);
            let active = Active {
                store,
                writer,
                process: Mutex::new(Some((std::process::id(), process.id))),
            };
            (Some(active), guard)
        } else {
            (None, writer::WriterGuard::inert())
        };
        let inner = Inner {
            config,
            active,
            #[cfg(feature = "http")]
            providers,
        };
        Ok((Auditor(Arc::new(inner)), guard))
    }
}

#[cfg(feature = "http")]
fn select_providers(
    config: &AuditConfig,
    registered: Vec<(String, ProviderFn)>,
) -> Result<Vec<(String, ProviderFn)>, AuditError> {
    if config.custom_provider.is_empty() {
        return Ok(registered);
    }
    config
        .custom_provider
        .iter()
        .map(|(app, name)| {
            registered
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| (app.clone(), f.clone()))
                .ok_or_else(|| AuditError::UnknownProvider {
                    app: app.clone(),
                    name: name.clone(),
                    known: registered
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        })
        .collect()
}

impl Auditor {
    /// A builder for `config`.
    pub fn builder(config: AuditConfig) -> AuditorBuilder {
        AuditorBuilder {
            config,
            #[cfg(feature = "http")]
            providers: Vec::new(),
        }
    }

    /// Starts an auditor with no providers (see [`AuditorBuilder::start`]).
    pub async fn start(config: AuditConfig) -> Result<(Auditor, WriterGuard), AuditError> {
        Self::builder(config).start().await
    }

    /// Makes this the auditor used outside requests (standalone audited calls, model actions in
    /// jobs).
    pub fn install_global(&self) {
        *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(self.clone());
    }

    /// The global auditor, if one is installed.
    pub fn global() -> Option<Auditor> {
        GLOBAL.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The auditor of the current request, else the global one.
    pub fn current() -> Option<Auditor> {
        context::current()
            .and_then(|s| s.auditor.clone())
            .or_else(Self::global)
    }

    /// The configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.0.config
    }

    /// True when auditing is on.
    pub fn is_active(&self) -> bool {
        self.0.active.is_some()
    }

    /// The store (`None` when auditing is off).
    pub fn store(&self) -> Option<&Store> {
        self.0.active.as_ref().map(|a| &a.store)
    }

    /// The writer's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.0
            .active
            .as_ref()
            .map(|a| a.writer.metrics())
            .unwrap_or_default()
    }

    /// Waits until everything submitted so far is stored.
    pub async fn flush(&self) {
        if let Some(a) = &self.0.active {
            a.writer.flush().await;
        }
    }

    #[cfg(feature = "http")]
    pub(crate) fn providers(&self) -> &[(String, ProviderFn)] {
        &self.0.providers
    }

    /// The stored process of this OS process.
    pub async fn process_id(&self) -> Option<ObjectId> {
        let active = self.0.active.as_ref()?;
        let pid = std::process::id();
        if let Some((p, id)) = *active.process.lock().unwrap_or_else(|p| p.into_inner()) {
            if p == pid {
                return Some(id);
            }
        }
        match active
            .store
            .upsert_process(&ProcessInfo::current().to_process())
            .await
        {
            Ok(stored) => {
                *active.process.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, stored.id));
                Some(stored.id)
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, "cannot store the process document");
                None
            }
        }
    }

    fn cached_process_id(&self) -> Option<ObjectId> {
        let active = self.0.active.as_ref()?;
        let cached = *active.process.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .filter(|(p, _)| *p == std::process::id())
            .map(|(_, id)| id)
    }

    /// Stores an access: in sync mode it is stored when this returns (or the wait timed out and it
    /// stays queued); in async mode it is only queued.
    pub async fn record_access(&self, mut access: Access) {
        let Some(active) = &self.0.active else { return };
        if access.process.is_none() {
            access.process = self.process_id().await;
        }
        match Record::access(&access) {
            Ok(record) => self.submit(active, record).await,
            Err(e) => active.writer.count_unencodable(&e),
        }
    }

    /// Queues an access from synchronous code (the end of a streamed body): never waits.
    #[cfg(feature = "http")]
    pub(crate) fn record_access_nowait(&self, mut access: Access) {
        let Some(active) = &self.0.active else { return };
        if access.process.is_none() {
            access.process = self.cached_process_id();
        }
        match Record::access(&access) {
            Ok(record) => active.writer.submit_blocking(record),
            Err(e) => active.writer.count_unencodable(&e),
        }
    }

    async fn submit(&self, active: &Active, record: Record) {
        let wait = !self.0.config.run_async;
        if let Some(ack) = active.writer.submit(record, wait).await {
            if tokio::time::timeout(self.0.config.flush_timeout, ack)
                .await
                .is_err()
            {
                tracing::warn!(target: "audit", "audit record not stored within flush_timeout; it stays queued");
            }
        }
    }

    /// Records the access of a standalone audited call (no HTTP request).
    pub(crate) fn record_standalone(&self, state: &RequestState) {
        let Some(active) = &self.0.active else { return };
        let inner = state.lock();
        if inner.disabled {
            return;
        }
        let Some(view) = inner.view else { return };
        let mut access_view =
            AccessView::new(view.full_name.clone(), view.app.clone(), view.name.clone());
        access_view.args = inner.args.clone();
        access_view.kwargs = inner.kwargs.clone();
        let access = Access {
            id: state.access_id,
            interlink_id: None,
            request: AccessRequest::new(""),
            response: None,
            exception: inner.exception.clone(),
            time: AccessTime {
                request: state.started,
                response: Some(Utc::now()),
            },
            view: access_view,
            user: inner.user.clone(),
            custom: (!inner.custom.is_empty()).then(|| inner.custom.clone()),
            process: self.cached_process_id(),
        };
        match Record::access(&access) {
            Ok(record) => active.writer.submit_blocking(record),
            Err(e) => active.writer.count_unencodable(&e),
        }
    }

    /// Records the creation of `obj`.
    pub async fn record_create<T: Audited>(&self, obj: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Create,
            Snapshot::default(),
            obj.audit_snapshot(),
            obj,
        )
        .await
    }

    /// Records an update from `old` to `new` (the previous value, as loaded before the update).
    pub async fn record_update<T: Audited>(&self, old: &T, new: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Update,
            old.audit_snapshot(),
            new.audit_snapshot(),
            new,
        )
        .await
    }

    /// Records an update of `new`, loading its previous value with `load_old` first (the stored
    /// state before the update). Without a previous value it is recorded as a create.
    pub async fn record_update_loading<T, F>(&self, new: &T, load_old: F) -> Option<ObjectId>
    where
        T: Audited,
        F: std::future::Future<Output = Option<T>>,
    {
        match load_old.await {
            Some(old) => self.record_update(&old, new).await,
            None => self.record_create(new).await,
        }
    }

    /// Records the deletion of `obj` (call it after the delete committed, so a rolled-back delete is never recorded).
    pub async fn record_delete<T: Audited>(&self, obj: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Delete,
            obj.audit_snapshot(),
            Snapshot::default(),
            obj,
        )
        .await
    }

    async fn record_action<T: Audited>(
        &self,
        action: Action,
        old: Snapshot,
        new: Snapshot,
        obj: &T,
    ) -> Option<ObjectId> {
        let active = self.0.active.as_ref()?;
        if !registry::is_recorded(T::MODEL.full_name, &self.0.config) {
            return None;
        }
        let mut changes = diff_snapshots(&old, &new).into_document();
        let (mut old, mut new) = (old.into_document(), new.into_document());
        for d in [&mut old, &mut new, &mut changes] {
            finalize_masks(d);
        }
        let model_action = ModelAction {
            id: ObjectId::new(),
            model: ModelActionModel {
                full_name: T::MODEL.full_name.to_owned(),
                app: T::MODEL.app.to_owned(),
                name: T::MODEL.name.to_owned(),
            },
            action,
            content: ModelActionContent { old, new, changes },
            instance: ModelActionInstance {
                id: obj.audit_id().unwrap_or_default(),
                description: obj.audit_description(),
            },
            timestamp: Utc::now(),
            access: context::current_access_id(),
            process: self.process_id().await,
        };
        let id = model_action.id;
        match Record::model_action(&model_action) {
            Ok(record) => self.submit(active, record).await,
            Err(e) => active.writer.count_unencodable(&e),
        }
        Some(id)
    }
}

/// Records the creation of `obj` through the current auditor (the request's, else the global).
pub async fn record_create<T: Audited>(obj: &T) -> Option<ObjectId> {
    Auditor::current()?.record_create(obj).await
}

/// Records an update through the current auditor.
pub async fn record_update<T: Audited>(old: &T, new: &T) -> Option<ObjectId> {
    Auditor::current()?.record_update(old, new).await
}

/// Records a deletion through the current auditor.
pub async fn record_delete<T: Audited>(obj: &T) -> Option<ObjectId> {
    Auditor::current()?.record_delete(obj).await
}
