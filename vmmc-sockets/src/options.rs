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
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            ring: RingSize::default(),
            spin: Duration::from_micros(50),
            connect_timeout: Duration::from_secs(10),
        }
    }
}
