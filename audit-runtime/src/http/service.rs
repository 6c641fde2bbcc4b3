//! The layer and its service: one access per request, built from the request's context when the
//! response is complete.

use super::body::{AuditBody, AuditRequestBody, BoxError, Finish, RequestTee, Tee};
use super::capture::{decoded_path, Capture};
use super::ProviderContext;
use crate::auditor::Auditor;
use crate::context::RequestState;
use crate::document::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
};
use crate::identity::ViewIdentity;
use crate::keys::escape_value;
use crate::view::CatchUnwind;
use bson::{doc, Bson, Document};
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type UserResolver = Arc<dyn Fn(&http::request::Parts) -> Option<AccessUser> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    auditor: Auditor,
    capture: Capture,
    user_resolver: Option<UserResolver>,
    /// Shared by every clone of the layer and every service it made.
    provider_failures: Arc<AtomicU64>,
    /// The layer answers a panicking handler with a 500 itself.
    catch_panic: bool,
}

/// The audit layer. Wrap an axum `Router` (`.layer(AuditLayer::new(auditor))`) or any service.
#[derive(Clone)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl AuditLayer {
    /// A layer recording through `auditor`, with the `[capture]` settings of its configuration.
    pub fn new(auditor: Auditor) -> Self {
        let capture = Capture::new(auditor.config().capture.clone());
        AuditLayer {
            shared: Arc::new(Shared {
                auditor,
                capture,
                user_resolver: None,
                provider_failures: Arc::default(),
                catch_panic: false,
            }),
        }
    }

    /// Resolves the user of a request from its parts (headers, extensions). An [`AccessUser`] in the
    /// request extensions (put there by an authentication layer) is used first; a user set inside
    /// the handler with [`set_user`](crate::set_user) wins over both.
    pub fn user_resolver<F>(self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<AccessUser> + Send + Sync + 'static,
    {
        let shared = Shared {
            user_resolver: Some(Arc::new(f)),
            ..(*self.shared).clone()
        };
        AuditLayer {
            shared: Arc::new(shared),
        }
    }

    /// Answers a panicking handler with `500 Internal Server Error` in the layer itself, so the
    /// stored status is the one the client got. Without it the panic is recorded (with no
    /// response) and goes on to the layers above, as if the layer were not there.
    pub fn catch_panic(self) -> Self {
        let shared = Shared {
            catch_panic: true,
            ..(*self.shared).clone()
        };
        AuditLayer {
            shared: Arc::new(shared),
        }
    }

    /// Providers that failed or panicked so far (each failure is also logged).
    pub fn provider_failures(&self) -> u64 {
        self.shared.provider_failures.load(Ordering::Relaxed)
    }
}

impl<S> tower::Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for AuditService<S>
where
    S: tower::Service<Request<AuditRequestBody<ReqB>>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The ready service goes into the future; a clone stays (axum's clone-and-swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(serve(shared, inner, req))
    }
}

