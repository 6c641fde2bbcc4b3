//! The registry of audited views and models, filled at link time through
//! `inventory` by `#[audited_view]`, `#[disable_audit]` and `#[derive(Audited)]`, plus the runtime
//! set of models whose actions are recorded (`register` / `unregister`, `register_models`).
//!
//! A crate that holds only handlers or models is not linked unless the binary names it; such a
//! crate's registrations silently go missing. Write `use my_handlers as _;` in the binary.

use crate::config::AuditConfig;
use crate::identity::ViewIdentity;
use std::collections::BTreeSet;
use std::sync::RwLock;

/// One handler annotated with `#[audited_view]` or `#[disable_audit]`.
pub struct ViewRegistration {
    identity: fn() -> &'static ViewIdentity,
    /// `false` for `#[disable_audit]` handlers.
    pub audited: bool,
}

impl ViewRegistration {
    /// Used by generated code. The identity is a function because a handler's full path (its
    /// `Type::method` for methods) is only known from `type_name` at run time.
    pub const fn new(identity: fn() -> &'static ViewIdentity, audited: bool) -> Self {
        ViewRegistration { identity, audited }
    }

    /// The handler's identity.
    pub fn identity(&self) -> &'static ViewIdentity {
        (self.identity)()
    }

    /// The handler's Rust path (`crate::module::function`, `crate::module::Type::method`).
    pub fn full_name(&self) -> &'static str {
        &self.identity().full_name
    }

    /// The crate name, or the `app = "..."` override.
    pub fn app(&self) -> &'static str {
        &self.identity().app
    }

    /// The handler name, or the `name = "..."` override.
    pub fn name(&self) -> &'static str {
        &self.identity().name
    }
}

impl std::fmt::Debug for ViewRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewRegistration")
            .field("identity", self.identity())
            .field("audited", &self.audited)
            .finish()
    }
}

inventory::collect!(ViewRegistration);

/// One model type deriving `Audited`.
#[derive(Debug)]
pub struct ModelRegistration {
    /// The model's Rust path.
    pub full_name: &'static str,
    /// The crate name, or the `#[audit(app = "...")]` override.
    pub app: &'static str,
    /// The type name.
    pub name: &'static str,
    /// The snapshot field names, in declaration order (after renames; skipped fields left out).
    pub fields: &'static [&'static str],
}

impl ModelRegistration {
    /// Used by generated code.
    pub const fn new(
        full_name: &'static str,
        app: &'static str,
        name: &'static str,
        fields: &'static [&'static str],
    ) -> Self {
        ModelRegistration {
            full_name,
            app,
            name,
            fields,
        }
    }
}

inventory::collect!(ModelRegistration);

/// A name that is not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No handler with that full name.
    #[error("View {0} does not exist.")]
    UnknownView(String),
    /// No model with that full name (the original's message).
    #[error("Model {0} does not exist.")]
    UnknownModel(String),
}

/// Every registered handler, sorted by full name (inventory's order is unspecified).
pub fn views() -> Vec<&'static ViewRegistration> {
    let mut v: Vec<_> = inventory::iter::<ViewRegistration>.into_iter().collect();
    v.sort_by_key(|r| (r.full_name(), r.audited));
    v
}

/// Handlers marked `#[disable_audit]`.
pub fn disabled_views() -> Vec<&'static ViewRegistration> {
    views().into_iter().filter(|v| !v.audited).collect()
}

/// The handler registered under `full_name`.
pub fn get_view(full_name: &str) -> Result<&'static ViewRegistration, RegistryError> {
    // A handler with both attributes is registered twice; the disabled entry wins.
    let mut found = inventory::iter::<ViewRegistration>
        .into_iter()
        .filter(|v| v.full_name() == full_name)
        .collect::<Vec<_>>();
    found.sort_by_key(|v| v.audited);
    found
        .first()
        .copied()
        .ok_or_else(|| RegistryError::UnknownView(full_name.to_owned()))
}

/// Every model deriving `Audited`, sorted by full name.
pub fn models() -> Vec<&'static ModelRegistration> {
    let mut v: Vec<_> = inventory::iter::<ModelRegistration>.into_iter().collect();
    v.sort_by_key(|r| r.full_name);
    v
}

