//! The one redaction policy: which names are secrets, and how a secret is masked wherever it can
//! appear — headers (and URLs inside header values), cookies, query strings, form and JSON and XML
//! bodies, URL parameters, exception messages, process arguments, connection strings and model
//! fields.
//!
//! # Which names are secrets
//!
//! A name is first *normalised*: `camelCase` is split (`privateKey` → `private_key`), letters are
//! lower-cased, `-`, `.`, `_` and spaces all become `_`, and the prefixes `http_` and `x_` are
//! removed (so `X-Api-Key`, `HTTP_X_API_KEY`, `x_api_key` and `apiKey`-style names all agree). It
//! is then a secret when
//!
//! - it *contains* one of [`SECRET_ANYWHERE`] (`password`, `secret`, `token`, `api_key`, ...), or
//! - one of its `_`-separated words *is* one of [`SECRET_WORDS`] (`pin`, `sig`, `auth`, `pwd`,
//!   ...): short words are only whole words, so `user_pin` is a secret but `spinner`, `design` and
//!   `author` are not, or
//! - the whole name *is* one of [`SECRET_NAMES`] (`code`, `key`: an OAuth code, a `?key=` API key),
//! - or it contains one of the configured `capture.redact_keys`,
//!
//! and it is not exempted by `capture.unredact_keys` (which removes a default pattern of that
//! name, and exempts a name that normalises to it).

use crate::document::AccessException;
pub(crate) use crate::secret::{normalize, split_userinfo};
use bson::Bson;
use regex::Regex;
use std::borrow::Cow;
use std::sync::OnceLock;

/// What a masked value is stored as.
pub const MASK: &str = "********";

/// Normalised names containing one of these anywhere are secrets.
pub(crate) const SECRET_ANYWHERE: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "private_key",
    "privatekey",
    "api_key",
    "apikey",
    "access_key",
    "accesskey",
    "session",
    "csrf",
    "xsrf",
    "signature",
    "authorization",
    "jwt",
    "bearer",
    "passcode",
    "totp",
    "hmac",
    "client_assertion",
    "subscription_key",
];

/// Normalised names with one of these as a whole `_`-separated word are secrets (short words
/// would match harmless names as substrings: `spinner`, `design`, `author`).
pub(crate) const SECRET_WORDS: &[&str] = &[
    "pwd", "pw", "pass", "pin", "sig", "auth", "otp", "cvv", "cvc", "cookie", "sid", "ssn",
];

/// Normalised names that are secrets only as the whole name (`?code=` of an OAuth redirect,
/// `?key=` of an API key; `zip_code` or `sort_key` are not).
pub(crate) const SECRET_NAMES: &[&str] = &["code", "key"];

/// Names that the word rule would take for secrets but that only name a method (MongoDB's
/// `authSource` and `authMechanism` options).
pub(crate) const NOT_SECRET_NAMES: &[&str] = &["auth_source", "auth_mechanism"];

/// Headers masked by name besides those whose name is a secret by the rules above: they carry
/// credentials under names that do not say so.
pub(crate) const SECRET_HEADERS: &[&str] = &["sec_websocket_protocol", "set_cookie", "cookie"];

/// Headers whose value is a URL of another page or site: every query value and any password in
/// them is masked, whatever its name (a third party's parameters are not known here).
pub(crate) const URL_HEADERS: &[&str] = &[
    "referer",
    "origin",
    "location",
    "content_location",
    "refresh",
    "link",
];

/// Default cap of an exception's message and of its trace, in bytes.
pub(crate) const DEFAULT_MAX_EXCEPTION_BYTES: usize = 16 * 1024;

/// What a policy is built from: the redaction settings of the `[capture]` table
/// (`CaptureConfig::redaction_rules`). The policy depends on these plain values rather than on the
/// settings type, so that the settings can use the policy (to show connection strings without
/// their passwords).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    /// `capture.redact`: false turns every built-in pattern off.
    pub(crate) enabled: bool,
    /// `capture.redact_keys`: more names that are secrets wherever they appear.
    pub(crate) redact_keys: Vec<String>,
    /// `capture.redact_headers`: more headers masked whole.
    pub(crate) redact_headers: Vec<String>,
    /// `capture.unredact_keys`: built-in patterns taken away.
    pub(crate) unredact_keys: Vec<String>,
    /// `capture.unredact_headers`: built-in headers taken away.
    pub(crate) unredact_headers: Vec<String>,
    /// `capture.max_exception_bytes`.
    pub(crate) max_exception_bytes: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            enabled: true,
            redact_keys: Vec::new(),
            redact_headers: Vec::new(),
            unredact_keys: Vec::new(),
            unredact_headers: Vec::new(),
            max_exception_bytes: DEFAULT_MAX_EXCEPTION_BYTES,
        }
    }
}

