//! Snapshot plus diff of a 10-field struct: through `#[derive(Audited)]`, against a baseline that
//! snapshots through `serde_json::to_value` and diffs the two maps, in the same run.
//!
//! `cargo bench -p audit-runtime --bench derive`

use audit_runtime::internals::diff_snapshots;
use audit_runtime::Audited;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde::Serialize;

#[derive(Audited, Serialize, Clone)]
struct Order {
    id: i64,
    customer: String,
    email: String,
    total_cents: i64,
    currency: String,
    paid: bool,
    items: Vec<String>,
    note: Option<String>,
    discount: f64,
    created: chrono::DateTime<chrono::Utc>,
}

fn order() -> Order {
    Order {
        id: 42,
        customer: "José Ñandú".into(),
        email: "jose@example.com".into(),
        total_cents: 12_345,
        currency: "EUR".into(),
        paid: false,
        items: vec!["book".into(), "pen".into(), "lamp".into()],
        note: Some("leave at the door".into()),
        discount: 0.1,
        created: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    }
}

/// The baseline: snapshot with serde_json, diff the maps key by key.
fn json_diff(old: &Order, new: &Order) -> serde_json::Map<String, serde_json::Value> {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (
        serde_json::to_value(old).unwrap(),
        serde_json::to_value(new).unwrap(),
    ) else {
        unreachable!()
    };
    let mut changes = serde_json::Map::new();
    for (k, v) in &a {
        match b.get(k) {
            Some(n) if n == v => {}
            n => {
                changes.insert(k.clone(), serde_json::json!({ "old": v, "new": n }));
            }
        }
    }
    for (k, v) in &b {
        if !a.contains_key(k) {
            changes.insert(k.clone(), serde_json::json!({ "old": null, "new": v }));
        }
    }
    changes
}

fn bench(c: &mut Criterion) {
    let old = order();
    let mut new = order();
    new.paid = true;
    new.note = None;
    // Both compute the same changes.
    assert_eq!(
        diff_snapshots(&old.audit_snapshot(), &new.audit_snapshot()).len(),
        json_diff(&old, &new).len()
    );
    let mut g = c.benchmark_group("snapshot+diff of 10 fields");
    g.bench_function("derive(Audited)", |b| {
        b.iter(|| {
            diff_snapshots(
                &black_box(&old).audit_snapshot(),
                &black_box(&new).audit_snapshot(),
            )
        })
    });
    g.bench_function("serde_json baseline", |b| {
        b.iter(|| json_diff(black_box(&old), black_box(&new)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
