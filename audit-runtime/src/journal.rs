//! The spill journal: a durable, append-only local file where the writer puts records it cannot
//! store right now (the store is down, or shutdown's deadline passed), replayed in order into the
//! store once it answers again — or at the next start — and then removed. The quarantine file,
//! where records the store refuses for good and unreadable journal regions are kept for a person
//! to look at, has the same format.
//!
//! Format: a sequence of entries, each
//!
//! ```text
//! magic (4 bytes "\xA7AJ1") | tag (1 byte) | length (u32 LE) | CRC-32 of tag+length+payload (u32 LE) | payload
//! ```
//!
//! where the tag names the collection (`a`, `m`, `p`; the payload is one BSON document) or marks
//! raw bytes kept from a damaged region (`x`, quarantine files only). Every append is `fsync`ed
//! before the records count as acknowledged.
//!
//! Guarantees:
//! - A damaged region (a flipped byte, a torn append, a file that is not a journal at all) is
//!   detected by its checksum; the reader resynchronises on the next entry whose magic, length
//!   and checksum are valid, and hands the damaged bytes back as [`Item::Corrupt`] so the writer
//!   copies them to the quarantine file and counts them: they are never silently discarded, and
//!   the entries after them are still read (a torn append followed by later appends loses none of
//!   the later, acknowledged entries).
//! - [`JournalReader`] reads entry by entry from an offset, so a replay holds one batch in memory,
//!   never the whole file.
//! - The writer removes the journal only once every entry in it has been stored or quarantined.
//! - Replays are idempotent because the stores skip an `_id` they already hold, so a replay
//!   interrupted half-way is simply done again.
//! - The files are created with mode 0600 whatever the umask, and never opened through a symlink.

use crate::document::Collection;
use bson::RawDocumentBuf;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Marks the start of every entry.
pub(crate) const MAGIC: [u8; 4] = [0xA7, b'A', b'J', b'1'];
/// Bytes before an entry's payload: magic, tag, length, checksum.
pub(crate) const HEADER_LEN: usize = 13;
/// The longest payload an entry may have; a longer length field is damage.
pub(crate) const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
/// The tag of raw bytes kept from a damaged region.
pub(crate) const RAW_TAG: u8 = b'x';
/// Damaged regions are handed back in pieces of at most this many bytes.
const MAX_CORRUPT_PIECE: u64 = 1024 * 1024;
/// How much is read at a time while looking for the next entry.
const SCAN_CHUNK: usize = 64 * 1024;

/// The journal file. Clones share one append lock.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// What the reader found at an offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A record.
    Entry(Collection, RawDocumentBuf),
    /// Raw bytes once quarantined from a damaged journal (only in quarantine files).
    Raw(Vec<u8>),
    /// Bytes that are not a valid entry (a damaged or torn region), at `offset`.
    Corrupt {
        /// Where they start in the file.
        offset: u64,
        /// The bytes (at most 1 MiB; a longer region comes in several pieces).
        bytes: Vec<u8>,
    },
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

fn checksum(tag: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[tag]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn frame(buf: &mut Vec<u8>, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "journal entry of {} bytes is over the {MAX_PAYLOAD}-byte limit",
                    payload.len()
                ),
            )
        })?;
    buf.extend_from_slice(&MAGIC);
    buf.push(tag);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(tag, payload).to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// Opens `path` for appending (creating it with mode 0600 whatever the umask), refusing to follow
/// a symlink: an audit file must never be redirected to somewhere else by whoever can write the
/// directory. A file that exists with looser permissions is tightened to 0600.
pub(crate) fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let file = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{} is a symlink; refusing to write through it",
                    path.display()
                ),
            )
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

