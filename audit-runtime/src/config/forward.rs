//! The `[forward]` table: where the forwarder sends each stored, sealed record, and in which
//! schema. Each destination may be set on its own or with the others.

use super::{as_str, err, ConfigError};
use crate::siem::Format;
use std::path::PathBuf;
use toml::Value;

/// The forwarder's settings (`[forward]`, `AUDIT_FORWARD_*`). Nothing is forwarded while no
/// destination is set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardConfig {
    /// The schema of the events (`ocsf` by default, or `ecs`).
    pub format: Format,
    /// An OTLP/HTTP endpoint (`http://collector:4318`): each event is a log record POSTed to
    /// `<endpoint>/v1/logs` (needs the `forward` feature).
    pub otlp_endpoint: Option<String>,
    /// A syslog receiver, `tcp://host:port` or `tls://host:port`: RFC 5424 messages, framed by
    /// their length (RFC 6587), the event as the message (needs the `forward` feature).
    pub syslog: Option<String>,
    /// A JSON-lines file for Filebeat, Fluent Bit or Vector to pick up; rotated at
    /// `file_max_bytes` (the previous ones kept as `.1` to `.<file_keep>`).
    pub file: Option<PathBuf>,
    /// The size at which `file` is rotated.
    pub file_max_bytes: u64,
    /// How many rotated files are kept.
    pub file_keep: u32,
    /// Where the forwarder keeps, per destination, what it has delivered (so a restart resumes
    /// there); default: `<file>.cursor`, else the SQLite file's path + `.forward-cursor`, else
    /// `audit.forward-cursor`.
    pub cursor_file: Option<PathBuf>,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            format: Format::Ocsf,
            otlp_endpoint: None,
            syslog: None,
            file: None,
            file_max_bytes: 100 << 20,
            file_keep: 5,
            cursor_file: None,
        }
    }
}

impl ForwardConfig {
    /// True when a destination is set.
    pub fn is_on(&self) -> bool {
        self.otlp_endpoint.is_some() || self.syslog.is_some() || self.file.is_some()
    }
}

/// The keys of the table (and, upper-cased after `AUDIT_FORWARD_`, of the environment).
pub(super) const FORWARD_KEYS: &[&str] = &[
    "format",
    "otlp_endpoint",
    "syslog",
    "file",
    "file_max_bytes",
    "file_keep",
    "cursor_file",
];

pub(super) fn parse_forward(v: &Value) -> Result<ForwardConfig, ConfigError> {
    let Some(t) = v.as_table() else {
        return err(format!("forward: expected a table, got {v}"));
    };
    let mut f = ForwardConfig::default();
    for (k, v) in t {
        let key = format!("forward.{k}");
        match k.as_str() {
            "format" => {
                f.format = match as_str(&key, v)?.parse::<Format>() {
                    Ok(Format::Jsonl) | Err(_) => {
                        return err(format!("{key}: expected \"ocsf\" or \"ecs\", got {v}"))
                    }
                    Ok(format) => format,
                }
            }
            "otlp_endpoint" => {
                let u = as_str(&key, v)?;
                if !(u.is_empty() || u.starts_with("http://") || u.starts_with("https://")) {
                    return err(format!(
                        "{key}: expected an http:// or https:// URL (OTLP/HTTP), got `{u}`"
                    ));
                }
                f.otlp_endpoint = (!u.is_empty()).then(|| u.trim_end_matches('/').to_owned());
            }
            "syslog" => {
                let u = as_str(&key, v)?;
                if !u.is_empty() {
                    syslog_address(&u).map_err(|e| ConfigError(format!("{key}: {e}")))?;
                }
                f.syslog = (!u.is_empty()).then_some(u);
            }
            "file" => {
                let p = as_str(&key, v)?;
                f.file = (!p.is_empty()).then(|| PathBuf::from(p));
            }
            "cursor_file" => {
                let p = as_str(&key, v)?;
                f.cursor_file = (!p.is_empty()).then(|| PathBuf::from(p));
            }
            "file_max_bytes" => {
                f.file_max_bytes = match v.as_integer() {
                    Some(n) if n >= 4096 => n as u64,
                    _ => return err(format!("{key}: expected at least 4096 bytes, got {v}")),
                }
            }
            "file_keep" => {
                f.file_keep = match v.as_integer() {
                    Some(n) if (1..=1000).contains(&n) => n as u32,
                    _ => return err(format!("{key}: expected 1 to 1000 files, got {v}")),
                }
            }
            other => {
                return err(format!(
                    "unknown setting `forward.{other}` (known: {})",
                    FORWARD_KEYS.join(", ")
                ))
            }
        }
    }
    let remote = f.otlp_endpoint.is_some() || f.syslog.is_some();
    if remote && !cfg!(feature = "forward") {
        return err(
            "forward.otlp_endpoint and forward.syslog need audit-runtime's `forward` feature"
                .to_owned(),
        );
    }
    Ok(f)
}

/// The host, port and whether TLS is used of a `tcp://host:port` or `tls://host:port` address.
pub(crate) fn syslog_address(u: &str) -> Result<(String, u16, bool), String> {
    let (tls, rest) = if let Some(r) = u.strip_prefix("tcp://") {
        (false, r)
    } else if let Some(r) = u.strip_prefix("tls://") {
        (true, r)
    } else {
        return Err(format!(
            "expected tcp://host:port or tls://host:port, got `{u}`"
        ));
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("`{u}` has no port"));
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("`{u}` has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{u}` has no host"));
    }
    Ok((host.to_owned(), port, tls))
}
