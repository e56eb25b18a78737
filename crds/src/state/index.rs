//! A project's file index: every file's path, size, mtime and digests, with a stable numeric
//! id per path so that availability bitmaps over ids stay valid when the index changes (a new
//! file gets a new id; a removed file's id is never reused).
//!
//! In memory the index is columnar and sorted by path (about 32 bytes per file plus the path
//! and digests), so lookups are a binary search without a hash map. In the store it is split
//! into immutable chunks of [`CHUNK_FILES`] consecutive ids, front-coded, so that a change to
//! a few files rewrites a few chunks, and [`IndexMeta`] lists the chunks of a generation.

use serde::{Deserialize, Serialize};

use super::codec::{Cursor, put_bytes, put_ivarint, put_uvarint};
use super::envelope::{self, Kind};
use super::fleet::HashKind;
use super::{DecodeError, chunk_key};

/// Files per chunk (one id range).
pub const CHUNK_FILES: u32 = 8192;
/// Longest path accepted in an index (bytes).
pub const MAX_PATH: usize = 4096;

/// One file as a scanner reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// Path relative to the project root, `/`-separated, no leading `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Digests, in the order of the index's hash kinds; `None` where not computed.
    pub digests: Vec<Option<Vec<u8>>>,
}

/// A borrowed view of one file of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEntry<'a> {
    /// Stable id.
    pub id: u32,
    /// Path relative to the project root.
    pub path: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    digests: &'a [u8],
    kinds: &'a [HashKind],
}

impl<'a> FileEntry<'a> {
    /// The digest of `kind`, if the index has it for this file.
    pub fn digest(&self, kind: HashKind) -> Option<&'a [u8]> {
        let mut offset = 0;
        for k in self.kinds {
            if *k == kind {
                let d = &self.digests[offset..offset + k.digest_len()];
                return (!d.iter().all(|b| *b == 0)).then_some(d);
            }
            offset += k.digest_len();
        }
        None
    }
}

/// An entry of a directory listing ([`FileIndex::dir_entries`]).
#[derive(Debug, Clone)]
pub enum DirEntry<'a> {
    /// A sub-directory, by name.
    Dir(&'a str),
    /// A file.
    File(FileEntry<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    id: u32,
    path_start: u32,
    path_len: u32,
    size: u64,
    mtime: i64,
}

/// A project's index, sorted by path.
#[derive(Clone, Default)]
pub struct FileIndex {
    /// The project.
    pub project: String,
    /// The source serial this index describes.
    pub serial: String,
    /// Hash kinds, in digest order.
    pub hashes: Vec<HashKind>,
    /// The next id to hand out.
    pub next_id: u32,
    slots: Vec<Slot>,
    arena: String,
    digests: Vec<u8>,
    /// Path hash table over `slots` (see [`PathTable`]).
    table: PathTable,
}

impl std::fmt::Debug for FileIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIndex")
            .field("project", &self.project)
            .field("serial", &self.serial)
            .field("hashes", &self.hashes)
            .field("next_id", &self.next_id)
            .field("files", &self.slots.len())
            .finish_non_exhaustive()
    }
}

