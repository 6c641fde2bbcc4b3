//! The forwarder: every record, once it is stored and sealed, sent to where the security team
//! searches (an OTLP collector, a syslog receiver, a JSON-lines file), as OCSF or ECS.
//!
//! It reads the trail, never the writer's queue: a task per destination follows the seals of
//! the writer's stream in order, reads the records each seal lists, and delivers them as one
//! batch. So a destination that is down or slow holds back only its own task (the store keeps
//! everything meanwhile; the task holds one batch), and never a request or the writer. After
//! each delivered batch the destination's place (stream and seal) goes to the cursor file, so a
//! restart resumes there: at least once, in order per stream. A batch that fails is tried again
//! with a growing delay; one a destination refuses for good (an OTLP 400) is logged, counted and
//! passed. Every event names where its record is sealed (stream, seal, leaf index), so a copy in
//! a SIEM can be checked against the trail with a receipt (`audit prove`).

mod cursor;
mod file;
#[cfg(feature = "forward")]
mod otlp;
#[cfg(feature = "forward")]
mod syslog;

use crate::config::{AuditConfig, ForwardConfig};
use crate::document::Collection;
use crate::siem::{self, Format, SealPlace};
use crate::store::{Filter, FindOptions, Order, Store};
use bson::oid::ObjectId;
use bson::{Bson, Document, RawDocumentBuf};
use cursor::Cursor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the forwarder delivered, and what went wrong.
#[derive(Debug, Default)]
pub(crate) struct ForwardMetrics {
    /// Events delivered (each destination counts its own).
    pub(crate) forwarded: AtomicU64,
    /// Deliveries that failed and were tried again.
    pub(crate) failures: AtomicU64,
    /// Events a destination refused for good (logged), or whose record was gone.
    pub(crate) dropped: AtomicU64,
    /// Records sealed but not delivered yet, by the destination furthest behind.
    pub(crate) lag: AtomicU64,
}

/// One record on its way: its collection and stored document, its event, where it is sealed.
/// (The file destination writes the event alone; the others also read the record.)
#[cfg_attr(not(feature = "forward"), allow(dead_code))]
pub(crate) struct Item {
    pub(crate) collection: Collection,
    pub(crate) doc: Document,
    pub(crate) event: serde_json::Value,
    pub(crate) place: SealPlace,
    pub(crate) process: Option<Document>,
}

/// Why a delivery failed.
#[derive(Debug)]
pub(crate) enum SinkError {
    /// Try the same batch again later.
    Retry(String),
    /// The destination refuses this batch for good.
    Refused(String),
}

/// A destination.
enum Sink {
    File(file::FileSink),
    #[cfg(feature = "forward")]
    Otlp(otlp::OtlpSink),
    #[cfg(feature = "forward")]
    Syslog(syslog::SyslogSink),
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::File(_) => "file",
            #[cfg(feature = "forward")]
            Sink::Otlp(_) => "otlp",
            #[cfg(feature = "forward")]
            Sink::Syslog(_) => "syslog",
        }
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        match self {
            Sink::File(s) => s.deliver(items).await,
            #[cfg(feature = "forward")]
            Sink::Otlp(s) => s.deliver(items).await,
            #[cfg(feature = "forward")]
            Sink::Syslog(s) => s.deliver(items).await,
        }
    }

    /// After a failure, how many seals back to start again: a stream socket may have taken
    /// batches the receiver never read.
    fn rewind_after_failure(&mut self) -> Option<Duration> {
        match self {
            #[cfg(feature = "forward")]
            Sink::Syslog(_) => Some(syslog::REWIND),
            _ => None,
        }
    }
}

/// The running forwarder: its tasks, and how to stop them.
pub(crate) struct Forwarder {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
}

impl Forwarder {
    /// Starts a task per destination of `config.forward`, following the writer's `stream` (and
    /// what earlier runs left undelivered, from the cursor file).
    pub(crate) fn start(
        store: Store,
        config: &AuditConfig,
        stream: ObjectId,
        metrics: Arc<ForwardMetrics>,
    ) -> Result<Forwarder, String> {
        let f = &config.forward;
        let cursor = Cursor::open(config.forward_cursor_file())?;
        let stopping = Arc::new(AtomicBool::new(false));
        let mut sinks = Vec::new();
        if let Some(path) = &f.file {
            sinks.push(Sink::File(file::FileSink::new(
                path.clone(),
                f.file_max_bytes,
                f.file_keep,
            )));
        }
        #[cfg(feature = "forward")]
        {
            if let Some(endpoint) = &f.otlp_endpoint {
                sinks.push(Sink::Otlp(otlp::OtlpSink::new(endpoint)?));
            }
            if let Some(address) = &f.syslog {
                sinks.push(Sink::Syslog(syslog::SyslogSink::new(address)?));
            }
        }
        let tasks = sinks
            .into_iter()
            .map(|sink| {
                let task = Task {
                    store: store.clone(),
                    format: f.format,
                    sink,
                    cursor: cursor.clone(),
                    own: stream,
                    metrics: metrics.clone(),
                    stopping: stopping.clone(),
                    processes: HashMap::new(),
                };
                tokio::spawn(task.run())
            })
            .collect();
        Ok(Forwarder { tasks, stopping })
    }

