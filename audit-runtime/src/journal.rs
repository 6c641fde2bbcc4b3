//! The spill journal: a durable, append-only local file where the writer puts records it cannot
//! store right now (the store is down, or shutdown's deadline passed), replayed in order into the
//! store once it answers again — or at the next start — and then removed. The quarantine file,
//! where records the store refuses for good and unreadable journal regions are kept for a person
//! to look at, has the same format.
//!
//! Format: a sequence of entries, each
//!
//! ```text
//! magic "\xA7AJ2" | tag (1 byte) | length (u32 LE) | CRC-32 of tag+length+payload (u32 LE)
//!                 | HMAC-SHA256 of tag+length+payload (32 bytes) | payload
//! ```
//!
//! where the tag names the collection (`a`, `m`, `p`, and `s`, `k` for seals and salts; the
//! payload is one BSON document) or marks raw bytes kept from a damaged region (`x`, quarantine
//! files only). Every append is `fsync`ed before the records count as acknowledged. The
//! checksum finds damage; the MAC finds forgery.
//!
//! Authentication: the writer's journal is keyed ([`JournalKey`]). Its entries carry a MAC, and
//! on replay an entry whose MAC is wrong, or an entry in the unkeyed format (magic `\xA7AJ1`, no
//! MAC: what earlier versions wrote, and what quarantine files still use), is not stored: it is
//! copied to the quarantine file, counted and logged, like damage. So a record placed in the
//! journal by hand never reaches the store, where the next batch seal would have vouched for it.
//! What that proves depends on the key:
//! - with `seal_key_file`, the key is derived from the seal's private key: forging an entry takes
//!   the private key, the same secret as forging a seal;
//! - without it, the key is a random one kept in `<spill_path>.key` (0600): it stops whoever can
//!   write the journal but not read that file, not someone who can read both (the same user).
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
//! - The files (the key file too) are created with mode 0600 whatever the umask, and never opened
//!   through a symlink.

use crate::document::Collection;
use bson::RawDocumentBuf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Marks the start of an unkeyed entry (no MAC): quarantine files, and journals of earlier
/// versions.
pub(crate) const MAGIC: [u8; 4] = [0xA7, b'A', b'J', b'1'];
/// Marks the start of an authenticated entry.
pub(crate) const MAGIC_MAC: [u8; 4] = [0xA7, b'A', b'J', b'2'];
/// Bytes before an unkeyed entry's payload: magic, tag, length, checksum.
pub(crate) const HEADER_LEN: usize = 13;
/// The length of an entry's MAC.
const MAC_LEN: usize = 32;
/// Bytes before an authenticated entry's payload: the unkeyed header, then the MAC.
pub(crate) const HEADER_LEN_MAC: usize = HEADER_LEN + MAC_LEN;
/// The longest payload an entry may have; a longer length field is damage.
pub(crate) const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
/// The tag of raw bytes kept from a damaged region.
pub(crate) const RAW_TAG: u8 = b'x';
/// Damaged regions are handed back in pieces of at most this many bytes.
const MAX_CORRUPT_PIECE: u64 = 1024 * 1024;
/// How much is read at a time while looking for the next entry.
const SCAN_CHUNK: usize = 64 * 1024;

/// The key that authenticates the entries of a spill journal (HMAC-SHA256).
#[derive(Clone)]
pub struct JournalKey([u8; 32]);

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalKey(..)")
    }
}

impl JournalKey {
    /// The key derived from the seal's private key: whoever cannot sign a seal cannot forge a
    /// journal entry either. A hash of the key with a label of its own, so the journal's key
    /// says nothing about the signing key.
    pub fn derived_from(seal_key: &ed25519_dalek::SigningKey) -> JournalKey {
        let mut h = Sha256::new();
        h.update(b"audit-tools spill journal key v1\0");
        h.update(seal_key.to_bytes());
        JournalKey(h.finalize().into())
    }

