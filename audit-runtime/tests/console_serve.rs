//! `audit serve` run for real: it refuses a non-loopback address without a token and says why,
//! serves the API with a token from a file, and stops on SIGTERM; `list` honours the query time
//! limit.

#![cfg(all(feature = "console", unix))]

use assert_cmd::cargo::CommandCargoExt;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn audit(db: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("audit").unwrap();
    c.env_remove("AUDIT_DB")
        .env_remove("AUDIT_CONFIG")
        .env_remove("AUDIT_CONSOLE_TOKEN")
        .arg("--db")
        .arg(db);
    c
}

#[test]
fn refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let out = audit(&dir.path().join("a.db"))
            .args(["serve", "--addr", addr])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{addr}: a usage error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing")
                && err.contains("AUDIT_CONSOLE_TOKEN")
                && err.contains("loopback"),
            "{err}"
        );
    }
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let out = audit(&dir.path().join("a.db"))
        .args(["serve", "--addr", "0.0.0.0:0", "--token-file"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an empty token is no token");
}

/// One HTTP/1.1 GET over a plain socket; returns the status line and the body.
fn http_get(addr: &str, path: &str, token: Option<&str>) -> (String, String) {
    http_request(addr, "GET", path, addr, token, "")
}

/// One HTTP/1.1 request with this `Host` and form body.
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
    form: &str,
) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.lines().next().unwrap_or_default().to_owned();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serves_with_a_token_file_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "serve-test-token-55\n").unwrap();
    // `serve` only reads: the database must exist.
    let db = dir.path().join("a.db");
    assert!(audit(&db).arg("prepare").output().unwrap().status.success());
    let mut child = audit(&db)
        .args(["serve", "--addr", "127.0.0.1:0", "--token-file"])
        .arg(&token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first line names the bound address; it is printed once the socket listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("token required"), "{line}");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let (status, _) = http_get(&addr, "/api/access", None);
    assert!(status.contains("401"), "{status}");
    let (status, body) = http_get(&addr, "/api/access", Some("serve-test-token-55"));
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), r#"{"items":[],"next":null}"#);

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean stop: {status:?}");
}

/// `audit ... list` carries the same time limit as the console (`--query-timeout-ms`): past it
/// the command stops with a clear error instead of running on.
#[test]
fn list_stops_at_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = audit_runtime::AuditConfig::default()
            .with_connection(audit_runtime::DbConnection::Sqlite(db.clone()));
        let store = audit_runtime::Store::connect(&config).await.unwrap();
        let t = chrono::Utc::now();
        let docs: Vec<audit_runtime::Access> = (0..3000)
            .map(|i| {
                audit_runtime::Access::new(
                    format!("/items/{i}"),
                    t,
                    audit_runtime::AccessView::new("demo::item", "demo", "item"),
                )
            })
            .collect();
        store.insert_all(&docs).await.unwrap();
    });
    let out = audit(&db)
        .args([
            "--query-timeout-ms",
            "0",
            "access",
            "list",
            "--url-regex",
            "no-such-path",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("time limit"), "{err}");
    let ok = audit(&db)
        .args(["access", "list", "--url-regex", "^/items/299$"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("/items/299"));
}

/// Starts `audit serve` with `args` on a free loopback port; returns it and its address.
fn serve(db: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    let mut child = audit(db)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr)
}

/// Without a token the console answers to loopback names only: a page on another site that
/// points its own name at 127.0.0.1 (DNS rebinding) gets 421, not the trail.
#[test]
fn without_a_token_only_loopback_names_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    assert!(audit(&db).arg("prepare").output().unwrap().status.success());
    let (mut child, addr) = serve(&db, &["--allow-host", "audit.internal"]);
    let port = addr.rsplit(':').next().unwrap();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "audit.internal".to_owned(),
    ] {
        let (status, _) = http_request(&addr, "GET", "/api/access", &host, None, "");
        assert!(status.contains("200"), "{host}: {status}");
    }
    for host in [
        "attacker.example",
        "attacker.example:80",
        "127.0.0.1.attacker.example",
    ] {
        let (status, body) = http_request(&addr, "GET", "/api/access", host, None, "");
        assert!(status.contains("421"), "{host}: {status}");
        assert!(!body.contains("items"), "{body}");
    }
    child.kill().unwrap();
    let _ = child.wait();
}

/// A token shorter than 16 bytes is refused at start; failed logins are throttled per client,
/// so a guesser waits longer after each (the right token included, while it waits).
#[test]
fn short_tokens_are_refused_and_guessing_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    assert!(audit(&db).arg("prepare").output().unwrap().status.success());
    let short = dir.path().join("short");
    std::fs::write(&short, "abc123\n").unwrap();
    let out = audit(&db)
        .args(["serve", "--addr", "127.0.0.1:0", "--token-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));

    let token = dir.path().join("token");
    std::fs::write(&token, "throttle-test-token-0042\n").unwrap();
    let (mut child, addr) = serve(&db, &["--token-file", token.to_str().unwrap()]);
    let login =
        |t: &str| http_request(&addr, "POST", "/login", &addr, None, &format!("token={t}")).0;
    let statuses: Vec<String> = (0..8).map(|i| login(&format!("guess-{i}"))).collect();
    assert!(
        statuses[..5].iter().all(|s| s.contains("401")),
        "{statuses:?}"
    );
    assert!(
        statuses[5..].iter().all(|s| s.contains("429")),
        "{statuses:?}"
    );
    assert!(
        login("throttle-test-token-0042").contains("429"),
        "while it waits, even the right token is not heard"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let ok = login("throttle-test-token-0042");
    assert!(ok.contains("303"), "heard again after the wait: {ok}");
    child.kill().unwrap();
    let _ = child.wait();
}
