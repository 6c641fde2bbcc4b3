//! `audit drop`: deletes audit data, all of it or a range of days, after a `[y/N]` question
//! (default No) or `--yes`, with `--dry-run` printing the counts only. Every removal is first
//! stated in a prune seal, so `verify` tells it from tampering; a range is cut at now, since a
//! prune cannot speak for records written after it. What is removed is decided by the stored
//! bytes (on SQLite, the indexed columns only narrow the rows). On a signed trail the key is
//! needed. The original deleted everything when given more than two dates; here that is a usage
//! error.

use super::dates::{drop_range, in_range, Range};
use super::{confirm, open, CliError};
use crate::config::AuditConfig;
use crate::document::Collection;
use crate::store::{Filter, Store};
use bson::Bson;
use chrono::Utc;
use clap::Args;
use std::io::Write;

/// The arguments of `drop`.
#[derive(Args, Debug)]
pub(super) struct DropArgs {
    /// First day (dd/mm/yyyy or yyyy-mm-dd), from 00:00.
    init_date: Option<String>,
    /// Last day, included to its end.
    end_date: Option<String>,
    /// Anything more is a usage error (the original deleted everything when given more).
    #[arg(hide = true)]
    extra: Vec<String>,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
    /// Print the counts that would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `drop`.
pub(super) async fn drop(
    config: &AuditConfig,
    args: DropArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    if !args.extra.is_empty() {
        return Err(CliError::TooManyDates(2 + args.extra.len()));
    }
    let now = Utc::now();
    let mut range = drop_range(args.init_date.as_deref(), args.end_date.as_deref(), now)?;
    if let Some((from, to)) = &mut range {
        if *to > now {
            eprintln!(
                "audit: the range ends after now ({}); it is cut at now ({}): records written \
                 after the drop are not part of it",
                to.format("%Y-%m-%d %H:%M:%S"),
                now.format("%Y-%m-%d %H:%M:%S")
            );
            *to = now;
            *from = (*from).min(now);
        }
    }
    let store = open(config).await?;
    if !args.dry_run {
        // Before the question and before anything is counted or removed.
        crate::seal::signing_key_for(&store, config).await?;
    }
    match range {
        None => drop_all(&store, config, args.yes, args.dry_run, out).await,
        Some(range) => drop_range_data(&store, config, range, args.yes, args.dry_run, out).await,
    }
}

/// Everything goes: the three collections are dropped and made again, empty, with their indexes.
async fn drop_all(
    store: &Store,
    config: &AuditConfig,
    yes: bool,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut counts = Vec::new();
    for c in [
        Collection::Access,
        Collection::ModelAction,
        Collection::Process,
    ] {
        counts.push((c, store.count(c, &Filter::all()).await?));
    }
    if dry_run {
        for (c, n) in counts {
            writeln!(out, "would delete {n} documents from {c}")?;
        }
        return Ok(());
    }
    if !yes
        && !confirm(&format!(
            "Delete all audit data in {}?",
            config.db_connection
        ))?
    {
        writeln!(out, "Aborted: nothing deleted.")?;
        return Ok(());
    }
    seal_removal(store, config, "drop", None, &counts).await?;
    for (c, n) in counts {
        store.drop_collection(c).await?;
        writeln!(out, "deleted {n} documents from {c}")?;
    }
    // Every record is gone, so are the salts of their commitments.
    store.drop_collection(Collection::Salt).await?;
    // Dropping removed the indexes too; leave the store ready.
    store.ensure_indexes(config).await?;
    Ok(())
}

/// The accesses and model actions dated in `range` go, and the processes that only they
/// referenced ([`Store::orphaned_processes`] says which).
async fn drop_range_data(
    store: &Store,
    config: &AuditConfig,
    range: Range,
    yes: bool,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let what = format!(
        "audit data from {} to {}",
        range.0.format("%Y-%m-%d %H:%M:%S"),
        range.1.format("%Y-%m-%d %H:%M:%S")
    );
    let access_filter = in_range(Collection::Access, &range);
    let action_filter = in_range(Collection::ModelAction, &range);
    let accesses = store
        .count_stored(Collection::Access, &access_filter)
        .await?;
    let actions = store
        .count_stored(Collection::ModelAction, &action_filter)
        .await?;
    let orphans = store.orphaned_processes(range.0, range.1).await?;
    let orphans = Filter::And(vec![
        Filter::In(
            "_id".into(),
            orphans.into_iter().map(Bson::ObjectId).collect(),
        ),
        in_range(Collection::Process, &range),
    ]);
    let orphan_count = store.count_stored(Collection::Process, &orphans).await?;
    if dry_run {
        writeln!(
            out,
            "would delete {accesses} documents from {}",
            Collection::Access
        )?;
        writeln!(
            out,
            "would delete {actions} documents from {}",
            Collection::ModelAction
        )?;
        writeln!(
            out,
            "would delete {orphan_count} documents from {}",
            Collection::Process
        )?;
        return Ok(());
    }
    if !yes && !confirm(&format!("Delete {what} in {}?", config.db_connection))? {
        writeln!(out, "Aborted: nothing deleted.")?;
        return Ok(());
    }
    seal_removal(
        store,
        config,
        "drop",
        Some(range),
        &[
            (Collection::Access, accesses),
            (Collection::ModelAction, actions),
            (Collection::Process, orphan_count),
        ],
    )
    .await?;
    let a = store
        .prune_stored(Collection::Access, &access_filter)
        .await?;
    let m = store
        .prune_stored(Collection::ModelAction, &action_filter)
        .await?;
    let p = store.prune_stored(Collection::Process, &orphans).await?;
    writeln!(out, "deleted {a} documents from {}", Collection::Access)?;
    writeln!(
        out,
        "deleted {m} documents from {}",
        Collection::ModelAction
    )?;
    writeln!(out, "deleted {p} documents from {}", Collection::Process)?;
    Ok(())
}

/// Seals what a removal is about to delete (before it deletes), so `verify` can tell it from
/// tampering.
pub(super) async fn seal_removal(
    store: &Store,
    config: &AuditConfig,
    reason: &str,
    range: Option<Range>,
    counts: &[(Collection, u64)],
) -> Result<(), CliError> {
    let ranges: Vec<crate::seal::PrunedRange> = counts
        .iter()
        .map(|&(collection, count)| crate::seal::PrunedRange {
            collection,
            from: range.map(|r| r.0),
            to: range.map_or_else(Utc::now, |r| r.1),
            count,
        })
        .collect();
    crate::seal::seal_prune(store, config, reason, &ranges).await?;
    Ok(())
}

/// The arguments of `prune`.
#[derive(clap::Args, Debug)]
pub(super) struct PruneArgs {
    /// The age past which records go: days, as `30d` or `30`.
    #[arg(long)]
    older_than: String,
    /// Count what would go, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

/// A number of days, `30d` or `30`, from 1 to 100 years' worth.
fn parse_days(s: &str) -> Result<u32, CliError> {
    s.trim()
        .strip_suffix('d')
        .unwrap_or(s.trim())
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=crate::config::MAX_RETENTION_DAYS).contains(d))
        .ok_or_else(|| CliError::InvalidAge(s.to_owned()))
}

