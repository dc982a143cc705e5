//! Everything that differs between operating systems, one file per system, and the `unsafe`
//! they share: this module is the crate's only `unsafe`.

mod bytes;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(windows)]
mod windows;

pub use bytes::{SharedBytes, SharedBytesMut};
#[cfg(target_os = "linux")]
pub(crate) use linux::*;
#[cfg(windows)]
pub(crate) use windows::*;

/// Checks a mirrored tail against its region: whole pages, no longer than the region. The
/// same rule on every system, since a tcp importer checks what a peer on another system
/// announced; a system may ask more of the regions it maps itself.
pub(crate) fn check_mirror(len: u64, mirror: u64) -> crate::Result<usize> {
    const PAGE: u64 = 4096;
    if mirror == 0 {
        return Ok(0);
    }
    if mirror > len || mirror % PAGE != 0 || len % PAGE != 0 {
        return Err(crate::Error::BadMirror { len, mirror });
    }
    usize::try_from(mirror).map_err(|_| crate::Error::BadMirror { len, mirror })
}

/// What a thread can wait on until it is readable, beside sockets: a descriptor on Unix (an
/// eventfd, a socket), a socket on Windows, where `WSAPoll` waits on nothing else.
#[cfg(unix)]
pub type WaitHandle<'a> = std::os::fd::BorrowedFd<'a>;
/// What a thread can wait on until it is readable, beside sockets: a descriptor on Unix (an
/// eventfd, a socket), a socket on Windows, where `WSAPoll` waits on nothing else.
#[cfg(windows)]
pub type WaitHandle<'a> = std::os::windows::io::BorrowedSocket<'a>;
/// An owned [`WaitHandle`].
#[cfg(unix)]
pub type OwnedWaitHandle = std::os::fd::OwnedFd;
/// An owned [`WaitHandle`].
#[cfg(windows)]
pub type OwnedWaitHandle = std::os::windows::io::OwnedSocket;

/// Borrows the [`WaitHandle`] of a socket or event, under one name on every system.
pub trait AsWaitHandle {
    /// The handle, for [`crate::poll_readable`] or a system poll.
    fn as_wait_handle(&self) -> WaitHandle<'_>;
}

#[cfg(unix)]
impl<T: std::os::fd::AsFd> AsWaitHandle for T {
    fn as_wait_handle(&self) -> WaitHandle<'_> {
        self.as_fd()
    }
}

#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket> AsWaitHandle for T {
    fn as_wait_handle(&self) -> WaitHandle<'_> {
        self.as_socket()
    }
}
