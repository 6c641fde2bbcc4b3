//! The response future: reads a recorded request body when it must be read first, runs the inner
//! service in the request's context, and records the access when the response is complete — or
//! when the future is dropped before that (the client hung up, an outer timeout fired).
//!
//! It is a state machine rather than an `async fn` so that the service can name its future type
//! without boxing it. The only allocations for a wait are where the request must wait anyway: in
//! sync mode (the record is stored before the response) and when the writer's queue is full.

use super::body::{AuditBody, AuditRequestBody, BoxError, Finish, RequestTee, Tee};
use super::layer::Shared;
use super::service::{over_cap, read_error, BodyKind, BODY_NOTE_KEY};
use crate::context::{HttpAccess, RequestState};
use crate::document::{Access, AccessException, AccessRequest, AccessResponse, AccessUser};
use crate::identity::ViewIdentity;
use crate::keys::escape_value;
use crate::provider::ProviderContext;
use crate::view::CatchUnwind;
use bson::{doc, Bson, Document};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::task::futures::TaskLocalFuture;

/// `exception.type` of an access whose request ended before a response (client gone, outer
/// timeout, shutdown); `response` is absent in it.
pub const CANCELLED: &str = "cancelled";

type Wait<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`AuditService`](super::AuditService).
    pub struct ResponseFuture<S, F, ReqB, ResB, E> {
        #[pin]
        state: State<S, F, ReqB, ResB, E>,
        // Holds the record while the request is in the inner service; dropping it records the
        // access as cancelled.
        pending: Pending,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S, F, ReqB, ResB, E> {
        // Auditing is off: the inner future, untouched.
        Off { #[pin] inner: F },
        // A form or JSON body of announced length is read before the handler is called, so it is
        // recorded even when the handler never reads it.
        ReadBody {
            #[pin] body: ReqB,
            data: BytesMut,
            kind: BodyKind,
            call: Option<(S, http::request::Parts)>,
        },
        // The inner service runs in the request's context.
        Inner { #[pin] inner: TaskLocalFuture<Arc<RequestState>, CatchUnwind<F>> },
        // Waiting for the record to be stored (sync mode, or a full queue) or for a small response
        // body to be read (sync mode).
        Storing { wait: Wait<Result<Response<AuditBody<ResB>>, E>> },
        Done,
    }
}

impl<S, F, ReqB, ResB, E> std::fmt::Debug for ResponseFuture<S, F, ReqB, ResB, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Off { .. } => "off",
            State::ReadBody { .. } => "reading the request body",
            State::Inner { .. } => "in the inner service",
            State::Storing { .. } => "storing the record",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, F, ReqB, ResB, E> ResponseFuture<S, F, ReqB, ResB, E> {
    /// Auditing is off: the request and the response pass through untouched.
    pub(crate) fn off(inner: F) -> Self {
        ResponseFuture {
            state: State::Off { inner },
            pending: Pending(None),
        }
    }

    /// The inner service is called at once.
    pub(crate) fn called(inner: F, state: &Arc<RequestState>, finisher: Finisher) -> Self
    where
        F: Future,
    {
        ResponseFuture {
            state: State::Inner {
                inner: state.scope(CatchUnwind::new(inner)),
            },
            pending: Pending(Some(finisher)),
        }
    }

    /// The request body is read first, then the inner service is called.
    pub(crate) fn reading(
        service: S,
        parts: http::request::Parts,
        body: ReqB,
        kind: BodyKind,
        finisher: Finisher,
    ) -> Self {
        ResponseFuture {
            state: State::ReadBody {
                body,
                data: BytesMut::new(),
                kind,
                call: Some((service, parts)),
            },
            pending: Pending(Some(finisher)),
        }
    }
}

impl<S, F, ReqB, ResB, E> Future for ResponseFuture<S, F, ReqB, ResB, E>
where
    S: tower::Service<Request<AuditRequestBody<ReqB>>, Future = F>,
    F: Future<Output = Result<Response<ResB>, E>>,
    E: std::fmt::Display + Send + 'static,
    ReqB: Body<Data = Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Output = Result<Response<AuditBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Off { inner } => {
                    let res = ready!(inner.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(res.map(|r| r.map(AuditBody::passthrough)));
                }
                StateProj::ReadBody {
                    mut body,
                    data,
                    kind,
                    call,
                } => {
                    let error: Option<BoxError> = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(d) = frame.into_data() {
                                    data.extend_from_slice(&d);
                                }
                            }
                            Some(Err(e)) => break Some(e.into()),
                            None => break None,
                        }
                    };
                    let data = std::mem::take(data).freeze();
                    let finisher = this.pending.get();
                    finisher.request.POST = match &error {
                        Some(e) => read_error(e),
                        None => kind.parse(&finisher.shared.capture, &data),
                    };
                    let state = finisher.state.clone();
                    let (mut service, parts) = call.take().expect("the body is read once");
                    let req = Request::from_parts(parts, AuditRequestBody::buffered(data, error));
                    let inner = service.call(req);
                    this.state.set(State::Inner {
                        inner: state.scope(CatchUnwind::new(inner)),
                    });
                }
                StateProj::Inner { inner } => {
                    let outcome = ready!(inner.poll(cx));
                    let finisher = this.pending.take();
                    match respond(finisher, outcome) {
                        Step::Ready(res) => {
                            this.state.set(State::Done);
                            return Poll::Ready(res);
                        }
                        Step::Wait(wait) => this.state.set(State::Storing { wait }),
                    }
                }
                StateProj::Storing { wait } => {
                    let res = ready!(wait.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(res);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

enum Step<T> {
    Ready(T),
    Wait(Wait<T>),
}

type Outcome<ResB, E> = Result<Result<Response<ResB>, E>, Box<dyn std::any::Any + Send>>;

/// What becomes of the inner service's outcome: the response to return, and when its access is
/// recorded.
fn respond<ResB, E>(
    mut finisher: Finisher,
    outcome: Outcome<ResB, E>,
) -> Step<Result<Response<AuditBody<ResB>>, E>>
where
    E: std::fmt::Display + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let res = match outcome {
        Err(panic) => {
            finisher.set_exception_if_none(|| AccessException {
                kind: "panic".into(),
                message: panic_message(&*panic),
                trace: String::new(),
            });
            if finisher.shared.catch_panic {
                // The layer answers the panic itself, so the 500 it stores is what the client got.
                finisher.status = Some(500);
                let mut res = Response::new(AuditBody::full(Bytes::from_static(
                    b"Internal Server Error",
                )));
                *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                return finisher.finish_then(Bson::Null, move || Ok(res));
            }
            // No response was produced: the panic goes on to the layers above (a catch-panic
            // layer answers 500; without one the server closes the connection), so none is
            // stored.
            return finisher.finish_then(Bson::Null, move || std::panic::resume_unwind(panic));
        }
        Ok(Err(e)) => {
            // The inner service failed without a response (as tower-http's `OnFailure` sees
            // it): recorded as the exception, then passed on unchanged.
            finisher.set_exception_if_none(|| AccessException {
                kind: std::any::type_name::<E>().to_owned(),
                message: e.to_string(),
                trace: String::new(),
            });
            return finisher.finish_then(Bson::Null, move || Err(e));
        }
        Ok(Ok(res)) => res,
    };
    let cap = &finisher.shared.capture;
    let (mut head, body) = res.into_parts();
    if let Ok(v) = HeaderValue::from_str(&finisher.interlink) {
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
    let lower = content_type.to_ascii_lowercase();
    finisher.content_type = content_type;

    let captured = lower.contains("json") || lower.contains("xml");
    if !captured {
        return finisher.finish_then(Bson::Null, move || {
            Ok(Response::from_parts(head, AuditBody::passthrough(body)))
        });
    }
    let max = cap.config.max_body_bytes as u64;
    let small_and_known = body.size_hint().exact().is_some_and(|n| n <= max);
    if !finisher.shared.auditor.config().run_async && small_and_known {
        // Sync mode: the record is stored before the response is returned.
        return Step::Wait(Box::pin(async move {
            Ok(match body.collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    let content = finisher.shared.capture.response_content(
                        &finisher.content_type,
                        &bytes,
                        bytes.len() as u64,
                        true,
                    );
                    finisher.finish(content).await;
                    Response::from_parts(head, AuditBody::full(bytes))
                }
                Err(_) => {
                    finisher.finish(Bson::Null).await;
                    Response::from_parts(head, AuditBody::full(Bytes::new()))
                }
            })
        }));
    }
    // The access is finished at the end of the body, where nothing can wait: the room for it in
    // the queue is taken now, while the response can still wait for it (back-pressure instead of
    // records dropped when the store falls behind).
    let max = cap.config.max_body_bytes;
    let content = body
        .size_hint()
        .upper()
        .map_or(max, |n| (n as usize).min(max));
    let estimate = finisher.size_hint + content;
    let tee_response = move |mut finisher: Finisher, reserved| {
        finisher.reserved = reserved;
        let tee = Tee::new(max, Box::new(finisher));
        Ok(Response::from_parts(head, AuditBody::tee(body, tee)))
    };
    match finisher.shared.auditor.reserve(estimate) {
        Ok(reserved) => Step::Ready(tee_response(finisher, reserved)),
        Err(wait) => Step::Wait(Box::pin(async move {
            let reserved = wait.await;
            tee_response(finisher, reserved)
        })),
    }
}

