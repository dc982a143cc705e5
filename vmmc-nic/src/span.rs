//! Checked ranges inside a region.
//!
//! Every offset and length that reaches a region, from the local caller or from a peer, is
//! turned into a [`Span`] first; the copy routines accept nothing else.

use crate::error::{Error, Result};

/// Largest region the crate creates or accepts: 1 TiB.
pub const MAX_REGION_LEN: u64 = 1 << 40;

/// A range `offset..offset + len` known to lie inside a region of `region_len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    offset: usize,
    len: usize,
}

impl Span {
    /// Checks the range against the region size without overflow.
    pub(crate) fn new(region_len: u64, offset: u64, len: u64) -> Result<Span> {
        let out = || Error::OutOfRange {
            offset,
            len,
            region_len,
        };
        let end = offset.checked_add(len).ok_or_else(out)?;
        if end > region_len {
            return Err(out());
        }
        Ok(Span {
            offset: usize::try_from(offset).map_err(|_| out())?,
            len: usize::try_from(len).map_err(|_| out())?,
        })
    }

    /// An 8-byte aligned control word.
    pub(crate) fn word(region_len: u64, offset: u64) -> Result<Span> {
        if offset % 8 != 0 {
            return Err(Error::Misaligned(offset));
        }
        Span::new(region_len, offset, 8)
    }

    pub(crate) fn offset(self) -> usize {
        self.offset
    }

    pub(crate) fn len(self) -> usize {
        self.len
    }

    pub(crate) fn end(self) -> usize {
        self.offset + self.len
    }
}

/// Checks a region size requested by a caller or announced by a peer.
pub(crate) fn check_region_len(len: u64) -> Result<usize> {
    if len == 0 || len > MAX_REGION_LEN {
        return Err(Error::BadSize(len));
    }
    usize::try_from(len).map_err(|_| Error::BadSize(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_stay_inside() {
        assert!(Span::new(10, 0, 10).is_ok());
        assert!(Span::new(10, 10, 0).is_ok());
        assert!(Span::new(10, 5, 6).is_err());
        assert!(Span::new(10, 11, 0).is_err());
        assert!(Span::new(10, u64::MAX, 2).is_err());
        assert!(Span::new(u64::MAX, u64::MAX - 1, 1).is_ok());
        let s = Span::new(100, 40, 8).unwrap();
        assert_eq!((s.offset(), s.len(), s.end()), (40, 8, 48));
    }

    #[test]
    fn words_are_aligned() {
        assert!(Span::word(16, 8).is_ok());
        assert!(matches!(Span::word(16, 4), Err(Error::Misaligned(4))));
        assert!(Span::word(16, 16).is_err());
    }

    #[test]
    fn region_sizes_are_bounded() {
        assert!(check_region_len(0).is_err());
        assert!(check_region_len(1).is_ok());
        assert!(check_region_len(MAX_REGION_LEN).is_ok());
        assert!(check_region_len(MAX_REGION_LEN + 1).is_err());
    }
}
