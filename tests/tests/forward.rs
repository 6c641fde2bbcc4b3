//! Live forwarding to real receivers: a JSON-lines file read back, an OTLP/HTTP receiver (built
//! here on `opentelemetry-proto`), and Debian's rsyslog over TCP. Each receiver is stopped for a
//! while under traffic: every request is still answered, every event arrives, at least once, and
//! again only inside the documented window; a restart resumes from the cursor; a forwarded copy
//! names where its record is sealed, and that place proves it.

use audit_runtime::http::AuditLayer;
use audit_runtime::{AuditConfig, Auditor, DbConnection, WriterGuard};
use axum::routing::{get, post};
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, audit_runtime::Audited)]
struct Note {
    id: i64,
    text: String,
}

fn app(auditor: Auditor) -> Router {
    let a = auditor.clone();
    Router::new()
        .route("/read/{n}", get(|| async { "ok" }))
        .route(
            "/write/{n}",
            post(move || {
                let a = a.clone();
                async move {
                    a.record_create(&Note {
                        id: 1,
                        text: "hello".into(),
                    })
                    .await;
                    "written"
                }
            }),
        )
        .layer(AuditLayer::new(auditor))
}

struct App {
    auditor: Auditor,
    guard: WriterGuard,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

async fn start(db: &Path, forward: &str) -> App {
    let toml = format!("run_async = true\n[forward]\n{forward}");
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.to_owned()));
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let (addr, server) = audit_tests::serve(app(auditor.clone())).await;
    App {
        auditor,
        guard,
        addr,
        server,
        client: reqwest::Client::new(),
    }
}

impl App {
    /// `n` reads and `n` writes (each write also records a model action): every one answered,
    /// quickly, whatever the receivers do.
    async fn traffic(&self, from: usize, n: usize) {
        for i in from..from + n {
            for (method, path) in [
                (reqwest::Method::GET, format!("/read/{i}")),
                (reqwest::Method::POST, format!("/write/{i}")),
            ] {
                let started = Instant::now();
                let r = self
                    .client
                    .request(method, format!("http://{}{path}", self.addr))
                    .header(
                        "traceparent",
                        format!("00-{:032x}-{:016x}-01", 0xabc0000 + i, 0xdef00 + i),
                    )
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .expect("every request is answered");
                assert!(r.status().is_success());
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "a receiver down never slows a request"
                );
            }
        }
    }

    async fn stop(self) -> audit_runtime::MetricsSnapshot {
        self.server.abort();
        let _ = self.auditor;
        self.guard.shutdown().await
    }
}

/// Waits until `f` holds.
async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The record ids of the events of `lines` (OCSF JSON), in order.
fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every stored access and model action: their ids.
async fn stored_ids(db: &Path) -> Vec<String> {
    let store = audit_runtime::Store::open(&DbConnection::Sqlite(db.to_owned()))
        .await
        .unwrap();
    let mut out = Vec::new();
    for c in [
        audit_runtime::Collection::Access,
        audit_runtime::Collection::ModelAction,
    ] {
        for d in store
            .find_raw(
                c,
                &audit_runtime::FindOptions::new(audit_runtime::Filter::all()),
            )
            .await
            .unwrap()
        {
            out.push(d.get_object_id("_id").unwrap().to_hex());
        }
    }
    out.sort();
    out
}

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in ids {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}

