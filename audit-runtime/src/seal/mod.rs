//! Tamper evidence: seals, a hash chain over everything the writer stores.
//!
//! After each batch is stored the writer adds one *seal* to the `audit_seal` collection. A seal
//! names its stream (a fresh ObjectId per writer, so writers never coordinate, even several
//! application instances sharing one MongoDB, or two writers in one process), a sequence number,
//! the time, the hash of the previous seal of the stream, the process it writes for, and for each
//! record of the batch its collection, `_id`, date and a *commitment* to its exact stored bytes:
//! the SHA-256 of the bytes followed by a random salt. The salts are kept apart, one document
//! per record in `audit_salt`. The seal's own `hash` covers all of that, and with a key
//! configured an Ed25519 signature (`sig`) covers the hash. The audit collections themselves are
//! not changed: nothing is added to their documents.
//!
//! What it proves: a record edited, deleted or inserted afterwards, a copy of a record stored
//! twice, a seal removed, reordered or altered, are all found by
//! [`verify`](crate::seal::verify()) — as long as whoever edits cannot also rewrite the chain.
//! Without a key, someone with write access to the database can recompute a whole chain after an
//! edit; with a key, they also need the private key.
//!
//! Evidence outside the database: each stream's commitments are the leaves of an RFC 6962 Merkle
//! tree ([`merkle`]); every seal states the tree after it, and a signed seal signs that head as a
//! C2SP checkpoint ([`note`]). The writer publishes checkpoints to the log and to witness sinks
//! (`checkpoint_file`, `checkpoint_url`); `verify` given them finds the newest seals deleted with
//! their records, a stream deleted, an emptied trail, and history rewritten even by someone
//! holding the key. [`prove`] makes a receipt for one record (its bytes, an inclusion proof, a
//! signed checkpoint) that [`check_receipt`], or any RFC 6962 implementation, checks with the
//! public key alone.
//!
//! Seals of other kinds keep the chain verifiable through legitimate changes: `prune` (a ranged
//! delete, or the retention job) says which range of which collection was removed and how many
//! records, and `erasure` (personal data replaced by a tombstone) lists each changed record's
//! old and new commitment. On a signed trail those seals are signed too: a command or job without
//! the key refuses rather than write an unsigned one ([`signing_key_for`]).

mod chain;
mod erase;
mod keys;
pub mod merkle;
pub mod note;
mod prune;
mod tree;
#[cfg(feature = "embedded-store")]
mod verify;

pub use crate::commitment::{
    commitment, is_salted, record_date, salt_of, sha256, SALTED, SALT_LEN,
};
pub use chain::{
    compute_seal_hash, entry_hash_hex, sha256_hex, Covered, Head, Prepared, Sealer,
    DEFAULT_TRAIL_NAME,
};
pub use erase::{erase_user, Erasure, ERASURE_KEEPS, TOMBSTONE};
pub use keys::{
    configured_key, keygen, load_signing_key, load_verifying_key, public_key_path,
    signature_is_valid, KeyError,
};
pub use prune::{prune_older_than, retention_job, seal_prune, PrunedRange, CLOCK_SKEW};
pub use tree::{
    check_receipt, checkpoints, prove, read_checkpoints, CheckedReceipt, ProofError, Receipt,
};
#[cfg(feature = "embedded-store")]
pub use verify::{verify, Finding, FindingKind, HeadSummary, Summary, VerifyError, VerifyOptions};

use crate::document::Collection;
use crate::store::{Filter, FindOptions, Order, Store};
use ed25519_dalek::SigningKey;

/// The collection holding the seals.
pub use crate::document::SEAL_COLLECTION;

/// Why a seal could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The signing key could not be read.
    #[error("seal_key_file: {0}")]
    Key(#[from] KeyError),
    /// The store refused the seal.
    #[error("cannot store the seal: {0}")]
    Store(#[from] crate::store::StoreError),
    /// What the seal would say cannot be encoded whole; nothing is sealed rather than a seal
    /// that leaves part of it out.
    #[error("cannot seal a value that cannot be encoded: {0}")]
    Unencodable(String),
    /// The trail's seals are signed and no signing key is configured: an unsigned seal would make
    /// every later `audit verify --key` fail.
    #[error(
        "the trail's seals are signed, but no signing key is configured: set seal_key_file (or \
         AUDIT_SEAL_KEY_FILE) to the key that signs them; nothing was changed"
    )]
    KeyRequired,
    /// Sealing is off (`seal = false`) and the trail is sealed: a change without a seal would make
    /// `audit verify` report it as tampering from then on.
    #[error(
        "the trail is sealed, but `seal = false` (AUDIT_SEAL): a change made without a seal would \
         be reported as tampering; turn sealing on (with seal_key_file if the trail is signed); \
         nothing was changed"
    )]
    SealingOff,
}

/// Lower-case hex of `bytes` (how seals write hashes and epochs).
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    keys::hex(bytes)
}

/// How many of the newest seals are looked at to tell whether a trail is signed.
const SIGNED_LOOKBACK: u64 = 100;

/// True when the trail holds a seal.
pub async fn trail_is_sealed(store: &Store) -> Result<bool, crate::store::StoreError> {
    let any = store
        .find_raw(
            Collection::Seal,
            &FindOptions::new(Filter::all()).window(0, Some(1)),
        )
        .await?;
    Ok(!any.is_empty())
}

/// True when one of the trail's newest seals is signed.
pub async fn trail_is_signed(store: &Store) -> Result<bool, crate::store::StoreError> {
    let newest = store
        .find_raw(
            Collection::Seal,
            &FindOptions::new(Filter::all())
                .sort("_id", Order::Desc)
                .window(0, Some(SIGNED_LOOKBACK)),
        )
        .await?;
    Ok(newest.iter().any(|s| s.get_str("sig").is_ok()))
}

/// The key that seals written on `config`'s behalf are signed with: the configured one; none
/// when the trail is not signed; an error when the trail is signed and no key is configured
/// ([`SealError::KeyRequired`]), so that a signed trail never receives an unsigned seal, and
/// when sealing is off on a sealed trail ([`SealError::SealingOff`]): a change made without a
/// seal would be reported as tampering from then on. Every command and job that changes or
/// removes records asks this first, before it changes anything.
pub async fn signing_key_for(
    store: &Store,
    config: &crate::AuditConfig,
) -> Result<Option<SigningKey>, SealError> {
    if !config.seal {
        return if trail_is_sealed(store).await? {
            Err(SealError::SealingOff)
        } else {
            Ok(None)
        };
    }
    match configured_key(config)? {
        Some(key) => Ok(Some(key)),
        None if trail_is_signed(store).await? => Err(SealError::KeyRequired),
        None => Ok(None),
    }
}
