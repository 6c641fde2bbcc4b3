//! Argument parsing of the attributes: `ViewArgs` for `#[audited_view]` / `#[disable_audit]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Token};

pub(crate) mod kw {
    syn::custom_keyword!(app);
    syn::custom_keyword!(name);
    syn::custom_keyword!(args);
}

/// Parsed `#[audited_view(...)]` arguments.
#[derive(Default)]
pub(crate) struct ViewArgs {
    pub(crate) app: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) args: Option<Vec<Ident>>,
    pub(crate) krate: Option<syn::Path>,
}

/// Sets `slot` once; a second occurrence is an error on the second keyword (axum's
/// `parse_assignment_attribute`). Every argument goes through this one check.
fn set_once<T>(slot: &mut Option<T>, value: T, keyword: &str, span: Span) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            span,
            format!("`{keyword}` specified more than once"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

impl Parse for ViewArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut out = ViewArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::app) {
                // app = "..."
                let k: kw::app = input.parse()?;
                input.parse::<Token![=]>()?;
                set_once(&mut out.app, input.parse()?, "app", k.span)?;
            } else if lookahead.peek(kw::name) {
                // name = "..."
                let k: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                set_once(&mut out.name, input.parse()?, "name", k.span)?;
            } else if lookahead.peek(kw::args) {
                // args(a, b)
                let k: kw::args = input.parse()?;
                let content;
                syn::parenthesized!(content in input);
                let names: Punctuated<Ident, Token![,]> =
                    content.parse_terminated(Ident::parse, Token![,])?;
                set_once(&mut out.args, names.into_iter().collect(), "args", k.span)?;
            } else if lookahead.peek(Token![crate]) {
                // crate = "path::to::audit_runtime"
                let k: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                let lit: LitStr = input.parse()?;
                set_once(&mut out.krate, lit.parse()?, "crate", k.span)?;
            } else {
                return Err(lookahead.error());
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(out)
    }
}
