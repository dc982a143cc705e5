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

/// What has arrived of a frame in memory the sender may still write (a ring).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Wait until this many bytes have arrived, then look again.
    Need(usize),
    /// The whole frame is there: its header and meta part, copied out.
    Whole {
        /// The checked header: the frame occupies `header.total()` bytes, and its data part
        /// follows the meta part.
        header: FrameHeader,
        /// The encoded meta part.
        meta: Vec<u8>,
    },
}

/// Looks at the frame at the start of `available` bytes that the sender may still change
/// (`copy_at(offset, dst)` copies bytes from `offset` into `dst` and returns how many). The
/// header and the meta part are copied out exactly once and everything after is decided on
/// the copies: a sender that rewrites the lengths after they were checked changes nothing
/// the receiver acts on. The data part stays where it is, for the caller to move with one
/// copy of its own (or none).
pub fn arrival(
    available: usize,
    copy_at: impl Fn(usize, &mut [u8]) -> usize,
) -> Result<Arrival, DecodeError> {
    let mut head = [0u8; HEADER];
    let got = copy_at(0, &mut head[..available.min(HEADER)]);
    let Some(header) = FrameHeader::parse(&head[..got])? else {
        return Ok(Arrival::Need(HEADER));
    };
    if available < header.total() {
        return Ok(Arrival::Need(header.total()));
    }
    let mut meta = vec![0u8; header.meta_len as usize];
    if copy_at(HEADER, &mut meta) != meta.len() {
        return Ok(Arrival::Need(header.total()));
    }
    Ok(Arrival::Whole { header, meta })
}

/// A whole frame, borrowed from a buffer of this process's own (for memory another process
/// may write, see [`arrival`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn frame(meta: &[u8], data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADER];
        FrameHeader {
            meta_len: meta.len() as u32,
            data_len: data.len() as u32,
        }
        .emit(&mut f);
        f.extend_from_slice(meta);
        f.extend_from_slice(data);
        f
    }

    fn copier(bytes: &[u8]) -> impl Fn(usize, &mut [u8]) -> usize + '_ {
        move |at, dst| {
            let src = bytes.get(at..).unwrap_or(&[]);
            let n = src.len().min(dst.len());
            dst[..n].copy_from_slice(&src[..n]);
            n
        }
    }

    #[test]
    fn frames_arrive_in_pieces() {
        let f = frame(b"meta", b"data!");
        for cut in 0..HEADER {
            assert_eq!(arrival(cut, copier(&f)), Ok(Arrival::Need(HEADER)));
        }
        for cut in HEADER..f.len() {
            assert_eq!(arrival(cut, copier(&f)), Ok(Arrival::Need(f.len())));
        }
        assert_eq!(
            arrival(f.len(), copier(&f)),
            Ok(Arrival::Whole {
                header: FrameHeader {
                    meta_len: 4,
                    data_len: 5
                },
                meta: b"meta".to_vec()
            })
        );
        let mut huge = vec![0u8; HEADER];
        FrameHeader {
            meta_len: MAX_META as u32 + 1,
            data_len: 0,
        }
        .emit(&mut huge);
        assert!(arrival(HEADER, copier(&huge)).is_err());
    }

    #[test]
    fn lengths_rewritten_after_the_look_change_nothing() {
        // The sender announces 4 bytes of meta, then, once the header has been copied,
        // claims far more: the meta copied is the 4 bytes the first header said.
        let honest = frame(b"meta", b"");
        let mut liar = honest.clone();
        FrameHeader {
            meta_len: MAX_META as u32,
            data_len: MAX_DATA as u32,
        }
        .emit(&mut liar);
        let calls = Cell::new(0);
        let lying = |at: usize, dst: &mut [u8]| {
            calls.set(calls.get() + 1);
            let now = if calls.get() == 1 { &honest } else { &liar };
            copier(now)(at, dst)
        };
        match arrival(honest.len(), lying).unwrap() {
            Arrival::Whole { header, meta } => {
                assert_eq!(header.meta_len, 4);
                assert_eq!(meta, b"meta");
            }
            other => panic!("{other:?}"),
        }
        // Bytes that stop short of what the header promised are not a whole frame.
        let short = |at: usize, dst: &mut [u8]| if at == 0 { copier(&honest)(at, dst) } else { 0 };
        assert_eq!(
            arrival(honest.len(), short),
            Ok(Arrival::Need(honest.len()))
        );
    }
}
