//! What the layer stores of a request and a response: the Unicode path, multi-valued query and
//! form maps, cookies, request metadata without the server's environment, response content by
//! type with a size cap, recursive and collision-free key escaping, and redaction of secrets by
//! default (the rules are in [`crate::redact`]).

use crate::config::CaptureConfig;
use crate::keys::escape_key;
use crate::redact::{Redaction, MASK};
use bson::{Bson, Document};
use http::{HeaderMap, Method, Uri, Version};

/// The capture rules of the `[capture]` settings, ready to apply to requests.
#[derive(Debug, Clone)]
pub struct Capture {
    pub(crate) config: CaptureConfig,
    policy: std::sync::Arc<Redaction>,
}

impl Capture {
    /// Rules from the settings.
    pub fn new(config: CaptureConfig) -> Self {
        let policy = config.redaction();
        Capture { config, policy }
    }

    /// The redaction policy these rules apply.
    pub fn policy(&self) -> &Redaction {
        &self.policy
    }

    fn secret_key(&self, key: &str) -> bool {
        self.policy.is_secret_key(key)
    }

    /// The request part of an access as the layer captures it: the decoded path, GET, COOKIES and
    /// METADATA, redacted and key-escaped (everything but a form body, which the layer reads).
    pub fn request<B>(
        &self,
        req: &http::Request<B>,
        path: String,
        remote: Option<String>,
    ) -> crate::document::AccessRequest {
        let mut request = crate::document::AccessRequest::new(path);
        request.GET = self.form_map(req.uri().query().unwrap_or("").as_bytes());
        request.COOKIES = self.cookies(req.headers());
        request.METADATA = self.metadata(
            req.method(),
            req.uri(),
            req.version(),
            req.headers(),
            remote,
        );
        request
    }

    /// `request.GET` / `request.POST`: a form-urlencoded string as a multi-valued map (one value:
    /// a string; repeated keys: a list), secrets masked, keys escaped.
    pub(crate) fn form_map(&self, encoded: &[u8]) -> Document {
        let mut doc = Document::new();
        for (k, v) in form_urlencoded::parse(encoded) {
            let value = self.pair_value(&k, v);
            let key = escape_key(&k);
            match doc.get_mut(&key) {
                Some(Bson::Array(values)) => values.push(Bson::String(value)),
                Some(existing) => {
                    let first = std::mem::replace(existing, Bson::Null);
                    *existing = Bson::Array(vec![first, Bson::String(value)]);
                }
                None => {
                    doc.insert(key, value);
                }
            }
        }
        doc
    }

    /// A query or form value as stored: masked when its key is a secret, else with the secrets of
    /// any URL or `name=value` inside it masked (`?next=https://h/cb?token=...`).
    fn pair_value(&self, key: &str, value: std::borrow::Cow<'_, str>) -> String {
        if self.secret_key(key) {
            return MASK.to_owned();
        }
        match self.policy.text(&value) {
            std::borrow::Cow::Borrowed(_) => value.into_owned(),
            std::borrow::Cow::Owned(masked) => masked,
        }
    }

    /// `request.COOKIES`: every cookie, values masked unless redaction is off.
    pub(crate) fn cookies(&self, headers: &HeaderMap) -> Document {
        let mut doc = Document::new();
        for value in headers.get_all(http::header::COOKIE) {
            let text = String::from_utf8_lossy(value.as_bytes());
            for pair in text.split(';') {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = if self.config.redact { MASK } else { v };
                doc.insert(escape_key(k.trim()), v);
            }
        }
        doc
    }

    /// `request.METADATA`: method, scheme, HTTP version, query string, client address and the
    /// headers as `HTTP_*` keys (Django's names, so `request.METADATA.REQUEST_METHOD` is indexed as
    /// in the original). Secret headers are masked; the server's environment is never included.
    pub(crate) fn metadata(
        &self,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        remote: Option<String>,
    ) -> Document {
        // Built as a vector and collected once: the document is sized up front instead of
        // growing (and rehashing) header by header.
        let mut fields: Vec<(String, Bson)> = Vec::with_capacity(headers.len() + 5);
        fields.push(("REQUEST_METHOD".into(), method.as_str().into()));
        fields.push(("SERVER_PROTOCOL".into(), protocol(version).into()));
        fields.push((
            "URL_SCHEME".into(),
            uri.scheme_str().unwrap_or("http").into(),
        ));
        fields.push((
            "QUERY_STRING".into(),
            self.redacted_query(uri.query().unwrap_or("")).into(),
        ));
        if let Some(addr) = remote {
            fields.push(("REMOTE_ADDR".into(), addr.into()));
        }
        // Values of a repeated header come one after another: joined, as a CGI environment does.
        let mut previous: Option<&http::HeaderName> = None;
        for (name, value) in headers {
            let raw = match value.to_str() {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(value.as_bytes()),
            };
            let v: &str = &self.policy.header_value(name.as_str(), &raw);
            if previous == Some(name) {
                if let Some((_, Bson::String(existing))) = fields.last_mut() {
                    existing.push_str(", ");
                    existing.push_str(v);
                }
                continue;
            }
            fields.push((cgi_key(name.as_str()), Bson::String(v.to_owned())));
            previous = Some(name);
        }
        let doc: Document = fields.into_iter().collect();
        doc
    }

