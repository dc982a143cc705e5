//! How long a blocking receive looks at its ring before the stream's own wait, learnt per
//! socket.
//!
//! Looking without giving up the core wins when the peer runs on another core: a reply in a
//! ping-pong arrives within a microsecond, and the `sched_yield` of the stream's own spin
//! costs more than that. It loses badly when the peer shares this core (a busy 2-vCPU
//! machine puts them together): the peer cannot run until the look gives up, so every half
//! round trip costs the whole budget. So the budget adapts, as adaptive mutexes do: data
//! that arrived while looking doubles it, a look that came up empty halves it. At the floor
//! the receive sleeps on the socket's notification at once, skipping the stream's own spin
//! too; the short look it still makes is how it notices the peer has moved away.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vmmc_sockets::table::Sock;

use crate::fdmap::MAX_FDS;

/// The most a receive looks before the stream's wait, in nanoseconds.
pub const MAX_NS: u32 = 20_000;
/// The least: below this a look is not worth its clock reads.
pub const MIN_NS: u32 = 250;

/// Per table socket; 0 means not yet learnt (start at the most).
static BUDGET: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];

fn slot(s: Sock) -> Option<&'static AtomicU32> {
    usize::try_from(s).ok().and_then(|i| BUDGET.get(i))
}

/// How long the next blocking receive on `s` looks before waiting.
pub fn budget(s: Sock) -> Duration {
    let ns = slot(s).map_or(0, |b| b.load(Ordering::Relaxed));
    Duration::from_nanos(u64::from(if ns == 0 { MAX_NS } else { ns }))
}

/// Whether looks on `s` keep coming up empty: its peer most likely shares this core, so a
/// receive should sleep at once rather than spin at all.
pub fn at_floor(s: Sock) -> bool {
    slot(s).is_some_and(|b| b.load(Ordering::Relaxed) == MIN_NS)
}

/// Learns from one receive: whether its data came while it looked.
pub fn learn(s: Sock, hit: bool) {
    let Some(b) = slot(s) else { return };
    let now = match b.load(Ordering::Relaxed) {
        0 => MAX_NS,
        n => n,
    };
    let next = if hit {
        now.saturating_mul(2).min(MAX_NS)
    } else {
        (now / 2).max(MIN_NS)
    };
    if next != now {
        b.store(next, Ordering::Relaxed);
    }
}

/// Starts a new socket from scratch (table indices are reused).
pub fn reset(s: Sock) {
    if let Some(b) = slot(s) {
        b.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_shrink_the_budget_and_hits_grow_it_back() {
        let s = 7;
        reset(s);
        assert_eq!(budget(s), Duration::from_nanos(u64::from(MAX_NS)));
        for _ in 0..20 {
            learn(s, false);
        }
        assert_eq!(budget(s), Duration::from_nanos(u64::from(MIN_NS)));
        assert!(at_floor(s));
        learn(s, true);
        assert!(!at_floor(s));
        assert_eq!(budget(s), Duration::from_nanos(u64::from(2 * MIN_NS)));
        for _ in 0..20 {
            learn(s, true);
        }
        assert_eq!(budget(s), Duration::from_nanos(u64::from(MAX_NS)));
    }
}
