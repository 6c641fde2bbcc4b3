//! Expansion of `#[derive(Audited)]`: parse (container and field attributes, in `attr.rs`, errors
//! collected), then generate `Audited`, `AuditValue` and the inventory registration inside
//! `const _: () = {}`.

use crate::attr;
use crate::ctxt::Ctxt;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields, Ident, LitStr};

struct Field<'a> {
    ident: &'a Ident,
    attrs: attr::Field,
}

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream2> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Some(&named.named),
            _ => None,
        },
        _ => None,
    };
    let Some(fields) = fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "`#[derive(Audited)]` only supports structs with named fields",
        ));
    };

    let cx = Ctxt::new();
    let container = attr::Container::from_ast(&cx, &input);
    let parsed: Vec<Field<'_>> = fields
        .iter()
        .filter_map(|f| {
            Some(Field {
                ident: f.ident.as_ref()?,
                attrs: attr::Field::from_ast(&cx, f),
            })
        })
        .collect();

    let marked: Vec<&Field<'_>> = parsed.iter().filter(|f| f.attrs.id).collect();
    if marked.len() > 1 {
        cx.error_spanned_by(marked[1].ident, "only one field can be `#[audit(id)]`");
    }
    let id_field = marked
        .first()
        .copied()
        .or_else(|| parsed.iter().find(|f| f.ident == "id"));
    let id_ident = id_field.map(|f| f.ident);
    if id_ident.is_none() {
        cx.error_spanned_by(
            &input.ident,
            "`#[derive(Audited)]` needs an id field: name one `id` or mark it with `#[audit(id)]`",
        );
    }
    cx.check()?;
    // Reported above: `check` has returned the error.
    let Some(id_ident) = id_ident else {
        return Ok(TokenStream2::new());
    };

    // The generated code names the runtime through one alias (serde's `use #path as _serde`), so
    // a wrong `crate = "..."` is one unresolved import, not an error at every use.
    let path = container
        .krate
        .map_or_else(|| quote!(::audit_runtime), |p| quote!(#p));
    let krate = quote!(__audit_rt);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let app = container
        .app
        .map_or_else(|| quote!(::core::env!("CARGO_CRATE_NAME")), |l| quote!(#l));

    let mut names = Vec::new();
    let inserts = parsed.iter().filter(|f| !f.attrs.skip).map(|f| {
        let fi = f.ident;
        let key = f
            .attrs
            .rename
            .as_ref()
            .map_or_else(|| fi.to_string(), LitStr::value);
        names.push(key.clone());
        let value = if f.attrs.display {
            quote!(#krate::__private::display_value(&self.#fi))
        } else if f.attrs.serde {
            quote!(#krate::__private::serde_value(&self.#fi))
        } else {
            quote!(#krate::AuditValue::to_audit_bson(&self.#fi))
        };
        // Which names are secrets is the runtime's policy, not this crate's: the field's names go
        // to the runtime, which decides once per field (the `static`) on first use.
        let (mask, capture) = (f.attrs.mask, f.attrs.capture);
        let ident_name = fi.to_string();
        quote! {
            __audit_doc.push(#key, {
                static __AUDIT_SECRET: #krate::__private::OnceLock<bool> =
                    #krate::__private::OnceLock::new();
                #krate::__private::field_value(
                    &__AUDIT_SECRET,
                    &[#ident_name, #key],
                    #mask,
                    #capture,
                    #value,
                )
            });
        }
    });
    let inserts: Vec<TokenStream2> = inserts.collect();
    let n_fields = inserts.len();

    // Generic models cannot be registered (a registration is one concrete type).
    let registration = input.generics.params.is_empty().then(|| {
        quote! {
            #krate::__private::inventory::submit! {
                #krate::ModelRegistration::new(
                    <#ident as #krate::Audited>::MODEL.full_name,
                    <#ident as #krate::Audited>::MODEL.app,
                    <#ident as #krate::Audited>::MODEL.name,
                    &[#(#names),*],
                )
            }
        }
    });
    let doc_var = format_ident!("__audit_doc");
    let out = quote! {
        const _: () = {
            use #path as __audit_rt;

            #[automatically_derived]
            impl #impl_generics #krate::Audited for #ident #ty_generics #where_clause {
                const MODEL: #krate::ModelIdentity = #krate::ModelIdentity {
                    full_name: ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)),
                    app: #app,
                    name: ::core::stringify!(#ident),
                };

                fn audit_id(&self) -> ::core::option::Option<::std::string::String> {
                    #[allow(unused_imports)]
                    use #krate::__private::{IdViaDisplay as _, IdViaOption as _};
                    (&&#krate::__private::Wrap(&self.#id_ident)).__audit_id()
                }

                fn audit_description(&self) -> ::std::string::String {
                    #[allow(unused_imports)]
                    use #krate::__private::{DescViaAny as _, DescViaDisplay as _};
                    (&&#krate::__private::Wrap(self)).__audit_description(
                        ::core::stringify!(#ident),
                        #krate::Audited::audit_id(self),
                    )
                }

                fn audit_snapshot(&self) -> #krate::Snapshot {
                    let mut #doc_var = #krate::Snapshot::with_capacity(#n_fields);
                    #(#inserts)*
                    #doc_var
                }
            }

            #[automatically_derived]
            impl #impl_generics #krate::AuditValue for #ident #ty_generics #where_clause {
                fn to_audit_bson(&self) -> #krate::__private::bson::Bson {
                    #krate::__private::bson::Bson::Document(#krate::Audited::audit_snapshot(self).into_document())
                }
            }

            #registration
        };
    };
    crate::debug("derive(Audited)", &out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_is_rejected() {
        let e = expand(syn::parse_quote!(
            enum E {
                A,
            }
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`#[derive(Audited)]` only supports structs with named fields"
        );
    }

    #[test]
    fn errors_are_collected() {
        let e = expand(syn::parse_quote! {
            struct S { #[audit(nope)] a: u8, #[audit(skip, skip)] b: u8 }
        })
        .unwrap_err();
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            all,
            [
                "unknown audit field attribute `nope`",
                "duplicate audit attribute `skip`",
                "`#[derive(Audited)]` needs an id field: name one `id` or mark it with `#[audit(id)]`"
            ]
        );
    }
}
