//! Helper of the two-writer seal test: one application instance. Records N accesses into the
//! given MongoDB database through a real auditor (sealing with the given key), shuts down
//! cleanly and prints `written N seals M`.
//!
//! Usage: `writer_helper <mongodb uri> <database> <n> <seal key path>`

use audit_runtime::{Access, AccessView, AuditConfig, Auditor, DbConnection};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (uri, database, n, key) = (
        args[1].clone(),
        args[2].clone(),
        args[3].parse::<usize>().expect("n"),
        &args[4],
    );
    let toml = format!("run_async = true\nseal_key_file = {key:?}");
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .expect("config")
        .with_connection(DbConnection::Mongo { uri, database });
    let (auditor, guard) = Auditor::start(config).await.expect("auditor");
    for i in 0..n {
        let a = Access::new(
            format!("/instance/{}/{i}", std::process::id()),
            chrono::Utc::now() - chrono::Duration::hours(1),
            AccessView::new("shop::orders::show", "shop", "show"),
        );
        auditor.record_access(a).await;
    }
    let m = guard.shutdown().await;
    println!("written {} seals {}", m.written, m.seals);
}
