//! The writer: one ordered consumer task that batches audit records into the store, modelled on
//! `tracing-appender`'s non-blocking writer, with one decision made the other way round: when the
//! queue is full the default is to **wait** (back-pressure), because these are audit records;
//! dropping is an explicit [`FullPolicy::Drop`] and every drop is counted.
//!
//! Sync mode uses the same queue and waits for the record's acknowledgement before the response is
//! returned; async mode only enqueues. Every document carries its client-side `_id`, and the
//! stores skip an `_id` they already hold, so a retry or a replay never duplicates a record.
//!
//! What is guaranteed:
//! - **Nothing accepted goes uncounted.** Every record accepted into the queue ends up stored
//!   (`written`, of which `degraded` were stored with markers), journaled (`spilled`, and later
//!   `replayed`), kept in the quarantine file (`quarantined`), or counted as `failed` with an error
//!   log; records refused at the door are counted as `dropped` with an error or warning log.
//! - **A record that cannot be stored whole is stored degraded.** A part that cannot be encoded
//!   is replaced by a marker naming it; a record the store refuses for good (over the 16 MiB
//!   document limit both stores share, a key the server rejects) is isolated from its batch (the
//!   batch is split until the refused records are found; the others are stored), then stored with
//!   its bodies replaced by markers, and, if the store refuses even that, appended to the
//!   quarantine file ([`AuditConfig::quarantine_file`]). The records after it keep flowing.
//! - **Passing failures are retried, not dropped.** Store errors are classified
//!   ([`StoreError::is_permanent`](crate::store::StoreError::is_permanent)): on a passing one
//!   (connection, timeout, database locked) the batch is retried with back-off, or, with a spill
//!   journal configured, the batch and everything after it go to the journal (fsync'd,
//!   acknowledged) and are replayed in order, batch by batch, once the store answers; see
//!   [`crate::journal`] for what the journal guarantees. A journal that cannot be written (a full
//!   disk, a symlink refused) does not lose the batch: it stays in memory and the store is retried.
//! - **Shutdown counts what it could not store.** Past `flush_timeout`, records go to the journal
//!   or, without one, are counted as `failed`; a store call in flight then is let return (for up
//!   to 10 s) so that its records are counted by what happened to them, not guessed.
//! - **Memory is bounded** by `queue_capacity` records and by `queue_max_bytes` bytes of encoded
//!   records, whichever is reached first (`queue_bytes` reports the bytes held). Async
//!   [`Writer::submit`] under [`FullPolicy::Block`] waits for room for both. A record finished
//!   where nothing can wait but whose request could wait earlier (the end of a response body) has
//!   its room taken beforehand ([`Writer::reserve`], awaited before the response is returned), so
//!   a store that falls behind slows responses down instead of filling the overflow list. Code
//!   that cannot wait at all ([`Writer::submit_blocking`]: inside a synchronous poll or drop, and
//!   standalone calls) never spawns a task per record: when the queue is full but the byte
//!   bound leaves room, the record waits in an overflow list inside the writer, counted in the
//!   same byte bound; past the byte bound it is appended to the spill journal when one is
//!   configured (fsync'd on the calling thread: a last resort under overload), and otherwise
//!   counted as `dropped` with an error log. Memory never grows without bound, and no record
//!   leaves silently.

use crate::config::{AuditConfig, FullPolicy};
use crate::document::{Access, Collection, ModelAction};
use crate::journal::{Item, Journal, JournalKey};
use crate::seal::{self, Covered, Prepared, Sealer};
use crate::store::{degrade, Filter, Store, StoreError};
use bson::oid::ObjectId;
use bson::RawDocumentBuf;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Most records written in one store call.
pub(crate) const MAX_BATCH: usize = 512;

/// How long a small batch that nobody waits on waits for more records (see `coalesce`).
const COALESCE: Duration = Duration::from_millis(5);

/// A record to store, already encoded: it is serialised on the request path (about a
/// microsecond for a 2 KB access), which keeps queued records compact (their BSON bytes, not their
/// structs) and leaves the writer only the store's work.
#[derive(Debug, Clone)]
pub struct Record {
    collection: Collection,
    doc: RawDocumentBuf,
    /// Parts that could not be encoded and were replaced by markers.
    degraded: bool,
}

impl Record {
    /// An access, encoded. When a part of it cannot be encoded, that part is replaced by a marker
    /// naming it (see [`crate::store::degrade`]) rather than losing the record; `Err` only when
    /// even that fails.
    pub fn access(a: &Access) -> Result<Record, crate::store::StoreError> {
        Record::encode(Collection::Access, a)
    }

    /// A model action, encoded (degraded like an access when a part cannot be encoded).
    pub fn model_action(m: &ModelAction) -> Result<Record, crate::store::StoreError> {
        Record::encode(Collection::ModelAction, m)
    }

    fn encode<T: serde::Serialize>(
        collection: Collection,
        value: &T,
    ) -> Result<Record, crate::store::StoreError> {
        let (doc, parts) = crate::store::degrade::encode_or_degrade(value)?;
        let degraded = !parts.is_empty();
        if degraded {
            tracing::error!(target: "audit", %collection, parts = %parts.join(", "),
                "audit record has parts that cannot be encoded; stored with markers in their place");
        }
        Ok(Record {
            collection,
            doc,
            degraded,
        })
    }

    /// True when parts of the record were replaced by markers because they could not be encoded.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }
}

/// Bytes a queued record is charged beyond its encoded document (the job around it).
const RECORD_OVERHEAD: usize = 128;

/// Room held in the queue for one record that will be finished later in code that cannot wait (the
/// end of a response body): a queue slot and the bytes the record is expected to take. Taken (and
/// waited for) while the request can still wait, so that under [`FullPolicy::Block`] a slow store
/// slows the responses down instead of filling the overflow list and then dropping records.
/// Dropping it gives the room back.
#[cfg(feature = "http")]
pub(crate) struct Reservation {
    slot: mpsc::OwnedPermit<Job>,
    bytes: OwnedSemaphorePermit,
}

/// A reservation to wait for.
#[cfg(feature = "http")]
pub(crate) type ReservationWait =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Reservation>> + Send>>;

/// How long shutdown waits, past its deadline, for a store call in flight to return.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// Journal entries replayed in one turn (in steps bounded in bytes) before the consumer looks at
/// its queue again.
const REPLAY_ENTRIES_PER_TURN: usize = 8 * MAX_BATCH;

enum Job {
    Write(Record, Option<oneshot::Sender<()>>, OwnedSemaphorePermit),
    Flush(oneshot::Sender<()>),
    /// Wakes the consumer to look at the overflow list.
    Wake,
}

/// Counters of the writer, readable at any time.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    enqueued: AtomicU64,
    written: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    degraded: AtomicU64,
    quarantined: AtomicU64,
    journal_corrupt: AtomicU64,
    journal_forged: AtomicU64,
    seals: AtomicU64,
    seals_failed: AtomicU64,
    /// The checkpoints published (and the publications that failed).
    witness: Arc<crate::witness::WitnessMetrics>,
    /// What the forwarder delivered.
    pub(crate) forward: Arc<crate::forward::ForwardMetrics>,
    /// Accepted records not yet written, journaled, quarantined or counted as failed.
    outstanding: AtomicU64,
}

impl Metrics {
    /// `n` accepted records are settled (written, journaled, quarantined or failed).
    fn settle(&self, n: u64) {
        self.outstanding.fetch_sub(n, Ordering::Relaxed);
    }

    fn count(&self, o: Outcome, replayed: bool) {
        self.written.fetch_add(o.written, Ordering::Relaxed);
        self.degraded.fetch_add(o.degraded, Ordering::Relaxed);
        self.quarantined.fetch_add(o.quarantined, Ordering::Relaxed);
        self.failed.fetch_add(o.failed, Ordering::Relaxed);
        if replayed {
            self.replayed.fetch_add(o.written, Ordering::Relaxed);
        }
    }
}

