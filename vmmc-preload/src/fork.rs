//! Who owns a VMMC socket after `fork`.
//!
//! A kernel socket is shared by both processes after a fork. A VMMC connection cannot be:
//! its ring positions live in each process's copy of the memory, so two users would tread
//! on each other's bytes. So the first process to *use* a socket after the fork takes it,
//! and the other loses it (its calls fail with `ENOTCONN`; closing it says nothing to the
//! peer). That covers the patterns programs have: a forking server whose parent closes the
//! accepted socket and whose child serves it (socat's `fork`), a daemon whose parent exits,
//! and a parent that forks a helper and keeps its sockets.
//!
//! The decision lives in a word of memory shared by the processes (an anonymous shared
//! mapping made before the fork): the owner's pid, or 0 while the socket is up for grabs.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::ffi::real;

/// The ownership state of one socket, as this process sees it.
#[derive(Debug)]
pub struct Claim {
    word: Option<&'static AtomicI32>,
    state: State,
    /// The process that made the socket, whose threads (a listener's admitters) it has.
    creator: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Owned,
    /// Forked since the last use: the first user takes it.
    Open,
    /// Another process took it.
    Lost,
}

/// Sockets in the `Open` state in this process: while there are none, calls skip the check.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// This process's pid, as of its last fork.
static MY_PID: AtomicI32 = AtomicI32::new(0);

fn my_pid() -> i32 {
    match MY_PID.load(Ordering::Relaxed) {
        0 => {
            let p = std::process::id() as i32;
            MY_PID.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// Words handed out from one shared page at a time; a page made before a fork is left
/// behind by both processes, so neither hands out a word the other might.
static POOL: Mutex<(Option<&'static [AtomicI32]>, usize)> = Mutex::new((None, 0));
const WORDS_PER_PAGE: usize = 1024;

fn new_word() -> Option<&'static AtomicI32> {
    let mut p = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if p.0.is_none_or(|w| p.1 >= w.len()) {
        *p = (real::shared_words(WORDS_PER_PAGE), 0);
    }
    let w = p.0?.get(p.1)?;
    p.1 += 1;
    Some(w)
}

impl Claim {
    /// A socket this process owns. Without shared memory (mmap failed) the socket still works
    /// but is never shared: after a fork both processes believe they own it.
    pub fn new() -> Claim {
        let word = new_word();
        if let Some(w) = word {
            w.store(my_pid(), Ordering::Release);
        }
        Claim {
            word,
            state: State::Owned,
            creator: my_pid(),
        }
    }

    /// Whether this process may use the socket; takes it if it is up for grabs.
    pub fn take(&mut self) -> bool {
        if self.state == State::Open {
            let me = my_pid();
            let won = self.word.is_none_or(|w| {
                match w.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => true,
                    Err(owner) => owner == me,
                }
            });
            self.state = if won { State::Owned } else { State::Lost };
            OPEN.fetch_sub(1, Ordering::Relaxed);
        }
        self.state == State::Owned
    }

    /// Whether closing should tell the peer: only an owner that has used the socket since
    /// the last fork does. The others leave the connection to whoever takes it.
    pub fn owned(&self) -> bool {
        self.state == State::Owned
    }

    /// Whether this process made the socket (rather than inheriting it through `fork`).
    pub fn made_here(&self) -> bool {
        self.creator == my_pid()
    }

    /// Puts the socket up for grabs before a fork.
    fn open(&mut self) {
        if self.state == State::Owned {
            if let Some(w) = self.word {
                w.store(0, Ordering::Release);
            }
            self.state = State::Open;
            OPEN.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets this socket's claim (it is closed).
    pub fn release(&mut self) {
        if self.state == State::Open {
            OPEN.fetch_sub(1, Ordering::Relaxed);
        }
        self.state = State::Lost;
    }
}

impl Default for Claim {
    fn default() -> Claim {
        Claim::new()
    }
}

/// Whether any socket may need taking (one relaxed load on every call).
#[inline]
pub fn any_open() -> bool {
    OPEN.load(Ordering::Relaxed) != 0
}

/// Forks, leaving every socket this process owns up for grabs in both processes.
pub fn fork() -> std::io::Result<libc::pid_t> {
    let mut metas = crate::fdmap::metas();
    for m in metas.map().values_mut() {
        m.claim.open();
    }
    // Neither process hands out words from a page the other can see any more.
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let pid = real::fork();
    *pool = (None, 0);
    drop(pool);
    match pid {
        Ok(0) => MY_PID.store(std::process::id() as i32, Ordering::Relaxed),
        Ok(_) => {}
        Err(_) => {
            // No child: everything is still this process's.
            for m in metas.map().values_mut() {
                m.claim.take();
            }
        }
    }
    pid
}