/// Two indexes are equal when they describe the same files, whatever their memory layout.
impl PartialEq for FileIndex {
    fn eq(&self, other: &FileIndex) -> bool {
        self.project == other.project
            && self.serial == other.serial
            && self.hashes == other.hashes
            && self.next_id == other.next_id
            && self.len() == other.len()
            && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for FileIndex {}

impl FileIndex {
    /// Builds an index from scanner records, keeping the ids of paths `previous` already had.
    pub fn build(
        project: &str,
        serial: &str,
        hashes: &[HashKind],
        mut records: Vec<FileRecord>,
        previous: Option<&FileIndex>,
    ) -> FileIndex {
        records.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        records.dedup_by(|a, b| a.path == b.path);
        let stride: usize = hashes.iter().map(|h| h.digest_len()).sum();
        let mut next_id = previous.map_or(0, |p| p.next_id);
        let mut index = FileIndex {
            project: project.to_owned(),
            serial: serial.to_owned(),
            hashes: hashes.to_vec(),
            next_id: 0,
            slots: Vec::with_capacity(records.len()),
            arena: String::with_capacity(records.iter().map(|r| r.path.len()).sum()),
            digests: Vec::with_capacity(records.len() * stride),
            table: PathTable::default(),
        };
        for r in records {
            let id = match previous.and_then(|p| p.find(&r.path)) {
                Some(e) => e.id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            index.push_slot(id, &r.path, r.size, r.mtime);
            for (i, kind) in hashes.iter().enumerate() {
                match r
                    .digests
                    .get(i)
                    .and_then(Option::as_ref)
                    .filter(|d| d.len() == kind.digest_len())
                {
                    Some(d) => index.digests.extend_from_slice(d),
                    None => index
                        .digests
                        .extend(std::iter::repeat_n(0, kind.digest_len())),
                }
            }
        }
        index.next_id = next_id;
        index.table = PathTable::build(&index);
        index
    }

    fn push_slot(&mut self, id: u32, path: &str, size: u64, mtime: i64) {
        let path_start = self.arena.len() as u32;
        self.arena.push_str(path);
        self.slots.push(Slot {
            id,
            path_start,
            path_len: path.len() as u32,
            size,
            mtime,
        });
    }

    fn stride(&self) -> usize {
        self.hashes.iter().map(|h| h.digest_len()).sum()
    }

    fn path_of(&self, slot: &Slot) -> &str {
        &self.arena[slot.path_start as usize..(slot.path_start + slot.path_len) as usize]
    }

    fn entry(&self, i: usize) -> FileEntry<'_> {
        let slot = &self.slots[i];
        let stride = self.stride();
        FileEntry {
            id: slot.id,
            path: self.path_of(slot),
            size: slot.size,
            mtime: slot.mtime,
            digests: &self.digests[i * stride..(i + 1) * stride],
            kinds: &self.hashes,
        }
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the index has no files.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Total bytes of all files. A decoded index never exceeds `u64::MAX` in all (the decoder
    /// refuses one that would); an index built from a scan saturates there rather than wrap.
    pub fn total_bytes(&self) -> u64 {
        self.checked_total_bytes().unwrap_or(u64::MAX)
    }

    /// Total bytes of all files, `None` if the sum does not fit in 64 bits.
    fn checked_total_bytes(&self) -> Option<u64> {
        self.slots
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.size))
    }

    /// Finds a file by path (relative, no leading `/`).
    pub fn find(&self, path: &str) -> Option<FileEntry<'_>> {
        self.position(path).map(|i| self.entry(i))
    }

    /// The position of a file (for [`FileIndex::get`]), by path: one hash probe (rarely a
    /// few), a binary search only for indexes too large for the table.
    pub fn position(&self, path: &str) -> Option<usize> {
        if self.table.entries.is_empty() {
            return self
                .slots
                .binary_search_by(|s| self.path_of(s).cmp(path))
                .ok();
        }
        self.table.find(path, |pos| {
            self.slots.get(pos).is_some_and(|s| self.path_of(s) == path)
        })
    }

    /// The file at `position` (in path order).
    pub fn get(&self, position: usize) -> Option<FileEntry<'_>> {
        (position < self.slots.len()).then(|| self.entry(position))
    }

    /// The entries directly inside directory `dir` (`""` for the root, else a path ending in
    /// `/`), in path order: sub-directories by name, files whole; at most `limit` of them, and
    /// whether more were left out. A sub-directory costs one binary search to step over, not a
    /// walk through its files.
    pub fn dir_entries(&self, dir: &str, limit: usize) -> (Vec<DirEntry<'_>>, bool) {
        let mut out = Vec::new();
        let mut i = self.slots.partition_point(|s| self.path_of(s) < dir);
        while i < self.slots.len() {
            let path = self.path_of(&self.slots[i]);
            let Some(rest) = path.strip_prefix(dir) else {
                break;
            };
            if out.len() == limit {
                return (out, true);
            }
            match rest.find('/') {
                Some(slash) => {
                    let name = &rest[..slash];
                    out.push(DirEntry::Dir(name));
                    // Past every path under `dir/name/`: the next one is not below `dir/name0`
                    // ('0' follows '/').
                    let end = &path[..dir.len() + slash];
                    i += self.slots[i..].partition_point(|s| {
                        let p = self.path_of(s);
                        p.starts_with(end) && p.as_bytes().get(end.len()) == Some(&b'/')
                    });
                }
                None => {
                    out.push(DirEntry::File(self.entry(i)));
                    i += 1;
                }
            }
        }
        (out, false)
    }

    /// Whether some file lies under directory `dir` (a path ending in `/`).
    pub fn has_dir(&self, dir: &str) -> bool {
        let i = self.slots.partition_point(|s| self.path_of(s) < dir);
        self.slots
            .get(i)
            .is_some_and(|s| self.path_of(s).starts_with(dir))
    }

