//! Expansion of `#[audited_view]` and `#[disable_audit]`.
//!
//! The handler keeps its signature, attributes and visibility; its body is wrapped:
//!
//! ```text
//! fn handler(args) -> R {
//!     fn __audit_here() {}                  // its type name is this handler's full Rust path
//!     fn __audit_view() -> &'static ViewIdentity { /* computed once from __audit_here */ }
//!     inventory::submit! { ViewRegistration::new(__audit_view, audited) }
//!     let __audit_guard = ViewGuard::enter(__audit_view(), <named args>);
//!     let __audit_out = __audit_guard.run_sync(move || -> R { <body> })  // `return`, `?` stay inside;
//!         .unwrap_or_else(|panic| __audit_guard.panicked(panic));       // records, resumes the panic
//!     __audit_guard.finish(outcome_of(&__audit_out));         // `Err(e)` becomes the exception
//!     __audit_out
//! }
//! ```
//!
//! Why a nested fn and `type_name_of_val` for the name: an attribute on a method sees neither its
//! `impl` nor its type, and items cannot be emitted inside an `impl` block; the nested fn's type name
//! spells `crate::module::Type::method` for methods and `crate::module::function` for functions.
//! The registration lives in the body for the same reason (inventory allows it there).

use crate::attr::ViewArgs;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use std::collections::BTreeSet;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type};

/// Re-emits the untouched item plus the error, so IDE completion keeps working (tokio's
/// `token_stream_with_error`).
pub(crate) fn with_error(mut item: TokenStream2, e: syn::Error) -> TokenStream2 {
    item.extend(e.into_compile_error());
    item
}

fn is_attr(a: &syn::Attribute, name: &str) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == name)
}

fn has_attr(func: &ItemFn, name: &str) -> bool {
    func.attrs.iter().any(|a| is_attr(a, name))
}

pub(crate) fn expand(
    args: TokenStream2,
    item: TokenStream2,
    audited: bool,
) -> syn::Result<TokenStream2> {
    let macro_name = if audited {
        "audited_view"
    } else {
        "disable_audit"
    };
    let args: ViewArgs = syn::parse2(args)?;
    let mut func: ItemFn = syn::parse2(item)?;
    if let Some(c) = &func.sig.constness {
        return Err(syn::Error::new(
            c.span,
            format!("`#[{macro_name}]` cannot be used on `const fn`s"),
        ));
    }
    if !audited {
        if let Some(lit) = args.app.as_ref().or(args.name.as_ref()) {
            return Err(syn::Error::new(
                lit.span(),
                "`#[disable_audit]` only takes `crate = \"...\"`",
            ));
        }
        if let Some(first) = args.args.as_ref().and_then(|a| a.first()) {
            return Err(syn::Error::new(
                first.span(),
                "`#[disable_audit]` only takes `crate = \"...\"`",
            ));
        }
    }
    let krate = args
        .krate
        .clone()
        .map_or_else(|| quote!(::audit_runtime), |p| quote!(#p));

    // `#[audited_view]` + `#[disable_audit]`, in either order: the handler is disabled. The outer
    // `audited_view` leaves the item to `disable_audit`; an outer `disable_audit` drops the inner
    // `audited_view`, so exactly one (disabled) registration remains.
    if audited && has_attr(&func, "disable_audit") {
        return Ok(quote!(#func));
    }
    if !audited {
        func.attrs.retain(|a| !is_attr(a, "audited_view"));
    }

    let bound = bound_names(&func);
    let mut recorded = Vec::new();
    if let Some(names) = &args.args {
        let mut errors: Option<syn::Error> = None;
        let mut seen = BTreeSet::new();
        for n in names {
            let problem = if !bound.contains(&n.to_string()) {
                Some(format!("`{n}` is not an argument of this handler"))
            } else if !seen.insert(n.to_string()) {
                Some(format!("`{n}` is named more than once in `args(...)`"))
            } else {
                None
            };
            match problem {
                Some(msg) => {
                    let e = syn::Error::new(n.span(), msg);
                    match &mut errors {
                        Some(all) => all.combine(e),
                        None => errors = Some(e),
                    }
                }
                None => recorded.push(n.clone()),
            }
        }
        if let Some(e) = errors {
            return Err(e);
        }
    }

    let app = match &args.app {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let name = match &args.name {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    let arg_pairs = recorded.iter().map(|n| {
        let key = n.to_string();
        // Spanned on the user's name: a type without `AuditValue` is reported there.
        quote_spanned!(n.span()=> (#key, #krate::AuditValue::to_audit_bson(&#n)))
    });

    let block = &func.block;
    let is_async = func.sig.asyncness.is_some();
    let output_ty: Option<Type> = match &func.sig.output {
        ReturnType::Default => Some(syn::parse_quote!(())),
        ReturnType::Type(_, ty) if contains_impl_trait(ty) => None,
        ReturnType::Type(_, ty) => Some((**ty).clone()),
    };
    let annotate = output_ty.as_ref().map(|t| quote!(: #t));
    let closure_ret = output_ty.as_ref().map(|t| quote!(-> #t));

    let run = if is_async {
        quote! {
            let __audit_out #annotate = match __audit_guard.run_async(async move #block).await {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(panic) => __audit_guard.panicked(panic),
            };
        }
    } else {
        quote! {
            let __audit_out #annotate = match __audit_guard.run_sync(move || #closure_ret #block) {
                ::core::result::Result::Ok(v) => v,
                ::core::result::Result::Err(panic) => __audit_guard.panicked(panic),
            };
        }
    };

    let new_block = quote! {
        {
            fn __audit_here() {}
            fn __audit_view() -> &'static #krate::__private::ViewIdentity {
                static __AUDIT_VIEW: #krate::__private::OnceLock<#krate::__private::ViewIdentity> =
                    #krate::__private::OnceLock::new();
                __AUDIT_VIEW.get_or_init(|| {
                    #krate::__private::ViewIdentity::from_fn_path(
                        #krate::__private::type_name_of_val(&__audit_here),
                        ::core::env!("CARGO_CRATE_NAME"),
                        #app,
                        #name,
                    )
                })
            }
            #krate::__private::inventory::submit! {
                #krate::ViewRegistration::new(__audit_view, #audited)
            }
            let __audit_guard = #krate::__private::ViewGuard::enter(
                __audit_view(),
                &[#(#arg_pairs),*],
                #audited,
            );
            #run
            {
                #[allow(unused_imports)]
                use #krate::__private::{ViaAny as _, ViaDebug as _, ViaDisplay as _, ViaError as _};
                __audit_guard.finish((&&&&#krate::__private::Wrap(&__audit_out)).__audit_outcome());
            }
            __audit_out
        }
    };
    func.block = syn::parse2(new_block)?;
    let out = quote!(#func);
    crate::debug(macro_name, &out);
    Ok(out)
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
            true,
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
            true,
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
            true,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "`name` specified more than once");
    }
}
