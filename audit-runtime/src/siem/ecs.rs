//! Elastic Common Schema 8.17: an access as a web event, a model action as a database change.
//! What ECS has no field for (the provider data, the model action's content, where a record is
//! sealed) goes under `audit.*`, a namespace of this library's own, as ECS asks custom fields to.

use super::{
    as_text, at, client, custom, id_hex, int, json, millis, object, outcome, rfc3339, s, text,
    trace, Context, ECS_VERSION,
};
use bson::Document;
use serde_json::{json, Value};

/// `host` and `process` from the serving process.
fn host_and_process(process: Option<&Document>) -> (Option<Value>, Option<Value>) {
    let Some(p) = process else {
        return (None, None);
    };
    let host = text(p, "machine").map(|m| json!({ "hostname": m, "name": m }));
    let cmd = match (text(p, "name"), text(p, "args")) {
        (Some(n), Some(a)) => Some(format!("{n} {a}")),
        (Some(n), None) => Some(n.to_owned()),
        _ => None,
    };
    let process = object([
        ("pid", int(p, "pid").map(Value::from)),
        ("name", text(p, "name").map(|n| Value::String(n.into()))),
        ("command_line", cmd.map(Value::String)),
        (
            "start",
            millis(p, "creation_time")
                .and_then(rfc3339)
                .map(Value::String),
        ),
    ]);
    (host, process)
}

fn sealed(ctx: &Context<'_>) -> Option<Value> {
    ctx.sealed
        .map(|p| json!({ "stream": p.stream.to_hex(), "seq": p.seq, "leaf_index": p.leaf }))
}

pub(super) fn access(doc: &Document, ctx: &Context<'_>) -> Value {
    let method = text(doc, "request.METADATA.REQUEST_METHOD");
    let path = text(doc, "request.path");
    let query = text(doc, "request.METADATA.QUERY_STRING");
    let code = int(doc, "response.status_code");
    let start = millis(doc, "time.request").unwrap_or(0);
    let end = millis(doc, "time.response");
    let (ip, port) = client(doc);
    let (host, process) = host_and_process(ctx.process);
    let failed = outcome(doc) == Some(false);
    let trace = trace(doc);
    let original = path.map(|p| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_owned(),
    });
    let version = text(doc, "request.METADATA.SERVER_PROTOCOL")
        .and_then(|v| v.strip_prefix("HTTP/"))
        .map(|v| Value::String(v.into()));
    object([
        ("@timestamp", rfc3339(start).map(Value::String)),
        ("ecs", Some(json!({ "version": ECS_VERSION }))),
        (
            "message",
            match (method, path, code) {
                (Some(m), Some(p), Some(c)) => s(format!("{m} {p} {c}")),
                (Some(m), Some(p), None) => s(format!("{m} {p}")),
                _ => None,
            },
        ),
        (
            "event",
            object([
                ("kind", s("event")),
                ("category", Some(json!(["web"]))),
                (
                    "type",
                    Some(if failed {
                        json!(["access", "error"])
                    } else {
                        json!(["access"])
                    }),
                ),
                (
                    "action",
                    text(doc, "view.full_name").map(|v| Value::String(v.into())),
                ),
                (
                    "outcome",
                    s(match outcome(doc) {
                        Some(true) => "success",
                        Some(false) => "failure",
                        None => "unknown",
                    }),
                ),
                ("dataset", s("audit_tools.access")),
                ("module", s("audit_tools")),
                ("id", id_hex(doc, "_id").map(Value::String)),
                ("start", rfc3339(start).map(Value::String)),
                ("end", end.and_then(rfc3339).map(Value::String)),
                (
                    "duration",
                    end.map(|e| Value::from((e - start).max(0) * 1_000_000)),
                ),
            ]),
        ),
        (
            "http",
            object([
                (
                    "request",
                    object([
                        ("method", method.map(|m| Value::String(m.into()))),
                        (
                            "referrer",
                            text(doc, "request.METADATA.HTTP_REFERER")
                                .map(|r| Value::String(r.into())),
                        ),
                        (
                            "id",
                            text(doc, "interlink_id").map(|i| Value::String(i.into())),
                        ),
                    ]),
                ),
                (
                    "response",
                    object([
                        ("status_code", code.map(Value::from)),
                        (
                            "mime_type",
                            text(doc, "response.type").map(|t| Value::String(t.into())),
                        ),
                    ]),
                ),
                ("version", version),
            ]),
        ),
        (
            "url",
            object([
                ("path", path.map(|p| Value::String(p.into()))),
                ("query", query.map(|q| Value::String(q.into()))),
                ("original", original.map(Value::String)),
                (
                    "scheme",
                    text(doc, "request.METADATA.URL_SCHEME").map(|v| Value::String(v.into())),
                ),
                (
                    "domain",
                    text(doc, "request.METADATA.HTTP_HOST")
                        .map(|h| Value::String(super::host_name(h).into())),
                ),
            ]),
        ),
        (
            "source",
            object([
                ("ip", ip.map(Value::String)),
                ("port", port.map(|p| Value::from(i64::from(p)))),
            ]),
        ),
        (
            "user",
            object([
                (
                    "id",
                    at(doc, "user.id").and_then(as_text).map(Value::String),
                ),
                (
                    "name",
                    text(doc, "user.username").map(|u| Value::String(u.into())),
                ),
            ]),
        ),
        (
            "user_agent",
            text(doc, "request.METADATA.HTTP_USER_AGENT").map(|u| json!({ "original": u })),
        ),
        (
            "error",
            object([
                (
                    "type",
                    text(doc, "exception.type").map(|t| Value::String(t.into())),
                ),
                (
                    "message",
                    text(doc, "exception.message").map(|t| Value::String(t.into())),
                ),
                (
                    "stack_trace",
                    text(doc, "exception.trace").map(|t| Value::String(t.into())),
                ),
            ]),
        ),
        ("trace", trace.as_ref().map(|(t, _, _)| json!({ "id": t }))),
        (
            "span",
            trace.as_ref().map(|(_, span, _)| json!({ "id": span })),
        ),
        (
            "service",
            text(doc, "view.app").map(|a| json!({ "name": a })),
        ),
        ("host", host),
        ("process", process),
        (
            "audit",
            object([
                ("collection", s(crate::document::Collection::Access.name())),
                ("custom", custom(doc)),
                ("view", at(doc, "view").map(json)),
                ("process_id", id_hex(doc, "process").map(Value::String)),
                ("seal", sealed(ctx)),
            ]),
        ),
    ])
    .expect("an event has its time")
}

