//! Checkpoints published where the database's administrators cannot rewrite them.
//!
//! A seal proves nothing against someone who can delete the newest seals with their records, or
//! a whole stream: what remains still chains. A checkpoint (the stream's tree size and root,
//! signed with the seal key as a C2SP note) kept outside the database is what catches that:
//! `audit verify --checkpoints FILE` then requires every stream to still hold each checkpoint.
//!
//! The writer offers every new tree head here without waiting (a watch channel keeps only the
//! newest); a task of its own publishes one every `seal_anchor_every` seals or
//! `checkpoint_interval_secs`, and the last one at shutdown, to the log (info level), to the
//! append-only `checkpoint_file`, and as a POST to `checkpoint_url`. A sink that fails is counted
//! and logged, and never slows the writer or a request.

use crate::config::AuditConfig;
use crate::seal::note::{self, Checkpoint};
use ed25519_dalek::SigningKey;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A tree head the writer offers for publication.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Offer {
    /// Seals the writer has made so far (publication by count).
    pub(crate) seals: u64,
    /// The head.
    pub(crate) checkpoint: Checkpoint,
}

/// What was published, and what failed.
#[derive(Debug, Default)]
pub(crate) struct WitnessMetrics {
    pub(crate) published: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// Where the writer offers its heads. Never blocks.
#[derive(Clone)]
pub(crate) struct Witness {
    tx: Arc<watch::Sender<Option<Offer>>>,
}

impl Witness {
    /// Offers the newest head; an older one not yet published is simply replaced.
    pub(crate) fn offer(&self, offer: Offer) {
        self.tx.send_replace(Some(offer));
    }
}

/// The sinks and the schedule.
struct Publisher {
    key: Option<SigningKey>,
    every: u64,
    interval: Option<Duration>,
    file: Option<PathBuf>,
    #[cfg(feature = "witness")]
    url: Option<(reqwest::Client, String)>,
    metrics: Arc<WitnessMetrics>,
}

/// Starts the publishing task for a writer signing with `key`; it ends, after publishing the last
/// head offered, once every [`Witness`] is dropped.
pub(crate) fn spawn(
    config: &AuditConfig,
    key: Option<SigningKey>,
    metrics: Arc<WitnessMetrics>,
) -> (Witness, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let publisher = Publisher {
        key,
        every: config.seal_anchor_every.max(1),
        interval: (config.checkpoint_interval_secs > 0)
            .then(|| Duration::from_secs(config.checkpoint_interval_secs)),
        file: config.checkpoint_file.clone(),
        #[cfg(feature = "witness")]
        url: config.checkpoint_url.clone().map(|u| {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client without custom TLS settings builds");
            (client, u)
        }),
        metrics,
    };
    let task = tokio::spawn(publisher.run(rx));
    (Witness { tx: Arc::new(tx) }, task)
}

impl Publisher {
    async fn run(self, mut rx: watch::Receiver<Option<Offer>>) {
        let mut published: Option<Offer> = None;
        // The first head goes out at once; after that, by count or by time.
        let mut last = None::<Instant>;
        loop {
            let offered = rx.borrow_and_update().clone();
            let fresh = offered.as_ref().filter(|o| Some(*o) != published.as_ref());
            let due = fresh.is_some_and(|o| {
                let by_count = o.seals >= published.as_ref().map_or(0, |p| p.seals) + self.every;
                let by_time = match (last, self.interval) {
                    (None, _) => true,
                    (Some(t), Some(i)) => t.elapsed() >= i,
                    (Some(_), None) => false,
                };
                by_count || by_time
            });
            if due {
                let o = fresh.expect("due only when fresh").clone();
                self.publish(&o.checkpoint).await;
                published = Some(o);
                last = Some(Instant::now());
                continue;
            }
            let wake = match (fresh, last, self.interval) {
                (Some(_), Some(t), Some(i)) => Some(t + i),
                _ => None,
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The writer is gone: its last head is published whatever the schedule.
                        let last_offer = rx.borrow().clone();
                        if let Some(o) = last_offer.filter(|o| Some(o) != published.as_ref()) {
                            self.publish(&o.checkpoint).await;
                        }
                        return;
                    }
                }
                _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
        }
    }

    async fn publish(&self, cp: &Checkpoint) {
        let Some(key) = &self.key else {
            // Unsigned seals: the head goes to the log only, as a plain checkpoint text.
            tracing::info!(target: "audit", origin = %cp.origin, size = cp.size,
                checkpoint = ?cp.text(), "audit seal chain head (unsigned)");
            return;
        };
        let signed = note::sign(&cp.text(), cp.key_name(), key);
        tracing::info!(target: "audit", origin = %cp.origin, size = cp.size, checkpoint = ?signed,
            "audit checkpoint");
        let mut ok = true;
        if let Some(path) = &self.file {
            let (path, text) = (path.clone(), format!("{signed}\n"));
            let written = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = crate::journal::open_private(&path, false)?;
                f.write_all(text.as_bytes())?;
                f.sync_data()
            })
            .await;
            if let Some(e) = match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            } {
                ok = false;
                tracing::error!(target: "audit", file = %self.file.as_ref().expect("set").display(),
                    error = %e, "cannot append the checkpoint to checkpoint_file");
            }
        }
        #[cfg(feature = "witness")]
        if let Some((client, url)) = &self.url {
            let sent = client
                .post(url)
                .header("content-type", "text/plain; charset=utf-8")
                .body(signed.clone())
                .send()
                .await
                .and_then(|r| r.error_for_status());
            if let Err(e) = sent {
                ok = false;
                tracing::error!(target: "audit", url = %url, error = %e,
                    "cannot POST the checkpoint to checkpoint_url");
            }
        }
        if ok {
            self.metrics.published.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
