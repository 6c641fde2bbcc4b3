//! The per-request audit context: a task-local shared by the HTTP layer, the handler's
//! `#[audited_view]` wrapper and the model-action API, so that concurrent requests never share
//! state, a request that never reaches a handler cannot touch another's record, and the
//! "current access" ends with the request (the original kept it in shared middleware state,
//! where all three went wrong).
//!
//! Outside any request, an audited function opens a *standalone* context of its own (a job, a CLI
//! command): it then records its own access when it returns.

use crate::auditor::Auditor;
use crate::document::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
};
use crate::identity::ViewIdentity;
use bson::{oid::ObjectId, Bson, Document};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex, MutexGuard};

tokio::task_local! {
    static CURRENT: Arc<RequestState>;
}

/// State of one request (or standalone audited call) being audited.
pub struct RequestState {
    /// The access id, chosen at the start so model actions can reference it.
    pub(crate) access_id: ObjectId,
    /// When the request arrived.
    pub(crate) started: DateTime<Utc>,
    /// Where this request's records go.
    pub(crate) auditor: Option<Auditor>,
    /// The request path (`None` outside HTTP), for the blacklist.
    path: Option<String>,
    /// The app of a route without `#[audited_view]`.
    default_app: String,
    inner: Mutex<StateInner>,
}

#[derive(Default)]
pub(crate) struct StateInner {
    pub(crate) view: Option<&'static ViewIdentity>,
    /// The route's URL parameters, in order (the original's positional `view.args`).
    pub(crate) args: Vec<Bson>,
    pub(crate) kwargs: Document,
    pub(crate) user: Option<AccessUser>,
    pub(crate) exception: Option<AccessException>,
    pub(crate) disabled: bool,
    pub(crate) custom: Document,
}

impl RequestState {
    /// A standalone context (an audited call outside any request).
    pub(crate) fn standalone(auditor: Option<Auditor>) -> Arc<Self> {
        Arc::new(RequestState {
            access_id: ObjectId::new(),
            started: Utc::now(),
            auditor,
            path: None,
            default_app: String::new(),
            inner: Mutex::new(StateInner::default()),
        })
    }

    /// The state of an HTTP request to `path`.
    #[cfg(feature = "http")]
    pub(crate) fn for_request(auditor: Auditor, path: String, default_app: &str) -> Arc<Self> {
        Arc::new(RequestState {
            access_id: ObjectId::new(),
            started: Utc::now(),
            auditor: Some(auditor),
            path: Some(path),
            default_app: default_app.to_owned(),
            inner: Mutex::new(StateInner::default()),
        })
    }

    /// True when the request's path is blacklisted for its view's app: decided with the
    /// audited handler's app once it runs, with the default app before.
    pub(crate) fn is_blacklisted(&self, inner: &StateInner) -> bool {
        let (Some(path), Some(auditor)) = (&self.path, &self.auditor) else {
            return false;
        };
        let app = inner
            .view
            .map_or(self.default_app.as_str(), |v| v.app.as_str());
        auditor.config().blacklist.is_blacklisted(app, path)
    }