    /// Every file, in path order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FileEntry<'_>> + '_ {
        (0..self.slots.len()).map(|i| self.entry(i))
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.arena.capacity()
            + self.digests.capacity()
            + self.table.entries.capacity() * std::mem::size_of::<u32>()
    }

    /// Splits the index into encoded chunks (each in its envelope) and the metadata listing
    /// them. Chunks are content-addressed: unchanged files give unchanged keys.
    pub fn encode(&self, generated_at: i64) -> (IndexMeta, Vec<(String, Vec<u8>)>) {
        let mut order: Vec<usize> = (0..self.slots.len()).collect();
        order.sort_unstable_by_key(|i| self.slots[*i].id);
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let chunk_no = self.slots[order[start]].id / CHUNK_FILES;
            let end = order[start..]
                .iter()
                .position(|i| self.slots[*i].id / CHUNK_FILES != chunk_no)
                .map_or(order.len(), |p| start + p);
            let body = self.encode_chunk(chunk_no, &order[start..end]);
            let key = chunk_key(&self.project, chunk_no, fnv1a(&body));
            chunks.push((key, envelope::encode(Kind::IndexChunk, &body)));
            start = end;
        }
        let meta = IndexMeta {
            project: self.project.clone(),
            serial: self.serial.clone(),
            generated_at,
            hashes: self.hashes.clone(),
            files: self.len() as u64,
            bytes: self.total_bytes(),
            next_id: self.next_id,
            chunks: chunks.iter().map(|(k, _)| k.clone()).collect(),
        };
        (meta, chunks)
    }

    fn encode_chunk(&self, chunk_no: u32, slots: &[usize]) -> Vec<u8> {
        let stride = self.stride();
        let mut out = Vec::with_capacity(slots.len() * (24 + stride));
        put_uvarint(&mut out, u64::from(chunk_no));
        put_uvarint(&mut out, slots.len() as u64);
        put_uvarint(&mut out, stride as u64);
        let mut prev_id = chunk_no * CHUNK_FILES;
        let mut prev_path = "";
        for &i in slots {
            let slot = &self.slots[i];
            let path = self.path_of(slot);
            put_uvarint(&mut out, u64::from(slot.id - prev_id));
            let shared = common_prefix(prev_path, path);
            put_uvarint(&mut out, shared as u64);
            put_bytes(&mut out, &path.as_bytes()[shared..]);
            put_uvarint(&mut out, slot.size);
            put_ivarint(&mut out, slot.mtime);
            out.extend_from_slice(&self.digests[i * stride..(i + 1) * stride]);
            prev_id = slot.id;
            prev_path = path;
        }
        out
    }

    /// Rebuilds an index from its metadata and decoded chunks (in any order).
    pub fn from_chunks(meta: &IndexMeta, chunks: &[&IndexChunk]) -> Result<FileIndex, DecodeError> {
        Self::from_parts(meta, None, chunks)
    }

    /// Rebuilds an index from its metadata, the files of `previous` in the chunk numbers
    /// `kept` (chunks that did not change), and freshly decoded `chunks` for the rest. Readers
    /// use it to apply a new index generation without holding a second copy of the files.
    pub fn from_parts(
        meta: &IndexMeta,
        kept: Option<(&FileIndex, &[u32])>,
        chunks: &[&IndexChunk],
    ) -> Result<FileIndex, DecodeError> {
        let stride: usize = meta.hashes.iter().map(|h| h.digest_len()).sum();
        let keep = |id: u32| kept.is_some_and(|(_, nos)| nos.contains(&(id / CHUNK_FILES)));
        let kept_slots: Vec<usize> = match kept {
            Some((old, _)) if old.hashes == meta.hashes => (0..old.slots.len())
                .filter(|i| keep(old.slots[*i].id))
                .collect(),
            Some(_) => {
                return Err(DecodeError::Invalid {
                    what: "index",
                    offset: 0,
                    why: "hash kinds changed; reload all chunks".into(),
                });
            }
            None => vec![],
        };
        let total = kept_slots.len() + chunks.iter().map(|c| c.len()).sum::<usize>();
        if total as u64 != meta.files {
            return Err(DecodeError::Invalid {
                what: "index",
                offset: 0,
                why: format!(
                    "the chunks hold {total} files, the metadata says {}",
                    meta.files
                ),
            });
        }
        let mut index = FileIndex {
            project: meta.project.clone(),
            serial: meta.serial.clone(),
            hashes: meta.hashes.clone(),
            next_id: meta.next_id,
            slots: Vec::with_capacity(total),
            arena: String::new(),
            digests: Vec::with_capacity(total * stride),
            table: PathTable::default(),
        };
        // Where each pushed slot's digests come from: the previous index, or chunk (ci, j).
        let mut origin: Vec<(usize, usize)> = Vec::with_capacity(total);
        if let Some((old, _)) = kept {
            for &i in &kept_slots {
                let s = &old.slots[i];
                index.push_slot(s.id, old.path_of(s), s.size, s.mtime);
                origin.push((usize::MAX, i));
            }
        }
        for (ci, chunk) in chunks.iter().enumerate() {
            if chunk.stride != stride {
                return Err(DecodeError::Invalid {
                    what: "index chunk",
                    offset: 0,
                    why: format!(
                        "digest stride {} does not match the metadata's {stride}",
                        chunk.stride
                    ),
                });
            }
            for (j, s) in chunk.slots.iter().enumerate() {
                let path =
                    &chunk.arena[s.path_start as usize..(s.path_start + s.path_len) as usize];
                index.push_slot(s.id, path, s.size, s.mtime);
                origin.push((ci, j));
            }
        }
        let mut order: Vec<usize> = (0..index.slots.len()).collect();
        order.sort_unstable_by(|a, b| {
            index
                .path_of(&index.slots[*a])
                .cmp(index.path_of(&index.slots[*b]))
        });
        for w in order.windows(2) {
            if index.path_of(&index.slots[w[0]]) == index.path_of(&index.slots[w[1]]) {
                return Err(DecodeError::Invalid {
                    what: "index",
                    offset: 0,
                    why: format!("path {:?} appears twice", index.path_of(&index.slots[w[0]])),
                });
            }
        }
        for i in &order {
            let d = match origin[*i] {
                (usize::MAX, old_slot) => {
                    kept.map(|(old, _)| &old.digests[old_slot * stride..(old_slot + 1) * stride])
                }
                (ci, j) => Some(&chunks[ci].digests[j * stride..(j + 1) * stride]),
            };
            index.digests.extend_from_slice(d.unwrap_or_default());
        }
        index.slots = order.iter().map(|i| index.slots[*i]).collect();
        if index.checked_total_bytes().is_none() {
            return Err(DecodeError::Invalid {
                what: "index",
                offset: 0,
                why: "file sizes add up to more than 2^64 bytes".into(),
            });
        }
        index.arena.shrink_to_fit();
        index.table = PathTable::build(&index);
        Ok(index)
    }
}

