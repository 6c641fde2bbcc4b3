//! The `audit` command line: the original's `prepare_audit`, `remove_audit` and `drop_audit`
//! (with its unsafe argument handling fixed: extra arguments are an error, and processes still
//! referenced are kept), plus listing and exporting the trail.
//!
//! Exit codes: 0 success, 1 runtime failure (store unreachable, ...), 2 usage error.

use crate::config::{parse_connection_str, AuditConfig, ConfigError};
use crate::document::{Action, Collection};
use crate::query::UrlMatch;
use crate::store::{Filter, FindOptions, Order, Store, StoreError};
use bson::{Bson, Document};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Audit trail administration: prepare and remove the store, drop old data, list and export records.
#[derive(Parser, Debug)]
#[command(name = "audit", version, about)]
pub struct Cli {
    /// The store: a SQLite path or a mongodb:// URI (default: the config file's, then AUDIT_DB,
    /// then audit.db).
    #[arg(long, global = true)]
    pub db: Option<String>,
    /// The TOML configuration file (default: AUDIT_CONFIG, then ./audit.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// How long one query may run before it is stopped, in milliseconds (listing and the console).
    #[arg(long, global = true, default_value_t = 30_000)]
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
    Drop {
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
    },
    /// Accesses.
    Access {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Model actions.
    ModelAction {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Processes.
    Process {
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Write a new Ed25519 key pair for signing seals: the private key to PATH (0600), the
    /// public key to PATH.pub.
    Keygen {
        /// Where the private key goes (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Check that nobody edited the trail: recompute every seal chain and re-hash every sealed
    /// record. Exit 0 when intact, 1 when anything is wrong.
    Verify {
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
        /// Records younger than this many seconds may still be waiting for their seal.
        #[arg(long, default_value_t = 600)]
        in_flight_secs: u64,
        /// Accept records with no seal dated before this (DATE[THH:MM]): a trail written before
        /// sealing was turned on. Records forged with an older date then go unnoticed.
        #[arg(long)]
        accept_unsealed_before: Option<String>,
    },
    /// Replace a user's personal data in their accesses (and the model actions those caused)
    /// with a tombstone, stated in an erasure seal so that `verify` still passes.
    Erase {
        /// The user id (an integer, or any string id).
        #[arg(long)]
        user_id: String,
        /// Print what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Stream every matching document as JSON lines.
    Export {
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
    },
    /// Serve the read-only console (JSON API and web pages) until SIGTERM or Ctrl-C.
    #[cfg(feature = "console")]
    Serve(ServeArgs),
}

#[cfg(feature = "console")]
#[derive(Args, Debug)]
struct ServeArgs {
    /// Where to listen, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// A file holding the access token (default: AUDIT_CONSOLE_TOKEN). Without a token the console
    /// only listens on loopback addresses.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ListOnly {
    /// List records, newest first.
    List(ListArgs),
}

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

#[derive(Args, Debug, Default)]
struct ListArgs {
    /// Exact request path.
    #[arg(long)]
    url: Option<String>,
    /// Request path matching a regex.
    #[arg(long)]
    url_regex: Option<String>,
    /// Request path containing a text.
    #[arg(long)]
    url_contains: Option<String>,
    /// User id (an integer, or any string id).
    #[arg(long)]
    user_id: Option<String>,
    /// Handler full name.
    #[arg(long)]
    view: Option<String>,
    /// Exception type.
    #[arg(long)]
    exception: Option<String>,
    /// Model full name (repeatable: any of them, exactly).
    #[arg(long)]
    model: Vec<String>,
    /// Instance id.
    #[arg(long)]
    instance: Option<String>,
    /// create, update or delete.
    #[arg(long)]
    action: Option<String>,
    /// Correlation id.
    #[arg(long)]
    interlink: Option<String>,
    /// From this date (DATE[THH:MM]).
    #[arg(long)]
    from: Option<String>,
    /// Up to this date (a bare DATE includes the whole day).
    #[arg(long)]
    to: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// One JSON object per line (relaxed Extended JSON, the stored field names).
    #[arg(long)]
    json: bool,
}

/// A failure, with the exit code it maps to.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(String),
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Runtime(e.to_string())
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Runtime(e.to_string())
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
        Err(CliError::Usage(m)) => {
            eprintln!("audit: {m}");
            2
        }
        Err(CliError::Runtime(m)) => {
            eprintln!("audit: {m}");
            1
        }
    };
    std::process::exit(code)
}

fn load_config(cli: &Cli) -> Result<AuditConfig, CliError> {
    let named = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("AUDIT_CONFIG").map(PathBuf::from));
    let text = match &named {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CliError::Usage(format!("cannot read config file {}: {e}", p.display()))
        })?),
        None => std::fs::read_to_string(crate::config::DEFAULT_CONFIG_FILE).ok(),
    };
    let file_sets_db = text
        .as_deref()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("db_connection"));
    // Precedence of the store: --db, then the config file, then AUDIT_DB, then the default.
    let env = std::env::vars()
        .filter(|(k, _)| !(file_sets_db && (k == "AUDIT_DB" || k == "AUDIT_DB_CONNECTION")));
    let mut config = AuditConfig::from_sources(text.as_deref(), env)?;
    if let Some(db) = &cli.db {
        config = config
            .with_connection(parse_connection_str(db).map_err(|e| CliError::Usage(e.to_string()))?);
    }
    Ok(config)
}