/// The file destination: every event once, in seal order, each naming its seal; the receiver
/// (the file) unwritable for a while; a restart resumes without sending again what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_gets_every_event_once_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let out = dir.path().join("events.jsonl");
    let forward = format!("file = {:?}", out.display().to_string());
    let a = start(&db, &forward).await;
    a.traffic(0, 5).await;
    until("the first events", 30, || read_lines(&out).len() >= 10).await;
    // The destination fails: the path is a directory for a while.
    let moved = dir.path().join("events.moved");
    std::fs::rename(&out, &moved).unwrap();
    std::fs::create_dir(&out).unwrap();
    a.traffic(5, 5).await;
    until("a failed delivery", 30, || {
        a.auditor.metrics().forward_failures > 0
    })
    .await;
    std::fs::remove_dir(&out).unwrap();
    std::fs::rename(&moved, &out).unwrap();
    let m = a.stop().await;
    assert_eq!(m.forward_dropped, 0, "{m:?}");
    let events = read_lines(&out);
    let got = ids(&events);
    assert_eq!(counts(&got).values().max(), Some(&1), "each once");
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        stored_ids(&db).await,
        "every access and model action"
    );
    for e in &events {
        audit_tests::siem::check_ocsf(e);
        let seal = &e["unmapped"]["seal"];
        assert!(
            seal["stream"].is_string() && seal["leaf_index"].is_u64(),
            "{e:#}"
        );
    }

    // Restarted: what was sent is not sent again, the new records are.
    let before = events.len();
    let a = start(&db, &forward).await;
    a.traffic(10, 2).await;
    a.stop().await;
    let events = read_lines(&out);
    assert_eq!(events.len(), before + 4 + 2, "only the new records");
    let got = ids(&events);
    assert_eq!(counts(&got).values().max(), Some(&1));
}

/// A copy in a SIEM names where its record is sealed; a receipt of that record proves the same
/// leaf of the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_copy_is_provable_against_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let key = dir.path().join("seal.key");
    audit_runtime::seal::keygen(&key).unwrap();
    let out = dir.path().join("events.jsonl");
    let toml = format!(
        "seal_key_file = {:?}\n[forward]\nformat = \"ecs\"\nfile = {:?}",
        key.display().to_string(),
        out.display().to_string()
    );
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db.clone()));
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let (addr, server) = audit_tests::serve(app(auditor.clone())).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        client
            .post(format!("http://{addr}/write/{i}"))
            .send()
            .await
            .unwrap();
    }
    server.abort();
    let store = auditor.store().unwrap().clone();
    guard.shutdown().await;
    let public =
        audit_runtime::seal::load_verifying_key(&audit_runtime::seal::public_key_path(&key))
            .unwrap();
    let events = read_lines(&out);
    assert_eq!(events.len(), 6);
    for e in &events {
        audit_tests::siem::check_ecs(e);
        let seal = &e["audit"]["seal"];
        let id: bson::oid::ObjectId = e["event"]["id"].as_str().unwrap().parse().unwrap();
        let receipt = audit_runtime::seal::prove(&store, id, None).await.unwrap();
        assert_eq!(receipt.stream.to_hex(), seal["stream"].as_str().unwrap());
        assert_eq!(receipt.proof.index, seal["leaf_index"].as_u64().unwrap());
        audit_runtime::seal::check_receipt(&receipt.to_text(), &public).unwrap();
    }
}

