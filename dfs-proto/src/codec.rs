//! The one place where messages become bytes and back: bincode 2 over serde, with a size limit
//! on decoding so that a length prefix from a peer cannot make us allocate without bound.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{FrameHeader, HEADER, MAX_DATA, MAX_META};

/// Why bytes were not a valid message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A length beyond the protocol's limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its claimed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes left over after the message: the peer and we disagree on the format.
    #[error("{0} unexpected bytes after the message")]
    Trailing(usize),
    /// Not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small (or the message beyond [`MAX_META`]).
    #[error("message does not fit: {0}")]
    NoRoom(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_META>()
}

/// Encodes `value` into the start of `out`, returning its length.
pub fn encode_into<T: Serialize>(value: &T, out: &mut [u8]) -> Result<usize, EncodeError> {
    let room = out.len().min(MAX_META);
    bincode::serde::encode_into_slice(value, &mut out[..room], config())
        .map_err(|e| EncodeError::NoRoom(e.to_string()))
}

/// Encodes `value` into a new vector.
pub fn encode_to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let v = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| EncodeError::NoRoom(e.to_string()))?;
    if v.len() > MAX_META {
        return Err(EncodeError::NoRoom(format!(
            "{} bytes exceed the meta limit of {MAX_META}",
            v.len()
        )));
    }
    Ok(v)
}

/// Decodes exactly one `T` from all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_META {
        return Err(DecodeError::TooLarge {
            what: "meta part",
            len: bytes.len(),
            max: MAX_META,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// Writes a frame header and `meta` into `out` and returns where the data part starts; the
/// caller fills `data_len` bytes there (a `pread` into place, say) and then calls
/// [`set_data_len`] if fewer arrived.
pub fn emit_head<T: Serialize>(
    out: &mut [u8],
    meta: &T,
    data_len: usize,
) -> Result<usize, EncodeError> {
    if out.len() < HEADER {
        return Err(EncodeError::NoRoom("no room for a frame header".into()));
    }
    if data_len > MAX_DATA {
        return Err(EncodeError::NoRoom(format!(
            "{data_len} data bytes exceed the limit of {MAX_DATA}"
        )));
    }
    let meta_len = encode_into(meta, &mut out[HEADER..])?;
    let header = FrameHeader {
        meta_len: meta_len as u32,
        data_len: data_len as u32,
    };
    header.emit(out);
    Ok(HEADER + meta_len)
}

/// A whole frame in a new vector: header, `meta`, then a copy of `data`. For the paths that
/// copy anyway (the copying socket calls, small control messages); the data path writes its
/// frames in place with [`emit_head`].
pub fn frame_to_vec<T: Serialize>(meta: &T, data: &[u8]) -> Result<Vec<u8>, EncodeError> {
    if data.len() > MAX_DATA {
        return Err(EncodeError::NoRoom(format!(
            "{} data bytes exceed the limit of {MAX_DATA}",
            data.len()
        )));
    }
    let m = encode_to_vec(meta)?;
    let mut out = vec![0u8; HEADER];
    FrameHeader {
        meta_len: m.len() as u32,
        data_len: data.len() as u32,
    }
    .emit(&mut out);
    out.extend_from_slice(&m);
    out.extend_from_slice(data);
    Ok(out)
}

/// Rewrites the data length of a frame whose head [`emit_head`] wrote at the start of `out`.
pub fn set_data_len(out: &mut [u8], data_len: usize) {
    let len = data_len.min(MAX_DATA) as u32;
    out[4..HEADER].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameHeader, MAX_FRAME};

    #[test]
    fn lengths_beyond_the_limits_are_refused_before_anything_is_allocated() {
        let mut h = [0u8; HEADER];
        FrameHeader {
            meta_len: MAX_META as u32 + 1,
            data_len: 0,
        }
        .emit(&mut h);
        assert!(matches!(
            Frame::parse(&h),
            Err(DecodeError::TooLarge { .. })
        ));
        FrameHeader {
            meta_len: 1,
            data_len: MAX_DATA as u32 + 1,
        }
        .emit(&mut h);
        assert!(matches!(
            Frame::parse(&h),
            Err(DecodeError::TooLarge { .. })
        ));
        FrameHeader {
            meta_len: MAX_META as u32,
            data_len: MAX_DATA as u32,
        }
        .emit(&mut h);
        assert_eq!(crate::frame::needed(&h), Ok(MAX_FRAME));
        assert_eq!(crate::frame::needed(&h[..3]), Ok(HEADER));
        // A vector that claims 2^40 elements in a few bytes.
        let mut lie = Vec::new();
        lie.push(253u8);
        lie.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<Vec<u8>>(&lie).is_err());
        // Trailing bytes are a disagreement, not padding.
        let mut two = encode_to_vec(&7u32).unwrap();
        two.push(0);
        assert_eq!(decode::<u32>(&two), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn a_head_leaves_room_for_the_data_behind_it() {
        let mut buf = vec![0u8; 64];
        let start = emit_head(&mut buf, &(1u8, 2u16), 10).unwrap();
        buf[start..start + 3].copy_from_slice(b"abc");
        set_data_len(&mut buf, 3);
        let f = Frame::parse(&buf).unwrap().unwrap();
        assert_eq!(f.data, b"abc");
        assert_eq!(decode::<(u8, u16)>(f.meta).unwrap(), (1, 2));
        assert!(emit_head(&mut buf[..4], &1u8, 0).is_err());
        assert!(emit_head(&mut buf, &1u8, MAX_DATA + 1).is_err());
    }
}