/// Holds the finisher while the request is in the inner service; if the service future is
/// dropped before the response, the drop records the access as cancelled.
pub(crate) struct Pending(Option<Finisher>);

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

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned())
}

/// Everything the access needs besides the request's context, gathered as the request passes.
pub(crate) struct Finisher {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<RequestState>,
    pub(crate) request: AccessRequest,
    /// The request body being teed, when its length was not announced.
    pub(crate) request_tee: Option<(Arc<Mutex<RequestTee>>, BodyKind)>,
    pub(crate) interlink: String,
    /// The matched route, when the router gave one.
    pub(crate) route: Option<String>,
    pub(crate) user: Option<AccessUser>,
    pub(crate) method: Method,
    /// The request headers, kept only when providers will want them.
    pub(crate) provider_headers: Option<HeaderMap>,
    pub(crate) status: Option<u16>,
    pub(crate) content_type: String,
    /// Room in the queue for the access, when it is finished at the end of the response body.
    pub(crate) reserved: Option<crate::writer::Reservation>,
    /// About how many bytes the access takes without its response content (see
    /// `record_size_hint`): the room reserved for it.
    pub(crate) size_hint: usize,
}

impl Finisher {
    fn set_exception_if_none(&mut self, exception: impl FnOnce() -> AccessException) {
        let mut inner = self.state.lock();
        if inner.exception.is_none() {
            inner.exception = Some(exception());
        }
    }