/// The redaction policy: the built-in patterns plus the `[capture]` additions and exemptions.
#[derive(Debug, Clone)]
pub struct Redaction {
    /// Every word a secret (or a header with rules of its own) must contain, ASCII
    /// case-insensitively: text without any of them needs no further look.
    needles: aho_corasick::AhoCorasick,
    enabled: bool,
    anywhere: Vec<String>,
    words: Vec<String>,
    names: Vec<String>,
    exempt_keys: Vec<String>,
    headers: Vec<String>,
    exempt_headers: Vec<String>,
    max_exception_bytes: usize,
}

impl Default for Redaction {
    fn default() -> Self {
        Redaction::new(&Rules::default())
    }
}

/// The policy of the default settings (for model fields and process arguments, which are decided
/// outside any configuration).
pub fn default_policy() -> &'static Redaction {
    static POLICY: OnceLock<Redaction> = OnceLock::new();
    POLICY.get_or_init(Redaction::default)
}

/// The policy of a `[capture]` table, built once per distinct table (the HTTP layer, URL
/// parameters and exceptions of one application all share it).
pub(crate) fn policy_for(c: &Rules) -> std::sync::Arc<Redaction> {
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<Vec<(Rules, Arc<Redaction>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = cache.iter().find(|(k, _)| k == c) {
        return p.clone();
    }
    let p = Arc::new(Redaction::new(c));
    // Applications have one or two configurations; tests build many: keep the newest few.
    if cache.len() >= 16 {
        cache.remove(0);
    }
    cache.push((c.clone(), p.clone()));
    p
}

/// True when a name is a secret under the default policy.
pub(crate) fn is_secret_name(name: &str) -> bool {
    default_policy().is_secret_key(name)
}

impl Redaction {
    /// The policy of the `[capture]` settings: defaults, plus `redact_keys` / `redact_headers`,
    /// minus `unredact_keys` / `unredact_headers`.
    pub(crate) fn new(c: &Rules) -> Self {
        let exempt_keys: Vec<String> = c.unredact_keys.iter().map(|k| normalize(k)).collect();
        let keep = |list: &[&str]| -> Vec<String> {
            list.iter()
                .filter(|p| !exempt_keys.iter().any(|e| e == *p))
                .map(|p| (*p).to_owned())
                .collect()
        };
        let mut anywhere = keep(SECRET_ANYWHERE);
        anywhere.extend(
            c.redact_keys
                .iter()
                .map(|k| normalize(k))
                .filter(|k| !k.is_empty()),
        );
        let exempt_headers: Vec<String> = c.unredact_headers.iter().map(|h| normalize(h)).collect();
        let mut headers: Vec<String> = SECRET_HEADERS
            .iter()
            .filter(|h| !exempt_headers.iter().any(|e| e == *h))
            .map(|h| (*h).to_owned())
            .collect();
        headers.extend(c.redact_headers.iter().map(|h| normalize(h)));
        // The first word of each pattern: a normalised name containing the pattern comes from an
        // ASCII name containing that word (normalising only lower-cases and maps separators).
        let needles: Vec<String> = SECRET_ANYWHERE
            .iter()
            .chain(SECRET_WORDS)
            .chain(SECRET_NAMES)
            .chain(SECRET_HEADERS)
            .chain(URL_HEADERS)
            .map(|p| (*p).to_owned())
            .chain(c.redact_keys.iter().map(|k| normalize(k)))
            .chain(c.redact_headers.iter().map(|h| normalize(h)))
            .chain(exempt_keys.iter().cloned())
            .chain(exempt_headers.iter().cloned())
            .filter_map(|p| p.split('_').find(|w| !w.is_empty()).map(str::to_owned))
            .collect();
        let needles = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            // A few dozen short words: a full DFA is small and the fastest to search.
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&needles)
            .expect("plain words build an automaton");
        Redaction {
            needles,
            enabled: c.enabled,
            words: keep(SECRET_WORDS),
            names: keep(SECRET_NAMES),
            anywhere,
            exempt_keys,
            headers,
            exempt_headers,
            max_exception_bytes: c.max_exception_bytes,
        }
    }

    /// True when redaction is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// False when `text` cannot hold a secret name: it is ASCII and holds none of the words that
    /// every secret name contains. (Non-ASCII text always gets the full rules: lower-casing may
    /// turn a non-ASCII letter into an ASCII one.)
    fn may_name_a_secret(&self, text: &str) -> bool {
        !text.is_ascii() || self.needles.is_match(text)
    }

    /// True when the value of a key (query, form, JSON, XML, URL parameter, flag, model field) of
    /// this name is masked.
    pub fn is_secret_key(&self, name: &str) -> bool {
        self.enabled
            && self.may_name_a_secret(name)
            && self.matches_any_spelling(name, Self::matches)
    }

    /// Tries the name split at its camelCase boundaries (`userPIN` → `user_pin`), then, when it
    /// has capitals, without splitting (`PaSsWoRd` → `password`): a name that is a secret either
    /// way is one.
    fn matches_any_spelling(&self, name: &str, rule: fn(&Self, &str) -> bool) -> bool {
        rule(self, &normalize(name))
            || (name.chars().any(char::is_uppercase)
                && rule(self, &normalize(&name.to_lowercase())))
    }

    fn is_secret_word(&self, name: &str) -> bool {
        self.enabled
            && self.may_name_a_secret(name)
            && self.matches_any_spelling(name, Self::matches_inside)
    }

    fn matches(&self, n: &str) -> bool {
        self.matches_inside(n)
            || (self.names.iter().any(|p| p == n) && !self.exempt_keys.iter().any(|e| e == n))
    }

    /// The patterns that hold inside prose too (all but the whole-name ones).
    fn matches_inside(&self, n: &str) -> bool {
        if n.is_empty() || self.exempt_keys.iter().any(|e| e == n) || NOT_SECRET_NAMES.contains(&n)
        {
            return false;
        }
        self.anywhere.iter().any(|p| n.contains(p.as_str()))
            || n.split('_').any(|w| {
                let w = w.trim_end_matches(|c: char| c.is_ascii_digit());
                self.words.iter().any(|p| p == w)
            })
    }

    /// True when a header of this name is masked whole.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.enabled
            && self.may_name_a_secret(name)
            && self.matches_any_spelling(name, Self::secret_header_normalized)
    }

    fn secret_header_normalized(&self, n: &str) -> bool {
        !self.exempt_headers.iter().any(|e| e == n)
            && (self.headers.iter().any(|h| h == n) || self.matches(n))
    }

    /// A header value as stored: masked whole when the header is a secret or the value carries
    /// credentials (`Bearer ...`, `Basic ...`); otherwise with the passwords and secret query
    /// values of the URLs inside it masked (every query value for headers that hold another
    /// page's URL, such as `Referer`).
    pub fn header_value<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if !self.enabled {
            return Cow::Borrowed(value);
        }
        if !self.may_name_a_secret(name) {
            // Neither a secret, nor exempt, nor a URL header: only the value's own content counts.
            if has_auth_scheme(value) {
                return Cow::Borrowed(MASK);
            }
            return self.text(value);
        }
        if self.is_secret_header(name) {
            return Cow::Borrowed(MASK);
        }
        let n = normalize(name);
        if self.exempt_headers.contains(&n) {
            return Cow::Borrowed(value);
        }
        if has_auth_scheme(value) {
            return Cow::Borrowed(MASK);
        }
        if URL_HEADERS.contains(&n.as_str()) {
            return Cow::Owned(self.url_all_values(value));
        }
        self.text(value)
    }

    /// A URL parameter (`/reset/{token}`) as stored: masked when its name is a secret.
    pub fn param(&self, name: &str, value: &str) -> Bson {
        if self.is_secret_key(name) {
            Bson::String(MASK.to_owned())
        } else {
            Bson::String(value.to_owned())
        }
    }

    /// A value stored under a key: masked when the key is a secret.
    pub fn value(&self, name: &str, value: Bson) -> Bson {
        if self.is_secret_key(name) {
            Bson::String(MASK.to_owned())
        } else {
            value
        }
    }

    /// Free text (an exception message, a header value, an argument) with secrets masked: the
    /// password of any `scheme://user:password@host` URI, and the value of any `name=value`,
    /// `name: value` or `"name": "value"` whose name is a secret.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        // Without `=` or `:` there is neither a pair nor a URI: most values end here.
        if !self.enabled || !s.contains(['=', ':']) {
            return Cow::Borrowed(s);
        }
        let s = mask_userinfo(s);
        if !self.may_name_a_secret(&s) || !pair_re().is_match(&s) {
            return s;
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        let mut pos = 0;
        let mut changed = false;
        // A pair whose name is not a secret may hold one in its value (`error: password=x`,
        // `https://h/?token=x`): the search goes on right after its name, not after its value.
        while let Some(c) = pair_re().captures_at(&s, pos) {
            let (k, v) = (c.name("k").expect("group k"), c.name("v").expect("group v"));
            // `code: 500` is prose; `code=...` is a parameter: whole-name matches (`code`, `key`)
            // count only with `=`.
            let secret = if &c["s"] == "=" {
                self.is_secret_key(k.as_str())
            } else {
                self.is_secret_word(k.as_str())
            };
            if !secret {
                pos = k.end();
                continue;
            }
            out.push_str(&s[last..v.start()]);
            let quote = v
                .as_str()
                .chars()
                .next()
                .filter(|q| *q == '"' || *q == '\'');
            match quote {
                Some(q) => {
                    out.push(q);
                    out.push_str(MASK);
                    out.push(q);
                }
                None => out.push_str(MASK),
            }
            last = v.end();
            pos = v.end();
            changed = true;
        }
        if !changed {
            return s;
        }
        out.push_str(&s[last..]);
        Cow::Owned(out)
    }

    /// A URL with its password and every query and fragment value masked.
    fn url_all_values(&self, value: &str) -> String {
        let value = mask_userinfo(value);
        let Some(q) = value.find(['?', '#']) else {
            return value.into_owned();
        };
        let mut out = String::with_capacity(value.len());
        out.push_str(&value[..q]);
        let mut first = true;
        for part in value[q..].split_inclusive(['&', ';', '?', '#']) {
            // `part` is `?k=v&`: keep the name and the separator, mask the value.
            let (body, sep) = match part.char_indices().last() {
                Some((i, c)) if matches!(c, '&' | ';' | '?' | '#') && !(first && i == 0) => {
                    (&part[..i], &part[i..])
                }
                _ => (part, ""),
            };
            first = false;
            match body.split_once('=') {
                Some((k, v)) if !v.is_empty() => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(MASK);
                }
                _ => out.push_str(body),
            }
            out.push_str(sep);
        }
        out
    }

    /// An XML body with the text of every element, and the value of every attribute, whose name
    /// is a secret masked (nested elements included). A body that is not well-formed enough to
    /// tell names from values is replaced by a marker rather than stored in clear.
    pub fn xml(&self, body: &str) -> String {
        if !self.enabled {
            return body.to_owned();
        }
        xml_redact(self, body).unwrap_or_else(|| {
            format!(
                "<xml body not stored: not well-formed, {} bytes>",
                body.len()
            )
        })
    }

    /// An exception as stored: message and trace redacted like free text and capped to
    /// `capture.max_exception_bytes` each.
    pub fn exception(&self, e: AccessException) -> AccessException {
        AccessException {
            kind: e.kind,
            message: self.capped_text(e.message),
            trace: self.capped_text(e.trace),
        }
    }

    fn capped_text(&self, s: String) -> String {
        let cap = self.max_exception_bytes;
        let total = s.len();
        // Cut before redacting only far past the cap (to bound the work), so a secret is never
        // cut in half before it is recognised.
        let s = if total > cap.saturating_mul(2).saturating_add(1024) {
            truncate(&s, cap.saturating_mul(2).saturating_add(1024)).to_owned()
        } else {
            s
        };
        let s = self.text(&s).into_owned();
        if s.len() <= cap {
            return s;
        }
        format!("{} [truncated: {total} bytes in all]", truncate(&s, cap))
    }

    /// Process arguments with secrets masked: the value after or inside a secret flag
    /// (`--password x`, `--db-password=x`), URIs with credentials, and `NAME=value` pairs.
    pub fn args(&self, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut mask_next = false;
        for a in args {
            if std::mem::take(&mut mask_next) && self.enabled {
                out.push(MASK.to_owned());
                continue;
            }
            if let Some(flag) = a.strip_prefix('-') {
                let flag = flag.trim_start_matches('-');
                match flag.split_once('=') {
                    Some((name, _)) if self.is_secret_key(name) => {
                        out.push(format!(
                            "{}={MASK}",
                            &a[..a.len() - flag.len() + name.len()]
                        ));
                        continue;
                    }
                    None if self.is_secret_key(flag) => {
                        mask_next = true;
                        out.push(a.clone());
                        continue;
                    }
                    _ => {}
                }
            }
            out.push(self.text(a).into_owned());
        }
        out
    }

    /// A connection string with its password, and the values of secret options
    /// (`tlsCertificateKeyFilePassword=`), masked.
    pub fn uri(&self, uri: &str) -> String {
        let Some((scheme, rest)) = uri.split_once("://") else {
            return self.text(uri).into_owned();
        };
        let (auth, tail) = match split_userinfo(rest) {
            (Some(userinfo), tail) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                (format!("{user}:****@"), tail)
            }
            (None, tail) => (String::new(), tail),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let q: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if self.is_secret_key(&decode(k)) => format!("{k}=****"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", q.join("&"))
            }
            None => tail.to_owned(),
        };
        format!("{scheme}://{auth}{tail}")
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A value that is itself a credential (`Authorization`-style), whatever the header is called.
fn has_auth_scheme(value: &str) -> bool {
    let v = value.trim_start();
    ["bearer ", "basic ", "digest ", "negotiate ", "token ", "aws4-hmac-sha256 "]
        .iter()
        .any(|p| {
            v.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        })
        // `Sec-WebSocket-Protocol: bearer, <token>` and similar lists.
        || v.get(..7).is_some_and(|h| h.eq_ignore_ascii_case("bearer,"))
}

