//! `audit serve`: the console on its own, on one address, until SIGTERM or Ctrl-C.

use super::Console;
use crate::store::Store;
use std::net::SocketAddr;
use std::time::Duration;

/// Why the console will not listen on an address.
pub fn refuse_without_token(addrs: &[SocketAddr]) -> Option<String> {
    let open: Vec<String> = addrs
        .iter()
        .filter(|a| !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    (!open.is_empty()).then(|| {
        format!(
            "refusing to serve the console on {} without a token: anyone who can reach it could read \
             the trail. Set AUDIT_CONSOLE_TOKEN or pass --token-file FILE, or listen on a loopback \
             address (127.0.0.1, [::1])",
            open.join(", ")
        )
    })
}

/// The names a console without a token answers to: the loopback ones, and `extra`.
pub fn loopback_hosts(extra: &[String]) -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .chain(extra.iter().cloned())
        .collect()
}

/// Serves the console on `listener` until SIGTERM or Ctrl-C (requests in flight finish).
/// Without a token it answers only to loopback host names (and `extra_hosts`), so a web page
/// cannot reach it through DNS rebinding.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    token: Option<String>,
    query_timeout: Duration,
    extra_hosts: &[String],
) -> std::io::Result<()> {
    let mut console = Console::new(store).query_timeout(query_timeout);
    console = match token {
        Some(t) => console.token(t),
        None => console.allow_hosts(loopback_hosts(extra_hosts)),
    };
    axum::serve(
        listener,
        console
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        // No handler could be installed: only SIGTERM stops the server then.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