/// The OTLP destination: log records with the event as the body, the HTTP conventions and the
/// seal as attributes, the request's trace context as theirs; the receiver answering 503 for a
/// while costs retries, never a request, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_gets_every_event_through_an_outage_with_its_trace() {
    let received: Arc<Mutex<Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>>> = Arc::default();
    let down = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (received, down) = (received.clone(), down.clone());
        Router::new()
            .route(
                "/v1/logs",
                post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let (received, down) = (received.clone(), down.clone());
                        async move {
                            if down.load(Ordering::SeqCst) {
                                return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                            }
                            assert_eq!(headers["content-type"], "application/x-protobuf");
                            let req = ExportLogsServiceRequest::decode(body).expect("protobuf");
                            let mut r = received.lock().unwrap();
                            for rl in req.resource_logs {
                                for sl in rl.scope_logs {
                                    r.extend(sl.log_records);
                                }
                            }
                            axum::http::StatusCode::OK
                        }
                    },
                ),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
    };
    let (raddr, rserver) = audit_tests::serve(receiver).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let a = start(&db, &format!("otlp_endpoint = \"http://{raddr}\"")).await;
    a.traffic(0, 5).await;
    until("the first records", 30, || {
        received.lock().unwrap().len() >= 10
    })
    .await;
    down.store(true, Ordering::SeqCst);
    a.traffic(5, 10).await;
    until("a failed delivery", 30, || {
        a.auditor.metrics().forward_failures > 0
    })
    .await;
    down.store(false, Ordering::SeqCst);
    let m = a.stop().await;
    rserver.abort();
    assert_eq!(m.forward_dropped, 0, "{m:?}");

    let records = received.lock().unwrap().clone();
    let attr = |r: &opentelemetry_proto::tonic::logs::v1::LogRecord, k: &str| {
        r.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref()?.value.clone())
    };
    let mut got: Vec<String> = records
        .iter()
        .map(|r| match attr(r, "audit.record.id") {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        stored_ids(&db).await,
        "every event once (503 means not taken)"
    );
    let read = records
        .iter()
        .find(|r| {
            matches!(attr(r, "url.path"), Some(any_value::Value::StringValue(p)) if p == "/read/3")
        })
        .expect("the read of /read/3");
    assert_eq!(read.event_name, "audit.access");
    assert_eq!(
        read.trace_id,
        hex(&format!("{:032x}", 0xabc0000 + 3)),
        "the request's trace"
    );
    assert_eq!(read.span_id, hex(&format!("{:016x}", 0xdef00 + 3)));
    assert!(matches!(
        attr(read, "http.response.status_code"),
        Some(any_value::Value::IntValue(200))
    ));
    assert!(matches!(
        attr(read, "http.request.method"),
        Some(any_value::Value::StringValue(m)) if m == "GET"
    ));
    assert!(matches!(
        attr(read, "audit.seal.leaf_index"),
        Some(any_value::Value::IntValue(_))
    ));
    let Some(any_value::Value::KvlistValue(body)) =
        read.body.as_ref().and_then(|b| b.value.clone())
    else {
        panic!("the body is the event")
    };
    assert!(body.values.iter().any(|kv| kv.key == "class_uid"
        && matches!(
            kv.value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::IntValue(6003))
        )));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Debian's rsyslog, listening on a loopback port, writing each message to a file.
struct Rsyslog {
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl Rsyslog {
    fn out(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    fn start(dir: &Path, port: u16) -> Rsyslog {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("rsyslogd (Debian's rsyslog; scripts/test.sh installs it)");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\")\n\
                 module(load=\"imtcp\")\n\
                 template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
                 ruleset(name=\"audit\") {{ action(type=\"omfile\" file=\"{d}/received.log\" template=\"msgonly\") }}\n\
                 input(type=\"imtcp\" port=\"{port}\" ruleset=\"audit\")\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(bin)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rsyslogd starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog {
            dir: dir.to_owned(),
            child: Some(child),
        }
    }

    /// Stops it as a service manager would (SIGTERM), and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslog.pid"));
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l.trim()).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Syslog to rsyslog: stopped under traffic and started again, every event arrives; one sent
/// again is one delivered in the few seconds before the failure (the documented window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_gets_every_event_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rsyslog = Rsyslog::start(dir.path(), port);
    let db = dir.path().join("audit.db");
    let a = start(&db, &format!("syslog = \"tcp://127.0.0.1:{port}\"")).await;
    a.traffic(0, 5).await;
    until("the first messages", 30, || rsyslog.received().len() >= 10).await;
    let first: Vec<String> = ids(&rsyslog.received());
    rsyslog.stop();
    a.traffic(5, 5).await;
    until("a failed delivery", 30, || {
        a.auditor.metrics().forward_failures > 0
    })
    .await;
    let mut rsyslog = Rsyslog::start(dir.path(), port);
    a.traffic(10, 5).await;
    let m = a.stop().await;
    assert_eq!(m.forward_dropped, 0, "{m:?}");
    let stored = stored_ids(&db).await;
    until("every event", 30, || {
        let mut got = ids(&rsyslog.received());
        got.sort();
        got.dedup();
        got == stored
    })
    .await;
    rsyslog.stop();
    let all = ids(&rsyslog.received());
    for (id, n) in counts(&all) {
        if n > 1 {
            assert!(
                first.contains(&id) && n == 2,
                "{id} arrived {n} times; only those delivered just before the failure may come twice"
            );
        }
    }
    // The messages are RFC 5424 with the seal as structured data: rsyslog parsed them (the
    // message it wrote is the JSON alone).
    for e in rsyslog.received() {
        audit_tests::siem::check_ocsf(&e);
    }
}
