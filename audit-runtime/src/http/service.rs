//! The service: what happens to a request before the inner service sees it — its context is
//! opened, its request part captured, its body wrapped — and the [`ResponseFuture`] that takes it
//! from there.

use super::body::{AuditRequestBody, BoxError, RequestTee};
use super::capture::{decoded_path, Capture};
use super::future::{Finisher, ResponseFuture};
use super::layer::Shared;
use crate::context::RequestState;
use crate::document::AccessUser;
use bson::{doc, Bson, Document};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The service of [`AuditLayer`](super::AuditLayer).
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for AuditService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditService")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S> AuditService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        AuditService { inner, shared }
    }
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for AuditService<S>
where
    S: tower::Service<Request<AuditRequestBody<ReqB>>, Response = Response<ResB>> + Clone,
    S::Error: std::fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<super::AuditBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, S::Future, ReqB, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The ready service is the one called; a clone stays (axum's clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = &self.shared;
        if !shared.auditor.is_active() {
            return ResponseFuture::off(inner.call(req.map(AuditRequestBody::new)));
        }
        let cap = &shared.capture;
        let path = decoded_path(req.uri());
        let state = RequestState::for_request(
            shared.auditor.clone(),
            path.clone(),
            &cap.config.default_app,
        );
        let interlink = interlink_id(req.headers(), &cap.config.interlink_header);
        // A W3C trace context travels with the access (and every event forwarded from it), so a
        // SIEM can jump from an audit event to its trace.
        if let Some((trace, span, flags)) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::siem::parse_traceparent)
        {
            state.lock().custom.insert(
                crate::siem::TRACE_KEY,
                bson::doc! { "trace_id": trace, "span_id": span, "flags": i32::from(flags) },
            );
        }
        let remote = remote_addr(&req);
        let size_hint = record_size_hint(&req, cap);
        let request = cap.request(&req, path, remote);

        let (mut parts, body) = req.into_parts();
        route_params(&mut parts, &state);
        let user = parts
            .extensions
            .get::<AccessUser>()
            .cloned()
            .or_else(|| shared.resolve_user(&parts));
        let provider_headers =
            (!shared.auditor.providers().is_empty()).then(|| parts.headers.clone());
        parts.extensions.insert(AccessId(state.access_id));

        // From here on the request leaves an access whatever becomes of the future: if it is
        // dropped (the client hung up, an outer timeout fired, the server shut down), the
        // finisher it holds records it.
        let mut finisher = Finisher {
            shared: shared.clone(),
            state: state.clone(),
            request,
            request_tee: None,
            interlink,
            route: matched_route(&parts),
            user,
            method: parts.method.clone(),
            provider_headers,
            status: None,
            content_type: String::new(),
            reserved: None,
            size_hint,
        };
        let body = match request_body(&parts.headers, body, cap, &mut finisher) {
            Ok(body) => body,
            Err((body, kind)) => {
                return ResponseFuture::reading(inner, parts, body, kind, finisher);
            }
        };
        let fut = inner.call(Request::from_parts(parts, body));
        ResponseFuture::called(fut, &state, finisher)
    }
}

/// About how many bytes the access of `req` takes, response content aside: its URL (the query is
/// stored twice, parsed and as `QUERY_STRING`), its headers, a recorded body up to the cap, and
/// the fields every access has. Cheap (no allocation); used to reserve the access's room in the
/// writer's queue before its size is known.
fn record_size_hint<B>(req: &Request<B>, cap: &Capture) -> usize {
    let uri = req.uri();
    let url = uri.path().len() * 2 + uri.query().map_or(0, str::len) * 2;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 16)
        .sum();
    let body = match BodyKind::of(req.headers()) {
        Some(_) => content_length(req.headers()).map_or(cap.config.max_body_bytes, |n| {
            (n as usize).min(cap.config.max_body_bytes)
        }),
        None => 0,
    };
    url + headers + body + 1024
}

