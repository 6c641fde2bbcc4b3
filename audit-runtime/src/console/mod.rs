//! The read-only console: a JSON API and server-rendered pages to search the trail.
//!
//! [`Console::new`] gives an axum [`Router`] to nest under any prefix of an
//! application (links and assets are built from the prefix the request came through), or to serve
//! on its own with `audit serve`. Nothing in it writes to the store: every route is a `GET`, except
//! logging in and out, which touch only the console's in-memory sessions.
//!
//! ```no_run
//! # async fn demo(store: audit_runtime::Store) {
//! use audit_runtime::console::Console;
//! let app: axum::Router = axum::Router::new()
//!     .nest("/audit", Console::new(store).token("a-long-random-console-token").router());
//! # let _ = app; }
//! ```
//!
//! Routes (under the prefix):
//! - `GET /api/access`, `/api/access/{id}`, `/api/model-action`, `/api/model-action/{id}`,
//!   `/api/process/{id}`, `/api/stats`: JSON, the stored documents as relaxed Extended JSON;
//! - `GET /`, `/access`, `/access/{id}`, `/model-action`, `/model-action/{id}`, `/history`,
//!   `/process/{id}`: pages, taking the same query parameters as the API;
//! - `GET /login`, `POST /login`, `POST /logout`, `GET /assets/style.css`.
//!
//! With a token, the API wants `Authorization: Bearer TOKEN` (or the session cookie) and answers
//! 401 without it; pages redirect to `/login`, whose form sets an HttpOnly, SameSite=Strict
//! session cookie. Without a token there is no check: the application's own auth layer guards the
//! mount point.
//!
//! Every query carries a time limit ([`Console::query_timeout`]); one that hits it answers 503.

mod api;
mod auth;
mod charts;
mod pages;
mod params;
pub mod serve;
mod stats;

use crate::store::{Store, StoreError};
use axum::http::{header, HeaderValue, Response, StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

/// How long one console query may run unless told otherwise.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest token the console accepts: a shorter one can be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The console over one store. Build it, then take its [`router`](Console::router).
#[derive(Clone)]
pub struct Console {
    store: Store,
    token: Option<String>,
    query_timeout: Duration,
    hosts: Option<Vec<String>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("store", &self.store)
            .field("token", &self.token.as_ref().map(|_| "********"))
            .field("query_timeout", &self.query_timeout)
            .field("hosts", &self.hosts)
            .finish()
    }
}

pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) auth: auth::Auth,
    pub(crate) query_timeout: Duration,
}

pub(crate) type Shared = Arc<State>;

impl Console {
    /// A console over `store`, with no token check (for mounting behind the application's own
    /// authentication) and the default query time limit.
    pub fn new(store: Store) -> Self {
        Console {
            store,
            token: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            hosts: None,
        }
    }

