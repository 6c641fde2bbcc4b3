//! # audit-runtime
//!
//! An audit trail for Rust web applications, successor of django-audit-tools. It records every
//! **access** to a handler (request, response or exception, timing, view, user, custom data),
//! every **model action** (create, update, delete with old and new values and the changes) and the
//! **process** that served them, in MongoDB or — by default, with no server — in an embedded
//! SQLite file.
//!
//! The pieces, each in its module:
//! - [`document`]: the three documents, with the original's exact field and collection names;
//! - [`config`]: every setting, loaded once from TOML and `AUDIT_*` variables, validated;
//! - [`store`]: the SQLite and MongoDB stores behind one [`Store`];
//! - [`query`]: the original's query helpers (`filter_by_url`, `filter_by_view`, ...), typed;
//! - [`registry`] and [`model`]: what the macros register and implement;
//! - [`auditor`], [`context`], [`view`] and [`writer`]: recording (the request context, the
//!   handler wrapper, the batching writer);
//! - [`http`]: the tower layer that captures HTTP accesses;
//! - [`seal`]: the hash chain (optionally signed) that makes edits to the trail evident;
//! - `console`: the read-only JSON API and web pages over the trail (`audit serve`).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(not(any(feature = "embedded-store", feature = "mongodb")))]
compile_error!(
    "audit-runtime needs a store: enable the `embedded-store` and/or the `mongodb` feature"
);

mod actions;
pub mod auditor;
pub mod blacklist;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod config;
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
pub mod console;
pub mod context;
pub mod document;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod index;
mod identity;
pub mod journal;
pub mod keys;
pub mod model;
pub mod process;
#[cfg(feature = "http")]
mod provider;
pub mod query;
pub mod redact;
pub mod registry;
pub mod seal;
mod secret;
pub mod store;
pub mod view;
pub mod writer;

pub use actions::{record_create, record_delete, record_update};
pub use auditor::{AuditError, Auditor, AuditorBuilder};
pub use context::{add_custom, current_access_id, disable_current, set_user};
pub use identity::{ModelIdentity, ViewIdentity};
pub use writer::{MetricsSnapshot, WriterGuard};

pub use blacklist::Blacklist;
pub use config::{AuditConfig, ConfigError, DbConnection, FullPolicy};
pub use document::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
    Action, AuditDocument, Collection, Items, ModelAction, ModelActionContent, ModelActionInstance,
    ModelActionModel, Process, UserId,
};
pub use model::{AuditValue, Audited};
pub use query::{Query, QueryError, UrlMatch};
pub use registry::{ModelRegistration, RegistryError, ViewRegistration};
pub use store::{Filter, FindOptions, Order, Store, StoreError};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use audit_macros::{audited_view, disable_audit, Audited};

/// The BSON crate this one stores with, so that values for [`add_custom`] and providers need no
/// dependency of their own (and never a second, mismatched version).
pub use bson;

// Not public API. Used by generated code.
#[doc(hidden)]
pub mod __private {
    pub use crate::context::disable_current;
    pub use crate::identity::ViewIdentity;
    pub use crate::view::{
        handler_identity, CatchUnwind, DescViaAny, DescViaDisplay, IdViaDisplay, IdViaOption,
        ViaAny, ViaDebug, ViaDisplay, ViaError, ViewGuard, Wrap,
    };
    pub use bson;
    pub use inventory;
    pub use std::any::type_name_of_val;
    pub use std::sync::OnceLock;
}
