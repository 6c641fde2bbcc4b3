//! Expansion of `#[audited_view]` and `#[disable_audit]`.
//!
//! Both give the handler an identity and a registration, declared at the top of its body:
//!
//! ```text
//! use ::audit_runtime as __audit_rt;       // or the `crate = "..."` path: the one place it is named
//! fn __audit_here() {}                      // the probe: its type name tells the enclosing `impl`
//! fn __audit_view() -> &'static ViewIdentity { /* handler_identity(probe, module_path!(), "name", ..), once */ }
//! inventory::submit! { ViewRegistration::new(__audit_view, audited) }
//! ```
//!
//! `#[audited_view]` then wraps the body:
//!
//! ```text
//! let __audit_guard = ViewGuard::enter(__audit_view(), <named args>);
//! let __audit_out: R = match __audit_guard.run_sync(move || -> R { <body> }) {  // `return`, `?` stay inside
//!     Ok(v) => v,
//!     Err(panic) => __audit_guard.panicked(panic),   // records the panic, then resumes it
//! };
//! __audit_guard.finish(outcome_of(&__audit_out));    // `Err(e)` becomes the exception
//! __audit_out
//! ```
//!
//! (async: `run_async(async move { <body> }).await`, the same otherwise). `#[disable_audit]` only
//! marks the current request as not to be recorded and runs the body as it is:
//!
//! ```text
//! disable_current();
//! { <body> }
//! ```
//!
//! Why the identity and registration live in the body: an attribute on a method sees neither its
//! `impl` nor its type, and a `static` (which a registration is) cannot be emitted inside an
//! `impl` block; inventory allows it in a function body.

use crate::attr::ViewArgs;
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use std::collections::BTreeSet;
use std::fmt;
use syn::ext::IdentExt;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

/// Which of the two attributes is expanding (axum-macros' `FunctionKind`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ViewKind {
    /// `#[audited_view]`: the handler's calls are recorded.
    Audited,
    /// `#[disable_audit]`: the requests it serves are never recorded.
    Disabled,
}

impl ViewKind {
    /// The attribute's name, as written on a function.
    fn attr_name(self) -> &'static str {
        match self {
            ViewKind::Audited => "audited_view",
            ViewKind::Disabled => "disable_audit",
        }
    }
}

impl fmt::Display for ViewKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#[{}]", self.attr_name())
    }
}

/// Re-emits the untouched item plus the error, so IDE completion keeps working (tokio's
/// `token_stream_with_error`).
pub(crate) fn with_error(mut item: TokenStream2, e: syn::Error) -> TokenStream2 {
    item.extend(e.into_compile_error());
    item
}

fn is_attr(a: &syn::Attribute, kind: ViewKind) -> bool {
    a.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == kind.attr_name())
}

