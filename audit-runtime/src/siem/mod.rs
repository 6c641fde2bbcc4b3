//! The trail in the schemas security tools read: OCSF 1.6 (Amazon Security Lake, Splunk, Sentinel)
//! and Elastic Common Schema 8.17 (Elastic, and most pipelines that read JSON). Used by
//! `audit export --format ocsf|ecs` and by the forwarder.
//!
//! Each event is made from the record **as stored**: whatever the trail masks (`********`) or an
//! erasure replaced (`<erased>`) leaves the same way, and nothing is read from anywhere else. A
//! value that the target schema would refuse in its place (an address that is not an address
//! any more, once erased) is left out of that place rather than sent malformed.
//!
//! An access is an OCSF *API Activity* (class 6003) and an ECS web event; a model action is an
//! OCSF *Entity Management* event (class 3004) and an ECS database change, linked to its access;
//! the process that served them is the event's `device` and `actor.process` (OCSF) or `host` and
//! `process` (ECS). The README documents the mapping field by field.

mod ecs;
mod ocsf;

use crate::document::Collection;
use bson::oid::ObjectId;
use bson::{Bson, Document};
use serde_json::{Map, Value};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.6.0";
/// The ECS version the events follow.
pub const ECS_VERSION: &str = "8.17.0";

/// The product name events carry.
const PRODUCT: &str = "audit-tools";

/// A format records are exported or forwarded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// OCSF 1.6 events (the forwarder's default).
    #[default]
    Ocsf,
    /// Elastic Common Schema 8.17 documents.
    Ecs,
    /// The records as stored, as relaxed Extended JSON (what `audit export` wrote before).
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ocsf" => Ok(Format::Ocsf),
            "ecs" => Ok(Format::Ecs),
            "jsonl" | "json" => Ok(Format::Jsonl),
            other => Err(format!("unknown format `{other}` (ocsf, ecs or jsonl)")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
            Format::Jsonl => "jsonl",
        })
    }
}

/// Where a forwarded record is sealed, so that a copy in a SIEM can be checked against the
/// trail (`audit prove --id` makes the receipt of that leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealPlace {
    /// The writer's stream.
    pub stream: ObjectId,
    /// The seal's sequence number in it.
    pub seq: i64,
    /// The record's leaf index in the stream's Merkle tree.
    pub leaf: u64,
}

/// What an event is made from besides its record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The process document the record names, when it is at hand.
    pub process: Option<&'a Document>,
    /// Where the record is sealed (the forwarder knows it; an export does not).
    pub sealed: Option<SealPlace>,
}

/// The event of the stored record `doc` of `c` in `format`; `None` for a record the format does
/// not carry on its own (a process: it appears inside the events it served).
pub fn event(format: Format, c: Collection, doc: &Document, ctx: &Context<'_>) -> Option<Value> {
    match (format, c) {
        (Format::Jsonl, _) => Some(Bson::Document(doc.clone()).into_relaxed_extjson()),
        (Format::Ocsf, Collection::Access) => Some(ocsf::access(doc, ctx)),
        (Format::Ocsf, Collection::ModelAction) => Some(ocsf::model_action(doc, ctx)),
        (Format::Ecs, Collection::Access) => Some(ecs::access(doc, ctx)),
        (Format::Ecs, Collection::ModelAction) => Some(ecs::model_action(doc, ctx)),
        _ => None,
    }
}

/// The trace context a request carried (W3C `traceparent`), kept in the access under
/// `custom._trace` (the original's documents accept anything under `custom`).
pub(crate) const TRACE_KEY: &str = "_trace";

/// The trace and parent span ids of a valid W3C `traceparent` header value: version two
/// lowercase hex digits (not `ff`), a 32-digit trace id and a 16-digit span id, neither all
/// zeros, and the flags; version `00` allows nothing after them.
pub(crate) fn parse_traceparent(v: &str) -> Option<(String, String, u8)> {
    let v = v.trim();
    let mut parts = v.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((
        trace.to_owned(),
        span.to_owned(),
        u8::from_str_radix(flags, 16).ok()?,
    ))
}

// ---- reading the stored document ----

