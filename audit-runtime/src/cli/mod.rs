//! The `audit` command line: the original's `prepare_audit`, `remove_audit` and `drop_audit`
//! (with its unsafe argument handling fixed: extra arguments are an error, and processes still
//! referenced are kept), plus listing, showing and exporting the trail, the seal commands and the
//! console.
//!
//! This module holds the argument types and the dispatch; each command group lives in its own
//! file. Commands that only read refuse a SQLite path that does not exist (a mistyped `--db`
//! would otherwise create an empty database and report nothing); commands that write create it.
//!
//! Exit codes: 0 success, 1 runtime failure (store unreachable, ...), 2 usage error.

mod dates;
mod drop;
mod error;
mod evidence;
mod export;
mod format;
mod list;
mod prepare;
mod seal;
#[cfg(feature = "console")]
mod serve;
mod show;

pub use dates::{drop_range, parse_day, parse_moment, Range};
pub use error::CliError;
pub use format::{escape_for_terminal, json_line};

use crate::config::{parse_connection_str, AuditConfig, DbConnection};
use crate::document::Collection;
use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use list::{AccessListArgs, ListArgs, ModelActionListArgs, ProcessListArgs};
use show::ShowArgs;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Audit trail administration: prepare and remove the store, drop old data, list, show and export
/// records.
#[derive(Parser, Debug)]
// `bin_name`: usage lines say `audit` even when the binary was built under another name.
#[command(name = "audit", bin_name = "audit", version, about)]
pub struct Cli {
    /// The store: a SQLite path or a mongodb:// URI (default: the config file's, then AUDIT_DB,
    /// then audit.db).
    #[arg(long, global = true)]
    pub db: Option<String>,
    /// The TOML configuration file (default: AUDIT_CONFIG, then ./audit.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// How long one query may run before it is stopped, in milliseconds (listing and the console).
    #[arg(long, global = true, default_value_t = 5_000)]
    pub query_timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the collections and every default and custom index (idempotent).
    Prepare,
    /// Remove what `prepare` set up beyond the defaults (custom indexes); the data stays.
    Remove {
        /// Also delete all audit data (asks first).
        #[arg(long)]
        purge: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Delete audit data: everything, from INIT_DATE to now, or from INIT_DATE to the end of END_DATE.
    Drop(drop::DropArgs),
    /// Run the retention job now: accesses and model actions older than the given age go, stated
    /// first in a prune seal (a signed trail needs its key, seal_key_file).
    Prune(drop::PruneArgs),
    /// Accesses.
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Model actions.
    ModelAction {
        #[command(subcommand)]
        command: ModelActionCommand,
    },
    /// Processes.
    Process {
        #[command(subcommand)]
        command: ProcessCommand,
    },
    /// Write a new Ed25519 key pair for signing seals: the private key to PATH (0600), the
    /// public key to PATH.pub.
    Keygen {
        /// Where the private key goes (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check that nobody edited the trail: recompute every seal chain, check every stored row
    /// against what the seals commit to (and, on SQLite, every indexed copy against the bytes).
    /// Read-only. Exit 0 when intact, 1 when anything is wrong, 2 when the key, the store or an
    /// option is (a missing or empty trail included).
    Verify(seal::VerifyArgs),
    /// Print the newest signed checkpoint of every stream (the tree head, as a C2SP signed note),
    /// each followed by a blank line: the form `checkpoint_file` keeps and `verify --checkpoints`
    /// reads.
    Checkpoint,
    /// Write a receipt for one record: its bytes as sealed (or its commitment), its inclusion
    /// proof and a signed checkpoint, which anyone holding the public key checks without the
    /// database (`audit check-receipt`, or any RFC 6962 implementation).
    Prove(evidence::ProveArgs),
    /// Check a receipt with the public key alone (no store). Exit 0 when it proves its record, 1
    /// when it does not, 2 when the receipt or the key cannot be read.
    CheckReceipt(evidence::CheckReceiptArgs),
    /// Replace a user's personal data in their accesses (and the model actions those caused)
    /// with a tombstone, stated in an erasure seal so that `verify` still passes. A signed trail
    /// needs its key (seal_key_file).
    Erase(seal::EraseArgs),
    /// Stream every matching document as JSON lines.
    Export(export::ExportArgs),
    /// Serve the read-only console (JSON API and web pages) until SIGTERM or Ctrl-C.
    #[cfg(feature = "console")]
    Serve(serve::ServeArgs),
}

// One value, parsed once per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum AccessCommand {
    /// List accesses, newest first.
    List(AccessListArgs),
    /// Print one access, whole, as JSON.
    Show(ShowArgs),
}

#[derive(Subcommand, Debug)]
enum ModelActionCommand {
    /// List model actions, newest first (with the access each was made in).
    List(ModelActionListArgs),
    /// Print one model action, whole, as JSON.
    Show(ShowArgs),
}

#[derive(Subcommand, Debug)]
enum ProcessCommand {
    /// List processes, newest first.
    List(ProcessListArgs),
    /// Print one process, whole, as JSON.
    Show(ShowArgs),
}

/// The three kinds of record.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Kind {
    Access,
    ModelAction,
    Process,
}

impl Kind {
    fn collection(self) -> Collection {
        match self {
            Kind::Access => Collection::Access,
            Kind::ModelAction => Collection::ModelAction,
            Kind::Process => Collection::Process,
        }
    }
}