/// A snapshot of the writer's counters.
///
/// Every record accepted (`enqueued`) is, once settled, in exactly one of: stored straight from
/// the queue (`written - replayed`), `spilled` to the journal, `quarantined` from the queue, or
/// `failed`. Journaled records leave the journal as `replayed` (also in `written`) or
/// `quarantined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Records accepted into the queue.
    pub enqueued: u64,
    /// Records stored (degraded ones and replayed ones included).
    pub written: u64,
    /// Store calls that failed on a passing error and were retried (or left in the journal).
    pub retried: u64,
    /// Records lost: not even a degraded version could be stored or quarantined, or shutdown
    /// gave up on them with no journal; each one is logged at error level.
    pub failed: u64,
    /// Records refused at the door: the queue was full under [`FullPolicy::Drop`], or over
    /// `queue_max_bytes` in code that cannot wait and with no spill journal.
    pub dropped: u64,
    /// Records written to the spill journal (store down, shutdown's deadline passed, or over the
    /// byte bound in code that cannot wait).
    pub spilled: u64,
    /// Records replayed from the journal into the store (also counted in `written`).
    pub replayed: u64,
    /// Records stored with parts replaced by markers: parts that could not be encoded, or bodies
    /// trimmed because the store refused the whole record (also counted in `written` once stored).
    pub degraded: u64,
    /// Records the store refused for good, even trimmed, kept in the quarantine file.
    pub quarantined: u64,
    /// Damaged regions of the spill journal (checksum mismatch, torn append, foreign bytes),
    /// copied to the quarantine file and skipped.
    pub journal_corrupt: u64,
    /// Entries of the spill journal that failed authentication (a wrong MAC, or none: written by
    /// hand or by an earlier version), copied to the quarantine file and never stored.
    pub journal_forged: u64,
    /// Records waiting in the queue (or its overflow list) now.
    pub queue_depth: u64,
    /// Bytes of records held by the writer now (never more than `queue_max_bytes`).
    pub queue_bytes: u64,
    /// Seals stored (one per stored batch when sealing is on).
    pub seals: u64,
    /// Seals that could not be stored before shutdown gave up on them: the chain has a gap there,
    /// which `audit verify` reports.
    pub seals_failed: u64,
    /// Checkpoints published (to the log, and to every witness sink configured).
    pub checkpoints: u64,
    /// Checkpoint publications a witness sink failed (`checkpoint_file`, `checkpoint_url`); each
    /// is logged at error level.
    pub checkpoint_failures: u64,
    /// Events the forwarder delivered (each destination counts its own).
    pub forwarded: u64,
    /// Forwarding attempts that failed and were tried again (each logged).
    pub forward_failures: u64,
    /// Events a destination refused for good (each logged), or whose record was removed
    /// before it could be forwarded.
    pub forward_dropped: u64,
    /// Records sealed but not forwarded yet, by the destination furthest behind.
    pub forward_lag: u64,
}

/// Handle to submit records. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    policy: FullPolicy,
    metrics: Arc<Metrics>,
    capacity: usize,
    /// One permit per byte of records held (queued or in the overflow list).
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    /// Records from code that cannot wait, held while the queue is full (bounded by `bytes`).
    overflow: Arc<Mutex<VecDeque<Job>>>,
    journal: Option<Journal>,
    /// Set when a record went to the journal without the consumer: it must replay it.
    journal_dirty: Arc<AtomicBool>,
}

/// Flushes the writer on [`shutdown`](WriterGuard::shutdown) (or, as a fallback, on drop).
#[must_use = "dropping the guard stops the writer; keep it until shutdown and call `shutdown().await`"]
pub struct WriterGuard {
    writer: Writer,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The retention job, when `retention_days` is set.
    retention: Option<tokio::task::JoinHandle<()>>,
    /// The checkpoint publisher: it publishes the last head once the consumer is gone.
    witness: Option<tokio::task::JoinHandle<()>>,
    /// The forwarder: it delivers what is stored before it stops.
    forwarder: Option<crate::forward::Forwarder>,
    stopping: Arc<AtomicBool>,
    timeout: Duration,
}

/// How long shutdown waits for the last checkpoint to reach the witness sinks (an HTTP sink
/// gives up after 10 s on its own).
const WITNESS_GRACE: Duration = Duration::from_secs(15);

/// The kind of the seal that says a spill journal (its epoch) was replayed whole.
pub(crate) const JOURNAL_SEAL: &str = "journal";

/// What the writer needs to seal what it stores: the chain of its stream and the process it
/// writes for (whose document is sealed with the first batch).
pub(crate) struct Sealing {
    pub(crate) sealer: Sealer,
    pub(crate) process: ObjectId,
    /// The process document as this process writes it; the stored one is sealed with the first
    /// batch when it holds the same (read by its bytes, whatever the store's copies say).
    pub(crate) process_doc: Option<crate::document::Process>,
}

/// Starts the writer's consumer task on the current tokio runtime.
pub(crate) fn spawn(
    store: Store,
    config: &AuditConfig,
    sealing: Option<Sealing>,
    journal_keys: Option<(JournalKey, Vec<JournalKey>)>,
    metrics: Metrics,
    forwarder: Option<crate::forward::Forwarder>,
) -> (Writer, WriterGuard) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let metrics = Arc::new(metrics);
    let stopping = Arc::new(AtomicBool::new(false));
    let journal = config
        .spill_path
        .as_ref()
        .zip(journal_keys)
        .map(|(p, (key, also))| Journal::keyed(p, key).also_reading(also));
    if let Some(j) = &journal {
        if std::fs::symlink_metadata(j.path()).is_ok_and(|m| m.file_type().is_symlink()) {
            tracing::error!(target: "audit", path = %j.path().display(),
                "spill_path is a symlink; the journal will refuse to write through it");
        }
    }
    let overflow = Arc::new(Mutex::new(VecDeque::new()));
    let journal_dirty = Arc::new(AtomicBool::new(false));
    let max_bytes = config.queue_max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let store_for_retention = store.clone();
    let (witness, witness_task) = match &sealing {
        Some(s) => {
            let (w, t) = crate::witness::spawn(
                config,
                s.sealer.signing_key().cloned(),
                metrics.witness.clone(),
            );
            (Some(w), Some(t))
        }
        None => (None, None),
    };
    let consumer = Consumer {
        store,
        metrics: metrics.clone(),
        stopping: stopping.clone(),
        queue: config.queue_name.clone(),
        journal: journal.clone(),
        quarantine: Journal::new(config.quarantine_file()),
        overflow: overflow.clone(),
        journal_dirty: journal_dirty.clone(),
        spilling: false,
        gave_up: false,
        replay_offset: 0,
        replay_failures: 0,
        next_replay: tokio::time::Instant::now(),
        backoff: Duration::from_millis(50),
        // The queue's byte bound, but at least 1 MiB so that a tiny bound does not make the
        // replay crawl one record at a time.
        replay_max_bytes: config.queue_max_bytes.max(1 << 20),
        sealing,
        sealed: Vec::new(),
        unstored_seal: None,
        witness,
        seals_made: 0,
        replaying_closed: false,
        replay_epoch: None,
        pending_close: Vec::new(),
    };
    let task = tokio::spawn(consumer.run(rx));
    let writer = Writer {
        tx,
        policy: config.full_policy,
        metrics,
        capacity: config.queue_capacity,
        bytes: Arc::new(Semaphore::new(max_bytes)),
        max_bytes,
        overflow,
        journal,
        journal_dirty,
    };
    let guard = WriterGuard {
        writer: writer.clone(),
        task: Some(task),
        retention: config.retention_days.map(|days| {
            tokio::spawn(crate::seal::retention_job(
                store_for_retention,
                config.clone(),
                days,
            ))
        }),
        witness: witness_task,
        forwarder,
        stopping,
        timeout: config.flush_timeout,
    };
    (writer, guard)
}

impl Writer {
    /// The bytes `record` is charged while the writer holds it.
    fn charge(&self, record: &Record) -> u32 {
        (record.doc.as_bytes().len() + RECORD_OVERHEAD)
            .min(self.max_bytes)
            .min(u32::MAX as usize) as u32
    }

