//! What one mirror holds of one project, from its last successful scan: a roaring bitmap of
//! the file ids present with the right size (immutable files), and the exact version seen of
//! each mutable metadata file, which is compared with the current index at request time.

use roaring::RoaringBitmap;

use super::DecodeError;
use super::codec::{Cursor, put_bytes, put_ivarint, put_uvarint};
use super::envelope::{self, Kind};

/// Most mutable entries accepted in one availability value.
const MAX_MUTABLE: usize = 1_000_000;

/// The version of a mutable file seen on a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MutableSeen {
    /// File id.
    pub id: u32,
    /// Size seen.
    pub size: u64,
    /// Mtime seen (Unix seconds, already corrected for the mirror's timezone offset).
    pub mtime: i64,
}

/// Counts of the last scan, for status and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounts {
    /// Files present with the right size.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files of the index the mirror lacks.
    pub missing: u64,
    /// Files present with another size or version.
    pub mismatched: u64,
}

/// A mirror's availability for one project.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Availability {
    /// The mirror.
    pub mirror: String,
    /// The project.
    pub project: String,
    /// The source serial the scan compared against.
    pub serial: String,
    /// When the scan finished (Unix seconds).
    pub scanned_at: i64,
    /// The mirror's last sync from its trace file (Unix seconds), if known.
    pub last_sync: Option<i64>,
    /// Scan counts.
    pub counts: ScanCounts,
    /// Ids of files present with the right size.
    pub present: RoaringBitmap,
    /// Versions of mutable files seen, sorted by id.
    pub mutable: Vec<MutableSeen>,
}

impl Availability {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(64 + self.present.serialized_size() + self.mutable.len() * 12);
        put_bytes(&mut body, self.mirror.as_bytes());
        put_bytes(&mut body, self.project.as_bytes());
        put_bytes(&mut body, self.serial.as_bytes());
        put_ivarint(&mut body, self.scanned_at);
        match self.last_sync {
            Some(t) => {
                body.push(1);
                put_ivarint(&mut body, t);
            }
            None => body.push(0),
        }
        for n in [
            self.counts.files,
            self.counts.bytes,
            self.counts.missing,
            self.counts.mismatched,
        ] {
            put_uvarint(&mut body, n);
        }
        let mut bitmap = Vec::with_capacity(self.present.serialized_size());
        // Writing into a Vec cannot fail.
        let _ = self.present.serialize_into(&mut bitmap);
        put_bytes(&mut body, &bitmap);
        put_uvarint(&mut body, self.mutable.len() as u64);
        let mut prev = 0u32;
        for m in &self.mutable {
            put_uvarint(&mut body, u64::from(m.id.wrapping_sub(prev)));
            put_uvarint(&mut body, m.size);
            put_ivarint(&mut body, m.mtime);
            prev = m.id;
        }
        envelope::encode(Kind::Availability, &body)
    }

    /// Decodes from the store.
    pub fn decode(value: &[u8]) -> Result<Availability, DecodeError> {
        let body = envelope::decode(Kind::Availability, value)?;
        let mut c = Cursor::new(body);
        let mirror = c.str("mirror name", 253)?.to_owned();
        let project = c.str("project name", 253)?.to_owned();
        let serial = c.str("serial", 1024)?.to_owned();
        let scanned_at = c.ivarint("scan time")?;
        let last_sync = match c.u8("last sync flag")? {
            0 => None,
            _ => Some(c.ivarint("last sync")?),
        };
        let mut n = [0u64; 4];
        for v in &mut n {
            *v = c.uvarint("scan counts")?;
        }
        let offset = c.offset();
        let bitmap = c.bytes("bitmap", usize::MAX)?;
        let present =
            RoaringBitmap::deserialize_from(bitmap).map_err(|e| DecodeError::Invalid {
                what: "bitmap",
                offset,
                why: e.to_string(),
            })?;
        let count = c.len("mutable entries", MAX_MUTABLE)?;
        let mut mutable = Vec::with_capacity(count);
        let mut prev = 0u64;
        for _ in 0..count {
            let id = prev.checked_add(c.uvarint("mutable file id")?);
            let id32 =
                id.and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| DecodeError::Invalid {
                        what: "mutable file id",
                        offset: c.offset(),
                        why: "too large".into(),
                    })?;
            mutable.push(MutableSeen {
                id: id32,
                size: c.uvarint("mutable size")?,
                mtime: c.ivarint("mutable mtime")?,
            });
            prev = u64::from(id32);
        }
        if !c.is_empty() {
            return Err(DecodeError::Invalid {
                what: "availability",
                offset: c.offset(),
                why: "trailing bytes".into(),
            });
        }
        Ok(Availability {
            mirror,
            project,
            serial,
            scanned_at,
            last_sync,
            counts: ScanCounts {
                files: n[0],
                bytes: n[1],
                missing: n[2],
                mismatched: n[3],
            },
            present,
            mutable,
        })
    }

    /// Whether the mirror holds the mutable file `id` at exactly (`size`, `mtime`).
    pub fn holds_version(&self, id: u32, size: u64, mtime: i64) -> bool {
        self.mutable
            .binary_search_by_key(&id, |m| m.id)
            .is_ok_and(|i| self.mutable[i].size == size && self.mutable[i].mtime == mtime)
    }
}
