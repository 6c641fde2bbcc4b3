//! Degraded documents: what is stored when a record cannot be stored whole.
//!
//! An audit record is never dropped because one of its parts is unusable. When a record cannot be
//! encoded (a key with a NUL byte, say), the parts that cannot be encoded are replaced by a marker
//! naming them; when the store refuses a record for good (too large, a key the server rejects),
//! its free-form parts (bodies, parameters, custom data, snapshots) are replaced the same way.
//! What identifies the record (`_id`, path, view, user, times, process, status) is kept.
//!
//! A marker keeps the type of the part it replaces, so typed reads of the document still work: a
//! string part becomes the marker string, a sub-document becomes `{"not_stored": <marker>}` and
//! an array becomes `[<marker>]`. The marker text reads `<not stored: PART ... : REASON>`.

use super::{StoreError, StoreResult};
use crate::document::Collection;
use bson::{Bson, Document, RawDocumentBuf};

/// The key of the one-field document that stands for a sub-document that was not stored.
pub const MARKER_KEY: &str = "not_stored";

/// How many levels below the top are searched for the part that cannot be encoded: deep enough to
/// single out `request.GET`, `custom.<provider>`, `view.kwargs` or `content.new`, shallow enough
/// to stay cheap.
const DEPTH: usize = 2;

/// Longest reason kept in a marker (errors can quote the offending key or value).
const MAX_REASON: usize = 200;

/// The free-form parts of each collection's documents, trimmed when the store refuses a record.
fn bulky_parts(c: Collection) -> &'static [&'static str] {
    match c {
        Collection::Access => &[
            "request.GET",
            "request.POST",
            "request.COOKIES",
            "request.METADATA",
            "request.RAW_METADATA",
            "response.content",
            "custom",
            "view.args",
            "view.kwargs",
            "exception.message",
            "exception.trace",
        ],
        Collection::ModelAction => &[
            "content.old",
            "content.new",
            "content.changes",
            "instance.description",
        ],
        Collection::Process => &["name", "args"],
        // A seal is small and fixed in shape: it is never trimmed.
        Collection::Seal | Collection::Salt => &[],
    }
}

/// The marker standing for `original`, of the same BSON type where that matters to readers.
pub(crate) fn marker(original: &Bson, text: String) -> Bson {
    match original {
        Bson::Document(_) => {
            let mut d = Document::new();
            d.insert(MARKER_KEY, text);
            Bson::Document(d)
        }
        Bson::Array(_) => Bson::Array(vec![Bson::String(text)]),
        _ => Bson::String(text),
    }
}