    /// Enqueues a record; with `ack`, the returned receiver fires once it is stored. Under
    /// [`FullPolicy::Block`] this waits for room in the queue, in records and in bytes.
    pub async fn submit(&self, record: Record, ack: bool) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        self.count_degraded(&record);
        let n = self.charge(&record);
        let sent = match self.policy {
            FullPolicy::Block => match self.bytes.clone().acquire_many_owned(n).await {
                Ok(permit) => self.tx.send(Job::Write(record, tx, permit)).await.is_ok(),
                Err(_) => false,
            },
            FullPolicy::Drop => {
                let Ok(permit) = self.bytes.clone().try_acquire_many_owned(n) else {
                    self.count_drop("queue_max_bytes reached");
                    return None;
                };
                match self.tx.try_send(Job::Write(record, tx, permit)) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.count_drop("queue full");
                        return None;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
        };
        self.after_send(sent);
        rx
    }

    /// Enqueues at once when there is room, in records and in bytes; gives the record back
    /// otherwise (for [`Writer::submit`], which waits or drops as the policy says).
    pub fn try_submit(&self, record: Record) -> Result<(), Record> {
        let n = self.charge(&record);
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(n) else {
            return Err(record);
        };
        let degraded = record.degraded;
        match self.tx.try_send(Job::Write(record, None, permit)) {
            Ok(()) => {
                if degraded {
                    self.metrics.degraded.fetch_add(1, Ordering::Relaxed);
                }
                self.after_send(true);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(Job::Write(record, ..))) => Err(record),
            Err(mpsc::error::TrySendError::Full(_)) => unreachable!("a write was sent"),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                if degraded {
                    self.metrics.degraded.fetch_add(1, Ordering::Relaxed);
                }
                self.after_send(false);
                Ok(())
            }
        }
    }

    /// Room for one record of about `bytes` to be submitted later with
    /// [`Writer::submit_reserved`]: at once when the queue has it (`Ok`), or a wait for it under
    /// [`FullPolicy::Block`] (`Err`). `Ok(None)` under [`FullPolicy::Drop`], whose records are
    /// never waited for, and when the writer is stopped. A record bigger than its estimate takes
    /// the rest when it is submitted (or, if the byte bound has no more, goes where records over
    /// it go).
    #[cfg(feature = "http")]
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Option<Reservation>, ReservationWait> {
        if self.policy == FullPolicy::Drop {
            return Ok(None);
        }
        // Never more than the bound itself, which a wait could not get.
        let n = (bytes + RECORD_OVERHEAD)
            .min(self.max_bytes)
            .min(u32::MAX as usize) as u32;
        let Ok(bytes) = self.bytes.clone().try_acquire_many_owned(n) else {
            return Err(self.wait_for_room(n));
        };
        match self.tx.clone().try_reserve_owned() {
            Ok(slot) => Ok(Some(Reservation { slot, bytes })),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.wait_for_room(n)),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(None),
        }
    }

    /// Waits for a queue slot, then for `n` bytes; `None` when the writer stopped meanwhile.
    #[cfg(feature = "http")]
    fn wait_for_room(&self, n: u32) -> ReservationWait {
        let (tx, semaphore) = (self.tx.clone(), self.bytes.clone());
        Box::pin(async move {
            // The slot first: records leave the queue in order, and bytes with them.
            let slot = tx.reserve_owned().await.ok()?;
            let bytes = semaphore.acquire_many_owned(n).await.ok()?;
            Some(Reservation { slot, bytes })
        })
    }

    /// Enqueues `record` into the room `reserved` holds: never waits, and never needs the overflow
    /// list unless the record is bigger than the bytes reserved and the byte bound has no more.
    #[cfg(feature = "http")]
    pub(crate) fn submit_reserved(&self, record: Record, reserved: Reservation) {
        let Reservation { slot, mut bytes } = reserved;
        let n = self.charge(&record) as usize;
        let held = bytes.num_permits();
        if n < held {
            drop(bytes.split(held - n));
        } else if n > held {
            match self.bytes.clone().try_acquire_many_owned((n - held) as u32) {
                Ok(more) => bytes.merge(more),
                Err(_) => {
                    drop((slot, bytes));
                    return self.submit_blocking(record);
                }
            }
        }
        self.count_degraded(&record);
        slot.send(Job::Write(record, None, bytes));
        self.after_send(true);
    }

    /// Enqueues from code that cannot wait (a synchronous poll or drop, a standalone call). Never
    /// waits and never spawns: see the module docs for where the record goes when the queue is
    /// full.
    pub fn submit_blocking(&self, record: Record) {
        self.count_degraded(&record);
        let n = self.charge(&record);
        let permit = match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => return self.over_byte_bound(record),
        };
        match self.tx.try_send(Job::Write(record, None, permit)) {
            Ok(()) => self.after_send(true),
            Err(mpsc::error::TrySendError::Full(job)) if self.policy == FullPolicy::Block => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
                self.metrics.outstanding.fetch_add(1, Ordering::Relaxed);
                self.overflow
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(job);
                // The consumer drains the overflow list after each batch; if the queue emptied
                // in the meantime this wakes it (a full queue means it is busy and will look).
                let _ = self.tx.try_send(Job::Wake);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.count_drop("queue full"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.after_send(false),
        }
    }

    /// A record from code that cannot wait, when the writer already holds `queue_max_bytes`.
    fn over_byte_bound(&self, record: Record) {
        let journal = match (&self.journal, self.policy) {
            (Some(j), FullPolicy::Block) => j,
            _ => return self.count_drop("queue_max_bytes reached"),
        };
        match journal.append([(record.collection, &record.doc)]) {
            Ok(_) => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
                self.metrics.spilled.fetch_add(1, Ordering::Relaxed);
                self.journal_dirty.store(true, Ordering::SeqCst);
                let _ = self.tx.try_send(Job::Wake);
            }
            Err(e) => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
                self.metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "audit", error = %e,
                    "audit writer over queue_max_bytes and the spill journal write failed; record lost");
            }
        }
    }

    fn count_degraded(&self, record: &Record) {
        if record.degraded {
            self.metrics.degraded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts and logs a record that could not even be encoded (it cannot be stored either).
    pub(crate) fn count_unencodable(&self, e: &crate::store::StoreError) {
        self.metrics.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(target: "audit", error = %e, "audit record cannot be encoded, not even with markers in place of its parts; lost");
    }

    fn after_send(&self, sent: bool) {
        if sent {
            self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
            self.metrics.outstanding.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: "audit", "audit writer is stopped; record lost");
        }
    }

    fn count_drop(&self, why: &'static str) {
        let n = self.metrics.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            if self.policy == FullPolicy::Drop {
                tracing::warn!(target: "audit", dropped = n, why, "audit record dropped (full_policy = drop)");
            } else {
                tracing::error!(target: "audit", dropped = n, why,
                    "audit record dropped: the writer holds queue_max_bytes, the caller cannot wait and no spill journal is configured");
            }
        }
    }

    /// Waits until every record submitted before this call is stored (or given up at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.metrics;
        let overflow = self
            .overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        MetricsSnapshot {
            enqueued: m.enqueued.load(Ordering::Relaxed),
            written: m.written.load(Ordering::Relaxed),
            retried: m.retried.load(Ordering::Relaxed),
            failed: m.failed.load(Ordering::Relaxed),
            dropped: m.dropped.load(Ordering::Relaxed),
            spilled: m.spilled.load(Ordering::Relaxed),
            replayed: m.replayed.load(Ordering::Relaxed),
            degraded: m.degraded.load(Ordering::Relaxed),
            quarantined: m.quarantined.load(Ordering::Relaxed),
            journal_corrupt: m.journal_corrupt.load(Ordering::Relaxed),
            journal_forged: m.journal_forged.load(Ordering::Relaxed),
            queue_depth: (self.capacity - self.tx.capacity() + overflow) as u64,
            queue_bytes: (self.max_bytes - self.bytes.available_permits()) as u64,
            seals: m.seals.load(Ordering::Relaxed),
            seals_failed: m.seals_failed.load(Ordering::Relaxed),
            checkpoints: m.witness.published.load(Ordering::Relaxed),
            checkpoint_failures: m.witness.failures.load(Ordering::Relaxed),
            forwarded: m.forward.forwarded.load(Ordering::Relaxed),
            forward_failures: m.forward.failures.load(Ordering::Relaxed),
            forward_dropped: m.forward.dropped.load(Ordering::Relaxed),
            forward_lag: m.forward.lag.load(Ordering::Relaxed),
        }
    }
}

