//! Configuration: every setting of the original in one immutable [`AuditConfig`], built
//! once at startup from code defaults, a TOML file and `AUDIT_*` environment variables (in that
//! order of precedence, lowest first), and validated once. Nothing is read again at request time;
//! a new configuration means building a new value (settings never change under a running auditor).
//!
//! The file below names every setting with its environment variable (it is also a test: it must
//! load as it is). An unknown key in the file is an error; an unknown `AUDIT_*` environment
//! variable only logs a warning naming it, since it may belong to another tool.
//!
//! ```toml
#![doc = include_str!("example.toml")]
//! ```
//!
//! Database credentials may also come from `DB_AUDIT_USER` and `DB_AUDIT_PASSWORD`, as the
//! original's installation steps set them; they are percent-encoded into the URI (a reserved
//! character in a password cannot break it) and never printed.
//!
//! [`AuditConfig::load`] logs at info level which file it read (or that there was none, so only
//! the defaults and the environment apply) and which store the configuration names, with any
//! password masked: a process started from another directory shows it at once.

use crate::blacklist::Blacklist;
use crate::document::Collection;
use crate::index::{default_indexes, validate_index_path, IndexSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};

mod connection;
mod forward;

use connection::{apply_env_credentials, parse_connection, Credentials};
pub use connection::{parse_connection_str, redact_uri, DbConnection, MongoParts};
pub(crate) use forward::syslog_address;
pub use forward::ForwardConfig;

/// The embedded default database file, in the working directory (like Django's `db.sqlite3`).
pub const DEFAULT_SQLITE_PATH: &str = "audit.db";
/// The config file read when none is named and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "audit.toml";
/// Default bound of the async writer's queue, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8_192;

/// Default bound on the bytes of encoded records the writer holds in memory (64 MiB).
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// A configuration that cannot be used. The message names the setting and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit configuration: {0}")]
#[non_exhaustive]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// What the async writer does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait for room (back-pressure). The default: these are audit records.
    Block,
    /// Drop the record and count it. Only when chosen explicitly.
    Drop,
}

