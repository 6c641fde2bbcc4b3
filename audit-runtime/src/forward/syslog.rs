//! The syslog destination: RFC 5424 messages over TCP (or TLS), each framed by its length
//! (RFC 6587 octet counting, which rsyslog, syslog-ng and every SIEM's collector read), the
//! event's JSON as the message, where the record is sealed as structured data.
//!
//! TCP acknowledges bytes, not messages: a receiver that dies may lose what it had taken but not
//! read yet. So after a failure the forwarder sends again what it delivered in the [`REWIND`]
//! before it (duplicates within that window are the price of losing nothing).

use super::{Item, SinkError};
use crate::document::Collection;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How far back delivery starts again after a failure.
pub(super) const REWIND: Duration = Duration::from_secs(5);

/// `log audit` (13), as RFC 5424 numbers facilities.
const FACILITY: u8 = 13;
/// An SD-ID of the form `name@<private enterprise number>`. 32473 is the number RFC 5612
/// reserves for documentation and examples: the structured data is this library's own.
const SD_ID: &str = "audit@32473";

/// A connection to the receiver.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Conn {
    fn writer(&mut self) -> &mut (dyn AsyncWrite + Send + Unpin) {
        match self {
            Conn::Tcp(t) => t,
            Conn::Tls(t) => t.as_mut(),
        }
    }

    /// True when the receiver has closed a plain TCP connection (it never sends anything, so
    /// reading finds the end of the stream): writing to it would look fine and lose the batch.
    fn closed_by_peer(&self) -> bool {
        match self {
            Conn::Tcp(t) => {
                let mut buf = [0u8; 64];
                matches!(t.try_read(&mut buf), Ok(0))
            }
            Conn::Tls(_) => false,
        }
    }
}

pub(super) struct SyslogSink {
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    conn: Option<Conn>,
}

impl SyslogSink {
    pub(super) fn new(address: &str) -> Result<SyslogSink, String> {
        let (host, port, tls) = crate::config::syslog_address(address)?;
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("forward.syslog: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("forward.syslog: `{host}`: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(SyslogSink {
            host,
            port,
            tls,
            conn: None,
        })
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some((connector, name)) => {
                Conn::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
            None => Conn::Tcp(tcp),
        })
    }

    pub(super) async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let mut frames = Vec::new();
        for item in items {
            let msg = message(item);
            frames.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            frames.extend_from_slice(&msg);
        }
        if self.conn.as_ref().is_some_and(Conn::closed_by_peer) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(
                self.connect()
                    .await
                    .map_err(|e| SinkError::Retry(format!("{}:{}: {e}", self.host, self.port)))?,
            );
        }
        let conn = self.conn.as_mut().expect("connected above").writer();
        let sent = tokio::time::timeout(Duration::from_secs(30), async {
            conn.write_all(&frames).await?;
            conn.flush().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "write timed out",
            ))
        });
        if let Err(e) = sent {
            self.conn = None;
            return Err(SinkError::Retry(format!(
                "{}:{}: {e}",
                self.host, self.port
            )));
        }
        Ok(())
    }
}

/// A value for the header: printable US-ASCII, at most `max` characters, or `-`.
fn header(v: Option<&str>, max: usize) -> String {
    match v {
        Some(v) if !v.is_empty() => v
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect::<String>(),
        _ => "-".into(),
    }
}

/// An SD-PARAM value with `"`, `\` and `]` escaped.
fn param(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// The RFC 5424 message of one event.
fn message(item: &Item) -> Vec<u8> {
    let failed = item.doc.get_document("exception").is_ok()
        || item
            .doc
            .get_document("response")
            .ok()
            .and_then(|r| r.get("status_code"))
            .and_then(|c| c.as_i32().map(i64::from).or(c.as_i64()))
            .is_some_and(|c| c >= 500);
    let severity = if failed { 4 } else { 6 };
    let time = match item.collection {
        Collection::ModelAction => item.doc.get_datetime("timestamp").ok(),
        _ => item
            .doc
            .get_document("time")
            .ok()
            .and_then(|t| t.get_datetime("request").ok()),
    }
    .and_then(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()))
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let process = item.process.as_ref();
    let id = item
        .doc
        .get_object_id("_id")
        .map(|o| o.to_hex())
        .unwrap_or_default();
    let head = format!(
        "<{}>1 {} {} audit-tools {} {} [{SD_ID} stream=\"{}\" seq=\"{}\" leaf=\"{}\" id=\"{}\"] ",
        u16::from(FACILITY) * 8 + severity,
        time.unwrap_or_else(|| "-".into()),
        header(process.and_then(|p| p.get_str("machine").ok()), 255),
        header(
            process
                .and_then(|p| p.get("pid"))
                .map(|p| p.to_string())
                .as_deref(),
            128
        ),
        match item.collection {
            Collection::ModelAction => "model_action",
            _ => "access",
        },
        param(&item.place.stream.to_hex()),
        item.place.seq,
        item.place.leaf,
        param(&id),
    );
    let mut msg = head.into_bytes();
    serde_json::to_writer(&mut msg, &item.event).unwrap_or(());
    msg
}