    /// The random key kept in `path`, created (32 random bytes, mode 0600, never through a
    /// symlink) when there is none yet.
    pub fn in_file(path: &Path) -> std::io::Result<JournalKey> {
        let read = |path: &Path| -> std::io::Result<Option<JournalKey>> {
            let bytes = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(mut f) => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut f, &mut b)?;
                    b
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            <[u8; 32]>::try_from(bytes.as_slice())
                .map(|k| Some(JournalKey(k)))
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a journal key (32 bytes)", path.display()),
                    )
                })
        };
        if let Some(key) = read(path)? {
            return Ok(key);
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(mut f) => {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(&key)?;
                f.sync_all()?;
                Ok(JournalKey(key))
            }
            // Another writer created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path)?
                .ok_or_else(|| std::io::Error::other(format!("{} vanished", path.display()))),
            Err(e) => Err(e),
        }
    }

    /// `PATH.key`: where [`in_file`](Self::in_file) keeps the key of the journal at `PATH`.
    pub fn file_beside(journal: &Path) -> PathBuf {
        let mut s = journal.as_os_str().to_owned();
        s.push(".key");
        PathBuf::from(s)
    }

    fn mac(&self, tag: u8, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        m.update(&[tag]);
        m.update(&(payload.len() as u32).to_le_bytes());
        m.update(payload);
        m.finalize().into_bytes().into()
    }

    fn verifies(&self, tag: u8, payload: &[u8], mac: &[u8]) -> bool {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        m.update(&[tag]);
        m.update(&(payload.len() as u32).to_le_bytes());
        m.update(payload);
        // Constant time.
        m.verify_slice(mac).is_ok()
    }
}

/// The journal file. Clones share one append lock.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
    /// Entries are written with a MAC by this key, and only entries whose MAC it verifies are
    /// read as entries. `None`: unkeyed (the quarantine file; tools that only read).
    key: Option<JournalKey>,
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
    /// A well-formed entry that a keyed journal cannot vouch for: its MAC is wrong, or it has
    /// none (written unkeyed, or by hand). Never replayed into the store.
    Unauthenticated {
        /// Where it starts in the file.
        offset: u64,
        /// The whole entry, header included.
        bytes: Vec<u8>,
    },
}

fn tag(c: Collection) -> u8 {
    match c {
        Collection::Access => b'a',
        Collection::ModelAction => b'm',
        Collection::Process => b'p',
        Collection::Seal => b's',
        Collection::Salt => b'k',
    }
}

