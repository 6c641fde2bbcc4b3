//! The layer: what every service it makes shares (the auditor, the capture rules, the options).

use super::capture::Capture;
use super::service::AuditService;
use crate::auditor::Auditor;
use crate::document::AccessUser;
use crate::identity::ViewIdentity;
use http::Method;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

type UserResolver = Arc<dyn Fn(&http::request::Parts) -> Option<AccessUser> + Send + Sync>;

/// What the layer, its clones and every service they made share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) auditor: Auditor,
    pub(crate) capture: Capture,
    /// The resolver and its type name (closures are shown by type name in `Debug`).
    user_resolver: Option<(UserResolver, &'static str)>,
    /// Shared by every clone of the layer and every service it made.
    pub(crate) provider_failures: Arc<AtomicU64>,
    /// The layer answers a panicking handler with a 500 itself.
    pub(crate) catch_panic: bool,
    /// The audited handler seen serving each route, so that a request rejected before its
    /// handler ran (an extractor refused it) is stored under the same view as the accepted ones.
    pub(crate) route_views: Arc<RouteViews>,
}

impl Shared {
    pub(crate) fn resolve_user(&self, parts: &http::request::Parts) -> Option<AccessUser> {
        self.user_resolver.as_ref().and_then(|(r, _)| r(parts))
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLayer")
            .field("auditor", &self.auditor)
            .field("capture", &self.capture)
            .field(
                "user_resolver",
                &self.user_resolver.as_ref().map(|(_, name)| name),
            )
            .field("catch_panic", &self.catch_panic)
            .finish_non_exhaustive()
    }
}

/// Route (matched path, then method) → the audited handler that serves it. Keyed by the path
/// first so that a lookup borrows the request's path instead of allocating a key.
#[derive(Debug, Default)]
pub(crate) struct RouteViews(RwLock<HashMap<String, Vec<(Method, &'static ViewIdentity)>>>);

impl RouteViews {
    pub(crate) fn get(&self, method: &Method, route: &str) -> Option<&'static ViewIdentity> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(route)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, v)| *v)
    }

    pub(crate) fn learn(&self, method: &Method, route: &str, view: &'static ViewIdentity) {
        if self
            .get(method, route)
            .is_some_and(|v| std::ptr::eq(v, view))
        {
            return;
        }
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let views = map.entry(route.to_owned()).or_default();
        match views.iter_mut().find(|(m, _)| m == method) {
            Some(entry) => entry.1 = view,
            None => views.push((method.clone(), view)),
        }
    }
}

/// The audit layer. Wrap an axum `Router` (`.layer(AuditLayer::new(auditor))`) or any service.
#[derive(Clone)]
pub struct AuditLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for AuditLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
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
                route_views: Arc::default(),
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
        self.with(|s| s.user_resolver = Some((Arc::new(f), std::any::type_name::<F>())))
    }

    /// Answers a panicking handler with `500 Internal Server Error` in the layer itself, so the
    /// stored status is the one the client got. Without it the panic is recorded (with no
    /// response) and goes on to the layers above, as if the layer were not there.
    pub fn catch_panic(self) -> Self {
        self.with(|s| s.catch_panic = true)
    }

    /// Providers that failed or panicked so far (each failure is also logged).
    pub fn provider_failures(&self) -> u64 {
        self.shared.provider_failures.load(Ordering::Relaxed)
    }

    fn with(self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = (*self.shared).clone();
        change(&mut shared);
        AuditLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> tower::Layer<S> for AuditLayer {
    type Service = AuditService<S>;
    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService::new(inner, self.shared.clone())
    }
}
