//! Serde helpers shared by the documents: UTC datetimes as BSON datetimes, and `null` read as a
//! default (the original stored `None` for some maps that we model as always present).

use serde::{Deserialize, Deserializer, Serializer};

/// `chrono::DateTime<Utc>` ↔ BSON datetime.
pub(crate) mod utc {
    use super::*;
    use chrono::{DateTime, Utc};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        bson::serde_helpers::chrono_datetime_as_bson_datetime::serialize(t, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        // The original wrote naive local datetimes as BSON datetimes; a BSON datetime is always UTC,
        // so reading it as UTC is exact for ours and as good as the original's data allows.
        bson::serde_helpers::chrono_datetime_as_bson_datetime::deserialize(d)
    }
}

/// `Option<chrono::DateTime<Utc>>` ↔ BSON datetime or null.
pub(crate) mod utc_opt {
    use super::*;
    use chrono::{DateTime, Utc};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&bson::DateTime::from_chrono(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<bson::DateTime>::deserialize(d)?.map(|t| t.to_chrono()))
    }
}

/// Reads `null` (or a missing field, with `#[serde(default)]`) as `T::default()`.
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
