//! Checks of events against the schemas a SIEM reads: OCSF 1.6 (the classes' JSON Schema, vendored
//! in `tests/data/ocsf-1.6.0`) and ECS 8.17 (its field reference, `tests/data/ecs-8.17.0`).

use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

fn validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/data/ocsf-1.6.0/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema: Value = serde_json::from_str(&text).expect("a JSON schema");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{path} does not build: {e}"))
}

/// Holds an OCSF event against its class's JSON Schema, and checks what a schema cannot say:
/// `type_uid` is `class_uid * 100 + activity_id`, the captions match their ids, `time` is in
/// milliseconds, and `metadata.profiles` names every profile whose attributes the event has.
pub fn check_ocsf(event: &Value) {
    static API: OnceLock<jsonschema::Validator> = OnceLock::new();
    static ENTITY: OnceLock<jsonschema::Validator> = OnceLock::new();
    let class = event["class_uid"].as_i64().expect("class_uid");
    let v = match class {
        6003 => API.get_or_init(|| validator("api_activity.datetime_host_trace.schema.json")),
        3004 => ENTITY.get_or_init(|| validator("entity_management.datetime_host.schema.json")),
        other => panic!("unexpected class {other}"),
    };
    let errors: Vec<String> = v
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{event:#}");
    let activity = event["activity_id"].as_i64().unwrap();
    assert_eq!(event["type_uid"].as_i64(), Some(class * 100 + activity));
    let caption = event["activity_name"].as_str().unwrap();
    assert_eq!(
        event["type_name"].as_str().unwrap(),
        format!("{}: {caption}", event["class_name"].as_str().unwrap())
    );
    let expected_caption = match (class, activity) {
        (_, 0) => "Unknown",
        (_, 1) => "Create",
        (_, 2) => "Read",
        (_, 3) => "Update",
        (_, 4) => "Delete",
        (_, 99) => "Other",
        _ => panic!("activity {activity}"),
    };
    assert_eq!(caption, expected_caption);
    let severity = match event["severity_id"].as_i64().unwrap() {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        other => panic!("severity {other}"),
    };
    assert_eq!(event["severity"], severity);
    if let Some(status) = event["status_id"].as_i64() {
        let caption = ["Unknown", "Success", "Failure"][status as usize];
        assert_eq!(event["status"], caption);
    }
    assert!(
        event["time"].as_i64().unwrap() > 1_000_000_000_000,
        "time in milliseconds"
    );
    let profiles: Vec<&str> = event["metadata"]["profiles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(event.get("device").is_some(), profiles.contains(&"host"));
    assert_eq!(event.get("trace").is_some(), profiles.contains(&"trace"));
    assert_eq!(event["metadata"]["version"], "1.6.0");
}

/// One field of the ECS reference: its type and whether it is an array.
struct Field {
    kind: String,
    array: bool,
}

/// `fields.csv`: every ECS field, by dotted name.
fn ecs_fields() -> &'static HashMap<String, Field> {
    static FIELDS: OnceLock<HashMap<String, Field>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let path = format!("{}/data/ecs-8.17.0/fields.csv", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = HashMap::new();
        for line in text.lines().skip(1) {
            let cells = csv_cells(line);
            // ECS_Version,Indexed,Field_Set,Field,Type,Level,Normalization,Example,Description
            out.insert(
                cells[3].clone(),
                Field {
                    kind: cells[4].clone(),
                    array: cells[6].contains("array"),
                },
            );
        }
        out
    })
}

/// The cells of one CSV line (quoted cells may hold commas and doubled quotes).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

/// The values ECS allows for the categorisation fields (`ecs_flat.yml` of 8.17.0), and for each
/// category the event types it expects.
fn allowed(field: &str) -> &'static [&'static str] {
    match field {
        "event.kind" => &[
            "alert",
            "asset",
            "enrichment",
            "event",
            "metric",
            "state",
            "pipeline_error",
            "signal",
        ],
        "event.outcome" => &["failure", "success", "unknown"],
        "web" => &["access", "error", "info"],
        "database" => &["access", "change", "info", "error"],
        _ => &[],
    }
}

/// Holds an ECS document against the field reference: every field is an ECS field (except under
/// `audit.`, the documented custom namespace) of a compatible type; arrays where ECS says so;
/// the categorisation fields within their allowed values; `@timestamp` and `ecs.version` there.
pub fn check_ecs(doc: &Value) {
    assert!(doc["@timestamp"].is_string(), "{doc:#}");
    assert_eq!(doc["ecs"]["version"], "8.17.0");
    let fields = ecs_fields();
    let mut leaves = Vec::new();
    flatten("", doc, &mut leaves);
    for (path, value) in leaves {
        if path.starts_with("audit.") || path == "audit" {
            continue;
        }
        let field = fields
            .get(&path)
            .unwrap_or_else(|| panic!("`{path}` is not an ECS 8.17 field\n{doc:#}"));
        let values: Vec<&Value> = match value {
            Value::Array(a) => {
                assert!(field.array, "`{path}` is not an array field");
                a.iter().collect()
            }
            v => {
                assert!(!field.array, "`{path}` must be an array");
                vec![v]
            }
        };
        for v in values {
            let ok = match field.kind.as_str() {
                "keyword" | "wildcard" | "match_only_text" | "text" | "constant_keyword" => {
                    v.is_string()
                }
                "long" | "integer" | "short" | "byte" => v.is_i64() || v.is_u64(),
                "float" | "double" | "scaled_float" => v.is_number(),
                "boolean" => v.is_boolean(),
                "date" => v
                    .as_str()
                    .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
                "ip" => v
                    .as_str()
                    .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
                other => panic!("`{path}`: type {other} not expected here"),
            };
            assert!(ok, "`{path}` = {v} is not a {}", field.kind);
        }
    }
    for f in ["event.kind", "event.outcome"] {
        let mut p = f.split('.');
        let v = &doc[p.next().unwrap()][p.next().unwrap()];
        if let Some(v) = v.as_str() {
            assert!(allowed(f).contains(&v), "{f} = {v}");
        }
    }
    for category in doc["event"]["category"].as_array().into_iter().flatten() {
        let expected = allowed(category.as_str().unwrap());
        assert!(!expected.is_empty(), "category {category}");
        for t in doc["event"]["type"].as_array().into_iter().flatten() {
            assert!(
                expected.contains(&t.as_str().unwrap()),
                "event.type {t} with event.category {category}"
            );
        }
    }
}

fn flatten<'a>(prefix: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // The custom namespace holds whatever the trail holds.
                if p == "audit" {
                    continue;
                }
                flatten(&p, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other)),
    }
}