async fn serve<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<AuditBody<ResB>>, S::Error>
where
    S: tower::Service<Request<AuditRequestBody<ReqB>>, Response = Response<ResB>>,
    S::Error: std::fmt::Display,
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
{
    if !shared.auditor.is_active() {
        // Auditing is off: the request and the response pass through untouched.
        let res = inner.call(req.map(AuditRequestBody::new)).await?;
        return Ok(res.map(AuditBody::passthrough));
    }
    let config = shared.auditor.config();
    let cap = &shared.capture;
    let path = decoded_path(req.uri());
    let state = RequestState::for_request(
        shared.auditor.clone(),
        path.clone(),
        &cap.config.default_app,
    );

    let interlink = interlink_id(req.headers(), &cap.config.interlink_header);
    let remote = remote_addr(&req);
    let request = cap.request(&req, path, remote);

    let (mut parts, body) = req.into_parts();
    let route = route_identity(&parts, &cap.config.default_app);
    route_params(&mut parts, &state).await;
    let user = parts
        .extensions
        .get::<AccessUser>()
        .cloned()
        .or_else(|| shared.user_resolver.as_ref().and_then(|r| r(&parts)));
    let provider_headers = (!shared.auditor.providers().is_empty()).then(|| parts.headers.clone());

    // From here on the request leaves an access whatever becomes of this future: if it is dropped
    // (the client hung up, an outer timeout fired, the server shut down), the guard records it.
    let mut pending = Pending(Some(Finisher {
        shared: shared.clone(),
        state: state.clone(),
        request,
        request_tee: None,
        interlink: interlink.clone(),
        route,
        user,
        method: parts.method.clone(),
        provider_headers,
        status: None,
        content_type: String::new(),
    }));
    let body = request_body(&parts.headers, body, cap, pending.get()).await;
    parts.extensions.insert(AccessId(state.access_id));
    let req = Request::from_parts(parts, body);

    let outcome = state.scope(CatchUnwind::new(inner.call(req))).await;
    let mut finisher = pending.take();
    let res = match outcome {
        Err(panic) => {
            finisher.set_exception_if_none(|| AccessException {
                kind: "panic".into(),
                message: panic_message(&*panic),
                trace: String::new(),
            });
            if shared.catch_panic {
                // The layer answers the panic itself, so the 500 it stores is what the client got.
                finisher.status = Some(500);
                finisher.finish_now(Bson::Null).await;
                let mut res = Response::new(AuditBody::full(Bytes::from_static(
                    b"Internal Server Error",
                )));
                *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(res);
            }
            // No response was produced: the panic goes on to the layers above (a catch-panic
            // layer answers 500; without one the server closes the connection), so none is
            // stored.
            finisher.finish_now(Bson::Null).await;
            std::panic::resume_unwind(panic);
        }
        Ok(Err(e)) => {
            // The inner service failed without a response (as tower-http's `OnFailure` sees
            // it): recorded as the exception, then passed on unchanged.
            finisher.set_exception_if_none(|| AccessException {
                kind: std::any::type_name::<S::Error>().to_owned(),
                message: e.to_string(),
                trace: String::new(),
            });
            finisher.finish_now(Bson::Null).await;
            return Err(e);
        }
        Ok(Ok(res)) => res,
    };
    let (mut head, body) = res.into_parts();
    if let Ok(v) = HeaderValue::from_str(&interlink) {
        if let Ok(name) = http::HeaderName::from_bytes(cap.config.interlink_header.as_bytes()) {
            head.headers.insert(name, v);
        }
    }
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    finisher.status = Some(head.status.as_u16());
    finisher.content_type = content_type.clone();

    let lower = content_type.to_ascii_lowercase();
    let captured = lower.contains("json") || lower.contains("xml");
    if !captured {
        finisher.finish_now(Bson::Null).await;
        return Ok(Response::from_parts(head, AuditBody::passthrough(body)));
    }
    let max = cap.config.max_body_bytes as u64;
    let small_and_known = body.size_hint().exact().is_some_and(|n| n <= max);
    if !config.run_async && small_and_known {
        // Sync mode: the record is stored before the response is returned.
        return Ok(match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let content = cap.response_content(&content_type, &bytes, bytes.len() as u64, true);
                finisher.finish_now(content).await;
                Response::from_parts(head, AuditBody::full(bytes))
            }
            Err(_) => {
                finisher.finish_now(Bson::Null).await;
                Response::from_parts(head, AuditBody::full(Bytes::new()))
            }
        });
    }
    let tee = Tee::new(cap.config.max_body_bytes, Box::new(finisher));
    Ok(Response::from_parts(head, AuditBody::tee(body, tee)))
}

/// Holds the finisher while the request is in the inner service; if the service future is
/// dropped before the response, the drop records the access as cancelled.
struct Pending(Option<Finisher>);

impl Pending {
    fn get(&mut self) -> &mut Finisher {
        self.0
            .as_mut()
            .expect("the finisher is taken once, at the end")
    }

