//! What can go wrong in a command, and the exit code each failure maps to: a usage error (the
//! command line, a file it names, a value it gives) exits 2, anything else (the store, the trail,
//! the terminal) exits 1.

use crate::config::ConfigError;
use crate::document::Collection;
use crate::query::QueryError;
use crate::seal::{KeyError, SealError, VerifyError};
use crate::store::StoreError;
use std::path::PathBuf;

/// A failed command. [`exit_code`](Self::exit_code) tells a usage error (2) from a runtime
/// failure (1); the message names what went wrong, and [`source`](std::error::Error::source)
/// leads to the underlying error where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    // === usage errors: exit 2 ===
    /// The configuration (file, `AUDIT_*` variables or `--db`) is invalid or unreadable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A command that only reads was pointed at a SQLite file that does not exist: opening it
    /// would create an empty database and report nothing, hiding the mistyped path.
    #[error("no audit database at {}: the file does not exist (check --db; `audit prepare` creates one)", .0.display())]
    NoDatabase(PathBuf),
    /// A date that is neither `dd/mm/yyyy` nor `yyyy-mm-dd`.
    #[error("invalid date `{0}`: expected dd/mm/yyyy or yyyy-mm-dd")]
    InvalidDate(String),
    /// A `DATETHH:MM` whose time is not `HH:MM`.
    #[error("invalid time in `{0}`: expected THH:MM")]
    InvalidTime(String),
    /// `drop` was given an end before its start.
    #[error("END_DATE is before INIT_DATE ({end} < {init})")]
    EndBeforeInit {
        /// The first day given.
        init: chrono::NaiveDate,
        /// The last day given.
        end: chrono::NaiveDate,
    },
    /// `drop` was given more than two dates (the original then deleted everything).
    #[error("drop takes at most two dates, got {0}")]
    TooManyDates(usize),
    /// Flags that cannot be used together.
    #[error("use only one of {0}")]
    Conflicting(&'static str),
    /// A filter value that cannot be turned into a query (a regex that does not compile).
    #[error("{0}")]
    InvalidFilter(#[source] QueryError),
    /// `--action` is not create, update or delete.
    #[error("{0}")]
    InvalidAction(String),
    /// `--older-than` is not a number of days.
    #[error("invalid age `{0}`: expected days, as 30d (1 to 36500)")]
    InvalidAge(String),
    /// `--status` is neither a status code nor a class such as `5xx`.
    #[error("invalid status `{0}`: expected a code (404) or a class (5xx)")]
    InvalidStatus(String),
    /// A record id that is not an id (24 hexadecimal digits).
    #[error("invalid id `{id}`: expected 24 hexadecimal digits")]
    InvalidId {
        /// What was given.
        id: String,
        /// Why it does not parse.
        #[source]
        source: bson::oid::Error,
    },
    /// A key file that cannot be written, read or used.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// The console's token file cannot be read.
    #[error("cannot read token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The console's token is empty.
    #[error("the console token is empty (--token-file or AUDIT_CONSOLE_TOKEN)")]
    EmptyToken,
    /// The console's token is too short to resist guessing.
    #[error(
        "the console token is {0} bytes; it must be at least 16 (--token-file or \
         AUDIT_CONSOLE_TOKEN; for example: openssl rand -hex 32)"
    )]
    ShortToken(usize),
    /// `--addr` does not resolve.
    #[error("--addr `{addr}`: {source}")]
    Addr {
        /// What was given.
        addr: String,
        /// The resolver's answer.
        source: std::io::Error,
    },
    /// The console would listen beyond loopback without a token.
    #[error("{0}")]
    NeedsToken(String),
    /// A file the command names cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The checkpoint file holds something that is not a checkpoint (signed by the key, with
    /// `--key`).
    #[error("{}: {source}", path.display())]
    CheckpointFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::seal::note::NoteError,
    },
    /// `--key` is neither a key file nor a verifier key string.
    #[error("{0}")]
    BadKeyArgument(String),

    // === runtime failures: exit 1 ===
    /// The store cannot be opened.
    #[error("cannot open the store {connection}: {source}")]
    Open {
        /// The connection, password masked.
        connection: String,
        /// The store's error (boxed, as in the variants below: it is large, and every
        /// `Result` of the command line would carry its size).
        source: Box<StoreError>,
    },
    /// A store operation failed.
    #[error("{0}")]
    Store(#[source] Box<StoreError>),
    /// A seal could not be written (or an erasure, which writes one, could not run).
    #[error("{0}")]
    Seal(#[source] Box<SealError>),
    /// Verification could not run (as opposed to what it found).
    #[error("{0}")]
    Verify(#[source] Box<VerifyError>),
    /// Verification found the trail changed.
    #[error("{} finding{}: the trail is not intact", .0, if *.0 == 1 { "" } else { "s" })]
    NotIntact(u64),
    /// `keygen` could not write the key pair (nothing is left behind).
    #[error("{0}")]
    KeyWrite(#[source] KeyError),
    /// A proof could not be made.
    #[error("{0}")]
    Proof(#[source] Box<crate::seal::ProofError>),
    /// A receipt does not prove its record.
    #[error("the receipt is not valid: {0}")]
    InvalidReceipt(#[source] crate::seal::note::NoteError),
    /// No record of that collection has that id.
    #[error("no record in {collection} has the id {id}")]
    NotFound {
        /// Where it was looked for.
        collection: Collection,
        /// The id.
        id: bson::oid::ObjectId,
    },
    /// The console cannot listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Writing the output (or reading the answer to a question) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Store(Box::new(e))
    }
}

impl From<SealError> for CliError {
    fn from(e: SealError) -> Self {
        CliError::Seal(Box::new(e))
    }
}

impl From<VerifyError> for CliError {
    fn from(e: VerifyError) -> Self {
        CliError::Verify(Box::new(e))
    }
}

impl CliError {
    /// True for a usage error: the command line, or a file or value it names, is wrong (the key
    /// a signed trail needs is missing, the store named is not an audit trail or is empty).
    pub fn is_usage(&self) -> bool {
        match self {
            CliError::Seal(e) => {
                return matches!(
                    **e,
                    SealError::KeyRequired | SealError::SealingOff | SealError::Key(_)
                )
            }
            CliError::Verify(e) => {
                return matches!(
                    **e,
                    VerifyError::EmptyTrail
                        | VerifyError::Option(_)
                        | VerifyError::Store(StoreError::NotATrail(_))
                )
            }
            CliError::Open { source, .. } => return matches!(**source, StoreError::NotATrail(_)),
            _ => {}
        }
        matches!(
            self,
            CliError::Config(_)
                | CliError::NoDatabase(_)
                | CliError::InvalidDate(_)
                | CliError::InvalidTime(_)
                | CliError::EndBeforeInit { .. }
                | CliError::TooManyDates(_)
                | CliError::Conflicting(_)
                | CliError::InvalidFilter(_)
                | CliError::InvalidAction(_)
                | CliError::InvalidStatus(_)
                | CliError::InvalidAge(_)
                | CliError::InvalidId { .. }
                | CliError::Key(_)
                | CliError::TokenFile { .. }
                | CliError::EmptyToken
                | CliError::ShortToken(_)
                | CliError::Addr { .. }
                | CliError::NeedsToken(_)
                | CliError::ReadFile { .. }
                | CliError::CheckpointFile { .. }
                | CliError::BadKeyArgument(_)
        )
    }

    /// The process's exit code: 2 for a usage error, 1 for any other failure.
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() {
            2
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn usage_errors_exit_2_and_failures_exit_1() {
        assert_eq!(CliError::InvalidDate("x".into()).exit_code(), 2);
        assert_eq!(CliError::NoDatabase("a.db".into()).exit_code(), 2);
        assert_eq!(
            CliError::Key(KeyError::Io {
                path: "k".into(),
                source: std::io::Error::other("gone"),
            })
            .exit_code(),
            2
        );
        assert_eq!(CliError::NotIntact(3).exit_code(), 1);
        assert_eq!(
            CliError::NotIntact(1).to_string(),
            "1 finding: the trail is not intact"
        );
        assert_eq!(
            CliError::NotIntact(2).to_string(),
            "2 findings: the trail is not intact"
        );
        assert_eq!(CliError::from(StoreError::Raw("bad".into())).exit_code(), 1);
        assert_eq!(CliError::Io(std::io::Error::other("pipe")).exit_code(), 1);
    }

    #[test]
    fn the_underlying_error_is_the_source() {
        let e = CliError::Open {
            connection: "sqlite:a.db".into(),
            source: Box::new(StoreError::Raw("locked".into())),
        };
        assert_eq!(
            e.to_string(),
            "cannot open the store sqlite:a.db: malformed stored document: locked"
        );
        assert!(e.source().is_some_and(|s| s.to_string().contains("locked")));
        let bad = "zz".parse::<bson::oid::ObjectId>().unwrap_err();
        let e = CliError::InvalidId {
            id: "zz".into(),
            source: bad,
        };
        assert!(e.source().is_some());
        assert!(e.to_string().contains("`zz`"), "{e}");
    }
}