fn scheme_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[A-Za-z][A-Za-z0-9+.\-]*://").expect("valid regex"))
}

/// `s` with the password of every `scheme://user:password@host` in it masked.
///
/// The user info is what precedes the last `@` of the authority (up to the first `/`, `?` or
/// `#`). A password that holds an unencoded `/`, `?` or `#` ends the authority early; such a
/// `user:...` (a `:` not followed by a port number) is still taken for user info, up to the `@`
/// that [`split_userinfo`] finds in the rest of the word.
pub(crate) fn mask_userinfo(s: &str) -> Cow<'_, str> {
    if !s.contains("://") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for m in scheme_re().find_iter(s) {
        if m.start() < last {
            continue;
        }
        let rest = &s[m.end()..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        let authority = &word[..word.find(['/', '?', '#']).unwrap_or(word.len())];
        let userinfo = match authority.rfind('@') {
            Some(i) => Some(&word[..i]),
            None => match authority.split_once(':') {
                Some((_, after))
                    if !after.is_empty() && !after.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    split_userinfo(word).0
                }
                _ => None,
            },
        };
        let Some(userinfo) = userinfo else {
            continue;
        };
        let Some((user, _)) = userinfo.split_once(':') else {
            continue;
        };
        out.push_str(&s[last..m.end()]);
        out.push_str(user);
        out.push_str(":****");
        last = m.end() + userinfo.len();
    }
    if last == 0 {
        return Cow::Borrowed(s);
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

fn pair_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // name, an optional closing quote, `=` or `:`, then a quoted value or a bare word.
    RE.get_or_init(|| {
        Regex::new(
            r#"(?P<k>[A-Za-z0-9_.\-]+)["']?[ \t]*(?P<s>[=:])[ \t]*(?P<v>"[^"]*"|'[^']*'|[^\s&;,"'<>()\[\]{}]+)"#,
        )
        .expect("valid regex")
    })
}

