//! HTTP capture: a tower [`Layer`](tower::Layer) that records one [`Access`](crate::Access) per request served
//! through it — for axum, hyper or any tower stack, over any request body type and any inner
//! error type.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use audit_runtime::{http::AuditLayer, AuditConfig, Auditor};
//! let (auditor, guard) = Auditor::start(AuditConfig::load(None)?).await?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .layer(AuditLayer::new(auditor));
//! // ... serve `app`; at shutdown:
//! guard.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The request's context (access id, view, user, exception) lives in a task-local for the
//! duration of the request only. The record is built once, when the response is complete: at once
//! for bodies that are not captured, at the end of the body for JSON and XML bodies (which stream
//! to the client unchanged while up to `capture.max_body_bytes` are kept). In sync mode the record
//! is stored before the response is returned whenever the body is small and known in advance.
//!
//! Every request that reaches the layer leaves exactly one access, whatever happens to it:
//! - the client hangs up, an outer timeout fires, or the server shuts down while the handler runs:
//!   the service future is dropped, and a guard records the access with no `response` and
//!   `exception.type` [`CANCELLED`], timed up to the drop;
//! - the inner service returns an error: it is recorded as the exception (its type and message)
//!   and returned unchanged;
//! - the handler panics: the panic is recorded with no `response` and goes on to the layers
//!   above, unless [`AuditLayer::catch_panic`] makes the layer answer `500` itself (then the 500
//!   is stored, since it is what the client got).
//!
//! Form and JSON request bodies are recorded in `request.POST` (redacted and key-escaped like the
//! rest); a JSON value that is not an object goes under [`JSON_VALUE_KEY`], and a body that is
//! over the cap, unreadable or not JSON leaves a note under [`BODY_NOTE_KEY`] instead. The handler
//! always gets the body the client sent, read errors included.

mod body;
mod capture;
mod future;
mod layer;
mod service;

pub use body::{AuditBody, AuditRequestBody, BoxError};
pub use capture::Capture;
pub use future::{ResponseFuture, CANCELLED};
pub use layer::AuditLayer;
pub use service::{AccessId, AuditService, BODY_NOTE_KEY, JSON_VALUE_KEY};

pub use crate::provider::ProviderContext;

/// Captures the request part of an access the way the layer does (path decoded, GET, COOKIES,
/// METADATA, redaction and key escaping per the rules). For custom middleware, and for measuring
/// the capture on its own.
pub fn capture_request<B>(
    req: &http::Request<B>,
    rules: &Capture,
) -> crate::document::AccessRequest {
    rules.request(req, capture::decoded_path(req.uri()), None)
}
