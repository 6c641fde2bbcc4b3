//! OCSF 1.6: an access as an *API Activity* (class 6003), a model action as an *Entity
//! Management* event (class 3004). Profiles used: `host` (the `device` of the process) and, for
//! accesses that carried a W3C trace context, `trace`.

use super::{
    as_text, at, client, custom, id_hex, int, json, millis, object, outcome, s, text, trace,
    Context, OCSF_VERSION, PRODUCT,
};
use bson::{Bson, Document};
use serde_json::{json, Value};

/// The HTTP methods OCSF 1.6 names in `http_request.http_method`.
const METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

/// API Activity's `activity_id` for an HTTP method, and its caption.
fn api_activity(method: Option<&str>) -> (i64, &'static str) {
    match method {
        Some("POST") => (1, "Create"),
        Some("GET" | "HEAD" | "OPTIONS") => (2, "Read"),
        Some("PUT" | "PATCH") => (3, "Update"),
        Some("DELETE") => (4, "Delete"),
        Some(_) => (99, "Other"),
        None => (0, "Unknown"),
    }
}

fn severity(id: i64) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        _ => "Unknown",
    }
}

/// `metadata`, naming the profiles whose attributes the event carries.
fn metadata(
    uid: Option<String>,
    correlation: Option<String>,
    log: &str,
    profiles: &[&str],
) -> Option<Value> {
    object([
        (
            "product",
            Some(json!({
                "name": PRODUCT,
                "vendor_name": PRODUCT,
                "version": env!("CARGO_PKG_VERSION"),
            })),
        ),
        ("version", super::s(OCSF_VERSION)),
        ("uid", uid.map(Value::String)),
        ("correlation_uid", correlation.map(Value::String)),
        ("log_name", s(log)),
        ("profiles", (!profiles.is_empty()).then(|| json!(profiles))),
    ])
}

/// The serving process as OCSF sees it: the `device` (host profile) and `actor.process`.
fn device(process: Option<&Document>) -> Option<Value> {
    let machine = process.and_then(|p| text(p, "machine"))?;
    Some(json!({ "type_id": 1, "type": "Server", "hostname": machine, "name": machine }))
}

fn process_object(process: Option<&Document>) -> Option<Value> {
    let p = process?;
    let pid = int(p, "pid")?;
    let cmd = match (text(p, "name"), text(p, "args")) {
        (Some(n), Some(a)) => Some(format!("{n} {a}")),
        (Some(n), None) => Some(n.to_owned()),
        _ => None,
    };
    object([
        ("pid", super::n(pid)),
        ("name", text(p, "name").map(|n| Value::String(n.to_owned()))),
        ("cmd_line", cmd.map(Value::String)),
        ("user", text(p, "user").map(|u| json!({ "name": u }))),
        ("created_time", millis(p, "creation_time").map(Value::from)),
    ])
}

/// Where the record is sealed, for `unmapped`.
fn sealed(ctx: &Context<'_>) -> Option<Value> {
    ctx.sealed
        .map(|p| json!({ "stream": p.stream.to_hex(), "seq": p.seq, "leaf_index": p.leaf }))
}

