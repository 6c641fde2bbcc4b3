//! The demo application: `cargo run --example demo` runs a scripted tour of the original demo
//! against a real axum server on a loopback port and prints the recorded trail;
//! `cargo run --example demo -- serve --addr 127.0.0.1:8000 [--db PATH_OR_URI]` serves it.
//!
//! The polls are kept in a SQLite file of their own, `demo-polls.db` beside the audit store's file
//! (in the working directory with a MongoDB store), created on first run; `--polls PATH` names
//! another.
//!
//! Configuration comes from `examples/demo.toml` (or the file named by `AUDIT_CONFIG`) and
//! `AUDIT_*` environment variables, e.g. `AUDIT_RUN_ASYNC=true`.

use audit_runtime::config::parse_connection_str;
use audit_runtime::{Access, AuditConfig, ModelAction, Order};
use clap::{Parser, Subcommand};
use demo::Polls;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(about = "The audit demo application")]
struct Cli {
    /// Where to store the trail: a SQLite path or a mongodb:// URI (default: the config's).
    #[arg(long, global = true)]
    db: Option<String>,
    /// The polls' own SQLite file (default: `demo-polls.db` beside the audit store's).
    #[arg(long, global = true)]
    polls: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scripted tour and print the trail (the default).
    Tour,
    /// Serve the demo until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        addr: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUDIT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let file = std::env::var_os("AUDIT_CONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/demo.toml").into());
    let mut config = AuditConfig::load(Some(&file))?;
    if let Some(db) = &cli.db {
        config = config.with_connection(parse_connection_str(db)?);
    }
    let polls_file = cli
        .polls
        .clone()
        .unwrap_or_else(|| polls_beside(&config.db_connection));
    let polls = Polls::open(&polls_file).await?;
    let (auditor, guard) = demo::auditor_builder(config, &polls).start().await?;
    auditor.install_global();
    let app = demo::app(auditor.clone(), polls);

    match cli.command.unwrap_or(Command::Tour) {
        Command::Serve { addr } => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!(
                "demo listening on http://{} (store: {})",
                listener.local_addr()?,
                auditor.config().db_connection
            );
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown_signal())
            .await?;
            let m = guard.shutdown().await;
            println!(
                "stopped: {} records written, {} failed, {} dropped",
                m.written, m.failed, m.dropped
            );
        }
        Command::Tour => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let started = chrono::Utc::now();
            let server = tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
            });
            tour(addr).await?;
            auditor.flush().await;
            print_trail(&auditor, started).await?;
            server.abort();
            guard.shutdown().await;
        }
    }
    Ok(())
}

