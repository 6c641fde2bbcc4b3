//! The query helpers of the original's managers, typed (a mistyped filter is a compile error, not an empty result).
//!
//! ```no_run
//! # async fn demo(store: audit_runtime::Store) -> Result<(), audit_runtime::QueryError> {
//! use audit_runtime::{Access, UrlMatch};
//! // Accesses to /polls/... by user 23, newest first.
//! let hits = Access::objects()
//!     .filter_by_url(UrlMatch::regex(r"^/polls/\w*$"))
//!     .user_id(23)
//!     .newest_first()
//!     .fetch(&store)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Each `filter_by_*` helper owns the fields it filters on; combining it with a plain filter on one
//! of those fields (a url helper plus a raw `request.path` filter) is a [`QueryError::Conflict`],
//! as the original's "incompatible arguments" were. `get_by_*` returns exactly one document or
//! [`QueryError::NotFound`] / [`QueryError::MultipleFound`].

use crate::document::{Access, Action, AuditDocument, ModelAction, Process, UserId};
use crate::model::Audited;
use crate::store::{CmpOp, Filter, FindOptions, Order, Store, StoreError};
use bson::Bson;
use chrono::{DateTime, Utc};
use std::marker::PhantomData;

/// How a url helper matches `request.path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlMatch {
    /// Equal (the original's plain `url=`).
    Exact(String),
    /// Equal, ignoring case.
    IExact(String),
    /// Contains the text.
    Contains(String),
    /// Contains the text, ignoring case.
    IContains(String),
    /// Starts with the text.
    StartsWith(String),
    /// Starts with the text, ignoring case.
    IStartsWith(String),
    /// Ends with the text.
    EndsWith(String),
    /// Ends with the text, ignoring case.
    IEndsWith(String),
    /// Matches the regular expression (search semantics).
    Regex(String),
    /// Matches the regular expression, ignoring case.
    IRegex(String),
}

impl UrlMatch {
    /// `UrlMatch::Exact`.
    pub fn exact(s: impl Into<String>) -> Self {
        UrlMatch::Exact(s.into())
    }
    /// `UrlMatch::Regex`.
    pub fn regex(s: impl Into<String>) -> Self {
        UrlMatch::Regex(s.into())
    }
    /// `UrlMatch::IContains`.
    pub fn icontains(s: impl Into<String>) -> Self {
        UrlMatch::IContains(s.into())
    }

    /// The filter on `path`.
    pub fn to_filter(&self, path: &str) -> Result<Filter, QueryError> {
        let re = |pattern: String, ci: bool| Filter::Regex {
            path: path.to_owned(),
            pattern,
            case_insensitive: ci,
        };
        Ok(match self {
            UrlMatch::Exact(s) => Filter::eq(path, s.as_str()),
            UrlMatch::IExact(s) => re(format!("^{}$", regex::escape(s)), true),
            UrlMatch::Contains(s) => re(regex::escape(s), false),
            UrlMatch::IContains(s) => re(regex::escape(s), true),
            UrlMatch::StartsWith(s) => Filter::Prefix(path.to_owned(), s.clone()),
            UrlMatch::IStartsWith(s) => re(format!("^{}", regex::escape(s)), true),
            UrlMatch::EndsWith(s) => re(format!("{}$", regex::escape(s)), false),
            UrlMatch::IEndsWith(s) => re(format!("{}$", regex::escape(s)), true),
            UrlMatch::Regex(p) | UrlMatch::IRegex(p) => {
                regex::Regex::new(p)
                    .map_err(|e| QueryError::InvalidRegex(p.clone(), e.to_string()))?;
                re(p.clone(), matches!(self, UrlMatch::IRegex(_)))
            }
        })
    }
}