async fn open(config: &AuditConfig) -> Result<Store, CliError> {
    Store::open(&config.db_connection).await.map_err(|e| {
        CliError::Runtime(format!(
            "cannot open the store {}: {e}",
            config.db_connection
        ))
    })
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = load_config(&cli)?;
    let query_timeout = std::time::Duration::from_millis(cli.query_timeout_ms);
    #[cfg(feature = "console")]
    if let Command::Serve(args) = &cli.command {
        return serve(&config, args, query_timeout).await;
    }
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Prepare => {
            let store = open(&config).await?;
            let ensured = store.ensure_indexes(&config).await?;
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
        }
        Command::Remove { purge, yes } => {
            let store = open(&config).await?;
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
            if purge {
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
                seal_removal(&store, &config, "remove --purge", None, &counts).await?;
                for (c, n) in counts {
                    store.drop_collection(c).await?;
                    writeln!(out, "deleted  {n} documents from {c}")?;
                }
            }
        }
        Command::Drop {
            init_date,
            end_date,
            extra,
            yes,
            dry_run,
        } => {
            if !extra.is_empty() {
                return Err(CliError::Usage(format!(
                    "drop takes at most two dates, got {}",
                    2 + extra.len()
                )));
            }
            let range = drop_range(init_date.as_deref(), end_date.as_deref(), Utc::now())?;
            let store = open(&config).await?;
            drop_data(&store, &config, range, yes, dry_run, &mut out).await?;
        }
        Command::Access {
            command: ListOnly::List(args),
        } => list(&config, Kind::Access, args, query_timeout, &mut out).await?,
        Command::ModelAction {
            command: ListOnly::List(args),
        } => list(&config, Kind::ModelAction, args, query_timeout, &mut out).await?,
        Command::Process {
            command: ListOnly::List(args),
        } => list(&config, Kind::Process, args, query_timeout, &mut out).await?,
        Command::Keygen { out: path } => {
            let public = crate::seal::keygen(&path).map_err(|e| CliError::Usage(e.to_string()))?;
            let hex: String = public
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            writeln!(
                out,
                "private key: {} (keep it from the database's administrators)\npublic key:  {} ({hex})\nsign seals with: seal_key_file = \"{}\"",
                path.display(),
                crate::seal::public_key_path(&path).display(),
                path.display()
            )?;
        }
        Command::Verify {
            key,
            from,
            to,
            json,
            in_flight_secs,
            accept_unsealed_before,
        } => {
            let key = key
                .map(|k| crate::seal::load_verifying_key(&k))
                .transpose()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let opts = crate::seal::VerifyOptions {
                key,
                from: from
                    .as_deref()
                    .map(|f| parse_moment(f, false))
                    .transpose()?,
                to: to.as_deref().map(|t| parse_moment(t, true)).transpose()?,
                in_flight: std::time::Duration::from_secs(in_flight_secs),
                accept_unsealed_before: accept_unsealed_before
                    .as_deref()
                    .map(|t| parse_moment(t, false))
                    .transpose()?,
            };
            let store = open_existing(&config).await?;
            verify(&store, &opts, json, &mut out).await?;
        }
        Command::Erase {
            user_id,
            dry_run,
            yes,
        } => {
            let store = open_existing(&config).await?;
            let id = user_id
                .parse::<i64>()
                .map(Bson::Int64)
                .unwrap_or_else(|_| Bson::String(user_id.clone()));
            let would = crate::seal::erase_user(&store, &config, &id, true)
                .await
                .map_err(|e| CliError::Runtime(e.to_string()))?;
            let what = format!(
                "{} accesses and {} model actions of user {}",
                would.accesses,
                would.model_actions,
                escape_for_terminal(&user_id)
            );
            if dry_run {
                writeln!(out, "would erase the personal data of {what}")?;
                return Ok(());
            }
            if !yes && !confirm(&format!("Erase the personal data of {what}?"))? {
                writeln!(out, "Aborted: nothing changed.")?;
                return Ok(());
            }
            let done = crate::seal::erase_user(&store, &config, &id, false)
                .await
                .map_err(|e| CliError::Runtime(e.to_string()))?;
            writeln!(
                out,
                "erased the personal data of {} accesses and {} model actions",
                done.accesses, done.model_actions
            )?;
        }
        Command::Export {
            kind,
            from,
            to,
            out: file,
        } => {
            let c = kind.collection();
            let filter = date_filter(c, from.as_deref(), to.as_deref())?;
            let store = open(&config).await?;
            export(&store, c, &filter, file, &mut out).await?;
        }
        #[cfg(feature = "console")]
        Command::Serve(_) => unreachable!("served above"),
    }
    Ok(())
}

