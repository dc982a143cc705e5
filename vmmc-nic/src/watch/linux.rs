//! Liveness of an import: a thread that sleeps in `poll` on the import's connection until
//! the peer hangs up, then marks the import dead.
//!
//! Operations check the flag with one atomic load, so the shm fast path stays a `memcpy`,
//! yet a deposit into a dead exporter's memory fails instead of vanishing.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{shutdown, Shutdown};

use crate::notify::Notifier;

/// Watches one connection; stops (and shuts the connection) when dropped, or stops and leaves
/// the connection open when detached for a handover.
#[derive(Debug)]
pub(crate) struct Watcher {
    fd: OwnedFd,
    stop: Arc<Notifier>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn spawn(conn: BorrowedFd<'_>, alive: Arc<AtomicBool>) -> std::io::Result<Watcher> {
        let fd = conn.try_clone_to_owned()?;
        let watched = fd.try_clone()?;
        let stop = Arc::new(Notifier::new()?);
        let stop_seen = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vmmc-watch".into())
            .spawn(move || loop {
                let mut fds = [
                    PollFd::new(
                        watched.as_fd(),
                        PollFlags::from_bits_retain(libc::POLLRDHUP),
                    ),
                    PollFd::new(stop_seen.fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
                    _ => {}
                }
                if fds[1].any().unwrap_or(false) {
                    return;
                }
                alive.store(false, Ordering::Release);
                return;
            })?;
        Ok(Watcher {
            fd,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops watching and leaves the connection open, for another process to take over.
    pub(crate) fn detach(mut self) {
        self.stop.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            // Shutting the socket down wakes the poll (POLLHUP) and tells the exporter we left.
            let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Both);
            self.stop.signal();
            let _ = t.join();
        }
    }
}
