//! Tunables of a connection, with the defaults a user would expect.

use std::time::Duration;

use crate::layout::RingSize;

/// How a connection is set up and how it waits.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Size of this side's receive ring (what `SO_RCVBUF` sets).
    pub ring: RingSize,
    /// How long a blocked call spins before it sleeps on the notification fd. Spinning keeps
    /// round trips in the microseconds; on a 2-core machine, an unbounded spin would starve
    /// the very peer it waits for.
    pub spin: Duration,
    /// How long `connect` waits for the listener to accept.
    pub connect_timeout: Duration,
    /// The largest ring a peer may announce. On tcp a sender keeps a buffer as large as its
    /// peer's ring, so without a bound a peer chooses how much memory its connection costs.
    pub max_peer_ring: RingSize,
    /// A listener's connections alive at once (admitted, accepted, not yet dropped). At the
    /// limit it admits no more: requests wait their turn until a connection ends or their
    /// `connect_timeout` passes.
    pub max_connections: usize,
    /// A listener's connections from one peer (one local user, root excepted, or one remote
    /// address). Beyond it a request is refused at once, so one user's idle connections
    /// cannot crowd out the others.
    pub max_connections_per_peer: usize,
}

/// The largest ring a peer may announce unless set: room for the biggest rings anyone here
/// configures, and a bound on what an attacker's connection can cost.
pub const DEFAULT_MAX_PEER_RING: u64 = 64 << 20;

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            ring: RingSize::default(),
            spin: Duration::from_micros(50),
            connect_timeout: Duration::from_secs(10),
            max_peer_ring: RingSize::at_least(DEFAULT_MAX_PEER_RING),
            max_connections: 1024,
            max_connections_per_peer: 256,
        }
    }
}
