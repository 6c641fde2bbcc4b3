//! The request path: what the audit layer adds to one request (capture of a ~2 KB access, the
//! record built and queued; async mode, so the store write happens on the writer task), against
//! the same service without the layer; and serialising one 2 KB access to BSON.
//!
//! `cargo bench -p audit-runtime --bench capture`

use audit_runtime::http::AuditLayer;
use audit_runtime::{
    Access, AccessResponse, AccessUser, AccessView, AuditConfig, Auditor, DbConnection,
};
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

fn request() -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri("http://localhost/polls/42/vote/?page=2&sort=newest&page=3");
    for i in 0..12 {
        b = b.header(format!("x-header-{i}"), "v".repeat(80));
    }
    b.header("cookie", "sessionid=abc; csrftoken=def")
        .header("user-agent", "bench/1.0")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn handler<B>(_: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"ok":true,"votes":42,"poll":{"id":42,"question":"What's up?"}}"#,
        )))
        .unwrap())
}

fn access_2kb() -> Access {
    let mut a = Access::new(
        "/polls/42/vote/",
        chrono::Utc::now(),
        AccessView::new("demo::views::vote", "demo", "vote"),
    );
    for i in 0..12 {
        a.request
            .METADATA
            .insert(format!("HTTP_X_HEADER_{i}"), "v".repeat(80));
    }
    a.request.GET = bson::doc! { "page": ["2", "3"], "sort": "newest" };
    a.response = Some(AccessResponse {
        content: bson::Bson::Document(bson::doc! { "ok": true }),
        content_type: "application/json".into(),
        status_code: 200,
    });
    a.user = Some(AccessUser::anonymous());
    a
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // On tmpfs when there is one: the rare record that reaches the store costs no disk flush.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let config =
        AuditConfig::from_sources(Some("run_async = true"), Vec::<(String, String)>::new())
            .unwrap()
            .with_connection(DbConnection::Sqlite(dir.path().join("bench.db")));
    let (auditor, guard) = rt.block_on(Auditor::start(config)).unwrap();
    let audited = AuditLayer::new(auditor.clone()).layer(tower::service_fn(handler));
    let bare = tower::service_fn(handler);

    let a = access_2kb();
    let size = bson::to_vec(&a).unwrap().len();
    c.bench_function(
        &format!("serialise one access ({size} bytes) to BSON"),
        |b| b.iter(|| bson::to_vec(black_box(&a)).unwrap()),
    );

    // Both are timed in CPU time of the thread that serves the requests (`block_on` runs them on
    // this thread), so the writer storing records on its own threads is not counted: what is
    // measured is the request path alone. With the default bounded queue, a request that waits
    // for room is idle, not busy, so waiting is not counted either.
    // Capturing and serialising one access, the request-path work of the layer proper: the request
    // part (path, GET, cookies, 16 headers), the access around it, and its BSON bytes.
    let capture = audit_runtime::http::Capture::new(AuditConfig::default().capture);
    let req = request();
    let sample = {
        let mut a = access_2kb();
        a.request = audit_runtime::http::capture_request(&req, &capture);
        bson::to_vec(&a).unwrap().len()
    };
    c.bench_function(
        &format!("capture and serialise one access ({sample} bytes)"),
        |b| {
            b.iter(|| {
                let mut a = Access::new(
                    "/",
                    chrono::Utc::now(),
                    AccessView::new("demo::views::vote", "demo", "vote"),
                );
                a.request = audit_runtime::http::capture_request(black_box(&req), &capture);
                a.response = Some(AccessResponse {
                    content: bson::Bson::Null,
                    content_type: "application/json".into(),
                    status_code: 200,
                });
                a.user = Some(AccessUser::anonymous());
                bson::to_vec(&a).unwrap()
            })
        },
    );

    let mut g = c.benchmark_group("one request through the service (request-path CPU time)");
    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = cpu_time::ThreadTime::now();
                for _ in 0..iters {
                    let res = bare.oneshot(request()).await.unwrap();
                    black_box(res.into_body().collect().await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("audited (async mode)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = cpu_time::ThreadTime::now();
                for _ in 0..iters {
                    let res = audited.clone().ready_oneshot_compat(request()).await;
                    black_box(res.into_body().collect().await.unwrap());
                }
                let took = start.elapsed();
                // The writer catches up between measurements.
                auditor.flush().await;
                took
            })
        })
    });
    g.finish();
    rt.block_on(guard.shutdown());
}

trait ReadyOneshot {
    async fn ready_oneshot_compat(
        self,
        req: Request<Full<Bytes>>,
    ) -> Response<audit_runtime::http::AuditBody<Full<Bytes>>>;
}

impl<S> ReadyOneshot for S
where
    S: Service<
        Request<Full<Bytes>>,
        Response = Response<audit_runtime::http::AuditBody<Full<Bytes>>>,
        Error = Infallible,
    >,
{
    async fn ready_oneshot_compat(
        self,
        req: Request<Full<Bytes>>,
    ) -> Response<audit_runtime::http::AuditBody<Full<Bytes>>> {
        self.oneshot(req).await.unwrap()
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