/// Open-addressing hash table from path to position, so that a lookup costs one or two cache
/// misses instead of a binary search's ~20 over a large index. Each entry is a 32-bit word:
/// an 8-bit tag from the hash (most mismatches rejected without touching the path) and the
/// position + 1 (0 = empty), so positions must fit in 24 bits; larger indexes (over 16M
/// files) go without the table. At most half full: 8 bytes per file or less.
#[derive(Clone, Default)]
struct PathTable {
    entries: Vec<u32>,
}

impl PathTable {
    const POS_BITS: u32 = 24;
    const POS_MASK: u32 = (1 << Self::POS_BITS) - 1;

    fn build(index: &FileIndex) -> PathTable {
        let n = index.slots.len();
        if n == 0 || n >= Self::POS_MASK as usize {
            return PathTable::default();
        }
        let mut entries = vec![0u32; (n * 2).next_power_of_two()];
        let mask = entries.len() - 1;
        for (pos, slot) in index.slots.iter().enumerate() {
            let h = path_hash(index.path_of(slot));
            let mut i = h as usize & mask;
            while entries[i] != 0 {
                i = (i + 1) & mask;
            }
            entries[i] = Self::tag(h) << Self::POS_BITS | (pos as u32 + 1);
        }
        PathTable { entries }
    }

    fn tag(h: u64) -> u32 {
        (h >> 56) as u32
    }

    /// The position whose path is `path`, as confirmed by `is`.
    fn find(&self, path: &str, is: impl Fn(usize) -> bool) -> Option<usize> {
        let h = path_hash(path);
        let (mask, tag) = (self.entries.len() - 1, Self::tag(h));
        let mut i = h as usize & mask;
        loop {
            let e = self.entries[i];
            if e == 0 {
                return None;
            }
            let pos = (e & Self::POS_MASK) as usize - 1;
            if e >> Self::POS_BITS == tag && is(pos) {
                return Some(pos);
            }
            i = (i + 1) & mask;
        }
    }
}

/// A fast hash of a path, eight bytes at a time, with a final avalanche (paths come from
/// the source's index, not from clients, so flooding is not a concern).
fn path_hash(path: &str) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let bytes = path.as_bytes();
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 29)
}

