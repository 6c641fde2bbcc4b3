//! The console in a real browser: headless Chromium driven through chromedriver (WebDriver).
//! One walk logs in, searches by user and by URL regex, opens an access, follows it to its model
//! action, reads the diff and opens the instance history; another opens every page showing
//! stored attacker-controlled values (`<script>`, `<img onerror>`, `javascript:` URLs,
//! `"><svg onload>`) and checks they appear as text and never run. A screenshot of each page goes
//! to `<target>/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test.sh` installs them). Without
//! them these tests fail: they never skip.

use audit_runtime::console::Console;
use audit_runtime::{
    Access, AccessException, AccessResponse, AccessUser, Action, ModelAction, ModelActionContent,
    ModelActionInstance, ModelActionModel, Process,
};
use audit_tests::{access, TestStore};
use bson::{doc, oid::ObjectId, Bson};
use chrono::{Duration, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "browser-test-token-91c2";

/// What every payload would do if it ran: set this flag.
const FLAG: &str = "__audit_xss_ran";

fn payloads() -> Vec<String> {
    vec![
        format!("<script>window.{FLAG}=1</script>"),
        format!("<img src=x onerror=\"window.{FLAG}=2\">"),
        format!("javascript:window.{FLAG}=3"),
        format!("\"><svg onload=\"window.{FLAG}=4\">"),
    ]
}

fn screenshot_dir() -> PathBuf {
    // target/debug/deps/console_browser-HASH → target/
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lives under the target directory")
        .to_owned();
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: the console's browser tests need Debian's `chromium` and \
             `chromium-driver` (apt-get install -y chromium chromium-driver; scripts/test.sh does it)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    // Ready when it accepts connections; polled against a deadline.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // Both providers are linked into the test binary; pick one (the other call loses the race).
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientBuilder::rustls()
        .expect("TLS setup")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Serves the console (with a token) on a loopback port of this runtime; returns its base URL.
async fn serve(store: &TestStore) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Console::new(store.store.clone()).token(TOKEN).router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("screenshot saved");
}

async fn login(c: &Client, base: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().ends_with("/login"),
        "redirected to the login page"
    );
    shot(c, "login").await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    click_and_load(c, "form.login button").await;
    wait_for(c, "h1").await;
    assert_eq!(
        c.find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Dashboard"
    );
}

