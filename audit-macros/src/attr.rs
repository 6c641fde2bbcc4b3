//! What the attributes say: `ViewArgs` for `#[audited_view(...)]` / `#[disable_audit(...)]`, and
//! the `#[audit(...)]` helper attributes of `#[derive(Audited)]` (`Container`, `Field`).
//!
//! Parsing never stops at the first problem: every error goes to the [`Ctxt`] and parsing carries
//! on, so the user sees all of them at once. Every value is set through [`Attr`] or [`BoolAttr`],
//! which own the duplicate check, so no branch can forget it (serde's pattern).

use crate::ctxt::Ctxt;
use proc_macro2::TokenStream as TokenStream2;
use quote::ToTokens;
use std::fmt;
use syn::parse::{Parse, ParseStream, Parser};
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
pub(crate) const NAME: Symbol = Symbol("name");
pub(crate) const ARGS: Symbol = Symbol("args");
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

/// How a second occurrence is reported: the view macros' arguments in axum's words, the derive's
/// helper attributes in serde's.
#[derive(Copy, Clone)]
pub(crate) enum Family {
    /// `#[audited_view(name = "a", name = "b")]`: "`name` specified more than once".
    ViewArgument,
    /// `#[audit(mask, mask)]`: "duplicate audit attribute `mask`".
    AuditAttribute,
}

impl Family {
    fn duplicate(self, name: Symbol) -> String {
        match self {
            Family::ViewArgument => format!("`{name}` specified more than once"),
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

/// `args(a, b)`: the handler arguments to record.
pub(crate) struct Args {
    /// The `args` keyword, for errors about the whole list.
    pub(crate) keyword: kw::args,
    pub(crate) names: Vec<Ident>,
}

/// Parsed `#[audited_view(...)]` / `#[disable_audit(...)]` arguments.
pub(crate) struct ViewArgs {
    pub(crate) app: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) args: Option<Args>,
    pub(crate) krate: Option<syn::Path>,
}

impl ViewArgs {
    /// Parses the arguments; an argument that cannot be parsed is reported and skipped (up to
    /// the next comma), so the following ones are still checked.
    pub(crate) fn from_tokens(cx: &Ctxt, tokens: TokenStream2) -> ViewArgs {
        let mut app = Attr::none(cx, Family::ViewArgument, APP);
        let mut name = Attr::none(cx, Family::ViewArgument, NAME);
        let mut args = Attr::none(cx, Family::ViewArgument, ARGS);
        let mut krate = Attr::none(cx, Family::ViewArgument, CRATE);
        let parser = |input: ParseStream<'_>| -> syn::Result<()> {
            while !input.is_empty() {
                let one = parse_view_arg(input, &mut app, &mut name, &mut args, &mut krate)
                    .and_then(|()| {
                        if !input.is_empty() {
                            input.parse::<Token![,]>()?;
                        }
                        Ok(())
                    });
                if let Err(e) = one {
                    cx.syn_error(e);
                    skip_past_comma(input);
                }
            }
            Ok(())
        };
        if let Err(e) = parser.parse2(tokens) {
            cx.syn_error(e);
        }
        ViewArgs {
            app: app.get(),
            name: name.get(),
            args: args.get(),
            krate: krate.get(),
        }
    }
}

fn parse_view_arg(
    input: ParseStream<'_>,
    app: &mut Attr<'_, LitStr>,
    name: &mut Attr<'_, LitStr>,
    args: &mut Attr<'_, Args>,
    krate: &mut Attr<'_, syn::Path>,
) -> syn::Result<()> {
    let lookahead = input.lookahead1();
    if lookahead.peek(kw::app) {
        // app = "billing"
        let k: kw::app = input.parse()?;
        input.parse::<Token![=]>()?;
        app.set(k, input.parse()?);
    } else if lookahead.peek(kw::name) {
        // name = "nightly"
        let k: kw::name = input.parse()?;
        input.parse::<Token![=]>()?;
        name.set(k, input.parse()?);
    } else if lookahead.peek(kw::args) {
        // args(a, b)
        let keyword: kw::args = input.parse()?;
        let content;
        syn::parenthesized!(content in input);
        let names: Punctuated<Ident, Token![,]> =
            content.parse_terminated(Ident::parse, Token![,])?;
        let names = names.into_iter().collect();
        args.set(keyword, Args { keyword, names });
    } else if lookahead.peek(Token![crate]) {
        // crate = "path::to::audit_runtime"
        let k: Token![crate] = input.parse()?;
        input.parse::<Token![=]>()?;
        let lit: LitStr = input.parse()?;
        krate.set(k, lit.parse()?);
    } else {
        return Err(lookahead.error());
    }
    Ok(())
}

/// Skips the rest of a bad argument and the comma after it.
fn skip_past_comma(input: ParseStream<'_>) {
    while !input.is_empty() {
        if input.peek(Token![,]) {
            let _ = input.parse::<Token![,]>();
            return;
        }
        if input.parse::<proc_macro2::TokenTree>().is_err() {
            return;
        }
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
    use quote::quote;

    fn errors(cx: Ctxt) -> Vec<String> {
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn view_arguments_are_all_checked() {
        let cx = Ctxt::new();
        let args = ViewArgs::from_tokens(
            &cx,
            quote!(
                name = "a",
                group = "x",
                app = 3,
                name = "b",
                args(x),
                args(y),
                crate = "p"
            ),
        );
        assert_eq!(args.name.unwrap().value(), "a", "the first value is kept");
        assert_eq!(args.args.unwrap().names[0], "x");
        assert!(args.krate.is_some() && args.app.is_none());
        assert_eq!(
            errors(cx),
            [
                "expected one of: `app`, `name`, `args`, `crate`",
                "expected string literal",
                "`name` specified more than once",
                "`args` specified more than once",
            ]
        );
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