impl WriterGuard {
    /// A guard with nothing to flush (auditing off).
    pub(crate) fn inert() -> WriterGuard {
        let (tx, _rx) = mpsc::channel(1);
        let writer = Writer {
            tx,
            policy: FullPolicy::Block,
            metrics: Arc::default(),
            capacity: 1,
            bytes: Arc::new(Semaphore::new(1)),
            max_bytes: 1,
            overflow: Arc::default(),
            journal: None,
            journal_dirty: Arc::default(),
        };
        WriterGuard {
            writer,
            task: None,
            retention: None,
            witness: None,
            forwarder: None,
            stopping: Arc::default(),
            timeout: Duration::ZERO,
        }
    }

    /// The writer this guard flushes.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Flushes every queued record, waiting at most the configured `flush_timeout`, then stops the
    /// consumer. Records still unwritten then are counted as failed and logged.
    pub async fn shutdown(mut self) -> MetricsSnapshot {
        self.stop().await;
        self.writer.metrics()
    }

    async fn stop(&mut self) {
        if let Some(retention) = self.retention.take() {
            retention.abort();
            let _ = retention.await;
        }
        let Some(task) = self.task.take() else { return };
        // Flushed means nothing outstanding: records that were waiting for room in the queue when
        // the first flush marker went in are behind it, so flush until none is left.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let flushed = loop {
            if tokio::time::timeout_at(deadline, self.writer.flush())
                .await
                .is_err()
            {
                break false;
            }
            if self.writer.metrics.outstanding.load(Ordering::Relaxed) == 0 {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        // Past the deadline the consumer stops calling the store: what remains goes to the spill
        // journal when there is one, and is counted as failed when there is not.
        self.stopping.store(true, Ordering::SeqCst);
        if !flushed {
            let pending = self.writer.metrics.outstanding.load(Ordering::Relaxed);
            tracing::error!(target: "audit", pending, "audit writer did not flush within the deadline");
            // A store call in flight is let return (SQLite gives up on a lock after 5 s), so its
            // records are counted by what happened to them, not guessed; the rest is settled
            // without calling the store again.
            let _ = tokio::time::timeout(SETTLE_GRACE, self.writer.flush()).await;
        }
        task.abort();
        let _ = task.await;
        // The consumer, gone, no longer offers heads: the publisher sends the last one and ends.
        if let Some(witness) = self.witness.take() {
            if tokio::time::timeout(WITNESS_GRACE, witness).await.is_err() {
                tracing::error!(target: "audit",
                    "audit checkpoint publisher did not finish within {WITNESS_GRACE:?} at shutdown");
            }
        }
        // Everything is stored and sealed: the forwarder may deliver it, within the flush
        // deadline (what it does not deliver it resumes from its cursor at the next start).
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.stop(self.timeout).await;
        }
        // A store call that had not returned leaves records in the aborted consumer's hands: they
        // are counted as failed (a write in flight may still land; its outcome is unknown), never
        // left out of the counts.
        let lost = self.writer.metrics.outstanding.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.writer
                .metrics
                .failed
                .fetch_add(lost, Ordering::Relaxed);
            tracing::error!(target: "audit", lost, "audit records still in flight at shutdown; lost");
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if self.task.is_none() {
            return;
        }
        // The fallback when `shutdown().await` was not called: on a multi-threaded runtime the
        // flush can run here; elsewhere it cannot without blocking the runtime it needs.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(self.stop()));
            }
            _ => {
                let m = self.writer.metrics();
                if m.queue_depth > 0 {
                    tracing::error!(target: "audit", pending = m.queue_depth,
                        "audit WriterGuard dropped without shutdown().await; queued records may be lost");
                }
            }
        }
    }
}

/// The consumer: one task, so records are stored (or journaled) in the order they were queued.
struct Consumer {
    store: Store,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    queue: String,
    journal: Option<Journal>,
    quarantine: Journal,
    overflow: Arc<Mutex<VecDeque<Job>>>,
    journal_dirty: Arc<AtomicBool>,
    /// While the journal holds records, new ones go there too, so the order is kept.
    spilling: bool,
    /// Shutdown's deadline passed, there is no journal and the store failed since: records left
    /// are counted as failed without calling the store again.
    gave_up: bool,
    /// Where the replay goes on in the journal: everything before it is stored or quarantined.
    replay_offset: u64,
    replay_failures: u32,
    next_replay: tokio::time::Instant,
    backoff: Duration,
    /// Most bytes of journal entries read into memory at once by a replay.
    replay_max_bytes: usize,
    /// The chain this writer extends, when sealing is on.
    sealing: Option<Sealing>,
    /// What was stored since the last seal: each record's seal entry (collection, id,
    /// commitment) and salt.
    sealed: Vec<Covered>,
    /// A seal made but not stored yet (the store failed), with its salts: stored before the next
    /// one is made, so the chain stays in order.
    unstored_seal: Option<Prepared>,
    /// Where the stream's tree heads are offered for publication as checkpoints.
    witness: Option<crate::witness::Witness>,
    /// Seals made so far (checkpoints are published every `seal_anchor_every` of them).
    seals_made: u64,
    /// The journal being replayed is one a `journal` seal says was replayed whole already (a copy
    /// put back): its entries are quarantined, not stored.
    replaying_closed: bool,
    /// The epoch of the journal being replayed.
    replay_epoch: Option<[u8; crate::journal::EPOCH_LEN]>,
    /// Epochs of journals replayed whole and removed, still to be stated in a `journal` seal.
    pending_close: Vec<[u8; crate::journal::EPOCH_LEN]>,
}

type Entry = (Collection, RawDocumentBuf);
/// One collection's records of a batch, with what the seal will list about each.
type Group = (Collection, Vec<RawDocumentBuf>, Vec<Covered>);
type Pending = (Record, Option<oneshot::Sender<()>>, OwnedSemaphorePermit);

/// What became of the records of one store call.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    written: u64,
    degraded: u64,
    quarantined: u64,
    failed: u64,
}

impl Outcome {
    fn add(&mut self, o: Outcome) {
        self.written += o.written;
        self.degraded += o.degraded;
        self.quarantined += o.quarantined;
        self.failed += o.failed;
    }

    fn total(&self) -> u64 {
        self.written + self.quarantined + self.failed
    }
}

/// One step of a replay: what was read from the journal.
enum ReplayStep {
    /// Records, and the offset after them.
    Entries(Vec<Entry>, u64),
    /// A damaged region (or raw bytes that do not belong in a journal), and the offset after it;
    /// `true` when it is an entry that failed authentication rather than damage.
    Corrupt(u64, Vec<u8>, u64, bool),
    /// Nothing more: the file was this long.
    End(u64),
}

/// Reads the next replay step: up to [`MAX_BATCH`] entries and `max_bytes` bytes of them (always
/// at least one), so a replay holds no more of the journal in memory than the queue may.
fn read_replay_step(
    journal: &Journal,
    offset: u64,
    max_bytes: usize,
) -> std::io::Result<ReplayStep> {
    let Some(mut r) = journal.reader_at(offset)? else {
        return Ok(ReplayStep::End(0));
    };
    let mut entries = Vec::new();
    let mut bytes = 0;
    loop {
        let before = r.offset();
        match r.next_item()? {
            None => {
                return Ok(if entries.is_empty() {
                    ReplayStep::End(r.file_len())
                } else {
                    ReplayStep::Entries(entries, before)
                })
            }
            // The journal's own epoch entry: nothing to store.
            Some(Item::Epoch) => {}
            Some(Item::Entry(c, d)) => {
                bytes += d.as_bytes().len();
                entries.push((c, d));
                if entries.len() >= MAX_BATCH || bytes >= max_bytes {
                    return Ok(ReplayStep::Entries(entries, r.offset()));
                }
            }
            Some(other) if entries.is_empty() => {
                let (bytes, forged) = match other {
                    Item::Corrupt { bytes, .. } | Item::Raw(bytes) => (bytes, false),
                    Item::Unauthenticated { bytes, .. } => (bytes, true),
                    Item::Entry(..) | Item::Epoch => unreachable!("handled above"),
                };
                return Ok(ReplayStep::Corrupt(before, bytes, r.offset(), forged));
            }
            // A damaged region after some records: those records first, the region next time.
            Some(_) => return Ok(ReplayStep::Entries(entries, before)),
        }
    }
}

