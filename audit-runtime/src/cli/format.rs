//! How records are printed: one table row each, or one JSON line each. Stored values come from clients, so whatever reaches a terminal is escaped first.

use super::Kind;
use bson::{Bson, Document};

/// One stored document as relaxed Extended JSON, on one line.
pub fn json_line(d: Document) -> String {
    Bson::Document(d).into_relaxed_extjson().to_string()
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
        Kind::ModelAction => format!(
            "{}  {:<30} {:<6} {:<10} {}",
            s("timestamp"),
            s("model.full_name"),
            s("action"),
            s("instance.id"),
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
