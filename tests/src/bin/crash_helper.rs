//! Helper of the crash test: starts an auditor (async mode, spill journal on), says `ready`, waits
//! for a line on stdin (the test has locked the store meanwhile), records N accesses, waits until
//! they are journaled, says so, and waits to be killed.
//!
//! Usage: `crash_helper <sqlite path> <journal path> <n>`

use audit_runtime::{Access, AccessView, AuditConfig, Auditor, DbConnection};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (db, journal, n) = (&args[1], &args[2], args[3].parse::<usize>().expect("n"));
    let toml = format!("run_async = true\nspill_path = {journal:?}\nflush_timeout_ms = 60000");
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .expect("config")
        .with_connection(DbConnection::Sqlite(db.into()));
    let (auditor, _guard) = Auditor::start(config).await.expect("auditor");
    // The test locks the store, then tells us to go.
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    for i in 0..n {
        let a = Access::new(
            format!("/crash/{i}"),
            chrono::Utc::now(),
            AccessView::new("crash::job", "crash", "job"),
        );
        auditor.record_access(a).await;
    }
    auditor.flush().await;
    let m = auditor.metrics();
    println!("journaled {} written {}", m.spilled, m.written);
    std::future::pending::<()>().await;
}
