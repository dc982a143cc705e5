//! All of the crate's `unsafe`: mapped regions and adopting descriptors received from a peer.
//!
//! A region is memory another process may write at any moment. Nothing here hands out Rust
//! references to it: bytes move with raw-pointer copies and control words with atomics, and
//! every range is a [`Span`] checked against this region's length again before use, so a bad
//! span is a panic in our own code, never an out-of-bounds access.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::{check_mirror, SharedBytes, SharedBytesMut};
use crate::span::{check_region_len, Span};

/// A shared mapping of a region's memory.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    /// Mapped bytes: the file, then the mirror of its tail.
    len: usize,
    /// Bytes of the file's tail mapped a second time right after the file.
    mirror: usize,
    writable: bool,
    /// The memfd behind the mapping, when there is one to hand to importers.
    fd: Option<OwnedFd>,
}

// SAFETY: `Region` owns its mapping; the raw pointer is only dereferenced through methods that
// copy with raw pointers or atomics, which are sound to call from any thread (concurrent
// writers can tear data bytes, which the callers' protocols accept, but cannot break memory
// safety).
unsafe impl Send for Region {}
// SAFETY: as above; no method takes `&mut self` to touch the memory.
unsafe impl Sync for Region {}

impl Region {
    /// A fresh zeroed region in a memfd whose size is sealed, so no importer can ever shrink it
    /// under us (which would turn our accesses into SIGBUS).
    ///
    /// With `mirror > 0`, the last `mirror` bytes of the file are mapped a second time right
    /// after the file, so a ring in the tail can be read or written across its wrap as one
    /// contiguous span.
    pub(crate) fn create(len: u64, mirror: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
        let mirror = check_mirror(len, mirror)?;
        let fd = memfd_create(
            c"vmmc-region",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| crate::Error::io("creating a memfd")(e.into()))?;
        let file = File::from(fd);
        file.set_len(len)
            .map_err(crate::Error::io("sizing the memfd"))?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
            .map_err(|e| crate::Error::io("sealing the memfd")(e.into()))?;
        let fd = OwnedFd::from(file);
        let ptr = map(Some(fd.as_fd()), size, mirror, true)
            .map_err(crate::Error::io("mapping the memfd"))?;
        Ok(Region {
            ptr,
            len: size + mirror,
            mirror,
            writable: true,
            fd: Some(fd),
        })
    }

    /// Anonymous private memory: a region for tests and fuzzing that is never shared.
    pub(crate) fn anonymous(len: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
        let ptr = map(None, size, 0, true).map_err(crate::Error::io("mapping anonymous memory"))?;
        Ok(Region {
            ptr,
            len: size,
            mirror: 0,
            writable: true,
            fd: None,
        })
    }

