//! The writer: one ordered consumer task that batches audit records into the store (F7, F8,
//! D14–D16, D65), modelled on `tracing-appender`'s non-blocking writer, with one decision made the
//! other way round: when the queue is full the default is to **wait** (back-pressure), because
//! these are audit records; dropping is an explicit [`FullPolicy::Drop`] and every drop is counted.
//!
//! Sync mode uses the same queue and waits for the record's acknowledgement before the response is
//! returned; async mode only enqueues. Store errors are logged and counted and never reach the
//! host's request: with a spill journal configured the failed batch and everything after it go to
//! the journal (fsync'd, acknowledged) and are replayed in order, with back-off, once the store
//! answers; without one the batch is retried with back-off and the bounded queue absorbs the rest. Every document carries its client-side `_id`, and the
//! stores skip an `_id` they already hold, so a retry never duplicates a record.

use crate::config::{AuditConfig, FullPolicy};
use crate::document::{Access, Collection, ModelAction};
use crate::journal::Journal;
use crate::store::Store;
use bson::RawDocumentBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most records written in one store call.
pub const MAX_BATCH: usize = 512;

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

enum Job {
    Write(Record, Option<oneshot::Sender<()>>),
    Flush(oneshot::Sender<()>),
}

/// Counters of the writer, readable at any time (D48).
#[derive(Debug, Default)]
pub struct Metrics {
    enqueued: AtomicU64,
    written: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    spilled: AtomicU64,
    replayed: AtomicU64,
    degraded: AtomicU64,
    /// Accepted records not yet written, journaled or counted as failed.
    outstanding: AtomicU64,
}

impl Metrics {
    /// `n` accepted records are settled (written, journaled or failed).
    fn settle(&self, n: u64) {
        self.outstanding.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A snapshot of the writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Records accepted into the queue.
    pub enqueued: u64,
    /// Records stored.
    pub written: u64,
    /// Store calls that failed and were retried.
    pub retried: u64,
    /// Records that could not be stored before shutdown gave up on them.
    pub failed: u64,
    /// Records dropped because the queue was full under [`FullPolicy::Drop`].
    pub dropped: u64,
    /// Records written to the spill journal (store down, or shutdown's deadline passed).
    pub spilled: u64,
    /// Records replayed from the journal into the store (also counted in `written`).
    pub replayed: u64,
    /// Records stored with parts replaced by markers: parts that could not be encoded, or bodies
    /// trimmed because the store refused the whole record (also counted in `written` once stored).
    pub degraded: u64,
    /// Records waiting in the queue now.
    pub queue_depth: u64,
}

/// Handle to submit records. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    policy: FullPolicy,
    metrics: Arc<Metrics>,
    capacity: usize,
}

/// Flushes the writer on [`shutdown`](WriterGuard::shutdown) (or, as a fallback, on drop).
#[must_use = "dropping the guard stops the writer; keep it until shutdown and call `shutdown().await`"]
pub struct WriterGuard {
    writer: Writer,
    task: Option<tokio::task::JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    timeout: Duration,
}