fn reason(e: &dyn std::fmt::Display) -> String {
    let mut s = e.to_string().replace('\0', "\\0");
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Encodes one field alone: the error it would cause in the whole document, if any.
fn encode_field(key: &str, value: &Bson) -> Result<(), bson::ser::Error> {
    let mut d = Document::new();
    d.insert(key, value.clone());
    bson::to_vec(&d).map(|_| ())
}

/// Replaces, below `doc`, every part that cannot be encoded by a marker; returns the paths of the
/// parts replaced. `Err` when a key of `doc` itself cannot be encoded: only the caller can replace
/// it then.
fn degrade_fields(
    doc: &mut Document,
    prefix: &str,
    depth: usize,
    parts: &mut Vec<String>,
) -> Result<(), ()> {
    if doc.keys().any(|k| encode_field(k, &Bson::Null).is_err()) {
        return Err(());
    }
    for (k, v) in doc.iter_mut() {
        let Err(e) = encode_field(k, v) else { continue };
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if depth > 0 {
            if let Bson::Document(sub) = v {
                if degrade_fields(sub, &path, depth - 1, parts).is_ok()
                    && encode_field(k, v).is_ok()
                {
                    continue;
                }
            }
        }
        *v = marker(
            v,
            format!("<not stored: {path} could not be encoded: {}>", reason(&e)),
        );
        parts.push(path);
    }
    Ok(())
}

/// Encodes `value`; when that fails, encodes it with each part that cannot be encoded replaced by
/// a marker. Returns the document and the paths of the parts replaced (empty when it encoded
/// whole). `Err` only when even the degraded document cannot be encoded.
pub(crate) fn encode_or_degrade<T: serde::Serialize>(
    value: &T,
) -> StoreResult<(RawDocumentBuf, Vec<String>)> {
    let first = match super::encode(value) {
        Ok(doc) => return Ok((doc, Vec::new())),
        Err(e) => e,
    };
    let mut doc = bson::to_document(value).map_err(|_| first)?;
    let mut parts = Vec::new();
    degrade_fields(&mut doc, "", DEPTH, &mut parts)
        .map_err(|()| StoreError::Raw("a top-level key cannot be encoded".into()))?;
    Ok((super::encode(&doc)?, parts))
}

/// The record with its free-form parts replaced by markers that give `why` the store refused it.
/// Returns the trimmed document and the paths replaced (empty when there was nothing to trim).
pub(crate) fn trim_for_store(
    c: Collection,
    doc: &RawDocumentBuf,
    why: &StoreError,
) -> StoreResult<(RawDocumentBuf, Vec<String>)> {
    let mut d = doc
        .to_document()
        .map_err(|e| StoreError::Raw(e.to_string()))?;
    let mut parts = Vec::new();
    let why = reason(why);
    for path in bulky_parts(c) {
        let (parent, key) = match path.split_once('.') {
            Some((p, k)) => (Some(p), k),
            None => (None, *path),
        };
        let holder = match parent {
            Some(p) => match d.get_mut(p) {
                Some(Bson::Document(sub)) => sub,
                _ => continue,
            },
            None => &mut d,
        };
        let Some(v) = holder.get_mut(key) else {
            continue;
        };
        let empty = match v {
            Bson::Null => true,
            Bson::Document(x) => x.is_empty(),
            Bson::Array(x) => x.is_empty(),
            Bson::String(x) => x.is_empty(),
            _ => false,
        };
        if empty {
            continue;
        }
        *v = marker(
            v,
            format!("<not stored: {path} trimmed, the store refused the record: {why}>"),
        );
        parts.push((*path).to_owned());
    }
    Ok((super::encode(&d)?, parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn a_nul_key_is_replaced_by_a_marker_naming_its_part() {
        let d = doc! {
            "_id": 1,
            "request": { "path": "/x", "GET": { "a\0b": "v" }, "POST": { "k": "v" } },
        };
        assert!(super::super::encode(&d).is_err());
        let (raw, parts) = encode_or_degrade(&d).unwrap();
        assert_eq!(parts, ["request.GET"]);
        let back = raw.to_document().unwrap();
        let req = back.get_document("request").unwrap();
        let marker = req
            .get_document("GET")
            .unwrap()
            .get_str(MARKER_KEY)
            .unwrap();
        assert!(
            marker.starts_with("<not stored: request.GET could not be encoded"),
            "{marker}"
        );
        assert_eq!(req.get_document("POST").unwrap(), &doc! { "k": "v" });
        assert_eq!(req.get_str("path").unwrap(), "/x");
    }

    #[test]
    fn trimming_keeps_what_identifies_the_record() {
        let d = doc! {
            "_id": 1,
            "request": { "path": "/x", "POST": { "big": "v" }, "GET": {} },
            "response": { "content": "body", "status_code": 200 },
        };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        let why = StoreError::Raw("refused".into());
        let (trimmed, parts) = trim_for_store(Collection::Access, &raw, &why).unwrap();
        assert_eq!(parts, ["request.POST", "response.content"]);
        let back = trimmed.to_document().unwrap();
        assert_eq!(
            back.get_document("request")
                .unwrap()
                .get_str("path")
                .unwrap(),
            "/x"
        );
        let content = back
            .get_document("response")
            .unwrap()
            .get_str("content")
            .unwrap();
        assert!(content.contains("response.content trimmed"), "{content}");
        assert_eq!(
            back.get_document("response")
                .unwrap()
                .get_i32("status_code")
                .unwrap(),
            200
        );
    }
}
