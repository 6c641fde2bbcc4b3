//! Who served a request and which model an action touched: plain data, shared by the registry,
//! the documents, the request context and the macros' runtime half. It depends on nothing else in
//! the crate, so any module can name an identity without pulling in the code that computes one.

/// Who served a request: `full_name` (Rust path), `app`, `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewIdentity {
    /// `module::function` or `module::Type::method` for an annotated handler (see the manual of
    /// `#[audited_view]` for the rule), the matched route for a route without one.
    pub full_name: String,
    /// The crate name or the `app = "..."` override.
    pub app: String,
    /// The function name or the `name = "..."` override.
    pub name: String,
}

impl ViewIdentity {
    /// An identity from its three parts.
    pub fn new(
        full_name: impl Into<String>,
        app: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ViewIdentity {
            full_name: full_name.into(),
            app: app.into(),
            name: name.into(),
        }
    }

    /// An identity for a route without `#[audited_view]`: the matched route is the view.
    pub fn for_route(app: &str, route: &str) -> Self {
        ViewIdentity::new(route, app, route)
    }
}

/// A model's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    /// The Rust path of the type.
    pub full_name: &'static str,
    /// The crate name, or the `#[audit(app = "...")]` override.
    pub app: &'static str,
    /// The type name.
    pub name: &'static str,
}

impl ModelIdentity {
    /// An identity from its three parts (a constant expression, for `Audited::MODEL`).
    pub const fn new(full_name: &'static str, app: &'static str, name: &'static str) -> Self {
        ModelIdentity {
            full_name,
            app,
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_its_own_view() {
        let v = ViewIdentity::for_route("demo", "/polls/{id}");
        assert_eq!(v, ViewIdentity::new("/polls/{id}", "demo", "/polls/{id}"));
    }
}
