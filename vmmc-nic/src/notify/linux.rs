//! Notifications: an eventfd per export.
//!
//! The exporter owns the eventfd; on the shm backend importers get a duplicate and signal it
//! themselves, on the tcp backend the exporter's connection thread signals it when a deposit
//! that asked for a notification has landed. Either way the waiter can block with a timeout or
//! put the descriptor in its own poll set.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

/// The receiving side: counts signals until a waiter takes them. Also what a thread that
/// must be woken from a poll elsewhere waits on (a listener's admission thread, say).
#[derive(Debug)]
pub struct Notifier {
    file: File,
}

impl Notifier {
    /// A fresh notifier with no signal pending.
    pub fn new() -> io::Result<Notifier> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Notifier {
            file: File::from(OwnedFd::from(efd)),
        })
    }

    /// What to poll: readable while a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// A duplicate descriptor to hand to an importer.
    pub(crate) fn dup(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }

    /// Adds a signal and wakes a waiter.
    pub fn signal(&self) {
        signal(&self.file);
    }

    /// Takes over an eventfd handed over from another process (checked like an importer's).
    pub(crate) fn adopt(fd: OwnedFd) -> Result<Notifier, String> {
        RemoteNotifier::adopt(fd).map(|r| Notifier { file: r.file })
    }

    /// An export's notifier; on Linux the same as [`Notifier::new`] (the eventfd is what
    /// waiters poll, no other mechanism is cheaper).
    pub(crate) fn on_demand() -> io::Result<Notifier> {
        Notifier::new()
    }

    /// Nothing to do on Linux: the eventfd always shows pending signals.
    pub(crate) fn arm(&self) {}

    /// Nothing to do on Linux, as for [`Notifier::arm`].
    pub(crate) fn disarm(&self) {}

    /// Waits until a signal is pending (without taking it) or `timeout` passes.
    pub(crate) fn wait_pending(&self, timeout: Duration) -> bool {
        wait_readable(self.fd(), timeout).unwrap_or(false)
    }

    /// Takes all pending signals without blocking; 0 when there were none.
    pub fn take(&self) -> u64 {
        let mut buf = [0u8; 8];
        match (&self.file).read(&mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes (then returns false).
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    poll_readable(&[fd], Some(timeout)).map(|r| r.first().copied().unwrap_or(false))
}

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes, and says which
/// are; a signal that interrupts the wait is an early return with none ready.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => {
            let ms = t.as_millis().clamp(1, i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|f| PollFd::new(*f, PollFlags::POLLIN))
        .collect();
    match poll(&mut pfds, timeout) {
        Ok(_) => Ok(pfds.iter().map(|p| p.any().unwrap_or(false)).collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(e) => Err(e.into()),
    }
}

fn signal(file: &File) {
    // A full counter (EAGAIN) still leaves the waiter woken, so the error carries nothing.
    let _ = (&*file).write(&1u64.to_ne_bytes());
}

/// The importer's handle on an exporter's eventfd.
#[derive(Debug)]
pub(crate) struct RemoteNotifier {
    file: File,
}

impl RemoteNotifier {
    /// A duplicate, to hand over with the import.
    pub(crate) fn dup(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }

    /// Accepts a descriptor from an exporter only if it really is an eventfd: writing to
    /// anything else (a pipe the exporter never drains, say) could block us forever.
    pub(crate) fn adopt(fd: OwnedFd) -> Result<RemoteNotifier, String> {
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .map_err(|e| format!("inspecting the notification descriptor: {e}"))?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(format!(
                "the notification descriptor is {} and not an eventfd",
                link.display()
            ));
        }
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| e.to_string())?;
        Ok(RemoteNotifier {
            file: File::from(fd),
        })
    }

    /// Adds a signal and wakes a waiter.
    pub fn signal(&self) {
        signal(&self.file);
    }
}
