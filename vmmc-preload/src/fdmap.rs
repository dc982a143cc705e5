//! Which kernel descriptors stand for VMMC sockets, and what each socket remembers.
//!
//! Every `read`, `write` and `close` in the process asks this map first, including the ones
//! the VMMC code makes itself on its own eventfds and memfds, so the question is one atomic
//! load with no lock: a lock here would deadlock the first time the VMMC code, holding it,
//! closed a descriptor of its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

use vmmc_sockets::table::Sock;

use crate::fork::Claim;

/// Descriptors at or above this are never VMMC sockets (a routed socket whose placeholder
/// lands there fails with `EMFILE`).
pub const MAX_FDS: usize = 1 << 16;

/// Per descriptor: 0 for a kernel descriptor, `sock + 1` for a VMMC socket, [`EPOLL`] for an
/// epoll instance with VMMC sockets in its interest list.
static FDS: [AtomicI32; MAX_FDS] = [const { AtomicI32::new(0) }; MAX_FDS];
const EPOLL: i32 = -1;

fn slot(fd: i32) -> Option<&'static AtomicI32> {
    usize::try_from(fd).ok().and_then(|i| FDS.get(i))
}

/// The VMMC socket behind `fd`, if any.
#[inline]
pub fn sock_of(fd: i32) -> Option<Sock> {
    let v = slot(fd)?.load(Ordering::Acquire);
    (v > 0).then(|| v - 1)
}

/// Whether `fd` is an epoll instance this library keeps VMMC interests for.
#[inline]
pub fn is_epoll(fd: i32) -> bool {
    slot(fd).is_some_and(|s| s.load(Ordering::Acquire) == EPOLL)
}

/// Marks `fd` as standing for `sock` (or for nothing).
pub fn set(fd: i32, sock: Option<Sock>) -> std::io::Result<()> {
    let s = slot(fd).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EMFILE))?;
    s.store(sock.map_or(0, |s| s + 1), Ordering::Release);
    Ok(())
}

/// Marks `fd` as an epoll instance with VMMC interests (or clears the mark).
pub fn set_epoll(fd: i32, on: bool) {
    if let Some(s) = slot(fd) {
        s.store(if on { EPOLL } else { 0 }, Ordering::Release);
    }
}

/// Per table socket: whether it is non-blocking (`O_NONBLOCK` of its placeholders, which
/// share one open file description), read on every receive without a lock.
static NONBLOCKING: [std::sync::atomic::AtomicBool; MAX_FDS] =
    [const { std::sync::atomic::AtomicBool::new(false) }; MAX_FDS];

/// Records whether `s` is non-blocking.
pub fn set_nonblocking(s: Sock, on: bool) {
    if let Some(b) = usize::try_from(s).ok().and_then(|i| NONBLOCKING.get(i)) {
        b.store(on, Ordering::Relaxed);
    }
}

/// Whether `s` is non-blocking (true for sockets beyond the map: never spin for them).
#[inline]
pub fn is_nonblocking(s: Sock) -> bool {
    usize::try_from(s)
        .ok()
        .and_then(|i| NONBLOCKING.get(i))
        .is_none_or(|b| b.load(Ordering::Relaxed))
}

/// What the library remembers about a VMMC socket, beyond the table's own state.
#[derive(Debug)]
pub struct Meta {
    /// Kernel descriptors standing for it (dup, dup2, fcntl(F_DUPFD) make more).
    pub refs: usize,
    /// `AF_INET` or `AF_INET6`, for placeholders of accepted sockets and for names.
    pub family: i32,
    /// What `getsockname` says.
    pub local: Option<SocketAddr>,
    /// What `getpeername` says.
    pub peer: Option<SocketAddr>,
    /// Who owns it after a `fork`.
    pub claim: Claim,
}

static METAS: Mutex<Option<HashMap<Sock, Meta>>> = Mutex::new(None);

/// The sockets' records, locked. Never held across a call into the socket table that may
/// wait.
pub fn metas() -> MetaGuard {
    MetaGuard(METAS.lock().unwrap_or_else(|p| p.into_inner()))
}

/// The locked records.
#[derive(Debug)]
pub struct MetaGuard(MutexGuard<'static, Option<HashMap<Sock, Meta>>>);

impl MetaGuard {
    /// The map itself.
    pub fn map(&mut self) -> &mut HashMap<Sock, Meta> {
        self.0.get_or_insert_with(HashMap::new)
    }
}
