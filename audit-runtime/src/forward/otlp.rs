//! The OTLP destination: each event an OpenTelemetry log record, POSTed as protobuf to
//! `<endpoint>/v1/logs` (OTLP/HTTP). The body is the OCSF or ECS event; the attributes are the
//! OpenTelemetry HTTP semantic conventions read from the record, and where it is sealed; the
//! record's W3C trace context, when the request carried one, is the log record's.
//!
//! The messages are `opentelemetry-proto`'s (the crate the OpenTelemetry SDK's own exporter is
//! built on), sent with the HTTP client this crate already has: the forwarder needs to see each
//! response (success, a status to retry, one that refuses for good) to keep its cursor exact,
//! which the SDK's exporter does not show.

use super::{Item, SinkError};
use crate::document::Collection;
use bson::{Bson, Document};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::time::Duration;

pub(super) struct OtlpSink {
    client: reqwest::Client,
    url: String,
}

impl OtlpSink {
    pub(super) fn new(endpoint: &str) -> Result<OtlpSink, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("forward.otlp_endpoint: {e}"))?;
        Ok(OtlpSink {
            client,
            url: format!("{}/v1/logs", endpoint.trim_end_matches('/')),
        })
    }

    pub(super) async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let body = request(items).encode_to_vec();
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::Retry(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            // A partial success names records the receiver rejected; they are not sent again.
            if let Ok(bytes) = response.bytes().await {
                if let Ok(r) = ExportLogsServiceResponse::decode(bytes) {
                    if let Some(p) = r.partial_success.filter(|p| p.rejected_log_records > 0) {
                        tracing::error!(target: "audit", rejected = p.rejected_log_records, message = %p.error_message,
                            "the OTLP receiver rejected some audit events");
                    }
                }
            }
            return Ok(());
        }
        let why = format!("the OTLP receiver answered {status}");
        match status.as_u16() {
            429 | 502 | 503 | 504 => Err(SinkError::Retry(why)),
            _ => Err(SinkError::Refused(why)),
        }
    }
}

fn s(v: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    }
}

fn i(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.to_owned(),
        value: Some(v),
        ..Default::default()
    }
}

/// A JSON value as an OTLP value (objects as key-value lists).
fn any(v: &serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    let value = match v {
        J::Null => return AnyValue::default(),
        J::Bool(b) => any_value::Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(x) => any_value::Value::IntValue(x),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        J::String(x) => any_value::Value::StringValue(x.clone()),
        J::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        }),
        J::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| kv(k, any(v))).collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn path<'a>(doc: &'a Document, p: &str) -> Option<&'a Bson> {
    let mut parts = p.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_document()?.get(part)?;
    }
    Some(cur)
}

fn text<'a>(doc: &'a Document, p: &str) -> Option<&'a str> {
    path(doc, p)?.as_str().filter(|s| !s.is_empty())
}

fn int(doc: &Document, p: &str) -> Option<i64> {
    match path(doc, p)? {
        Bson::Int32(x) => Some(i64::from(*x)),
        Bson::Int64(x) => Some(*x),
        _ => None,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|k| u8::from_str_radix(s.get(2 * k..2 * k + 2)?, 16).ok())
        .collect()
}

