//! `audit serve`: the read-only console (JSON API and pages) on one address until SIGTERM or
//! Ctrl-C. Without a token it listens only on loopback addresses.

use super::{open_for_reading, CliError};
use crate::config::AuditConfig;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// The arguments of `serve`.
#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Where to listen, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// A file holding the access token (default: AUDIT_CONSOLE_TOKEN). Without a token the console
    /// only listens on loopback addresses.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Without a token the console answers only to loopback host names (a web page could
    /// otherwise reach it by pointing its own name at 127.0.0.1); also answer to this one
    /// (repeatable).
    #[arg(long)]
    allow_host: Vec<String>,
}

/// Runs `serve`.
pub(super) async fn serve(
    config: &AuditConfig,
    args: &ServeArgs,
    query_timeout: std::time::Duration,
) -> Result<(), CliError> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| CliError::TokenFile {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("AUDIT_CONSOLE_TOKEN").ok(),
    };
    if token.as_deref() == Some("") {
        return Err(CliError::EmptyToken);
    }
    if let Some(t) = &token {
        if t.len() < crate::console::MIN_TOKEN_BYTES {
            return Err(CliError::ShortToken(t.len()));
        }
    }
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&args.addr)
        .await
        .map_err(|source| CliError::Addr {
            addr: args.addr.clone(),
            source,
        })?
        .collect();
    if token.is_none() {
        if let Some(why) = crate::console::serve::refuse_without_token(&addrs) {
            return Err(CliError::NeedsToken(why));
        }
    }
    let store = open_for_reading(config).await?;
    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .map_err(|source| CliError::Listen {
            addr: args.addr.clone(),
            source,
        })?;
    let local = listener.local_addr()?;
    println!(
        "audit console on http://{local}/ ({}, store {})",
        if token.is_some() {
            "token required"
        } else {
            "no token: loopback only"
        },
        config.db_connection
    );
    std::io::stdout().flush()?;
    crate::console::serve::serve(store, listener, token, query_timeout, &args.allow_host).await?;
    Ok(())
}
