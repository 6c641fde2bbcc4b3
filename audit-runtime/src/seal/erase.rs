//! Erasure of a person's data (the right to erasure), stated in `erasure` seals so that the trail
//! still verifies and any other edit is still caught.
//!
//! What goes: in each access of the subject, every value under the `erase_fields` paths (by
//! default everything but what says what was done: query and form values, headers, cookies,
//! bodies, response content, custom data, exception messages and traces, URL parameters), the
//! user name, and then — in those accesses and in the model actions they caused — every string
//! and key that contains one of the subject's recorded user names. What stays is
//! [`ERASURE_KEEPS`]: the ids, the path, the method, the view, the status and content type, the
//! exception type and the times. Values are replaced by [`TOMBSTONE`] leaf by leaf, so each
//! document keeps its shape and still reads as an `Access` or a `ModelAction`.
//!
//! What else goes: the salt of each erased record's commitment. A seal's commitment to the
//! original record is the SHA-256 of that salt and the original bytes; without the salt, no guess
//! of what the record held can be tested against it. On SQLite the erasure runs with
//! `secure_delete` on and ends with a checkpoint of the write-ahead log, so the old values do not
//! linger in free pages or in the `-wal` file.
//!
//! The subject is found by the stored bytes (`user.id` exactly as stored: the integer 23 is not
//! the string "23"), never by a copy of them that an index column holds.

use super::{commitment, salt_of, sha256, signing_key_for, SealError, Sealer};
use crate::document::Collection;
use crate::store::{Filter, Store};
use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawDocumentBuf};
use std::collections::{HashMap, HashSet};

/// What replaces erased personal data.
pub const TOMBSTONE: &str = "<erased>";

/// What an erasure keeps of each access: what was done, when, through which view, and its ids.
/// A path listed in `erase_fields` itself is erased all the same (that is how the list widens
/// the erasure); these are only kept when they lie inside a wider path that is erased
/// (`request.METADATA.REQUEST_METHOD` inside `request.METADATA`).
pub const ERASURE_KEEPS: &[&str] = &[
    "_id",
    "interlink_id",
    "request.path",
    "request.METADATA.REQUEST_METHOD",
    "response.status_code",
    "response.type",
    "exception.type",
    "time.request",
    "time.response",
    "view.full_name",
    "view.app",
    "view.name",
    "user.id",
    "process",
];

/// Records changed per erasure seal.
const CHUNK: usize = 500;
/// Accesses whose model actions are looked for in one query.
const ACCESS_IDS_PER_QUERY: usize = 5_000;

/// What an erasure changed (or, with `dry_run`, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Erasure {
    /// Accesses of the user changed.
    pub accesses: u64,
    /// Model actions of those accesses changed.
    pub model_actions: u64,
    /// False when the old values may still be in the store's files: the SQLite write-ahead log
    /// could not be checkpointed (another connection was reading). Always true on MongoDB, whose
    /// server keeps its own copies (see the README).
    pub files_clean: bool,
    /// Records found by their bytes that could not be replaced: no row holds those bytes any
    /// more (changed meanwhile). Their salt is kept; `audit verify` tells what happened.
    pub failed: u64,
}

