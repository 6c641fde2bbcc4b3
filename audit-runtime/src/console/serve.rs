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

/// Serves the console on `listener` until SIGTERM or Ctrl-C (requests in flight finish).
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    token: Option<String>,
    query_timeout: Duration,
) -> std::io::Result<()> {
    let app = Console::new(store)
        .maybe_token(token)
        .query_timeout(query_timeout)
        .router();
    axum::serve(listener, app)
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
