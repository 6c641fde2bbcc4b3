//! The trail in a SIEM's schemas: accesses and model actions recorded through a real axum server,
//! mapped to OCSF 1.6 and ECS 8.17, held against the classes' JSON Schema and the ECS field
//! reference (vendored in tests/data), and what the trail masks or erases does not leave it.

use audit_runtime::http::AuditLayer;
use audit_runtime::siem::{self, Format};
use audit_runtime::{
    AccessUser, AuditConfig, Auditor, Collection, DbConnection, Filter, FindOptions, Store,
};
use audit_tests::siem::{check_ecs, check_ocsf};
use axum::routing::get;
use axum::Router;
use bson::Document;
use serde_json::Value;

#[derive(Clone, Debug, audit_runtime::Audited)]
struct Patient {
    id: i64,
    name: String,
}

fn app(auditor: Auditor) -> Router {
    let a = auditor.clone();
    Router::new()
        .route(
            "/patients/{id}",
            get(|| async {
                audit_runtime::set_user(AccessUser::new(7, "dr-who"));
                axum::Json(serde_json::json!({ "id": 7 }))
            })
            .post(move || {
                let a = a.clone();
                async move {
                    audit_runtime::set_user(AccessUser::new(7, "dr-who"));
                    let p = Patient {
                        id: 7,
                        name: "Erin".into(),
                    };
                    a.record_create(&p).await;
                    let q = Patient {
                        name: "Erin B.".into(),
                        ..p.clone()
                    };
                    a.record_update(&p, &q).await;
                    a.record_delete(&q).await;
                    (axum::http::StatusCode::CREATED, "created")
                }
            })
            .patch(|| async { "patched" })
            .delete(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .route(
            "/boom",
            get(|| async {
                panic!("the handler failed");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .layer(AuditLayer::new(auditor).catch_panic())
}

struct Recorded {
    store: Store,
    dir: tempfile::TempDir,
    accesses: Vec<Document>,
    actions: Vec<Document>,
    process: Document,
}

async fn all(store: &Store, c: Collection) -> Vec<Document> {
    store
        .find_raw(c, &FindOptions::new(Filter::all()))
        .await
        .unwrap()
}

/// A real server recording a handful of requests (a traced one among them).
async fn record(
    requests: impl FnOnce(std::net::SocketAddr) -> Vec<reqwest::RequestBuilder>,
) -> Recorded {
    let dir = tempfile::tempdir().unwrap();
    let config =
        AuditConfig::default().with_connection(DbConnection::Sqlite(dir.path().join("audit.db")));
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let (addr, server) = audit_tests::serve(app(auditor.clone())).await;
    for r in requests(addr) {
        r.send().await.unwrap();
    }
    server.abort();
    let store = auditor.store().unwrap().clone();
    guard.shutdown().await;
    let accesses = all(&store, Collection::Access).await;
    let actions = all(&store, Collection::ModelAction).await;
    let process = all(&store, Collection::Process).await.remove(0);
    Recorded {
        store,
        dir,
        accesses,
        actions,
        process,
    }
}

fn by_path<'a>(docs: &'a [Document], method: &str, path: &str) -> &'a Document {
    docs.iter()
        .find(|d| {
            d.get_document("request").unwrap().get_str("path") == Ok(path)
                && d.get_document("request")
                    .unwrap()
                    .get_document("METADATA")
                    .unwrap()
                    .get_str("REQUEST_METHOD")
                    == Ok(method)
        })
        .unwrap_or_else(|| panic!("{method} {path}"))
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_real_requests_fit_their_schemas() {
    let client = reqwest::Client::new();
    let r = record(|addr| {
        let url = |p: &str| format!("http://{addr}{p}");
        vec![
            client
                .get(url("/patients/7?tab=notes"))
                .header("user-agent", "curl/8.5.0")
                .header("referer", "https://clinic.example/list")
                .header("traceparent", TRACEPARENT),
            client.post(url("/patients/7")),
            client.patch(url("/patients/7")),
            client.delete(url("/patients/7")),
            client.get(url("/boom")),
            client.request(
                reqwest::Method::from_bytes(b"PURGE").unwrap(),
                url("/patients/7"),
            ),
        ]
    })
    .await;
    let ctx = siem::Context {
        process: Some(&r.process),
        sealed: None,
    };
    for d in &r.accesses {
        let ocsf = siem::event(Format::Ocsf, Collection::Access, d, &ctx).unwrap();
        check_ocsf(&ocsf);
        let ecs = siem::event(Format::Ecs, Collection::Access, d, &ctx).unwrap();
        check_ecs(&ecs);
    }
    for d in &r.actions {
        let ocsf = siem::event(Format::Ocsf, Collection::ModelAction, d, &ctx).unwrap();
        check_ocsf(&ocsf);
        check_ecs(&siem::event(Format::Ecs, Collection::ModelAction, d, &ctx).unwrap());
    }

    // What each field holds, for the traced read.
    let get = by_path(&r.accesses, "GET", "/patients/7");
    let e = siem::event(Format::Ocsf, Collection::Access, get, &ctx).unwrap();
    assert_eq!(e["activity_id"], 2, "a GET reads");
    assert_eq!(e["status_id"], 1);
    assert_eq!(e["http_response"]["code"], 200);
    assert_eq!(e["http_request"]["http_method"], "GET");
    assert_eq!(e["http_request"]["url"]["path"], "/patients/7");
    assert_eq!(e["http_request"]["url"]["query_string"], "tab=notes");
    assert_eq!(e["http_request"]["user_agent"], "curl/8.5.0");
    assert_eq!(e["http_request"]["referrer"], "https://clinic.example/list");
    assert_eq!(e["src_endpoint"]["ip"], "127.0.0.1");
    assert!(e["src_endpoint"]["port"].as_i64().unwrap() > 0);
    assert_eq!(e["actor"]["user"]["uid"], "7");
    assert_eq!(e["actor"]["user"]["name"], "dr-who");
    assert_eq!(e["trace"]["uid"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e["unmapped"]["trace"]["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(
        e["metadata"]["uid"],
        get.get_object_id("_id").unwrap().to_hex()
    );
    assert_eq!(
        e["metadata"]["correlation_uid"],
        get.get_str("interlink_id").unwrap()
    );
    assert_eq!(
        e["device"]["hostname"],
        r.process.get_str("machine").unwrap()
    );
    assert_eq!(
        e["actor"]["process"]["pid"],
        r.process.get_i32("pid").unwrap()
    );
    let ecs = siem::event(Format::Ecs, Collection::Access, get, &ctx).unwrap();
    assert_eq!(ecs["trace"]["id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ecs["span"]["id"], "00f067aa0ba902b7");
    assert_eq!(ecs["event"]["outcome"], "success");
    assert_eq!(ecs["http"]["response"]["status_code"], 200);
    assert_eq!(ecs["source"]["ip"], "127.0.0.1");
    assert_eq!(ecs["url"]["original"], "/patients/7?tab=notes");
    assert_eq!(ecs["user"]["id"], "7");

    // Methods to activities; a failure.
    for (method, activity) in [("POST", 1), ("PATCH", 3), ("DELETE", 4), ("PURGE", 99)] {
        let d = by_path(&r.accesses, method, "/patients/7");
        let e = siem::event(Format::Ocsf, Collection::Access, d, &ctx).unwrap();
        assert_eq!(e["activity_id"], activity, "{method}");
    }
    let purge = siem::event(
        Format::Ocsf,
        Collection::Access,
        by_path(&r.accesses, "PURGE", "/patients/7"),
        &ctx,
    )
    .unwrap();
    assert!(purge["http_request"].get("http_method").is_none());
    assert_eq!(purge["unmapped"]["method"], "PURGE");
    let boom = by_path(&r.accesses, "GET", "/boom");
    let e = siem::event(Format::Ocsf, Collection::Access, boom, &ctx).unwrap();
    assert_eq!(e["status_id"], 2);
    assert_eq!(e["severity_id"], 3);
    assert_eq!(e["http_response"]["code"], 500);
    assert!(e["status_detail"].as_str().unwrap().starts_with("panic"));
    let ecs = siem::event(Format::Ecs, Collection::Access, boom, &ctx).unwrap();
    assert_eq!(ecs["event"]["outcome"], "failure");
    assert_eq!(ecs["error"]["type"], "panic");

    // Model actions: create, update, delete, linked to the access they were made in.
    let post = by_path(&r.accesses, "POST", "/patients/7");
    let mut activities: Vec<i64> = r
        .actions
        .iter()
        .map(|d| {
            let e = siem::event(Format::Ocsf, Collection::ModelAction, d, &ctx).unwrap();
            assert_eq!(e["entity"]["uid"], "7");
            assert_eq!(
                e["metadata"]["correlation_uid"],
                post.get_object_id("_id").unwrap().to_hex()
            );
            if e["activity_id"] == 3 {
                assert_eq!(e["entity"]["data"]["name"], "Erin");
                assert_eq!(e["entity_result"]["data"]["name"], "Erin B.");
                assert!(e["unmapped"]["changes"]["name"].is_object());
            }
            e["activity_id"].as_i64().unwrap()
        })
        .collect();
    activities.sort();
    assert_eq!(activities, [1, 3, 4]);
}

/// What the trail masks is masked in every event; what an erasure replaced is gone from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_trail_masks_or_erases_does_not_leave_it() {
    let client = reqwest::Client::new();
    let r = record(|addr| {
        vec![client
            .get(format!("http://{addr}/patients/7?password=hunter2&tab=1"))
            .header("authorization", "Bearer secret-token-123")
            .header("cookie", "sessionid=abcdef")
            .header("traceparent", TRACEPARENT)]
    })
    .await;
    let ctx = siem::Context {
        process: Some(&r.process),
        sealed: None,
    };
    let text = |store_docs: &[Document]| -> String {
        store_docs
            .iter()
            .flat_map(|d| {
                [Format::Ocsf, Format::Ecs].map(|f| {
                    siem::event(f, Collection::Access, d, &ctx)
                        .unwrap()
                        .to_string()
                })
            })
            .collect()
    };
    let before = text(&r.accesses);
    for secret in ["hunter2", "secret-token-123", "abcdef"] {
        assert!(!before.contains(secret), "{secret} left the trail");
    }
    assert!(before.contains("dr-who"));

    let config =
        AuditConfig::default().with_connection(DbConnection::Sqlite(r.dir.path().join("audit.db")));
    let erased = audit_runtime::seal::erase_user(&r.store, &config, &bson::Bson::Int64(7), false)
        .await
        .unwrap();
    assert_eq!(erased.accesses, 1);
    let accesses = all(&r.store, Collection::Access).await;
    for d in &accesses {
        let ocsf = siem::event(Format::Ocsf, Collection::Access, d, &ctx).unwrap();
        check_ocsf(&ocsf);
        assert!(
            ocsf["src_endpoint"].get("ip").is_none(),
            "an erased address is no address"
        );
        check_ecs(&siem::event(Format::Ecs, Collection::Access, d, &ctx).unwrap());
    }
    let after = text(&accesses);
    assert!(!after.contains("dr-who"), "{after}");
    assert!(!after.contains("127.0.0.1"), "{after}");
    assert!(!after.contains("tab=1"), "query values go: {after}");
}

fn audit(r: &Recorded) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_audit_cli"));
    c.env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .args(["--db", r.dir.path().join("audit.db").to_str().unwrap()]);
    c
}

/// `audit export --format ocsf|ecs`: one event per line, each valid; the records as stored stay
/// the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_events_a_siem_reads() {
    let client = reqwest::Client::new();
    let r = record(|addr| {
        vec![
            client.get(format!("http://{addr}/patients/7")),
            client.post(format!("http://{addr}/patients/7")),
        ]
    })
    .await;
    let lines = |args: &[&str]| -> Vec<Value> {
        let out = audit(&r).arg("export").args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ocsf = lines(&["access", "--format", "ocsf"]);
    assert_eq!(ocsf.len(), 2);
    ocsf.iter().for_each(check_ocsf);
    assert!(
        ocsf.iter().all(|e| e["device"]["hostname"].is_string()),
        "the process is read"
    );
    let actions = lines(&["model-action", "--format", "ocsf"]);
    assert_eq!(actions.len(), 3);
    actions.iter().for_each(check_ocsf);
    let ecs = lines(&["access", "--format", "ecs", "--from", "2000-01-01"]);
    assert_eq!(ecs.len(), 2);
    ecs.iter().for_each(check_ecs);
    let plain = lines(&["access"]);
    assert!(plain[0]["_id"]["$oid"].is_string(), "the stored record");
    for bad in [
        &["access", "--format", "xml"][..],
        &["process", "--format", "ocsf"],
    ] {
        let out = audit(&r).arg("export").args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}

/// The checks can fail: an attribute OCSF does not have, a wrong `type_uid`, a field ECS does not
/// have, a value of the wrong type, are each refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_checks_refuse_what_the_schemas_refuse() {
    let client = reqwest::Client::new();
    let r = record(|addr| vec![client.get(format!("http://{addr}/patients/7"))]).await;
    let ctx = siem::Context {
        process: Some(&r.process),
        sealed: None,
    };
    let ocsf = siem::event(Format::Ocsf, Collection::Access, &r.accesses[0], &ctx).unwrap();
    let ecs = siem::event(Format::Ecs, Collection::Access, &r.accesses[0], &ctx).unwrap();
    check_ocsf(&ocsf);
    check_ecs(&ecs);
    let refused = |f: fn(&Value), v: Value| std::panic::catch_unwind(|| f(&v)).is_err();
    let mut bad = ocsf.clone();
    bad["api"]["bogus"] = Value::from(1);
    assert!(refused(check_ocsf, bad), "an unknown attribute");
    let mut bad = ocsf.clone();
    bad["type_uid"] = Value::from(600301);
    assert!(refused(check_ocsf, bad), "type_uid of another activity");
    let mut bad = ocsf.clone();
    bad["http_response"]["code"] = Value::from("200");
    assert!(refused(check_ocsf, bad), "a code as text");
    let mut bad = ecs.clone();
    bad["http"]["request"]["verb"] = Value::from("GET");
    assert!(refused(check_ecs, bad), "a field ECS does not have");
    let mut bad = ecs.clone();
    bad["source"]["ip"] = Value::from("not-an-ip");
    assert!(refused(check_ecs, bad), "an ip that is none");
    let mut bad = ecs;
    bad["event"]["type"] = serde_json::json!(["creation"]);
    assert!(refused(check_ecs, bad), "an event type web does not expect");
}
