//! Hostile input: property tests over request capture, key escaping, JSON response capture and
//! configuration parsing (thousands of cases each), plus the specific nasty cases.

use audit_runtime::http::{AuditLayer, AuditRequestBody};
use audit_runtime::keys::{escape_document, unescape_key};
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

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), .. ProptestConfig::default() })]

    #[test]
    fn escaped_keys_never_collide_and_always_round_trip(keys in proptest::collection::btree_set("[a-z.$%_]{0,6}", 0..12)) {
        let doc: Document = keys.iter().enumerate().map(|(i, k)| (k.clone(), Bson::Int32(i as i32))).collect();
        let escaped = escape_document(doc.clone());
        prop_assert_eq!(escaped.len(), doc.len());
        for (k, v) in &escaped {
            prop_assert!(!k.contains('.') && !k.starts_with('$'), "{}", k);
            prop_assert_eq!(doc.get(unescape_key(k)), Some(v));
        }
    }

    #[test]
    fn config_parsing_never_panics(text in "\\PC{0,200}", value in "\\PC{0,40}") {
        let _ = AuditConfig::from_sources(Some(&text), Vec::<(String, String)>::new());
        let _ = AuditConfig::from_sources(None, [("AUDIT_BLACKLIST".to_owned(), value.clone()), ("AUDIT_ACCESS_INDEXES".to_owned(), value)]);
    }
}

#[test]
fn arbitrary_requests_are_captured_without_panic_and_responses_pass_unchanged() {
    let rig = Rig::new("run_async = true");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(1500),
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..30),
        proptest::collection::vec((any::<String>(), any::<String>()), 0..8),
        proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", header_value()), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    let sent = std::cell::Cell::new(0);
    runner
        .run(&strategy, |(path, query, headers, body)| {
            let path: String = path.iter().map(|b| format!("%{b:02X}")).collect();
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&query)
                .finish();
            let mut req = Request::builder().uri(format!("/p/{path}?{query}"));
            for (name, value) in &headers {
                req = req.header(name.as_str(), http::HeaderValue::from_bytes(value).unwrap());
            }
            let (status, echoed) = rig.send(
                req.body(Body::empty()).unwrap(),
                "application/json",
                body.clone(),
            );
            prop_assert_eq!(status, 200);
            prop_assert_eq!(echoed, body, "the response body is byte-identical");
            sent.set(sent.get() + 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(rig.accesses().len(), sent.get(), "one access per request");
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
            proptest::collection::btree_map("[a-z.$%]{0,5}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn arbitrary_json_responses_are_stored_with_every_key() {
    let rig = Rig::new("run_async = true\n[capture]\nredact = false");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: cases(1000),
        ..ProptestConfig::default()
    });
    runner
        .run(&json_value(), |value| {
            let body = serde_json::to_vec(&value).unwrap();
            let req = Request::builder().uri("/json").body(Body::empty()).unwrap();
            let (_, echoed) = rig.send(req, "application/json", body.clone());
            prop_assert_eq!(echoed, body);
            Ok(())
        })
        .unwrap();
    // Every stored content has as many keys, at every level, as what was sent: nothing collided.
    for a in rig.accesses() {
        let content = a.response.unwrap().content;
        assert!(!matches!(content, Bson::String(ref s) if s.starts_with("<body not stored")));
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
    // A catastrophic backtracking pattern (look-around forces the backtracking engine) is bounded:
    // it gives up, and the request is audited rather than stalled.
    let map: BTreeMap<String, Vec<String>> =
        [(String::new(), vec!["^(?=(a+)+$)b".to_owned()])].into();
    let bl = Blacklist::compile(&map).unwrap();
    let started = std::time::Instant::now();
    assert!(!bl.is_blacklisted("x", &format!("{}c", "a".repeat(40))));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