/// The whole configuration, validated.
///
/// Built by [`AuditConfig::load`] or [`AuditConfig::from_sources`], or from
/// [`AuditConfig::default`] with fields set one by one (new settings may be added, so it cannot be
/// written as a struct literal outside this crate):
///
/// ```
/// let mut config = audit_runtime::AuditConfig::default();
/// config.run_async = true;
/// config.capture.max_body_bytes = 1024;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Master switch (default `true`, as the original documented, though its code defaulted to off).
    pub activate: bool,
    /// The original's connection alias; kept as a label for logs.
    pub db_alias: String,
    /// Where documents are stored.
    pub db_connection: DbConnection,
    /// Write through the background writer instead of before the response.
    pub run_async: bool,
    /// Name of the writer's queue (the original's Celery queue; used as the writer's log target).
    pub queue_name: String,
    /// Models whose actions are recorded, by full name (`crate::module::Type`).
    pub logged_models: Vec<String>,
    /// Compiled blacklist.
    pub blacklist: Blacklist,
    /// Extra indexes on `audit_access`.
    pub access_indexes: Vec<IndexSpec>,
    /// Extra indexes on `audit_process`.
    pub process_indexes: Vec<IndexSpec>,
    /// Extra indexes on `audit_model_action`.
    pub model_action_indexes: Vec<IndexSpec>,
    /// App name → registered provider name.
    pub custom_provider: BTreeMap<String, String>,
    /// Kept for parity; the port has no URL patterns of its own to translate.
    pub translate_urls: bool,
    /// Capacity of the async writer's queue.
    pub queue_capacity: usize,
    /// What the async writer does when full.
    pub full_policy: FullPolicy,
    /// How long shutdown may take to flush the writer (and sync mode waits for a write).
    pub flush_timeout: Duration,
    /// What the HTTP layer captures and redacts.
    pub capture: CaptureConfig,
    /// The spill journal: where records go while the store cannot take them (and at a shutdown
    /// whose deadline passed); replayed in order when the store answers again or at the next
    /// start. Off by default: without it, an outage is absorbed by the queue and then by
    /// back-pressure.
    pub spill_path: Option<PathBuf>,
    /// Write a seal (the hash chain over the stored records) after every batch. On by default.
    pub seal: bool,
    /// The Ed25519 private key (PEM, from `audit keygen`) that signs every seal; unsigned seals
    /// without it.
    pub seal_key_file: Option<PathBuf>,
    /// Every this many seals (or every `checkpoint_interval_secs`, whichever comes first) the
    /// writer publishes its stream's checkpoint: the tree head, signed, to the log at info level
    /// and to the witness sinks (`checkpoint_file`, `checkpoint_url`).
    pub seal_anchor_every: u64,
    /// Seconds after which a new seal is published as a checkpoint even if fewer than
    /// `seal_anchor_every` seals were made (0: by count only).
    pub checkpoint_interval_secs: u64,
    /// The append-only file each published checkpoint is added to (a signed note and a blank
    /// line; created 0600, never through a symlink). Keep it where the database's administrators
    /// cannot rewrite it: another disk, a mounted WORM bucket. Needs `seal_key_file`.
    pub checkpoint_file: Option<PathBuf>,
    /// An `http://` or `https://` endpoint each published checkpoint is POSTed to (a witness
    /// service). Needs `seal_key_file` and the `witness` feature.
    pub checkpoint_url: Option<String>,
    /// The trail's name in its checkpoints (`<trail_name>/<stream>` is their origin) and the
    /// name of the key that signs them. No spaces and no `+`; default `audit-tools`.
    pub trail_name: String,
    /// Where stored, sealed records are forwarded (a SIEM, a collector, a file), and as what.
    pub forward: ForwardConfig,
    /// What `audit erase` replaces with a tombstone besides the user name: dotted paths in the
    /// user's accesses and in the model actions they caused, each erased leaf by leaf except the
    /// paths of [`seal::ERASURE_KEEPS`](crate::seal::ERASURE_KEEPS) inside it (by default every
    /// value but what says what was done). Strings holding the user's name go wherever they are.
    pub erase_fields: Vec<String>,
    /// Accesses and model actions older than this many days are removed by the writer (at
    /// start, then hourly), each removal stated in a prune seal first. Off by default.
    pub retention_days: Option<u32>,
    /// Where records the store refuses for good (even trimmed) and damaged journal regions are
    /// kept, in the journal's format; `None` means the default next to the spill journal or the
    /// SQLite file (see [`AuditConfig::quarantine_file`]).
    pub quarantine_path: Option<PathBuf>,
    /// Bound on the bytes of encoded records the writer holds in memory (queued or waiting for
    /// room), alongside `queue_capacity`'s bound on their number.
    pub queue_max_bytes: usize,
}

/// The `[capture]` table: what the HTTP layer stores of a request and its response.
///
/// Which names are secrets is decided by one policy, [`Redaction`](crate::Redaction): its built-in patterns are
/// always on (unless `redact = false`); `redact_keys` and `redact_headers` *add* to them, and only
/// `unredact_keys` / `unredact_headers` take a default away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureConfig {
    /// Mask secrets (on by default: storing them in clear has to be asked for).
    pub redact: bool,
    /// Extra key patterns masked besides the built-in ones (query, form, JSON and XML keys, URL
    /// parameters): normalised names containing one of these are secrets.
    pub redact_keys: Vec<String>,
    /// Built-in key patterns taken away (`"session"` stops masking `sessionid`), and exact names
    /// never masked (`"csrf_token"`).
    pub unredact_keys: Vec<String>,
    /// Extra headers masked whole, by name. Every cookie value is masked too.
    pub redact_headers: Vec<String>,
    /// Headers never masked whole, by name, even when the policy would (`"cookie"`).
    pub unredact_headers: Vec<String>,
    /// Largest form body (request) and JSON/XML body (response) stored, in bytes.
    pub max_body_bytes: usize,
    /// Largest exception message, and largest exception trace, stored, in bytes.
    pub max_exception_bytes: usize,
    /// The header carrying the correlation id (also echoed on the response).
    pub interlink_header: String,
    /// The app of routes without `#[audited_view]` (for the blacklist and `view.app`).
    pub default_app: String,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            redact: true,
            redact_keys: Vec::new(),
            unredact_keys: Vec::new(),
            redact_headers: Vec::new(),
            unredact_headers: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_exception_bytes: crate::redact::DEFAULT_MAX_EXCEPTION_BYTES,
            interlink_header: "x-request-id".into(),
            default_app: String::new(),
        }
    }
}