/// Clicks what `css` selects and waits until the browser has left the page: waiting only for an
/// element would find it on the page being left, and reading it would then race the navigation.
async fn click_and_load(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` to click: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The old page's root goes stale once the new page replaces it.
    while old.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "clicking `{css}` did not load a page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits (with a deadline) for an element to be there.
async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("`{css}` did not appear: {e}"))
}

async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap());
    }
    out
}

async fn body_text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn poll_update(
    instance: &str,
    access: Option<ObjectId>,
    t: chrono::DateTime<Utc>,
    old_q: &str,
    new_q: &str,
) -> ModelAction {
    ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: "demo::Poll".into(),
            app: "demo".into(),
            name: "Poll".into(),
        },
        action: Action::Update,
        content: ModelActionContent {
            old: doc! { "id": 1, "question": old_q, "votes": 3 },
            new: doc! { "id": 1, "question": new_q, "votes": 3 },
            changes: doc! { "question": { "old": old_q, "new": new_q } },
        },
        instance: ModelActionInstance {
            id: instance.into(),
            description: new_q.into(),
        },
        timestamp: t,
        access,
        process: None,
    }
}

fn response(status_code: i32, content: Bson) -> AccessResponse {
    AccessResponse {
        content,
        content_type: "application/json".into(),
        status_code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_search_and_follow_an_access_to_its_diff_and_history() {
    let store = audit_tests::sqlite_store().await;
    let now = Utc::now() - Duration::minutes(30);
    let process = store
        .upsert_process(&Process {
            id: ObjectId::new(),
            interlink_id: None,
            name: "demo".into(),
            args: None,
            machine: "host-1".into(),
            user: "www".into(),
            pid: 77,
            creation_time: now - Duration::hours(1),
        })
        .await
        .unwrap();
    let mut bob = access("/polls/1/vote/", now, "demo::views::vote");
    bob.user = Some(AccessUser::new(23, "bob"));
    bob.request.METADATA = doc! { "REQUEST_METHOD": "POST", "HTTP_USER_AGENT": "curl/8" };
    bob.request.POST = doc! { "choice": "2" };
    bob.response = Some(response(
        200,
        Bson::String(r#"{"ok":true,"votes":4}"#.into()),
    ));
    bob.process = Some(process.id);
    let mut alice = access("/about/", now + Duration::minutes(1), "demo::views::about");
    alice.user = Some(AccessUser::new(7, "alice"));
    alice.request.METADATA = doc! { "REQUEST_METHOD": "GET" };
    alice.response = Some(response(200, Bson::Null));
    let mut boom = access(
        "/polls/9/",
        now + Duration::minutes(2),
        "demo::views::detail",
    );
    boom.user = Some(AccessUser::new(7, "alice"));
    boom.exception = Some(AccessException {
        kind: "Panic".into(),
        message: "poll 9 is gone".into(),
        trace: "at demo::views::detail".into(),
    });
    store.insert_all(&[bob.clone(), alice, boom]).await.unwrap();
    let first = poll_update("1", None, now - Duration::minutes(10), "Old?", "What's up?");
    let second = poll_update("1", Some(bob.id), now, "What's up?", "What's new?");
    store.insert_all(&[first, second.clone()]).await.unwrap();

    let base = serve(&store).await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let result = async {
        login(&c, &base).await;
        wait_for(&c, "img.chart").await;
        shot(&c, "dashboard").await;

        // Search by user.
        c.goto(&format!("{base}/access")).await.unwrap();
        c.find(Locator::Css("input[name=user_id]"))
            .await
            .unwrap()
            .send_keys("23")
            .await
            .unwrap();
        click_and_load(&c, "form.search button").await;
        wait_for(&c, "table.list").await;
        assert!(
            c.current_url()
                .await
                .unwrap()
                .query()
                .unwrap()
                .contains("user_id=23"),
            "a shareable search link"
        );
        let paths = texts(&c, "table.list td.path").await;
        assert_eq!(paths, vec!["/polls/1/vote/"], "only bob's access");
        shot(&c, "access-search-by-user").await;

        // Search by URL regex.
        c.goto(&format!("{base}/access")).await.unwrap();
        c.find(Locator::Css("input[name=url_regex]"))
            .await
            .unwrap()
            .send_keys(r"^/polls/\d+/$")
            .await
            .unwrap();
        click_and_load(&c, "form.search button").await;
        wait_for(&c, "table.list").await;
        assert_eq!(texts(&c, "table.list td.path").await, vec!["/polls/9/"]);
        shot(&c, "access-search-by-url-regex").await;

        // Open bob's access from a search.
        c.goto(&format!("{base}/access?user_id=23")).await.unwrap();
        click_and_load(&c, "table.list td.path a").await;
        wait_for(&c, "h1").await;
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&format!("/access/{}", bob.id.to_hex())));
        let text = body_text(&c).await;
        assert!(
            text.contains("\"votes\": 4"),
            "the JSON response, indented: {text}"
        );
        assert!(text.contains("curl/8"));
        shot(&c, "access-detail").await;

        // Follow it to its model action and see the diff.
        click_and_load(&c, "table.list td a").await;
        wait_for(&c, "table.diff").await;
        assert!(c
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&format!("/model-action/{}", second.id.to_hex())));
        let changed = texts(&c, "table.diff tr.changed").await;
        assert_eq!(changed.len(), 1, "one changed field: {changed:?}");
        assert!(
            changed[0].contains("question")
                && changed[0].contains("What's up?")
                && changed[0].contains("What's new?"),
            "{changed:?}"
        );
        let rows = texts(&c, "table.diff tbody tr").await;
        assert_eq!(rows.len(), 3, "id, question, votes: {rows:?}");
        shot(&c, "model-action-detail").await;

        // The instance history: both actions, oldest first.
        click_and_load(&c, "#history").await;
        wait_for(&c, "section.history-item").await;
        let items = texts(&c, "section.history-item h3").await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            items[1].contains("its access"),
            "the newer one links to its access: {items:?}"
        );
        shot(&c, "instance-history").await;

        // The process.
        c.goto(&format!("{base}/process/{}", process.id.to_hex()))
            .await
            .unwrap();
        wait_for(&c, "table.kv").await;
        assert!(body_text(&c).await.contains("host-1"));
        shot(&c, "process-detail").await;
        c.goto(&format!("{base}/model-action")).await.unwrap();
        wait_for(&c, "table.list").await;
        shot(&c, "model-action-search").await;
    }
    .await;
    c.close().await.ok();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_payloads_show_as_text_and_never_run() {
    let store = audit_tests::sqlite_store().await;
    let p = payloads();
    let now = Utc::now() - Duration::minutes(5);
    let mut hostile: Vec<Access> = Vec::new();
    for (i, payload) in p.iter().enumerate() {
        let mut a = access(
            &format!("/x/{payload}"),
            now + Duration::seconds(i as i64),
            payload,
        );
        a.request.GET = doc! { "q": payload.as_str(), payload.as_str(): "key" };
        a.request.METADATA = doc! { "REQUEST_METHOD": "GET", "HTTP_USER_AGENT": payload.as_str(), "HTTP_REFERER": payload.as_str() };
        a.user = Some(AccessUser::new(666, payload.as_str()));
        a.interlink_id = Some(payload.clone());
        a.custom = Some(doc! { "note": payload.as_str() });
        a.response = Some(response(200, Bson::String(payload.clone())));
        a.exception = Some(AccessException {
            kind: payload.clone(),
            message: payload.clone(),
            trace: payload.clone(),
        });
        hostile.push(a);
    }
    store.insert_all(&hostile).await.unwrap();
    let actions: Vec<ModelAction> = p
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            let mut m = poll_update(
                payload,
                Some(hostile[i].id),
                now + Duration::seconds(i as i64),
                payload,
                &format!("{payload}!"),
            );
            m.model.full_name = payload.clone();
            m.content.old.insert(payload.as_str(), payload.as_str());
            m
        })
        .collect();
    store.insert_all(&actions).await.unwrap();

    let base = serve(&store).await;
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let result = async {
        login(&c, &base).await;
        let mut pages = vec![
            ("xss-dashboard".to_owned(), format!("{base}/")),
            ("xss-access-search".to_owned(), format!("{base}/access?user_id=666")),
            ("xss-model-action-search".to_owned(), format!("{base}/model-action")),
        ];
        for (i, a) in hostile.iter().enumerate() {
            pages.push((format!("xss-access-{i}"), format!("{base}/access/{}", a.id.to_hex())));
        }
        for (i, m) in actions.iter().enumerate() {
            pages.push((format!("xss-model-action-{i}"), format!("{base}/model-action/{}", m.id.to_hex())));
            pages.push((
                format!("xss-history-{i}"),
                format!("{base}/history?model={}&instance_id={}", enc(&m.model.full_name), enc(&m.instance.id)),
            ));
        }
        for (name, url) in &pages {
            c.goto(url).await.unwrap();
            wait_for(&c, "main").await;
            // A payload that ran would have set the flag, or left its element in the page.
            let ran = c
                .execute(
                    &format!(
                        "return [typeof window.{FLAG} !== 'undefined', \
                         document.querySelectorAll('script, svg[onload], img[onerror], [onerror], [onload]').length, \
                         Array.from(document.querySelectorAll('a[href]')).filter(a => a.getAttribute('href').trim().toLowerCase().startsWith('javascript:')).length];"
                    ),
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(ran, serde_json::json!([false, 0, 0]), "{name}: a payload ran or was injected ({url})");
            shot(&c, name).await;
            let text = body_text(&c).await;
            if !name.contains("dashboard") {
                assert!(p.iter().any(|payload| text.contains(payload.as_str())), "{name}: the payload shows as text: {text}");
            }
        }
        // Every payload, in every stored place, reads back as the same text on its access page.
        for a in &hostile {
            c.goto(&format!("{base}/access/{}", a.id.to_hex())).await.unwrap();
            wait_for(&c, "main").await;
            let text = body_text(&c).await;
            let payload = a.user.as_ref().unwrap().username.as_str();
            assert!(text.matches(payload).count() >= 8, "path, query key and value, headers, user, custom, response, exception: {text}");
        }
    }
    .await;
    c.close().await.ok();
    result
}
