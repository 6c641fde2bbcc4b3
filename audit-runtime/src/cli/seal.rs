//! The commands around the seals: `audit keygen` (the signing key pair), `audit verify` (is the
//! trail as it was written?) and `audit erase` (a user's personal data replaced, stated in an
//! erasure seal so the trail still verifies).

use super::dates::parse_moment;
use super::format::escape_for_terminal;
use super::list::user_id_arg;
use super::{confirm, open_existing, CliError};
use crate::config::AuditConfig;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Runs `keygen`; `trail` is the name the trail's checkpoints are signed under.
pub(super) fn keygen(path: &Path, trail: &str, out: &mut impl Write) -> Result<(), CliError> {
    // A path that is taken is the caller's to change (exit 2); a directory that is missing or a
    // disk that fails is a runtime failure (exit 1).
    let public = crate::seal::keygen(path).map_err(|e| match &e {
        crate::seal::KeyError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            CliError::Key(e)
        }
        _ => CliError::KeyWrite(e),
    })?;
    let hex: String = public
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    writeln!(
        out,
        "private key: {} (keep it from the database's administrators)\npublic key:  {} ({hex})\nverifier key of the checkpoints: {}\nsign seals with: seal_key_file = \"{}\"",
        path.display(),
        crate::seal::public_key_path(path).display(),
        crate::seal::note::vkey(trail, &public),
        path.display()
    )?;
    Ok(())
}

/// The arguments of `verify`.
#[derive(Args, Debug)]
pub(super) struct VerifyArgs {
    /// The public key (PATH.pub from `keygen`): every seal must be signed by it.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Only records from this date (DATE[THH:MM]); seals are always checked whole.
    #[arg(long)]
    from: Option<String>,
    /// Only records up to this date (a bare DATE includes the whole day).
    #[arg(long)]
    to: Option<String>,
    /// One JSON object per finding, then a summary object.
    #[arg(long)]
    json: bool,
    /// Records with no seal dated up to this many seconds before now (and at most five minutes,
    /// the clock skew allowed, after it) may still be waiting for their seal.
    #[arg(long, default_value_t = 600)]
    in_flight_secs: u64,
    /// Accept records with no seal dated before this (DATE[THH:MM]): a trail written before
    /// sealing was turned on. Records forged with an older date then go unnoticed.
    #[arg(long)]
    accept_unsealed_before: Option<String>,
    /// Also check every index against its table, entry by entry (SQLite): several times slower.
    #[arg(long)]
    deep: bool,
    /// The witness file of checkpoints published earlier (`checkpoint_file`): every stream must
    /// still hold each of them (with --key, each must be signed by it). Catches the newest seals
    /// deleted with their records, a stream deleted, and history rewritten.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
}

/// Runs `verify`: every finding, then the heads and a summary; exit 1 when anything was found.
pub(super) async fn verify(
    config: &AuditConfig,
    args: VerifyArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let key = args
        .key
        .map(|k| crate::seal::load_verifying_key(&k))
        .transpose()?;
    let checkpoints = match &args.checkpoints {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadFile {
                path: path.clone(),
                source,
            })?;
            crate::seal::read_checkpoints(&text, key.as_ref()).map_err(|source| {
                CliError::CheckpointFile {
                    path: path.clone(),
                    source,
                }
            })?
        }
    };
    let opts = crate::seal::VerifyOptions {
        key,
        from: args
            .from
            .as_deref()
            .map(|f| parse_moment(f, false))
            .transpose()?,
        to: args
            .to
            .as_deref()
            .map(|t| parse_moment(t, true))
            .transpose()?,
        in_flight: std::time::Duration::from_secs(args.in_flight_secs),
        accept_unsealed_before: args
            .accept_unsealed_before
            .as_deref()
            .map(|t| parse_moment(t, false))
            .transpose()?,
        deep: args.deep,
        checkpoints,
    };
    // Read-only: verification never creates, migrates or writes anything in the store.
    let store = open_read_only(config).await?;
    let json = args.json;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("verifying: seals and records read");
        Some(bar)
    } else {
        None
    };
    let mut write_error = None;
    let summary = crate::seal::verify(
        &store,
        &opts,
        |f| {
            let line = if json {
                serde_json::to_string(f).unwrap_or_default()
            } else {
                escape_for_terminal(&f.to_string())
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
        },
        |n| {
            if let Some(bar) = &bar {
                bar.set_position(n);
            }
        },
    )
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "summary": summary, "intact": summary.findings == 0 })
        )?;
    } else {
        for h in &summary.heads {
            writeln!(
                out,
                "head: stream {} seq {} hash {} tree size {}",
                h.stream, h.seq, h.hash, h.size
            )?;
        }
        writeln!(
            out,
            "verified {} seals in {} streams and {} records: {} pruned, {} erased, {} unsealed accepted",
            summary.seals,
            summary.heads.len(),
            summary.records,
            summary.pruned,
            summary.erased,
            summary.unsealed_accepted
        )?;
    }
    if summary.findings > 0 {
        return Err(CliError::NotIntact(summary.findings));
    }
    if !json {
        writeln!(out, "intact")?;
    }
    Ok(())
}