/// The default `erase_fields`: every value of an access but what says what was done (the
/// method inside `request.METADATA` stays, as [`seal::ERASURE_KEEPS`](crate::seal::ERASURE_KEEPS)
/// says).
pub const DEFAULT_ERASE_FIELDS: [&str; 11] = [
    "request.GET",
    "request.POST",
    "request.COOKIES",
    "request.METADATA",
    "request.RAW_METADATA",
    "response.content",
    "exception.message",
    "exception.trace",
    "view.args",
    "view.kwargs",
    "custom",
];

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            activate: true,
            db_alias: "audit".into(),
            db_connection: DbConnection::Sqlite(DEFAULT_SQLITE_PATH.into()),
            run_async: false,
            queue_name: "audit".into(),
            logged_models: Vec::new(),
            blacklist: Blacklist::default(),
            access_indexes: Vec::new(),
            process_indexes: Vec::new(),
            model_action_indexes: Vec::new(),
            custom_provider: BTreeMap::new(),
            translate_urls: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            full_policy: FullPolicy::Block,
            flush_timeout: Duration::from_secs(10),
            capture: CaptureConfig::default(),
            spill_path: None,
            seal: true,
            seal_key_file: None,
            seal_anchor_every: 100,
            checkpoint_interval_secs: 60,
            checkpoint_file: None,
            checkpoint_url: None,
            trail_name: crate::seal::DEFAULT_TRAIL_NAME.to_owned(),
            forward: ForwardConfig::default(),
            erase_fields: DEFAULT_ERASE_FIELDS.map(String::from).to_vec(),
            retention_days: None,
            quarantine_path: None,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
        }
    }
}

/// The longest retention there is: 100 years (a longer one would reach before the calendar's
/// start once subtracted from now).
pub(crate) const MAX_RETENTION_DAYS: u32 = 36_500;

const KEYS: &[&str] = &[
    "activate",
    "db_alias",
    "db_connection",
    "run_async",
    "queue_name",
    "logged_models",
    "blacklist",
    "access_indexes",
    "process_indexes",
    "model_action_indexes",
    "custom_provider",
    "translate_urls",
    "queue_capacity",
    "full_policy",
    "flush_timeout_ms",
    "capture",
    "spill_path",
    "seal",
    "seal_key_file",
    "seal_anchor_every",
    "checkpoint_interval_secs",
    "checkpoint_file",
    "checkpoint_url",
    "trail_name",
    "forward",
    "erase_fields",
    "retention_days",
    "quarantine_path",
    "queue_max_bytes",
];

/// Variables of this project under the `AUDIT_` prefix that are not settings: skipped without the
/// warning an unknown one gets.
const NON_SETTING_VARS: &[&str] = &[
    "AUDIT_MACROS_DEBUG",
    "AUDIT_CONFIG",
    "AUDIT_LOG",
    "AUDIT_CONSOLE_TOKEN",
];