/// Runs `prune`: what the retention job would remove with `retention_days = N`, now.
pub(super) async fn prune(
    config: &AuditConfig,
    args: PruneArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let days = parse_days(&args.older_than)?;
    let store = open(config).await?;
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
    if args.dry_run {
        for c in [Collection::Access, Collection::ModelAction] {
            let older = Filter::Cmp(
                c.date_field().into(),
                crate::store::filter::CmpOp::Lt,
                bson::Bson::DateTime(bson::DateTime::from_chrono(cutoff)),
            );
            let n = store.count(c, &older).await?;
            writeln!(
                out,
                "would delete {n} documents from {c} older than {days} days"
            )?;
        }
        return Ok(());
    }
    // Before the question: a signed trail without its key refuses, nothing changed.
    crate::seal::signing_key_for(&store, config).await?;
    if !args.yes
        && !confirm(&format!(
            "Delete the accesses and model actions older than {days} days in {}?",
            config.db_connection
        ))?
    {
        writeln!(out, "Aborted: nothing deleted.")?;
        return Ok(());
    }
    let removed = crate::seal::prune_older_than(&store, config, days).await?;
    writeln!(
        out,
        "deleted {removed} documents older than {days} days (before {})",
        cutoff.format("%Y-%m-%d %H:%M:%S")
    )?;
    Ok(())
}
