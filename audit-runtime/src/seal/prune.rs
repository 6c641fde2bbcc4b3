//! Removals on purpose: a `prune` seal states what a ranged drop, a purge or the retention job
//! is about to remove (which collection, which dates, how many records), before it removes it,
//! so that `verify` reports those records as pruned and not as deleted.
//!
//! A prune seal excuses only what it can honestly speak for: records dated in its range up to its
//! own time (a range that reaches into the future would excuse records written after the prune
//! and deleted by hand), sealed before it, and no more of them than it states.

use super::{signing_key_for, SealError, Sealer};
use crate::document::Collection;
use crate::store::{CmpOp, Filter, Store};
use bson::oid::ObjectId;
use bson::{doc, Bson};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;

/// How far apart the clocks of the machines writing and verifying a trail may be. `verify`
/// treats a record dated more than this after its own clock as forged (no record is dated in
/// the future), and the in-flight window excuses only records dated up to it.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// A range of one collection removed on purpose (a ranged drop, a purge, the retention job).
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedRange {
    /// The collection.
    pub collection: Collection,
    /// From this date (`None`: from the beginning).
    pub from: Option<DateTime<Utc>>,
    /// Up to this date, included; never after the time of the seal that states it.
    pub to: DateTime<Utc>,
    /// How many records the removal takes.
    pub count: u64,
}

/// Writes a `prune` seal stating what is about to be removed, so that `verify` reports those
/// records as pruned rather than deleted. Call it *before* deleting: a crash in between leaves a
/// seal for records still there, which verifies clean, instead of records gone without a seal.
/// A range ending after now is cut at now: a prune cannot speak for records not written yet.
///
/// The seal is the only one of a stream of its own (a command is not a writer): removing it makes
/// the removed records show up as deleted. Nothing is written when sealing is off; on a signed
/// trail without a configured key it refuses ([`SealError::KeyRequired`]).
pub async fn seal_prune(
    store: &Store,
    config: &crate::AuditConfig,
    reason: &str,
    ranges: &[PrunedRange],
) -> Result<Option<super::Head>, SealError> {
    let key = signing_key_for(store, config).await?;
    if !config.seal {
        return Ok(None);
    }
    seal_prune_with(store, key, reason, ranges).await.map(Some)
}

async fn seal_prune_with(
    store: &Store,
    key: Option<SigningKey>,
    reason: &str,
    ranges: &[PrunedRange],
) -> Result<super::Head, SealError> {
    let now = Utc::now();
    let mut sealer = Sealer::new(ObjectId::new(), key);
    let ranges: Vec<Bson> = ranges
        .iter()
        .map(|r| {
            let mut d = doc! { "c": r.collection.name() };
            if let Some(from) = r.from {
                d.insert("from", bson::DateTime::from_chrono(from.min(now)));
            }
            d.insert("to", bson::DateTime::from_chrono(r.to.min(now)));
            d.insert("count", r.count as i64);
            Bson::Document(d)
        })
        .collect();
    let seal = sealer.seal("prune", doc! { "reason": reason, "ranges": ranges })?;
    store
        .insert_raw_documents(Collection::Seal, vec![seal])
        .await?;
    Ok(sealer.head().clone())
}

/// How often the retention job runs after its first run (at start).
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The writer's retention job: at start, then hourly, removes the accesses and model actions
/// older than `days`, each removal first stated in a `prune` seal so that `verify` reports the
/// records as pruned, not deleted. Processes stay (they are few, and records that stay may
/// reference them). Failures are logged and tried again at the next run.
pub async fn retention_job(store: Store, config: crate::AuditConfig, days: u32) {
    loop {
        if let Err(e) = prune_older_than(&store, &config, days).await {
            tracing::error!(target: "audit", error = %e, retention_days = days,
                "audit retention run failed; tried again in an hour");
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}

/// One retention run: what is older than `days` days goes, after its prune seal. The records
/// removed are those whose stored bytes are older (on SQLite, found through the indexed date
/// column and checked against the bytes, so a row whose column was edited is not removed on its
/// word). On a signed trail without the key it refuses before it counts anything.
pub async fn prune_older_than(
    store: &Store,
    config: &crate::AuditConfig,
    days: u32,
) -> Result<u64, SealError> {
    let key = signing_key_for(store, config).await?;
    // A cutoff before the earliest date there is leaves nothing older.
    let Some(cutoff) =
        chrono::Duration::try_days(i64::from(days)).and_then(|d| Utc::now().checked_sub_signed(d))
    else {
        return Ok(0);
    };
    let older = |c: Collection| {
        Filter::Cmp(
            c.date_field().into(),
            CmpOp::Lt,
            Bson::DateTime(bson::DateTime::from_chrono(cutoff)),
        )
    };
    let mut ranges = Vec::new();
    for c in [Collection::Access, Collection::ModelAction] {
        let count = store.count_stored(c, &older(c)).await?;
        if count > 0 {
            ranges.push(PrunedRange {
                collection: c,
                from: None,
                // The range includes its end; what goes is strictly older than the cutoff.
                to: cutoff - chrono::Duration::milliseconds(1),
                count,
            });
        }
    }
    if ranges.is_empty() {
        return Ok(0);
    }
    if config.seal {
        seal_prune_with(store, key, "retention", &ranges).await?;
    }
    let mut removed = 0;
    for r in &ranges {
        removed += store
            .prune_stored(r.collection, &older(r.collection))
            .await?;
    }
    tracing::info!(target: "audit", removed, retention_days = days, cutoff = %cutoff,
        "audit retention removed old records");
    Ok(removed)
}