/// A query that cannot run, or did not find what `get` needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A helper and another filter both constrain the same field.
    #[error("you cannot call {helper} together with a filter on `{field}`")]
    Conflict {
        /// The helper.
        helper: &'static str,
        /// The field both constrain.
        field: String,
    },
    /// A regex that does not compile.
    #[error("invalid regex `{0}`: {1}")]
    InvalidRegex(String, String),
    /// `get` found nothing.
    #[error("no {0} matches the query")]
    NotFound(&'static str),
    /// `get` found several.
    #[error("{1} {0} documents match the query, expected one")]
    MultipleFound(&'static str, u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A query over one document type. Build it with `T::objects()`, run it with `fetch`, `count` or
/// `get`.
#[derive(Debug, Clone)]
pub struct Query<T> {
    filters: Vec<Filter>,
    /// `(helper, field)` pairs owned by `filter_by_*` helpers.
    owned: Vec<(&'static str, &'static str)>,
    /// Fields constrained by plain filters.
    plain: Vec<String>,
    sort: Vec<(String, Order)>,
    skip: u64,
    limit: Option<u64>,
    error: Option<String>,
    conflict: Option<(&'static str, String)>,
    _doc: PhantomData<fn() -> T>,
}

impl<T> Default for Query<T> {
    fn default() -> Self {
        Query {
            filters: Vec::new(),
            owned: Vec::new(),
            plain: Vec::new(),
            sort: Vec::new(),
            skip: 0,
            limit: None,
            error: None,
            conflict: None,
            _doc: PhantomData,
        }
    }
}

fn type_label<T: AuditDocument>() -> &'static str {
    T::COLLECTION.name()
}

impl<T: AuditDocument> Query<T> {
    /// Every document of the type.
    pub fn new() -> Self {
        Self::default()
    }

    fn helper(
        mut self,
        helper: &'static str,
        fields: &[&'static str],
        filter: Result<Filter, QueryError>,
    ) -> Self {
        for f in fields {
            if let Some((_, other)) = self.owned.iter().find(|(_, o)| o == f) {
                let _ = other;
                self.conflict.get_or_insert((helper, (*f).to_owned()));
            }
            if self.plain.iter().any(|p| p == f) {
                self.conflict.get_or_insert((helper, (*f).to_owned()));
            }
            self.owned.push((helper, f));
        }
        match filter {
            Ok(f) => self.filters.push(f),
            Err(e) => {
                self.error.get_or_insert(e.to_string());
            }
        }
        self
    }

    /// Adds a plain filter (any field, any condition). Combined with AND.
    pub fn filter(mut self, filter: Filter) -> Self {
        for p in filter.paths() {
            if let Some((helper, _)) = self.owned.iter().find(|(_, o)| *o == p) {
                self.conflict.get_or_insert((helper, p.to_owned()));
            }
            self.plain.push(p.to_owned());
        }
        self.filters.push(filter);
        self
    }

    /// `path == value`.
    pub fn eq(self, path: &str, value: impl Into<Bson>) -> Self {
        self.filter(Filter::eq(path, value))
    }

    /// Adds a sort key.
    pub fn order_by(mut self, path: impl Into<String>, order: Order) -> Self {
        self.sort.push((path.into(), order));
        self
    }

    /// Newest first, by the collection's date field (the API's default ordering).
    pub fn newest_first(self) -> Self {
        self.order_by(T::COLLECTION.date_field(), Order::Desc)
    }

    /// Passes over the first `n` documents.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    /// At most `n` documents.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Only documents whose date field is at or after `t`.
    pub fn since(self, t: DateTime<Utc>) -> Self {
        self.filter(Filter::Cmp(
            T::COLLECTION.date_field().into(),
            CmpOp::Gte,
            bson::DateTime::from_chrono(t).into(),
        ))
    }

    /// Only documents whose date field is at or before `t`.
    pub fn until(self, t: DateTime<Utc>) -> Self {
        self.filter(Filter::Cmp(
            T::COLLECTION.date_field().into(),
            CmpOp::Lte,
            bson::DateTime::from_chrono(t).into(),
        ))
    }

    /// The filter and window this query runs, or why it cannot run.
    pub fn options(&self) -> Result<FindOptions, QueryError> {
        if let Some((helper, field)) = &self.conflict {
            return Err(QueryError::Conflict {
                helper,
                field: field.clone(),
            });
        }
        if let Some(e) = &self.error {
            return Err(QueryError::InvalidRegex(String::new(), e.clone()));
        }
        let filter = if self.filters.len() == 1 {
            self.filters[0].clone()
        } else {
            Filter::And(self.filters.clone())
        };
        Ok(FindOptions {
            filter,
            sort: self.sort.clone(),
            skip: self.skip,
            limit: self.limit,
            max_time: None,
        })
    }

    /// The matching documents.
    pub async fn fetch(&self, store: &Store) -> Result<Vec<T>, QueryError> {
        Ok(store.find::<T>(&self.options()?).await?)
    }

    /// How many documents match (skip and limit ignored).
    pub async fn count(&self, store: &Store) -> Result<u64, QueryError> {
        Ok(store.count(T::COLLECTION, &self.options()?.filter).await?)
    }

    /// The one matching document.
    pub async fn get(&self, store: &Store) -> Result<T, QueryError> {
        let mut opts = self.options()?;
        opts.limit = Some(2);
        let mut found = store.find::<T>(&opts).await?;
        match found.len() {
            0 => Err(QueryError::NotFound(type_label::<T>())),
            1 => Ok(found.remove(0)),
            _ => Err(QueryError::MultipleFound(
                type_label::<T>(),
                store.count(T::COLLECTION, &opts.filter).await?,
            )),
        }
    }
}

impl Access {
    /// A query over accesses.
    pub fn objects() -> Query<Access> {
        Query::new()
    }
}

impl ModelAction {
    /// A query over model actions.
    pub fn objects() -> Query<ModelAction> {
        Query::new()
    }
}

impl Process {
    /// A query over processes.
    pub fn objects() -> Query<Process> {
        Query::new()
    }
}

impl Query<Access> {
    /// Accesses whose `request.path` matches.
    pub fn filter_by_url(self, m: UrlMatch) -> Self {
        let f = m.to_filter("request.path");
        self.helper("filter_by_url", &["request.path"], f)
    }

    /// The one access whose `request.path` matches.
    pub async fn get_by_url(self, m: UrlMatch, store: &Store) -> Result<Access, QueryError> {
        self.filter_by_url(m).get(store).await
    }

    /// Accesses served by the handler registered as `full_name`.
    pub fn filter_by_view(self, full_name: &str) -> Self {
        self.helper(
            "filter_by_view",
            &["view.full_name", "view.name", "view.app"],
            Ok(Filter::eq("view.full_name", full_name)),
        )
    }

    /// The one access served by the handler `full_name`.
    pub async fn get_by_view(self, full_name: &str, store: &Store) -> Result<Access, QueryError> {
        self.filter_by_view(full_name).get(store).await
    }

    /// Accesses whose exception type is `kind`: a type path such as `std::io::Error`, or `panic`.
    pub fn filter_by_exception(self, kind: &str) -> Self {
        self.helper(
            "filter_by_exception",
            &["exception.type"],
            Ok(Filter::eq("exception.type", kind)),
        )
    }

    /// The one access whose exception type is `kind`.
    pub async fn get_by_exception(self, kind: &str, store: &Store) -> Result<Access, QueryError> {
        self.filter_by_exception(kind).get(store).await
    }

    /// Accesses of one user.
    pub fn user_id(self, id: impl Into<UserId>) -> Self {
        self.filter(Filter::Eq("user.id".into(), id.into().into()))
    }

    /// Accesses to handlers of one app.
    pub fn view_app(self, app: &str) -> Self {
        self.eq("view.app", app)
    }

    /// Accesses to handlers of one name.
    pub fn view_name(self, name: &str) -> Self {
        self.eq("view.name", name)
    }

    /// Accesses with one correlation id.
    pub fn interlink_id(self, id: &str) -> Self {
        self.eq("interlink_id", id)
    }

    /// Accesses served by one process.
    pub fn process(self, id: bson::oid::ObjectId) -> Self {
        self.eq("process", id)
    }
}

impl Query<ModelAction> {
    /// Actions on model `M`: by app and name, as the original.
    pub fn filter_by_model<M: Audited>(self) -> Self {
        self.filter_by_model_name(M::MODEL.full_name)
    }

    /// Actions on the model whose full name is `full_name`.
    pub fn filter_by_model_name(self, full_name: &str) -> Self {
        self.helper(
            "filter_by_model",
            &["model.full_name", "model.name", "model.app"],
            Ok(Filter::eq("model.full_name", full_name)),
        )
    }

    /// The one action on model `M`.
    pub async fn get_by_model<M: Audited>(self, store: &Store) -> Result<ModelAction, QueryError> {
        self.filter_by_model::<M>().get(store).await
    }

    /// Actions on any of the models named, by exact full name (an exact set: `User` does not match
    /// `UserProfile`; an empty list matches nothing).
    pub fn filter_by_model_list<S: AsRef<str>>(self, full_names: &[S]) -> Self {
        let f = Filter::In(
            "model.full_name".into(),
            full_names
                .iter()
                .map(|s| Bson::String(s.as_ref().to_owned()))
                .collect(),
        );
        self.helper(
            "filter_by_model_list",
            &["model.full_name", "model.name", "model.app"],
            Ok(f),
        )
    }

    /// The one action on any of the models named.
    pub async fn get_by_model_list<S: AsRef<str>>(
        self,
        full_names: &[S],
        store: &Store,
    ) -> Result<ModelAction, QueryError> {
        self.filter_by_model_list(full_names).get(store).await
    }

    /// Actions on one instance: its model and its id.
    pub fn filter_by_instance<M: Audited>(self, instance: &M) -> Self {
        self.filter_by_instance_id(M::MODEL.full_name, &instance.audit_id().unwrap_or_default())
    }

    /// Actions on the instance `id` of the model `full_name`.
    pub fn filter_by_instance_id(self, full_name: &str, id: &str) -> Self {
        let f = Filter::And(vec![
            Filter::eq("model.full_name", full_name),
            Filter::eq("instance.id", id),
        ]);
        self.helper(
            "filter_by_instance",
            &["instance.id", "model.full_name", "model.name", "model.app"],
            Ok(f),
        )
    }

    /// The one action on one instance.
    pub async fn get_by_instance<M: Audited>(
        self,
        instance: &M,
        store: &Store,
    ) -> Result<ModelAction, QueryError> {
        self.filter_by_instance(instance).get(store).await
    }

    /// Actions of one kind.
    pub fn action(self, action: Action) -> Self {
        self.eq("action", action.as_str())
    }

    /// Actions made during one access.
    pub fn access(self, id: bson::oid::ObjectId) -> Self {
        self.eq("access", id)
    }
}