impl Consumer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        if let Some(sealing) = &self.sealing {
            // The process this writer writes for is sealed with its first batch, if what the
            // store holds (read by its bytes) is what this process wrote.
            let process = sealing.process;
            let mut found = Vec::new();
            let read = self
                .store
                .for_each_stored(
                    Collection::Process,
                    &crate::store::Filter::eq("_id", process),
                    10,
                    |docs| {
                        found.extend(docs);
                        Ok(())
                    },
                )
                .await;
            let ours = |d: &RawDocumentBuf| {
                bson::from_slice::<crate::document::Process>(d.as_bytes())
                    .is_ok_and(|p| Some(&p) == sealing.process_doc.as_ref())
            };
            match (read, &sealing.process_doc) {
                (Ok(_), Some(_)) if found.len() == 1 && ours(&found[0]) => self
                    .sealed
                    .push(sealing.sealer.cover(Collection::Process, &found[0])),
                (Ok(_), _) => tracing::warn!(target: "audit", process = %process,
                    "the stored process document is not the one this process writes; it is not sealed again (`audit verify` tells whether it was changed)"),
                (Err(e), _) => tracing::warn!(target: "audit", error = %e,
                    "cannot read the process document to seal it"),
            }
        }
        if self.journal.as_ref().is_some_and(Journal::has_entries) {
            // Records spilled by an earlier run (an outage, a deadline, a crash) go first.
            self.spilling = true;
            self.try_replay().await;
        }
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
            self.notice_journal();
            let received = if self.spilling {
                let wait = self
                    .next_replay
                    .saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(wait, rx.recv_many(&mut jobs, MAX_BATCH)).await {
                    Ok(n) => n,
                    Err(_) => {
                        self.try_replay().await;
                        continue;
                    }
                }
            } else {
                rx.recv_many(&mut jobs, MAX_BATCH).await
            };
            if received == 0 {
                return;
            }
            let may_hold = !self.spilling && !self.stopping.load(Ordering::SeqCst);
            coalesce(&mut rx, &mut jobs, may_hold).await;
            let mut batch = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Write(r, ack, permit) => batch.push((r, ack, permit)),
                    Job::Wake => {}
                    Job::Flush(done) => {
                        // Everything before the flush marker is handled first: order is kept.
                        self.process(std::mem::take(&mut batch)).await;
                        self.process_overflow().await;
                        self.notice_journal();
                        if self.spilling {
                            self.try_replay().await;
                        }
                        let _ = done.send(());
                    }
                }
            }
            self.process(batch).await;
            self.process_overflow().await;
            if self.spilling && tokio::time::Instant::now() >= self.next_replay {
                self.try_replay().await;
            }
        }
    }

    /// A record journaled by code that could not wait: replay the journal from now on.
    fn notice_journal(&mut self) {
        if self.journal_dirty.swap(false, Ordering::SeqCst) && !self.spilling {
            self.spilling = true;
            self.next_replay = tokio::time::Instant::now();
        }
    }

    /// Stores the records that waited in the overflow list.
    async fn process_overflow(&mut self) {
        loop {
            let batch: Vec<Pending> = {
                let mut o = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
                let n = o.len().min(MAX_BATCH);
                o.drain(..n)
                    .filter_map(|job| match job {
                        Job::Write(r, ack, permit) => Some((r, ack, permit)),
                        _ => None,
                    })
                    .collect()
            };
            if batch.is_empty() {
                return;
            }
            self.process(batch).await;
        }
    }

    /// Stores a batch (or journals it); acknowledges it once it is stored or durably journaled.
    /// The bytes it held are released when it is settled.
    async fn process(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let mut acks = Vec::new();
        let mut permits = Vec::with_capacity(batch.len());
        let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
        for (record, ack, permit) in batch {
            entries.push((record.collection, record.doc));
            acks.extend(ack);
            permits.push(permit);
        }
        if self.spilling {
            self.spill(entries).await;
        } else {
            self.store_with_retries(entries).await;
        }
        self.seal_stored().await;
        drop(permits);
        for ack in acks {
            let _ = ack.send(());
        }
    }

    async fn store_with_retries(&mut self, entries: Vec<Entry>) {
        // Each record is covered once, whatever the retries: a retry after a write that partly
        // landed (the salts stored, the seal not) seals with the same salts.
        let mut groups: VecDeque<Group> = group(entries)
            .into_iter()
            .map(|(c, docs)| {
                let covers = self.covers_for(c, &docs, &HashMap::new());
                (c, docs, covers)
            })
            .collect();
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0u32;
        while let Some((collection, docs, covers)) = groups.front() {
            let (collection, n) = (*collection, docs.len() as u64);
            if self.stopping.load(Ordering::SeqCst) && attempt == 0 && self.journal.is_some() {
                // Shutdown's deadline passed: no more store calls; the rest goes to the journal.
                let rest: Vec<Entry> = groups
                    .into_iter()
                    .flat_map(|(c, docs, _)| docs.into_iter().map(move |d| (c, d)))
                    .collect();
                self.spill(rest).await;
                return;
            }
            if self.gave_up {
                self.fail_at_shutdown(&groups, "the store failed after shutdown's deadline");
                return;
            }
            match self.store_group(collection, docs, covers).await {
                Ok(out) => {
                    self.metrics.count(out, false);
                    self.metrics.settle(n);
                    if attempt > 0 {
                        tracing::info!(target: "audit", queue = %self.queue, %collection, attempt, "audit store recovered");
                    }
                    groups.pop_front();
                    attempt = 0;
                }
                Err(e) => {
                    attempt += 1;
                    if self.journal.is_some() {
                        // Durable beats waiting: the queue keeps moving and requests never block.
                        tracing::warn!(target: "audit", queue = %self.queue, %collection, error = %e,
                            "audit store write failed; spilling to the journal");
                        let rest: Vec<Entry> = groups
                            .into_iter()
                            .flat_map(|(c, docs, _)| docs.into_iter().map(move |d| (c, d)))
                            .collect();
                        self.spilling = true;
                        self.schedule_replay(false);
                        self.spill(rest).await;
                        return;
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        self.gave_up = true;
                        self.fail_at_shutdown(&groups, &e.to_string());
                        return;
                    }
                    self.metrics.retried.fetch_add(1, Ordering::Relaxed);
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(target: "audit", queue = %self.queue, %collection, records = n, attempt, error = %e,
                            "audit store write failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Counts the records of `groups` as failed: shutdown's deadline passed, the store is failing
    /// and there is no journal to keep them.
    fn fail_at_shutdown(&self, groups: &VecDeque<Group>, error: &str) {
        let lost: u64 = groups.iter().map(|(_, d, _)| d.len() as u64).sum();
        self.metrics.failed.fetch_add(lost, Ordering::Relaxed);
        self.metrics.settle(lost);
        tracing::error!(target: "audit", queue = %self.queue, records = lost, error,
            "audit store failed during shutdown and no spill journal is configured; records lost");
    }

    /// Stores one collection's documents. A batch the store refuses for good is split until the
    /// refused documents are isolated; the others are stored and each refused one is stored
    /// trimmed or quarantined. `Err` only on a passing error: nothing is counted then, and the
    /// caller retries the whole batch (what was stored already is skipped by `_id`).
    async fn store_group(
        &mut self,
        c: Collection,
        docs: &[RawDocumentBuf],
        covers: &[Covered],
    ) -> Result<Outcome, StoreError> {
        if let Some(out) = self.store_group_with_its_seal(c, docs, covers).await? {
            return Ok(out);
        }
        let mut stored = Vec::new();
        let out = self
            .store_group_sealing(c, docs, covers, &mut stored)
            .await?;
        // Only once the whole group is settled: a retried group would list its records twice.
        self.sealed.append(&mut stored);
        Ok(out)
    }

    /// The common case when sealing: the group and the seal covering it (with whatever was
    /// stored since the last seal) in one store call — one transaction, one commit on SQLite.
    /// `Ok(None)` when that does not apply (sealing off, a seal still unstored, a seal replayed
    /// from the journal) or when the store refuses the group for good: the caller then stores it
    /// record by record and seals afterwards. The chain moves on only once the seal is stored.
    async fn store_group_with_its_seal(
        &mut self,
        c: Collection,
        docs: &[RawDocumentBuf],
        covers: &[Covered],
    ) -> Result<Option<Outcome>, StoreError> {
        if !c.is_record() || self.unstored_seal.is_some() || docs.is_empty() {
            return Ok(None);
        }
        let Some(sealing) = self.sealing.as_ref() else {
            return Ok(None);
        };
        let mut entries = self.sealed.clone();
        entries.extend_from_slice(covers);
        let prepared = sealing
            .sealer
            .prepare_batch(Some(sealing.process), &entries);
        match self
            .store
            .insert_raw_documents_sealed(c, docs.to_vec(), prepared.salts, prepared.seal)
            .await
        {
            Ok(_) => {
                self.sealed.clear();
                self.note_seal(prepared.head);
                self.metrics.seals.fetch_add(1, Ordering::Relaxed);
                Ok(Some(Outcome {
                    written: docs.len() as u64,
                    ..Outcome::default()
                }))
            }
            Err(e) if e.is_permanent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What the next seal will list about `docs` of `c` (nothing when sealing is off or they are
    /// not records), each with the salt `known` holds for its `_id`, else a fresh one.
    fn covers_for(
        &self,
        c: Collection,
        docs: &[RawDocumentBuf],
        known: &HashMap<String, Vec<u8>>,
    ) -> Vec<Covered> {
        let Some(sealing) = self.sealing.as_ref().filter(|_| c.is_record()) else {
            return Vec::new();
        };
        docs.iter()
            .map(|d| {
                let salt = d
                    .get_object_id("_id")
                    .ok()
                    .and_then(|id| known.get(&id.to_hex()))
                    .map(Vec::as_slice);
                sealing.sealer.cover_with(c, d, salt)
            })
            .collect()
    }

    /// The salts already stored for `docs` (by `_id` hex).
    async fn stored_salts(
        &self,
        c: Collection,
        docs: &[RawDocumentBuf],
    ) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        if self.sealing.is_none() || !c.is_record() {
            return Ok(HashMap::new());
        }
        let ids: Vec<bson::Bson> = docs
            .iter()
            .filter_map(|d| d.get_object_id("_id").ok().map(bson::Bson::ObjectId))
            .collect();
        let mut out = HashMap::new();
        self.store
            .for_each_raw_batch(
                Collection::Salt,
                &Filter::In("_id".into(), ids),
                MAX_BATCH as u64,
                |salts| {
                    for s in salts {
                        if let (Ok(id), Some(salt)) =
                            (s.get_object_id("_id"), crate::commitment::salt_of(&s))
                        {
                            out.insert(id.to_hex(), salt.to_vec());
                        }
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(out)
    }

    /// The chain moves on to a seal, and its tree head is offered for publication.
    fn note_seal(&mut self, head: seal::Head) {
        let Some(sealing) = self.sealing.as_mut() else {
            return;
        };
        sealing.sealer.commit(head);
        self.seals_made += 1;
        if let Some(w) = &self.witness {
            w.offer(crate::witness::Offer {
                seals: self.seals_made,
                checkpoint: sealing.sealer.checkpoint(),
            });
        }
    }

    async fn store_group_sealing(
        &self,
        c: Collection,
        docs: &[RawDocumentBuf],
        covers: &[Covered],
        stored: &mut Vec<Covered>,
    ) -> Result<Outcome, StoreError> {
        // Seals and salts (replayed from the journal) are part of the chain, not covered by it.
        let sealer = self
            .sealing
            .as_ref()
            .map(|s| &s.sealer)
            .filter(|_| c.is_record());
        let mut out = Outcome::default();
        // Ranges of `docs` still to store, the next one last.
        let mut parts = Vec::with_capacity(16);
        parts.push(0..docs.len());
        let mut split = false;
        while let Some(part) = parts.pop() {
            match self
                .store
                .insert_raw_documents(c, docs[part.clone()].to_vec())
                .await
            {
                Ok(_) => {
                    out.written += part.len() as u64;
                    if sealer.is_some() {
                        stored.extend(covers[part].iter().cloned());
                    }
                }
                Err(e) if !e.is_permanent() => return Err(e),
                Err(e) if part.len() > 1 => {
                    if !split {
                        split = true;
                        tracing::warn!(target: "audit", queue = %self.queue, collection = %c, error = %e,
                            "audit store refused a batch; isolating the refused records");
                    }
                    let mid = part.start + part.len() / 2;
                    parts.push(mid..part.end);
                    parts.push(part.start..mid);
                }
                Err(e) => {
                    let (o, trimmed) = self.refused(c, docs[part.start].clone(), e).await?;
                    if let (Some(sealer), Some(t)) = (sealer, trimmed) {
                        // The trimmed record keeps the salt its cover was made with.
                        let salt = covers
                            .get(part.start)
                            .and_then(|cv| cv.salt.as_ref())
                            .and_then(|s| crate::commitment::salt_of(s));
                        stored.push(sealer.cover_with(c, &t, salt));
                    }
                    out.add(o)
                }
            }
        }
        Ok(out)
    }

    /// A document the store refused for good: stored with its bodies trimmed, else quarantined.
    async fn refused(
        &self,
        c: Collection,
        doc: RawDocumentBuf,
        e: StoreError,
    ) -> Result<(Outcome, Option<RawDocumentBuf>), StoreError> {
        let id = doc
            .get_object_id("_id")
            .map(|i| i.to_hex())
            .unwrap_or_default();
        let mut why = e.to_string();
        match degrade::trim_for_store(c, &doc, &e) {
            Ok((trimmed, parts)) if !parts.is_empty() => {
                match self
                    .store
                    .insert_raw_documents(c, vec![trimmed.clone()])
                    .await
                {
                    Ok(_) => {
                        tracing::error!(target: "audit", queue = %self.queue, collection = %c, id, error = %e,
                            parts = %parts.join(", "),
                            "audit store refused a record; stored it with these parts replaced by markers");
                        return Ok((
                            Outcome {
                                written: 1,
                                degraded: 1,
                                ..Outcome::default()
                            },
                            Some(trimmed),
                        ));
                    }
                    Err(e2) if !e2.is_permanent() => return Err(e2),
                    Err(e2) => why = format!("{e}; trimmed: {e2}"),
                }
            }
            Ok(_) => {}
            Err(e2) => why = format!("{e}; cannot trim: {e2}"),
        }
        let q = self.quarantine.clone();
        let kept = tokio::task::spawn_blocking(move || q.append([(c, &doc)])).await;
        let path = self.quarantine.path().display();
        Ok((
            match kept {
                Ok(Ok(_)) => {
                    tracing::error!(target: "audit", queue = %self.queue, collection = %c, id, error = %why,
                    quarantine = %path, "audit store refused a record even trimmed; kept in the quarantine file");
                    Outcome {
                        quarantined: 1,
                        ..Outcome::default()
                    }
                }
                Ok(Err(qe)) => {
                    tracing::error!(target: "audit", queue = %self.queue, collection = %c, id, error = %why,
                    quarantine = %path, quarantine_error = %qe, "audit store refused a record and the quarantine file cannot be written; record lost");
                    Outcome {
                        failed: 1,
                        ..Outcome::default()
                    }
                }
                Err(je) => {
                    tracing::error!(target: "audit", queue = %self.queue, collection = %c, id, error = %why,
                    quarantine_error = %je, "audit store refused a record and the quarantine task failed; record lost");
                    Outcome {
                        failed: 1,
                        ..Outcome::default()
                    }
                }
            },
            None,
        ))
    }

    /// Seals what was stored since the last seal, and stores the seal. A seal the store does not
    /// take goes to the spill journal when there is one (it is stored, in order, by the replay);
    /// without one it is retried, and only shutdown's deadline gives up on it (counted, logged:
    /// the chain then has a gap that `audit verify` reports).
    async fn seal_stored(&mut self) {
        self.seal_batch().await;
        self.close_journals().await;
    }

    /// States the epochs of journals replayed whole in `journal` seals, once no batch seal is
    /// waiting (the chain stays in order); one the store does not take is tried again later.
    async fn close_journals(&mut self) {
        while let Some(epoch) = self.pending_close.first().copied() {
            if self.unstored_seal.is_some() {
                return;
            }
            let Some(sealing) = self.sealing.as_mut() else {
                self.pending_close.clear();
                return;
            };
            let prepared = sealing
                .sealer
                .prepare(JOURNAL_SEAL, bson::doc! { "epoch": seal::hex_of(&epoch) });
            let (seal, head) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(target: "audit", queue = %self.queue, error = %e, "cannot seal a replayed journal");
                    self.pending_close.remove(0);
                    continue;
                }
            };
            match self
                .store
                .insert_raw_documents(Collection::Seal, vec![seal])
                .await
            {
                Ok(_) => {
                    self.pending_close.remove(0);
                    self.note_seal(head);
                    self.metrics.seals.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(target: "audit", queue = %self.queue, error = %e,
                        "cannot store the seal of a replayed journal yet; tried again later");
                    return;
                }
            }
        }
    }

    /// Seals what was stored since the last seal (see [`seal_stored`](Self::seal_stored)).
    async fn seal_batch(&mut self) {
        let Some(sealing) = self.sealing.as_mut() else {
            return;
        };
        if self.unstored_seal.is_none() {
            if self.sealed.is_empty() {
                return;
            }
            let entries = std::mem::take(&mut self.sealed);
            // Made now and stored below, or later, but always before the next one: the head
            // moves on at once.
            let prepared = sealing
                .sealer
                .prepare_batch(Some(sealing.process), &entries);
            self.note_seal(prepared.head.clone());
            self.unstored_seal = Some(prepared);
        }
        let Some(Prepared { seal, salts, .. }) = self.unstored_seal.clone() else {
            return;
        };
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0u32;
        loop {
            // The salts first: a seal stored without them would leave its records unverifiable.
            let stored = match self
                .store
                .insert_raw_documents(Collection::Salt, salts.clone())
                .await
            {
                Ok(_) => {
                    self.store
                        .insert_raw_documents(Collection::Seal, vec![seal.clone()])
                        .await
                }
                Err(e) => Err(e),
            };
            match stored {
                Ok(_) => {
                    self.unstored_seal = None;
                    self.metrics.seals.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    if let Some(journal) = self.journal.clone() {
                        let (seal, salts) = (seal.clone(), salts.clone());
                        let appended = tokio::task::spawn_blocking(move || {
                            journal.append(
                                salts
                                    .iter()
                                    .map(|s| (Collection::Salt, s))
                                    .chain([(Collection::Seal, &seal)]),
                            )
                        })
                        .await;
                        if let Ok(Ok(_)) = appended {
                            tracing::warn!(target: "audit", queue = %self.queue, error = %e,
                                "audit store did not take a seal; spilled to the journal");
                            self.unstored_seal = None;
                            self.spilling = true;
                            self.schedule_replay(false);
                            return;
                        }
                    }
                    if self.stopping.load(Ordering::SeqCst) || self.gave_up {
                        self.unstored_seal = None;
                        self.metrics.seals_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(target: "audit", queue = %self.queue, error = %e,
                            "audit seal lost at shutdown; `audit verify` will report the gap");
                        return;
                    }
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(target: "audit", queue = %self.queue, attempt, error = %e,
                            "audit store did not take a seal; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn spill(&mut self, entries: Vec<Entry>) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let n = entries.len() as u64;
        if n == 0 {
            return;
        }
        let appended = tokio::task::spawn_blocking(move || {
            let res = journal.append(entries.iter().map(|(c, d)| (*c, d)));
            (res, entries)
        })
        .await;
        match appended {
            Ok((Ok(_), _)) => {
                self.metrics.settle(n);
                self.metrics.spilled.fetch_add(n, Ordering::Relaxed);
            }
            Ok((Err(e), entries)) => {
                // A journal that cannot be written (disk full, a symlink refused) must not lose
                // the records: they stay in memory and the store is retried as without a
                // journal, the queue pushing back meanwhile. They may then be stored before
                // records still in the journal.
                tracing::error!(target: "audit", queue = %self.queue, records = n, error = %e,
                    journal = %self.journal.as_ref().map(|j| j.path().display().to_string()).unwrap_or_default(),
                    "spill journal write failed; retrying the store with the records kept in memory");
                let journal = self.journal.take();
                self.spilling = false;
                Box::pin(self.store_with_retries(entries)).await;
                self.spilling = journal.as_ref().is_some_and(Journal::has_entries);
                self.journal = journal;
            }
            Err(e) => {
                self.metrics.settle(n);
                self.metrics.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(target: "audit", queue = %self.queue, records = n, error = %e, "spill journal task failed; records lost");
            }
        }
    }

    fn schedule_replay(&mut self, failed_again: bool) {
        self.backoff = if failed_again {
            (self.backoff * 2).min(Duration::from_secs(2))
        } else {
            Duration::from_millis(50)
        };
        self.next_replay = tokio::time::Instant::now() + self.backoff;
    }

    fn replay_failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.replay_failures += 1;
        self.metrics.retried.fetch_add(1, Ordering::Relaxed);
        let attempt = self.replay_failures;
        if attempt == 1 || attempt.is_power_of_two() {
            tracing::warn!(target: "audit", queue = %self.queue, attempt, error = %error, "{what}; the journal is kept and replayed later");
        }
        self.schedule_replay(true);
    }

    /// At the start of a replay: reads the journal's epoch, and whether a `journal` seal says a
    /// journal of that epoch was replayed whole already (then this is a copy put back, and its
    /// entries go to the quarantine file). `false` when the store cannot tell yet.
    async fn check_epoch(&mut self, journal: &Journal) -> bool {
        let j = journal.clone();
        let epoch = match tokio::task::spawn_blocking(move || j.epoch()).await {
            Ok(Ok(e)) => e,
            _ => None,
        };
        self.replay_epoch = epoch;
        self.replaying_closed = false;
        let Some(epoch) = epoch else {
            return true;
        };
        let closed = Filter::And(vec![
            Filter::eq("kind", JOURNAL_SEAL),
            Filter::eq("epoch", seal::hex_of(&epoch)),
        ]);
        match self.store.count_stored(Collection::Seal, &closed).await {
            Ok(0) => true,
            Ok(_) => {
                tracing::error!(target: "audit", queue = %self.queue, journal = %journal.path().display(),
                    quarantine = %self.quarantine.path().display(),
                    "this spill journal was replayed whole before (a seal says so): it is a copy put back; its entries go to the quarantine file, not the store");
                self.replaying_closed = true;
                true
            }
            Err(e) => {
                self.replay_failed("audit store unavailable", &e);
                false
            }
        }
    }

    /// Replays the journal into the store in order, a batch at a time from where the last replay
    /// stopped; removes it once every entry is stored or quarantined.
    async fn try_replay(&mut self) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        if self.replay_offset == 0 && !self.check_epoch(&journal).await {
            return;
        }
        let mut budget = REPLAY_ENTRIES_PER_TURN;
        while budget > 0 {
            let (j, offset) = (journal.clone(), self.replay_offset);
            let max_bytes = self.replay_max_bytes;
            let step = match tokio::task::spawn_blocking(move || {
                read_replay_step(&j, offset, max_bytes)
            })
            .await
            {
                Ok(Ok(step)) => step,
                Ok(Err(e)) => {
                    tracing::error!(target: "audit", queue = %self.queue, error = %e, "cannot read the spill journal");
                    self.schedule_replay(true);
                    return;
                }
                Err(e) => {
                    tracing::error!(target: "audit", queue = %self.queue, error = %e, "spill journal read task failed");
                    self.schedule_replay(true);
                    return;
                }
            };
            match step {
                ReplayStep::End(len) => {
                    match journal.remove_if_len(len) {
                        Ok(true) => {
                            if self.replay_offset > 0 {
                                tracing::info!(target: "audit", queue = %self.queue, "spill journal replayed into the store");
                            }
                            // Replayed whole and gone: a copy put back later must not replay.
                            if let Some(epoch) = self.replay_epoch.take() {
                                if !self.replaying_closed {
                                    self.pending_close.push(epoch);
                                    self.seal_stored().await;
                                }
                            }
                            self.replaying_closed = false;
                            self.spilling = false;
                            self.replay_offset = 0;
                            self.replay_failures = 0;
                            self.backoff = Duration::from_millis(50);
                        }
                        // Appended to meanwhile: go on reading.
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::error!(target: "audit", queue = %self.queue, error = %e, "cannot remove the replayed journal");
                            self.schedule_replay(true);
                        }
                    }
                    return;
                }
                ReplayStep::Corrupt(at, bytes, next, forged) => {
                    budget = budget.saturating_sub(1);
                    let q = self.quarantine.clone();
                    let len = bytes.len();
                    let kept = tokio::task::spawn_blocking(move || q.append_raw(&bytes)).await;
                    match kept {
                        Ok(Ok(())) if forged => {
                            self.metrics.journal_forged.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(target: "audit", queue = %self.queue, offset = at, bytes = len,
                                journal = %journal.path().display(), quarantine = %self.quarantine.path().display(),
                                "spill journal entry failed authentication (not written by this trail's writer); copied to the quarantine file, not stored");
                            self.replay_offset = next;
                        }
                        Ok(Ok(())) => {
                            self.metrics.journal_corrupt.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(target: "audit", queue = %self.queue, offset = at, bytes = len,
                                journal = %journal.path().display(), quarantine = %self.quarantine.path().display(),
                                "damaged region in the spill journal; copied to the quarantine file and skipped");
                            self.replay_offset = next;
                        }
                        Ok(Err(e)) => {
                            tracing::error!(target: "audit", queue = %self.queue, error = %e,
                                "damaged region in the spill journal and the quarantine file cannot be written; the journal is kept");
                            self.schedule_replay(true);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(target: "audit", queue = %self.queue, error = %e, "quarantine task failed; the journal is kept");
                            self.schedule_replay(true);
                            return;
                        }
                    }
                }
                ReplayStep::Entries(entries, next) if self.replaying_closed => {
                    budget = budget.saturating_sub(entries.len());
                    let n = entries.len() as u64;
                    let q = self.quarantine.clone();
                    let kept = tokio::task::spawn_blocking(move || {
                        q.append(entries.iter().map(|(c, d)| (*c, d)))
                    })
                    .await;
                    if !matches!(kept, Ok(Ok(_))) {
                        tracing::error!(target: "audit", queue = %self.queue,
                            "the quarantine file cannot be written; the journal is kept");
                        self.schedule_replay(true);
                        return;
                    }
                    self.metrics.journal_forged.fetch_add(n, Ordering::Relaxed);
                    self.replay_offset = next;
                }
                ReplayStep::Entries(entries, next) => {
                    budget = budget.saturating_sub(entries.len());
                    let mut out = Outcome::default();
                    let mut seals = 0;
                    for (c, docs) in group(entries) {
                        if !c.is_record() {
                            // A seal (and the salts it needs) spilled because the store did not
                            // take it: part of the chain, not a record.
                            let n = docs.len() as u64;
                            match self.store.insert_raw_documents(c, docs).await {
                                Ok(_) => {
                                    if c == Collection::Seal {
                                        seals += n;
                                    }
                                    continue;
                                }
                                Err(e) => {
                                    self.replay_failed("audit store still unavailable", &e);
                                    return;
                                }
                            }
                        }
                        // A record of the journal may have been stored already, with its salt, by
                        // a writer that then could not store the seal: its salt is reused.
                        let known = match self.stored_salts(c, &docs).await {
                            Ok(k) => k,
                            Err(e) => {
                                self.replay_failed("audit store still unavailable", &e);
                                return;
                            }
                        };
                        let covers = self.covers_for(c, &docs, &known);
                        match self.store_group(c, &docs, &covers).await {
                            Ok(o) => out.add(o),
                            Err(e) => {
                                self.replay_failed("audit store still unavailable", &e);
                                return;
                            }
                        }
                    }
                    self.metrics.count(out, true);
                    self.metrics.seals.fetch_add(seals, Ordering::Relaxed);
                    self.seal_stored().await;
                    self.replay_offset = next;
                    self.replay_failures = 0;
                    debug_assert!(out.total() + seals > 0);
                }
            }
        }
        // More to replay: come back right after a look at the queue.
        self.next_replay = tokio::time::Instant::now();
    }
}

/// Gives a small batch that nobody waits on a moment to grow before it is stored. Each commit
/// rewrites every index page it touches and, on SQLite, syncs the file: at a moderate request
/// rate, one record per commit cost ten times the CPU and disk writes per record of a batch under
/// load. So when nothing in the batch is waited on (no sync-mode request, no flush) and the batch
/// is not full, the writer waits [`COALESCE`] for more records first, unless `may_hold` is false
/// (replaying the journal, shutting down): async records reach the store a few milliseconds later,
/// at a fraction of the cost. An idle writer still sleeps until the next record, and a busy one
/// finds full batches and never waits.
async fn coalesce(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, may_hold: bool) {
    let waited_on = jobs
        .iter()
        .any(|j| matches!(j, Job::Flush(_) | Job::Write(_, Some(_), _)));
    if waited_on || jobs.len() >= MAX_BATCH || !may_hold {
        return;
    }
    tokio::time::sleep(COALESCE).await;
    while jobs.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
}

/// Consecutive entries of one collection, in batches of at most [`MAX_BATCH`], order kept.
fn group(entries: Vec<Entry>) -> Vec<(Collection, Vec<RawDocumentBuf>)> {
    let mut out: Vec<(Collection, Vec<RawDocumentBuf>)> = Vec::new();
    for (c, d) in entries {
        match out.last_mut() {
            Some((lc, docs)) if *lc == c && docs.len() < MAX_BATCH => docs.push(d),
            _ => out.push((c, vec![d])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Access, AccessView};

    /// A write job; with `ack`, one that a sync-mode request waits on.
    fn write(ack: bool) -> Job {
        let access = Access::new("/", chrono::Utc::now(), AccessView::new("a::v", "a", "v"));
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Job::Write(
            Record::access(&access).unwrap(),
            ack.then(|| oneshot::channel().0),
            permit,
        )
    }

    /// Sends a write after `after` (virtual time), keeping the channel open a while longer.
    fn send_later(tx: mpsc::Sender<Job>, after: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tx.send(write(false)).await.ok();
            tokio::time::sleep(Duration::from_secs(1)).await;
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_batch_nobody_waits_on_takes_the_records_of_the_next_milliseconds() {
        let (tx, mut rx) = mpsc::channel(16);
        let _soon = send_later(tx.clone(), Duration::from_millis(2));
        let _late = send_later(tx, COALESCE + Duration::from_millis(5));
        let mut jobs = vec![write(false)];
        let start = tokio::time::Instant::now();
        coalesce(&mut rx, &mut jobs, true).await;
        assert_eq!(
            jobs.len(),
            2,
            "the record 2 ms later joins, the later one does not"
        );
        assert_eq!(start.elapsed(), COALESCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_someone_waits_on_or_that_may_not_be_held_goes_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        let _soon = send_later(tx, Duration::from_millis(1));
        let start = tokio::time::Instant::now();
        for (mut jobs, may_hold) in [
            (vec![write(true)], true),
            (vec![write(false), Job::Flush(oneshot::channel().0)], true),
            (vec![write(false)], false),
        ] {
            let n = jobs.len();
            coalesce(&mut rx, &mut jobs, may_hold).await;
            assert_eq!(jobs.len(), n);
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "nothing waited");
    }
}
