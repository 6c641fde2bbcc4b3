//! The runtime half of `#[audited_view]` / `#[disable_audit]`: the view identity computed from the
//! handler's path, and the guard that opens (or joins) the request context, runs the body with
//! panics caught, and records the outcome.

use crate::context::{self, RequestState};
use crate::document::AccessException;
use crate::identity::ViewIdentity;
use bson::Bson;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

/// What a handler's return value says about its outcome.
#[derive(Debug, Default)]
pub struct Outcome {
    pub(crate) exception: Option<AccessException>,
}

thread_local! {
    /// Depth of audited bodies running on this thread, so the panic hook only pays for backtraces
    /// of panics inside audited handlers.
    static IN_VIEW: Cell<u32> = const { Cell::new(0) };
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_VIEW.with(Cell::get) > 0 {
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                LAST_BACKTRACE.with(|b| *b.borrow_mut() = Some(bt));
            }
            // The host's own panic handling runs unchanged.
            previous(info);
        }));
    });
}

struct InView;
impl InView {
    fn enter() -> Self {
        IN_VIEW.with(|c| c.set(c.get() + 1));
        InView
    }
}
impl Drop for InView {
    fn drop(&mut self) {
        IN_VIEW.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// Guard of one audited call. Used by generated code.
pub struct ViewGuard {
    state: Arc<RequestState>,
    ident: &'static ViewIdentity,
    owner: bool,
    audited: bool,
}

impl ViewGuard {
    /// Joins the current request context, or opens a standalone one.
    pub fn enter(ident: &'static ViewIdentity, args: &[(&str, Bson)], audited: bool) -> Self {
        install_panic_hook();
        let (state, owner) = match context::current() {
            Some(s) => (s, false),
            None => (
                RequestState::standalone(crate::auditor::Auditor::global()),
                true,
            ),
        };
        {
            let mut inner = state.lock();
            if !audited {
                inner.disabled = true;
            } else if inner.view.is_none() {
                inner.view = Some(ident);
                let policy = crate::redact::policy_of(state.auditor.as_ref());
                for (k, v) in args {
                    inner
                        .kwargs
                        .insert(crate::keys::escape_key(k), policy.value(k, v.clone()));
                }
            }
        }
        ViewGuard {
            state,
            ident,
            owner,
            audited,
        }
    }

    /// Runs a synchronous body in the context, catching a panic.
    pub fn run_sync<R>(&self, f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
        self.state.sync_scope(|| {
            let _in = InView::enter();
            catch_unwind(AssertUnwindSafe(f))
        })
    }

    /// Runs an async body in the context, catching a panic.
    pub fn run_async<F: Future>(
        &self,
        f: F,
    ) -> tokio::task::futures::TaskLocalFuture<Arc<RequestState>, CatchUnwind<F>> {
        self.state.scope(CatchUnwind::new(f))
    }

    fn is_primary(&self) -> bool {
        self.state
            .lock()
            .view
            .is_some_and(|v| std::ptr::eq(v, self.ident))
    }

    /// Records a panic as the exception (type `panic`, its message, the backtrace) and resumes it,
    /// so the host's panic handling is unchanged.
    pub fn panicked(&self, payload: Box<dyn Any + Send>) -> ! {
        if self.audited && self.is_primary() {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_owned());
            let trace = LAST_BACKTRACE
                .with(|b| b.borrow_mut().take())
                .unwrap_or_default();
            let exception = AccessException {
                kind: "panic".into(),
                message,
                trace,
            };
            self.state.lock().exception = Some(self.redacted(exception));
            self.finish_owned();
        }
        resume_unwind(payload)
    }

    /// Records the outcome of a returned value (`Err` becomes the exception).
    pub fn finish(&self, outcome: Outcome) {
        if !self.audited || !self.is_primary() {
            return;
        }
        if let Some(e) = outcome.exception {
            let e = self.redacted(e);
            self.state.lock().exception.get_or_insert(e);
        }
        self.finish_owned();
    }

    /// An exception as stored: secrets in its message and trace masked, both capped.
    fn redacted(&self, e: AccessException) -> AccessException {
        crate::redact::policy_of(self.state.auditor.as_ref()).exception(e)
    }

    /// A standalone call writes its own access (a request's access is written by the layer).
    fn finish_owned(&self) {
        if !self.owner {
            return;
        }
        let Some(auditor) = self.state.auditor.clone() else {
            tracing::debug!(target: "audit", view = %self.ident.full_name, "no global auditor installed; call not recorded");
            return;
        };
        auditor.record_standalone(&self.state);
    }
}

pin_project_lite::pin_project! {
    /// Catches a panic of the wrapped future. Used by generated code and by the HTTP layer.
    ///
    /// The future is pinned in place (projected), not boxed: an audited async handler costs no
    /// allocation for this.
    pub struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        CatchUnwind { inner: f }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _in = InView::enter();
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

/// Autoref-specialisation wrapper. Used by generated code.
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// `Result<_, E: Error>`: type path, message, and the chain of sources as the trace (the original kept only the bare class name).
pub trait ViaError {
    /// The outcome.
    fn __audit_outcome(&self) -> Outcome;
}
impl<T, E: std::error::Error + 'static> ViaError for &&&Wrap<'_, Result<T, E>> {
    fn __audit_outcome(&self) -> Outcome {
        let Err(e) = self.0 else {
            return Outcome::default();
        };
        let mut trace = Vec::new();
        let mut source = e.source();
        while let Some(s) = source {
            trace.push(format!("caused by: {s}"));
            source = s.source();
        }
        exception(std::any::type_name::<E>(), e.to_string(), trace.join("\n"))
    }
}

/// `Result<_, E: Display>`.
pub trait ViaDisplay {
    /// The outcome.
    fn __audit_outcome(&self) -> Outcome;
}
impl<T, E: std::fmt::Display> ViaDisplay for &&Wrap<'_, Result<T, E>> {
    fn __audit_outcome(&self) -> Outcome {
        match self.0 {
            Err(e) => exception(std::any::type_name::<E>(), e.to_string(), String::new()),
            Ok(_) => Outcome::default(),
        }
    }
}

/// `Result<_, E: Debug>` (axum-style `(StatusCode, String)` errors).
pub trait ViaDebug {
    /// The outcome.
    fn __audit_outcome(&self) -> Outcome;
}
impl<T, E: std::fmt::Debug> ViaDebug for &Wrap<'_, Result<T, E>> {
    fn __audit_outcome(&self) -> Outcome {
        match self.0 {
            Err(e) => exception(std::any::type_name::<E>(), format!("{e:?}"), String::new()),
            Ok(_) => Outcome::default(),
        }
    }
}