impl AuditConfig {
    /// Loads the configuration of a process: the file `path` (or `AUDIT_CONFIG`, or `audit.toml`
    /// when it exists), then the process environment. Logs at info level which file was read (or
    /// that none was) and which store is configured, its password masked.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = read_config_file(path)?;
        let config = Self::from_sources(file.as_ref().map(|f| f.1.as_str()), std::env::vars())?;
        tracing::info!(
            "{}",
            describe_sources(file.as_ref().map(|f| f.0.as_path()), &config)
        );
        Ok(config)
    }

    /// Like [`load`](Self::load), except that a `db_connection` set in the file wins over
    /// `AUDIT_DB` / `AUDIT_DB_CONNECTION` in the environment. The `audit` command line loads its
    /// configuration this way: the file an operator names says which store a command reads or
    /// deletes from, whatever store the shell's environment points the application at.
    pub fn load_preferring_file_store(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = read_config_file(path)?;
        let text = file.as_ref().map(|f| f.1.as_str());
        let file_sets_db = text
            .and_then(|t| t.parse::<Table>().ok())
            .is_some_and(|t| t.contains_key("db_connection"));
        let names_store = |var: &str| {
            var.strip_prefix("AUDIT_")
                .is_some_and(|k| matches!(k.to_ascii_lowercase().as_str(), "db" | "db_connection"))
        };
        let env = std::env::vars().filter(|(k, _)| !(file_sets_db && names_store(k)));
        let config = Self::from_sources(text, env)?;
        tracing::info!(
            "{}",
            describe_sources(file.as_ref().map(|f| f.0.as_path()), &config)
        );
        Ok(config)
    }

    /// Builds the configuration from a TOML text (if any) and environment pairs. Unknown keys
    /// and invalid values are errors; an unknown `AUDIT_*` variable is logged as a warning and
    /// ignored (it may belong to another tool).
    pub fn from_sources<I, K, V>(toml_text: Option<&str>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table = match toml_text {
            Some(t) => t
                .parse::<Table>()
                .map_err(|e| ConfigError(format!("config file is not valid TOML: {e}")))?,
            None => Table::new(),
        };
        let mut credentials: Credentials = (None, None);
        for (k, v) in env {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "DB_AUDIT_USER" => credentials.0 = Some(v.to_owned()),
                "DB_AUDIT_PASSWORD" => credentials.1 = Some(v.to_owned()),
                _ => {
                    if let Some(key) = k.strip_prefix("AUDIT_") {
                        if NON_SETTING_VARS.contains(&k) {
                            continue;
                        }
                        if let Some(sub) = key
                            .to_ascii_lowercase()
                            .strip_prefix("forward_")
                            .filter(|s| forward::FORWARD_KEYS.contains(s))
                        {
                            // AUDIT_FORWARD_<KEY> sets `<key>` of the `[forward]` table.
                            let value = match sub {
                                "file_max_bytes" | "file_keep" => {
                                    v.trim().parse::<i64>().map(Value::Integer).map_err(|_| {
                                        ConfigError(format!("{k}: expected a number, got `{v}`"))
                                    })?
                                }
                                _ => Value::String(v.to_owned()),
                            };
                            let entry = table
                                .entry("forward")
                                .or_insert_with(|| Value::Table(Table::new()));
                            let Some(t) = entry.as_table_mut() else {
                                return err(format!("forward: expected a table, got {entry}"));
                            };
                            t.insert(sub.to_owned(), value);
                            continue;
                        }
                        if let Some((key, value)) = env_value(k, key, v)? {
                            table.insert(key, value);
                        }
                    }
                }
            }
        }
        Self::from_table(table, credentials)
    }

    /// Builds the configuration from a TOML table (file and environment merged).
    fn from_table(table: Table, credentials: Credentials) -> Result<Self, ConfigError> {
        let mut c = AuditConfig::default();
        for (key, value) in table {
            match key.as_str() {
                "activate" => c.activate = as_bool(&key, &value)?,
                "run_async" => c.run_async = as_bool(&key, &value)?,
                "translate_urls" => c.translate_urls = as_bool(&key, &value)?,
                "db_alias" => c.db_alias = as_str(&key, &value)?,
                "queue_name" => c.queue_name = as_str(&key, &value)?,
                "db_connection" => c.db_connection = parse_connection(&value, &credentials)?,
                "logged_models" => c.logged_models = as_str_list(&key, &value)?,
                "blacklist" => c.blacklist = parse_blacklist(&value)?,
                "access_indexes" => c.access_indexes = parse_indexes(&key, &value)?,
                "process_indexes" => c.process_indexes = parse_indexes(&key, &value)?,
                "model_action_indexes" => c.model_action_indexes = parse_indexes(&key, &value)?,
                "custom_provider" => c.custom_provider = parse_providers(&value)?,
                "queue_capacity" => {
                    c.queue_capacity = match value.as_integer() {
                        Some(n) if n > 0 => n as usize,
                        _ => {
                            return err(format!(
                                "queue_capacity: expected a positive integer, got {value}"
                            ))
                        }
                    }
                }
                "full_policy" => {
                    c.full_policy = match value.as_str() {
                        Some("block") => FullPolicy::Block,
                        Some("drop") => FullPolicy::Drop,
                        _ => {
                            return err(format!(
                                "full_policy: expected \"block\" or \"drop\", got {value}"
                            ))
                        }
                    }
                }
                "flush_timeout_ms" => {
                    c.flush_timeout = match value.as_integer() {
                        Some(n) if n >= 0 => Duration::from_millis(n as u64),
                        _ => {
                            return err(format!(
                                "flush_timeout_ms: expected a non-negative integer, got {value}"
                            ))
                        }
                    }
                }
                "capture" => c.capture = parse_capture(&value)?,
                "spill_path" => {
                    let p = as_str(&key, &value)?;
                    c.spill_path = (!p.is_empty()).then(|| PathBuf::from(p));
                }
                "seal" => c.seal = as_bool(&key, &value)?,
                "erase_fields" => c.erase_fields = as_str_list(&key, &value)?,
                "retention_days" => {
                    c.retention_days = match value.as_integer() {
                        Some(n) if n > 0 && n <= i64::from(MAX_RETENTION_DAYS) => Some(n as u32),
                        _ => {
                            return err(format!(
                                "retention_days: expected a number of days from 1 to \
                                 {MAX_RETENTION_DAYS}, got {value}"
                            ))
                        }
                    }
                }
                "seal_key_file" => {
                    let p = as_str(&key, &value)?;
                    c.seal_key_file = (!p.is_empty()).then(|| PathBuf::from(p));
                }
                "seal_anchor_every" => {
                    c.seal_anchor_every = match value.as_integer() {
                        Some(n) if n > 0 => n as u64,
                        _ => {
                            return err(format!(
                                "seal_anchor_every: expected a positive integer, got {value}"
                            ))
                        }
                    }
                }
                "quarantine_path" => {
                    let p = as_str(&key, &value)?;
                    c.quarantine_path = (!p.is_empty()).then(|| PathBuf::from(p));
                }
                "checkpoint_interval_secs" => {
                    c.checkpoint_interval_secs = match value.as_integer() {
                        Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => n as u64,
                        _ => {
                            return err(format!(
                                "checkpoint_interval_secs: expected a number of seconds, got \
                                 {value}"
                            ))
                        }
                    }
                }
                "checkpoint_file" => {
                    let p = as_str(&key, &value)?;
                    c.checkpoint_file = (!p.is_empty()).then(|| PathBuf::from(p));
                }
                "checkpoint_url" => {
                    let u = as_str(&key, &value)?;
                    if !(u.is_empty() || u.starts_with("http://") || u.starts_with("https://")) {
                        return err(format!(
                            "checkpoint_url: expected an http:// or https:// URL, got `{u}`"
                        ));
                    }
                    c.checkpoint_url = (!u.is_empty()).then_some(u);
                }
                "forward" => c.forward = forward::parse_forward(&value)?,
                "trail_name" => {
                    let n = as_str(&key, &value)?;
                    if !crate::seal::note::valid_key_name(&n) {
                        return err(format!(
                            "trail_name: `{n}` cannot name a trail (not empty, no spaces, no `+`)"
                        ));
                    }
                    c.trail_name = n;
                }
                "queue_max_bytes" => {
                    c.queue_max_bytes = match value.as_integer() {
                        Some(n) if n > 0 => n as usize,
                        _ => {
                            return err(format!(
                                "queue_max_bytes: expected a positive integer, got {value}"
                            ))
                        }
                    }
                }
                other => {
                    return err(format!(
                        "unknown setting `{other}` (known: {})",
                        KEYS.join(", ")
                    ))
                }
            }
        }
        apply_env_credentials(&mut c.db_connection, &credentials);
        if c.forward.is_on() && !c.seal {
            return err(
                "[forward] sends records once they are stored and sealed: it needs seal = true"
                    .to_owned(),
            );
        }
        if c.checkpoint_file.is_some() || c.checkpoint_url.is_some() {
            if c.seal_key_file.is_none() || !c.seal {
                return err(
                    "checkpoint_file and checkpoint_url publish checkpoints signed with the seal \
                     key: set seal_key_file (AUDIT_SEAL_KEY_FILE), with seal = true"
                        .to_owned(),
                );
            }
            if c.checkpoint_url.is_some() && !cfg!(feature = "witness") {
                return err(
                    "checkpoint_url needs audit-runtime's `witness` feature (the HTTP client)"
                        .to_owned(),
                );
            }
        }
        Ok(c)
    }

    /// Default plus custom indexes of one collection.
    pub fn indexes_for(&self, c: Collection) -> Vec<IndexSpec> {
        let custom = match c {
            Collection::Access => &self.access_indexes,
            Collection::Process => &self.process_indexes,
            Collection::ModelAction => &self.model_action_indexes,
            Collection::Seal | Collection::Salt => &Vec::new(),
        };
        let mut all = default_indexes(c);
        for spec in custom {
            if !all.iter().any(|d| d.name() == spec.name()) {
                all.push(spec.clone());
            }
        }
        all
    }

    /// The quarantine file: `quarantine_path`, else the spill journal's path + `.quarantine`, else
    /// the SQLite file's path + `.quarantine`, else `audit.quarantine` in the working directory.
    pub fn quarantine_file(&self) -> PathBuf {
        let beside = |p: &Path| {
            let mut s = p.as_os_str().to_owned();
            s.push(".quarantine");
            PathBuf::from(s)
        };
        if let Some(p) = &self.quarantine_path {
            return p.clone();
        }
        if let Some(p) = &self.spill_path {
            return beside(p);
        }
        match &self.db_connection {
            DbConnection::Sqlite(p) => beside(p),
            _ => PathBuf::from("audit.quarantine"),
        }
    }

    /// The forwarder's cursor file: `forward.cursor_file`, else beside the forwarded file, the
    /// SQLite file, or `audit.forward-cursor` in the working directory.
    pub fn forward_cursor_file(&self) -> PathBuf {
        let beside = |p: &Path, ext: &str| {
            let mut s = p.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        if let Some(p) = &self.forward.cursor_file {
            return p.clone();
        }
        if let Some(p) = &self.forward.file {
            return beside(p, ".cursor");
        }
        match &self.db_connection {
            DbConnection::Sqlite(p) => beside(p, ".forward-cursor"),
            _ => PathBuf::from("audit.forward-cursor"),
        }
    }

    /// The same configuration storing in `conn`.
    pub fn with_connection(mut self, conn: DbConnection) -> Self {
        self.db_connection = conn;
        self
    }
}

