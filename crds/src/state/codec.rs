//! Byte-level helpers for the binary encodings: LEB128 varints and a bounds-checked reader.
//! Every read names what it was reading when the input ends early, so a truncated value in the
//! store gives a clear error instead of a panic.

use super::DecodeError;

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zig-zag encoded.
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a byte slice.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn short(&self, what: &'static str) -> DecodeError {
        DecodeError::Truncated {
            what,
            offset: self.pos,
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.short(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid {
            what,
            offset: self.pos,
            why: "varint longer than 10 bytes".into(),
        })
    }

    pub(crate) fn ivarint(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let u = self.uvarint(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A varint that must fit in `usize` and be at most `max`.
    pub(crate) fn len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let v = self.uvarint(what)?;
        usize::try_from(v)
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| DecodeError::Invalid {
                what,
                offset,
                why: format!("length {v} exceeds {max}"),
            })
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.short(what))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn bytes(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what, max)?;
        self.take(n, what)
    }

    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let offset = self.pos;
        let b = self.bytes(what, max)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::Invalid {
            what,
            offset,
            why: "not UTF-8".into(),
        })
    }

    pub(crate) fn offset(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_truncation_is_named() {
        let mut out = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_uvarint(&mut out, v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            put_ivarint(&mut out, v);
        }
        let mut c = Cursor::new(&out);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(c.uvarint("u").unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(c.ivarint("i").unwrap(), v);
        }
        assert!(c.is_empty());
        let err = Cursor::new(&[0x80]).uvarint("file size").unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated while reading file size at byte 1"
        );
        let err = Cursor::new(&[5, b'a']).str("path", 100).unwrap_err();
        assert_eq!(err.to_string(), "truncated while reading path at byte 1");
        let err = Cursor::new(&[200, 1]).len("path", 100).unwrap_err();
        assert!(err.to_string().contains("length 200 exceeds 100"));
    }
}
