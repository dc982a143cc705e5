//! Where things live in a connection's region.
//!
//! Each side of a connection exports one region: a header page of control words, then its
//! receive ring, whose tail is mirrored so any span of the ring is one slice. Every word in
//! the header is written by the *peer* (deposited), and read here; a word is written by
//! exactly one side, so no two processes ever race on one word.

use std::io;

/// The header page in front of the ring.
pub(crate) const HEADER: u64 = 4096;

/// Bytes the peer has written into my ring, in total (its send index).
pub(crate) const PEER_WRITE: u64 = 0;
/// Zero, or 1 + the peer's final send index once it has shut down sending.
pub(crate) const PEER_FIN: u64 = 8;
/// Bytes of what I sent that the peer has consumed, in total (its receive index): my credit.
pub(crate) const PEER_CREDIT: u64 = 16;
/// Nonzero once the peer has shut down receiving: my further sends are refused.
pub(crate) const PEER_RDSHUT: u64 = 24;
/// Nonzero while the peer is about to sleep waiting for me: notify it after publishing
/// ([`WAIT_ANY`], or [`WAIT_DATA`] when a credit is not worth waking it for).
pub(crate) const PEER_WAITING: u64 = 32;
/// In [`PEER_WAITING`]: wake me after any publish (what a side waiting for room says, and
/// what every side said before [`WAIT_DATA`] existed).
pub(crate) const WAIT_ANY: u64 = 1;
/// In [`PEER_WAITING`]: I wait only for data (or the end of the stream): a credit alone
/// would wake me for nothing. A reader waiting for a reply would otherwise be woken once
/// more per request, when the peer consumes the request.
pub(crate) const WAIT_DATA: u64 = 2;
/// Zero, or 1 + the send index just past the peer's most recent urgent byte.
pub(crate) const PEER_URGENT: u64 = 40;
/// Set by the listener in a connecting client's header: [`ACCEPTED`] or [`REFUSED_LIMIT`],
/// stored last, after the words below.
pub(crate) const ACCEPT_STATE: u64 = 64;
/// The listener's receive-ring export id, for the client to import.
pub(crate) const ACCEPT_EXPORT: u64 = 72;
/// The listener's receive-ring size.
pub(crate) const ACCEPT_RING: u64 = 80;
/// Four words: the key the listener's ring export requires of the client's import. Only the
/// listener may write this header and only the client may read it, so only the client
/// learns the key.
pub(crate) const ACCEPT_KEY: u64 = 88;
/// [`ACCEPT_STATE`]: accepted; the words above are valid.
pub(crate) const ACCEPTED: u64 = 1;
/// [`ACCEPT_STATE`]: refused, the client's user or host already has as many connections as
/// the listener allows it.
pub(crate) const REFUSED_LIMIT: u64 = 2;

/// Smallest ring: one page.
pub const MIN_RING: u64 = 4096;
/// Largest ring: 1 GiB.
pub const MAX_RING: u64 = 1 << 30;
/// The ring each side gets unless `SO_RCVBUF` says otherwise: room for a 1 MiB message while
/// the previous one drains.
pub const DEFAULT_RING: u64 = 4 << 20;

/// A ring size: a power of two from [`MIN_RING`] to [`MAX_RING`]. Sizes come from users
/// (`SO_RCVBUF`) and from peers (the connect handshake), and are checked once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize(u64);

impl RingSize {
    /// Checks an exact size.
    pub fn new(bytes: u64) -> Option<RingSize> {
        (bytes.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&bytes))
            .then_some(RingSize(bytes))
    }

    /// The smallest valid size holding at least `bytes`, clamped to the bounds: what a
    /// `SO_RCVBUF` request becomes.
    pub fn at_least(bytes: u64) -> RingSize {
        let b = bytes.clamp(MIN_RING, MAX_RING);
        RingSize(
            b.checked_next_power_of_two()
                .unwrap_or(MAX_RING)
                .min(MAX_RING),
        )
    }

    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The size of a ring this process exports itself: Windows maps a mirror only in whole
    /// units of its allocation granularity (64 KiB), so smaller rings grow to that there.
    /// Peers' rings keep whatever size they announce.
    pub(crate) fn local(self) -> RingSize {
        #[cfg(windows)]
        let least = 64 << 10;
        #[cfg(not(windows))]
        let least = MIN_RING;
        RingSize(self.0.max(least))
    }

    /// The region a ring of this size needs: header, then ring (mirrored).
    pub(crate) fn region_len(self) -> u64 {
        HEADER + self.0
    }
}

impl Default for RingSize {
    fn default() -> RingSize {
        RingSize(DEFAULT_RING)
    }
}

/// An io::Error for a peer that broke the ring protocol; the connection is unusable after it.
pub(crate) fn violation(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("peer broke the ring protocol: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_checked() {
        assert_eq!(RingSize::new(4096).map(RingSize::get), Some(4096));
        assert!(RingSize::new(4095).is_none());
        assert!(RingSize::new(6144).is_none());
        assert!(RingSize::new(MAX_RING * 2).is_none());
        assert!(RingSize::new(0).is_none());
        assert_eq!(RingSize::at_least(1).get(), MIN_RING);
        assert_eq!(RingSize::at_least(5000).get(), 8192);
        assert_eq!(RingSize::at_least(u64::MAX).get(), MAX_RING);
        assert_eq!(RingSize::default().region_len(), HEADER + DEFAULT_RING);
    }
}
