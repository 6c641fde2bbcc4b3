//! `audit prepare` and `audit remove`: the original's `prepare_audit` and `remove_audit`. Prepare
//! creates the collections and every default and custom index; remove takes the custom indexes
//! away again and, with `--purge`, the data too. Both may be run any number of times.

use super::drop::seal_removal;
use super::{confirm, open, CliError};
use crate::config::AuditConfig;
use crate::document::Collection;
use crate::store::Filter;
use std::io::Write;

/// Runs `prepare`.
pub(super) async fn prepare(config: &AuditConfig, out: &mut impl Write) -> Result<(), CliError> {
    let store = open(config).await?;
    let ensured = store.ensure_indexes(config).await?;
    for e in &ensured {
        writeln!(
            out,
            "{:<8} {} index {}",
            if e.created { "created" } else { "exists" },
            e.collection,
            e.name
        )?;
    }
    let created = ensured.iter().filter(|e| e.created).count();
    writeln!(
        out,
        "prepared {}: {created} created, {} already there",
        config.db_connection,
        ensured.len() - created
    )?;
    Ok(())
}

/// Runs `remove`.
pub(super) async fn remove(
    config: &AuditConfig,
    purge: bool,
    yes: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open(config).await?;
    if purge {
        // Before any index is removed: a signed trail without the key is refused whole.
        crate::seal::signing_key_for(&store, config).await?;
    }
    let mut removed = 0;
    for c in Collection::ALL {
        let defaults: Vec<String> = crate::store::default_indexes(c)
            .iter()
            .map(|i| i.name())
            .collect();
        for spec in config
            .indexes_for(c)
            .iter()
            .filter(|s| !defaults.contains(&s.name()))
        {
            if store.drop_index(c, &spec.name()).await? {
                writeln!(out, "removed  {c} index {}", spec.name())?;
                removed += 1;
            }
        }
    }
    if removed == 0 {
        writeln!(out, "nothing to remove")?;
    }
    if !purge {
        return Ok(());
    }
    if !yes
        && !confirm(&format!(
            "Delete all audit data in {}?",
            config.db_connection
        ))?
    {
        writeln!(out, "Aborted: no data deleted.")?;
        return Ok(());
    }
    let mut counts = Vec::new();
    for c in Collection::ALL {
        counts.push((c, store.count(c, &Filter::all()).await?));
    }
    seal_removal(&store, config, "remove --purge", None, &counts).await?;
    for (c, n) in counts {
        store.drop_collection(c).await?;
        writeln!(out, "deleted  {n} documents from {c}")?;
    }
    store.drop_collection(Collection::Salt).await?;
    Ok(())
}
