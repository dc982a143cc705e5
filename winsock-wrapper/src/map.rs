//! Which of the program's `SOCKET`s are routed, to which table socket, and what the wrapper
//! remembers of them; and the settings a program gives a system socket before it is known to
//! be routed (set on the table socket when it takes over).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use vmmc_sockets::table::Sock;

/// A program's handle (the system's `SOCKET` value of the placeholder).
pub(crate) type Handle = usize;

/// A routed socket.
#[derive(Debug)]
pub(crate) struct Routed {
    /// The table socket behind it.
    pub(crate) sock: Sock,
    /// `AF_INET` or `AF_INET6`, as the program created it.
    pub(crate) family: u16,
    /// The addresses the program sees: what it bound (or its listener's), whom it connected
    /// to (or who connected).
    pub(crate) names: Mutex<Names>,
}

/// The addresses of a routed socket, as the program knows them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Names {
    pub(crate) local: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
}

impl Routed {
    pub(crate) fn names(&self) -> MutexGuard<'_, Names> {
        lock(&self.names)
    }
}

/// What a program set on a system socket that may become routed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pending {
    pub(crate) nonblocking: bool,
    pub(crate) rcvtimeo: Option<Duration>,
    pub(crate) sndtimeo: Option<Duration>,
    pub(crate) rcvbuf: Option<u64>,
}

#[derive(Default)]
struct Maps {
    routed: RwLock<HashMap<Handle, Arc<Routed>>>,
    pending: Mutex<HashMap<Handle, Pending>>,
}

fn maps() -> &'static Maps {
    static MAPS: OnceLock<Maps> = OnceLock::new();
    MAPS.get_or_init(Maps::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The routed socket behind `h`, if it is one.
pub(crate) fn get(h: Handle) -> Option<Arc<Routed>> {
    maps()
        .routed
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&h)
        .cloned()
}

/// Whether any socket is routed (most calls of most programs: none, and one load says so).
pub(crate) fn any() -> bool {
    !maps()
        .routed
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}

pub(crate) fn insert(h: Handle, r: Routed) -> Arc<Routed> {
    let r = Arc::new(r);
    maps()
        .routed
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(h, r.clone());
    lock(&maps().pending).remove(&h);
    r
}

pub(crate) fn remove(h: Handle) -> Option<Arc<Routed>> {
    lock(&maps().pending).remove(&h);
    maps()
        .routed
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&h)
}

/// Records a setting of a system socket, in case it becomes routed.
pub(crate) fn note(h: Handle, f: impl FnOnce(&mut Pending)) {
    f(lock(&maps().pending).entry(h).or_default());
}

/// What was set on `h` before it became routed.
pub(crate) fn pending(h: Handle) -> Pending {
    lock(&maps().pending).get(&h).copied().unwrap_or_default()
}

/// Forgets a closed system socket's settings.
pub(crate) fn forget(h: Handle) {
    lock(&maps().pending).remove(&h);
}
