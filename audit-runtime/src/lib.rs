//! # audit-runtime
//!
//! An audit trail for Rust web applications, successor of django-audit-tools. It records every
//! **access** to a handler (request, response or exception, timing, view, user, custom data),
//! every **model action** (create, update, delete with old and new values and the changes) and the
//! **process** that served them, in MongoDB or — by default, with no server — in an embedded
//! SQLite file.
//!
//! What you use:
//! - [`Auditor`]: started from an [`AuditConfig`] (TOML and `AUDIT_*` variables, validated once),
//!   it owns the [`Store`] and the background writer; [`WriterGuard`] flushes at shutdown;
//! - [`http::AuditLayer`]: the tower layer that records one [`Access`] per request;
//! - `#[audited_view]`, `#[disable_audit]` and `#[derive(Audited)]`, and
//!   [`Auditor::record_update`] (and create, delete) for [`ModelAction`]s;
//! - [`Access::objects`] and [`ModelAction::objects`]: the original's query helpers
//!   (`filter_by_url`, `filter_by_view`, ...), typed;
//! - `sea_orm` (feature `sea-orm`): model actions recorded by SeaORM's hooks, only once they
//!   commit; [`Tracked`] does the snapshotting for other data layers;
//! - [`seal`]: the hash chain (optionally signed) that makes edits to the trail evident;
//! - `console` and `cli`: the read-only console and the `audit` command line (opt-in features);
//! - [`config`], [`keys`] and [`registry`]: the settings, how keys are escaped for storage, and
//!   what the macros registered.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(not(any(feature = "embedded-store", feature = "mongodb")))]
compile_error!(
    "audit-runtime needs a store: enable the `embedded-store` and/or the `mongodb` feature"
);

mod actions;
mod auditor;
mod blacklist;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
mod commitment;
pub mod config;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
mod context;
mod document;
mod forward;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod identity;
// Items of the modules below that are `pub` but not re-exported here are reached by this
// workspace's tests and benchmarks through `internals` (a feature applications do not enable).
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod index;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod journal;
pub mod keys;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod model;
mod process;
#[cfg(feature = "http")]
mod provider;
mod query;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod redact;
pub mod registry;
#[cfg(feature = "sea-orm")]
#[cfg_attr(docsrs, doc(cfg(feature = "sea-orm")))]
pub mod sea_orm;
pub mod seal;
mod secret;
pub mod siem;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod store;
mod tracked;
mod view;
mod witness;
mod writer;

pub use actions::{record_create, record_delete, record_update};
pub use auditor::{AuditError, Auditor, AuditorBuilder};
pub use blacklist::{Blacklist, BlacklistError};
pub use config::{AuditConfig, CaptureConfig, ConfigError, DbConnection, FullPolicy};
pub use context::{add_custom, current_access_id, disable_current, set_user};
pub use document::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
    Action, AuditDocument, Collection, InstanceLookup, Items, ModelAction, ModelActionContent,
    ModelActionInstance, ModelActionModel, Process, UserId, UserLookup,
};
pub use identity::{ModelIdentity, ViewIdentity};
pub use index::IndexSpec;
pub use model::{AuditValue, Audited, Snapshot};
pub use query::{Query, QueryError, UrlMatch};
pub use redact::{Redaction, MASK};
pub use registry::{ModelRegistration, RegistryError, ViewRegistration};
pub use store::filter::{Filter, FindOptions, Order};
pub use store::index::{EnsuredIndex, IndexInfo};
#[cfg(feature = "mongodb")]
pub use store::MongoError;
#[cfg(feature = "embedded-store")]
pub use store::SqliteError;
pub use store::{Store, StoreError};
pub use tracked::Tracked;
pub use writer::{MetricsSnapshot, WriterGuard};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use audit_macros::{audited_view, disable_audit, Audited};

/// The BSON crate this one stores with, so that values for [`add_custom`] and providers need no
/// dependency of their own (and never a second, mismatched version).
pub use bson;

/// Not public API: internals that this workspace's tests and benchmarks reach into (the spill
/// journal's format, the SQLite schema, the diff). Behind the `internals` feature, which
/// applications do not enable; no stability promise.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::index::{default_indexes, validate_index_path};
    pub use crate::journal::{Item, Journal, JournalKey};
    pub use crate::model::{diff, diff_snapshots, finalize_masks};
    pub use crate::redact::default_policy;
    pub use crate::store::degrade::MARKER_KEY;
    pub use crate::store::encode;
    #[cfg(feature = "embedded-store")]
    pub use crate::store::sqlite::{expression_schema_sql, open_connection, prepare_connection};
}

// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::context::disable_current;
    pub use crate::identity::ViewIdentity;
    pub use crate::model::{display_value, field_value, serde_value};
    pub use crate::view::{
        handler_identity, CatchUnwind, DescViaAny, DescViaDisplay, IdViaDisplay, IdViaOption,
        ViaAny, ViaDebug, ViaDisplay, ViaError, ViewGuard, Wrap,
    };
    pub use bson;
    pub use inventory;
    pub use std::any::type_name_of_val;
    pub use std::sync::OnceLock;
}
