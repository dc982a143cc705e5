//! Process-wide transfer counters.
//!
//! The point of the project is to remove copies, so the NIC counts them: a benchmark takes a
//! snapshot before and after a run and divides bytes copied by bytes delivered.

use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};

static DEPOSITED: AtomicU64 = AtomicU64::new(0);
static FETCHED: AtomicU64 = AtomicU64::new(0);
static COPIED: AtomicU64 = AtomicU64::new(0);
static WORDS: AtomicU64 = AtomicU64::new(0);
static NOTIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// A snapshot of this process's counters. Subtract two snapshots to measure an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payload bytes this process deposited into imported regions.
    pub bytes_deposited: u64,
    /// Payload bytes this process fetched from imported regions.
    pub bytes_fetched: u64,
    /// Bytes copied by this process's CPU inside the NIC: the emulated DMA of the shm backend
    /// and local reads and writes of an export. Kernel copies (tcp backend) are not counted.
    pub bytes_copied: u64,
    /// 8-byte control words stored into imported regions.
    pub words_stored: u64,
    /// Notifications this process raised.
    pub notifications: u64,
}

impl Counters {
    /// The current values.
    pub fn now() -> Counters {
        Counters {
            bytes_deposited: DEPOSITED.load(Ordering::Relaxed),
            bytes_fetched: FETCHED.load(Ordering::Relaxed),
            bytes_copied: COPIED.load(Ordering::Relaxed),
            words_stored: WORDS.load(Ordering::Relaxed),
            notifications: NOTIFICATIONS.load(Ordering::Relaxed),
        }
    }

    /// Software copies per delivered (deposited or fetched) byte.
    pub fn copies_per_byte(&self) -> f64 {
        let delivered = self.bytes_deposited + self.bytes_fetched;
        if delivered == 0 {
            0.0
        } else {
            self.bytes_copied as f64 / delivered as f64
        }
    }
}

impl Sub for Counters {
    type Output = Counters;

    fn sub(self, earlier: Counters) -> Counters {
        Counters {
            bytes_deposited: self.bytes_deposited.wrapping_sub(earlier.bytes_deposited),
            bytes_fetched: self.bytes_fetched.wrapping_sub(earlier.bytes_fetched),
            bytes_copied: self.bytes_copied.wrapping_sub(earlier.bytes_copied),
            words_stored: self.words_stored.wrapping_sub(earlier.words_stored),
            notifications: self.notifications.wrapping_sub(earlier.notifications),
        }
    }
}

pub(crate) fn add_deposited(n: usize) {
    DEPOSITED.fetch_add(n as u64, Ordering::Relaxed);
}

pub(crate) fn add_fetched(n: usize) {
    FETCHED.fetch_add(n as u64, Ordering::Relaxed);
}

pub(crate) fn add_copied(n: usize) {
    COPIED.fetch_add(n as u64, Ordering::Relaxed);
}

pub(crate) fn add_word() {
    WORDS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add_notification() {
    NOTIFICATIONS.fetch_add(1, Ordering::Relaxed);
}