// === serve ===

#[cfg(feature = "console")]
async fn serve(
    config: &AuditConfig,
    args: &ServeArgs,
    query_timeout: std::time::Duration,
) -> Result<(), CliError> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| {
                    CliError::Usage(format!("cannot read token file {}: {e}", p.display()))
                })?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("AUDIT_CONSOLE_TOKEN").ok(),
    };
    if token.as_deref() == Some("") {
        return Err(CliError::Usage(
            "the console token is empty (--token-file or AUDIT_CONSOLE_TOKEN)".into(),
        ));
    }
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&args.addr)
        .await
        .map_err(|e| CliError::Usage(format!("--addr `{}`: {e}", args.addr)))?
        .collect();
    if token.is_none() {
        if let Some(why) = crate::console::serve::refuse_without_token(&addrs) {
            return Err(CliError::Usage(why));
        }
    }
    let store = open(config).await?;
    let listener = tokio::net::TcpListener::bind(&addrs[..])
        .await
        .map_err(|e| CliError::Runtime(format!("cannot listen on {}: {e}", args.addr)))?;
    let local = listener.local_addr()?;
    println!(
        "audit console on http://{local}/ ({}, store {})",
        if token.is_some() {
            "token required"
        } else {
            "no token: loopback only"
        },
        config.db_connection
    );
    std::io::stdout().flush()?;
    crate::console::serve::serve(store, listener, token, query_timeout)
        .await
        .map_err(CliError::from)
}

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

/// Parses `dd/mm/yyyy` (the original's format) or `yyyy-mm-dd`.
pub fn parse_day(s: &str) -> Result<NaiveDate, CliError> {
    NaiveDate::parse_from_str(s, "%d/%m/%Y")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
        .map_err(|_| {
            CliError::Usage(format!(
                "invalid date `{s}`: expected dd/mm/yyyy or yyyy-mm-dd"
            ))
        })
}

/// Parses `DATE` or `DATETHH:MM`; a bare date is the start of the day, or its end with `end_of_day`.
pub fn parse_moment(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, CliError> {
    let (day, time) = match s.split_once('T') {
        Some((d, t)) => {
            let t = NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| CliError::Usage(format!("invalid time in `{s}`: expected THH:MM")))?;
            (d, Some(t))
        }
        None => (s, None),
    };
    let day = parse_day(day)?;
    let at = match time {
        Some(t) => day.and_time(t),
        None if end_of_day => {
            day.and_time(NaiveTime::from_hms_milli_opt(23, 59, 59, 999).expect("valid time"))
        }
        None => day.and_time(NaiveTime::MIN),
    };
    Ok(Utc.from_utc_datetime(&at))
}

/// An inclusive time range.
pub type Range = (DateTime<Utc>, DateTime<Utc>);

