//! How records are printed: one table row each, one JSON line each, or one whole document as
//! pretty JSON. Stored values come from clients, so whatever reaches a terminal is escaped first.

use super::Kind;
use bson::{Bson, Document};

/// One stored document as relaxed Extended JSON, on one line.
pub fn json_line(d: Document) -> String {
    Bson::Document(d).into_relaxed_extjson().to_string()
}

/// One stored document as relaxed Extended JSON, indented, safe for a terminal: characters
/// that JSON leaves as they are but a terminal acts on (DEL, the C1 controls, the bidirectional
/// overrides) are written as `\uXXXX` escapes, which parse back to the same string.
pub(super) fn pretty_json(d: Document) -> String {
    let value = Bson::Document(d).into_relaxed_extjson();
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    // serde_json escapes the controls below U+0020 inside strings: a raw line break is layout.
    let in_string = |c: char| c != '\n' && unsafe_char(c);
    if !text.contains(in_string) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if in_string(c) {
            // Outside strings JSON text is plain ASCII, so every such character is inside one,
            // where a `\u` escape is valid (all of them are in the first plane).
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A character a terminal may act on instead of showing.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A stored value made safe to print on a terminal: the values come from clients (a path, a user
/// name), so a line break in one would forge a row of the table and an escape sequence would
/// drive the terminal. Control characters, the bidirectional overrides that reorder what is
/// shown, and the backslash (so the escaping stays unambiguous) are written as Rust escapes.
pub fn escape_for_terminal(s: &str) -> String {
    let escaped = |c: char| unsafe_char(c) || c == '\\';
    if !s.contains(escaped) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One record as a row of the table `list` prints.
pub(super) fn table_row(kind: Kind, d: &Document) -> String {
    let s = |path: &str| -> String {
        let mut cur = Some(Bson::Document(d.clone()));
        for seg in path.split('.') {
            cur = match cur {
                Some(Bson::Document(doc)) => doc.get(seg).cloned(),
                _ => None,
            };
        }
        let text = match cur {
            Some(Bson::String(s)) => s,
            Some(Bson::DateTime(t)) => t.to_chrono().format("%Y-%m-%d %H:%M:%S").to_string(),
            Some(Bson::ObjectId(id)) => id.to_hex(),
            Some(Bson::Null) | None => "-".into(),
            Some(Bson::Document(doc)) => doc.keys().cloned().collect::<Vec<_>>().join(","),
            Some(other) => other.to_string(),
        };
        escape_for_terminal(&text)
    };
    match kind {
        Kind::Access => format!(
            "{}  {:<12} {:<6} {:<40} {:<4} {}{}",
            s("time.request"),
            s("user.username"),
            s("request.METADATA.REQUEST_METHOD"),
            s("request.path"),
            s("response.status_code"),
            s("view.full_name"),
            if d.contains_key("exception") {
                format!("  !{}", s("exception.type"))
            } else {
                String::new()
            }
        ),
        // The access id leads from a model action to the request that caused it
        // (`audit access show ID`); `-` for one made outside a request.
        Kind::ModelAction => format!(
            "{}  {:<30} {:<6} {:<10} access {:<24} {}",
            s("timestamp"),
            s("model.full_name"),
            s("action"),
            s("instance.id"),
            s("access"),
            s("content.changes")
        ),
        Kind::Process => format!(
            "{}  {:<20} pid {:<8} {:<12} {}",
            s("creation_time"),
            s("name"),
            s("pid"),
            s("user"),
            s("machine")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn pretty_json_escapes_what_a_terminal_acts_on_and_parses_back() {
        let name = "mallory\u{1b}[2J\u{202e}\u{9b}\u{7f}evil\n\u{1F600}";
        let text = pretty_json(doc! { "user": { "username": name } });
        assert!(
            !text.contains(['\u{1b}', '\u{202e}', '\u{9b}', '\u{7f}']),
            "{text}"
        );
        assert!(
            text.contains("\\u202e") && text.contains("\\u009b"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["user"]["username"], name);
        assert!(text.contains('\n'), "indented: {text}");
    }

    #[test]
    fn model_action_rows_show_the_access_id() {
        let access = bson::oid::ObjectId::new();
        let row = table_row(
            Kind::ModelAction,
            &doc! { "model": { "full_name": "demo::Poll" }, "action": "update",
            "instance": { "id": "7" }, "access": access,
            "content": { "changes": { "question": 1 } } },
        );
        assert!(
            row.contains(&format!("access {}", access.to_hex())),
            "{row}"
        );
        assert!(row.ends_with("question"), "{row}");
        let outside = table_row(Kind::ModelAction, &doc! { "action": "create" });
        assert!(outside.contains("access - "), "{outside}");
    }
}
