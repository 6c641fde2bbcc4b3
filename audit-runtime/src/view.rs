//! The runtime half of `#[audited_view]` / `#[disable_audit]`: the handler's identity (built from
//! its module and name), and the guard that opens (or joins) the request context, runs the body
//! with panics caught, and records the outcome.

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

/// The name of the fn item the macro declares in every handler's body: its type name is the probe
/// [`handler_identity`] reads.
const PROBE: &str = "__audit_here";

/// The identity of a handler annotated with `#[audited_view]` or `#[disable_audit]`. Used by
/// generated code.
///
/// The full name is `module::function`, or `module::Type::function` for a function declared in an
/// `impl` (or trait) block. `module` is the handler's `module_path!()` and `function` its name: both
/// are known when the macro expands. The one thing an attribute on a method cannot see is the
/// enclosing `impl`, and `Self` cannot help: the registration is a `static`, and items nested in a
/// method cannot name `Self`. So `probe`, the type name of a fn item declared in the handler's
/// body, is read for that alone: which type, if any, sits between the module and the function.
/// The rest of the name never comes from it, so a compiler that prints paths differently can at
/// worst lose the `Type::` part (a function is then named as a free one), never change the module,
/// the function or their order.
pub fn handler_identity(
    probe: &str,
    module: &str,
    function: &str,
    crate_name: &str,
    app: Option<&str>,
    name: Option<&str>,
) -> ViewIdentity {
    let full_name = match enclosing_type(probe, module, function) {
        Some(ty) => format!("{module}::{ty}::{function}"),
        None => format!("{module}::{function}"),
    };
    ViewIdentity::new(
        full_name,
        app.unwrap_or(crate_name),
        name.unwrap_or(function),
    )
}

/// The type whose `impl` (or trait) declares `function`, from the probe's printed path
/// (`module::Type::function::__audit_here`, `module::<impl Trait for Type>::function::...`,
/// `<Type as Trait>::function::...`, `module::Type<_>::function::...`); `None` for a free
/// function, or for a path not of that shape.
fn enclosing_type<'a>(probe: &'a str, module: &str, function: &str) -> Option<&'a str> {
    // Closures, async blocks and other anonymous scopes (`{{closure}}`) are not part of a name.
    let mut segments: Vec<&str> = path_segments(probe)
        .filter(|s| !s.starts_with('{'))
        .collect();
    if segments.pop()? != PROBE || unraw(segments.pop()?) != unraw(function) {
        return None;
    }
    // A free function: what precedes it is its module (or a part of it, if the compiler ever
    // prints paths shorter or longer than `module_path!()`).
    let module: Vec<&str> = path_segments(module).collect();
    if segments.ends_with(&module) || module.ends_with(&segments) {
        return None;
    }
    let owner = segments.pop()?;
    let ty = match owner.strip_prefix('<').and_then(|o| o.strip_suffix('>')) {
        // `<impl Type>`, `<impl Trait for Type>`: an impl in another module than its type.
        Some(inner) if inner.starts_with("impl ") => {
            let inner = &inner["impl ".len()..];
            top_level_split(inner, " for ").map_or(inner, |(_, ty)| ty)
        }
        // `<Type as Trait>`: a trait impl.
        Some(inner) => top_level_split(inner, " as ").map_or(inner, |(ty, _)| ty),
        None => owner,
    };
    Some(type_ident(ty))
}

/// `a::b::Type<T>` → `Type`; a type without a name of its own (`[u8]`, a tuple) stays as printed.
fn type_ident(ty: &str) -> &str {
    let mut ty = ty.trim();
    for prefix in ["&", "mut ", "dyn ", "*const ", "*mut "] {
        ty = ty.strip_prefix(prefix).unwrap_or(ty).trim_start();
    }
    let base = top_level_split(ty, "<").map_or(ty, |(base, _)| base);
    // A path has no spaces and no brackets outside its generic arguments (`fn() -> P` does).
    if base.contains([' ', '(', '[']) {
        return ty;
    }
    match path_segments(base).last() {
        Some(last) if is_ident(unraw(last)) => last,
        _ => ty,
    }
}

