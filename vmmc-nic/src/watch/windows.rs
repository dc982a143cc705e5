//! Liveness of an import on Windows: learned from the connection's own I/O.
//!
//! Linux watches for the peer's hang-up with `POLLRDHUP`, which fires on a hang-up and not on
//! data; Windows has no such event, and a tcp import connection also carries fetch
//! responses, so a thread waiting on it would wake for every one. Only the tcp backend runs
//! on Windows, where every deposit and fetch is a send or receive on the connection: an
//! exporter that went away makes that call fail ([`crate::Error::PeerGone`]), which is what
//! the flag would have said. So there is no thread, and the flag stays as it is.

use std::os::windows::io::BorrowedSocket;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Nothing to stop: see the module's comment.
#[derive(Debug)]
pub(crate) struct Watcher;

impl Watcher {
    pub(crate) fn spawn(_: BorrowedSocket<'_>, _: Arc<AtomicBool>) -> std::io::Result<Watcher> {
        Ok(Watcher)
    }
}