pub(crate) fn expand(
    args: TokenStream2,
    item: TokenStream2,
    kind: ViewKind,
) -> syn::Result<TokenStream2> {
    let mut func: ItemFn = syn::parse2(item)?;
    let cx = Ctxt::new();
    let args = ViewArgs::from_tokens(&cx, args);
    check(&cx, &args, &func, kind);
    cx.check()?;

    // `#[audited_view]` + `#[disable_audit]`, in either order: the handler is disabled. The outer
    // `audited_view` leaves the item to `disable_audit`; an outer `disable_audit` drops the inner
    // `audited_view`, so exactly one (disabled) registration remains.
    let out = match kind {
        ViewKind::Audited if func.attrs.iter().any(|a| is_attr(a, ViewKind::Disabled)) => {
            quote!(#func)
        }
        ViewKind::Audited => {
            func.block = syn::parse2(audited_body(&args, &func))?;
            quote!(#func)
        }
        ViewKind::Disabled => {
            func.attrs.retain(|a| !is_attr(a, ViewKind::Audited));
            func.block = syn::parse2(disabled_body(&args, &func))?;
            quote!(#func)
        }
    };
    crate::debug(kind.attr_name(), &out);
    Ok(out)
}

/// Every problem with the arguments and the function, all reported at once.
fn check(cx: &Ctxt, args: &ViewArgs, func: &ItemFn, kind: ViewKind) {
    if let Some(c) = &func.sig.constness {
        cx.error_spanned_by(c, format!("`{kind}` cannot be used on `const fn`s"));
    }
    match kind {
        ViewKind::Disabled => {
            let only_crate = "`#[disable_audit]` only takes `crate = \"...\"`";
            for lit in [&args.app, &args.name].into_iter().flatten() {
                cx.error_spanned_by(lit, only_crate);
            }
            if let Some(a) = &args.args {
                match a.names.first() {
                    Some(first) => cx.error_spanned_by(first, only_crate),
                    None => cx.error_spanned_by(a.keyword, only_crate),
                }
            }
        }
        ViewKind::Audited => {
            let bound = bound_names(func);
            let mut seen = BTreeSet::new();
            for n in args.args.iter().flat_map(|a| &a.names) {
                if !bound.contains(&n.to_string()) {
                    cx.error_spanned_by(n, format!("`{n}` is not an argument of this handler"));
                } else if !seen.insert(n.to_string()) {
                    cx.error_spanned_by(n, format!("`{n}` is named more than once in `args(...)`"));
                }
            }
        }
    }
}

/// `use <runtime> as __audit_rt;`: the generated code names the runtime through this one alias
/// (serde's `use #path as _serde`), so a wrong `crate = "..."` is one unresolved import, not an
/// error at every use.
fn runtime_alias(args: &ViewArgs) -> TokenStream2 {
    let path = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::audit_runtime), |p| quote!(#p));
    quote!(use #path as __audit_rt;)
}

/// The probe, the identity and the registration (see the module docs).
fn identity_items(args: &ViewArgs, func: &ItemFn, kind: ViewKind) -> TokenStream2 {
    let krate = quote!(__audit_rt);
    let lit = |l: &Option<syn::LitStr>| match l {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let (app, name) = (lit(&args.app), lit(&args.name));
    let function = func.sig.ident.unraw().to_string();
    let audited = kind == ViewKind::Audited;
    quote! {
        fn __audit_here() {}
        fn __audit_view() -> &'static #krate::__private::ViewIdentity {
            static __AUDIT_VIEW: #krate::__private::OnceLock<#krate::__private::ViewIdentity> =
                #krate::__private::OnceLock::new();
            __AUDIT_VIEW.get_or_init(|| {
                #krate::__private::handler_identity(
                    #krate::__private::type_name_of_val(&__audit_here),
                    ::core::module_path!(),
                    #function,
                    ::core::env!("CARGO_CRATE_NAME"),
                    #app,
                    #name,
                )
            })
        }
        #krate::__private::inventory::submit! {
            #krate::ViewRegistration::new(__audit_view, #audited)
        }
    }
}

/// `#[disable_audit]`: the identity, the registration, the mark, the body untouched. The body
/// stays a block of its own, so its items and locals cannot clash with the generated ones.
fn disabled_body(args: &ViewArgs, func: &ItemFn) -> TokenStream2 {
    let alias = runtime_alias(args);
    let krate = quote!(__audit_rt);
    let identity = identity_items(args, func, ViewKind::Disabled);
    let block = &func.block;
    quote! {
        {
            #alias
            #identity
            #krate::__private::disable_current();
            #block
        }
    }
}

/// `#[audited_view]`: the identity, the registration, and the body run under the guard.
fn audited_body(args: &ViewArgs, func: &ItemFn) -> TokenStream2 {
    let alias = runtime_alias(args);
    let krate = quote!(__audit_rt);
    let identity = identity_items(args, func, ViewKind::Audited);
    let arg_pairs = args.args.iter().flat_map(|a| &a.names).map(|n| {
        let key = n.unraw().to_string();
        // Spanned on the user's name: a type without `AuditValue` is reported there.
        quote_spanned!(n.span()=> (#key, #krate::AuditValue::to_audit_bson(&#n)))
    });

    let block = &func.block;
    let output_ty: Option<Type> = match &func.sig.output {
        ReturnType::Default => Some(syn::parse_quote!(())),
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => None,
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    // The declared return type stays in charge of inference (tracing's fake return edge), so a
    // type error points at the user's code.
    let annotate = output_ty.as_ref().map(|t| quote!(: #t));
    let closure_ret = output_ty.as_ref().map(|t| quote!(-> #t));
    let run = if func.sig.asyncness.is_some() {
        quote!(__audit_guard.run_async(async move #block).await)
    } else {
        quote!(__audit_guard.run_sync(move || #closure_ret #block))
    };

    quote! {
        {
            #alias
            #identity
            let __audit_guard = #krate::__private::ViewGuard::enter(
                __audit_view(),
                &[#(#arg_pairs),*],
            );
            let __audit_out #annotate = match #run {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(panic) => __audit_guard.panicked(panic),
            };
            {
                #[allow(unused_imports)]
                use #krate::__private::{ViaAny as _, ViaDebug as _, ViaDisplay as _, ViaError as _};
                __audit_guard.finish((&&&&#krate::__private::Wrap(&__audit_out)).__audit_outcome());
            }
            __audit_out
        }
    }
}

fn contains_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    syn::visit::Visit::visit_type(&mut f, ty);
    f.0
}

/// Every name the handler's parameters bind, destructuring patterns included
/// (`Path(id): Path<u32>` binds `id`).
fn bound_names(func: &ItemFn) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(_) => {
                out.insert("self".to_owned());
            }
            FnArg::Typed(pt) => collect_pat(&pt.pat, &mut out),
        }
    }
    out
}

fn collect_pat(pat: &Pat, out: &mut BTreeSet<String>) {
    match pat {
        Pat::Ident(i) => {
            out.insert(i.ident.to_string());
            if let Some((_, sub)) = &i.subpat {
                collect_pat(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| collect_pat(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| collect_pat(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| collect_pat(&f.pat, out)),
        Pat::Reference(r) => collect_pat(&r.pat, out),
        Pat::Type(t) => collect_pat(&t.pat, out),
        Pat::Slice(s) => s.elems.iter().for_each(|p| collect_pat(p, out)),
        Pat::Paren(p) => collect_pat(&p.pat, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destructured_names_are_found() {
        let f: ItemFn = syn::parse_quote! {
            async fn h(Path((a, b)): Path<(u32, u32)>, State(s): State<S>, Query(Params { page, .. }): Query<Params>, x: u8) {}
        };
        let names = bound_names(&f);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["a", "b", "page", "s", "x"]
        );
    }

    #[test]
    fn const_fn_is_rejected() {
        let e = expand(
            quote!(),
            quote!(
                const fn f() {}
            ),
            ViewKind::Audited,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`#[audited_view]` cannot be used on `const fn`s"
        );
    }

    #[test]
    fn unknown_arg_names_the_parameter() {
        let e = expand(
            quote!(args(nope)),
            quote!(
                fn f(id: u32) {}
            ),
            ViewKind::Audited,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "`nope` is not an argument of this handler");
    }

    #[test]
    fn duplicate_argument_is_rejected() {
        let e = expand(
            quote!(name = "a", name = "b"),
            quote!(
                fn f() {}
            ),
            ViewKind::Audited,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "`name` specified more than once");
    }

    fn errors(e: syn::Error) -> Vec<String> {
        e.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = expand(
            quote!(name = "a", name = "b", args(nope, id, id)),
            quote!(
                const fn f(id: u32) {}
            ),
            ViewKind::Audited,
        )
        .unwrap_err();
        assert_eq!(
            errors(e),
            [
                "`name` specified more than once",
                "`#[audited_view]` cannot be used on `const fn`s",
                "`nope` is not an argument of this handler",
                "`id` is named more than once in `args(...)`",
            ]
        );
        let e = expand(
            quote!(app = "a", name = "n", args(x)),
            quote!(
                fn f(x: u8) {}
            ),
            ViewKind::Disabled,
        )
        .unwrap_err();
        assert_eq!(
            errors(e),
            ["`#[disable_audit]` only takes `crate = \"...\"`"; 3]
        );
    }

    fn expansion(args: TokenStream2, item: TokenStream2, kind: ViewKind) -> String {
        expand(args, item, kind).unwrap().to_string()
    }

    /// `#[disable_audit]` alone: the registration and the mark, none of the guard's machinery.
    #[test]
    fn disabled_expands_to_registration_and_mark_only() {
        let out = expansion(
            quote!(),
            quote!(
                async fn f(x: u8) -> u8 {
                    x
                }
            ),
            ViewKind::Disabled,
        );
        assert!(out.contains("inventory :: submit !"), "{out}");
        assert!(
            out.contains("ViewRegistration :: new (__audit_view , false)"),
            "{out}"
        );
        assert!(out.contains("disable_current ()"), "{out}");
        for machinery in [
            "ViewGuard",
            "run_async",
            "run_sync",
            "panicked",
            "finish",
            "Wrap",
        ] {
            assert!(!out.contains(machinery), "{machinery} in {out}");
        }
    }

    #[test]
    fn audited_expansion_registers_and_guards() {
        let out = expansion(
            quote!(),
            quote!(
                async fn f(x: u8) -> u8 {
                    x
                }
            ),
            ViewKind::Audited,
        );
        assert!(
            out.contains("ViewRegistration :: new (__audit_view , true)"),
            "{out}"
        );
        assert!(out.contains("run_async"), "{out}");
        // Nothing on the handler's path is boxed by the expansion.
        assert!(!out.contains("Box"), "{out}");
    }

    /// The name is built from `module_path!()` and the function's own name (without `r#`).
    #[test]
    fn identity_is_module_path_and_function_name() {
        let out = expansion(
            quote!(),
            quote!(
                fn r#type() {}
            ),
            ViewKind::Audited,
        );
        assert!(
            out.contains(":: core :: module_path ! () , \"type\" ,"),
            "{out}"
        );
    }

    /// Both attributes, in either order: one registration, disabled.
    #[test]
    fn both_attributes_leave_one_disabled_expansion() {
        let outer_audited = expansion(
            quote!(),
            quote!(
                #[disable_audit]
                fn f() {}
            ),
            ViewKind::Audited,
        );
        assert_eq!(
            outer_audited,
            quote!(
                #[disable_audit]
                fn f() {}
            )
            .to_string(),
            "left to `disable_audit`"
        );
        let outer_disabled = expansion(
            quote!(),
            quote!(
                #[audited_view(args(x))]
                fn f(x: u8) {}
            ),
            ViewKind::Disabled,
        );
        assert!(!outer_disabled.contains("audited_view"), "{outer_disabled}");
        assert!(
            outer_disabled.contains("disable_current"),
            "{outer_disabled}"
        );
    }
}
