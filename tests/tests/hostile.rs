//! Hostile input: property tests over request capture, key escaping, JSON response capture and
//! configuration parsing (thousands of cases each), plus the specific nasty cases.

use audit_runtime::http::{AuditLayer, AuditRequestBody};
use audit_runtime::keys::{escape_document, escape_key, unescape_key};
use audit_runtime::{
    Access, AuditConfig, Auditor, Blacklist, Collection, DbConnection, Filter, UrlMatch,
};
use axum::body::Body;
use bson::{Bson, Document};
use http::{Request, Response};
use http_body_util::BodyExt;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::convert::Infallible;
use tower::{Layer, ServiceExt};

/// Cases per property: `FUZZ_CASES` when set (the long runs: a million each, in release mode),
/// else the CI-sized default.
fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An audited echo service (no network: the tower stack in process) on a fresh SQLite store.
struct Rig {
    rt: tokio::runtime::Runtime,
    auditor: Auditor,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(toml: &str) -> Rig {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let cfg = AuditConfig::from_sources(Some(toml), Vec::<(String, String)>::new())
            .unwrap()
            .with_connection(DbConnection::Sqlite(dir.path().join("audit.db")));
        let (auditor, guard) = rt.block_on(Auditor::start(cfg)).unwrap();
        std::mem::forget(guard); // flushed explicitly by the tests
        Rig {
            rt,
            auditor,
            _dir: dir,
        }
    }

    /// Sends a request through the audited service; the handler answers with `body` as JSON.
    fn send(
        &self,
        req: Request<Body>,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let inner = tower::service_fn(move |_req: Request<AuditRequestBody<Body>>| {
            let body = body.clone();
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", content_type)
                        .body(Body::from(body))
                        .unwrap(),
                )
            }
        });
        let svc = AuditLayer::new(self.auditor.clone()).layer(inner);
        self.rt.block_on(async {
            let res = svc.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            (
                status,
                res.into_body().collect().await.unwrap().to_bytes().to_vec(),
            )
        })
    }

    fn accesses(&self) -> Vec<Access> {
        self.rt.block_on(async {
            self.auditor.flush().await;
            Access::objects()
                .fetch(self.auditor.store().unwrap())
                .await
                .unwrap()
        })
    }
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    // What HTTP allows in a field value: visible ASCII, space, tab and obs-text (0x80-0xFF).
    proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')], 0..40)
}

/// Key characters that matter to escaping: the escaped ones (`.`, `$`, `%`, NUL), the digits and
/// letters of their escapes (so `%2E`, `%25`, `%24`, `%00` occur literally), other control
/// characters and non-ASCII.
const KEY_CHARS: &str = "[\\x00-\\x1f\\x7f.$%_aE0245é]";

fn hostile_key(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{KEY_CHARS}{{0,{max}}}")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), .. ProptestConfig::default() })]

    #[test]
    fn escaped_keys_never_collide_and_always_round_trip(keys in proptest::collection::btree_set(hostile_key(8), 0..12)) {
        let doc: Document = keys.iter().enumerate().map(|(i, k)| (k.clone(), Bson::Int32(i as i32))).collect();
        let escaped = escape_document(doc.clone());
        prop_assert_eq!(escaped.len(), doc.len());
        for (k, v) in &escaped {
            prop_assert!(!k.contains(['.', '\0']) && !k.starts_with('$'), "{:?}", k);
            prop_assert_eq!(doc.get(unescape_key(k)), Some(v));
        }
        // What BSON can encode: no key may make the document fail.
        prop_assert!(bson::to_vec(&escaped).is_ok());
    }

    #[test]
    fn unescape_is_the_inverse_of_escape(k in prop_oneof![hostile_key(16), any::<String>()]) {
        prop_assert_eq!(unescape_key(&escape_key(&k)), k);
    }

    #[test]
    fn config_parsing_never_panics(text in "\\PC{0,200}", value in "\\PC{0,40}") {
        let _ = AuditConfig::from_sources(Some(&text), Vec::<(String, String)>::new());
        let _ = AuditConfig::from_sources(None, [("AUDIT_BLACKLIST".to_owned(), value.clone()), ("AUDIT_ACCESS_INDEXES".to_owned(), value)]);
    }

    #[test]
    fn known_settings_with_arbitrary_values_load_or_name_the_setting(entries in proptest::collection::btree_map(setting_name(), raw_value(), 1..5)) {
        let (mut top, mut capture) = (String::new(), String::new());
        let mut invalid = Vec::new();
        for (name, raw) in &entries {
            let (text, valid) = (raw.text(), raw.valid_for(name));
            match name.strip_prefix("capture.") {
                Some(k) => capture.push_str(&format!("{k} = {text}\n")),
                None => top.push_str(&format!("{name} = {text}\n")),
            }
            if !valid {
                invalid.push(name.clone());
            }
        }
        let toml = format!("{top}[capture]\n{capture}");
        match AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new()) {
            Ok(_) => prop_assert!(invalid.is_empty(), "accepted invalid {:?}:\n{}", invalid, toml),
            Err(e) => {
                let e = e.to_string();
                prop_assert!(!invalid.is_empty(), "rejected a valid configuration: {}\n{}", e, toml);
                prop_assert!(invalid.iter().any(|k| e.contains(k.as_str())), "{} names none of {:?}", e, invalid);
            }
        }
    }
}