/// Maps one `AUDIT_*` variable to a setting and its TOML value; `None` for a variable that is no
/// setting of ours, after a warning naming it.
fn env_value(var: &str, key: &str, v: &str) -> Result<Option<(String, Value)>, ConfigError> {
    let key = key.to_ascii_lowercase();
    let key = match key.as_str() {
        "db" | "db_connection" => {
            return Ok(Some(("db_connection".into(), Value::String(v.to_owned()))))
        }
        "celery_queue" => "queue_name".to_owned(),
        _ => key,
    };
    if !KEYS.contains(&key.as_str()) {
        // The prefix is common (`AUDIT_LOG_LEVEL` of some other tool): refusing to start over a
        // variable this crate never reads would be worse than a misspelt setting being ignored
        // with a warning that names it.
        tracing::warn!(
            "ignoring the environment variable `{var}`: it is not an audit setting (settings: \
             AUDIT_ + one of {})",
            KEYS.join(", ")
        );
        return Ok(None);
    }
    let value = match key.as_str() {
        "activate" | "run_async" | "translate_urls" | "seal" => Value::Boolean(
            parse_bool(v)
                .ok_or_else(|| ConfigError(format!("{var}: expected true or false, got `{v}`")))?,
        ),
        "db_alias" | "queue_name" | "full_policy" | "spill_path" | "seal_key_file"
        | "quarantine_path" | "checkpoint_file" | "checkpoint_url" | "trail_name" => {
            Value::String(v.to_owned())
        }
        "logged_models" if !v.trim_start().starts_with('[') => Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        // Structured settings are written as TOML values: AUDIT_BLACKLIST='{ "" = ["^/x"] }'.
        _ => format!("v = {v}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| ConfigError(format!("{var}: expected a TOML value, got `{v}`")))?,
    };
    Ok(Some((key, value)))
}

/// The file a process reads and its text: `path`, else `AUDIT_CONFIG`, else `audit.toml` in the
/// working directory when there is one. A file that is named, or that exists, but cannot be read
/// is an error rather than a silent fall-back to the defaults.
fn read_config_file(path: Option<&Path>) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let named = path
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("AUDIT_CONFIG").map(PathBuf::from));
    let (path, text) = match named {
        Some(p) => {
            let text = std::fs::read_to_string(&p);
            (p, text)
        }
        None => match std::fs::read_to_string(DEFAULT_CONFIG_FILE) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            text => (PathBuf::from(DEFAULT_CONFIG_FILE), text),
        },
    };
    match text {
        Ok(text) => Ok(Some((path, text))),
        Err(e) => err(format!("cannot read config file {}: {e}", path.display())),
    }
}