fn collection(tag: u8) -> Option<Collection> {
    match tag {
        b'a' => Some(Collection::Access),
        b'm' => Some(Collection::ModelAction),
        b'p' => Some(Collection::Process),
        b's' => Some(Collection::Seal),
        b'k' => Some(Collection::Salt),
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

fn frame(
    buf: &mut Vec<u8>,
    key: Option<&JournalKey>,
    tag: u8,
    payload: &[u8],
) -> std::io::Result<()> {
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
    buf.extend_from_slice(if key.is_some() { &MAGIC_MAC } else { &MAGIC });
    buf.push(tag);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&checksum(tag, payload).to_le_bytes());
    if let Some(key) = key {
        buf.extend_from_slice(&key.mac(tag, payload));
    }
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
    /// The unkeyed journal at `path` (nothing is created until the first append): what the
    /// quarantine file is, and how tools read a journal whose key they do not hold (entries are
    /// then not authenticated).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal {
            path: path.into(),
            lock: Arc::default(),
            key: None,
        }
    }

    /// The journal at `path` whose entries `key` authenticates: what the writer spills to.
    pub fn keyed(path: impl Into<PathBuf>, key: JournalKey) -> Self {
        Journal {
            key: Some(key),
            ..Journal::new(path)
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
            frame(&mut buf, self.key.as_ref(), tag(c), doc.as_bytes())?;
            n += 1;
        }
        self.write_synced(&buf)?;
        Ok(n)
    }

    /// Appends raw bytes from a damaged region (tagged as such) and syncs them.
    pub fn append_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(bytes.len() + HEADER_LEN_MAC);
        frame(&mut buf, self.key.as_ref(), RAW_TAG, bytes)?;
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
            key: self.key.clone(),
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
    /// The journal's key: entries it does not authenticate are handed back as
    /// [`Item::Unauthenticated`].
    key: Option<JournalKey>,
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

    /// The entry starting at `pos` and the offset after it, if a well-formed one (magic, tag,
    /// length, checksum) starts there. Under a key, an entry it does not authenticate is
    /// [`Item::Unauthenticated`].
    fn entry_at(&self, pos: u64) -> std::io::Result<Option<(Item, u64)>> {
        if pos + HEADER_LEN as u64 > self.len {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut head, pos)?;
        let with_mac = if head[..4] == MAGIC {
            false
        } else if head[..4] == MAGIC_MAC {
            true
        } else {
            return Ok(None);
        };
        let header_len = if with_mac { HEADER_LEN_MAC } else { HEADER_LEN } as u64;
        let t = head[4];
        if collection(t).is_none() && t != RAW_TAG {
            return Ok(None);
        }
        let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        let sum = u32::from_le_bytes([head[9], head[10], head[11], head[12]]);
        let end = pos + header_len + u64::from(len);
        if len > MAX_PAYLOAD || end > self.len {
            return Ok(None);
        }
        let mut mac = [0u8; MAC_LEN];
        if with_mac {
            self.file.read_exact_at(&mut mac, pos + HEADER_LEN as u64)?;
        }
        let mut payload = vec![0u8; len as usize];
        self.file.read_exact_at(&mut payload, pos + header_len)?;
        if checksum(t, &payload) != sum {
            return Ok(None);
        }
        if let Some(key) = &self.key {
            if !with_mac || !key.verifies(t, &payload, &mac) {
                let mut bytes = vec![0u8; (end - pos) as usize];
                self.file.read_exact_at(&mut bytes, pos)?;
                return Ok(Some((Item::Unauthenticated { offset: pos, bytes }, end)));
            }
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
                let magic = &window[i..i + MAGIC.len()];
                if (magic == MAGIC || magic == MAGIC_MAC)
                    && self.entry_at(pos + i as u64)?.is_some()
                {
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
        frame(&mut whole, None, b'a', d[1].as_bytes()).unwrap();
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

    fn key() -> JournalKey {
        JournalKey([7; 32])
    }

    #[test]
    fn a_keyed_journal_reads_back_only_what_its_key_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill");
        let d = docs();
        let keyed = Journal::keyed(&path, key());
        keyed.append([(Collection::Access, &d[0])]).unwrap();
        // Appended without the key (by hand, or by an earlier version) ...
        Journal::new(&path)
            .append([(Collection::Access, &d[1])])
            .unwrap();
        // ... and with another key.
        Journal::keyed(&path, JournalKey([8; 32]))
            .append([(Collection::Access, &d[2])])
            .unwrap();
        let got = keyed.read_all().unwrap();
        assert_eq!(entries(&got), vec![d[0].clone()]);
        assert_eq!(got.len(), 3, "{got:?}");
        for item in &got[1..] {
            let Item::Unauthenticated { bytes, .. } = item else {
                panic!("expected an unauthenticated entry, got {item:?}");
            };
            assert!(bytes.ends_with(d[1].as_bytes()) || bytes.ends_with(d[2].as_bytes()));
        }
        // Whoever reads without the key sees every entry (it cannot check them).
        assert_eq!(entries(&Journal::new(&path).read_all().unwrap()).len(), 3);
    }

    #[test]
    fn a_changed_byte_under_a_valid_checksum_fails_the_mac() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::keyed(dir.path().join("spill"), key());
        let d = docs();
        j.append([(Collection::Access, &d[0])]).unwrap();
        let mut bytes = std::fs::read(j.path()).unwrap();
        // Change the payload and recompute the CRC, as a forger without the key would.
        let at = bytes.len() - 3;
        bytes[at] ^= 1;
        let payload = bytes[HEADER_LEN_MAC..].to_vec();
        bytes[9..13].copy_from_slice(&checksum(b'a', &payload).to_le_bytes());
        std::fs::write(j.path(), &bytes).unwrap();
        let got = j.read_all().unwrap();
        assert!(
            matches!(got.as_slice(), [Item::Unauthenticated { offset: 0, .. }]),
            "{got:?}"
        );
    }

    #[test]
    fn the_key_file_is_made_once_private_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.key");
        let a = JournalKey::in_file(&path).unwrap();
        let b = JournalKey::in_file(&path).unwrap();
        assert_eq!(a.0, b.0, "the same key on the next start");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(JournalKey::in_file(&link).is_err());
        std::fs::write(dir.path().join("short.key"), b"short").unwrap();
        assert!(JournalKey::in_file(&dir.path().join("short.key")).is_err());
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
