//! The layer and its service: one access per request, built from the request's context when the
//! response is complete.

use super::body::{AuditBody, BoxError, Finish, Tee};
use super::capture::{decoded_path, Capture};
use super::ProviderContext;
use crate::auditor::Auditor;
use crate::context::RequestState;
use crate::document::{Access, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView};
use crate::keys::escape_value;
use crate::view::{CatchUnwind, ViewIdentity};
use bson::{Bson, Document};
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

type UserResolver = Arc<dyn Fn(&http::request::Parts) -> Option<AccessUser> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    auditor: Auditor,
    capture: Capture,
    user_resolver: Option<UserResolver>,
    /// Shared by every clone of the layer and every service it made.
    provider_failures: Arc<AtomicU64>,
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
    S: tower::Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqB: Body + From<Bytes> + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Send,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
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
) -> Result<Response<AuditBody<ResB>>, Infallible>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>,
    ReqB: Body + From<Bytes>,
    ResB: Body<Data = Bytes>,
{
    if !shared.auditor.is_active() {
        // F61: the response passes through untouched.
        let res = inner.call(req).await?;
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
    let mut request = cap.request(&req, path.clone(), remote);

    let (mut parts, body) = req.into_parts();
    let route = route_identity(&parts, &cap.config.default_app);
    route_params(&mut parts, &state).await;
    let user = parts
        .extensions
        .get::<AccessUser>()
        .cloned()
        .or_else(|| shared.user_resolver.as_ref().and_then(|r| r(&parts)));
    let method = parts.method.clone();
    let provider_headers = (!shared.auditor.providers().is_empty()).then(|| parts.headers.clone());

    // Form bodies are kept up to the cap (known length only); others stream to the handler untouched.
    let body = if is_form(&parts.headers)
        && content_length(&parts.headers).is_some_and(|n| n <= cap.config.max_body_bytes as u64)
    {
        match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                request.POST = cap.form_map(&bytes);
                ReqB::from(bytes)
            }
            Err(_) => {
                request
                    .POST
                    .insert("_audit_error", "request body could not be read");
                ReqB::from(Bytes::new())
            }
        }
    } else {
        body
    };
    parts.extensions.insert(AccessId(state.access_id));
    let req = Request::from_parts(parts, body);

    let outcome = state.scope(CatchUnwind::new(inner.call(req))).await;
    let finisher = Finisher {
        shared: shared.clone(),
        state: state.clone(),
        request,
        interlink: interlink.clone(),
        route,
        user,
        method,
        provider_headers,
        status: None,
        content_type: String::new(),
    };
    let res = match outcome {
        Err(panic) => {
            // The handler panicked: record the access with its exception and the 500 the request
            // ends in (D45), then let the panic go on so the host's own handling (a catch-panic
            // layer, the server) is unchanged.
            let mut finisher = finisher;
            finisher.status = Some(500);
            finisher.finish_now(Bson::Null).await;
            std::panic::resume_unwind(panic);
        }
        Ok(Err(never)) => match never {},
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
    let mut finisher = finisher;
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

/// The access id of the request, in the request extensions (handlers can extract it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessId(pub bson::oid::ObjectId);

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

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

/// The route's URL parameters (F40): by name in `view.kwargs`, and in order in `view.args`.
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
    interlink: String,
    route: ViewIdentity,
    user: Option<AccessUser>,
    method: Method,
    provider_headers: Option<HeaderMap>,
    status: Option<u16>,
    content_type: String,
}

impl Finisher {
    /// The access, or `None` when the request is not to be recorded (disabled, blacklisted).
    fn build(self, content: Bson) -> Option<(Auditor, Access)> {
        let inner = self.state.lock();
        if inner.disabled || self.state.is_blacklisted(&inner) {
            return None;
        }
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

/// Runs one provider in isolation (D46): a failure or panic is logged and counted; null and empty
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
