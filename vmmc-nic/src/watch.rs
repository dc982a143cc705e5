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

/// Watches one connection; stops (and shuts the connection) when dropped.
#[derive(Debug)]
pub(crate) struct Watcher {
    fd: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    pub(crate) fn spawn(conn: BorrowedFd<'_>, alive: Arc<AtomicBool>) -> std::io::Result<Watcher> {
        let fd = conn.try_clone_to_owned()?;
        let watched = fd.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("vmmc-watch".into())
            .spawn(move || {
                loop {
                    let mut fds = [PollFd::new(
                        watched.as_fd(),
                        PollFlags::from_bits_retain(libc::POLLRDHUP),
                    )];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Ok(0) => continue,
                        _ => break,
                    }
                }
                alive.store(false, Ordering::Release);
            })?;
        Ok(Watcher {
            fd,
            thread: Some(thread),
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Shutting the socket down wakes the poll (POLLHUP) and tells the exporter we left.
        let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