/// The model registered under `full_name`.
pub fn get_model(full_name: &str) -> Result<&'static ModelRegistration, RegistryError> {
    inventory::iter::<ModelRegistration>
        .into_iter()
        .find(|m| m.full_name == full_name)
        .ok_or_else(|| RegistryError::UnknownModel(full_name.to_owned()))
}

/// Models registered explicitly ([`register`], `logged_models`).
static RECORDED: RwLock<BTreeSet<&'static str>> = RwLock::new(BTreeSet::new());
/// Models excluded explicitly ([`unregister`]).
static EXCLUDED: RwLock<BTreeSet<&'static str>> = RwLock::new(BTreeSet::new());
/// Models whose skipped actions were already warned about (once per model).
static WARNED: std::sync::Mutex<BTreeSet<&'static str>> = std::sync::Mutex::new(BTreeSet::new());

fn write(
    set: &'static RwLock<BTreeSet<&'static str>>,
) -> std::sync::RwLockWriteGuard<'static, BTreeSet<&'static str>> {
    set.write().unwrap_or_else(|p| p.into_inner())
}

fn read(
    set: &'static RwLock<BTreeSet<&'static str>>,
) -> std::sync::RwLockReadGuard<'static, BTreeSet<&'static str>> {
    set.read().unwrap_or_else(|p| p.into_inner())
}

/// Records the actions of `T` again after [`unregister`], and adds it to a narrowed set
/// (`logged_models`). Idempotent.
pub fn register<T: crate::model::Audited>() {
    write(&EXCLUDED).remove(T::MODEL.full_name);
    write(&RECORDED).insert(T::MODEL.full_name);
}

/// Stops recording the actions of `T` (idempotent).
pub fn unregister<T: crate::model::Audited>() {
    write(&RECORDED).remove(T::MODEL.full_name);
    write(&EXCLUDED).insert(T::MODEL.full_name);
}

/// True when the model named `full_name` was registered explicitly ([`register`] or
/// `logged_models`).
pub fn is_registered(full_name: &str) -> bool {
    read(&RECORDED).contains(full_name)
}

/// True when actions of the model named `full_name` are recorded under `config`.
///
/// Deriving `Audited` is the opt-in: a derived model is recorded unless [`unregister`] excluded
/// it. A non-empty `logged_models` narrows the set to the models it names (plus those registered
/// in code). A model whose actions are skipped is reported once, at warn level, so a forgotten
/// setting does not silently leave holes in the trail.
pub fn is_recorded(full_name: &'static str, config: &AuditConfig) -> bool {
    let recorded = !read(&EXCLUDED).contains(full_name)
        && (config.logged_models.is_empty()
            || read(&RECORDED).contains(full_name)
            || config.logged_models.iter().any(|m| m == full_name));
    if !recorded
        && WARNED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(full_name)
    {
        let reason = if read(&EXCLUDED).contains(full_name) {
            "it was unregistered"
        } else {
            "it is not listed in logged_models"
        };
        tracing::warn!(target: "audit", model = full_name, reason,
            "model actions of this model are not recorded");
    }
    recorded
}

/// Registers every model named in `logged_models`. An unknown name is an error naming it,
/// and then nothing is registered.
pub fn register_models(config: &AuditConfig) -> Result<Vec<&'static str>, RegistryError> {
    let found = config
        .logged_models
        .iter()
        .map(|n| get_model(n).map(|m| m.full_name))
        .collect::<Result<Vec<_>, _>>()?;
    write(&RECORDED).extend(found.iter().copied());
    let mut excluded = write(&EXCLUDED);
    for m in &found {
        excluded.remove(m);
    }
    Ok(found)
}

/// Unregisters every model named in `logged_models` (unknown names are ignored: nothing to undo).
pub fn unregister_models(config: &AuditConfig) {
    let mut set = write(&RECORDED);
    for n in &config.logged_models {
        set.remove(n.as_str());
    }
}

// The lookups from a stored document to its registration live here rather than with the
// documents, so that the documents stay plain data that depends on nothing above them.
impl crate::document::Access {
    /// The registered handler named by `view.full_name`.
    pub fn get_view(&self) -> Result<&'static ViewRegistration, RegistryError> {
        get_view(&self.view.full_name)
    }
}

impl crate::document::ModelAction {
    /// The registered model named by `model.full_name` (`Model X does not exist.` otherwise, the
    /// original's message).
    pub fn get_model(&self) -> Result<&'static ModelRegistration, RegistryError> {
        get_model(&self.model.full_name)
    }
}