/// `demo-polls.db` in the directory of the audit store's file: beside it, never inside it.
fn polls_beside(conn: &audit_runtime::DbConnection) -> std::path::PathBuf {
    match conn {
        audit_runtime::DbConnection::Sqlite(p) => p.with_file_name("demo-polls.db"),
        audit_runtime::DbConnection::Mongo { .. }
        | audit_runtime::DbConnection::Postgres { .. } => "demo-polls.db".into(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// One scripted request: method, path and form fields.
type Step<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

async fn tour(addr: SocketAddr) -> Result<(), reqwest::Error> {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let steps: &[Step] = &[
        ("GET", "/", &[]),
        ("GET", "/access/class/", &[]),
        ("GET", "/access/function/?page=2&page=3", &[]),
        ("GET", "/access/decorator/", &[]),
        ("GET", "/access/exception/", &[]),
        ("GET", "/access/panic/", &[]),
        ("GET", "/access/args/7/", &[]),
        ("GET", "/access/disabled/", &[]),
        (
            "POST",
            "/login/",
            &[("username", "alice"), ("password", "s3cret")],
        ),
        (
            "POST",
            "/modelaction/create/",
            &[("question", "What's up?")],
        ),
        (
            "POST",
            "/modelaction/update/",
            &[("question", "What's new?")],
        ),
        (
            "POST",
            "/modelaction/create/",
            &[("question", "¿Qué tal? 日本")],
        ),
        ("GET", "/api/polls/", &[]),
        ("POST", "/modelaction/delete/", &[]),
        ("GET", "/modelaction/last/", &[]),
        ("GET", "/access/last/", &[]),
    ];
    println!("Requests:");
    for (method, path, form) in steps {
        let req = match *method {
            "POST" => client.post(format!("{base}{path}")).form(form),
            _ => client.get(format!("{base}{path}")),
        };
        let res = req.header("x-user", "23:bob").send().await?;
        println!("  {method:<5} {path:<36} -> {}", res.status().as_u16());
    }
    Ok(())
}

async fn print_trail(
    auditor: &audit_runtime::Auditor,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = auditor
        .store()
        .ok_or("auditing is off (activate = false)")?;
    let accesses = Access::objects()
        .since(since)
        .order_by("time.request", Order::Asc)
        .fetch(store)
        .await?;
    println!("\nAccesses recorded ({}), oldest first:", accesses.len());
    println!(
        "  {:<12} {:<8} {:<6} {:<36} {:<6} {:<32} exception",
        "time", "user", "method", "path", "status", "view"
    );
    for a in &accesses {
        let method = a.request.METADATA.get_str("REQUEST_METHOD").unwrap_or("-");
        let status = a
            .response
            .as_ref()
            .map_or("-".to_owned(), |r| r.status_code.to_string());
        let exception = a
            .exception
            .as_ref()
            .map_or(String::new(), |e| format!("{}: {}", e.kind, e.message));
        println!(
            "  {:<12} {:<8} {:<6} {:<36} {:<6} {:<32} {}",
            a.time.request.format("%H:%M:%S%.3f"),
            a.user.as_ref().map_or("-", |u| u.username.as_str()),
            method,
            a.request.path,
            status,
            a.view.full_name,
            exception
        );
    }
    let actions = ModelAction::objects()
        .since(since)
        .order_by("timestamp", Order::Asc)
        .fetch(store)
        .await?;
    println!(
        "\nModel actions recorded ({}), oldest first:",
        actions.len()
    );
    println!(
        "  {:<12} {:<18} {:<7} {:<9} {:<20} changed fields",
        "time", "model", "action", "instance", "description"
    );
    for m in &actions {
        let changed: Vec<&str> = m.content.changes.keys().map(String::as_str).collect();
        println!(
            "  {:<12} {:<18} {:<7} {:<9} {:<20} {}",
            m.timestamp.format("%H:%M:%S%.3f"),
            m.model.full_name,
            m.action.as_str(),
            m.instance.id,
            m.instance.description,
            changed.join(", ")
        );
    }
    let linked = actions.iter().filter(|m| m.access.is_some()).count();
    println!(
        "\n{linked} of {} model actions link to the access of their request; store: {}",
        actions.len(),
        auditor.config().db_connection
    );
    // The same trail in a browser: the console reads the store the tour just wrote.
    let features = match &auditor.config().db_connection {
        audit_runtime::DbConnection::Sqlite(_) => "cli",
        audit_runtime::DbConnection::Mongo { .. } => "cli,mongodb",
        audit_runtime::DbConnection::Postgres { .. } => "cli,postgres",
    };
    println!(
        "\nLook at this trail in the console (then open http://127.0.0.1:8080/):\n  \
         cargo run -p audit-runtime --features {features} --bin audit -- --db {} serve --addr 127.0.0.1:8080",
        console_db_arg(&auditor.config().db_connection)
    );
    Ok(())
}

/// The `--db` argument naming the store the demo wrote, quoted for a shell when needed. A
/// MongoDB or PostgreSQL URI may hold a password, which is never printed: the reader passes the
/// URI they gave.
fn console_db_arg(conn: &audit_runtime::DbConnection) -> String {
    let s = match conn {
        audit_runtime::DbConnection::Sqlite(p) => std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        audit_runtime::DbConnection::Mongo { .. } => return "\"$YOUR_MONGODB_URI\"".into(),
        audit_runtime::DbConnection::Postgres { .. } => return "\"$YOUR_POSTGRES_URI\"".into(),
    };
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