pub(super) fn access(doc: &Document, ctx: &Context<'_>) -> Value {
    let method = text(doc, "request.METADATA.REQUEST_METHOD");
    let (activity_id, activity) = api_activity(method);
    let code = int(doc, "response.status_code");
    let ok = outcome(doc);
    let (status_id, status) = match ok {
        Some(true) => (1, "Success"),
        Some(false) => (2, "Failure"),
        None => (0, "Unknown"),
    };
    let exception = match (text(doc, "exception.type"), text(doc, "exception.message")) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (Some(t), None) => Some(t.to_owned()),
        _ => None,
    };
    let severity_id = match (ok, code) {
        (Some(true), _) => 1,
        (Some(false), Some(c)) if c < 500 => 2,
        (Some(false), _) => 3,
        (None, _) => 1,
    };
    let time = millis(doc, "time.request").unwrap_or(0);
    let end = millis(doc, "time.response");
    let path = text(doc, "request.path");
    let interlink = text(doc, "interlink_id").map(str::to_owned);
    let (ip, port) = client(doc);
    let user = object([
        (
            "uid",
            at(doc, "user.id").and_then(as_text).map(Value::String),
        ),
        (
            "name",
            text(doc, "user.username").map(|u| Value::String(u.into())),
        ),
    ]);
    let app = text(doc, "view.app").unwrap_or("unknown");
    let process = process_object(ctx.process);
    let device = device(ctx.process);
    let trace = trace(doc);
    let mut profiles = Vec::new();
    if device.is_some() {
        profiles.push("host");
    }
    if trace.is_some() {
        profiles.push("trace");
    }
    let http_method = method.filter(|m| METHODS.contains(m));
    let host = text(doc, "request.METADATA.HTTP_HOST").map(super::host_name);
    let message = match (method, path, code) {
        (Some(m), Some(p), Some(c)) => Some(format!("{m} {p} {c}")),
        (Some(m), Some(p), None) => Some(format!("{m} {p}")),
        _ => None,
    };
    let unmapped = object([
        ("custom", custom(doc)),
        (
            "method",
            method
                .filter(|m| !METHODS.contains(m))
                .map(|m| Value::String(m.into())),
        ),
        ("view", at(doc, "view").map(json)),
        (
            "response_type",
            text(doc, "response.type").map(|t| Value::String(t.into())),
        ),
        ("process_uid", id_hex(doc, "process").map(Value::String)),
        (
            "trace",
            trace
                .as_ref()
                .map(|(_, span, flags)| json!({ "parent_span_id": span, "flags": flags })),
        ),
        ("seal", sealed(ctx)),
    ]);
    let event = object([
        ("class_uid", super::n(6003)),
        ("class_name", s("API Activity")),
        ("category_uid", super::n(6)),
        ("category_name", s("Application Activity")),
        ("activity_id", super::n(activity_id)),
        ("activity_name", s(activity)),
        ("type_uid", super::n(600300 + activity_id)),
        ("type_name", s(format!("API Activity: {activity}"))),
        ("severity_id", super::n(severity_id)),
        ("severity", s(severity(severity_id))),
        ("status_id", super::n(status_id)),
        ("status", s(status)),
        ("status_code", code.map(|c| Value::String(c.to_string()))),
        ("status_detail", exception.clone().map(Value::String)),
        ("time", super::n(time)),
        ("start_time", super::n(time)),
        ("end_time", end.map(Value::from)),
        ("duration", end.map(|e| Value::from((e - time).max(0)))),
        ("message", message.map(Value::String)),
        (
            "metadata",
            metadata(
                id_hex(doc, "_id"),
                interlink.clone(),
                crate::document::Collection::Access.name(),
                &profiles,
            ),
        ),
        (
            "actor",
            object([("user", user), ("process", process), ("app_name", s(app))]),
        ),
        (
            "api",
            object([
                (
                    "operation",
                    s(text(doc, "view.full_name").unwrap_or(path.unwrap_or("unknown"))),
                ),
                ("service", Some(json!({ "name": app }))),
                (
                    "request",
                    Some(
                        json!({ "uid": interlink.clone().or_else(|| id_hex(doc, "_id")).unwrap_or_default() }),
                    ),
                ),
                (
                    "response",
                    object([
                        ("code", code.map(Value::from)),
                        (
                            "error",
                            text(doc, "exception.type").map(|t| Value::String(t.into())),
                        ),
                        (
                            "error_message",
                            text(doc, "exception.message").map(|m| Value::String(m.into())),
                        ),
                    ]),
                ),
            ]),
        ),
        (
            "src_endpoint",
            object([
                ("ip", ip.map(Value::String)),
                ("port", port.map(|p| Value::from(i64::from(p)))),
            ])
            .or_else(|| Some(json!({ "name": "unknown" }))),
        ),
        (
            "http_request",
            object([
                ("http_method", http_method.map(|m| Value::String(m.into()))),
                (
                    "url",
                    object([
                        ("path", path.map(|p| Value::String(p.into()))),
                        (
                            "query_string",
                            text(doc, "request.METADATA.QUERY_STRING")
                                .map(|q| Value::String(q.into())),
                        ),
                        (
                            "scheme",
                            text(doc, "request.METADATA.URL_SCHEME")
                                .map(|q| Value::String(q.into())),
                        ),
                        ("hostname", host.map(|h| Value::String(h.into()))),
                    ]),
                ),
                (
                    "user_agent",
                    text(doc, "request.METADATA.HTTP_USER_AGENT").map(|u| Value::String(u.into())),
                ),
                (
                    "referrer",
                    text(doc, "request.METADATA.HTTP_REFERER").map(|u| Value::String(u.into())),
                ),
                (
                    "version",
                    text(doc, "request.METADATA.SERVER_PROTOCOL").map(|u| Value::String(u.into())),
                ),
                ("uid", interlink.map(Value::String)),
            ]),
        ),
        (
            "http_response",
            code.map(|c| {
                object([
                    ("code", Some(Value::from(c))),
                    (
                        "content_type",
                        text(doc, "response.type").map(|t| Value::String(t.into())),
                    ),
                ])
                .expect("a code")
            }),
        ),
        ("device", device),
        (
            "trace",
            trace.map(|(trace_id, _, _)| json!({ "uid": trace_id })),
        ),
        ("unmapped", unmapped),
    ]);
    event.expect("an event has its class")
}

