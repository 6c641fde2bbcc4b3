//! `audit access show ID`, `audit model-action show ID` and `audit process show ID`: one whole
//! record, as stored (secrets were masked before it was stored), as indented JSON.

use super::format::pretty_json;
use super::{open_for_reading, CliError, Kind};
use crate::config::AuditConfig;
use crate::store::{Filter, FindOptions};
use bson::oid::ObjectId;
use clap::Args;
use std::io::Write;

/// Which record.
#[derive(Args, Debug)]
pub(super) struct ShowArgs {
    /// The record's id (24 hexadecimal digits: `_id` in `--json` output; a model action's
    /// access in its table row).
    id: String,
}

/// Prints the record of `kind` whose id is `args.id`.
pub(super) async fn show(
    config: &AuditConfig,
    kind: Kind,
    args: ShowArgs,
    query_timeout: std::time::Duration,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let id: ObjectId = args
        .id
        .trim()
        .parse()
        .map_err(|source| CliError::InvalidId {
            id: args.id.clone(),
            source,
        })?;
    let c = kind.collection();
    let store = open_for_reading(config).await?;
    let opts = FindOptions::new(Filter::eq("_id", id))
        .window(0, Some(1))
        .max_time(query_timeout);
    let Some(doc) = store.find_raw(c, &opts).await?.into_iter().next() else {
        return Err(CliError::NotFound { collection: c, id });
    };
    writeln!(out, "{}", pretty_json(doc))?;
    Ok(())
}
