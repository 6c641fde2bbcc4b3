//! The [`Auditor`]: the configured store, the writer, the process, and the recording API for
//! accesses and model actions. One per application; the HTTP layer, the macros and the model
//! API all go through it. [`Auditor::install_global`] makes it the one used outside requests.

use crate::config::AuditConfig;
use crate::document::{Access, ModelAction};
use crate::process::ProcessInfo;
use crate::registry::{self, RegistryError};
use crate::store::{Store, StoreError};
use crate::writer::{self, MetricsSnapshot, Record, Writer, WriterGuard};
use bson::oid::ObjectId;
use std::sync::{Arc, Mutex, RwLock};

/// Why the auditor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The trail cannot be sealed as it must be: it is signed and no key is configured, or the
    /// configured key cannot be read.
    #[error("{0}")]
    Seal(crate::seal::SealError),
    /// The spill journal's key file cannot be read or created.
    #[error("the spill journal's key file {}: {source}", path.display())]
    JournalKey {
        /// The key file (`<spill_path>.key`).
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The forwarder cannot start (its cursor file, a destination's address or TLS setup).
    #[error("[forward]: {0}")]
    Forward(String),
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

#[cfg(feature = "http")]
use crate::provider::ProviderFn;

/// The application's audit recorder. Cheap to clone.
#[derive(Clone)]
pub struct Auditor(Arc<Inner>);

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("active", &self.is_active())
            // Shown without its password.
            .field(
                "db_connection",
                &format_args!("{}", self.0.config.db_connection),
            )
            .field("run_async", &self.0.config.run_async)
            .finish_non_exhaustive()
    }
}

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
        F: Fn(&crate::provider::ProviderContext<'_>) -> V + Send + Sync + 'static,
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
            let mine = ProcessInfo::current().to_process();
            let process = store.upsert_process(&mine).await.map_err(store_err)?;
            tracing::debug!(target: "audit", process = %process, "audit process stored");
            let seal_err = |e| match e {
                crate::seal::SealError::Key(k) => AuditError::SealKey(k),
                e => AuditError::Seal(e),
            };
            let key = if config.seal {
                crate::seal::signing_key_for(&store, &config)
                    .await
                    .map_err(seal_err)?
            } else {
                if crate::seal::trail_is_sealed(&store)
                    .await
                    .map_err(store_err)?
                {
                    tracing::warn!(target: "audit",
                        "seal = false on a sealed trail: the records written from now on have no seal, and `audit verify` reports them as inserted");
                }
                None
            };
            let journal_keys = match &config.spill_path {
                None => None,
                Some(path) => {
                    use crate::journal::JournalKey;
                    let file = JournalKey::file_beside(path);
                    let failed = |source| AuditError::JournalKey {
                        path: file.clone(),
                        source,
                    };
                    Some(match &key {
                        // Entries spilled before `seal_key_file` was set are still replayed.
                        Some(key) => (
                            JournalKey::derived_from(key),
                            JournalKey::from_file(&file)
                                .map_err(failed)?
                                .into_iter()
                                .collect(),
                        ),
                        None => (JournalKey::in_file(&file).map_err(failed)?, Vec::new()),
                    })
                }
            };
            // The process document is sealed only as this process would write it: a stored one
            // that differs (edited in the store) is not vouched for again.
            let own = crate::document::Process {
                id: process.id,
                ..mine
            };
            let process_doc = (own == process).then_some(own);
            // A stream per writer, so that writers never coordinate, even two in one process; the
            // seals also name the process they write for.
            let stream = ObjectId::new();
            let sealing = if config.seal {
                Some(writer::Sealing {
                    sealer: crate::seal::Sealer::new(stream, key).trail(&config.trail_name),
                    process: process.id,
                    process_doc,
                })
            } else {
                None
            };
            let metrics = writer::Metrics::default();
            // The forwarder follows the seals of this writer's stream (forwarding needs sealing,
            // which the configuration checked).
            let forwarder = if config.forward.is_on() && config.seal {
                crate::forward::check(&config.forward).map_err(AuditError::Forward)?;
                Some(
                    crate::forward::Forwarder::start(
                        store.clone(),
                        &config,
                        stream,
                        metrics.forward.clone(),
                    )
                    .map_err(AuditError::Forward)?,
                )
            } else {
                None
            };
            let (writer, guard) = writer::spawn(
                store.clone(),
                &config,
                sealing,
                journal_keys,
                metrics,
                forwarder,
            );
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

    /// Queues an access from synchronous code (the end of a streamed body, a standalone call's
    /// return): never waits.
    pub(crate) fn record_access_nowait(&self, access: Access) {
        if let Some((active, record)) = self.record_now(access) {
            active.writer.submit_blocking(record);
        }
    }

    /// The record of `access`, for code that cannot wait: the process id only if it is known
    /// already; an access that cannot be encoded is counted and gives `None`.
    fn record_now(&self, mut access: Access) -> Option<(&Active, Record)> {
        let active = self.0.active.as_ref()?;
        if access.process.is_none() {
            access.process = self.cached_process_id();
        }
        match Record::access(&access) {
            Ok(record) => Some((active, record)),
            Err(e) => {
                active.writer.count_unencodable(&e);
                None
            }
        }
    }

    /// Room in the queue for an access to be finished later in code that cannot wait; see
    /// [`Writer::reserve`](crate::writer::Writer::reserve).
    #[cfg(feature = "http")]
    pub(crate) fn reserve(
        &self,
        bytes: usize,
    ) -> Result<Option<crate::writer::Reservation>, crate::writer::ReservationWait> {
        match &self.0.active {
            Some(active) => active.writer.reserve(bytes),
            None => Ok(None),
        }
    }

    /// Queues an access from synchronous code into the room `reserved` holds (see
    /// [`Auditor::reserve`]); like [`Auditor::record_access_nowait`] without one.
    #[cfg(feature = "http")]
    pub(crate) fn record_access_reserved(
        &self,
        access: Access,
        reserved: Option<crate::writer::Reservation>,
    ) {
        let Some((active, record)) = self.record_now(access) else {
            return;
        };
        match reserved {
            Some(reserved) => active.writer.submit_reserved(record, reserved),
            None => active.writer.submit_blocking(record),
        }
    }

    /// Queues an access at once when that needs no wait (async mode, room in the queue);
    /// otherwise gives the wait to run: storing it in sync mode, room in the queue when full.
    #[cfg(feature = "http")]
    pub(crate) fn record_access_or_wait(
        &self,
        mut access: Access,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let active = self.0.active.as_ref()?;
        let process = self.cached_process_id();
        if !self.0.config.run_async || process.is_none() {
            let auditor = self.clone();
            return Some(Box::pin(async move { auditor.record_access(access).await }));
        }
        if access.process.is_none() {
            access.process = process;
        }
        let record = match Record::access(&access) {
            Ok(record) => record,
            Err(e) => {
                active.writer.count_unencodable(&e);
                return None;
            }
        };
        let record = active.writer.try_submit(record).err()?;
        let auditor = self.clone();
        Some(Box::pin(async move {
            if let Some(active) = &auditor.0.active {
                auditor.submit(active, record).await;
            }
        }))
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

    /// Stores a model action: in sync mode it is stored when this returns, in async mode queued.
    pub(crate) async fn record_model_action(&self, mut model_action: ModelAction) {
        let Some(active) = &self.0.active else { return };
        if model_action.process.is_none() {
            model_action.process = self.process_id().await;
        }
        match Record::model_action(&model_action) {
            Ok(record) => self.submit(active, record).await,
            Err(e) => active.writer.count_unencodable(&e),
        }
    }
}