/// The XML scanner behind [`Redaction::xml`]: `None` when a tag never closes.
fn xml_redact(policy: &Redaction, body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    // Open elements, and whether each is a secret (a secret's descendants are masked too).
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut rest = body;
    let in_secret = |stack: &[(String, bool)]| stack.iter().any(|(_, s)| *s);
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_text(&mut out, rest, in_secret(&stack));
            break;
        };
        push_text(&mut out, &rest[..lt], in_secret(&stack));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>")?;
            if in_secret(&stack) {
                out.push_str("<![CDATA[");
                out.push_str(MASK);
                out.push_str("]]>");
            } else {
                out.push_str(&rest[..9 + end + 3]);
            }
            rest = &after[end + 3..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            // Comments are dropped: they are free text that no name describes.
            let end = after.find("-->")?;
            let _ = &after[..end];
            rest = &after[end + 3..];
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest.find('>')?;
            out.push_str(&rest[..=end]);
            rest = &rest[end + 1..];
            continue;
        }
        let end = tag_end(rest)?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            if let Some(pos) = stack.iter().rposition(|(n, _)| n == name) {
                stack.truncate(pos);
            }
            out.push('<');
            out.push_str(tag);
            out.push('>');
            continue;
        }
        let self_closing = tag.ends_with('/');
        let inner = tag.strip_suffix('/').unwrap_or(tag);
        let name_end = inner
            .find(|c: char| c.is_whitespace())
            .unwrap_or(inner.len());
        let name = &inner[..name_end];
        let secret = in_secret(&stack) || policy.is_secret_key(local_name(name));
        out.push('<');
        out.push_str(name);
        xml_attributes(policy, &inner[name_end..], secret, &mut out)?;
        if self_closing {
            out.push('/');
        } else {
            stack.push((name.to_owned(), secret));
        }
        out.push('>');
    }
    Some(out)
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The end of a tag starting at `s[0] == '<'`: the first `>` outside quotes.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            (None, '<') => return None,
            _ => {}
        }
    }
    None
}

