//! The commands that hand evidence to someone without the database: `audit checkpoint` (the
//! signed tree head of every stream), `audit prove` (a receipt for one record) and `audit
//! check-receipt` (checks a receipt with the public key alone, no store needed).

use super::seal::open_read_only;
use super::CliError;
use crate::config::AuditConfig;
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs `checkpoint`: the newest signed checkpoint of every stream, each followed by a blank
/// line (the form the witness file keeps).
pub(super) async fn checkpoint(config: &AuditConfig, out: &mut impl Write) -> Result<(), CliError> {
    let store = open_read_only(config).await?;
    let notes = crate::seal::checkpoints(&store).await?;
    if notes.is_empty() {
        return Err(CliError::Proof(Box::new(
            crate::seal::ProofError::NotFound(
                "no signed seal states a tree: the trail is unsigned (seal_key_file), empty, or \
             written by a version without trees"
                    .into(),
            ),
        )));
    }
    for note in notes {
        writeln!(out, "{note}")?;
    }
    Ok(())
}

/// The arguments of `prove`.
#[derive(Args, Debug)]
pub(super) struct ProveArgs {
    /// The record's id (an access, a model action or a process).
    #[arg(long)]
    id: String,
    /// Where the receipt goes (created 0600; `-` for standard output).
    #[arg(long)]
    out: PathBuf,
    /// Prove against the checkpoint of this tree size (one the auditor already holds) instead of
    /// the stream's newest.
    #[arg(long)]
    size: Option<u64>,
}

/// Runs `prove`.
pub(super) async fn prove(
    config: &AuditConfig,
    args: ProveArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let id = args
        .id
        .parse::<bson::oid::ObjectId>()
        .map_err(|source| CliError::InvalidId {
            id: args.id.clone(),
            source,
        })?;
    let store = open_read_only(config).await?;
    let receipt = crate::seal::prove(&store, id, args.size)
        .await
        .map_err(|e| CliError::Proof(Box::new(e)))?;
    let text = receipt.to_text();
    if args.out == Path::new("-") {
        out.write_all(text.as_bytes())?;
    } else {
        let mut file = crate::journal::open_private(&args.out, true)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        writeln!(
            out,
            "receipt for {} {id}: leaf {} of stream {}, {}; written to {}",
            receipt.collection,
            receipt.proof.index,
            receipt.stream,
            if receipt.holds_record {
                "with the record as sealed"
            } else {
                "with its commitment only: what is stored is no longer what was sealed (run \
                 `audit verify`)"
            },
            args.out.display()
        )?;
    }
    Ok(())
}

/// The arguments of `check-receipt`.
#[derive(Args, Debug)]
pub(super) struct CheckReceiptArgs {
    /// The receipt (from `audit prove`).
    receipt: PathBuf,
    /// The trail's public key: PATH.pub from `keygen`, or a verifier key string
    /// (`name+id+key`, as `keygen` prints it).
    #[arg(long)]
    key: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The public key given to `check-receipt` or `verify --checkpoints`: a key file, or a verifier
/// key string (whose name must then be the one the notes are signed under).
pub(super) fn verifier_key(
    arg: &str,
) -> Result<(Option<String>, ed25519_dalek::VerifyingKey), CliError> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok((None, crate::seal::load_verifying_key(path)?));
    }
    crate::seal::note::parse_vkey(arg)
        .map(|(name, key)| (Some(name), key))
        .map_err(|e| CliError::BadKeyArgument(format!("--key `{arg}`: no such file, and {e}")))
}

/// Runs `check-receipt`: exit 0 when the receipt proves its record, 1 when it does not.
pub(super) fn check_receipt(args: CheckReceiptArgs, out: &mut impl Write) -> Result<(), CliError> {
    let (name, key) = verifier_key(&args.key)?;
    let text = std::fs::read_to_string(&args.receipt).map_err(|source| CliError::ReadFile {
        path: args.receipt.clone(),
        source,
    })?;
    let checked = crate::seal::check_receipt(&text, &key)
        .and_then(|c| match &name {
            Some(n) if n != c.checkpoint.key_name() => Err(crate::seal::note::NoteError(format!(
                "the checkpoint is signed as `{}`, not `{n}`",
                c.checkpoint.key_name()
            ))),
            _ => Ok(c),
        })
        .map_err(CliError::InvalidReceipt)?;
    let record = checked
        .record
        .as_ref()
        .map(|d| bson::Bson::Document(d.clone()).into_relaxed_extjson());
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "valid": true,
                "origin": checked.checkpoint.origin,
                "tree_size": checked.checkpoint.size,
                "index": checked.index,
                "commitment": crate::seal::hex_of(&checked.commitment),
                "record": record,
            })
        )?;
    } else {
        writeln!(
            out,
            "valid: leaf {} of {} (tree of {} records), commitment {}",
            checked.index,
            checked.checkpoint.origin,
            checked.checkpoint.size,
            crate::seal::hex_of(&checked.commitment)
        )?;
        match record {
            Some(r) => writeln!(
                out,
                "{}",
                super::format::escape_for_terminal(&r.to_string())
            )?,
            None => writeln!(
                out,
                "the receipt carries the commitment only: it proves that this commitment was \
                 sealed, not what the record held"
            )?,
        }
    }
    Ok(())
}