/// Entity Management's `activity_id` for a model action, and its caption.
fn entity_activity(action: Option<&str>) -> (i64, &'static str) {
    match action {
        Some("create") => (1, "Create"),
        Some("update") => (3, "Update"),
        Some("delete") => (4, "Delete"),
        Some(_) => (99, "Other"),
        None => (0, "Unknown"),
    }
}

pub(super) fn model_action(doc: &Document, ctx: &Context<'_>) -> Value {
    let action = text(doc, "action");
    let (activity_id, activity) = entity_activity(action);
    let time = millis(doc, "timestamp").unwrap_or(0);
    let model = text(doc, "model.full_name").unwrap_or("unknown");
    let instance = at(doc, "instance.id").and_then(as_text);
    let description = text(doc, "instance.description");
    let entity = |data: Option<&Bson>| {
        object([
            ("uid", instance.clone().map(Value::String)),
            ("name", description.map(|d| Value::String(d.into()))),
            ("type", s(model)),
            ("type_id", super::n(99)),
            (
                "data",
                data.filter(|d| matches!(d, Bson::Document(x) if !x.is_empty()))
                    .map(json),
            ),
        ])
    };
    let (before, after) = (at(doc, "content.old"), at(doc, "content.new"));
    let device = device(ctx.process);
    let profiles: &[&str] = if device.is_some() { &["host"] } else { &[] };
    let event = object([
        ("class_uid", super::n(3004)),
        ("class_name", s("Entity Management")),
        ("category_uid", super::n(3)),
        ("category_name", s("Identity & Access Management")),
        ("activity_id", super::n(activity_id)),
        ("activity_name", s(activity)),
        ("type_uid", super::n(300400 + activity_id)),
        ("type_name", s(format!("Entity Management: {activity}"))),
        ("severity_id", super::n(1)),
        ("severity", s("Informational")),
        ("status_id", super::n(1)),
        ("status", s("Success")),
        ("time", super::n(time)),
        (
            "message",
            s(format!(
                "{} {model} {}",
                action.unwrap_or("change"),
                instance.clone().unwrap_or_default()
            )),
        ),
        (
            "metadata",
            metadata(
                id_hex(doc, "_id"),
                id_hex(doc, "access"),
                crate::document::Collection::ModelAction.name(),
                profiles,
            ),
        ),
        (
            "actor",
            object([
                ("process", process_object(ctx.process)),
                (
                    "app_name",
                    text(doc, "model.app").map(|a| Value::String(a.into())),
                ),
            ]),
        ),
        (
            "entity",
            entity(if action == Some("create") {
                after
            } else {
                before
            })
            .or_else(|| Some(json!({ "type": model }))),
        ),
        (
            "entity_result",
            if action == Some("update") {
                entity(after)
            } else {
                None
            },
        ),
        ("device", device),
        (
            "unmapped",
            object([
                ("changes", at(doc, "content.changes").map(json)),
                ("access_uid", id_hex(doc, "access").map(Value::String)),
                ("model", at(doc, "model").map(json)),
                ("process_uid", id_hex(doc, "process").map(Value::String)),
                ("seal", sealed(ctx)),
            ]),
        ),
    ]);
    event.expect("an event has its class")
}