/// A secret name as a client might spell it: any case, any separator, with or without an `x-` or
/// `HTTP_` prefix.
fn spelled_secret_name() -> impl Strategy<Value = String> {
    let base = proptest::sample::select(vec![
        vec!["password"],
        vec!["new", "password"],
        vec!["passwd"],
        vec!["pwd"],
        vec!["secret"],
        vec!["client", "secret"],
        vec!["access", "token"],
        vec!["token"],
        vec!["api", "key"],
        vec!["private", "key"],
        vec!["auth"],
        vec!["user", "pin"],
        vec!["pin"],
        vec!["sig"],
        vec!["jwt"],
        vec!["credentials"],
        vec!["session", "id"],
        vec!["csrf"],
        vec!["authorization"],
        vec!["amz", "signature"],
    ]);
    (
        base,
        proptest::sample::select(vec!["", "x-", "X_", "HTTP_", "http-x-"]),
        proptest::sample::select(vec!["_", "-", ".", " "]),
        proptest::collection::vec(any::<bool>(), 32),
    )
        .prop_map(|(words, prefix, sep, upper)| {
            let name = format!("{prefix}{}", words.join(sep));
            name.chars()
                .zip(upper.iter().cycle())
                .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), .. ProptestConfig::default() })]

    #[test]
    fn secret_names_are_secrets_in_any_spelling(name in spelled_secret_name()) {
        let policy = audit_runtime::Redaction::default();
        prop_assert!(policy.is_secret_key(&name), "{:?}", name);
        prop_assert!(policy.is_secret_header(&name), "{:?}", name);
    }
}

#[test]
fn secrets_under_any_spelling_never_reach_the_store() {
    let rig = Rig::new("run_async = true");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(300),
        ..ProptestConfig::default()
    });
    let strategy = (spelled_secret_name(), "[A-Za-z0-9]{24}");
    runner
        .run(&strategy, |(name, tail)| {
            // Long and unique: nothing else in a record can contain it by chance.
            let value = format!("s3cr3t-{tail}");
            let pair = form_urlencoded::Serializer::new(String::new())
                .append_pair(&name, &value)
                .finish();
            let json =
                serde_json::to_vec(&serde_json::json!({ "data": { name.clone(): value.clone() } }))
                    .unwrap();
            let req = Request::builder()
                .method("POST")
                .uri(format!("/spelled?{pair}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", pair.len())
                .body(Body::from(pair.clone()))
                .unwrap();
            rig.send(req, "application/json", json);
            Ok(())
        })
        .unwrap();
    let accesses = rig.accesses();
    assert!(!accesses.is_empty());
    for a in accesses {
        let raw = bson::to_vec(&bson::to_document(&a).unwrap()).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            !text.contains("s3cr3t-"),
            "stored in clear: {:?} / {:?}",
            a.request.GET,
            a.response
        );
    }
}

