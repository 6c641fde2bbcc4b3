//! Key escaping for stored maps. MongoDB keys may not contain `.` nor start with `$`, and the
//! original replaced both with `_`, so `a.b` and `a_b` collided and one value was silently lost.
//!
//! Here the escape is reversible and collision-free: `%` becomes `%25`, `.` becomes `%2E`, `$`
//! becomes `%24` and NUL becomes `%00` (percent-encoding of just those four: BSON keys are
//! NUL-terminated, so a NUL in a key would make the whole record fail to encode), applied
//! recursively to nested documents and arrays. Keys without those characters are stored as they
//! are.

use bson::{Bson, Document};
use std::borrow::Cow;

/// Escapes one key.
pub fn escape_key(k: &str) -> String {
    escape_key_cow(k).into_owned()
}

/// The characters [`escape_key`] escapes.
const ESCAPED: [char; 4] = ['.', '$', '%', '\0'];

/// True when `k` is not stored as it is.
pub fn needs_key_escape(k: &str) -> bool {
    k.contains(ESCAPED)
}

fn escape_key_cow(k: &str) -> Cow<'_, str> {
    if !needs_key_escape(k) {
        return Cow::Borrowed(k);
    }
    let mut out = String::with_capacity(k.len() + 6);
    for c in k.chars() {
        match c {
            '%' => out.push_str("%25"),
            '.' => out.push_str("%2E"),
            '$' => out.push_str("%24"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Reverses [`escape_key`] (one pass, so an escaped `%25` followed by `2E` stays `%2E`).
pub fn unescape_key(k: &str) -> String {
    if !k.contains('%') {
        return k.to_owned();
    }
    let mut out = String::with_capacity(k.len());
    let mut rest = k;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        let c = match code {
            Some("25") => Some('%'),
            Some("2E") => Some('.'),
            Some("24") => Some('$'),
            Some("00") => Some('\0'),
            _ => None,
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes every key of `doc`, recursively, without recursion on the call stack (so a document
/// nested 100,000 deep cannot overflow it).
pub fn escape_document(doc: Document) -> Document {
    match escape_value(Bson::Document(doc)) {
        Bson::Document(d) => d,
        _ => Document::new(),
    }
}

/// Escapes every key inside `value`, recursively (iteratively).
pub fn escape_value(value: Bson) -> Bson {
    // Fast path: nothing to escape (the common case) means no rebuild.
    if !needs_escape(&value) {
        return value;
    }
    enum Frame {
        Doc(std::vec::IntoIter<(String, Bson)>, Document, Option<String>),
        Arr(std::vec::IntoIter<Bson>, Vec<Bson>, Option<String>),
    }
    enum Opened {
        Container(Frame),
        Leaf(Option<String>, Box<Bson>),
    }
    fn open(v: Bson, key: Option<String>) -> Opened {
        match v {
            Bson::Document(d) => Opened::Container(Frame::Doc(
                d.into_iter().collect::<Vec<_>>().into_iter(),
                Document::new(),
                key,
            )),
            Bson::Array(a) => Opened::Container(Frame::Arr(a.into_iter(), Vec::new(), key)),
            other => Opened::Leaf(key, Box::new(other)),
        }
    }
    let mut stack = match open(value, None) {
        Opened::Container(f) => vec![f],
        Opened::Leaf(_, v) => return *v,
    };
    loop {
        let top = stack.last_mut().expect("stack is never empty here");
        let next = match top {
            Frame::Doc(it, _, _) => it.next().map(|(k, v)| (Some(escape_key(&k)), v)),
            Frame::Arr(it, _, _) => it.next().map(|v| (None, v)),
        };
        match next {
            Some((key, v)) => match open(v, key) {
                Opened::Container(frame) => stack.push(frame),
                Opened::Leaf(key, leaf) => {
                    push_child(stack.last_mut().expect("non-empty"), key, *leaf)
                }
            },
            None => {
                let (done, key) = match stack.pop().expect("non-empty") {
                    Frame::Doc(_, d, k) => (Bson::Document(d), k),
                    Frame::Arr(_, a, k) => (Bson::Array(a), k),
                };
                match stack.last_mut() {
                    Some(parent) => push_child(parent, key, done),
                    None => return done,
                }
            }
        }
    }
    fn push_child(parent: &mut Frame, key: Option<String>, v: Bson) {
        match parent {
            Frame::Doc(_, d, _) => {
                d.insert(key.unwrap_or_default(), v);
            }
            Frame::Arr(_, a, _) => a.push(v),
        }
    }
}

fn needs_escape(v: &Bson) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Bson::Document(d) => {
                for (k, v) in d {
                    if needs_key_escape(k) {
                        return true;
                    }
                    stack.push(v);
                }
            }
            Bson::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_literal_escapes_round_trip() {
        for k in [
            "a\0b", "%2E", "%25", "%00", "%", "a.b$c", "%252E", "\0\0", "%2", "é.%",
        ] {
            let e = escape_key(k);
            assert!(!e.contains(['.', '$', '\0']), "{e:?}");
            assert_eq!(unescape_key(&e), k, "{k:?} → {e:?}");
        }
        assert_eq!(escape_key("a\0b"), "a%00b");
        // A NUL key no longer makes the document fail to encode.
        let d = escape_document(bson::doc! { "x": { "a\0b": 1 } });
        assert!(bson::to_vec(&d).is_ok());
    }
}