/// The log record of one event.
fn record(item: &Item) -> LogRecord {
    let d = &item.doc;
    let mut attributes = vec![
        kv("audit.collection", s(item.collection.name())),
        kv("audit.seal.stream", s(item.place.stream.to_hex())),
        kv("audit.seal.seq", i(item.place.seq)),
        kv("audit.seal.leaf_index", i(item.place.leaf as i64)),
    ];
    if let Ok(id) = d.get_object_id("_id") {
        attributes.push(kv("audit.record.id", s(id.to_hex())));
    }
    let mut failed = false;
    let time_ms;
    let (mut trace_id, mut span_id, mut flags) = (Vec::new(), Vec::new(), 0u32);
    if item.collection == Collection::Access {
        let pairs = [
            ("http.request.method", "request.METADATA.REQUEST_METHOD"),
            ("url.path", "request.path"),
            ("url.query", "request.METADATA.QUERY_STRING"),
            ("url.scheme", "request.METADATA.URL_SCHEME"),
            ("user_agent.original", "request.METADATA.HTTP_USER_AGENT"),
            ("user.name", "user.username"),
            ("error.type", "exception.type"),
        ];
        for (key, p) in pairs {
            if let Some(v) = text(d, p) {
                attributes.push(kv(key, s(v)));
            }
        }
        if let Some(code) = int(d, "response.status_code") {
            attributes.push(kv("http.response.status_code", i(code)));
            failed = code >= 500;
        }
        failed |= path(d, "exception").is_some();
        if let Some(user) = path(d, "user.id") {
            let id = match user {
                Bson::String(x) => Some(x.clone()),
                Bson::Int32(x) => Some(x.to_string()),
                Bson::Int64(x) => Some(x.to_string()),
                _ => None,
            };
            if let Some(id) = id {
                attributes.push(kv("user.id", s(id)));
            }
        }
        if let Some(addr) = text(d, "request.METADATA.REMOTE_ADDR") {
            if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
                attributes.push(kv("client.address", s(sa.ip().to_string())));
                attributes.push(kv("client.port", i(i64::from(sa.port()))));
            } else if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
                attributes.push(kv("client.address", s(ip.to_string())));
            }
        }
        if let Some(view) = text(d, "view.full_name") {
            attributes.push(kv("code.function.name", s(view)));
        }
        if let Some(Bson::Document(t)) = path(d, &format!("custom.{}", crate::siem::TRACE_KEY)) {
            if let (Ok(tr), Ok(sp)) = (t.get_str("trace_id"), t.get_str("span_id")) {
                trace_id = hex(tr);
                span_id = hex(sp);
                flags = int(t, "flags").unwrap_or(0) as u32 & 0xff;
            }
        }
        time_ms = path(d, "time.request")
            .and_then(Bson::as_datetime)
            .map(|t| t.timestamp_millis());
    } else {
        for (key, p) in [
            ("audit.model", "model.full_name"),
            ("audit.action", "action"),
        ] {
            if let Some(v) = text(d, p) {
                attributes.push(kv(key, s(v)));
            }
        }
        time_ms = path(d, "timestamp")
            .and_then(Bson::as_datetime)
            .map(|t| t.timestamp_millis());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let (severity, text) = if failed {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    LogRecord {
        time_unix_nano: time_ms.map_or(0, |ms| (ms.max(0) as u64) * 1_000_000),
        observed_time_unix_nano: now,
        severity_number: severity as i32,
        severity_text: text.into(),
        event_name: match item.collection {
            Collection::ModelAction => "audit.model_action".into(),
            _ => "audit.access".into(),
        },
        body: Some(any(&item.event)),
        attributes,
        trace_id,
        span_id,
        flags,
        ..Default::default()
    }
}

/// One request for `items`: a resource per serving process.
fn request(items: &[Item]) -> ExportLogsServiceRequest {
    let mut groups: Vec<(Option<&Document>, Vec<LogRecord>)> = Vec::new();
    for item in items {
        let p = item.process.as_ref();
        let same = |g: &(Option<&Document>, Vec<LogRecord>)| {
            g.0.and_then(|d| d.get_object_id("_id").ok())
                == p.and_then(|d| d.get_object_id("_id").ok())
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.1.push(record(item)),
            None => groups.push((p, vec![record(item)])),
        }
    }
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(process, records)| {
                let mut attributes = vec![kv("service.name", s("audit-tools"))];
                if let Some(p) = process {
                    if let Ok(m) = p.get_str("machine") {
                        attributes.push(kv("host.name", s(m)));
                    }
                    if let Some(pid) = int(p, "pid") {
                        attributes.push(kv("process.pid", i(pid)));
                    }
                    if let Ok(n) = p.get_str("name") {
                        attributes.push(kv("process.executable.name", s(n)));
                    }
                }
                ResourceLogs {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "audit-tools".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    }
}