/// Opens the store for verification: it must exist, and nothing in it is created or changed.
pub(super) async fn open_read_only(config: &AuditConfig) -> Result<crate::store::Store, CliError> {
    if let crate::config::DbConnection::Sqlite(path) = &config.db_connection {
        if !path.exists() {
            return Err(CliError::NoDatabase(path.clone()));
        }
    }
    crate::store::Store::open_read_only(&config.db_connection)
        .await
        .map_err(|source| CliError::Open {
            connection: config.db_connection.to_string(),
            source: Box::new(source),
        })
}

/// The arguments of `erase`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["user_id", "user_id_string"])))]
pub(super) struct EraseArgs {
    /// The user id, exactly as stored: an integer written the usual way (`23`), else a string id
    /// (`0023` is the string "0023", never the integer 23).
    #[arg(long)]
    user_id: Option<String>,
    /// A string user id, even one that looks like an integer (`--user-id-string 23`).
    #[arg(long)]
    user_id_string: Option<String>,
    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

/// Runs `erase`: counts first, then (after the question, or `--yes`) the erasure.
pub(super) async fn erase(
    config: &AuditConfig,
    args: EraseArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = open_existing(config).await?;
    let Some(id) = user_id_arg(args.user_id.as_deref(), args.user_id_string.as_deref())? else {
        unreachable!("clap requires one of them");
    };
    let shown = match &id {
        bson::Bson::String(s) => format!("\"{}\"", escape_for_terminal(s)),
        other => other.to_string(),
    };
    let would = crate::seal::erase_user(&store, config, &id, true).await?;
    let what = format!(
        "{} accesses and {} model actions of user {shown}",
        would.accesses, would.model_actions,
    );
    if args.dry_run {
        writeln!(out, "would erase the personal data of {what}")?;
        return Ok(());
    }
    // Before the question: a signed trail without the key is refused with nothing changed.
    crate::seal::signing_key_for(&store, config).await?;
    if !args.yes && !confirm(&format!("Erase the personal data of {what}?"))? {
        writeln!(out, "Aborted: nothing changed.")?;
        return Ok(());
    }
    let done = crate::seal::erase_user(&store, config, &id, false).await?;
    writeln!(
        out,
        "erased the personal data of {} accesses and {} model actions",
        done.accesses, done.model_actions
    )?;
    if done.failed > 0 {
        return Err(CliError::Seal(Box::new(crate::seal::SealError::Store(
            crate::store::StoreError::Raw(format!(
                "{} records of the user could not be erased: no row holds their bytes any more \
                 (run `audit verify`)",
                done.failed
            )),
        ))));
    }
    if !done.files_clean {
        eprintln!(
            "audit: warning: another connection was reading the database, so its write-ahead log \
             could not be emptied and may still hold the erased values; run `audit erase` again \
             when it is idle"
        );
    }
    Ok(())
}
