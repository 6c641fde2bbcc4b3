//! What the attributes say: `ViewArgs` for `#[audited_view(...)]` / `#[disable_audit(...)]`, and
//! the `#[audit(...)]` helper attributes of `#[derive(Audited)]` (`Container`, `Field`).
//!
//! The derive's parsing never stops at the first problem: every error goes to the [`Ctxt`] and
//! parsing carries on, so the user sees all of them at once. Every value is set through [`Attr`]
//! or [`BoolAttr`], which own the duplicate check, so no branch can forget it (serde's pattern).

use crate::ctxt::Ctxt;
use proc_macro2::Span;
use quote::ToTokens;
use std::fmt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Ident, LitStr, Token};

pub(crate) mod kw {
    syn::custom_keyword!(app);
    syn::custom_keyword!(name);
    syn::custom_keyword!(args);
}

/// The name of an argument or helper attribute.
#[derive(Copy, Clone)]
pub(crate) struct Symbol(&'static str);

pub(crate) const AUDIT: Symbol = Symbol("audit");
pub(crate) const APP: Symbol = Symbol("app");
pub(crate) const CRATE: Symbol = Symbol("crate");
pub(crate) const ID: Symbol = Symbol("id");
pub(crate) const SKIP: Symbol = Symbol("skip");
pub(crate) const MASK: Symbol = Symbol("mask");
pub(crate) const CAPTURE: Symbol = Symbol("capture");
pub(crate) const DISPLAY: Symbol = Symbol("display");
pub(crate) const SERDE: Symbol = Symbol("serde");
pub(crate) const RENAME: Symbol = Symbol("rename");

impl PartialEq<Symbol> for syn::Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// How a second occurrence is reported: the derive's helper attributes in serde's words.
#[derive(Copy, Clone)]
pub(crate) enum Family {
    /// `#[audit(mask, mask)]`: "duplicate audit attribute `mask`".
    AuditAttribute,
}

impl Family {
    fn duplicate(self, name: Symbol) -> String {
        match self {
            Family::AuditAttribute => format!("duplicate audit attribute `{name}`"),
        }
    }
}

/// A value that may be given once; a second occurrence is an error spanned on it.
pub(crate) struct Attr<'c, T> {
    cx: &'c Ctxt,
    family: Family,
    name: Symbol,
    value: Option<T>,
}

impl<'c, T> Attr<'c, T> {
    pub(crate) fn none(cx: &'c Ctxt, family: Family, name: Symbol) -> Self {
        Attr {
            cx,
            family,
            name,
            value: None,
        }
    }

    /// Sets the value; `obj` (the keyword or path of this occurrence) carries the error of a
    /// duplicate, and the first value is kept.
    pub(crate) fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        if self.value.is_some() {
            self.cx
                .error_spanned_by(obj, self.family.duplicate(self.name));
        } else {
            self.value = Some(value);
        }
    }

    pub(crate) fn get(self) -> Option<T> {
        self.value
    }
}

/// A flag that may be given once.
pub(crate) struct BoolAttr<'c>(Attr<'c, ()>);

impl<'c> BoolAttr<'c> {
    pub(crate) fn none(cx: &'c Ctxt, family: Family, name: Symbol) -> Self {
        BoolAttr(Attr::none(cx, family, name))
    }

    pub(crate) fn set_true<A: ToTokens>(&mut self, obj: A) {
        self.0.set(obj, ());
    }

    pub(crate) fn get(self) -> bool {
        self.0.value.is_some()
    }
}

// === #[audited_view(...)] / #[disable_audit(...)] ===

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

// === #[derive(Audited)] helper attributes ===

/// `#[audit(...)]` on the struct.
pub(crate) struct Container {
    pub(crate) app: Option<LitStr>,
    pub(crate) krate: Option<syn::Path>,
}

