//! A lock in memory that several processes share, which a holder that died does not keep.
//!
//! The word holds the holder's id (a thread id, unique system-wide while the thread lives)
//! or 0. A waiter spins briefly, then yields, then sleeps in growing steps (these machines
//! have two cores: a waiter must not starve the holder), and every few milliseconds asks
//! whether the holder still lives; a dead holder's lock is taken over. Critical sections are
//! short (a table update) or one server round trip (an offset update around a read), so the
//! waits are short too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a waiter asks whether the holder lives.
const LIVENESS_EVERY: Duration = Duration::from_millis(20);

/// A lock word in shared memory.
#[derive(Debug, Clone, Copy)]
pub struct SharedLock<'a> {
    word: &'a AtomicU64,
}

/// A held lock; dropping it unlocks.
#[derive(Debug)]
pub struct Held<'a> {
    word: &'a AtomicU64,
    me: u64,
}

impl<'a> SharedLock<'a> {
    /// The lock in `word`.
    pub fn new(word: &'a AtomicU64) -> SharedLock<'a> {
        SharedLock { word }
    }

    /// Takes the lock as `me` (non-zero, unique to the calling thread), taking it over from
    /// a holder that `alive` says is gone.
    pub fn lock(&self, me: u64, alive: impl Fn(u64) -> bool) -> Held<'a> {
        let me = me.max(1);
        let mut tries = 0u32;
        let mut nap = Duration::from_micros(20);
        let mut next_check = Instant::now() + LIVENESS_EVERY;
        loop {
            match self
                .word
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Held {
                        word: self.word,
                        me,
                    }
                }
                Err(0) => continue,
                Err(holder) => {
                    tries += 1;
                    if tries < 64 {
                        std::hint::spin_loop();
                        continue;
                    }
                    if tries < 256 {
                        std::thread::yield_now();
                        continue;
                    }
                    if Instant::now() >= next_check {
                        next_check = Instant::now() + LIVENESS_EVERY;
                        if holder == me || !alive(holder) {
                            // Its holder is gone (or it is ours from before a fork, whose
                            // holder thread is not in this process): take it over.
                            if self
                                .word
                                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                                .is_ok()
                            {
                                return Held {
                                    word: self.word,
                                    me,
                                };
                            }
                        }
                    }
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(1));
                }
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Only if still ours: a holder that was taken for dead must not free the new owner's.
        let _ = self
            .word
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn excludes_and_takes_over_from_the_dead() {
        let word = Arc::new(AtomicU64::new(0));
        let count = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (1..=4u64)
            .map(|id| {
                let (word, count) = (word.clone(), count.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _h = SharedLock::new(&word).lock(id, |_| true);
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(n, 0, "two holders at once");
                        count.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A holder that died: taken over within the liveness period.
        word.store(77, Ordering::SeqCst);
        let t = Instant::now();
        let h = SharedLock::new(&word).lock(5, |id| id != 77);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(word.load(Ordering::SeqCst), 5);
        drop(h);
        assert_eq!(word.load(Ordering::SeqCst), 0);
    }
}