/// Runs the command line with the process's arguments and exits with its code.
pub fn main() -> ! {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("audit: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(()) => 0,
        // The reader went away (`audit access list | head`): nothing more to say.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("audit: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code)
}

/// The configuration of a command: the file (`--config`, `AUDIT_CONFIG` or `./audit.toml`) and
/// the environment, the store being `--db`, else the file's, else `AUDIT_DB`, else the default.
fn load_config(cli: &Cli) -> Result<AuditConfig, CliError> {
    let config = AuditConfig::load_preferring_file_store(cli.config.as_deref())?;
    Ok(match &cli.db {
        Some(db) => config.with_connection(parse_connection_str(db)?),
        None => config,
    })
}

/// Opens the configured store, creating a SQLite file that is not there (for commands that
/// write).
async fn open(config: &AuditConfig) -> Result<Store, CliError> {
    Store::open(&config.db_connection)
        .await
        .map_err(|source| CliError::Open {
            connection: config.db_connection.to_string(),
            source: Box::new(source),
        })
}

/// Opens a store that must already exist: a mistyped SQLite path is an error, not a new empty
/// database that then lists or erases nothing.
async fn open_existing(config: &AuditConfig) -> Result<Store, CliError> {
    if let DbConnection::Sqlite(path) = &config.db_connection {
        if !path.exists() {
            return Err(CliError::NoDatabase(path.clone()));
        }
    }
    open(config).await
}

/// Opens a store that must already exist, for commands that only read. PostgreSQL is opened
/// read-only (nothing created, every transaction read-only), so these commands and the console
/// also run against a read replica.
async fn open_for_reading(config: &AuditConfig) -> Result<Store, CliError> {
    match &config.db_connection {
        DbConnection::Postgres { .. } => Store::open_read_only(&config.db_connection)
            .await
            .map_err(|source| CliError::Open {
                connection: config.db_connection.to_string(),
                source: Box::new(source),
            }),
        _ => open_existing(config).await,
    }
}

/// Asks a yes/no question on the terminal; anything but yes, end of input included, is No.
fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    // End of input (nobody to answer) is a No.
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    let query_timeout = std::time::Duration::from_millis(cli.query_timeout_ms);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Prepare => prepare::prepare(&config, &mut out).await,
        Command::Remove { purge, yes } => prepare::remove(&config, purge, yes, &mut out).await,
        Command::Drop(args) => drop::drop(&config, args, &mut out).await,
        Command::Prune(args) => drop::prune(&config, args, &mut out).await,
        Command::Access { command } => match command {
            AccessCommand::List(a) => {
                list::list(&config, ListArgs::Access(a), query_timeout, &mut out).await
            }
            AccessCommand::Show(a) => {
                show::show(&config, Kind::Access, a, query_timeout, &mut out).await
            }
        },
        Command::ModelAction { command } => match command {
            ModelActionCommand::List(a) => {
                list::list(&config, ListArgs::ModelAction(a), query_timeout, &mut out).await
            }
            ModelActionCommand::Show(a) => {
                show::show(&config, Kind::ModelAction, a, query_timeout, &mut out).await
            }
        },
        Command::Process { command } => match command {
            ProcessCommand::List(a) => {
                list::list(&config, ListArgs::Process(a), query_timeout, &mut out).await
            }
            ProcessCommand::Show(a) => {
                show::show(&config, Kind::Process, a, query_timeout, &mut out).await
            }
        },
        Command::Keygen { out: path } => seal::keygen(&path, &config.trail_name, &mut out),
        Command::Checkpoint => evidence::checkpoint(&config, &mut out).await,
        Command::Prove(args) => evidence::prove(&config, args, &mut out).await,
        Command::CheckReceipt(args) => evidence::check_receipt(args, &mut out),
        Command::Verify(args) => seal::verify(&config, args, &mut out).await,
        Command::Erase(args) => seal::erase(&config, args, &mut out).await,
        Command::Export(args) => export::export(&config, args, &mut out).await,
        #[cfg(feature = "console")]
        Command::Serve(args) => {
            // The console prints through its own handle: release standard output first.
            std::mem::drop(out);
            serve::serve(&config, &args, query_timeout).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_argument_types_are_consistent() {
        Cli::command().debug_assert();
    }

    /// Each list takes only the flags that apply to its records: `--help` shows nothing else,
    /// and the parser refuses the rest (exit 2).
    #[test]
    fn each_list_takes_only_its_own_filters() {
        let flags = |kind: &str| -> Vec<String> {
            let mut cmd = Cli::command();
            let list = cmd
                .find_subcommand_mut(kind)
                .and_then(|c| c.find_subcommand_mut("list"))
                .unwrap_or_else(|| panic!("{kind} list"));
            list.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        };
        let access = flags("access");
        let actions = flags("model-action");
        let processes = flags("process");
        for common in ["from", "to", "limit", "json"] {
            for f in [&access, &actions, &processes] {
                assert!(f.iter().any(|x| x == common), "{common} in {f:?}");
            }
        }
        for only_actions in ["model", "instance", "action"] {
            assert!(!access.iter().any(|x| x == only_actions), "{access:?}");
            assert!(
                !processes.iter().any(|x| x == only_actions),
                "{processes:?}"
            );
            assert!(actions.iter().any(|x| x == only_actions), "{actions:?}");
        }
        for only_accesses in [
            "url",
            "url-regex",
            "url-contains",
            "user-id",
            "view",
            "exception",
        ] {
            assert!(!actions.iter().any(|x| x == only_accesses), "{actions:?}");
            assert!(
                !processes.iter().any(|x| x == only_accesses),
                "{processes:?}"
            );
            assert!(access.iter().any(|x| x == only_accesses), "{access:?}");
        }
        let refused =
            Cli::try_parse_from(["audit", "access", "list", "--action", "create"]).unwrap_err();
        assert_eq!(refused.exit_code(), 2);
        assert!(Cli::try_parse_from(["audit", "process", "list", "--url-regex", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["audit", "model-action", "list", "--interlink", "x"]).is_err()
        );
    }
}