impl Container {
    pub(crate) fn from_ast(cx: &Ctxt, input: &syn::DeriveInput) -> Self {
        let mut app = Attr::none(cx, Family::AuditAttribute, APP);
        let mut krate = Attr::none(cx, Family::AuditAttribute, CRATE);
        for attr in input.attrs.iter().filter(|a| a.path() == &AUDIT) {
            let res = attr.parse_nested_meta(|meta| {
                if meta.path == APP {
                    // #[audit(app = "polls")]
                    let v: LitStr = meta.value()?.parse()?;
                    app.set(&meta.path, v);
                } else if meta.path == CRATE {
                    // #[audit(crate = "my::audit_runtime")]
                    let v: LitStr = meta.value()?.parse()?;
                    krate.set(&meta.path, v.parse()?);
                } else {
                    let name = path_name(&meta.path);
                    cx.error_spanned_by(
                        &meta.path,
                        format!("unknown audit container attribute `{name}`"),
                    );
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
        }
        Container {
            app: app.get(),
            krate: krate.get(),
        }
    }
}

/// `#[audit(...)]` on a field.
pub(crate) struct Field {
    pub(crate) id: bool,
    pub(crate) skip: bool,
    pub(crate) mask: bool,
    pub(crate) capture: bool,
    pub(crate) display: bool,
    pub(crate) serde: bool,
    pub(crate) rename: Option<LitStr>,
}

impl Field {
    pub(crate) fn from_ast(cx: &Ctxt, field: &syn::Field) -> Self {
        let flag = |name| BoolAttr::none(cx, Family::AuditAttribute, name);
        let (mut id, mut skip, mut mask) = (flag(ID), flag(SKIP), flag(MASK));
        let (mut capture, mut display, mut serde) = (flag(CAPTURE), flag(DISPLAY), flag(SERDE));
        let mut rename = Attr::none(cx, Family::AuditAttribute, RENAME);
        for attr in field.attrs.iter().filter(|a| a.path() == &AUDIT) {
            let res = attr.parse_nested_meta(|meta| {
                if meta.path == ID {
                    // #[audit(id)]
                    id.set_true(&meta.path);
                } else if meta.path == SKIP {
                    // #[audit(skip)]
                    skip.set_true(&meta.path);
                } else if meta.path == MASK {
                    // #[audit(mask)]
                    mask.set_true(&meta.path);
                } else if meta.path == CAPTURE {
                    // #[audit(capture)]
                    capture.set_true(&meta.path);
                } else if meta.path == DISPLAY {
                    // #[audit(display)]
                    display.set_true(&meta.path);
                } else if meta.path == SERDE {
                    // #[audit(serde)]
                    serde.set_true(&meta.path);
                } else if meta.path == RENAME {
                    // #[audit(rename = "foo")]
                    let v: LitStr = meta.value()?.parse()?;
                    rename.set(&meta.path, v);
                } else {
                    let name = path_name(&meta.path);
                    cx.error_spanned_by(
                        &meta.path,
                        format!("unknown audit field attribute `{name}`"),
                    );
                    skip_value(&meta)?;
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
        }
        let out = Field {
            id: id.get(),
            skip: skip.get(),
            mask: mask.get(),
            capture: capture.get(),
            display: display.get(),
            serde: serde.get(),
            rename: rename.get(),
        };
        if out.mask && out.capture {
            cx.error_spanned_by(&field.ident, "`mask` and `capture` cannot be combined");
        }
        if out.display && out.serde {
            cx.error_spanned_by(&field.ident, "`display` and `serde` cannot be combined");
        }
        out
    }
}

/// `a::b` as written, for messages.
fn path_name(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Consumes the value of an unknown attribute (`= ...` or `(...)`), so the ones after it are
/// still parsed.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn field_attributes_are_all_checked() {
        let cx = Ctxt::new();
        let field: syn::Field = syn::parse_quote! {
            #[audit(hide = "x", mask, rename = "a")]
            #[audit(mask, capture, rename = "b", unknown(1, 2), skip)]
            f: u8
        };
        let f = Field::from_ast(&cx, &field);
        assert!(f.mask && f.capture && f.skip);
        assert_eq!(f.rename.unwrap().value(), "a");
        assert_eq!(
            errors(cx),
            [
                "unknown audit field attribute `hide`",
                "duplicate audit attribute `mask`",
                "duplicate audit attribute `rename`",
                "unknown audit field attribute `unknown`",
                "`mask` and `capture` cannot be combined",
            ]
        );
    }

    #[test]
    fn container_attributes_are_all_checked() {
        let cx = Ctxt::new();
        let input: syn::DeriveInput = syn::parse_quote! {
            #[audit(app = "a", app = "b", nope)]
            #[audit(crate = "x::y")]
            struct S { id: u8 }
        };
        let c = Container::from_ast(&cx, &input);
        assert_eq!(c.app.unwrap().value(), "a");
        assert!(c.krate.is_some());
        assert_eq!(
            errors(cx),
            [
                "duplicate audit attribute `app`",
                "unknown audit container attribute `nope`",
            ]
        );
    }
}