    /// Maps a memfd received from an exporter, which is untrusted: the file must be sealed
    /// against shrinking and be exactly `len` bytes, or a later shrink could kill us with SIGBUS.
    pub(crate) fn adopt(
        fd: OwnedFd,
        len: u64,
        mirror: u64,
        writable: bool,
    ) -> Result<Region, String> {
        let size = check_region_len(len).map_err(|e| e.to_string())?;
        let mirror = check_mirror(len, mirror).map_err(|e| e.to_string())?;
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS)
            .map_err(|e| format!("the region descriptor is not a sealable memfd ({e})"))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err("the region memfd is not sealed against shrinking".into());
        }
        let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("fstat on the region: {e}"))?;
        if u64::try_from(st.st_size).ok() != Some(len) {
            return Err(format!(
                "the region memfd holds {} bytes but the exporter announced {len}",
                st.st_size
            ));
        }
        let ptr = map(Some(fd.as_fd()), size, mirror, writable)
            .map_err(|e| format!("mapping the region: {e}"))?;
        Ok(Region {
            ptr,
            len: size + mirror,
            mirror,
            writable,
            fd: Some(fd),
        })
    }

    /// Bytes addressable through spans: the file plus its mirrored tail.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    /// Size of the underlying file, as importers are told.
    pub(crate) fn file_len(&self) -> u64 {
        (self.len - self.mirror) as u64
    }

    pub(crate) fn mirror(&self) -> u64 {
        self.mirror as u64
    }

    /// The bytes of a span, lent for as long as `self` is borrowed, as [`SharedBytes`]: never a
    /// reference, since a peer may write them at any moment.
    pub(crate) fn bytes(&self, span: Span) -> SharedBytes<'_> {
        self.check(span, false);
        SharedBytes {
            // SAFETY: the span lies inside the live mapping (checked above), so the pointer
            // stays within it; the mapping outlives the borrow of `self` the result carries.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(span.offset())) },
            len: span.len(),
            _life: PhantomData,
        }
    }

    /// The bytes of a span, to write in place (the send side of the pointer API).
    pub(crate) fn bytes_mut(&self, span: Span) -> SharedBytesMut<'_> {
        self.check(span, true);
        SharedBytesMut {
            // SAFETY: as in `bytes`, and the mapping is writable (checked above).
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(span.offset())) },
            len: span.len(),
            _life: PhantomData,
        }
    }

    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    fn check(&self, span: Span, write: bool) {
        assert!(
            span.end() <= self.len,
            "span {span:?} outside a region of {}",
            self.len
        );
        assert!(
            !write || self.writable,
            "write to a read-only region mapping"
        );
    }

    /// The emulated DMA: one copy from `src` into the region.
    pub(crate) fn copy_in(&self, span: Span, src: &[u8]) {
        self.check(span, true);
        assert_eq!(span.len(), src.len());
        // SAFETY: the span lies inside the mapping (checked above), the mapping is writable, and
        // `src` is a live slice of exactly that length in our own memory, which cannot overlap a
        // mapping we created with mmap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.ptr.as_ptr().add(span.offset()),
                src.len(),
            )
        }
    }

    /// One copy from the region into `dst`.
    pub(crate) fn copy_out(&self, span: Span, dst: &mut [u8]) {
        self.check(span, false);
        assert_eq!(span.len(), dst.len());
        // SAFETY: the span lies inside the mapping (checked above) and `dst` is a live exclusive
        // slice of exactly that length that cannot overlap the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(span.offset()),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    fn atomic(&self, span: Span) -> &AtomicU64 {
        assert_eq!(span.len(), 8);
        assert_eq!(span.offset() % 8, 0);
        // SAFETY: the span is an in-bounds, 8-aligned word of a page-aligned mapping that lives as
        // long as `self`; the memory is only ever accessed through raw copies and atomics.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(span.offset()).cast::<u64>()) }
    }

    /// Reads a control word; pairs with [`Region::store_u64`] on the writer's side so that the
    /// bytes deposited before the word are visible once the word is.
    pub(crate) fn load_u64(&self, span: Span) -> u64 {
        self.check(span, false);
        self.atomic(span).load(Ordering::Acquire)
    }

    /// Publishes a control word after the deposits that precede it.
    pub(crate) fn store_u64(&self, span: Span, value: u64) {
        self.check(span, true);
        self.atomic(span).store(value, Ordering::Release)
    }

    /// Receives exactly `span.len()` bytes from a stream socket straight into the region: the
    /// tcp backend's receive path, with no staging buffer.
    pub(crate) fn recv_into(&self, sock: BorrowedFd<'_>, span: Span) -> io::Result<()> {
        self.check(span, true);
        let mut done = 0;
        while done < span.len() {
            // SAFETY: the destination is inside the writable mapping (checked above) and the
            // kernel writes at most `span.len() - done` bytes there.
            let n = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    self.ptr.as_ptr().add(span.offset() + done).cast(),
                    span.len() - done,
                    0,
                )
            };
            match n {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n < 0 => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }

    /// Sends `header` and then the span's bytes on a stream socket, straight from the region.
    pub(crate) fn send_from(
        &self,
        sock: BorrowedFd<'_>,
        header: &[u8],
        span: Span,
    ) -> io::Result<()> {
        self.check(span, false);
        let total = header.len() + span.len();
        let mut done = 0;
        while done < total {
            let (hdr_rest, body_from) = if done < header.len() {
                (&header[done..], 0)
            } else {
                (&header[header.len()..], done - header.len())
            };
            let iov = [
                libc::iovec {
                    iov_base: hdr_rest.as_ptr() as *mut libc::c_void,
                    iov_len: hdr_rest.len(),
                },
                libc::iovec {
                    // SAFETY: `body_from <= span.len()`, so the pointer stays inside the mapping.
                    iov_base: unsafe { self.ptr.as_ptr().add(span.offset() + body_from) }.cast(),
                    iov_len: span.len() - body_from,
                },
            ];
            // SAFETY: an all-zero msghdr is valid; we fill in the iovec array that outlives the
            // call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = 2;
            // SAFETY: both iovecs point at readable memory of the stated lengths for the call.
            let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            } else {
                done += n as usize;
            }
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the mapping can
        // outlive `self` (none are handed out).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Private anonymous memory of this process alone, mapped on its own so that dropping it
/// gives the pages back to the system at once (a large heap buffer may stay in the
/// allocator's arenas, and a server with many connections then keeps what the busiest moment
/// needed). Nobody else can write it, so unlike a [`Region`] it is handed out as slices.
#[derive(Debug)]
pub(crate) struct PrivateMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the value and only reached through `&self`/`&mut self`
// borrows of it, as with a `Vec<u8>`.
unsafe impl Send for PrivateMap {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for PrivateMap {}

impl PrivateMap {
    /// `len` zeroed bytes (at least one page is mapped). Pages cost memory only once written;
    /// `MAP_NORESERVE` keeps a large buffer that is mostly untouched from counting against
    /// the commit limit.
    pub(crate) fn new(len: usize) -> io::Result<PrivateMap> {
        let len = len.max(1);
        // SAFETY: a fresh private anonymous mapping chosen by the kernel overlaps nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(PrivateMap { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is our own live private mapping, readable, zero-filled by the
        // kernel; no other process maps it, and a `&mut` to it can only come from `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PrivateMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are what mmap returned; no borrow of the mapping outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn map(
    fd: Option<BorrowedFd<'_>>,
    len: usize,
    mirror: usize,
    writable: bool,
) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let (flags, raw) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    if mirror == 0 {
        // SAFETY: a fresh mapping chosen by the kernel overlaps nothing we own; checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, raw, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        return NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"));
    }
    // Reserve the whole window first, then map the file and its tail into it with MAP_FIXED, so
    // the two views are adjacent and nothing else can be placed in between.
    let total = len + mirror;
    // SAFETY: an inaccessible anonymous reservation chosen by the kernel overlaps nothing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let tail = (len - mirror) as libc::off_t;
    // SAFETY: both MAP_FIXED mappings replace parts of the reservation made just above, which
    // this function owns; nothing else refers to it yet.
    let ok = unsafe {
        let a = libc::mmap(base, len, prot, flags | libc::MAP_FIXED, raw, 0);
        let b = libc::mmap(
            base.cast::<u8>().add(len).cast(),
            mirror,
            prot,
            flags | libc::MAP_FIXED,
            raw,
            tail,
        );
        a != libc::MAP_FAILED && b != libc::MAP_FAILED
    };
    if !ok {
        let err = io::Error::last_os_error();
        // SAFETY: unmapping the reservation this function created and nobody else uses.
        unsafe { libc::munmap(base, total) };
        return Err(err);
    }
    NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Shuts a socket down both ways: wakes whoever waits on it, and tells the peer.
pub(crate) fn shutdown_both(sock: BorrowedFd<'_>) {
    let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Sends all of `parts` on a stream socket, with one `sendmsg` where the kernel takes it all.
/// `MSG_NOSIGNAL`: a dead peer is an error, not a SIGPIPE that kills the host program.
pub(crate) fn send_all(sock: &impl AsFd, parts: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    let mut parts = parts;
    while !parts.is_empty() {
        match nix::sys::socket::sendmsg::<()>(
            sock.as_fd().as_raw_fd(),
            parts,
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Most descriptors one message may carry.
pub(crate) const MAX_FDS: usize = 32;

/// Receives into `buf` with `recvmsg`, adopting any descriptors that arrive with the bytes.
/// Returns 0 bytes at end of stream. Descriptors are received close-on-exec.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for r in raw {
                // SAFETY: the kernel just installed `r` in our table for this message; nothing else
                // owns it, so taking ownership here is the only way it gets closed.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let n = msg.bytes;
    if truncated {
        return Err(io::Error::other(
            "a peer sent more descriptors than expected",
        ));
    }
    Ok((n, fds))
}

/// Most supplementary groups read for a peer; Linux allows 65536, a request carries 64.
const MAX_PEER_GROUPS: usize = 1024;

/// The supplementary groups of the process at the other end of a Unix socket, as they were
/// when it connected (`SO_PEERGROUPS`, Linux 4.13): the kernel's word, like `SO_PEERCRED`.
pub(crate) fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; MAX_PEER_GROUPS];
    let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
    // SAFETY: `groups` is a live buffer of `len` bytes that the kernel fills with gid_t (u32)
    // values and whose used length it writes back to `len`; the socket is borrowed.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (len as usize / std::mem::size_of::<u32>()).min(groups.len());
    groups.truncate(n);
    Ok(groups)
}

/// Runs `f` with SIGPIPE blocked in this thread, and takes back a SIGPIPE that became
/// pending meanwhile: for the calls that write to a socket and cannot be told
/// `MSG_NOSIGNAL` (`sendfile`), so that a peer that went away is an error, not a signal that
/// kills the host program. A SIGPIPE that was pending before is left as it was.
pub(crate) fn without_sigpipe<R>(f: impl FnOnce() -> R) -> R {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut pipe = SigSet::empty();
    pipe.add(Signal::SIGPIPE);
    let mut old = SigSet::empty();
    let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe), Some(&mut old)).is_ok();
    let was_pending = blocked && sigpipe_pending();
    let r = f();
    if blocked {
        if !was_pending && sigpipe_pending() {
            let none = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `pipe` is a valid, initialised signal set and `none` a valid timespec;
            // a null `siginfo_t` pointer is allowed. SIGPIPE is blocked in this thread, so the
            // pending one is taken here instead of being delivered.
            unsafe { libc::sigtimedwait(pipe.as_ref(), std::ptr::null_mut(), &none) };
        }
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    r
}

/// Whether a SIGPIPE is pending for this thread (or the process).
fn sigpipe_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the set it is given; it is read only after it succeeded.
    unsafe {
        libc::sigpending(set.as_mut_ptr()) == 0
            && libc::sigismember(set.as_ptr(), libc::SIGPIPE) == 1
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// With SIGPIPE's default action (which kills), a write to a socket whose peer is gone
    /// fails with EPIPE inside `without_sigpipe`, and the process lives on.
    #[test]
    fn a_write_to_a_dead_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        // `write(2)`, not the standard library's `send(MSG_NOSIGNAL)`.
        let mut a = std::fs::File::from(std::os::fd::OwnedFd::from(a));
        // SAFETY: setting a signal's disposition to a constant action installs no handler
        // code; the previous action (the Rust runtime's `SIG_IGN`) is put back below.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let r = super::without_sigpipe(|| a.write(b"x"));
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, old) };
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EPIPE));
    }
}