    fn take(&mut self) -> Finisher {
        self.0
            .take()
            .expect("the finisher is taken once, at the end")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut finisher) = self.0.take() else {
            return;
        };
        finisher.status = None;
        finisher.set_exception_if_none(|| AccessException {
            kind: CANCELLED.into(),
            message: "the request ended before a response: the client disconnected, or an outer \
                      layer (a timeout, a shutdown) dropped it"
                .into(),
            trace: String::new(),
        });
        if let Some((auditor, access)) = finisher.build(Bson::Null) {
            auditor.record_access_nowait(access);
        }
    }
}

/// `exception.type` of an access whose request ended before a response (client gone, outer
/// timeout, shutdown); `response` is absent in it.
pub const CANCELLED: &str = "cancelled";

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned())
}

/// What the layer keeps of a request body, and the body the handler gets.
///
/// Form and JSON bodies are recorded: when their announced length is within the cap they are read
/// first (so they are recorded even when the handler never reads them) and handed on unchanged,
/// including the error a read ended with; when the length is not announced they are teed while
/// the handler reads them. Other bodies are never touched.
async fn request_body<B>(
    headers: &HeaderMap,
    body: B,
    cap: &Capture,
    finisher: &mut Finisher,
) -> AuditRequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some(kind) = BodyKind::of(headers) else {
        return AuditRequestBody::new(body);
    };
    let max = cap.config.max_body_bytes;
    match content_length(headers) {
        Some(n) if n <= max as u64 => {
            let mut body = std::pin::pin!(body);
            let mut data = BytesMut::new();
            let mut error: Option<BoxError> = None;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(d) = frame.into_data() {
                            data.extend_from_slice(&d);
                        }
                    }
                    Err(e) => {
                        error = Some(e.into());
                        break;
                    }
                }
            }
            let data = data.freeze();
            finisher.request.POST = match &error {
                Some(e) => read_error(e),
                None => kind.parse(cap, &data),
            };
            AuditRequestBody::buffered(data, error)
        }
        Some(n) => {
            finisher.request.POST = over_cap(n, max);
            AuditRequestBody::new(body)
        }
        None => {
            let tee = Arc::new(Mutex::new(RequestTee::new(max)));
            finisher.request_tee = Some((tee.clone(), kind));
            AuditRequestBody::teed(body, tee)
        }
    }
}

