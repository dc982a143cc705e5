//! All of the crate's `unsafe`: mapped regions and adopting descriptors received from a peer.
//!
//! A region is memory another process may write at any moment. Nothing here hands out Rust
//! references to it: bytes move with raw-pointer copies and control words with atomics, and
//! every range is a [`Span`] checked against this region's length again before use, so a bad
//! span is a panic in our own code, never an out-of-bounds access.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::span::{check_region_len, Span};

/// A shared mapping of a region's memory.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
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
    pub(crate) fn create(len: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
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
        let ptr =
            map(Some(fd.as_fd()), size, true).map_err(crate::Error::io("mapping the memfd"))?;
        Ok(Region {
            ptr,
            len: size,
            writable: true,
            fd: Some(fd),
        })
    }

    /// Anonymous private memory: a region for tests and fuzzing that is never shared.
    pub(crate) fn anonymous(len: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
        let ptr = map(None, size, true).map_err(crate::Error::io("mapping anonymous memory"))?;
        Ok(Region {
            ptr,
            len: size,
            writable: true,
            fd: None,
        })
    }

    /// Maps a memfd received from an exporter, which is untrusted: the file must be sealed
    /// against shrinking and be exactly `len` bytes, or a later shrink could kill us with SIGBUS.
    pub(crate) fn adopt(fd: OwnedFd, len: u64, writable: bool) -> Result<Region, String> {
        let size = check_region_len(len).map_err(|e| e.to_string())?;
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
        let ptr = map(Some(fd.as_fd()), size, writable)
            .map_err(|e| format!("mapping the region: {e}"))?;
        Ok(Region {
            ptr,
            len: size,
            writable,
            fd: Some(fd),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len as u64
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

fn map(fd: Option<BorrowedFd<'_>>, len: usize, writable: bool) -> io::Result<NonNull<u8>> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let (flags, raw) = match fd {
        Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping chosen by the kernel overlaps nothing we own; the result is checked.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, raw, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Receives into `buf` with `recvmsg`, adopting any descriptors that arrive with the bytes.
/// Returns 0 bytes at end of stream. Descriptors are received close-on-exec.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
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
