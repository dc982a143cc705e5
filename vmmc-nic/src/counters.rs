//! Process-wide transfer counters.
//!
//! The point of the project is to remove copies, so the NIC counts them: a benchmark takes a
//! snapshot before and after a run and divides bytes copied by bytes delivered.

use std::ops::Sub;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One thread's counters. Each thread writes only its own block, so counting costs a plain
/// store to a cache line no other thread writes: the two ends of a connection on two cores
/// would otherwise bounce one shared line on every message.
#[derive(Default)]
#[repr(align(64))]
struct Block {
    deposited: AtomicU64,
    fetched: AtomicU64,
    copied: AtomicU64,
    words: AtomicU64,
    notifications: AtomicU64,
}

/// Every thread's block, so that a snapshot can add them up; blocks outlive their threads so
/// that nothing counted is ever lost.
static BLOCKS: Mutex<Vec<Arc<Block>>> = Mutex::new(Vec::new());
/// Where counts go when a thread's own block is gone (during thread exit).
static SPILL: Block = Block {
    deposited: AtomicU64::new(0),
    fetched: AtomicU64::new(0),
    copied: AtomicU64::new(0),
    words: AtomicU64::new(0),
    notifications: AtomicU64::new(0),
};

thread_local! {
    static MINE: Arc<Block> = {
        let b = Arc::new(Block::default());
        BLOCKS.lock().unwrap_or_else(|p| p.into_inner()).push(b.clone());
        b
    };
}

fn bump(field: fn(&Block) -> &AtomicU64, n: u64) {
    let done = MINE.try_with(|b| {
        // Only this thread writes its block: a load and a store, no locked instruction.
        let a = field(b);
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    });
    if done.is_err() {
        field(&SPILL).fetch_add(n, Ordering::Relaxed);
    }
}

fn total(field: fn(&Block) -> &AtomicU64) -> u64 {
    let blocks = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
    blocks
        .iter()
        .map(|b| field(b).load(Ordering::Relaxed))
        .fold(field(&SPILL).load(Ordering::Relaxed), u64::wrapping_add)
}

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
            bytes_deposited: total(|b| &b.deposited),
            bytes_fetched: total(|b| &b.fetched),
            bytes_copied: total(|b| &b.copied),
            words_stored: total(|b| &b.words),
            notifications: total(|b| &b.notifications),
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
    bump(|b| &b.deposited, n as u64);
}

pub(crate) fn add_fetched(n: usize) {
    bump(|b| &b.fetched, n as u64);
}

pub(crate) fn add_copied(n: usize) {
    bump(|b| &b.copied, n as u64);
}

pub(crate) fn add_word() {
    bump(|b| &b.words, 1);
}

pub(crate) fn add_notification() {
    bump(|b| &b.notifications, 1);
}