    /// The view of a request no audited handler claimed: the handler seen serving its route
    /// before, else the route itself, else `<unmatched>`. Learns the route's handler when one ran.
    fn route_view(&self) -> ViewIdentity {
        let app = &self.shared.capture.config.default_app;
        let Some(route) = &self.route else {
            return ViewIdentity::for_route(app, "<unmatched>");
        };
        let views = &self.shared.route_views;
        match self.state.view() {
            Some(view) => {
                views.learn(&self.method, route, view);
                view.clone()
            }
            None => views
                .get(&self.method, route)
                .cloned()
                .unwrap_or_else(|| ViewIdentity::for_route(app, route)),
        }
    }

    /// The access, or `None` when the request is not to be recorded (disabled, blacklisted).
    fn build(mut self, content: Bson) -> Option<(crate::auditor::Auditor, Access)> {
        if !self.state.is_recorded() {
            return None;
        }
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
        let response = self.status.map(|status_code| AccessResponse {
            content,
            content_type: self.content_type.clone(),
            status_code: status_code.into(),
        });
        let auditor = self.shared.auditor.clone();
        // Providers see the path; it is copied only when there are providers to see it.
        let path = (!auditor.providers().is_empty()).then(|| self.request.path.clone());
        let route = self.route_view();
        let http = HttpAccess {
            interlink: self.interlink,
            request: self.request,
            response,
            route,
            user: self.user,
        };
        let (shared, method, status) = (&self.shared, &self.method, self.status);
        let provider_headers = self.provider_headers;
        let access = self.state.to_access(Some(http), |user, custom| {
            let Some(path) = path else { return };
            let headers = provider_headers.unwrap_or_default();
            let ctx = ProviderContext {
                path: &path,
                method,
                headers: &headers,
                user,
                status,
            };
            for (key, provider) in auditor.providers() {
                run_provider(shared, key, provider, &ctx, custom);
            }
        })?;
        Some((auditor, access))
    }

    /// Builds and records the access, waiting for the store in sync mode.
    async fn finish(self, content: Bson) {
        if let Some((auditor, access)) = self.build(content) {
            auditor.record_access(access).await;
        }
    }

    /// Records the access, then gives `then()`: at once when the record is queued without
    /// waiting (async mode with room in the queue), else after the wait.
    fn finish_then<T: Send + 'static>(
        self,
        content: Bson,
        then: impl FnOnce() -> T + Send + 'static,
    ) -> Step<T> {
        let Some((auditor, access)) = self.build(content) else {
            return Step::Ready(then());
        };
        match auditor.record_access_or_wait(access) {
            None => Step::Ready(then()),
            Some(wait) => Step::Wait(Box::pin(async move {
                wait.await;
                then()
            })),
        }
    }
}

impl Finish for Finisher {
    fn finish(mut self: Box<Self>, kept: Bytes, total: u64, complete: bool) {
        let content =
            self.shared
                .capture
                .response_content(&self.content_type, &kept, total, complete);
        let reserved = self.reserved.take();
        if let Some((auditor, access)) = (*self).build(content) {
            auditor.record_access_reserved(access, reserved);
        }
    }
}

/// Runs one provider in isolation (one failing provider must not lose the record): a failure or
/// panic is logged and counted; null and empty results are dropped; a result over the body cap is
/// replaced by a marker.
fn run_provider(
    shared: &Shared,
    key: &str,
    provider: &crate::provider::ProviderFn,
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
            let message = panic_message(&*panic);
            tracing::error!(target: "audit", provider = key, failures = n, message, "custom provider panicked; its data is left out");
        }
    }
}