    /// Lets the tasks deliver what is stored (up to `deadline`), then stops them.
    pub(crate) async fn stop(self, deadline: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(deadline, task).await.is_err() {
                abort.abort();
                tracing::warn!(target: "audit", "the audit forwarder did not catch up before shutdown; it resumes from its cursor at the next start");
            }
        }
    }
}

/// What is enough to know of a seal to forward its records.
struct SealRef {
    seq: i64,
    /// The leaf index of its first record.
    first: u64,
    size: u64,
    /// Its records, in order: collection and `_id`.
    records: Vec<(Collection, Bson)>,
}

fn seal_ref(raw: &RawDocumentBuf) -> Option<SealRef> {
    let doc = raw.to_document().ok()?;
    let seq = doc.get_i64("seq").ok()?;
    let mut records = Vec::new();
    for e in doc.get_array("records").into_iter().flatten() {
        let Bson::Document(e) = e else { continue };
        let c = Collection::ALL
            .into_iter()
            .find(|c| Some(c.name()) == e.get_str("c").ok())?;
        records.push((c, e.get("id")?.clone()));
    }
    let size = u64::try_from(doc.get_i64("size").unwrap_or(0)).unwrap_or(0);
    Some(SealRef {
        seq,
        first: size.saturating_sub(records.len() as u64),
        size,
        records,
    })
}

/// How long a stream of an earlier run may keep a seal missing before it is passed (a seal
/// never stored: its records were never stored either).
const GAP_PATIENCE: Duration = Duration::from_secs(300);
/// How often an idle task looks for a new seal.
const POLL: Duration = Duration::from_millis(100);
/// The longest wait between two attempts of a failing delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Task {
    store: Store,
    format: Format,
    sink: Sink,
    cursor: Cursor,
    own: ObjectId,
    metrics: Arc<ForwardMetrics>,
    stopping: Arc<AtomicBool>,
    processes: HashMap<ObjectId, Option<Document>>,
}

