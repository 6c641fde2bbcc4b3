//! The dashboard's numbers: requests per time bucket by status class, top views, errors. Read
//! from four fields per access (`Store::find_values`), never whole documents, over a bounded
//! time range (24 hours by default) that the `time.request` index narrows.

use super::params::StatsParams;
use crate::document::Collection;
use crate::store::{Filter, FindOptions, Store, StoreResult};
use bson::Bson;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Status classes, in display order: `1xx` … `5xx`, then `none` (no response: cancelled, or an
/// exception before one).
pub(crate) const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// How many views the top list holds.
const TOP_VIEWS: usize = 10;

#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub(crate) params: StatsParams,
    pub(crate) total: u64,
    pub(crate) errors: u64,
    /// Start (ms since the epoch) and counts per class, one entry per bucket, oldest first.
    pub(crate) buckets: Vec<(i64, [u64; 6])>,
    pub(crate) classes: [u64; 6],
    pub(crate) top_views: Vec<(String, u64)>,
}

fn class_of(status: &Bson) -> usize {
    match status {
        Bson::Int64(s) if (100..600).contains(s) => (*s / 100 - 1) as usize,
        Bson::Int32(s) if (100..600).contains(s) => (*s / 100 - 1) as usize,
        _ => 5,
    }
}

pub(crate) async fn compute(
    store: &Store,
    params: StatsParams,
    max_time: Duration,
) -> StoreResult<Stats> {
    let from = bson::DateTime::from_chrono(params.from);
    let to = bson::DateTime::from_chrono(params.to);
    let opts = FindOptions::new(Filter::between("time.request", from, to)).max_time(max_time);
    let rows = store
        .find_values(
            Collection::Access,
            &opts,
            &[
                "time.request",
                "response.status_code",
                "exception",
                "view.full_name",
            ],
        )
        .await?;
    let step = params.bucket.millis();
    let first = params.from.timestamp_millis().div_euclid(step) * step;
    let last = params.to.timestamp_millis().div_euclid(step) * step;
    let n = ((last - first) / step + 1) as usize;
    let mut buckets: Vec<(i64, [u64; 6])> =
        (0..n).map(|i| (first + i as i64 * step, [0; 6])).collect();
    let mut classes = [0u64; 6];
    let mut errors = 0;
    let mut views: HashMap<String, u64> = HashMap::new();
    for row in &rows {
        let t = match &row[0] {
            Bson::Int64(t) => *t,
            Bson::DateTime(t) => t.timestamp_millis(),
            _ => continue,
        };
        let class = class_of(&row[1]);
        let i = ((t.div_euclid(step) * step - first) / step) as usize;
        if let Some(b) = buckets.get_mut(i) {
            b.1[class] += 1;
        }
        classes[class] += 1;
        if row[2] != Bson::Null || class == 4 {
            errors += 1;
        }
        if let Bson::String(v) = &row[3] {
            *views.entry(v.clone()).or_default() += 1;
        }
    }
    let mut top_views: Vec<(String, u64)> = views.into_iter().collect();
    top_views.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_views.truncate(TOP_VIEWS);
    Ok(Stats {
        params,
        total: rows.len() as u64,
        errors,
        buckets,
        classes,
        top_views,
    })
}

fn iso(ms: i64) -> String {
    bson::DateTime::from_millis(ms)
        .try_to_rfc3339_string()
        .unwrap_or_default()
}

impl Stats {
    pub(crate) fn to_json(&self) -> Value {
        let classes = |c: &[u64; 6]| -> Value {
            CLASSES
                .iter()
                .zip(c)
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "from": self.params.from.to_rfc3339(),
            "to": self.params.to.to_rfc3339(),
            "bucket": self.params.bucket.as_str(),
            "total": self.total,
            "errors": self.errors,
            "status_classes": classes(&self.classes),
            "buckets": self.buckets.iter().map(|(start, c)| json!({
                "start": iso(*start),
                "count": c.iter().sum::<u64>(),
                "status_classes": classes(c),
            })).collect::<Vec<_>>(),
            "top_views": self.top_views.iter().map(|(v, n)| json!({"view": v, "count": n})).collect::<Vec<_>>(),
        })
    }
}