    /// The redaction policy of this request's auditor (the default policy without one).
    pub(crate) fn redaction(&self) -> std::sync::Arc<crate::redact::Redaction> {
        match &self.auditor {
            Some(a) => a.config().capture.redaction(),
            None => crate::redact::policy_for(&crate::redact::Rules::default()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with this state as the current context.
    pub(crate) fn scope<F: std::future::Future>(
        self: &Arc<Self>,
        f: F,
    ) -> tokio::task::futures::TaskLocalFuture<Arc<RequestState>, F> {
        CURRENT.scope(self.clone(), f)
    }

    /// Runs `f` with this state as the current context (synchronous code).
    pub(crate) fn sync_scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }
}

/// What the HTTP layer knows of a request besides its context; a standalone call has none of it.
pub(crate) struct HttpAccess {
    pub(crate) interlink: String,
    pub(crate) request: AccessRequest,
    pub(crate) response: Option<AccessResponse>,
    /// The view of a request that no audited handler claimed.
    pub(crate) route: ViewIdentity,
    /// The user known from the request itself (its extensions, the layer's resolver).
    pub(crate) user: Option<AccessUser>,
}

impl RequestState {
    /// The audited handler that claimed this request, once it runs.
    #[cfg(feature = "http")]
    pub(crate) fn view(&self) -> Option<&'static ViewIdentity> {
        self.lock().view
    }

    /// True when this request leaves an access: not disabled, not blacklisted.
    #[cfg(feature = "http")]
    pub(crate) fn is_recorded(&self) -> bool {
        let inner = self.lock();
        !inner.disabled && !self.is_blacklisted(&inner)
    }

    /// The access of this request, built in one place for the HTTP layer and for standalone
    /// calls. `None` when it is not to be recorded, or when a standalone call never reached an
    /// audited view. `add_custom` sees the final user and may add to `custom` (the HTTP layer's
    /// providers run there).
    pub(crate) fn to_access(
        &self,
        http: Option<HttpAccess>,
        add_custom: impl FnOnce(Option<&AccessUser>, &mut Document),
    ) -> Option<Access> {
        let inner = self.lock();
        if inner.disabled || self.is_blacklisted(&inner) {
            return None;
        }
        let view = match (inner.view, &http) {
            (Some(v), _) => v.clone(),
            (None, Some(h)) => h.route.clone(),
            (None, None) => return None,
        };
        let mut access_view = AccessView::new(view.full_name, view.app, view.name);
        access_view.args = inner.args.clone();
        access_view.kwargs = inner.kwargs.clone();
        let exception = inner.exception.clone();
        let mut custom = inner.custom.clone();
        let user = inner.user.clone();
        drop(inner);
        let (interlink, request, response, user) = match http {
            Some(h) => (
                Some(h.interlink),
                h.request,
                h.response,
                // Over HTTP every access has a user, anonymous when none is known.
                Some(user.or(h.user).unwrap_or_else(AccessUser::anonymous)),
            ),
            None => (None, AccessRequest::new(""), None, user),
        };
        // Providers run without the state's lock: they are application code.
        add_custom(user.as_ref(), &mut custom);
        Some(Access {
            id: self.access_id,
            interlink_id: interlink,
            request,
            response,
            exception,
            time: AccessTime {
                request: self.started,
                response: Some(Utc::now()),
            },
            view: access_view,
            user,
            custom: (!custom.is_empty()).then_some(custom),
            process: None,
        })
    }
}

// The lookups of "the current auditor" live with the request context, which they consult first;
// the auditor itself knows nothing of requests.
impl Auditor {
    /// The auditor of the current request, else the global one.
    pub fn current() -> Option<Auditor> {
        current()
            .and_then(|s| s.auditor.clone())
            .or_else(Self::global)
    }

    /// Records the access of a standalone audited call (no HTTP request).
    pub(crate) fn record_standalone(&self, state: &RequestState) {
        if let Some(access) = state.to_access(None, |_, _| {}) {
            self.record_access_nowait(access);
        }
    }
}

/// The context of the request being served by this task, if any.
pub(crate) fn current() -> Option<Arc<RequestState>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// The id the current request's access will have; `None` outside requests and in requests that
/// are not recorded (disabled handlers). Model actions link to it.
pub fn current_access_id() -> Option<ObjectId> {
    let state = current()?;
    let inner = state.lock();
    let recorded = !inner.disabled && !state.is_blacklisted(&inner);
    recorded.then_some(state.access_id)
}

/// Sets the user of the current request (from inside a handler, after authentication).
pub fn set_user(user: AccessUser) {
    if let Some(s) = current() {
        s.lock().user = Some(user);
    }
}

/// Adds a value under `custom.<key>` of the current request's access.
pub fn add_custom(key: &str, value: impl Into<Bson>) {
    if let Some(s) = current() {
        s.lock().custom.insert(
            crate::keys::escape_key(key),
            crate::keys::escape_value(value.into()),
        );
    }
}

/// Marks the current request as not to be recorded (what `#[disable_audit]` does).
pub fn disable_current() {
    if let Some(s) = current() {
        s.lock().disabled = true;
    }
}
