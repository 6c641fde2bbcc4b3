//! Procedural macros of `audit-runtime`. Use them through `audit_runtime`, which re-exports them;
//! the generated code names only `::audit_runtime::__private::...` (or the path given with
//! `crate = "..."`).
//!
//! - [`macro@audited_view`] records an access for each call of a handler (view identity, named
//!   arguments, outcome: `Err` and panics become the `exception`);
//! - [`macro@disable_audit`] marks a handler whose requests are never recorded;
//! - [`derive@Audited`] gives a model its identity, instance id, description and snapshot.
//!
//! Set `AUDIT_MACROS_DEBUG=1` to print every expansion to stderr.

#![warn(missing_docs)]

mod attr;
mod ctxt;
mod model;
mod view;

use proc_macro::TokenStream;
use view::ViewKind;

#[doc = include_str!("../doc/audited_view.md")]
#[proc_macro_attribute]
pub fn audited_view(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_view(args, item, ViewKind::Audited)
}

#[doc = include_str!("../doc/disable_audit.md")]
#[proc_macro_attribute]
pub fn disable_audit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_view(args, item, ViewKind::Disabled)
}

#[doc = include_str!("../doc/derive_audited.md")]
#[proc_macro_derive(Audited, attributes(audit))]
pub fn derive_audited(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    model::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand_view(args: TokenStream, item: TokenStream, kind: ViewKind) -> TokenStream {
    view::expand(args.into(), item.clone().into(), kind)
        .unwrap_or_else(|e| view::with_error(item.into(), e))
        .into()
}

/// Prints an expansion when `AUDIT_MACROS_DEBUG` is set.
fn debug(kind: &str, tokens: &proc_macro2::TokenStream) {
    if std::env::var_os("AUDIT_MACROS_DEBUG").is_some() {
        eprintln!("--- {kind} expansion ---\n{tokens}");
    }
}
