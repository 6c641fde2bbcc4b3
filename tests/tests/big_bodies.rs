//! 100 MB request and response bodies through the audit layer: streamed end to end, never buffered
//! beyond the capture cap (the process's peak memory grows by far less than one body).

use audit_runtime::http::{AuditLayer, AuditRequestBody};
use audit_runtime::{Access, AuditConfig, Auditor, DbConnection};
use axum::body::{Body, Bytes};
use http::{Request, Response};
use http_body_util::BodyExt;
use std::convert::Infallible;
use tower::{Layer, ServiceExt};

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1600; // 100 MiB

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        // A measurement that cannot be made must not pass as "no growth".
        .expect("peak memory (VmHWM) readable from /proc/self/status")
}

fn chunks(byte: u8) -> Body {
    Body::from_stream(futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, Infallible>(Bytes::from(vec![byte; CHUNK]))),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_bodies_stream_through_without_buffering() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig::from_sources(Some("run_async = true"), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(dir.path().join("audit.db")));
    let (auditor, guard) = Auditor::start(cfg).await.unwrap();
    let inner = tower::service_fn(|req: Request<AuditRequestBody<Body>>| async move {
        // The handler reads the whole request body as a stream, counting it.
        let mut body = req.into_body();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            seen += frame.unwrap().data_ref().map_or(0, |d| d.len());
        }
        assert_eq!(seen, CHUNK * CHUNKS);
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(chunks(b'1'))
                .unwrap(),
        )
    });
    let svc = AuditLayer::new(auditor.clone()).layer(inner);
    let before = peak_rss_kib();
    let req = Request::builder()
        .method("POST")
        .uri("/upload")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", (CHUNK * CHUNKS).to_string())
        .body(chunks(b'a'))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let mut body = res.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    drop(body);
    assert_eq!(received, CHUNK * CHUNKS, "the client gets every byte");
    let grew_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grew_mib < 40,
        "peak memory grew by {grew_mib} MiB for 2 x 100 MiB of bodies: something buffered"
    );

    auditor.flush().await;
    let a = Access::objects()
        .get(auditor.store().unwrap())
        .await
        .unwrap();
    assert_eq!(a.request.POST.len(), 1, "a form over the cap is not kept");
    assert!(
        a.request
            .POST
            .get_str(audit_runtime::http::BODY_NOTE_KEY)
            .unwrap()
            .starts_with("<body not stored"),
        "only a note says why: {:?}",
        a.request.POST
    );
    let content = a.response.unwrap().content;
    assert!(
        content.as_str().unwrap().starts_with("<body not stored"),
        "{content:?}"
    );
    guard.shutdown().await;
}
