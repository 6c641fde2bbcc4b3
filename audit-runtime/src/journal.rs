//! The spill journal: a durable, append-only local file where the writer puts records it cannot
//! store right now (the store is down, or shutdown's deadline passed), replayed in order into the
//! store once it answers again — or at the next start — and then removed.
//!
//! Format: a sequence of entries, each one byte for the collection followed by one BSON document
//! (which carries its own length). Every append is `fsync`ed before the records count as
//! acknowledged. A torn entry at the end (a crash mid-append) is detected by its length and
//! ignored: it was never acknowledged. Replays are idempotent because the stores skip an `_id` they
//! already hold, so a replay interrupted half-way is simply done again.

use crate::document::Collection;
use bson::RawDocumentBuf;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
}

fn tag(c: Collection) -> u8 {
    match c {
        Collection::Access => b'a',
        Collection::ModelAction => b'm',
        Collection::Process => b'p',
        Collection::Seal => b's',
    }
}

fn collection(tag: u8) -> Option<Collection> {
    match tag {
        b'a' => Some(Collection::Access),
        b'm' => Some(Collection::ModelAction),
        b'p' => Some(Collection::Process),
        b's' => Some(Collection::Seal),
        _ => None,
    }
}

impl Journal {
    /// The journal at `path` (nothing is created until the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file exists and holds at least one entry.
    pub fn has_entries(&self) -> bool {
        std::fs::metadata(&self.path)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    }

    /// Appends entries and syncs them to disk.
    pub fn append<'a>(
        &self,
        entries: impl IntoIterator<Item = (Collection, &'a RawDocumentBuf)>,
    ) -> std::io::Result<u64> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        let mut n = 0;
        for (c, doc) in entries {
            buf.push(tag(c));
            buf.extend_from_slice(doc.as_bytes());
            n += 1;
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        Ok(n)
    }

    /// Reads every complete entry, in order. A torn last entry is left out.
    pub fn read(&self) -> std::io::Result<Vec<(Collection, RawDocumentBuf)>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut r = BufReader::new(file);
        let mut out = Vec::new();
        loop {
            let mut head = [0u8; 5];
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let Some(c) = collection(head[0]) else { break };
            let len = i32::from_le_bytes([head[1], head[2], head[3], head[4]]);
            if !(5..=16 * 1024 * 1024 + 16).contains(&len) {
                break;
            }
            let mut bytes = vec![0u8; len as usize];
            bytes[..4].copy_from_slice(&head[1..]);
            if r.read_exact(&mut bytes[4..]).is_err() {
                break;
            }
            match RawDocumentBuf::from_bytes(bytes) {
                Ok(doc) => out.push((c, doc)),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Removes the file (after a complete replay).
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        assert!(!j.has_entries());
        assert!(j.read().unwrap().is_empty());
        let a = rawdoc! { "_id": 1, "x": "ñ" };
        let m = rawdoc! { "_id": 2 };
        assert_eq!(
            j.append([(Collection::Access, &a), (Collection::ModelAction, &m)])
                .unwrap(),
            2
        );
        assert_eq!(j.append([(Collection::Access, &a)]).unwrap(), 1);
        let got = j.read().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (Collection::ModelAction, m.clone()));
        // A crash in the middle of an append leaves a partial entry: it is not read.
        let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(&[b'a', 40, 0, 0, 0, 1, 2]).unwrap();
        assert_eq!(j.read().unwrap().len(), 3);
        j.remove().unwrap();
        assert!(!j.has_entries());
        j.remove().unwrap();
    }
}
