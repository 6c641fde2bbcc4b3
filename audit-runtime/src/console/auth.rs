//! The console's token check: `Authorization: Bearer TOKEN` for the API, a login form and a
//! session cookie for browsers. Tokens and session ids are compared in constant time, so the
//! time an answer takes says nothing about how much of a guess was right; and failed logins are
//! throttled, per client (after a few, each one doubles the wait before the next is heard) and
//! overall (past a rate, everyone waits), so guessing is slow however many connections it uses.

use super::{base, pages, Shared};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, OriginalUri, State};
use axum::http::{header, Extensions, HeaderMap, Response, StatusCode, Uri};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "audit_console_session";
/// How long a login lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first (a bound on memory, whoever logs in).
const MAX_SESSIONS: usize = 1024;

/// Failed logins a client may make before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The longest wait a client is given.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Failed logins a minute, from everyone, before every login waits.
const GLOBAL_FAILURES_PER_MINUTE: usize = 60;
/// Clients remembered at most (the oldest go first).
const MAX_CLIENTS: usize = 10_000;

/// Who failed to log in, and until when they wait.
#[derive(Default)]
struct Throttle {
    clients: HashMap<Option<IpAddr>, (u32, Instant)>,
    recent: VecDeque<Instant>,
}

pub(crate) struct Auth {
    token: Option<String>,
    sessions: Mutex<Vec<([u8; 32], Instant)>>,
    throttle: Mutex<Throttle>,
}

impl Auth {
    pub(crate) fn new(token: Option<String>) -> Self {
        Auth {
            token,
            sessions: Mutex::new(Vec::new()),
            throttle: Mutex::new(Throttle::default()),
        }
    }

    /// `Err(wait)` when `client` (or, past the overall rate, anyone) must wait before a login is
    /// heard.
    fn may_try(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        while t
            .recent
            .front()
            .is_some_and(|f| now.duration_since(*f) > Duration::from_secs(60))
        {
            t.recent.pop_front();
        }
        if let Some((_, until)) = t.clients.get(&client) {
            if *until > now {
                return Err(*until - now);
            }
        }
        if t.recent.len() >= GLOBAL_FAILURES_PER_MINUTE {
            let oldest = *t.recent.front().expect("not empty");
            return Err(Duration::from_secs(60).saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    /// A failed login of `client`: after [`FREE_FAILURES`], each doubles its wait.
    fn failed(&self, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        t.recent.push_back(now);
        if t.clients.len() >= MAX_CLIENTS && !t.clients.contains_key(&client) {
            if let Some(oldest) = t
                .clients
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| *k)
            {
                t.clients.remove(&oldest);
            }
        }
        let entry = t.clients.entry(client).or_insert((0, now));
        entry.0 += 1;
        if entry.0 >= FREE_FAILURES {
            let doublings = (entry.0 - FREE_FAILURES).min(20);
            entry.1 = now + (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_WAIT);
        }
    }

    fn succeeded(&self, client: Option<IpAddr>) {
        let mut t = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        t.clients.remove(&client);
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
    extensions: Extensions,
    body: Bytes,
) -> Response<Body> {
    let base = base(&original, &uri);
    if state.auth.open() {
        return see_other(&format!("{base}/"));
    }
    // The client, when the server says who it is (`into_make_service_with_connect_info`); all
    // unknown clients share one bucket.
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = state.auth.may_try(client) {
        let secs = wait.as_secs().max(1);
        let mut res = pages::login_page(
            &base,
            Some(&format!(
                "Too many failed logins: try again in {secs} seconds."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        res.headers_mut().insert(
            header::RETRY_AFTER,
            secs.to_string().parse().expect("digits"),
        );
        return res;
    }
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if token.is_empty() || !state.auth.token_matches(&token) {
        state.auth.failed(client);
        return pages::login_page(&base, Some("Wrong token."), StatusCode::UNAUTHORIZED);
    }
    state.auth.succeeded(client);
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

    #[test]
    fn failed_logins_make_a_client_wait_longer_each_time() {
        let a = Auth::new(Some("0123456789abcdef".into()));
        let (one, other) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        for _ in 0..FREE_FAILURES - 1 {
            assert!(a.may_try(one).is_ok());
            a.failed(one);
        }
        assert!(a.may_try(one).is_ok());
        a.failed(one);
        let first = a.may_try(one).unwrap_err();
        assert!(first > Duration::from_millis(500), "{first:?}");
        assert!(a.may_try(other).is_ok(), "another client is not held");
        // Later failures double the wait.
        a.throttle.lock().unwrap().clients.get_mut(&one).unwrap().1 = Instant::now();
        a.failed(one);
        let second = a.may_try(one).unwrap_err();
        assert!(
            second > first + Duration::from_millis(500),
            "{first:?} then {second:?}"
        );
        a.succeeded(one);
        assert!(a.may_try(one).is_ok());
        // Past the overall rate everyone waits.
        for i in 0..GLOBAL_FAILURES_PER_MINUTE {
            a.failed(Some(IpAddr::from([
                10,
                1,
                (i / 256) as u8,
                (i % 256) as u8,
            ])));
        }
        assert!(a.may_try(Some(IpAddr::from([192, 0, 2, 9]))).is_err());
    }
}
