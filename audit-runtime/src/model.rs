//! What `#[derive(Audited)]` implements: a model's identity, its instance id and description, and a
//! typed BSON snapshot of its fields; plus the O(n) diff between two snapshots.
//!
//! Snapshots are built field by field through [`AuditValue`], never through `serde_json::Value`, so
//! they keep full precision and types: datetimes keep their time of day and zone, strings keep
//! their Unicode, decimals keep every digit (stored as their exact decimal string).

use crate::identity::ModelIdentity;
use bson::{doc, Bson, Document};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

/// What a masked value is stored as.
pub(crate) use crate::redact::MASK;

/// True when a field of this name is masked unless `#[audit(capture)]` says otherwise: the
/// decision of the one redaction policy ([`crate::redact`]), with its default settings.
pub(crate) fn is_secret_name(name: &str) -> bool {
    crate::redact::is_secret_name(name)
}

/// A field of a derived model, pushed by generated code: masked when `mask` is set or the policy
/// says one of its names (the Rust name, the stored name) is a secret — decided once per field,
/// `decided` being a `static` of the generated code — unless `capture` opts it back in.
pub fn field_value(
    decided: &'static std::sync::OnceLock<bool>,
    names: &[&str],
    mask: bool,
    capture: bool,
    value: Bson,
) -> Bson {
    let secret =
        mask || (!capture && *decided.get_or_init(|| names.iter().any(|n| is_secret_name(n))));
    if secret {
        mask_value(&value)
    } else {
        value
    }
}

/// A model whose create, update and delete actions can be recorded. Derive it.
pub trait Audited {
    /// The model's identity.
    const MODEL: ModelIdentity;
    /// The instance id as stored (`instance.id`), `None` for an instance without one.
    fn audit_id(&self) -> Option<String>;
    /// The instance's description (`instance.description`): its `Display`.
    fn audit_description(&self) -> String;
    /// The fields in declaration order, secrets masked, skipped fields left out.
    fn audit_snapshot(&self) -> Snapshot;
}

/// A snapshot of a model: its fields in declaration order, keyed by `'static` names.
///
/// It is what the diff runs on: two snapshots of one type have their fields in the same order, so
/// [`diff_snapshots`] compares them position by position with no key hashing and no key
/// allocation. It becomes a BSON [`Document`] once, for storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    fields: Vec<(&'static str, Bson)>,
}

impl Snapshot {
    /// An empty snapshot with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Snapshot {
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends a field (used by generated code, in declaration order).
    pub fn push(&mut self, key: &'static str, value: Bson) {
        self.fields.push((key, value));
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Bson> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Bson)> {
        self.fields.iter().map(|(k, v)| (*k, v))
    }

    /// The snapshot as a BSON document (field names escaped like every stored key: a
    /// `rename` may hold a `.` or a `$`).
    pub fn into_document(self) -> Document {
        self.fields
            .into_iter()
            .map(|(k, v)| (crate::keys::escape_key(k), v))
            .collect()
    }
}

/// The fields that differ between two snapshots: `(field, old, new)`, in field order. Becomes the
/// stored `changes` document (`{field: {old, new}}`) once, for storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    entries: Vec<(&'static str, Bson, Bson)>,
}

impl Changes {
    /// How many fields changed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The changed field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(k, _, _)| *k)
    }

    /// `{field: {old, new}}`.
    pub fn into_document(self) -> Document {
        self.entries
            .into_iter()
            .map(|(k, old, new)| {
                (
                    crate::keys::escape_key(k),
                    Bson::Document(doc! { "old": old, "new": new }),
                )
            })
            .collect()
    }
}

/// The changes between two snapshots (see [`diff`] for the rules): fields are compared position by
/// position, falling back to a lookup by name where the two do not line up (different types).
pub fn diff_snapshots(old: &Snapshot, new: &Snapshot) -> Changes {
    let mut changes = Changes::default();
    for (i, (k, ov)) in old.fields.iter().enumerate() {
        let nv = match new.fields.get(i) {
            Some((nk, nv)) if nk == k => Some(nv),
            _ => new.get(k),
        };
        match nv {
            Some(nv) if nv == ov => {}
            Some(nv) => changes.entries.push((k, ov.clone(), nv.clone())),
            None => changes.entries.push((k, ov.clone(), Bson::Null)),
        }
    }
    for (i, (k, nv)) in new.fields.iter().enumerate() {
        let in_old = matches!(old.fields.get(i), Some((ok, _)) if ok == k) || old.get(k).is_some();
        if !in_old {
            changes.entries.push((k, Bson::Null, nv.clone()));
        }
    }
    changes
}

/// A value that can appear in a snapshot.
pub trait AuditValue {
    /// The value as BSON, exactly (no lossy conversion).
    fn to_audit_bson(&self) -> Bson;
}

