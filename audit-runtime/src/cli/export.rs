//! `audit export KIND`: every matching record as one JSON line, streamed in batches so memory
//! stays bounded whatever the size of the trail, to standard output or to a private file: the
//! record as stored (`--format jsonl`, the default), or as an OCSF or ECS event for a SIEM.

use super::dates::date_filter;
use super::format::json_line;
use super::{open_for_reading, CliError, Kind};
use crate::config::AuditConfig;
use crate::store::StoreError;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// The arguments of `export`.
#[derive(Args, Debug)]
pub(super) struct ExportArgs {
    /// Which collection.
    kind: Kind,
    /// From this date (DATE[THH:MM]).
    #[arg(long)]
    from: Option<String>,
    /// Up to this date (a bare DATE includes the whole day).
    #[arg(long)]
    to: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `jsonl`: the records as stored; `ocsf`: OCSF 1.6 events (API Activity, Entity
    /// Management); `ecs`: Elastic Common Schema 8.17 documents.
    #[arg(long, default_value = "jsonl")]
    format: crate::siem::Format,
}

/// Runs `export`.
pub(super) async fn export(
    config: &AuditConfig,
    args: ExportArgs,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let c = args.kind.collection();
    if args.format != crate::siem::Format::Jsonl && c == crate::document::Collection::Process {
        return Err(CliError::Conflicting(
            "--format ocsf|ecs with process (a process is the device and process of the \
             events it served: export access or model-action)",
        ));
    }
    let filter = date_filter(c, args.from.as_deref(), args.to.as_deref())?;
    let store = open_for_reading(config).await?;
    // The processes the events name, read once (there is one per process start).
    let mut processes = std::collections::HashMap::new();
    if args.format != crate::siem::Format::Jsonl {
        store
            .for_each_batch(
                crate::document::Collection::Process,
                &crate::store::Filter::all(),
                1000,
                |batch| {
                    for p in batch {
                        if let Ok(id) = p.get_object_id("_id") {
                            processes.insert(id, p);
                        }
                    }
                    Ok(())
                },
            )
            .await?;
    }
    let format = args.format;
    let total = store.count(c, &filter).await?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} {wide_bar} {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut file_out = match &args.out {
        // Private (0600) whatever the umask, and never written through a symlink: an export is
        // the audit trail itself.
        Some(p) => Some(std::io::BufWriter::new(crate::journal::open_private(
            p, true,
        )?)),
        None => None,
    };
    let mut write_err = None;
    let written = store
        .for_each_batch(c, &filter, 1000, |batch| {
            for d in batch {
                let line = if format == crate::siem::Format::Jsonl {
                    json_line(d)
                } else {
                    let process = d
                        .get_object_id("process")
                        .ok()
                        .and_then(|p| processes.get(&p));
                    let ctx = crate::siem::Context {
                        process,
                        sealed: None,
                    };
                    match crate::siem::event(format, c, &d, &ctx) {
                        Some(e) => e.to_string(),
                        None => continue,
                    }
                };
                let res = match file_out.as_mut() {
                    Some(f) => writeln!(f, "{line}"),
                    None => writeln!(stdout, "{line}"),
                };
                if let Err(e) = res {
                    write_err = Some(e);
                    return Err(StoreError::Raw("output closed".into()));
                }
                bar.inc(1);
            }
            Ok(())
        })
        .await;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    let written = written?;
    if let Some(mut f) = file_out {
        f.flush()?;
    }
    bar.finish_and_clear();
    if let Some(p) = args.out {
        eprintln!("exported {written} documents from {c} to {}", p.display());
    }
    Ok(())
}
