//! Custom providers: application code that adds data under `custom.<key>` of each HTTP access.
//! What a provider sees of the request is defined here, below the auditor that keeps the
//! registered providers and the HTTP layer that calls them.

use crate::document::AccessUser;
use http::{HeaderMap, Method};
use std::sync::Arc;

/// A custom provider: called once per audited request at response or exception time; its
/// result is stored under `custom.<key>`. Null and empty results are dropped; a provider that
/// fails or panics is logged and counted and never stops the record.
pub(crate) type ProviderFn = Arc<dyn Fn(&ProviderContext<'_>) -> bson::Bson + Send + Sync>;

/// What a custom provider sees of the request.
#[derive(Debug)]
pub struct ProviderContext<'a> {
    /// The decoded request path.
    pub path: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The request headers (unredacted: the provider runs in the application).
    pub headers: &'a HeaderMap,
    /// The user, when one is known.
    pub user: Option<&'a AccessUser>,
    /// The response status, or `None` when the handler failed without one.
    pub status: Option<u16>,
}