macro_rules! audit_value_via {
    ($($t:ty => |$v:ident| $e:expr;)*) => {
        $(impl AuditValue for $t {
            #[inline]
            fn to_audit_bson(&self) -> Bson {
                let $v = self;
                $e
            }
        })*
    };
}

audit_value_via! {
    bool => |v| Bson::Boolean(*v);
    i8 => |v| Bson::Int32((*v).into());
    i16 => |v| Bson::Int32((*v).into());
    i32 => |v| Bson::Int32(*v);
    i64 => |v| Bson::Int64(*v);
    u8 => |v| Bson::Int32((*v).into());
    u16 => |v| Bson::Int32((*v).into());
    u32 => |v| Bson::Int64((*v).into());
    u64 => |v| i64::try_from(*v).map(Bson::Int64).unwrap_or_else(|_| Bson::String(v.to_string()));
    usize => |v| i64::try_from(*v).map(Bson::Int64).unwrap_or_else(|_| Bson::String(v.to_string()));
    isize => |v| Bson::Int64(*v as i64);
    i128 => |v| i64::try_from(*v).map(Bson::Int64).unwrap_or_else(|_| Bson::String(v.to_string()));
    u128 => |v| i64::try_from(*v).map(Bson::Int64).unwrap_or_else(|_| Bson::String(v.to_string()));
    f32 => |v| Bson::Double((*v).into());
    f64 => |v| Bson::Double(*v);
    char => |v| Bson::String(v.to_string());
    String => |v| Bson::String(v.clone());
    str => |v| Bson::String(v.to_owned());
    // Keys inside free-form documents are escaped like every other stored key.
    Bson => |v| crate::keys::escape_value(v.clone());
    Document => |v| crate::keys::escape_value(Bson::Document(v.clone()));
    bson::oid::ObjectId => |v| Bson::ObjectId(*v);
    chrono::DateTime<chrono::Utc> => |v| Bson::DateTime(bson::DateTime::from_chrono(*v));
    // A zoned datetime keeps its instant and its offset.
    chrono::DateTime<chrono::FixedOffset> => |v| Bson::String(v.to_rfc3339());
    chrono::NaiveDateTime => |v| Bson::String(v.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
    chrono::NaiveDate => |v| Bson::String(v.format("%Y-%m-%d").to_string());
    chrono::NaiveTime => |v| Bson::String(v.format("%H:%M:%S%.f").to_string());
    std::path::PathBuf => |v| Bson::String(v.to_string_lossy().into_owned());
    std::net::IpAddr => |v| Bson::String(v.to_string());
    std::time::Duration => |v| Bson::Double(v.as_secs_f64());
}

#[cfg(feature = "decimal")]
impl AuditValue for rust_decimal::Decimal {
    /// The exact decimal string: no float loss.
    fn to_audit_bson(&self) -> Bson {
        Bson::String(self.to_string())
    }
}

#[cfg(feature = "uuid")]
impl AuditValue for uuid::Uuid {
    fn to_audit_bson(&self) -> Bson {
        Bson::String(self.hyphenated().to_string())
    }
}

impl<T: AuditValue + ?Sized> AuditValue for &T {
    fn to_audit_bson(&self) -> Bson {
        (**self).to_audit_bson()
    }
}

impl<T: AuditValue + ?Sized> AuditValue for Box<T> {
    fn to_audit_bson(&self) -> Bson {
        (**self).to_audit_bson()
    }
}

impl<T: AuditValue> AuditValue for Option<T> {
    fn to_audit_bson(&self) -> Bson {
        self.as_ref().map_or(Bson::Null, AuditValue::to_audit_bson)
    }
}

impl<T: AuditValue> AuditValue for Vec<T> {
    fn to_audit_bson(&self) -> Bson {
        Bson::Array(self.iter().map(AuditValue::to_audit_bson).collect())
    }
}

impl<T: AuditValue> AuditValue for [T] {
    fn to_audit_bson(&self) -> Bson {
        Bson::Array(self.iter().map(AuditValue::to_audit_bson).collect())
    }
}

impl<T: AuditValue + Ord> AuditValue for std::collections::BTreeSet<T> {
    fn to_audit_bson(&self) -> Bson {
        Bson::Array(self.iter().map(AuditValue::to_audit_bson).collect())
    }
}

impl<K: AsRef<str>, V: AuditValue> AuditValue for BTreeMap<K, V> {
    fn to_audit_bson(&self) -> Bson {
        Bson::Document(
            self.iter()
                .map(|(k, v)| (crate::keys::escape_key(k.as_ref()), v.to_audit_bson()))
                .collect(),
        )
    }
}

impl<K: AsRef<str>, V: AuditValue, S> AuditValue for HashMap<K, V, S> {
    fn to_audit_bson(&self) -> Bson {
        // Sorted, so equal maps give equal snapshots whatever their hashing order.
        let mut entries: Vec<_> = self
            .iter()
            .map(|(k, v)| (crate::keys::escape_key(k.as_ref()), v.to_audit_bson()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Bson::Document(entries.into_iter().collect())
    }
}

/// A value stored through its `Display` (for types from crates this one does not know, such as
/// UUIDs and decimals: both display exactly). Used by `#[audit(display)]`.
pub fn display_value<T: std::fmt::Display + ?Sized>(v: &T) -> Bson {
    Bson::String(v.to_string())
}

/// A value stored through its `Serialize` impl (`#[audit(serde)]`), its keys escaped like every
/// stored key; a value that does not serialise to BSON is stored as its error text rather than
/// failing the record.
pub fn serde_value<T: serde::Serialize + ?Sized>(v: &T) -> Bson {
    match bson::to_bson(v) {
        Ok(b) => crate::keys::escape_value(b),
        Err(e) => Bson::String(format!("<unserialisable: {e}>")),
    }
}

/// The marker that a masked value carries inside a snapshot: a fingerprint, keyed by a secret chosen
/// per process and never stored, so two snapshots taken in this process show whether the value
/// changed. [`finalize_masks`] turns every marker into [`MASK`] before anything is stored.
///
/// A user's string may start with the same prefix; it must not hide itself as a mask. So a marker
/// also carries a tag, a second keyed hash of the fingerprint, and only a string whose tag checks
/// out is a mask: anything else is stored as it is.
const MASK_MARKER: &str = "\u{0}audit-mask:";

fn mask_keys() -> &'static (
    std::collections::hash_map::RandomState,
    std::collections::hash_map::RandomState,
) {
    static KEYS: std::sync::OnceLock<(
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    )> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

fn mask_tag(fingerprint: u64) -> u64 {
    let mut h = mask_keys().1.build_hasher();
    h.write_u64(fingerprint);
    h.finish()
}

/// Masks a value: a per-process keyed fingerprint, replaced by [`MASK`] before storage.
pub(crate) fn mask_value(v: &Bson) -> Bson {
    let mut h = mask_keys().0.build_hasher();
    let mut bytes = Vec::new();
    // A document wrapper makes every BSON value serialisable; failure cannot happen for owned values.
    let _ = doc! { "v": v.clone() }.to_writer(&mut bytes);
    h.write(&bytes);
    let fingerprint = h.finish();
    Bson::String(format!(
        "{MASK_MARKER}{fingerprint:016x}{:016x}",
        mask_tag(fingerprint)
    ))
}

fn is_mask_marker(v: &Bson) -> bool {
    let Bson::String(s) = v else {
        return false;
    };
    let Some(hex) = s.strip_prefix(MASK_MARKER) else {
        return false;
    };
    if hex.len() != 32 {
        return false;
    }
    match (
        u64::from_str_radix(&hex[..16], 16),
        u64::from_str_radix(&hex[16..], 16),
    ) {
        (Ok(fingerprint), Ok(tag)) => mask_tag(fingerprint) == tag,
        _ => false,
    }
}

/// Replaces every mask fingerprint in `doc` (recursively) by [`MASK`].
pub fn finalize_masks(doc: &mut Document) {
    for (_, v) in doc.iter_mut() {
        finalize_value(v);
    }
}

fn finalize_value(v: &mut Bson) {
    match v {
        s if is_mask_marker(s) => *s = Bson::String(MASK.to_owned()),
        Bson::Document(d) => finalize_masks(d),
        Bson::Array(a) => a.iter_mut().for_each(finalize_value),
        _ => {}
    }
}

/// The changes between two snapshots: `{field: {old, new}}` for every key whose value differs, is
/// only in `old` (`new: null`) or only in `new` (`old: null`). One pass over each side: O(n).
pub fn diff(old: &Document, new: &Document) -> Document {
    let mut changes = Document::new();
    for (k, ov) in old {
        match new.get(k) {
            Some(nv) if nv == ov => {}
            Some(nv) => {
                changes.insert(k.clone(), doc! { "old": ov.clone(), "new": nv.clone() });
            }
            None => {
                changes.insert(k.clone(), doc! { "old": ov.clone(), "new": Bson::Null });
            }
        }
    }
    for (k, nv) in new {
        if !old.contains_key(k) {
            changes.insert(k.clone(), doc! { "old": Bson::Null, "new": nv.clone() });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_masks_are_finalised() {
        let forged = format!("{MASK_MARKER}0000000000000000");
        let forged_long = format!("{MASK_MARKER}{}", "0".repeat(32));
        let mut d = doc! {
            "real": mask_value(&Bson::String("s3cr3t".into())),
            "forged": forged.clone(),
            "forged_long": forged_long.clone(),
            "nested": { "x": mask_value(&Bson::Int32(1)) },
        };
        finalize_masks(&mut d);
        assert_eq!(d.get_str("real").unwrap(), MASK);
        assert_eq!(d.get_str("forged").unwrap(), forged);
        assert_eq!(d.get_str("forged_long").unwrap(), forged_long);
        assert_eq!(
            d.get_document("nested").unwrap().get_str("x").unwrap(),
            MASK
        );
    }
}
