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
//! A keyed journal begins with an *epoch* entry (tag `e`, 16 random bytes), made when the file is
//! created, and every entry's MAC covers the epoch too: an entry copied from one journal into
//! another does not authenticate. Once a journal has been replayed whole, the writer states its
//! epoch in a `journal` seal before removing it, so a copy of the file put back later (records
//! since pruned, returning) is recognised and quarantined instead of replayed again.
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
/// The tag of a keyed journal's first entry: its epoch.
const EPOCH_TAG: u8 = b'e';
/// The length of an epoch.
pub(crate) const EPOCH_LEN: usize = 16;
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

    /// The key kept in `path`, if there is one (never through a symlink).
    pub fn from_file(path: &Path) -> std::io::Result<Option<JournalKey>> {
        Self::read_key(path)
    }

    fn read_key(path: &Path) -> std::io::Result<Option<JournalKey>> {
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
        read(path)
    }

    /// The random key kept in `path`, created (32 random bytes, mode 0600, never through a
    /// symlink) when there is none yet.
    pub fn in_file(path: &Path) -> std::io::Result<JournalKey> {
        let read = Self::read_key;
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

    /// The MAC of an entry of the journal of `epoch` (the epoch entry itself: no epoch yet).
    fn hmac(&self, epoch: Option<&[u8; EPOCH_LEN]>, tag: u8, payload: &[u8]) -> Hmac<Sha256> {
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        m.update(epoch.map_or(&[0u8; EPOCH_LEN][..], |e| &e[..]));
        m.update(&[tag]);
        m.update(&(payload.len() as u32).to_le_bytes());
        m.update(payload);
        m
    }

    fn mac(&self, epoch: Option<&[u8; EPOCH_LEN]>, tag: u8, payload: &[u8]) -> [u8; MAC_LEN] {
        self.hmac(epoch, tag, payload)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verifies(
        &self,
        epoch: Option<&[u8; EPOCH_LEN]>,
        tag: u8,
        payload: &[u8],
        mac: &[u8],
    ) -> bool {
        // Constant time.
        self.hmac(epoch, tag, payload).verify_slice(mac).is_ok()
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
    /// Keys a journal may also have been written with (the key file of a time before
    /// `seal_key_file` was set): read, never written with.
    also: Vec<JournalKey>,
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
    /// The journal's epoch entry (its first): nothing to replay.
    Epoch,
    /// A well-formed entry that a keyed journal cannot vouch for: its MAC is wrong, or it has
    /// none (written unkeyed, or by hand), or it belongs to another journal. Never replayed into
    /// the store.
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
    key: Option<(&JournalKey, Option<&[u8; EPOCH_LEN]>)>,
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
    if let Some((key, epoch)) = key {
        buf.extend_from_slice(&key.mac(epoch, tag, payload));
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
    // A file another user created beforehand (with open permissions) stays theirs whatever its
    // mode becomes: they could read what is written. Refuse it instead.
    let me = rustix::process::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {}); refusing to write audit data into it",
                path.display(),
                std::os::unix::fs::MetadataExt::uid(&meta)
            ),
        ));
    }
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
            also: Vec::new(),
        }
    }

    /// The journal at `path` whose entries `key` authenticates: what the writer spills to.
    pub fn keyed(path: impl Into<PathBuf>, key: JournalKey) -> Self {
        Journal {
            key: Some(key),
            ..Journal::new(path)
        }
    }

    /// This journal, also reading (never writing) entries authenticated by `keys`.
    pub fn also_reading(mut self, keys: Vec<JournalKey>) -> Self {
        self.also = keys;
        self
    }

    /// The epoch of the keyed journal now at the path: its first entry, when that is an epoch
    /// entry whose MAC one of the keys verifies.
    pub fn epoch(&self) -> std::io::Result<Option<[u8; EPOCH_LEN]>> {
        Ok(self.reader_at(0)?.and_then(|r| r.epoch))
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
        let entries: Vec<(Collection, &RawDocumentBuf)> = entries.into_iter().collect();
        let n = entries.len() as u64;
        self.write_framed(|buf, key| {
            for (c, doc) in &entries {
                frame(buf, key, tag(*c), doc.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Appends raw bytes from a damaged region (tagged as such) and syncs them.
    pub fn append_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_framed(|buf, key| frame(buf, key, RAW_TAG, bytes))
    }

    /// Appends what `write` frames, under the append lock, and syncs it. A keyed journal that is
    /// new (or empty) first gets its epoch entry; the entries are framed with its epoch.
    fn write_framed(
        &self,
        write: impl FnOnce(
            &mut Vec<u8>,
            Option<(&JournalKey, Option<&[u8; EPOCH_LEN]>)>,
        ) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::new();
        let epoch = match &self.key {
            None => None,
            Some(key) => Some(match self.current_epoch()? {
                Some(e) => e,
                None => {
                    let mut e = [0u8; EPOCH_LEN];
                    getrandom::fill(&mut e).map_err(|e| std::io::Error::other(e.to_string()))?;
                    // A file that is not empty but has no epoch of ours (damage, foreign bytes)
                    // is truncated by nobody: the new entries follow it, and its bytes are
                    // quarantined on replay.
                    frame(&mut buf, Some((key, None)), EPOCH_TAG, &e)?;
                    e
                }
            }),
        };
        write(&mut buf, self.key.as_ref().map(|k| (k, epoch.as_ref())))?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut file = open_private(&self.path, false)?;
        file.write_all(&buf)?;
        file.sync_data()
    }

    /// The epoch of the file now at the path, read under the append lock (held by the caller).
    fn current_epoch(&self) -> std::io::Result<Option<[u8; EPOCH_LEN]>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let keys: Vec<JournalKey> = self.key.iter().chain(&self.also).cloned().collect();
        Ok(read_epoch(&file, len, &keys))
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
        let keys: Vec<JournalKey> = self.key.iter().chain(&self.also).cloned().collect();
        let epoch = if keys.is_empty() {
            None
        } else {
            read_epoch(&file, len, &keys)
        };
        Ok(Some(JournalReader {
            file,
            offset,
            len,
            resync_at: None,
            keys,
            epoch,
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
    /// The journal's keys: entries none of them authenticates (with the journal's epoch) are
    /// handed back as [`Item::Unauthenticated`].
    keys: Vec<JournalKey>,
    /// The epoch of a keyed journal, when its first entry is a valid epoch entry.
    epoch: Option<[u8; EPOCH_LEN]>,
}

/// The epoch entry at the start of `file`, if one of `keys` authenticates it.
fn read_epoch(file: &File, len: u64, keys: &[JournalKey]) -> Option<[u8; EPOCH_LEN]> {
    let total = (HEADER_LEN_MAC + EPOCH_LEN) as u64;
    if len < total {
        return None;
    }
    let mut entry = vec![0u8; total as usize];
    file.read_exact_at(&mut entry, 0).ok()?;
    if entry[..4] != MAGIC_MAC
        || entry[4] != EPOCH_TAG
        || u32::from_le_bytes([entry[5], entry[6], entry[7], entry[8]]) as usize != EPOCH_LEN
    {
        return None;
    }
    let payload = &entry[HEADER_LEN_MAC..];
    if checksum(EPOCH_TAG, payload)
        != u32::from_le_bytes([entry[9], entry[10], entry[11], entry[12]])
    {
        return None;
    }
    let mac = &entry[HEADER_LEN..HEADER_LEN_MAC];
    keys.iter()
        .any(|k| k.verifies(None, EPOCH_TAG, payload, mac))
        .then(|| payload.try_into().ok())
        .flatten()
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

    /// The journal's epoch (keyed journals).
    pub fn epoch(&self) -> Option<[u8; EPOCH_LEN]> {
        self.epoch
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
        if collection(t).is_none() && t != RAW_TAG && !(t == EPOCH_TAG && with_mac) {
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
        if t == EPOCH_TAG {
            // The journal's own epoch, at its start: not an item. Anywhere else it is out of place.
            if pos == 0 && (self.epoch.is_some() || self.keys.is_empty()) {
                return Ok(Some((Item::Epoch, end)));
            }
            let mut bytes = vec![0u8; (end - pos) as usize];
            self.file.read_exact_at(&mut bytes, pos)?;
            return Ok(Some((Item::Unauthenticated { offset: pos, bytes }, end)));
        }
        if !self.keys.is_empty() {
            let authentic = with_mac
                && self.epoch.is_some()
                && self
                    .keys
                    .iter()
                    .any(|k| k.verifies(self.epoch.as_ref(), t, &payload, &mac));
            if !authentic {
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
        // ... and with another key (which starts an epoch of its own, mid-file).
        Journal::keyed(&path, JournalKey([8; 32]))
            .append([(Collection::Access, &d[2])])
            .unwrap();
        let got = keyed.read_all().unwrap();
        assert_eq!(entries(&got), vec![d[0].clone()]);
        assert_eq!(got[0], Item::Epoch, "{got:?}");
        let refused: Vec<&Item> = got
            .iter()
            .filter(|i| matches!(i, Item::Unauthenticated { .. }))
            .collect();
        assert_eq!(refused.len(), 3, "{got:?}");
        // Whoever reads without the key sees every entry (it cannot check them).
        assert_eq!(entries(&Journal::new(&path).read_all().unwrap()).len(), 3);
        // The other key's journal reads its own.
        let other = Journal::keyed(&path, JournalKey([8; 32]))
            .read_all()
            .unwrap();
        assert!(
            entries(&other).is_empty(),
            "its epoch entry is not at the start"
        );
        let both = Journal::keyed(&path, key())
            .also_reading(vec![JournalKey([8; 32])])
            .read_all()
            .unwrap();
        assert_eq!(entries(&both), vec![d[0].clone()]);
    }

    #[test]
    fn an_entry_copied_into_another_journal_does_not_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let d = docs();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        Journal::keyed(&a, key())
            .append([(Collection::Access, &d[0])])
            .unwrap();
        Journal::keyed(&b, key())
            .append([(Collection::Access, &d[1])])
            .unwrap();
        // The entry of `a` (after its epoch entry) appended to `b`, whose epoch differs.
        let bytes = std::fs::read(&a).unwrap();
        let epoch_entry = HEADER_LEN_MAC + EPOCH_LEN;
        let mut f = open_private(&b, false).unwrap();
        f.write_all(&bytes[epoch_entry..]).unwrap();
        let got = Journal::keyed(&b, key()).read_all().unwrap();
        assert_eq!(entries(&got), vec![d[1].clone()]);
        assert!(
            matches!(got.last(), Some(Item::Unauthenticated { .. })),
            "{got:?}"
        );
        assert_ne!(
            Journal::keyed(&a, key()).epoch().unwrap(),
            Journal::keyed(&b, key()).epoch().unwrap()
        );
    }

    #[test]
    fn a_changed_byte_under_a_valid_checksum_fails_the_mac() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::keyed(dir.path().join("spill"), key());
        let d = docs();
        j.append([(Collection::Access, &d[0])]).unwrap();
        let mut bytes = std::fs::read(j.path()).unwrap();
        // Change the payload and recompute the CRC, as a forger without the key would.
        let start = HEADER_LEN_MAC + EPOCH_LEN;
        let at = bytes.len() - 3;
        bytes[at] ^= 1;
        let payload = bytes[start + HEADER_LEN_MAC..].to_vec();
        bytes[start + 9..start + 13].copy_from_slice(&checksum(b'a', &payload).to_le_bytes());
        std::fs::write(j.path(), &bytes).unwrap();
        let got = j.read_all().unwrap();
        assert!(
            matches!(got.as_slice(), [Item::Epoch, Item::Unauthenticated { .. }]),
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
