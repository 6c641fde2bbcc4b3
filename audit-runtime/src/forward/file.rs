//! The JSON-lines destination: one event per line, appended and synced per batch, the file
//! rotated (`.1`, `.2`, ...) once it passes its size, for Filebeat, Fluent Bit or Vector to
//! pick up.

use super::{Item, SinkError};
use std::io::Write;
use std::path::PathBuf;

pub(super) struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    pub(super) fn new(path: PathBuf, max_bytes: u64, keep: u32) -> FileSink {
        FileSink {
            path,
            max_bytes,
            keep,
        }
    }

    pub(super) async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        for item in items {
            serde_json::to_writer(&mut lines, &item.event)
                .map_err(|e| SinkError::Refused(e.to_string()))?;
            lines.push(b'\n');
        }
        let (path, max, keep) = (self.path.clone(), self.max_bytes, self.keep);
        tokio::task::spawn_blocking(move || append(&path, &lines, max, keep))
            .await
            .map_err(|e| SinkError::Retry(e.to_string()))?
            .map_err(|e| SinkError::Retry(format!("{}: {e}", self.path.display())))
    }
}

fn rotated(path: &std::path::Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Appends `lines` (rotating first when the file has reached `max` bytes) and syncs them.
fn append(path: &std::path::Path, lines: &[u8], max: u64, keep: u32) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= max) {
        let _ = std::fs::remove_file(rotated(path, keep));
        for n in (1..keep).rev() {
            let from = rotated(path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(path, n + 1))?;
            }
        }
        std::fs::rename(path, rotated(path, 1))?;
    }
    let mut f = crate::journal::open_private(path, false)?;
    f.write_all(lines)?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_rotates_and_keeps_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        for i in 0..10 {
            append(
                &path,
                format!("{{\"n\":{i}}}\n").repeat(150).as_bytes(),
                1000,
                3,
            )
            .unwrap();
        }
        let names: Vec<String> = (1..=4)
            .filter(|n| rotated(&path, *n).exists())
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["1", "2", "3"], "three kept");
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.starts_with("{\"n\":9}"));
    }
}