/// Starts the writer's consumer task on the current tokio runtime.
pub fn spawn(store: Store, config: &AuditConfig) -> (Writer, WriterGuard) {
    let (tx, rx) = mpsc::channel(config.queue_capacity);
    let metrics = Arc::new(Metrics::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let consumer = Consumer {
        store,
        metrics: metrics.clone(),
        stopping: stopping.clone(),
        queue: config.queue_name.clone(),
        journal: config.spill_path.as_ref().map(Journal::new),
        spilling: false,
        next_replay: tokio::time::Instant::now(),
        backoff: Duration::from_millis(50),
    };
    let task = tokio::spawn(consumer.run(rx));
    let writer = Writer {
        tx,
        policy: config.full_policy,
        metrics,
        capacity: config.queue_capacity,
    };
    let guard = WriterGuard {
        writer: writer.clone(),
        task: Some(task),
        stopping,
        timeout: config.flush_timeout,
    };
    (writer, guard)
}

impl Writer {
    /// Enqueues a record; with `ack`, the returned receiver fires once it is stored.
    pub async fn submit(&self, record: Record, ack: bool) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        self.count_degraded(&record);
        let job = Job::Write(record, tx);
        let sent = match self.policy {
            FullPolicy::Block => self.tx.send(job).await.is_ok(),
            FullPolicy::Drop => match self.tx.try_send(job) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.count_drop();
                    return None;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        };
        self.after_send(sent);
        rx
    }

    /// Enqueues from synchronous code. When the queue is full under back-pressure, the record is
    /// handed to a task that waits for room (outside a runtime: this thread waits).
    pub fn submit_blocking(&self, record: Record) {
        self.count_degraded(&record);
        match self.tx.try_send(Job::Write(record, None)) {
            Ok(()) => self.after_send(true),
            Err(mpsc::error::TrySendError::Full(job)) if self.policy == FullPolicy::Block => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
                self.metrics.outstanding.fetch_add(1, Ordering::Relaxed);
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => {
                        let tx = self.tx.clone();
                        h.spawn(async move {
                            let _ = tx.send(job).await;
                        });
                    }
                    Err(_) => {
                        let _ = self.tx.blocking_send(job);
                    }
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.count_drop(),
            Err(mpsc::error::TrySendError::Closed(_)) => self.after_send(false),
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

    fn count_drop(&self) {
        let n = self.metrics.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(target: "audit", dropped = n, "audit queue full; record dropped (full_policy = drop)");
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
        MetricsSnapshot {
            enqueued: m.enqueued.load(Ordering::Relaxed),
            written: m.written.load(Ordering::Relaxed),
            retried: m.retried.load(Ordering::Relaxed),
            failed: m.failed.load(Ordering::Relaxed),
            dropped: m.dropped.load(Ordering::Relaxed),
            spilled: m.spilled.load(Ordering::Relaxed),
            replayed: m.replayed.load(Ordering::Relaxed),
            degraded: m.degraded.load(Ordering::Relaxed),
            queue_depth: (self.capacity - self.tx.capacity()) as u64,
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
        };
        WriterGuard {
            writer,
            task: None,
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
            let _ = tokio::time::timeout(Duration::from_secs(5), self.writer.flush()).await;
        }
        task.abort();
        let _ = task.await;
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
    /// While the journal holds records, new ones go there too, so the order is kept.
    spilling: bool,
    next_replay: tokio::time::Instant,
    backoff: Duration,
}

type Entry = (Collection, RawDocumentBuf);

impl Consumer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        if self.journal.as_ref().is_some_and(Journal::has_entries) {
            // Records spilled by an earlier run (an outage, a deadline, a crash) go first.
            self.spilling = true;
            self.try_replay().await;
        }
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
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
            let mut batch = Vec::new();
            for job in jobs.drain(..) {
                match job {
                    Job::Write(r, ack) => batch.push((r, ack)),
                    Job::Flush(done) => {
                        // Everything before the flush marker is handled first: order is kept.
                        self.process(std::mem::take(&mut batch)).await;
                        if self.spilling {
                            self.try_replay().await;
                        }
                        let _ = done.send(());
                    }
                }
            }
            self.process(batch).await;
            if self.spilling && tokio::time::Instant::now() >= self.next_replay {
                self.try_replay().await;
            }
        }
    }

    /// Stores a batch (or journals it); acknowledges it once it is stored or durably journaled.
    async fn process(&mut self, batch: Vec<(Record, Option<oneshot::Sender<()>>)>) {
        if batch.is_empty() {
            return;
        }
        let mut acks = Vec::new();
        let mut entries: Vec<Entry> = Vec::with_capacity(batch.len());
        for (record, ack) in batch {
            entries.push((record.collection, record.doc));
            acks.extend(ack);
        }
        if self.spilling {
            self.spill(entries).await;
        } else {
            self.store_with_retries(entries).await;
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }

    async fn store_with_retries(&mut self, entries: Vec<Entry>) {
        let mut groups = group(entries);
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0u32;
        while let Some((collection, docs)) = groups.first().cloned() {
            let n = docs.len() as u64;
            if self.stopping.load(Ordering::SeqCst) && attempt == 0 && self.journal.is_some() {
                // Shutdown's deadline passed: no more store calls; the rest goes to the journal.
                let rest: Vec<Entry> = groups
                    .into_iter()
                    .flat_map(|(c, docs)| docs.into_iter().map(move |d| (c, d)))
                    .collect();
                self.spill(rest).await;
                return;
            }
            match self.store.insert_many_bytes(collection, docs).await {
                Ok(_) => {
                    self.metrics.written.fetch_add(n, Ordering::Relaxed);
                    self.metrics.settle(n);
                    if attempt > 0 {
                        tracing::info!(target: "audit", queue = %self.queue, %collection, attempt, "audit store recovered");
                    }
                    groups.remove(0);
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
                            .flat_map(|(c, docs)| docs.into_iter().map(move |d| (c, d)))
                            .collect();
                        self.spilling = true;
                        self.schedule_replay(false);
                        self.spill(rest).await;
                        return;
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        let lost: u64 = groups.iter().map(|(_, d)| d.len() as u64).sum();
                        self.metrics.failed.fetch_add(lost, Ordering::Relaxed);
                        self.metrics.settle(lost);
                        tracing::error!(target: "audit", queue = %self.queue, records = lost, error = %e,
                            "audit store failed during shutdown and no spill journal is configured; records lost");
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

    async fn spill(&mut self, entries: Vec<Entry>) {
        let Some(journal) = &self.journal else { return };
        let n = entries.len() as u64;
        if n == 0 {
            return;
        }
        let path = journal.path().to_owned();
        let appended = tokio::task::spawn_blocking(move || {
            Journal::new(path).append(entries.iter().map(|(c, d)| (*c, d)))
        })
        .await;
        self.metrics.settle(n);
        match appended {
            Ok(Ok(_)) => {
                self.metrics.spilled.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                self.metrics.failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(target: "audit", queue = %self.queue, records = n, error = %e, "spill journal write failed; records lost");
            }
            Err(e) => {
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

    /// Replays the journal into the store, in order; removes it once everything is stored.
    async fn try_replay(&mut self) {
        let Some(journal) = &self.journal else { return };
        let path = journal.path().to_owned();
        let read = tokio::task::spawn_blocking(move || Journal::new(path).read()).await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::error!(target: "audit", queue = %self.queue, error = %e, "cannot read the spill journal");
                self.schedule_replay(true);
                return;
            }
            Err(_) => return,
        };
        let n = entries.len() as u64;
        for chunk in group(entries) {
            if let Err(e) = self.store.insert_many_bytes(chunk.0, chunk.1).await {
                tracing::debug!(target: "audit", queue = %self.queue, error = %e, "store still unavailable; journal kept");
                self.metrics.retried.fetch_add(1, Ordering::Relaxed);
                self.schedule_replay(true);
                return;
            }
        }
        if let Some(journal) = &self.journal {
            if let Err(e) = journal.remove() {
                tracing::error!(target: "audit", queue = %self.queue, error = %e, "cannot remove the replayed journal");
            }
        }
        self.metrics.written.fetch_add(n, Ordering::Relaxed);
        self.metrics.replayed.fetch_add(n, Ordering::Relaxed);
        self.spilling = false;
        if n > 0 {
            tracing::info!(target: "audit", queue = %self.queue, records = n, "spill journal replayed into the store");
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