/// Anything else: no exception.
pub trait ViaAny {
    /// The outcome.
    fn __audit_outcome(&self) -> Outcome;
}
impl<T: ?Sized> ViaAny for Wrap<'_, T> {
    fn __audit_outcome(&self) -> Outcome {
        Outcome::default()
    }
}

fn exception(kind: &str, message: String, trace: String) -> Outcome {
    Outcome {
        exception: Some(AccessException {
            kind: kind.to_owned(),
            message,
            trace,
        }),
    }
}

/// Instance id of a derived model: `Option<T: Display>` (`None` stays `None`).
pub trait IdViaOption {
    /// The id.
    fn __audit_id(&self) -> Option<String>;
}
impl<T: std::fmt::Display> IdViaOption for &Wrap<'_, Option<T>> {
    fn __audit_id(&self) -> Option<String> {
        self.0.as_ref().map(ToString::to_string)
    }
}

/// Instance id of a derived model: any `T: Display`.
pub trait IdViaDisplay {
    /// The id.
    fn __audit_id(&self) -> Option<String>;
}
impl<T: std::fmt::Display + ?Sized> IdViaDisplay for Wrap<'_, T> {
    fn __audit_id(&self) -> Option<String> {
        Some(self.0.to_string())
    }
}

/// Description of a derived model: its `Display`.
pub trait DescViaDisplay {
    /// The description.
    fn __audit_description(&self, type_name: &str, id: Option<String>) -> String;
}
impl<T: std::fmt::Display + ?Sized> DescViaDisplay for &Wrap<'_, T> {
    fn __audit_description(&self, _: &str, _: Option<String>) -> String {
        self.0.to_string()
    }
}

/// Description of a derived model without `Display`: `Type(id)`.
pub trait DescViaAny {
    /// The description.
    fn __audit_description(&self, type_name: &str, id: Option<String>) -> String;
}
impl<T: ?Sized> DescViaAny for Wrap<'_, T> {
    fn __audit_description(&self, type_name: &str, id: Option<String>) -> String {
        format!("{type_name}({})", id.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrapped future is held in place (pinned by projection), not boxed: the wrapper is as
    /// big as what it wraps, and a panic inside it comes out as `Err`.
    #[tokio::test]
    async fn catch_unwind_holds_the_future_inline() {
        let big = async {
            let buffer = [7u8; 4096];
            tokio::task::yield_now().await;
            buffer[4095]
        };
        let size = std::mem::size_of_val(&big);
        let wrapped = CatchUnwind::new(big);
        assert!(std::mem::size_of_val(&wrapped) >= size.max(4096));
        assert_eq!(wrapped.await.ok(), Some(7));

        let panicking = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("inside");
        });
        let result: Result<(), _> = panicking.await;
        let payload = result.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside"));
    }
}