/// The value at a dotted path.
fn at<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn text<'a>(doc: &'a Document, path: &str) -> Option<&'a str> {
    match at(doc, path)? {
        Bson::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn int(doc: &Document, path: &str) -> Option<i64> {
    match at(doc, path)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn millis(doc: &Document, path: &str) -> Option<i64> {
    match at(doc, path)? {
        Bson::DateTime(t) => Some(t.timestamp_millis()),
        _ => None,
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A value as text: strings as they are, numbers and ObjectIds written out.
fn as_text(v: &Bson) -> Option<String> {
    match v {
        Bson::String(s) if !s.is_empty() => Some(s.clone()),
        Bson::Int32(i) => Some(i.to_string()),
        Bson::Int64(i) => Some(i.to_string()),
        Bson::Double(f) => Some(f.to_string()),
        Bson::ObjectId(o) => Some(o.to_hex()),
        _ => None,
    }
}

fn id_hex(doc: &Document, path: &str) -> Option<String> {
    match at(doc, path)? {
        Bson::ObjectId(o) => Some(o.to_hex()),
        _ => None,
    }
}

fn json(v: &Bson) -> Value {
    v.clone().into_relaxed_extjson()
}

/// The client address and port of `REMOTE_ADDR` (`ip` or `ip:port`, `[v6]:port`), when they
/// still are one (an erased or masked value is not).
fn client(doc: &Document) -> (Option<String>, Option<u16>) {
    let Some(raw) = text(doc, "request.METADATA.REMOTE_ADDR") else {
        return (None, None);
    };
    if let Ok(sa) = raw.parse::<std::net::SocketAddr>() {
        return (Some(sa.ip().to_string()), Some(sa.port()));
    }
    match raw.parse::<std::net::IpAddr>() {
        Ok(ip) => (Some(ip.to_string()), None),
        Err(_) => (None, None),
    }
}

/// The host of a `Host` header value, without its port.
fn host_name(h: &str) -> &str {
    let h = match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    };
    h.trim_start_matches('[').trim_end_matches(']')
}

/// The trace context kept in the access: trace id, parent span id, flags.
fn trace(doc: &Document) -> Option<(String, String, i64)> {
    let t = match at(doc, &format!("custom.{TRACE_KEY}"))? {
        Bson::Document(d) => d,
        _ => return None,
    };
    Some((
        t.get_str("trace_id").ok()?.to_owned(),
        t.get_str("span_id").ok()?.to_owned(),
        int(t, "flags").unwrap_or(0),
    ))
}

/// The provider data, without the trace context kept beside it.
fn custom(doc: &Document) -> Option<Value> {
    let Some(Bson::Document(c)) = at(doc, "custom") else {
        return None;
    };
    let mut c = c.clone();
    c.remove(TRACE_KEY);
    (!c.is_empty()).then(|| json(&Bson::Document(c)))
}

/// An object without its empty members (the schemas allow no `null` and want no `{}`).
fn object(pairs: impl IntoIterator<Item = (&'static str, Option<Value>)>) -> Option<Value> {
    let map: Map<String, Value> = pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .filter(|(_, v)| !matches!(v, Value::Object(m) if m.is_empty()))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

fn s(v: impl Into<String>) -> Option<Value> {
    Some(Value::String(v.into()))
}

fn n(v: i64) -> Option<Value> {
    Some(Value::from(v))
}

/// How a request ended: `Some(true)` success, `Some(false)` failure, `None` unknown.
fn outcome(doc: &Document) -> Option<bool> {
    if at(doc, "exception").is_some_and(|e| !matches!(e, Bson::Null)) {
        return Some(false);
    }
    int(doc, "response.status_code").map(|code| code < 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_follows_the_w3c_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into(),
                1
            ))
        );
        // A later version may carry more after the flags.
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_address_is_read_only_while_it_is_one() {
        let doc = |v: &str| bson::doc! { "request": { "METADATA": { "REMOTE_ADDR": v } } };
        assert_eq!(
            client(&doc("10.1.2.3:5555")),
            (Some("10.1.2.3".into()), Some(5555))
        );
        assert_eq!(
            client(&doc("[2001:db8::1]:443")),
            (Some("2001:db8::1".into()), Some(443))
        );
        assert_eq!(
            client(&doc("2001:db8::1")),
            (Some("2001:db8::1".into()), None)
        );
        assert_eq!(client(&doc("<erased>")), (None, None));
    }
}