impl Journal {
    /// The journal at `path` (nothing is created until the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal {
            path: path.into(),
            lock: Arc::default(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file exists and is not empty (a symlink is never read, so never counts).
    pub fn has_entries(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .map(|m| m.is_file() && m.len() > 0)
            .unwrap_or(false)
    }

    /// The file's length now (0 when there is none).
    pub fn len(&self) -> u64 {
        std::fs::symlink_metadata(&self.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// True when there is no file or it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends records and syncs them to disk; returns how many.
    pub fn append<'a>(
        &self,
        entries: impl IntoIterator<Item = (Collection, &'a RawDocumentBuf)>,
    ) -> std::io::Result<u64> {
        let mut buf = Vec::new();
        let mut n = 0;
        for (c, doc) in entries {
            frame(&mut buf, tag(c), doc.as_bytes())?;
            n += 1;
        }
        self.write_synced(&buf)?;
        Ok(n)
    }

    /// Appends raw bytes from a damaged region (tagged as such) and syncs them.
    pub fn append_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(bytes.len() + HEADER_LEN);
        frame(&mut buf, RAW_TAG, bytes)?;
        self.write_synced(&buf)
    }

    fn write_synced(&self, buf: &[u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = open_private(&self.path, false)?;
        file.write_all(buf)?;
        file.sync_data()
    }

    /// A reader from `offset` (0: the start); `None` when there is no file.
    pub fn reader_at(&self, offset: u64) -> std::io::Result<Option<JournalReader>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Measured under the append lock, so the reader never sees an append half-written by
        // another thread as a torn entry.
        let len = {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            file.metadata()?.len()
        };
        Ok(Some(JournalReader {
            file,
            offset,
            len,
            resync_at: None,
        }))
    }

    /// Reads every item, in order (for tests and tools; the writer streams with [`reader_at`]).
    ///
    /// [`reader_at`]: Journal::reader_at
    pub fn read_all(&self) -> std::io::Result<Vec<Item>> {
        let mut out = Vec::new();
        if let Some(mut r) = self.reader_at(0)? {
            while let Some(item) = r.next_item()? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Removes the file, under the append lock, when it is no longer than `len` (nothing was
    /// appended after what the caller has handled). Returns whether it was removed.
    pub fn remove_if_len(&self, len: u64) -> std::io::Result<bool> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.len() > len {
            return Ok(false);
        }
        self.remove()?;
        Ok(true)
    }

    /// Removes the file.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reads a journal item by item from an offset, resynchronising after damage.
#[derive(Debug)]
pub struct JournalReader {
    file: File,
    offset: u64,
    /// The file's length when the reader was opened: what is appended later is read by the
    /// next reader.
    len: u64,
    /// Where the next valid entry starts, once a damaged region has been measured.
    resync_at: Option<u64>,
}

impl JournalReader {
    /// The offset just after the last item returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's length when this reader was opened (where it stops).
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The next item, or `None` at the end.
    pub fn next_item(&mut self) -> std::io::Result<Option<Item>> {
        if self.offset >= self.len {
            return Ok(None);
        }
        if self.resync_at.is_none() {
            if let Some((item, next)) = self.entry_at(self.offset)? {
                self.offset = next;
                return Ok(Some(item));
            }
            self.resync_at = Some(self.next_valid(self.offset + 1)?);
        }
        let end = self.resync_at.unwrap_or(self.len);
        let piece_end = end.min(self.offset + MAX_CORRUPT_PIECE);
        let mut bytes = vec![0u8; (piece_end - self.offset) as usize];
        self.file.read_exact_at(&mut bytes, self.offset)?;
        let offset = self.offset;
        self.offset = piece_end;
        if piece_end == end {
            self.resync_at = None;
        }
        Ok(Some(Item::Corrupt { offset, bytes }))
    }

    /// The entry starting at `pos` and the offset after it, if there is a valid one there.
    fn entry_at(&self, pos: u64) -> std::io::Result<Option<(Item, u64)>> {
        if pos + HEADER_LEN as u64 > self.len {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, pos)?;
        if head[..4] != MAGIC {
            return Ok(None);
        }
        let t = head[4];
        if collection(t).is_none() && t != RAW_TAG {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        let sum = u32::from_le_bytes([head[9], head[10], head[11], head[12]]);
        let end = pos + HEADER_LEN as u64 + u64::from(len);
        if len > MAX_PAYLOAD || end > self.len {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut payload, pos + HEADER_LEN as u64)?;
        if checksum(t, &payload) != sum {
            return Ok(None);
        }
        let item = match collection(t) {
            Some(c) => match RawDocumentBuf::from_bytes(payload) {
                Ok(doc) => Item::Entry(c, doc),
                Err(_) => return Ok(None),
            },
            None => Item::Raw(payload),
        };
        Ok(Some((item, end)))
    }

    /// The offset of the first valid entry at or after `from` (the file's length if none).
    fn next_valid(&self, from: u64) -> std::io::Result<u64> {
        let mut pos = from;
        let mut chunk = vec![0u8; SCAN_CHUNK];
        while pos + HEADER_LEN as u64 <= self.len {
            let n = ((self.len - pos) as usize).min(SCAN_CHUNK);
            self.file.read_exact_at(&mut chunk[..n], pos)?;
            let window = &chunk[..n];
            let mut i = 0;
            while i + MAGIC.len() <= n {
                if window[i..i + MAGIC.len()] == MAGIC && self.entry_at(pos + i as u64)?.is_some() {
                    return Ok(pos + i as u64);
                }
                i += 1;
            }
            // The last bytes of the chunk may begin a magic that continues in the next one.
            pos += (n - (MAGIC.len() - 1)).max(1) as u64;
        }
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn docs() -> Vec<RawDocumentBuf> {
        (0..3).map(|i| rawdoc! { "_id": i, "x": "ñ" }).collect()
    }

    fn entries(items: &[Item]) -> Vec<RawDocumentBuf> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Entry(_, d) => Some(d.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        assert!(!j.has_entries());
        assert!(j.read_all().unwrap().is_empty());
        let d = docs();
        assert_eq!(
            j.append([
                (Collection::Access, &d[0]),
                (Collection::ModelAction, &d[1])
            ])
            .unwrap(),
            2
        );
        assert_eq!(j.append([(Collection::Access, &d[2])]).unwrap(), 1);
        let got = j.read_all().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], Item::Entry(Collection::ModelAction, d[1].clone()));
        j.remove().unwrap();
        assert!(!j.has_entries());
        j.remove().unwrap();
    }

    #[test]
    fn one_corrupt_byte_in_the_middle_entry_loses_only_that_entry() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        let d = docs();
        j.append(d.iter().map(|d| (Collection::Access, d))).unwrap();
        let mut bytes = std::fs::read(j.path()).unwrap();
        let entry = HEADER_LEN + d[0].as_bytes().len();
        bytes[entry + HEADER_LEN + 6] ^= 0x40;
        std::fs::write(j.path(), &bytes).unwrap();
        let got = j.read_all().unwrap();
        assert_eq!(entries(&got), vec![d[0].clone(), d[2].clone()]);
        match &got[1] {
            Item::Corrupt { offset, bytes } => {
                assert_eq!(*offset, entry as u64);
                assert_eq!(bytes.len(), entry, "exactly the damaged entry");
            }
            other => panic!("expected the damaged region, got {other:?}"),
        }
    }

    #[test]
    fn a_torn_append_followed_by_more_appends_loses_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        let d = docs();
        j.append([(Collection::Access, &d[0])]).unwrap();
        // A crash in the middle of an append leaves a partial entry ...
        let mut whole = Vec::new();
        frame(&mut whole, b'a', d[1].as_bytes()).unwrap();
        let mut f = open_private(j.path(), false).unwrap();
        f.write_all(&whole[..whole.len() - 5]).unwrap();
        // ... and the next run appends after it.
        j.append([(Collection::Access, &d[2])]).unwrap();
        j.append([(Collection::Access, &d[1])]).unwrap();
        let got = j.read_all().unwrap();
        assert_eq!(
            entries(&got),
            vec![d[0].clone(), d[2].clone(), d[1].clone()]
        );
        assert!(matches!(got[1], Item::Corrupt { .. }), "{got:?}");
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_one_corrupt_region() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        std::fs::write(j.path(), b"not a journal at all").unwrap();
        let got = j.read_all().unwrap();
        assert_eq!(
            got,
            vec![Item::Corrupt {
                offset: 0,
                bytes: b"not a journal at all".to_vec()
            }]
        );
    }

    #[test]
    fn the_reader_streams_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        let big = rawdoc! { "_id": 0, "pad": "p".repeat(100_000) };
        for _ in 0..50 {
            j.append([(Collection::Access, &big)]).unwrap();
        }
        let mut r = j.reader_at(0).unwrap().unwrap();
        let first = r.next_item().unwrap().unwrap();
        assert!(matches!(first, Item::Entry(..)));
        let one = r.offset();
        assert_eq!(one, (HEADER_LEN + big.as_bytes().len()) as u64);
        // A later reader picks up where this one stopped.
        let mut rest = j.reader_at(one * 49).unwrap().unwrap();
        assert!(matches!(rest.next_item().unwrap(), Some(Item::Entry(..))));
        assert_eq!(rest.next_item().unwrap(), None);
    }

    #[test]
    fn files_are_private_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("spill"));
        j.append([(Collection::Access, &docs()[0])]).unwrap();
        let mode = std::fs::metadata(j.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Journal::new(&link)
            .append([(Collection::Access, &docs()[0])])
            .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
}