/// Replaces the personal data of the user `user_id` (compared exactly as stored) with
/// [`TOMBSTONE`] (see the module documentation for what goes and what stays). Each chunk of
/// changes is first stated in an `erasure` seal (each record's old and new commitment), then
/// applied, so `verify` accepts exactly these changes and still catches any other edit; a crash
/// in between leaves records that still match their old commitment, which verifies clean too,
/// and running the erasure again finishes it. On a signed trail without the key it refuses before
/// changing anything.
pub async fn erase_user(
    store: &Store,
    config: &crate::AuditConfig,
    user_id: &Bson,
    dry_run: bool,
) -> Result<Erasure, SealError> {
    let mut sealer = if dry_run {
        None
    } else {
        let key = signing_key_for(store, config).await?;
        config.seal.then(|| Sealer::new(ObjectId::new(), key))
    };
    let paths: Vec<&str> = std::iter::once("user.username")
        .chain(config.erase_fields.iter().map(String::as_str))
        .collect();

    // The subject's accesses, found by their bytes, and the names they were recorded under.
    let mut accesses = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    store
        .for_each_stored(
            Collection::Access,
            &Filter::eq("user.id", user_id.clone()),
            CHUNK as u64,
            |docs| {
                for d in docs {
                    if let Ok(Some(name)) =
                        d.get_document("user").map(|u| u.get_str("username").ok())
                    {
                        if !name.is_empty() && name != TOMBSTONE {
                            names.insert(name.to_lowercase());
                        }
                    }
                    accesses.push(d);
                }
                Ok(())
            },
        )
        .await?;
    let names: Vec<String> = names.into_iter().collect();
    let access_ids: Vec<Bson> = accesses
        .iter()
        .filter_map(|d| d.get("_id").ok().flatten())
        .filter_map(|id| Bson::try_from(id.to_raw_bson()).ok())
        .collect();

    let mut report = Erasure {
        files_clean: true,
        ..Erasure::default()
    };
    if !dry_run {
        store.begin_erasure().await?;
    }
    let mut untouched = Vec::new();
    for docs in accesses.chunks(CHUNK) {
        let (n, same) = erase_chunk(
            store,
            sealer.as_mut(),
            Collection::Access,
            docs,
            &paths,
            &names,
            dry_run,
        )
        .await?;
        report.accesses += n.changed;
        report.failed += n.failed;
        untouched.extend(same);
    }
    for ids in access_ids.chunks(ACCESS_IDS_PER_QUERY) {
        let mut actions = Vec::new();
        store
            .for_each_stored(
                Collection::ModelAction,
                &Filter::In("access".into(), ids.to_vec()),
                CHUNK as u64,
                |docs| {
                    actions.push(docs);
                    Ok(())
                },
            )
            .await?;
        for docs in actions {
            let (n, same) = erase_chunk(
                store,
                sealer.as_mut(),
                Collection::ModelAction,
                &docs,
                &paths,
                &names,
                dry_run,
            )
            .await?;
            report.model_actions += n.changed;
            report.failed += n.failed;
            untouched.extend(same);
        }
    }
    if !dry_run {
        finish_interrupted(store, &untouched).await?;
        report.files_clean = store.finish_erasure().await?;
    }
    Ok(report)
}

/// How many records of a chunk changed, and how many could not be.
struct Changed {
    changed: u64,
    failed: u64,
}

/// Erases one chunk of records; returns how many changed, and the `(collection, _id, bytes)` of
/// those that needed no change (already erased, or nothing to erase).
async fn erase_chunk(
    store: &Store,
    sealer: Option<&mut Sealer>,
    c: Collection,
    docs: &[RawDocumentBuf],
    paths: &[&str],
    names: &[String],
    dry_run: bool,
) -> Result<(Changed, Vec<(Collection, Bson, RawDocumentBuf)>), SealError> {
    let mut changed = Vec::new();
    let mut same = Vec::new();
    for old in docs {
        let Ok(mut doc) = old.to_document() else {
            continue;
        };
        let Some(id) = doc.get("_id").cloned() else {
            continue;
        };
        let before = doc.clone();
        for path in paths {
            blank_path(&mut doc, path);
        }
        scrub(&mut doc, names, "");
        if doc == before {
            same.push((c, id, old.clone()));
            continue;
        }
        let new = RawDocumentBuf::from_document(&doc)
            .map_err(|e| SealError::Unencodable(e.to_string()))?;
        changed.push((id, old, new));
    }
    let n = changed.len() as u64;
    if dry_run || changed.is_empty() {
        return Ok((
            Changed {
                changed: n,
                failed: 0,
            },
            same,
        ));
    }
    let ids: Vec<Bson> = changed.iter().map(|(id, _, _)| id.clone()).collect();
    let salts = salts_of(store, &ids).await?;
    if let Some(sealer) = sealer {
        let changes: Vec<Bson> = changed
            .iter()
            .map(|(id, old, new)| {
                let salt = salts.get(&id_key(id)).map(Vec::as_slice);
                Bson::Document(doc! {
                    "c": c.name(),
                    "id": id.clone(),
                    "old": super::keys::hex(&commitment(salt, old.as_bytes())),
                    // What an erasure leaves holds nothing to guess: no salt.
                    "new": super::keys::hex(&sha256(new.as_bytes())),
                })
            })
            .collect();
        let seal = sealer.seal("erasure", doc! { "changes": changes })?;
        store
            .insert_raw_documents(Collection::Seal, vec![seal])
            .await?;
    }
    let mut failed = 0;
    for (id, old, new) in changed {
        if !store.replace_stored(c, old, new).await? {
            failed += 1;
            tracing::error!(target: "audit", collection = %c, id = %id,
                "a record to erase could not be replaced: no row holds its bytes any more");
            continue;
        }
        // Only once the record holds its new bytes: until then its old state must still verify.
        store
            .delete_many(Collection::Salt, &Filter::Eq("_id".into(), id))
            .await?;
    }
    Ok((
        Changed {
            changed: n - failed,
            failed,
        },
        same,
    ))
}