/// A known setting (top level or in `[capture]`), or an unknown one.
fn setting_name() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => proptest::sample::select(vec![
            "activate", "run_async", "translate_urls", "db_alias", "queue_name", "queue_capacity",
            "full_policy", "flush_timeout_ms", "logged_models", "spill_path",
            "capture.redact", "capture.redact_keys", "capture.unredact_keys",
            "capture.redact_headers", "capture.unredact_headers", "capture.max_body_bytes",
            "capture.max_exception_bytes", "capture.interlink_header", "capture.default_app",
        ]).prop_map(str::to_owned),
        1 => "unknown_[a-z]{1,8}",
    ]
}

#[derive(Debug, Clone)]
enum Raw {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
    IntList(Vec<i64>),
}

impl Raw {
    fn text(&self) -> String {
        // JSON string escapes are TOML basic-string escapes too.
        let s = |x: &String| serde_json::to_string(x).unwrap();
        match self {
            Raw::Bool(b) => b.to_string(),
            Raw::Int(n) => n.to_string(),
            Raw::Str(x) => s(x),
            Raw::List(l) => format!("[{}]", l.iter().map(s).collect::<Vec<_>>().join(", ")),
            Raw::IntList(l) => format!(
                "[{}]",
                l.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// Whether the setting `name` accepts this value: what the documentation promises, written
    /// independently of the parser.
    fn valid_for(&self, name: &str) -> bool {
        let names_ok = |l: &Vec<String>| l.iter().all(|n| n.chars().any(char::is_alphanumeric));
        match (name, self) {
            ("activate" | "run_async" | "translate_urls" | "capture.redact", Raw::Bool(_)) => true,
            ("db_alias" | "queue_name" | "spill_path" | "capture.default_app", Raw::Str(_)) => true,
            ("queue_capacity" | "capture.max_exception_bytes", Raw::Int(n)) => *n > 0,
            ("flush_timeout_ms" | "capture.max_body_bytes", Raw::Int(n)) => *n >= 0,
            ("full_policy", Raw::Str(x)) => x == "block" || x == "drop",
            ("logged_models", Raw::List(_)) => true,
            (
                "capture.redact_keys"
                | "capture.unredact_keys"
                | "capture.redact_headers"
                | "capture.unredact_headers",
                Raw::List(l),
            ) => names_ok(l),
            ("capture.interlink_header", Raw::Str(x)) => {
                let h = x.to_lowercase();
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
            _ => false,
        }
    }
}

fn raw_value() -> impl Strategy<Value = Raw> {
    prop_oneof![
        any::<bool>().prop_map(Raw::Bool),
        prop_oneof![-3i64..3, any::<i64>()].prop_map(Raw::Int),
        prop_oneof![
            Just("block".to_owned()),
            Just("drop".to_owned()),
            "[a-z][a-z0-9-]{0,12}",
            "\\PC{0,12}",
            "[\\x00-\\x1f -]{0,3}",
        ]
        .prop_map(Raw::Str),
        // Names: real ones, and ones made only of separators (empty once normalised).
        proptest::collection::vec(
            prop_oneof![3 => "[A-Za-z][A-Za-z0-9_-]{0,10}", 1 => "[ ._-]{0,2}"],
            0..3
        )
        .prop_map(Raw::List),
        proptest::collection::vec(any::<i64>(), 1..3).prop_map(Raw::IntList),
    ]
}
#[test]
fn arbitrary_requests_are_captured_without_panic_and_responses_pass_unchanged() {
    let rig = Rig::new("run_async = true");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(1500),
        ..ProptestConfig::default()
    });
    // Keys and values with NUL and control characters, and with `%2E`, `%25`, `%00` spelled out.
    let text = || prop_oneof![hostile_key(12), any::<String>()];
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..30),
        proptest::collection::vec((text(), text()), 0..8),
        proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", header_value()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    let sent = std::cell::RefCell::new(Vec::<std::collections::BTreeSet<String>>::new());
    runner
        .run(&strategy, |(path, query, headers, body)| {
            let path: String = path.iter().map(|b| format!("%{b:02X}")).collect();
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&query)
                .finish();
            // What the server decodes: every distinct key sent.
            let keys = form_urlencoded::parse(query.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            let case = sent.borrow().len();
            // The same pairs as the query string and as a form body.
            let mut req = Request::builder()
                .method("POST")
                .uri(format!("/p/{case}/{path}?{query}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("content-length", query.len());
            for (name, value) in &headers {
                if name == "content-type" || name == "content-length" {
                    continue;
                }
                req = req.header(name.as_str(), http::HeaderValue::from_bytes(value).unwrap());
            }
            let (status, echoed) = rig.send(
                req.body(Body::from(query.clone())).unwrap(),
                "application/json",
                body.clone(),
            );
            prop_assert_eq!(status, 200);
            prop_assert_eq!(echoed, body, "the response body is byte-identical");
            sent.borrow_mut().push(keys);
            Ok(())
        })
        .unwrap();
    let sent = sent.into_inner();
    let accesses = rig.accesses();
    assert_eq!(accesses.len(), sent.len(), "one access per request");
    // Every key sent is stored, escaped, and comes back by unescaping: none lost, none merged.
    for a in &accesses {
        let case: usize = a.request.path.split('/').nth(2).unwrap().parse().unwrap();
        for (what, map) in [("GET", &a.request.GET), ("POST", &a.request.POST)] {
            let stored: std::collections::BTreeSet<String> =
                map.keys().map(|k| unescape_key(k)).collect();
            assert_eq!(stored, sent[case], "{what} of case {case}");
            assert!(map
                .keys()
                .all(|k| !k.contains(['.', '\0']) && !k.starts_with('$')));
        }
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e12f64..1e12).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(hostile_key(5), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What the layer must store for a JSON value: the same value with every key escaped (numbers as
/// the narrowest BSON integer, or a double).
fn escaped_json(v: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            None => Bson::Double(n.as_f64().unwrap()),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(escaped_json).collect()),
        Value::Object(o) => Bson::Document(
            o.iter()
                .map(|(k, v)| (escape_key(k), escaped_json(v)))
                .collect(),
        ),
    }
}

#[test]
fn arbitrary_json_responses_are_stored_with_every_key() {
    let rig = Rig::new("run_async = true\n[capture]\nredact = false");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(1000),
        ..ProptestConfig::default()
    });
    let sent = std::cell::RefCell::new(Vec::new());
    runner
        .run(&json_value(), |value| {
            let body = serde_json::to_vec(&value).unwrap();
            let case = sent.borrow().len();
            let req = Request::builder()
                .uri(format!("/json/{case}"))
                .body(Body::empty())
                .unwrap();
            let (_, echoed) = rig.send(req, "application/json", body.clone());
            prop_assert_eq!(&echoed, &body);
            // Compared with the body as serde_json reads it back (its float parsing may differ from
            // the generated double in the last digit; keys are what this checks).
            let read: serde_json::Value = serde_json::from_slice(&body).unwrap();
            sent.borrow_mut().push(escaped_json(&read));
            Ok(())
        })
        .unwrap();
    let sent = sent.into_inner();
    let accesses = rig.accesses();
    assert_eq!(accesses.len(), sent.len(), "one stored access per response");
    // Each stored content is exactly the value sent, keys escaped: nothing lost, nothing merged.
    for a in accesses {
        let case: usize = a.request.path.rsplit('/').next().unwrap().parse().unwrap();
        let content = a.response.unwrap().content;
        assert_eq!(content, sent[case], "case {case}");
    }
}

#[test]
fn specific_hostile_requests() {
    // A cap above the deep document's 200 KB, so it is really parsed.
    let rig = Rig::new("run_async = true\n[capture]\nmax_body_bytes = 1000000");
    // Invalid UTF-8 in the path and in a header.
    let req = Request::builder()
        .uri("/caf%C3%A9/%FF%FE")
        .header(
            "x-raw",
            http::HeaderValue::from_bytes(b"ok\xff\xfe").unwrap(),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(rig.send(req, "text/plain", b"x".to_vec()).0, 200);
    // 10,000 query parameters.
    // (Kept under the http crate's 64 KiB URI limit: keys only.)
    let query: String = (0..10_000)
        .map(|i| format!("{i}="))
        .collect::<Vec<_>>()
        .join("&");
    let req = Request::builder()
        .uri(format!("/many?{query}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(rig.send(req, "text/plain", vec![]).0, 200);
    // Keys that collided in the original.
    let req = Request::builder()
        .uri("/keys?%24where=1&a.b=2&a_b=3&a%252Eb=4")
        .body(Body::empty())
        .unwrap();
    rig.send(
        req,
        "application/json",
        br#"{"$where":1,"a.b":2,"a_b":3}"#.to_vec(),
    );
    // JSON nested 100,000 deep: not parsed (no stack overflow), status still recorded.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let req = Request::builder().uri("/deep").body(Body::empty()).unwrap();
    let (status, echoed) = rig.send(req, "application/json", deep.clone().into_bytes());
    assert_eq!((status, echoed.len()), (200, deep.len()));

    let all = rig.accesses();
    let by = |p: &str| {
        all.iter()
            .find(|a| a.request.path == p)
            .unwrap_or_else(|| panic!("{p} recorded"))
    };
    let bad = by("/café/\u{FFFD}\u{FFFD}");
    assert_eq!(
        bad.request.METADATA.get_str("HTTP_X_RAW").unwrap(),
        "ok\u{FFFD}\u{FFFD}"
    );
    assert_eq!(by("/many").request.GET.len(), 10_000);
    let keys = by("/keys");
    assert_eq!(
        keys.request.GET.keys().collect::<Vec<_>>(),
        ["%24where", "a%2Eb", "a_b", "a%252Eb"]
    );
    assert_eq!(
        keys.response
            .as_ref()
            .unwrap()
            .content
            .as_document()
            .unwrap()
            .len(),
        3
    );
    let deep = by("/deep");
    assert_eq!(deep.response.as_ref().unwrap().content, Bson::Null);
    assert_eq!(deep.response.as_ref().unwrap().status_code, 200);
    // The stored trail can be searched for them.
    let store = rig.auditor.store().unwrap();
    let n = rig
        .rt
        .block_on(
            Access::objects()
                .filter_by_url(UrlMatch::StartsWith("/caf".into()))
                .count(store),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        rig.rt
            .block_on(store.count(Collection::Access, &Filter::all()))
            .unwrap(),
        4
    );
}

#[test]
fn malicious_blacklist_patterns_are_rejected_at_startup_or_bounded() {
    for (pattern, want) in [
        ("(a{1000}){1000}", "invalid regex"),
        ("(unclosed", "invalid regex"),
        ("\\", "invalid regex"),
    ] {
        let toml = format!("[blacklist]\n\"\" = [{pattern:?}]");
        let e = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains("blacklist"),
            "{pattern}: {e}"
        );
    }
    // A catastrophic backtracking pattern. The look-ahead sits inside the repeated group, so the
    // whole group runs on fancy-regex's backtracking engine (a look-around elsewhere would leave
    // `(a+)+` to the linear `regex` engine, which needs no limit). Its first branch can never
    // match and backtracks exponentially; the second branch matches. On 18 `a`s, giving up on the
    // first branch takes a few hundred thousand steps: more than the project's limit, less than
    // fancy-regex's own default of a million. So the path is blacklisted if and only if the
    // project's limit is not there; with it, the pattern gives up and the request is audited.
    let map: BTreeMap<String, Vec<String>> =
        [(String::new(), vec!["^(?:(?=a)a+)+b|a*c$".to_owned()])].into();
    let bl = Blacklist::compile(&map).unwrap();
    assert!(
        bl.is_blacklisted("x", &format!("{}c", "a".repeat(8))),
        "a short path matches: the pattern is a real match, not a broken one"
    );
    let started = std::time::Instant::now();
    assert!(
        !bl.is_blacklisted("x", &format!("{}c", "a".repeat(18))),
        "the backtracking limit gives up, so the request is audited"
    );
    assert!(
        !bl.is_blacklisted("x", &format!("{}c", "a".repeat(40))),
        "a longer path gives up as well"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
