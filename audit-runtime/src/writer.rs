//! The writer: one ordered consumer task that batches audit records into the store (F7, F8,
//! D14–D16, D65), modelled on `tracing-appender`'s non-blocking writer, with one decision made the
//! other way round: when the queue is full the default is to **wait** (back-pressure), because
//! these are audit records; dropping is an explicit [`FullPolicy::Drop`] and every drop is counted.
//!
//! Sync mode uses the same queue and waits for the record's acknowledgement before the response is
//! returned; async mode only enqueues. Store errors are retried with back-off, logged and counted,
//! and never reach the host's request. Every document carries its client-side `_id`, and the
//! stores skip an `_id` they already hold, so a retry never duplicates a record.

use crate::config::{AuditConfig, FullPolicy};
use crate::document::{Access, Collection, ModelAction};
use crate::store::Store;
use bson::RawDocumentBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most records written in one store call.
pub const MAX_BATCH: usize = 512;

/// A record to store.
#[derive(Debug, Clone)]
pub enum Record {
    /// An access.
    Access(Box<Access>),
    /// A model action.
    ModelAction(Box<ModelAction>),
}

impl Record {
    fn collection(&self) -> Collection {
        match self {
            Record::Access(_) => Collection::Access,
            Record::ModelAction(_) => Collection::ModelAction,
        }
    }

    /// Straight to BSON bytes: no intermediate `Document`.
    fn encode(&self) -> Result<RawDocumentBuf, crate::store::StoreError> {
        match self {
            Record::Access(a) => crate::store::encode(a.as_ref()),
            Record::ModelAction(m) => crate::store::encode(m.as_ref()),
        }
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
    let task = tokio::spawn(consume(
        store,
        rx,
        metrics.clone(),
        stopping.clone(),
        config.queue_name.clone(),
    ));
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
        match self.tx.try_send(Job::Write(record, None)) {
            Ok(()) => self.after_send(true),
            Err(mpsc::error::TrySendError::Full(job)) if self.policy == FullPolicy::Block => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
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

    fn after_send(&self, sent: bool) {
        if sent {
            self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
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
        let flushed = tokio::time::timeout(self.timeout, self.writer.flush())
            .await
            .is_ok();
        // From here a failing store is no longer retried forever: the consumer gives up on what it
        // holds and counts it.
        self.stopping.store(true, Ordering::SeqCst);
        if !flushed {
            let pending = self.writer.metrics().queue_depth;
            tracing::error!(target: "audit", pending, "audit writer did not flush within the deadline");
            let _ = tokio::time::timeout(Duration::from_millis(200), self.writer.flush()).await;
        }
        task.abort();
        let _ = task.await;
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

async fn consume(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    queue: String,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut batch: Vec<(Record, Option<oneshot::Sender<()>>)> = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Write(r, ack) => batch.push((r, ack)),
                Job::Flush(done) => {
                    // Everything before the flush marker is written first: order is kept.
                    write_batch(
                        &store,
                        std::mem::take(&mut batch),
                        &metrics,
                        &stopping,
                        &queue,
                    )
                    .await;
                    let _ = done.send(());
                }
            }
        }
        write_batch(&store, batch, &metrics, &stopping, &queue).await;
    }
}

async fn write_batch(
    store: &Store,
    batch: Vec<(Record, Option<oneshot::Sender<()>>)>,
    metrics: &Metrics,
    stopping: &AtomicBool,
    queue: &str,
) {
    if batch.is_empty() {
        return;
    }
    let mut acks = Vec::new();
    let mut groups: [(Collection, Vec<RawDocumentBuf>); 2] = [
        (Collection::Access, Vec::new()),
        (Collection::ModelAction, Vec::new()),
    ];
    for (record, ack) in batch {
        match record.encode() {
            Ok(doc) => {
                let slot = if record.collection() == Collection::Access {
                    0
                } else {
                    1
                };
                groups[slot].1.push(doc);
            }
            Err(e) => {
                metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "audit", queue, error = %e, "audit record cannot be encoded; lost");
            }
        }
        acks.extend(ack);
    }
    for (collection, docs) in groups {
        if docs.is_empty() {
            continue;
        }
        let n = docs.len() as u64;
        let mut backoff = Duration::from_millis(10);
        let mut attempt = 0u32;
        loop {
            match store.insert_many_bytes(collection, docs.clone()).await {
                Ok(_) => {
                    metrics.written.fetch_add(n, Ordering::Relaxed);
                    if attempt > 0 {
                        tracing::info!(target: "audit", queue, %collection, attempt, "audit store recovered");
                    }
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    if stopping.load(Ordering::SeqCst) {
                        metrics.failed.fetch_add(n, Ordering::Relaxed);
                        tracing::error!(target: "audit", queue, %collection, records = n, error = %e,
                            "audit store failed during shutdown; records lost");
                        break;
                    }
                    metrics.retried.fetch_add(1, Ordering::Relaxed);
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!(target: "audit", queue, %collection, records = n, attempt, error = %e,
                            "audit store write failed; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
    for ack in acks {
        let _ = ack.send(());
    }
}