impl Task {
    async fn run(mut self) {
        let name = self.sink.name();
        // Streams of earlier runs not delivered to their end go first, then the writer's own.
        let mut streams: Vec<(ObjectId, i64)> = self
            .cursor
            .streams(name)
            .into_iter()
            .filter(|(s, _)| *s != self.own)
            .collect();
        streams.push((self.own, self.cursor.position(name, self.own).unwrap_or(-1)));
        let mut recent: Vec<(tokio::time::Instant, i64)> = Vec::new();
        let mut missing_since: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(100);
        while let Some(&(stream, last)) = streams.first() {
            let next = match self.seal(stream, last + 1).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(target: "audit", sink = name, error = %e, "audit forwarder cannot read the trail; trying again");
                    tokio::time::sleep(POLL * 10).await;
                    continue;
                }
            };
            let Some(seal) = next else {
                if stream != self.own {
                    // An earlier run's stream: done at its end; a gap is waited for a while
                    // (its seal may still come from that run's journal), then passed.
                    match self.newest_seq(stream).await {
                        Ok(Some(newest)) if newest > last + 1 => {
                            let since =
                                *missing_since.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() > GAP_PATIENCE {
                                tracing::error!(target: "audit", sink = name, %stream, seq = last + 1,
                                    "a seal of the stream is missing; forwarding goes on after it");
                                streams[0].1 = last + 1;
                                missing_since = None;
                                continue;
                            }
                        }
                        Ok(_) => {
                            streams.remove(0);
                            self.cursor.finish(name, stream).await;
                            continue;
                        }
                        Err(_) => {}
                    }
                }
                if self.stopping.load(Ordering::SeqCst) && stream == self.own {
                    return;
                }
                self.note_lag(stream, last).await;
                tokio::time::sleep(POLL).await;
                continue;
            };
            missing_since = None;
            let items = self.items(stream, &seal).await;
            let items = match items {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(target: "audit", sink = name, error = %e, "audit forwarder cannot read the records of a seal; trying again");
                    tokio::time::sleep(POLL * 10).await;
                    continue;
                }
            };
            let delivered = if items.is_empty() {
                Ok(())
            } else {
                self.sink.deliver(&items).await
            };
            match delivered {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.metrics
                        .forwarded
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    streams[0].1 = seal.seq;
                    self.cursor.advance(name, stream, seal.seq).await;
                    recent.push((tokio::time::Instant::now(), seal.seq));
                    recent.retain(|(t, _)| t.elapsed() < Duration::from_secs(60));
                }
                Err(SinkError::Refused(why)) => {
                    self.metrics
                        .dropped
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    tracing::error!(target: "audit", sink = name, %stream, seq = seal.seq, records = items.len(), error = %why,
                        "the forwarding destination refused a batch for good; it is passed");
                    streams[0].1 = seal.seq;
                    self.cursor.advance(name, stream, seal.seq).await;
                }
                Err(SinkError::Retry(why)) => {
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "audit", sink = name, %stream, seq = seal.seq, error = %why, delay_ms = backoff.as_millis() as u64,
                        "audit forwarding failed; the batch is tried again");
                    if let Some(window) = self.sink.rewind_after_failure() {
                        // What a stream socket took shortly before it failed may never have been
                        // read: send it again (the documented duplicate window).
                        if let Some(&(_, seq)) = recent.iter().find(|(t, _)| t.elapsed() < window) {
                            if seq - 1 < streams[0].1 {
                                streams[0].1 = seq - 1;
                                self.cursor.advance(name, stream, seq - 1).await;
                            }
                        }
                        recent.clear();
                    }
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The seal `seq` of `stream`, if stored.
    async fn seal(
        &self,
        stream: ObjectId,
        seq: i64,
    ) -> Result<Option<SealRef>, crate::store::StoreError> {
        let found = self
            .store
            .find_bytes(
                Collection::Seal,
                &FindOptions::new(Filter::And(vec![
                    Filter::eq("stream", stream),
                    Filter::eq("seq", seq),
                ]))
                .window(0, Some(1)),
            )
            .await?;
        Ok(found.first().and_then(seal_ref))
    }

    async fn newest(&self, stream: ObjectId) -> Result<Option<SealRef>, crate::store::StoreError> {
        let found = self
            .store
            .find_bytes(
                Collection::Seal,
                &FindOptions::new(Filter::eq("stream", stream))
                    .sort("seq", Order::Desc)
                    .window(0, Some(1)),
            )
            .await?;
        Ok(found.first().and_then(seal_ref))
    }

    async fn newest_seq(&self, stream: ObjectId) -> Result<Option<i64>, crate::store::StoreError> {
        Ok(self.newest(stream).await?.map(|s| s.seq))
    }

    /// Records sealed in `stream` after the seal `last`, as lag.
    async fn note_lag(&self, stream: ObjectId, last: i64) {
        let (Ok(Some(head)), Ok(at)) = (self.newest(stream).await, self.seal(stream, last).await)
        else {
            return;
        };
        let done = at.map_or(0, |s| s.size);
        self.metrics
            .lag
            .store(head.size.saturating_sub(done), Ordering::Relaxed);
    }

    /// The events of the records `seal` lists, in its order. A process is not an event of its
    /// own (it is the `device`/`host` of the others); a record no longer stored is counted.
    async fn items(
        &mut self,
        stream: ObjectId,
        seal: &SealRef,
    ) -> Result<Vec<Item>, crate::store::StoreError> {
        let mut by_id: HashMap<(Collection, String), Document> = HashMap::new();
        for c in [Collection::Access, Collection::ModelAction] {
            let ids: Vec<Bson> = seal
                .records
                .iter()
                .filter(|(rc, _)| *rc == c)
                .map(|(_, id)| id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            for raw in self
                .store
                .find_bytes(c, &FindOptions::new(Filter::In("_id".into(), ids)))
                .await?
            {
                if let (Ok(doc), Ok(id)) = (raw.to_document(), raw.get_object_id("_id")) {
                    by_id.insert((c, id.to_hex()), doc);
                }
            }
        }
        let mut items = Vec::new();
        for (i, (c, id)) in seal.records.iter().enumerate() {
            if *c == Collection::Process {
                continue;
            }
            let key = match id {
                Bson::ObjectId(o) => o.to_hex(),
                _ => continue,
            };
            let Some(doc) = by_id.remove(&(*c, key)) else {
                // Pruned (retention, drop) since it was sealed: nothing to send.
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let process = match doc.get_object_id("process") {
                Ok(p) => self.process(p).await,
                Err(_) => None,
            };
            let place = SealPlace {
                stream,
                seq: seal.seq,
                leaf: seal.first + i as u64,
            };
            let ctx = siem::Context {
                process: process.as_ref(),
                sealed: Some(place),
            };
            let Some(event) = siem::event(self.format, *c, &doc, &ctx) else {
                continue;
            };
            items.push(Item {
                collection: *c,
                doc,
                event,
                place,
                process,
            });
        }
        Ok(items)
    }

    async fn process(&mut self, id: ObjectId) -> Option<Document> {
        if let Some(p) = self.processes.get(&id) {
            return p.clone();
        }
        let found = self
            .store
            .find_bytes(
                Collection::Process,
                &FindOptions::new(Filter::eq("_id", id)).window(0, Some(1)),
            )
            .await
            .ok()?;
        let doc = found.first().and_then(|r| r.to_document().ok());
        self.processes.insert(id, doc.clone());
        doc
    }
}

/// Checks the destinations of `f` at start (an address that does not parse is a startup error).
pub(crate) fn check(f: &ForwardConfig) -> Result<(), String> {
    if let Some(a) = &f.syslog {
        crate::config::syslog_address(a)?;
    }
    Ok(())
}