    /// The query string with secret values masked (it is stored in METADATA too).
    fn redacted_query(&self, query: &str) -> String {
        // Rebuilt only when a secret is in it; most query strings are stored as they came.
        let has_secret = |(k, v): (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)| {
            self.secret_key(&k) || matches!(self.policy.text(&v), std::borrow::Cow::Owned(_))
        };
        if !self.policy.enabled() || !form_urlencoded::parse(query.as_bytes()).any(has_secret) {
            return query.to_owned();
        }
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            out.append_pair(&k, &self.pair_value(&k, v));
        }
        out.finish()
    }

    /// `response.content` from the captured body: JSON parsed (as plain JSON, never extended JSON,
    /// so a `$`-key cannot become a BSON type), XML as text with the values of secret elements and
    /// attributes masked, anything else null; a body over the cap is replaced by a marker.
    pub(crate) fn response_content(
        &self,
        content_type: &str,
        body: &[u8],
        total: u64,
        complete: bool,
    ) -> Bson {
        let ct = content_type.to_ascii_lowercase();
        let is_json = ct.contains("json");
        if !is_json && !ct.contains("xml") {
            return Bson::Null;
        }
        if !complete || total > self.config.max_body_bytes as u64 {
            return Bson::String(format!(
                "<body not stored: {total} bytes or more, over the {}-byte cap>",
                self.config.max_body_bytes
            ));
        }
        if is_json {
            // serde_json refuses nesting deeper than 128 levels instead of overflowing the stack;
            // such a body, like malformed JSON, is stored as null (the status is still recorded).
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => self.json_to_bson(v),
                Err(_) => Bson::Null,
            }
        } else {
            Bson::String(self.policy.xml(&String::from_utf8_lossy(body)))
        }
    }

    /// JSON → BSON with keys escaped and secret keys masked (recursion bounded by serde_json's
    /// 128-level limit).
    pub(crate) fn json_to_bson(&self, v: serde_json::Value) -> Bson {
        use serde_json::Value;
        match v {
            Value::Null => Bson::Null,
            Value::Bool(b) => Bson::Boolean(b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) if i32::try_from(i).is_ok() => Bson::Int32(i as i32),
                (Some(i), _) => Bson::Int64(i),
                (None, Some(f)) => Bson::Double(f),
                _ => Bson::String(n.to_string()),
            },
            // A URL with a password inside a string value is masked too.
            Value::String(s) => match crate::redact::mask_userinfo(&s) {
                std::borrow::Cow::Borrowed(_) => Bson::String(s),
                std::borrow::Cow::Owned(masked) => Bson::String(masked),
            },
            Value::Array(a) => Bson::Array(a.into_iter().map(|x| self.json_to_bson(x)).collect()),
            Value::Object(o) => Bson::Document(
                o.into_iter()
                    .map(|(k, v)| {
                        let v = if self.secret_key(&k) {
                            Bson::String(MASK.to_owned())
                        } else {
                            self.json_to_bson(v)
                        };
                        (escape_key(&k), v)
                    })
                    .collect(),
            ),
        }
    }
}

/// `HTTP/1.1` and friends, without formatting.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// A header's CGI name (`HTTP_USER_AGENT`), escaped for storage when it has to be.
///
/// CGI writes `-` as `_`, so `X-Forwarded-For` and `x_forwarded_for` would both be
/// `HTTP_X_FORWARDED_FOR` and one would overwrite the other (a client could hide or forge the
/// real header that way). A `_` of the name is therefore written `%5F`, and `%`, `.` and `$` are
/// escaped as in every stored key, so each header name has a key of its own.
fn cgi_key(name: &str) -> String {
    match name {
        "content-type" => "CONTENT_TYPE".to_owned(),
        "content-length" => "CONTENT_LENGTH".to_owned(),
        n => {
            // Header names are ASCII (the http crate guarantees it): map bytes, not chars.
            let mut key = String::with_capacity(5 + n.len());
            key.push_str("HTTP_");
            for b in n.bytes() {
                match b {
                    b'-' => key.push('_'),
                    b'_' => key.push_str("%5F"),
                    b'%' => key.push_str("%25"),
                    b'.' => key.push_str("%2E"),
                    b'$' => key.push_str("%24"),
                    b => key.push(char::from(b.to_ascii_uppercase())),
                }
            }
            key
        }
    }
}

/// The path, percent-decoded to Unicode (invalid UTF-8 replaced, never rejected), except `%2F`
/// and `%25`, which stay encoded.
///
/// Routers match the raw path, where `%2F` is not a separator: `/static%2Facme/settings` is one
/// segment for them. Decoding it to `/static/acme/settings` would let a blacklist pattern such as
/// `^/static/` exclude a request that the router sent to `/{tenant}/settings`, and would store
/// `/a%2Fb` and `/a/b` alike. Keeping `%25` encoded keeps the form reversible.
pub(crate) fn decoded_path(uri: &Uri) -> String {
    let raw = uri.path().as_bytes();
    if !raw.contains(&b'%') {
        return uri.path().to_owned();
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                let b = h * 16 + l;
                if b == b'/' || b == b'%' {
                    out.push(b'%');
                    out.push(raw[i + 1]);
                    out.push(raw[i + 2].to_ascii_uppercase());
                } else {
                    out.push(b);
                }
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