fn unraw(s: &str) -> &str {
    s.strip_prefix("r#").unwrap_or(s)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// The `::`-separated segments of a printed path, not splitting inside `<...>`, `(...)`, `[...]`.
fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        match top_level_split(current, "::") {
            Some((head, tail)) => {
                rest = Some(tail);
                Some(head)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
    .filter(|s| !s.is_empty())
}

/// Splits `s` at the first `sep` outside brackets.
fn top_level_split<'a>(s: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let mut depth = 0usize;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        if depth == 0 && s[i..].starts_with(sep) {
            return Some((&s[..i], &s[i + sep.len()..]));
        }
        match c {
            '<' | '(' | '[' => depth += 1,
            // `->` of a fn pointer type is not a closing bracket.
            '>' if prev == '-' => {}
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    None
}

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

/// Guard of one audited call. Used by generated code (`#[audited_view]` only: `#[disable_audit]`
/// needs none, it marks the current request and returns).
pub struct ViewGuard {
    state: Arc<RequestState>,
    ident: &'static ViewIdentity,
    owner: bool,
}

impl ViewGuard {
    /// Joins the current request context, or opens a standalone one.
    pub fn enter(ident: &'static ViewIdentity, args: &[(&str, Bson)]) -> Self {
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
            if inner.view.is_none() {
                inner.view = Some(ident);
                let policy = state.redaction();
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
        if self.is_primary() {
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
        if !self.is_primary() {
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
        self.state.redaction().exception(e)
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

    fn full_name(probe: &str, module: &str, function: &str) -> String {
        handler_identity(probe, module, function, "app", None, None).full_name
    }

    /// The paths rustc 1.95 prints for a fn nested in each kind of handler, and the names they
    /// give: `module::function` or `module::Type::function`, never a closure, generic arguments, a
    /// trait or the type's own module.
    #[test]
    fn names_are_module_type_and_function() {
        let cases = [
            // A free function, sync and async.
            ("m::jobs::f::__audit_here", "m::jobs", "f", "m::jobs::f"),
            (
                "m::jobs::f::{{closure}}::__audit_here",
                "m::jobs",
                "f",
                "m::jobs::f",
            ),
            // An inherent method, an associated function, a generic type.
            (
                "m::jobs::Worker::run::__audit_here",
                "m::jobs",
                "run",
                "m::jobs::Worker::run",
            ),
            (
                "m::jobs::Worker::run_async::{{closure}}::__audit_here",
                "m::jobs",
                "run_async",
                "m::jobs::Worker::run_async",
            ),
            (
                "m::jobs::Boxed<_>::get::__audit_here",
                "m::jobs",
                "get",
                "m::jobs::Boxed::get",
            ),
            // A trait impl: the type, not the trait.
            (
                "<m::jobs::Worker as m::jobs::Tick>::tick::__audit_here",
                "m::jobs",
                "tick",
                "m::jobs::Worker::tick",
            ),
            // An impl in another module than its type: the impl's module.
            (
                "m::jobs::other::<impl m::jobs::Worker>::elsewhere::__audit_here",
                "m::jobs::other",
                "elsewhere",
                "m::jobs::other::Worker::elsewhere",
            ),
            (
                "m::b::<impl m::a::Tick for m::a::Boxed<_>>::tick::{{closure}}::__audit_here",
                "m::b",
                "tick",
                "m::b::Boxed::tick",
            ),
            // A trait's default method: the trait.
            (
                "m::a::Tick::default_tick::__audit_here",
                "m::a",
                "default_tick",
                "m::a::Tick::default_tick",
            ),
            // Types without a name of their own stay as printed.
            (
                "m::b::<impl m::a::Tick for [u8]>::tick::__audit_here",
                "m::b",
                "tick",
                "m::b::[u8]::tick",
            ),
            (
                "m::b::<impl m::a::Tick for (u8, m::a::P)>::tick::__audit_here",
                "m::b",
                "tick",
                "m::b::(u8, m::a::P)::tick",
            ),
            (
                "m::b::<impl m::a::Tick for fn() -> m::a::P>::tick::__audit_here",
                "m::b",
                "tick",
                "m::b::fn() -> m::a::P::tick",
            ),
            // A handler declared in another function (in a closure of it): named after it.
            (
                "m::outer::{{closure}}::inner::__audit_here",
                "m",
                "inner",
                "m::outer::inner",
            ),
            // A type named like its module is still a type.
            (
                "m::foo::foo::f::__audit_here",
                "m::foo",
                "f",
                "m::foo::foo::f",
            ),
            // Raw identifiers (the macro passes the name without `r#`).
            ("m::r#type::__audit_here", "m", "type", "m::type"),
            ("m::type::__audit_here", "m", "type", "m::type"),
        ];
        for (probe, module, function, expected) in cases {
            assert_eq!(full_name(probe, module, function), expected, "{probe}");
        }
    }

    /// A path of another shape never changes the module or the function: at worst the type is
    /// lost and the handler is named as a free function.
    #[test]
    fn an_unknown_shape_falls_back_to_module_and_function() {
        for probe in [
            "",
            "__audit_here",
            "f",
            "m::jobs::g::__audit_here",
            "m::jobs::f::probe",
            "jobs::f::__audit_here",
            "f::__audit_here",
            "m::jobs::f::__audit_here::extra",
        ] {
            assert_eq!(full_name(probe, "m::jobs", "f"), "m::jobs::f", "{probe:?}");
        }
    }

    #[test]
    fn app_and_name_default_to_crate_and_function() {
        let v = handler_identity("m::f::__audit_here", "m", "f", "m", None, None);
        assert_eq!(v, ViewIdentity::new("m::f", "m", "f"));
        let v = handler_identity("m::f::__audit_here", "m", "f", "m", Some("a"), Some("n"));
        assert_eq!(v, ViewIdentity::new("m::f", "a", "n"));
    }

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
