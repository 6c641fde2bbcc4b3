//! The console's token check: `Authorization: Bearer TOKEN` for the API, a login form and a
//! session cookie for browsers. Tokens and session ids are compared in constant time, so the
//! time an answer takes says nothing about how much of a guess was right.

use super::{base, pages, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, Response, StatusCode, Uri};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "audit_console_session";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first (a bound on memory, whoever logs in).
const MAX_SESSIONS: usize = 1024;

pub(crate) struct Auth {
    token: Option<String>,
    sessions: Mutex<Vec<([u8; 32], Instant)>>,
}

impl Auth {
    pub(crate) fn new(token: Option<String>) -> Self {
        Auth {
            token,
            sessions: Mutex::new(Vec::new()),
        }
    }

    /// `true` when there is no token to check.
    pub(crate) fn open(&self) -> bool {
        self.token.is_none()
    }

    fn token_matches(&self, given: &str) -> bool {
        match &self.token {
            None => true,
            Some(t) => bool::from(t.as_bytes().ct_eq(given.as_bytes())),
        }
    }

    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| self.token_matches(t.trim()))
    }

    fn session_ok(&self, headers: &HeaderMap) -> bool {
        let Some(id) = session_cookie(headers) else {
            return false;
        };
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|(_, exp)| *exp > now);
        // Every stored id is compared, so the time taken does not depend on which one matched.
        sessions
            .iter()
            .fold(subtle::Choice::from(0), |acc, (s, _)| acc | s.ct_eq(&id))
            .into()
    }

    /// API access: a bearer token, or the browser's session.
    pub(crate) fn api_ok(&self, headers: &HeaderMap) -> bool {
        self.open() || self.bearer_ok(headers) || self.session_ok(headers)
    }

    /// Page access: the session (or a bearer token, for scripts fetching pages).
    pub(crate) fn page_ok(&self, headers: &HeaderMap) -> bool {
        self.open() || self.session_ok(headers) || self.bearer_ok(headers)
    }

    fn new_session(&self) -> Option<[u8; 32]> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).ok()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push((id, Instant::now() + SESSION_LIFETIME));
        Some(id)
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_cookie(headers) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|(s, _)| !bool::from(s.ct_eq(&id)));
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn session_cookie(headers: &HeaderMap) -> Option<[u8; 32]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| unhex(v))
}

/// 401 with a JSON error, for the API.
pub(crate) fn unauthorized() -> Response<Body> {
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"audit console\"")
        .body(Body::from(
            r#"{"error":"unauthorized","message":"send Authorization: Bearer TOKEN"}"#,
        ))
        .expect("static response")
}

/// A redirect to the login page of the console under `base`.
pub(crate) fn to_login(base: &str) -> Response<Body> {
    see_other(&format!("{base}/login"))
}

fn see_other(to: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .expect("redirect")
}

pub(crate) async fn login_form(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
) -> Response<Body> {
    let base = base(&original, &uri);
    if state.auth.open() {
        return see_other(&format!("{base}/"));
    }
    pages::login_page(&base, None, StatusCode::OK)
}

pub(crate) async fn login(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    body: Bytes,
) -> Response<Body> {
    let base = base(&original, &uri);
    if state.auth.open() {
        return see_other(&format!("{base}/"));
    }
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if token.is_empty() || !state.auth.token_matches(&token) {
        return pages::login_page(&base, Some("Wrong token."), StatusCode::UNAUTHORIZED);
    }
    let Some(id) = state.auth.new_session() else {
        return pages::login_page(
            &base,
            Some("No randomness for a session id."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let mut res = see_other(&format!("{base}/"));
    // HttpOnly: no script can read it; SameSite=Strict: no other site's page can send it along
    // (a cross-site form or link arrives logged out); Path: only this console's routes get it.
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path={}/; Max-Age={}",
        hex(&id),
        base,
        SESSION_LIFETIME.as_secs()
    );
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
    res
}

pub(crate) async fn logout(
    State(state): State<Shared>,
    OriginalUri(original): OriginalUri,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let base = base(&original, &uri);
    state.auth.end_session(&headers);
    let mut res = to_login(&base);
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path={base}/; Max-Age=0");
    res.headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("cookie is ASCII"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_sessions() {
        let a = Auth::new(Some("s3cret".into()));
        let mut h = HeaderMap::new();
        assert!(!a.api_ok(&h));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!a.api_ok(&h), "a prefix of the token is not the token");
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(a.api_ok(&h));
        let id = a.new_session().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={}", hex(&id)).parse().unwrap(),
        );
        assert!(a.page_ok(&h));
        a.end_session(&h);
        assert!(!a.page_ok(&h));
        assert!(Auth::new(None).page_ok(&HeaderMap::new()));
    }
}