/// The range of `drop`: none → everything; one date → from its 00:00 to now; two →
/// from the first's 00:00 to the end of the second. END before INIT is a usage error.
pub fn drop_range(
    init: Option<&str>,
    end: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<Range>, CliError> {
    let Some(init) = init else { return Ok(None) };
    let from = parse_moment(init, false)?;
    let to = match end {
        Some(e) => parse_moment(e, true)?,
        None => now,
    };
    if to < from {
        return Err(CliError::Usage(format!(
            "END_DATE is before INIT_DATE ({} < {})",
            to.date_naive(),
            from.date_naive()
        )));
    }
    Ok(Some((from, to)))
}

fn outside(c: Collection, range: &Range) -> Filter {
    let at = |t: DateTime<Utc>| Bson::DateTime(bson::DateTime::from_chrono(t));
    Filter::Or(vec![
        Filter::Cmp(c.date_field().into(), crate::store::CmpOp::Lt, at(range.0)),
        Filter::Cmp(c.date_field().into(), crate::store::CmpOp::Gt, at(range.1)),
    ])
}

fn in_range(c: Collection, range: &Range) -> Filter {
    Filter::between(
        c.date_field(),
        bson::DateTime::from_chrono(range.0),
        bson::DateTime::from_chrono(range.1),
    )
}

async fn drop_data(
    store: &Store,
    config: &AuditConfig,
    range: Option<Range>,
    yes: bool,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let what = match &range {
        None => "all audit data".to_owned(),
        Some((f, t)) => format!(
            "audit data from {} to {}",
            f.format("%Y-%m-%d %H:%M:%S"),
            t.format("%Y-%m-%d %H:%M:%S")
        ),
    };
    let Some(range) = range else {
        let counts = [
            (
                Collection::Access,
                store.count(Collection::Access, &Filter::all()).await?,
            ),
            (
                Collection::ModelAction,
                store.count(Collection::ModelAction, &Filter::all()).await?,
            ),
            (
                Collection::Process,
                store.count(Collection::Process, &Filter::all()).await?,
            ),
        ];
        if dry_run {
            for (c, n) in counts {
                writeln!(out, "would delete {n} documents from {c}")?;
            }
            return Ok(());
        }
        if !yes && !confirm(&format!("Delete {what} in {}?", config.db_connection))? {
            writeln!(out, "Aborted: nothing deleted.")?;
            return Ok(());
        }
        seal_removal(store, config, "drop", None, &counts).await?;
        for (c, n) in counts {
            store.drop_collection(c).await?;
            writeln!(out, "deleted {n} documents from {c}")?;
        }
        // Dropping removed the indexes too; leave the store ready.
        store.ensure_indexes(config).await?;
        return Ok(());
    };
    let access_filter = in_range(Collection::Access, &range);
    let action_filter = in_range(Collection::ModelAction, &range);
    let accesses = store.count(Collection::Access, &access_filter).await?;
    let actions = store.count(Collection::ModelAction, &action_filter).await?;
    // A process goes only when no record that stays references it: deleting it would leave dangling references.
    let candidates = store
        .find_raw(
            Collection::Process,
            &FindOptions::new(in_range(Collection::Process, &range)),
        )
        .await?;
    let mut orphans = Vec::new();
    for p in candidates {
        let Ok(id) = p.get_object_id("_id") else {
            continue;
        };
        let staying_accesses = Filter::And(vec![
            Filter::eq("process", id),
            outside(Collection::Access, &range),
        ]);
        let staying_actions = Filter::And(vec![
            Filter::eq("process", id),
            outside(Collection::ModelAction, &range),
        ]);
        if store.count(Collection::Access, &staying_accesses).await? == 0
            && store
                .count(Collection::ModelAction, &staying_actions)
                .await?
                == 0
        {
            orphans.push(Bson::ObjectId(id));
        }
    }
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
            "would delete {} documents from {}",
            orphans.len(),
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
            (Collection::Process, orphans.len() as u64),
        ],
    )
    .await?;
    let a = store
        .delete_many(Collection::Access, &access_filter)
        .await?;
    let m = store
        .delete_many(Collection::ModelAction, &action_filter)
        .await?;
    let p = store
        .delete_many(Collection::Process, &Filter::In("_id".into(), orphans))
        .await?;
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
async fn seal_removal(
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
    crate::seal::seal_prune(store, config, reason, &ranges)
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    Ok(())
}