/// The request bodies the layer records.
#[derive(Debug, Clone, Copy)]
enum BodyKind {
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
    fn parse(self, cap: &Capture, data: &[u8]) -> Document {
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

fn read_error(e: &dyn std::fmt::Display) -> Document {
    doc! { BODY_NOTE_KEY: format!("request body could not be read: {e}") }
}

fn over_cap(total: u64, max: usize) -> Document {
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
async fn route_params(parts: &mut http::request::Parts, state: &RequestState) {
    #[cfg(feature = "axum")]
    {
        use axum::extract::FromRequestParts;
        if let Ok(params) = axum::extract::RawPathParams::from_request_parts(parts, &()).await {
            // A parameter named like a secret (`/reset/{token}`) is masked, in both copies.
            let policy = crate::redact::policy_of(state.auditor.as_ref());
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

/// The view of a route without `#[audited_view]`: its matched route, or `<unmatched>`.
fn route_identity(parts: &http::request::Parts, default_app: &str) -> ViewIdentity {
    #[cfg(feature = "axum")]
    if let Some(m) = parts.extensions.get::<axum::extract::MatchedPath>() {
        return ViewIdentity::for_route(default_app, m.as_str());
    }
    let _ = parts;
    ViewIdentity::for_route(default_app, "<unmatched>")
}

struct Finisher {
    shared: Arc<Shared>,
    state: Arc<RequestState>,
    request: AccessRequest,
    /// A request body teed while the handler read it (its length was not announced).
    request_tee: Option<(Arc<Mutex<RequestTee>>, BodyKind)>,
    interlink: String,
    route: ViewIdentity,
    user: Option<AccessUser>,
    method: Method,
    provider_headers: Option<HeaderMap>,
    status: Option<u16>,
    content_type: String,
}

impl Finisher {
    fn set_exception_if_none(&mut self, exception: impl FnOnce() -> AccessException) {
        let mut inner = self.state.lock();
        if inner.exception.is_none() {
            inner.exception = Some(exception());
        }
    }

    /// The access, or `None` when the request is not to be recorded (disabled, blacklisted).
    fn build(mut self, content: Bson) -> Option<(Auditor, Access)> {
        let inner = self.state.lock();
        if inner.disabled || self.state.is_blacklisted(&inner) {
            return None;
        }
        drop(inner);
        if let Some((tee, kind)) = self.request_tee.take() {
            let tee = tee.lock().unwrap_or_else(|p| p.into_inner());
            let cap = &self.shared.capture;
            self.request.POST = if let Some(e) = &tee.error {
                read_error(e)
            } else if tee.over_cap {
                over_cap(tee.total, cap.config.max_body_bytes)
            } else if tee.complete {
                kind.parse(cap, &tee.kept)
            } else {
                doc! { BODY_NOTE_KEY: "request body not read by the handler" }
            };
        }
        let inner = self.state.lock();
        let view = inner.view.cloned().unwrap_or(self.route);
        let mut access_view = AccessView::new(view.full_name, view.app, view.name);
        access_view.args = inner.args.clone();
        access_view.kwargs = inner.kwargs.clone();
        let user = inner
            .user
            .clone()
            .or(self.user)
            .unwrap_or_else(AccessUser::anonymous);
        let mut custom = inner.custom.clone();
        drop(inner);
        let auditor = self.shared.auditor.clone();
        let providers = auditor.providers();
        if !providers.is_empty() {
            let headers = self.provider_headers.unwrap_or_default();
            let ctx = ProviderContext {
                path: &self.request.path,
                method: &self.method,
                headers: &headers,
                user: Some(&user),
                status: self.status,
            };
            for (key, provider) in providers {
                run_provider(&self.shared, key, provider, &ctx, &mut custom);
            }
        }
        let response = self.status.map(|status_code| AccessResponse {
            content,
            content_type: self.content_type.clone(),
            status_code: status_code.into(),
        });
        let access = Access {
            id: self.state.access_id,
            interlink_id: Some(self.interlink),
            request: self.request,
            response,
            exception: self.state.lock().exception.clone(),
            time: AccessTime {
                request: self.state.started,
                response: Some(Utc::now()),
            },
            view: access_view,
            user: Some(user),
            custom: (!custom.is_empty()).then_some(custom),
            process: None,
        };
        Some((auditor, access))
    }

    /// Builds and records the access from the service future (sync mode waits for the write).
    async fn finish_now(self, content: Bson) {
        if let Some((auditor, access)) = self.build(content) {
            auditor.record_access(access).await;
        }
    }
}

impl Finish for Finisher {
    fn finish(self: Box<Self>, kept: Bytes, total: u64, complete: bool) {
        let content =
            self.shared
                .capture
                .response_content(&self.content_type, &kept, total, complete);
        if let Some((auditor, access)) = (*self).build(content) {
            auditor.record_access_nowait(access);
        }
    }
}

/// Runs one provider in isolation (one failing provider must not lose the record): a failure or panic is logged and counted; null and empty
/// results are dropped; a result over the body cap is replaced by a marker.
fn run_provider(
    shared: &Shared,
    key: &str,
    provider: &crate::auditor::ProviderFn,
    ctx: &ProviderContext<'_>,
    custom: &mut Document,
) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| provider(ctx))) {
        Ok(value) => {
            let empty = match &value {
                Bson::Null => true,
                Bson::Document(d) => d.is_empty(),
                Bson::Array(a) => a.is_empty(),
                Bson::String(s) => s.is_empty(),
                _ => false,
            };
            if empty {
                return;
            }
            let value = escape_value(value);
            let size = bson::to_vec(&bson::doc! { "v": &value })
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            let cap = shared.capture.config.max_body_bytes;
            let value = if size > cap {
                Bson::String(format!(
                    "<provider data not stored: {size} bytes over the {cap}-byte cap>"
                ))
            } else {
                value
            };
            custom.insert(crate::keys::escape_key(key), value);
        }
        Err(panic) => {
            let n = shared.provider_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(target: "audit", provider = key, failures = n, message, "custom provider panicked; its data is left out");
        }
    }
}
