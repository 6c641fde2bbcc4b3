//! The forwarder's cursor file: per destination, per stream, the last seal delivered. Written
//! whole after every delivered batch (a temporary file renamed over it, 0600), so a crash leaves
//! the previous cursor or the new one, never half of one.

use bson::oid::ObjectId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

type Positions = BTreeMap<String, BTreeMap<String, i64>>;

/// Shared by the forwarder's tasks; each writes its own destination's entries.
#[derive(Clone)]
pub(super) struct Cursor {
    path: PathBuf,
    positions: Arc<Mutex<Positions>>,
    /// One write at a time, in order, so that an older snapshot never replaces a newer one.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl Cursor {
    /// Reads the file at `path` (none yet is an empty cursor; one that is not a cursor is an
    /// error, so a mistyped path cannot make the forwarder resend everything silently).
    pub(super) fn open(path: PathBuf) -> Result<Cursor, String> {
        let positions = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Positions>(&text).map_err(|e| {
                format!(
                    "the forwarder's cursor file {} is not one: {e}",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Positions::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Cursor {
            path,
            positions: Arc::new(Mutex::new(positions)),
            writing: Arc::default(),
        })
    }

    /// The streams `sink` has a position in, oldest first (ObjectIds sort by time).
    pub(super) fn streams(&self, sink: &str) -> Vec<(ObjectId, i64)> {
        let p = self.positions.lock().expect("cursor lock");
        p.get(sink)
            .map(|m| {
                m.iter()
                    .filter_map(|(s, seq)| Some((ObjectId::parse_str(s).ok()?, *seq)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last seal of `stream` delivered to `sink`.
    pub(super) fn position(&self, sink: &str, stream: ObjectId) -> Option<i64> {
        let p = self.positions.lock().expect("cursor lock");
        p.get(sink)?.get(&stream.to_hex()).copied()
    }

    /// `sink` has delivered `stream` up to the seal `seq` (or, after a failure, only up to it).
    pub(super) async fn advance(&self, sink: &str, stream: ObjectId, seq: i64) {
        let _turn = self.writing.lock().await;
        let snapshot = {
            let mut p = self.positions.lock().expect("cursor lock");
            p.entry(sink.to_owned())
                .or_default()
                .insert(stream.to_hex(), seq);
            p.clone()
        };
        self.write(snapshot).await;
    }

    /// `sink` is done with `stream` (an earlier run's, delivered to its end).
    pub(super) async fn finish(&self, sink: &str, stream: ObjectId) {
        let _turn = self.writing.lock().await;
        let snapshot = {
            let mut p = self.positions.lock().expect("cursor lock");
            if let Some(m) = p.get_mut(sink) {
                m.remove(&stream.to_hex());
            }
            p.clone()
        };
        self.write(snapshot).await;
    }

    /// Writes `p` over the file (on the blocking pool: it waits for the disk).
    async fn write(&self, p: Positions) {
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let _ = std::fs::remove_file(&tmp);
            let mut f = crate::journal::open_private(&tmp, true)?;
            f.write_all(serde_json::to_string(&p).unwrap_or_default().as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = result {
            // Delivery goes on; after a restart the destination gets again what the cursor
            // does not say it has (at least once).
            tracing::error!(target: "audit", path = %self.path.display(), error = %e,
                "cannot write the forwarder's cursor");
        }
    }
}