/// Opens a store that must already exist: a mistyped SQLite path is an error, not a new empty
/// database that then verifies clean.
async fn open_existing(config: &AuditConfig) -> Result<Store, CliError> {
    if let crate::config::DbConnection::Sqlite(path) = &config.db_connection {
        if !path.exists() {
            return Err(CliError::Usage(format!(
                "no audit database at {}",
                path.display()
            )));
        }
    }
    open(config).await
}

async fn verify(
    store: &Store,
    opts: &crate::seal::VerifyOptions,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("verifying: seals and records read");
        Some(bar)
    } else {
        None
    };
    let mut write_error = None;
    let summary = crate::seal::verify(
        store,
        opts,
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
    .await
    .map_err(|e| CliError::Runtime(e.to_string()))?;
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
                "head: stream {} seq {} hash {}",
                h.stream, h.seq, h.hash
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
        return Err(CliError::Runtime(format!(
            "{} findings: the trail is not intact",
            summary.findings
        )));
    }
    if !json {
        writeln!(out, "intact")?;
    }
    Ok(())
}

fn date_filter(c: Collection, from: Option<&str>, to: Option<&str>) -> Result<Filter, CliError> {
    let mut parts = Vec::new();
    if let Some(f) = from {
        parts.push(Filter::gte(
            c.date_field(),
            bson::DateTime::from_chrono(parse_moment(f, false)?),
        ));
    }
    if let Some(t) = to {
        parts.push(Filter::lte(
            c.date_field(),
            bson::DateTime::from_chrono(parse_moment(t, true)?),
        ));
    }
    Ok(Filter::And(parts))
}