/// The startup line: which file was read (absolute, so a process started from another directory
/// shows it) and which store the configuration names, any password masked.
fn describe_sources(file: Option<&Path>, config: &AuditConfig) -> String {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let file = match file {
        Some(p) => format!("config file {}", absolute(p).display()),
        None => format!(
            "no config file ({DEFAULT_CONFIG_FILE} not found in {}), defaults + environment",
            std::env::current_dir().map_or_else(
                |_| "the working directory".into(),
                |d| d.display().to_string()
            )
        ),
    };
    let store = match &config.db_connection {
        DbConnection::Sqlite(p) => format!("SQLite file {}", absolute(p).display()),
        postgres @ DbConnection::Postgres { .. } => format!("PostgreSQL {postgres}"),
        mongo => format!("MongoDB {mongo}"),
    };
    format!("audit configuration: {file}; store: {store}")
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn as_bool(key: &str, v: &Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| ConfigError(format!("{key}: expected true or false, got {v}")))
}

fn as_str(key: &str, v: &Value) -> Result<String, ConfigError> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| ConfigError(format!("{key}: expected a string, got {v}")))
}

fn as_str_list(key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let Some(items) = v.as_array() else {
        return err(format!("{key}: expected a list of strings, got {v}"));
    };
    items.iter().map(|i| as_str(key, i)).collect()
}