    /// Answers only requests whose `Host` is one of `hosts` (names, without the port) and 421
    /// to the others. A console without a token on a loopback address needs this: a web page
    /// can point its own name at 127.0.0.1 (DNS rebinding) and read the console otherwise.
    /// `audit serve` sets it to the loopback names when it runs without a token.
    pub fn allow_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hosts = Some(
            hosts
                .into_iter()
                .map(|h| h.into().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// Requires this token (at least [`MIN_TOKEN_BYTES`] bytes): as `Authorization: Bearer
    /// TOKEN` on the API, through the login form for pages. Failed logins are throttled per
    /// client and overall.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Like [`token`](Self::token), or no check with `None`.
    pub fn maybe_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// How long one query may run before the console gives up on it and answers 503.
    pub fn query_timeout(mut self, limit: Duration) -> Self {
        self.query_timeout = limit;
        self
    }

    /// The routes, to serve or to nest under a prefix.
    ///
    /// # Panics
    ///
    /// When the token is shorter than [`MIN_TOKEN_BYTES`]: refused at startup, before anyone
    /// could guess it.
    pub fn router(self) -> Router {
        if let Some(t) = &self.token {
            assert!(
                t.len() >= MIN_TOKEN_BYTES,
                "the audit console's token is {} bytes; it must be at least {MIN_TOKEN_BYTES} \
                 (for example: openssl rand -hex 32)",
                t.len()
            );
        }
        let hosts = self.hosts.clone();
        let state: Shared = Arc::new(State {
            store: self.store,
            auth: auth::Auth::new(self.token),
            query_timeout: self.query_timeout,
        });
        Router::new()
            .route("/api/access", get(api::access_list))
            .route("/api/access/{id}", get(api::access_one))
            .route("/api/model-action", get(api::model_action_list))
            .route("/api/model-action/{id}", get(api::model_action_one))
            .route("/api/process/{id}", get(api::process_one))
            .route("/api/stats", get(api::stats))
            .route("/", get(pages::dashboard))
            .route("/access", get(pages::access_search))
            .route("/access/{id}", get(pages::access_detail))
            .route("/model-action", get(pages::model_action_search))
            .route("/model-action/{id}", get(pages::model_action_detail))
            .route("/history", get(pages::history))
            .route("/process/{id}", get(pages::process_detail))
            .route("/login", get(auth::login_form).post(auth::login))
            .route("/logout", post(auth::logout))
            .route("/assets/style.css", get(style))
            .fallback(not_found)
            .layer(axum::middleware::map_response(security_headers))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let allowed = host_allowed(hosts.as_deref(), req.headers());
                    async move {
                        if allowed {
                            next.run(req).await
                        } else {
                            misdirected()
                        }
                    }
                },
            ))
            .with_state(state)
    }
}

/// Whether the request's `Host` (its name, without the port) is one of `hosts` (any, without a
/// list).
fn host_allowed(hosts: Option<&[String]>, headers: &axum::http::HeaderMap) -> bool {
    let Some(hosts) = hosts else {
        return true;
    };
    let Some(host) = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase)
    else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => host.as_str(),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    hosts
        .iter()
        .any(|h| h.trim_start_matches('[').trim_end_matches(']') == name)
}

/// 421: this console does not answer to that name.
fn misdirected() -> Response<axum::body::Body> {
    Response::builder()
        .status(StatusCode::MISDIRECTED_REQUEST)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(axum::body::Body::from(
            "this console answers to its own host names only",
        ))
        .expect("static response")
}

impl From<Console> for Router {
    fn from(c: Console) -> Router {
        c.router()
    }
}

/// The stylesheet, compiled into the binary (no CDN, nothing to deploy beside it).
const STYLE: &str = include_str!("assets/style.css");

async fn style() -> Response<axum::body::Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(STYLE.into())
        .expect("static response")
}

async fn not_found() -> Response<axum::body::Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body("not found".into())
        .expect("static response")
}

/// Every response: no script at all may run (the pages hold attacker-controlled text, and need
/// none), styles and images only from the console itself (charts are `data:` images), no framing,
/// no referrer leaking search parameters, no caching of the trail by shared caches.
async fn security_headers(mut res: Response<axum::body::Body>) -> Response<axum::body::Body> {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The prefix the console is mounted under (`""` at the root, `/audit` when nested there): the
/// request's original path minus the path the console's router saw.
pub(crate) fn base(original: &Uri, seen: &Uri) -> String {
    let full = original.path();
    let inner = seen.path();
    let prefix = full.strip_suffix(inner).unwrap_or(full);
    prefix.trim_end_matches('/').to_owned()
}

/// A store failure as the console reports it: 503 when the time limit stopped the query.
pub(crate) fn store_status(e: &StoreError) -> (StatusCode, String) {
    match e {
        StoreError::TimeLimit(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the query ran past the console's time limit ({} ms) and was stopped; narrow the search",
                d.as_millis()
            ),
        ),
        other => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store error: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::base;

    #[test]
    fn base_is_the_mount_prefix() {
        let u = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        assert_eq!(base(&u("/access?x=1"), &u("/access?x=1")), "");
        assert_eq!(base(&u("/audit/access"), &u("/access")), "/audit");
        assert_eq!(base(&u("/audit/"), &u("/")), "/audit");
        assert_eq!(base(&u("/a/b/api/access"), &u("/api/access")), "/a/b");
    }
}