fn xml_attributes(policy: &Redaction, mut s: &str, all: bool, out: &mut String) -> Option<()> {
    loop {
        let trimmed = s.trim_start();
        out.push_str(&s[..s.len() - trimmed.len()]);
        s = trimmed;
        if s.is_empty() {
            return Some(());
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim();
        let after = s[eq + 1..].trim_start();
        let q = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let close = after[1..].find(q)? + 1;
        out.push_str(name);
        out.push('=');
        out.push(q);
        if all || policy.is_secret_key(local_name(name)) {
            out.push_str(MASK);
        } else {
            out.push_str(&after[1..close]);
        }
        out.push(q);
        s = &after[close + 1..];
    }
}

fn push_text(out: &mut String, text: &str, secret: bool) {
    if secret && !text.trim().is_empty() {
        out.push_str(MASK);
    } else {
        out.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize("X-Api-Key"), "api_key");
        assert_eq!(normalize("HTTP_X_API_KEY"), "api_key");
        assert_eq!(normalize("privateKey"), "private_key");
        assert_eq!(normalize("userPIN"), "user_pin");
        assert_eq!(normalize("a.b c-d__e"), "a_b_c_d_e");
    }

    #[test]
    fn secret_names_are_found() {
        let p = Redaction::default();
        for name in [
            "password",
            "Password",
            "new_password",
            "passwd",
            "pwd",
            "pass",
            "secret",
            "client_secret",
            "token",
            "access_token",
            "X-Access-Token",
            "X-Amz-Security-Token",
            "Private-Token",
            "X-Goog-Api-Key",
            "api-key",
            "apiKey",
            "X-Amz-Signature",
            "sig",
            "jwt",
            "private_key",
            "privateKey",
            "auth",
            "x-auth",
            "authorization",
            "Authorization",
            "credentials",
            "pin",
            "user_pin",
            "pin2",
            "code",
            "key",
            "csrfmiddlewaretoken",
            "sessionid",
            "otp",
            "tlsCertificateKeyFilePassword",
            "PaSsWoRd",
            "ApI-kEy",
            // Seen stored in clear in a trial of a clinic API built from the README.
            "pw",
            "user_pw",
            "passcode",
            "totp",
            "totp_code",
            "hmac",
            "X-Hub-Hmac",
            "client_assertion",
            "Ocp-Apim-Subscription-Key",
        ] {
            assert!(p.is_secret_key(name), "{name} should be a secret");
        }
    }

    #[test]
    fn harmless_names_are_kept() {
        let p = Redaction::default();
        for name in [
            "spinner",
            "design",
            "author",
            "authority",
            "signal",
            "passenger",
            "compass",
            "keyboard",
            "sort_key",
            "zip_code",
            "status_code",
            "username",
            "email",
            "question",
            "id",
            "q",
            "page",
            "user-agent",
            "accept",
            "content-type",
            "x-forwarded-for",
            "opinion",
            "shipping",
            "authSource",
            "authMechanism",
            "pwa",
            "powered_by",
        ] {
            assert!(!p.is_secret_key(name), "{name} should not be a secret");
            assert!(
                !p.is_secret_header(name),
                "{name} should not be a secret header"
            );
        }
    }

    #[test]
    fn the_quick_check_never_hides_a_secret() {
        // Skipping names and texts without any needle must give the same answers as the full
        // rules, for every spelling of every name the policy knows, and for harmless ones.
        let c = Rules {
            redact_keys: vec!["Favourite-Colour".into()],
            redact_headers: vec!["X-Tenant".into()],
            ..Rules::default()
        };
        let p = Redaction::new(&c);
        let mut names: Vec<String> = SECRET_ANYWHERE
            .iter()
            .chain(SECRET_WORDS)
            .chain(SECRET_NAMES)
            .chain(SECRET_HEADERS)
            .chain(URL_HEADERS)
            .chain(
                [
                    "favourite_colour",
                    "tenant",
                    "spinner",
                    "author",
                    "zip_code",
                    "accept",
                ]
                .iter(),
            )
            .map(|s| (*s).to_owned())
            .collect();
        for n in names.clone() {
            for prefix in ["", "x-", "HTTP_", "my_", "user "] {
                let spelled = format!("{prefix}{n}");
                names.push(spelled.replace('_', "-").to_uppercase());
                names.push(spelled.replace('_', "."));
                let camel: String = spelled
                    .split('_')
                    .enumerate()
                    .map(|(i, w)| match i {
                        0 => w.to_owned(),
                        _ => w[..1].to_uppercase() + &w[1..],
                    })
                    .collect();
                names.push(camel);
                names.push(spelled);
            }
        }
        for n in &names {
            assert_eq!(
                p.is_secret_key(n),
                p.matches_any_spelling(n, Redaction::matches),
                "{n}"
            );
            assert_eq!(
                p.is_secret_header(n),
                p.matches_any_spelling(n, Redaction::secret_header_normalized),
                "{n}"
            );
            if !n.contains(' ') {
                // In text, `name=value` is masked exactly when the name is a secret.
                assert_eq!(
                    p.text(&format!("see {n}=v1")).contains(MASK),
                    p.is_secret_key(n),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn settings_add_and_remove() {
        let c = Rules {
            redact_keys: vec!["Favourite-Colour".into()],
            unredact_keys: vec!["session".into(), "csrf_token".into()],
            redact_headers: vec!["X-Tenant".into()],
            unredact_headers: vec!["Cookie".into()],
            ..Rules::default()
        };
        let p = Redaction::new(&c);
        assert!(p.is_secret_key("favourite_colour"));
        assert!(p.is_secret_key("password"), "defaults stay");
        assert!(
            !p.is_secret_key("sessionid"),
            "the default pattern was removed"
        );
        assert!(!p.is_secret_key("csrf_token"), "exempt by name");
        assert!(p.is_secret_key("api_token"));
        assert!(p.is_secret_header("x-tenant"));
        assert!(p.is_secret_header("authorization"));
        assert!(!p.is_secret_header("cookie"));
        let off = Redaction::new(&Rules {
            enabled: false,
            ..Rules::default()
        });
        assert!(!off.is_secret_key("password"));
    }

    #[test]
    fn header_values() {
        let p = Redaction::default();
        assert_eq!(
            p.header_value("Sec-WebSocket-Protocol", "bearer, abc"),
            MASK
        );
        assert_eq!(p.header_value("X-Anything", "Bearer abc"), MASK);
        assert_eq!(
            p.header_value(
                "Referer",
                "https://a.example/cb?code=s3cr3t&state=s3cr3t2#frag=x"
            ),
            format!("https://a.example/cb?code={MASK}&state={MASK}#frag={MASK}")
        );
        assert_eq!(
            p.header_value("Referer", "https://u:pw@a.example/p"),
            "https://u:****@a.example/p"
        );
        assert_eq!(p.header_value("User-Agent", "curl/8"), "curl/8");
        assert_eq!(
            p.header_value("X-Note", "see https://h/x?token=s3cr3t&page=2"),
            format!("see https://h/x?token={MASK}&page=2")
        );
    }

    #[test]
    fn free_text() {
        let p = Redaction::default();
        let t = p.text(r#"login failed: password=hunter2-s3cr3t user=bob {"api_key": "k s3cr3t", "n": 1} mongodb://u:p/?@ss@h/db token: abc"#);
        assert!(!t.contains("hunter2"), "{t}");
        assert!(!t.contains("k s3cr3t"), "{t}");
        assert!(!t.contains("p/?@ss"), "{t}");
        assert!(!t.contains("abc"), "{t}");
        assert!(t.contains("user=bob") && t.contains("\"n\": 1"), "{t}");
        assert_eq!(p.text("nothing here: 42"), "nothing here: 42");
    }

    #[test]
    fn uris() {
        let p = Redaction::default();
        assert_eq!(
            p.uri(
                "mongodb://u:p/ss?w@h1:27017,h2/db?replicaSet=rs&tlsCertificateKeyFilePassword=s3"
            ),
            "mongodb://u:****@h1:27017,h2/db?replicaSet=rs&tlsCertificateKeyFilePassword=****"
        );
        assert_eq!(p.uri("mongodb://h/db"), "mongodb://h/db");
    }

    #[test]
    fn passwords_in_text() {
        let p = Redaction::default();
        for (text, want) in [
            ("at https://u:pw@h/x ok", "at https://u:****@h/x ok"),
            ("mongodb://u:p/?@ss@h/db", "mongodb://u:****@h/db"),
            (
                "a https://host:8080/p?email=bob@x.example",
                "a https://host:8080/p?email=bob@x.example",
            ),
            ("a https://bob@h/p", "a https://bob@h/p"),
            (
                "two redis://:pw1@r1 and amqp://u:pw2@r2/v",
                "two redis://:****@r1 and amqp://u:****@r2/v",
            ),
        ] {
            assert_eq!(p.text(text), want);
        }
    }

    #[test]
    fn args() {
        let p = Redaction::default();
        let a: Vec<String> = [
            "serve",
            "--db",
            "mongodb://admin:s3cr3t@h/db",
            "--password",
            "pw1",
            "--db-password=pw2",
            "DB_AUDIT_PASSWORD=pw3",
            "--port",
            "80",
        ]
        .map(String::from)
        .to_vec();
        let r = p.args(&a).join(" ");
        for s in ["s3cr3t", "pw1", "pw2", "pw3"] {
            assert!(!r.contains(s), "{r}");
        }
        assert!(r.contains("--port 80") && r.contains("admin"), "{r}");
    }

    #[test]
    fn xml_values() {
        let p = Redaction::default();
        let x = p.xml(r#"<?xml version="1.0"?><user id="1" token="t0k"><name>bob</name><password>hunter2</password><auth><x>deep</x></auth><ns:secret><![CDATA[cd]]></ns:secret><e/></user>"#);
        for s in ["t0k", "hunter2", "deep", "cd"] {
            assert!(!x.contains(s), "{x}");
        }
        assert!(
            x.contains("<name>bob</name>") && x.contains("id=\"1\""),
            "{x}"
        );
        assert!(p.xml("<a><password>x").starts_with("<a><password>********"));
        assert!(p.xml("<a b=\"1></a>").starts_with("<xml body not stored"));
    }

    #[test]
    fn exceptions_are_capped_and_redacted() {
        let p = Redaction::new(&Rules {
            max_exception_bytes: 100,
            ..Rules::default()
        });
        let e = p.exception(AccessException {
            kind: "E".into(),
            message: format!("password=hunter2 {}", "é".repeat(500)),
            trace: "x".repeat(50),
        });
        assert!(!e.message.contains("hunter2"));
        assert!(e.message.len() < 160, "{}", e.message.len());
        assert!(e.message.contains("truncated"));
        assert_eq!(e.trace, "x".repeat(50));
    }
}
