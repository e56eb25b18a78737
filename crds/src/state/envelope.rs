//! The envelope around every stored value: `MFST` magic, schema version, kind, body length and
//! CRC-32 of the body (16 bytes), then the body. It makes foreign, truncated, corrupt or
//! misplaced values recognisable.

use super::{DecodeError, SCHEMA_VERSION};

const MAGIC: &[u8; 4] = b"MFST";
/// Size of the envelope header.
pub const HEADER: usize = 16;

/// What a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// [`super::FleetState`], JSON.
    Fleet = 1,
    /// [`super::IndexMeta`], JSON.
    IndexMeta = 2,
    /// [`super::IndexChunk`], binary.
    IndexChunk = 3,
    /// [`super::Availability`], binary.
    Availability = 4,
    /// [`super::MirrorHealth`], JSON.
    Health = 5,
}

/// Wraps `body` in an envelope of `kind`.
pub fn encode(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks the envelope of `value` and returns its body.
pub fn decode(kind: Kind, value: &[u8]) -> Result<&[u8], DecodeError> {
    if value.is_empty() {
        return Err(DecodeError::Empty);
    }
    if value.len() < 4 || &value[..4] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    if value.len() < HEADER {
        return Err(DecodeError::Truncated {
            what: "envelope header",
            offset: value.len(),
        });
    }
    let version = u16::from_le_bytes([value[4], value[5]]);
    if version != SCHEMA_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    if value[6] != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind,
            found: value[6],
        });
    }
    let len = u32::from_le_bytes([value[8], value[9], value[10], value[11]]) as usize;
    let crc = u32::from_le_bytes([value[12], value[13], value[14], value[15]]);
    let body = &value[HEADER..];
    if body.len() < len {
        return Err(DecodeError::Truncated {
            what: "body",
            offset: value.len(),
        });
    }
    if body.len() > len {
        return Err(DecodeError::Invalid {
            what: "body",
            offset: HEADER + len,
            why: "trailing bytes".into(),
        });
    }
    if crc32fast::hash(body) != crc {
        return Err(DecodeError::Checksum);
    }
    Ok(body)
}

/// Encodes a JSON body in an envelope.
pub fn encode_json<T: serde::Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    // Serialising plain data structs with string keys cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    encode(kind, &body)
}

/// Decodes a JSON body from an envelope.
pub fn decode_json<T: serde::de::DeserializeOwned>(
    kind: Kind,
    value: &[u8],
) -> Result<T, DecodeError> {
    let body = decode(kind, value)?;
    serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))
}