/// One decoded chunk.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IndexChunk {
    /// Which id range: `[n × CHUNK_FILES, (n+1) × CHUNK_FILES)`.
    pub chunk_no: u32,
    stride: usize,
    slots: Vec<Slot>,
    arena: String,
    digests: Vec<u8>,
}

impl std::fmt::Debug for IndexChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexChunk")
            .field("chunk_no", &self.chunk_no)
            .field("files", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl IndexChunk {
    /// Number of files.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the chunk is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Decodes a stored chunk (with its envelope).
    pub fn decode(value: &[u8]) -> Result<IndexChunk, DecodeError> {
        let body = envelope::decode(Kind::IndexChunk, value)?;
        let mut c = Cursor::new(body);
        let chunk_no = u32::try_from(c.uvarint("chunk number")?)
            .map_err(|_| invalid(&c, "chunk number", "too large"))?;
        let count = c.len("file count", CHUNK_FILES as usize)?;
        let stride = c.len("digest stride", 32 + 20 + 16)?;
        let base = u64::from(chunk_no) * u64::from(CHUNK_FILES);
        let mut chunk = IndexChunk {
            chunk_no,
            stride,
            slots: Vec::with_capacity(count),
            arena: String::new(),
            digests: Vec::with_capacity(count * stride),
        };
        let mut prev_id = base;
        let mut prev_path: (usize, usize) = (0, 0);
        for n in 0..count {
            let delta = c.uvarint("file id")?;
            let Some(id) = prev_id.checked_add(delta) else {
                return Err(invalid(&c, "file id", "overflows"));
            };
            if (n > 0 && delta == 0) || id >= base + u64::from(CHUNK_FILES) {
                return Err(invalid(
                    &c,
                    "file id",
                    &format!("{id} is out of order or outside chunk {chunk_no}"),
                ));
            }
            let shared = c.len("shared prefix", prev_path.1)?;
            let suffix = c.bytes("path", MAX_PATH)?;
            let start = chunk.arena.len();
            if !chunk.arena.is_char_boundary(prev_path.0 + shared) {
                return Err(invalid(&c, "shared prefix", "splits a character"));
            }
            let prefix = chunk.arena[prev_path.0..prev_path.0 + shared].to_owned();
            let suffix =
                std::str::from_utf8(suffix).map_err(|_| invalid(&c, "path", "not UTF-8"))?;
            chunk.arena.push_str(&prefix);
            chunk.arena.push_str(suffix);
            let len = chunk.arena.len() - start;
            if len == 0 || len > MAX_PATH {
                return Err(invalid(&c, "path", "empty or too long"));
            }
            let size = c.uvarint("file size")?;
            let mtime = c.ivarint("mtime")?;
            chunk.digests.extend_from_slice(c.take(stride, "digests")?);
            chunk.slots.push(Slot {
                id: id as u32,
                path_start: start as u32,
                path_len: len as u32,
                size,
                mtime,
            });
            prev_id = id;
            prev_path = (start, len);
        }
        if !c.is_empty() {
            return Err(invalid(&c, "chunk", "trailing bytes"));
        }
        Ok(chunk)
    }
}

fn invalid(c: &Cursor<'_>, what: &'static str, why: &str) -> DecodeError {
    DecodeError::Invalid {
        what,
        offset: c.offset(),
        why: why.to_owned(),
    }
}

/// The chunk number encoded in a chunk key (`…:<n>:<hash>`).
pub fn chunk_no_of(key: &str) -> Option<u32> {
    let mut parts = key.rsplitn(3, ':');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// The metadata of one index generation, stored under [`super::index_key`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMeta {
    /// The project.
    pub project: String,
    /// The source serial.
    pub serial: String,
    /// When the index was produced (Unix seconds).
    pub generated_at: i64,
    /// Hash kinds, in digest order.
    pub hashes: Vec<HashKind>,
    /// Number of files.
    pub files: u64,
    /// Total bytes.
    pub bytes: u64,
    /// Next id to hand out.
    pub next_id: u32,
    /// Chunk keys, in id order.
    pub chunks: Vec<String>,
}

impl IndexMeta {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        envelope::encode_json(Kind::IndexMeta, self)
    }

    /// Decodes from the store.
    pub fn decode(value: &[u8]) -> Result<IndexMeta, DecodeError> {
        envelope::decode_json(Kind::IndexMeta, value)
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    let n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    // Never split a UTF-8 character: back off to a boundary.
    (0..=n).rev().find(|i| b.is_char_boundary(*i)).unwrap_or(0)
}

/// FNV-1a, 64 bits: a stable content hash for chunk keys (not a security boundary: chunk
/// contents come from our own scans).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