/// Finishes an erasure that a crash interrupted between replacing a record and destroying its
/// salt: a record needing no change now, whose salt is still stored, and whose bytes are the
/// new state of an erasure seal, loses its salt. (A record that never held anything to erase
/// keeps its salt: no erasure seal names its bytes.)
async fn finish_interrupted(
    store: &Store,
    untouched: &[(Collection, Bson, RawDocumentBuf)],
) -> Result<(), SealError> {
    if untouched.is_empty() {
        return Ok(());
    }
    let ids: Vec<Bson> = untouched.iter().map(|(_, id, _)| id.clone()).collect();
    let mut salted = HashSet::new();
    for chunk in ids.chunks(ACCESS_IDS_PER_QUERY) {
        salted.extend(salts_of(store, chunk).await?.into_keys());
    }
    let pending: Vec<_> = untouched
        .iter()
        .filter(|(_, id, _)| salted.contains(&id_key(id)))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut erased_states = HashSet::new();
    store
        .for_each_stored(
            Collection::Seal,
            &Filter::eq("kind", "erasure"),
            100,
            |seals| {
                for s in seals {
                    let changes = s.get_array("changes").ok().into_iter().flatten().flatten();
                    for ch in changes {
                        let Some(ch) = ch.as_document() else { continue };
                        if let (Ok(c), Ok(new), Ok(Some(id))) =
                            (ch.get_str("c"), ch.get_str("new"), ch.get("id"))
                        {
                            if let Ok(id) = Bson::try_from(id.to_raw_bson()) {
                                erased_states.insert((c.to_owned(), id_key(&id), new.to_owned()));
                            }
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
    for (c, id, bytes) in pending {
        let state = (
            c.name().to_owned(),
            id_key(id),
            super::sha256_hex(bytes.as_bytes()),
        );
        if erased_states.contains(&state) {
            store
                .delete_many(Collection::Salt, &Filter::Eq("_id".into(), id.clone()))
                .await?;
        }
    }
    Ok(())
}

/// The salts stored for `ids`, by id.
async fn salts_of(store: &Store, ids: &[Bson]) -> Result<HashMap<String, Vec<u8>>, SealError> {
    let mut out = HashMap::new();
    store
        .for_each_raw_batch(
            Collection::Salt,
            &Filter::In("_id".into(), ids.to_vec()),
            1000,
            |docs| {
                for d in docs {
                    if let (Ok(Some(id)), Some(salt)) = (d.get("_id"), salt_of(&d)) {
                        if let Ok(id) = Bson::try_from(id.to_raw_bson()) {
                            out.insert(id_key(&id), salt.to_vec());
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
    Ok(out)
}

fn id_key(id: &Bson) -> String {
    match id {
        Bson::ObjectId(o) => o.to_hex(),
        other => other.clone().into_relaxed_extjson().to_string(),
    }
}

/// Erases every value at `path` (dotted), leaf by leaf, but the [`ERASURE_KEEPS`] paths inside
/// it.
fn blank_path(doc: &mut Document, path: &str) {
    let mut cur = doc;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            if let Some(v) = cur.get_mut(p) {
                blank(v, path, path);
            }
            return;
        }
        match cur.get_mut(p) {
            Some(Bson::Document(d)) => cur = d,
            _ => return,
        }
    }
}

/// Replaces every leaf of `v` (at dotted path `at`, under the erased path `root`) by the
/// tombstone; nulls (nothing recorded) stay null.
fn blank(v: &mut Bson, at: &str, root: &str) {
    if at != root && at.starts_with(root) && ERASURE_KEEPS.contains(&at) {
        return;
    }
    match v {
        Bson::Document(d) => {
            for (k, child) in d.iter_mut() {
                blank(child, &format!("{at}.{k}"), root);
            }
        }
        Bson::Array(items) => {
            for child in items {
                blank(child, at, root);
            }
        }
        Bson::Null => {}
        Bson::String(s) if s == TOMBSTONE => {}
        other => *other = Bson::String(TOMBSTONE.into()),
    }
}

/// Replaces every string of `doc` that contains one of `names` (compared in lower case), and
/// renames every key that does; the user id is what the erasure was asked by and stays.
fn scrub(doc: &mut Document, names: &[String], at: &str) {
    if names.is_empty() {
        return;
    }
    let holds = |s: &str| {
        let lower = s.to_lowercase();
        names.iter().any(|n| lower.contains(n.as_str()))
    };
    let keys: Vec<String> = doc.keys().cloned().collect();
    let mut renamed = 0;
    for k in keys {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        if path == "user.id" {
            continue;
        }
        let Some(mut v) = doc.remove(&k) else {
            continue;
        };
        scrub_value(&mut v, names, &path, &holds);
        let key = if holds(&k) {
            loop {
                renamed += 1;
                let candidate = if renamed == 1 {
                    TOMBSTONE.to_owned()
                } else {
                    format!("{TOMBSTONE}{renamed}")
                };
                if !doc.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else {
            k
        };
        doc.insert(key, v);
    }
}

fn scrub_value(v: &mut Bson, names: &[String], at: &str, holds: &dyn Fn(&str) -> bool) {
    match v {
        Bson::Document(d) => scrub(d, names, at),
        Bson::Array(items) => {
            for item in items {
                scrub_value(item, names, at, holds);
            }
        }
        Bson::String(s) if holds(s) => *s = TOMBSTONE.into(),
        Bson::Symbol(s) | Bson::JavaScriptCode(s) if holds(s) => {
            *v = Bson::String(TOMBSTONE.into())
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_leaf_by_leaf_and_what_was_done_stays() {
        let mut d = doc! {
            "request": {
                "path": "/orders/7",
                "GET": { "q": "shoes", "ids": [1, 2] },
                "METADATA": { "REQUEST_METHOD": "GET", "HTTP_USER_AGENT": "Firefox" },
            },
            "response": { "content": { "total": 3 }, "status_code": 200, "type": "application/json" },
            "user": { "id": 42, "username": "erin" },
            "custom": Bson::Null,
        };
        for p in [
            "user.username",
            "request.GET",
            "request.METADATA",
            "response.content",
            "custom",
        ] {
            blank_path(&mut d, p);
        }
        assert_eq!(
            d,
            doc! {
                "request": {
                    "path": "/orders/7",
                    "GET": { "q": TOMBSTONE, "ids": [TOMBSTONE, TOMBSTONE] },
                    "METADATA": { "REQUEST_METHOD": "GET", "HTTP_USER_AGENT": TOMBSTONE },
                },
                "response": { "content": { "total": TOMBSTONE }, "status_code": 200, "type": "application/json" },
                "user": { "id": 42, "username": TOMBSTONE },
                "custom": Bson::Null,
            }
        );
        // A kept path named itself is erased: that is how `erase_fields` widens the erasure.
        blank_path(&mut d, "request.path");
        assert_eq!(
            d.get_document("request").unwrap().get_str("path").unwrap(),
            TOMBSTONE
        );
    }

    #[test]
    fn strings_and_keys_holding_the_name_go_in_any_case() {
        let mut d = doc! {
            "request": { "path": "/users/Erin-Smith/", "GET": { "erin-smith@example.com": "1" } },
            "content": { "new": { "title": "Lunch with ERIN-SMITH", "n": 3 } },
            "user": { "id": "erin-smith", "username": "x" },
        };
        scrub(&mut d, &["erin-smith".into()], "");
        assert_eq!(
            d,
            doc! {
                "request": { "path": TOMBSTONE, "GET": { TOMBSTONE: "1" } },
                "content": { "new": { "title": TOMBSTONE, "n": 3 } },
                "user": { "id": "erin-smith", "username": "x" },
            }
        );
    }
}
