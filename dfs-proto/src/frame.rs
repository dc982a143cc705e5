//! Framing: an 8-byte header (meta length, data length, little endian), the meta part, then
//! the data part. The limits bound what a peer can make the other side wait for or parse.

use crate::codec::DecodeError;

/// Bytes in a frame header.
pub const HEADER: usize = 8;
/// Largest meta part: a directory page or an xattr value fits; anything larger is a lie.
pub const MAX_META: usize = 256 * 1024;
/// Largest data part: one read or write block (the kernel's FUSE limit is 1 MiB too).
pub const MAX_DATA: usize = 1 << 20;
/// Largest frame. A connection's rings must hold at least this much, so that a whole frame
/// can be written and parsed in place.
pub const MAX_FRAME: usize = HEADER + MAX_META + MAX_DATA;

/// A frame header, checked against the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the bincode-encoded meta part.
    pub meta_len: u32,
    /// Length of the raw data part that follows it.
    pub data_len: u32,
}

impl FrameHeader {
    /// Reads a header from the first [`HEADER`] bytes; `None` if fewer have arrived.
    pub fn parse(bytes: &[u8]) -> Result<Option<FrameHeader>, DecodeError> {
        let Some(head) = bytes.get(..HEADER) else {
            return Ok(None);
        };
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let h = FrameHeader {
            meta_len: word(0),
            data_len: word(4),
        };
        if h.meta_len as usize > MAX_META {
            return Err(DecodeError::TooLarge {
                what: "meta part",
                len: h.meta_len as usize,
                max: MAX_META,
            });
        }
        if h.data_len as usize > MAX_DATA {
            return Err(DecodeError::TooLarge {
                what: "data part",
                len: h.data_len as usize,
                max: MAX_DATA,
            });
        }
        Ok(Some(h))
    }

    /// Writes the header into the first [`HEADER`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.meta_len.to_le_bytes());
        out[4..HEADER].copy_from_slice(&self.data_len.to_le_bytes());
    }

    /// Bytes in the whole frame.
    pub fn total(&self) -> usize {
        HEADER + self.meta_len as usize + self.data_len as usize
    }
}

/// How many bytes from the start of `bytes` make a whole frame: [`HEADER`] while the header
/// is incomplete, then the frame's total. A reader waits until that many have arrived.
pub fn needed(bytes: &[u8]) -> Result<usize, DecodeError> {
    Ok(FrameHeader::parse(bytes)?.map_or(HEADER, |h| h.total()))
}

/// A whole frame, borrowed from the buffer (a ring slice) it arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The checked header.
    pub header: FrameHeader,
    /// The encoded meta part.
    pub meta: &'a [u8],
    /// The raw data part.
    pub data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame at the start of `bytes`; `None` until all of it has arrived.
    pub fn parse(bytes: &'a [u8]) -> Result<Option<Frame<'a>>, DecodeError> {
        let Some(header) = FrameHeader::parse(bytes)? else {
            return Ok(None);
        };
        let Some(body) = bytes.get(HEADER..header.total()) else {
            return Ok(None);
        };
        let (meta, data) = body.split_at(header.meta_len as usize);
        Ok(Some(Frame { header, meta, data }))
    }

    /// Bytes this frame occupies, to consume after use.
    pub fn len(&self) -> usize {
        self.header.total()
    }

    /// Whether the frame is empty (never: a header is always there).
    pub fn is_empty(&self) -> bool {
        false
    }
}