fn parse_blacklist(v: &Value) -> Result<Blacklist, ConfigError> {
    let Some(t) = v.as_table() else {
        return err(format!(
            "blacklist: expected a table of app = [patterns], got {v}"
        ));
    };
    let mut entries = BTreeMap::new();
    for (app, patterns) in t {
        let Some(list) = patterns.as_array() else {
            // The original iterated a plain string per character, so `^` blacklisted everything.
            return err(format!(
                "blacklist.{app:?}: expected a list of regex strings, got {patterns}"
            ));
        };
        let list = list
            .iter()
            .map(|p| {
                p.as_str().map(str::to_owned).ok_or_else(|| {
                    ConfigError(format!(
                        "blacklist.{app:?}: expected a regex string, got {p}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        entries.insert(app.clone(), list);
    }
    Blacklist::compile(&entries).map_err(|e| ConfigError(e.to_string()))
}

fn parse_indexes(key: &str, v: &Value) -> Result<Vec<IndexSpec>, ConfigError> {
    let Some(items) = v.as_array() else {
        return err(format!(
            "{key}: expected a list of paths or lists of paths, got {v}"
        ));
    };
    items
        .iter()
        .map(|item| {
            let fields = match item {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) if !a.is_empty() => a
                    .iter()
                    .map(|f| {
                        f.as_str().map(str::to_owned).ok_or_else(|| {
                            ConfigError(format!("{key}: expected an index path, got {f}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                other => {
                    return err(format!(
                        "{key}: expected an index path or a non-empty list of paths, got {other}"
                    ))
                }
            };
            for f in &fields {
                validate_index_path(f).map_err(|e| ConfigError(format!("{key}: {e}")))?;
            }
            Ok(IndexSpec::from_fields(&fields))
        })
        .collect()
}

fn parse_capture(v: &Value) -> Result<CaptureConfig, ConfigError> {
    let Some(t) = v.as_table() else {
        return err(format!("capture: expected a table, got {v}"));
    };
    let mut c = CaptureConfig::default();
    for (k, v) in t {
        let key = format!("capture.{k}");
        match k.as_str() {
            "redact" => c.redact = as_bool(&key, v)?,
            "redact_keys" => c.redact_keys = as_name_list(&key, v)?,
            "unredact_keys" => c.unredact_keys = as_name_list(&key, v)?,
            "redact_headers" => c.redact_headers = as_name_list(&key, v)?,
            "unredact_headers" => c.unredact_headers = as_name_list(&key, v)?,
            "max_body_bytes" => {
                c.max_body_bytes = match v.as_integer() {
                    Some(n) if n >= 0 => n as usize,
                    _ => return err(format!("{key}: expected a non-negative integer, got {v}")),
                }
            }
            "max_exception_bytes" => {
                c.max_exception_bytes = match v.as_integer() {
                    Some(n) if n > 0 => n as usize,
                    _ => return err(format!("{key}: expected a positive integer, got {v}")),
                }
            }
            "interlink_header" => {
                let h = as_str(&key, v)?.to_lowercase();
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    return err(format!("{key}: `{h}` is not a valid header name"));
                }
                c.interlink_header = h;
            }
            "default_app" => c.default_app = as_str(&key, v)?,
            other => {
                return err(format!(
                    "unknown setting `capture.{other}` (known: redact, redact_keys, unredact_keys, redact_headers, unredact_headers, max_body_bytes, max_exception_bytes, interlink_header, default_app)"
                ))
            }
        }
    }
    Ok(c)
}

/// A list of names for the redaction policy: an empty name would match everything.
fn as_name_list(key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
    let names = as_str_list(key, v)?;
    if names.iter().any(|n| crate::secret::normalize(n).is_empty()) {
        return err(format!("{key}: names must not be empty, got {v}"));
    }
    Ok(names)
}

fn parse_providers(v: &Value) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(t) = v.as_table() else {
        return err(format!(
            "custom_provider: expected a table of app = \"provider name\", got {v}"
        ));
    };
    t.iter()
        .map(|(app, name)| {
            Ok((
                app.clone(),
                as_str(&format!("custom_provider.{app}"), name)?,
            ))
        })
        .collect()
}

impl CaptureConfig {
    /// The redaction settings of this table, from which the one redaction policy is built.
    pub(crate) fn redaction_rules(&self) -> crate::redact::Rules {
        crate::redact::Rules {
            enabled: self.redact,
            redact_keys: self.redact_keys.clone(),
            redact_headers: self.redact_headers.clone(),
            unredact_keys: self.unredact_keys.clone(),
            unredact_headers: self.unredact_headers.clone(),
            max_exception_bytes: self.max_exception_bytes,
        }
    }

    /// The redaction policy of this table (built once per distinct table, then shared).
    pub fn redaction(&self) -> std::sync::Arc<crate::redact::Redaction> {
        crate::redact::policy_for(&self.redaction_rules())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the module docs, the very text rustdoc shows.
    const EXAMPLE: &str = include_str!("example.toml");

    #[test]
    fn the_documented_example_loads_as_it_is() {
        let c = AuditConfig::from_sources(Some(EXAMPLE), Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("the example in the docs does not load: {e}"));
        assert_eq!(c.logged_models, ["demo::Poll"]);
        assert_eq!(c.access_indexes.len(), 2);
        assert_eq!(c.capture.redact_headers, ["x-tenant"]);
        assert!(c.blacklist.is_blacklisted("any", "/static/app.css"));
        assert_eq!(
            c.erase_fields, DEFAULT_ERASE_FIELDS,
            "the example shows the default"
        );
    }

    #[test]
    fn the_documented_example_names_every_setting() {
        let table: Table = EXAMPLE
            .parse()
            .unwrap_or_else(|e| panic!("the example is not TOML: {e}"));
        // Two settings are shown commented out, because setting them changes behaviour (signing
        // needs a key file; retention deletes records).
        for key in KEYS {
            let commented = format!("# {key} = ");
            assert!(
                table.contains_key(*key) || EXAMPLE.lines().any(|l| l.starts_with(&commented)),
                "the example in the docs does not show `{key}`"
            );
        }
    }

    #[test]
    fn the_startup_line_says_when_there_is_no_file() {
        let line = describe_sources(None, &AuditConfig::default());
        let cwd = std::env::current_dir().unwrap();
        assert!(
            line.contains(&format!(
                "no config file (audit.toml not found in {}), defaults + environment",
                cwd.display()
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "store: SQLite file {}",
                cwd.join("audit.db").display()
            )),
            "{line}"
        );
    }
}