/// What the layer keeps of a request body, and the body the handler gets.
///
/// Form and JSON bodies are recorded: when their announced length is within the cap they are read
/// first (so they are recorded even when the handler never reads them) and handed on unchanged,
/// including the error a read ended with — `Err` asks the future to read it; when the length is
/// not announced they are teed while the handler reads them. Other bodies are never touched.
#[allow(clippy::type_complexity)]
fn request_body<B>(
    headers: &HeaderMap,
    body: B,
    cap: &Capture,
    finisher: &mut Finisher,
) -> Result<AuditRequestBody<B>, (B, BodyKind)> {
    let Some(kind) = BodyKind::of(headers) else {
        return Ok(AuditRequestBody::new(body));
    };
    let max = cap.config.max_body_bytes;
    match content_length(headers) {
        Some(n) if n <= max as u64 => Err((body, kind)),
        Some(n) => {
            finisher.request.POST = over_cap(n, max);
            Ok(AuditRequestBody::new(body))
        }
        None => {
            let tee = Arc::new(Mutex::new(RequestTee::new(max)));
            finisher.request_tee = Some((tee.clone(), kind));
            Ok(AuditRequestBody::teed(body, tee))
        }
    }
}

/// The request bodies the layer records.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BodyKind {
    Form,
    Json,
}

impl BodyKind {
    fn of(headers: &HeaderMap) -> Option<BodyKind> {
        let ct = headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?
            .to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence == "application/x-www-form-urlencoded" {
            Some(BodyKind::Form)
        } else if essence == "application/json" || essence.ends_with("+json") {
            Some(BodyKind::Json)
        } else {
            None
        }
    }

    /// `request.POST` from a whole body: form fields, or a JSON object's members. Any other JSON
    /// value is kept under `_json`; a body that is not JSON is noted, not stored.
    pub(crate) fn parse(self, cap: &Capture, data: &[u8]) -> Document {
        match self {
            BodyKind::Form => cap.form_map(data),
            BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(data) {
                Ok(v) => match cap.json_to_bson(v) {
                    Bson::Document(d) => d,
                    other => doc! { JSON_VALUE_KEY: other },
                },
                Err(e) => doc! { BODY_NOTE_KEY: format!("request body is not valid JSON: {e}") },
            },
        }
    }
}

/// The key of `request.POST` holding a JSON request body that is not an object.
pub const JSON_VALUE_KEY: &str = "_json";
/// The key of `request.POST` explaining why a form or JSON body is not stored.
pub const BODY_NOTE_KEY: &str = "_audit_error";

pub(crate) fn read_error(e: &dyn std::fmt::Display) -> Document {
    doc! { BODY_NOTE_KEY: format!("request body could not be read: {e}") }
}

pub(crate) fn over_cap(total: u64, max: usize) -> Document {
    doc! { BODY_NOTE_KEY: format!("<body not stored: {total} bytes or more, over the {max}-byte cap>") }
}

/// The access id of the request, in the request extensions (handlers can extract it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessId(pub bson::oid::ObjectId);

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The correlation id: the configured header, else the W3C `traceparent` trace id, else a new id.
fn interlink_id(headers: &HeaderMap, header: &str) -> String {
    let valid =
        |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if let Some(v) = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| valid(v))
    {
        return v.to_owned();
    }
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return trace.to_owned();
    }
    bson::oid::ObjectId::new().to_hex()
}

fn remote_addr<B>(req: &Request<B>) -> Option<String> {
    #[cfg(feature = "axum")]
    if let Some(info) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(info.0.to_string());
    }
    req.extensions()
        .get::<std::net::SocketAddr>()
        .map(ToString::to_string)
}

/// The route's URL parameters: by name in `view.kwargs`, and in order in `view.args`.
fn route_params(parts: &mut http::request::Parts, state: &RequestState) {
    #[cfg(feature = "axum")]
    {
        use axum::extract::FromRequestParts;
        use std::future::Future;
        // Extracting the raw parameters only reads the request's extensions: it is ready at once.
        let mut params =
            std::pin::pin!(axum::extract::RawPathParams::from_request_parts(parts, &()));
        let ready = params
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()));
        if let Poll::Ready(Ok(params)) = ready {
            // A parameter named like a secret (`/reset/{token}`) is masked, in both copies.
            let policy = state.redaction();
            let mut inner = state.lock();
            for (k, v) in params.iter() {
                let v = policy.param(k, v);
                inner.args.push(v.clone());
                inner.kwargs.insert(crate::keys::escape_key(k), v);
            }
        }
    }
    let _ = (parts, state);
}

/// The route the router matched, if any (axum's `MatchedPath`).
fn matched_route(parts: &http::request::Parts) -> Option<String> {
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return Some(m.as_str().to_owned());
    }
    let _ = parts;
    None
}
