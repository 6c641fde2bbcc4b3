//! Procedural macros of `audit-runtime`. Use them through `audit_runtime`, which re-exports them;
//! the generated code names only `::audit_runtime::__private::...` (or the path given with
//! `crate = "..."`).
//!
//! - `#[audited_view]` records an access for each call of a handler (view identity, named
//!   arguments, outcome: `Err` and panics become the `exception`);
//! - `#[disable_audit]` marks a handler whose requests are never recorded;
//! - `#[derive(Audited)]` gives a model its identity, instance id, description and snapshot.
//!
//! Set `AUDIT_MACROS_DEBUG=1` to print every expansion to stderr.

mod attr;
mod ctxt;
mod model;
mod view;

use proc_macro::TokenStream;
use view::ViewKind;

/// Records an access for every call of the handler. See `audit_runtime` for the full manual.
///
/// Arguments: `app = "..."`, `name = "..."`, `args(a, b)` (handler arguments to record; none by
/// default), `crate = "path"`.
#[proc_macro_attribute]
pub fn audited_view(args: TokenStream, item: TokenStream) -> TokenStream {
    view::expand(args.into(), item.clone().into(), ViewKind::Audited)
        .unwrap_or_else(|e| view::with_error(item.into(), e))
        .into()
}

/// Marks a handler whose requests are never recorded, whatever the layer and blacklist say.
#[proc_macro_attribute]
pub fn disable_audit(args: TokenStream, item: TokenStream) -> TokenStream {
    view::expand(args.into(), item.clone().into(), ViewKind::Disabled)
        .unwrap_or_else(|e| view::with_error(item.into(), e))
        .into()
}

/// Implements `audit_runtime::Audited` (and `AuditValue`) for a struct with named fields.
///
/// Container: `#[audit(app = "...")]`, `#[audit(crate = "path")]`. Fields: `#[audit(id)]`,
/// `#[audit(skip)]`, `#[audit(mask)]`, `#[audit(capture)]`, `#[audit(rename = "...")]`,
/// `#[audit(display)]`, `#[audit(serde)]`.
#[proc_macro_derive(Audited, attributes(audit))]
pub fn derive_audited(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    model::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Prints an expansion when `AUDIT_MACROS_DEBUG` is set.
fn debug(kind: &str, tokens: &proc_macro2::TokenStream) {
    if std::env::var_os("AUDIT_MACROS_DEBUG").is_some() {
        eprintln!("--- {kind} expansion ---\n{tokens}");
    }
}