pub(super) fn model_action(doc: &Document, ctx: &Context<'_>) -> Value {
    let time = millis(doc, "timestamp").unwrap_or(0);
    let action = text(doc, "action");
    let model = text(doc, "model.full_name");
    let instance = at(doc, "instance.id").and_then(as_text);
    let (host, process) = host_and_process(ctx.process);
    object([
        ("@timestamp", rfc3339(time).map(Value::String)),
        ("ecs", Some(json!({ "version": ECS_VERSION }))),
        (
            "message",
            s(format!(
                "{} {} {}",
                action.unwrap_or("change"),
                model.unwrap_or("unknown"),
                instance.clone().unwrap_or_default()
            )),
        ),
        (
            "event",
            object([
                ("kind", s("event")),
                ("category", Some(json!(["database"]))),
                ("type", Some(json!(["change"]))),
                ("action", action.map(|a| Value::String(a.into()))),
                ("outcome", s("success")),
                ("dataset", s("audit_tools.model_action")),
                ("module", s("audit_tools")),
                ("id", id_hex(doc, "_id").map(Value::String)),
            ]),
        ),
        ("host", host),
        ("process", process),
        (
            "audit",
            object([
                (
                    "collection",
                    s(crate::document::Collection::ModelAction.name()),
                ),
                ("access_id", id_hex(doc, "access").map(Value::String)),
                ("model", at(doc, "model").map(json)),
                ("instance", at(doc, "instance").map(json)),
                ("changes", at(doc, "content.changes").map(json)),
                ("old", at(doc, "content.old").map(json)),
                ("new", at(doc, "content.new").map(json)),
                ("process_id", id_hex(doc, "process").map(Value::String)),
                ("seal", sealed(ctx)),
            ]),
        ),
    ])
    .expect("an event has its time")
}