fn list_filter(kind: Kind, a: &ListArgs) -> Result<Filter, CliError> {
    let c = kind.collection();
    let mut parts = vec![date_filter(c, a.from.as_deref(), a.to.as_deref())?];
    let only =
        |flag: &str, kinds: &str| CliError::Usage(format!("--{flag} applies to {kinds} only"));
    match kind {
        Kind::Access => {
            if !a.model.is_empty() || a.instance.is_some() || a.action.is_some() {
                return Err(only("model/--instance/--action", "model-action list"));
            }
            let urls = [
                a.url.is_some(),
                a.url_regex.is_some(),
                a.url_contains.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if urls > 1 {
                return Err(CliError::Usage(
                    "use only one of --url, --url-regex, --url-contains".into(),
                ));
            }
            let url = a
                .url
                .clone()
                .map(UrlMatch::Exact)
                .or_else(|| a.url_regex.clone().map(UrlMatch::Regex))
                .or_else(|| a.url_contains.clone().map(UrlMatch::Contains));
            if let Some(m) = url {
                parts.push(
                    m.to_filter("request.path")
                        .map_err(|e| CliError::Usage(e.to_string()))?,
                );
            }
            if let Some(u) = &a.user_id {
                let id: Bson = u
                    .parse::<i64>()
                    .map(Bson::Int64)
                    .unwrap_or_else(|_| Bson::String(u.clone()));
                parts.push(Filter::Eq("user.id".into(), id));
            }
            if let Some(v) = &a.view {
                parts.push(Filter::eq("view.full_name", v.as_str()));
            }
            if let Some(e) = &a.exception {
                parts.push(Filter::eq("exception.type", e.as_str()));
            }
            if let Some(i) = &a.interlink {
                parts.push(Filter::eq("interlink_id", i.as_str()));
            }
        }
        Kind::ModelAction => {
            if a.url.is_some()
                || a.url_regex.is_some()
                || a.url_contains.is_some()
                || a.user_id.is_some()
                || a.view.is_some()
                || a.exception.is_some()
                || a.interlink.is_some()
            {
                return Err(only(
                    "url/--user-id/--view/--exception/--interlink",
                    "access list",
                ));
            }
            if !a.model.is_empty() {
                parts.push(Filter::In(
                    "model.full_name".into(),
                    a.model.iter().map(|m| Bson::String(m.clone())).collect(),
                ));
            }
            if let Some(i) = &a.instance {
                parts.push(Filter::eq("instance.id", i.as_str()));
            }
            if let Some(act) = &a.action {
                let act: Action = act.parse().map_err(CliError::Usage)?;
                parts.push(Filter::eq("action", act.as_str()));
            }
        }
        Kind::Process => {
            if a.url.is_some()
                || a.user_id.is_some()
                || a.view.is_some()
                || !a.model.is_empty()
                || a.action.is_some()
            {
                return Err(only(
                    "filters other than --from/--to/--interlink",
                    "access and model-action lists",
                ));
            }
            if let Some(i) = &a.interlink {
                parts.push(Filter::eq("interlink_id", i.as_str()));
            }
        }
    }
    Ok(Filter::And(parts))
}

async fn list(
    config: &AuditConfig,
    kind: Kind,
    args: ListArgs,
    query_timeout: std::time::Duration,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let c = kind.collection();
    let filter = list_filter(kind, &args)?;
    let store = open(config).await?;
    let opts = FindOptions::new(filter)
        .sort(c.date_field(), Order::Desc)
        .window(0, Some(args.limit))
        .max_time(query_timeout);
    let docs = store.find_raw(c, &opts).await?;
    for d in docs {
        if args.json {
            writeln!(out, "{}", json_line(d))?;
        } else {
            writeln!(out, "{}", table_row(kind, &d))?;
        }
    }
    Ok(())
}

/// One stored document as relaxed Extended JSON, on one line.
pub fn json_line(d: Document) -> String {
    Bson::Document(d).into_relaxed_extjson().to_string()
}

fn table_row(kind: Kind, d: &Document) -> String {
    let s = |path: &str| -> String {
        let mut cur = Some(Bson::Document(d.clone()));
        for seg in path.split('.') {
            cur = match cur {
                Some(Bson::Document(doc)) => doc.get(seg).cloned(),
                _ => None,
            };
        }
        let text = match cur {
            Some(Bson::String(s)) => s,
            Some(Bson::DateTime(t)) => t.to_chrono().format("%Y-%m-%d %H:%M:%S").to_string(),
            Some(Bson::Null) | None => "-".into(),
            Some(Bson::Document(doc)) => doc.keys().cloned().collect::<Vec<_>>().join(","),
            Some(other) => other.to_string(),
        };
        escape_for_terminal(&text)
    };
    match kind {
        Kind::Access => format!(
            "{}  {:<12} {:<6} {:<40} {:<4} {}{}",
            s("time.request"),
            s("user.username"),
            s("request.METADATA.REQUEST_METHOD"),
            s("request.path"),
            s("response.status_code"),
            s("view.full_name"),
            if d.contains_key("exception") {
                format!("  !{}", s("exception.type"))
            } else {
                String::new()
            }
        ),
        Kind::ModelAction => format!(
            "{}  {:<30} {:<6} {:<10} {}",
            s("timestamp"),
            s("model.full_name"),
            s("action"),
            s("instance.id"),
            s("content.changes")
        ),
        Kind::Process => format!(
            "{}  {:<20} pid {:<8} {:<12} {}",
            s("creation_time"),
            s("name"),
            s("pid"),
            s("user"),
            s("machine")
        ),
    }
}

/// A stored value made safe to print on a terminal: the values come from clients (a path, a user
/// name), so a line break in one would forge a row of the table and an escape sequence would
/// drive the terminal. Control characters, the bidirectional overrides that reorder what is
/// shown, and the backslash (so the escaping stays unambiguous) are written as Rust escapes.
pub fn escape_for_terminal(s: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.contains(unsafe_char) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

async fn export(
    store: &Store,
    c: Collection,
    filter: &Filter,
    file: Option<PathBuf>,
    stdout: &mut impl Write,
) -> Result<(), CliError> {
    let total = store.count(c, filter).await?;
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
    let mut file_out = match &file {
        // Private (0600) whatever the umask, and never written through a symlink: an export is
        // the audit trail itself.
        Some(p) => Some(std::io::BufWriter::new(crate::journal::open_private(
            p, true,
        )?)),
        None => None,
    };
    let mut write_err = None;
    let written = store
        .for_each_batch(c, filter, 1000, |batch| {
            for d in batch {
                let line = json_line(d);
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
    if let Some(p) = file {
        eprintln!("exported {written} documents from {c} to {}", p.display());
    }
    Ok(())
}
