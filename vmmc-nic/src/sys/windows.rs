//! All of the crate's Windows `unsafe`: mapped regions, private memory, and the WinSock calls
//! that move bytes between a socket and a region without a Rust reference to the region.
//!
//! Only the tcp backend runs on Windows so far, so a region is mapped by this process alone;
//! it is still memory a peer writes (through our own connection thread, at offsets the peer
//! chose), so the rules of the Linux file hold here too: no references into it, every span
//! checked again before use.

use std::io;
use std::marker::PhantomData;
use std::os::windows::io::{AsRawSocket, BorrowedSocket};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Networking::WinSock::{
    recv, shutdown, WSAGetLastError, WSAPoll, WSASend, POLLRDNORM, SD_BOTH, SOCKET, WSABUF,
    WSAPOLLFD,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFileEx, UnmapViewOfFile, VirtualAlloc, VirtualFree, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_MAPPED_VIEW_ADDRESS, MEM_COMMIT, MEM_RELEASE, MEM_RESERVE,
    PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

/// `MSG_WAITALL`: a receive returns when its buffer is full (or the stream ends, or fails).
const MSG_WAITALL_: i32 = 0x8;

use super::{check_mirror, SharedBytes, SharedBytesMut};
use crate::span::{check_region_len, Span};

/// How a region's memory was obtained, to give it back the same way.
#[derive(Debug)]
enum Backing {
    /// A pagefile-backed section and the views of it (one, or two for a mirrored tail).
    Section {
        section: HANDLE,
        views: Vec<*mut core::ffi::c_void>,
    },
    /// Plain private memory (`anonymous`).
    Private(*mut core::ffi::c_void),
}

/// A mapping of a region's memory.
#[derive(Debug)]
pub(crate) struct Region {
    /// The region's first byte (after any alignment pad in front of it).
    ptr: NonNull<u8>,
    /// Addressable bytes: the region, then the mirror of its tail.
    len: usize,
    mirror: usize,
    backing: Backing,
}

// SAFETY: `Region` owns its mapping; the raw pointers are only dereferenced through methods
// that copy with raw pointers or atomics, which are sound from any thread.
unsafe impl Send for Region {}
// SAFETY: as above; no method takes `&mut self` to touch the memory.
unsafe impl Sync for Region {}

/// The granularity of view addresses and section offsets (64 KiB on every Windows so far).
pub(crate) fn granularity() -> usize {
    let mut info = std::mem::MaybeUninit::<SYSTEM_INFO>::zeroed();
    // SAFETY: GetSystemInfo fills the structure it is given and cannot fail.
    let info = unsafe {
        GetSystemInfo(info.as_mut_ptr());
        info.assume_init()
    };
    (info.dwAllocationGranularity as usize).max(4096)
}

impl Region {
    /// A fresh zeroed region. With `mirror > 0` the last `mirror` bytes are mapped a second
    /// time right after the region, so a ring in the tail reads and writes across its wrap as
    /// one span.
    ///
    /// Windows maps views only at multiples of its allocation granularity (64 KiB), and only
    /// from section offsets that are multiples of it, so a mirror must be a multiple of it,
    /// and the section gets a pad in front that puts the tail on such an offset.
    pub(crate) fn create(len: u64, mirror: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
        let mirror = check_mirror(len, mirror)?;
        let gran = granularity();
        if mirror % gran != 0 {
            return Err(crate::Error::BadMirror {
                len,
                mirror: mirror as u64,
            });
        }
        let pad = if mirror == 0 {
            0
        } else {
            (gran - (size - mirror) % gran) % gran
        };
        let section_len = (pad + size) as u64;
        // SAFETY: a pagefile-backed, unnamed section of `section_len` bytes; the handle is
        // owned by the region from here on (closed in Drop, or below on failure).
        let section = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                std::ptr::null(),
                PAGE_READWRITE,
                (section_len >> 32) as u32,
                section_len as u32,
                std::ptr::null(),
            )
        };
        if section.is_null() {
            return Err(crate::Error::io("creating a section")(
                io::Error::last_os_error(),
            ));
        }
        let views = match map_views(section, pad, size, mirror) {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: the handle was created above and nothing else holds it.
                unsafe { CloseHandle(section) };
                return Err(crate::Error::io("mapping the section")(e));
            }
        };
        let base = views[0].cast::<u8>();
        // SAFETY: `pad` bytes into the first view, which is `pad + size` bytes long.
        let ptr = unsafe { base.add(pad) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            crate::Error::io("mapping the section")(io::Error::other("null view"))
        })?;
        Ok(Region {
            ptr,
            len: size + mirror,
            mirror,
            backing: Backing::Section { section, views },
        })
    }

    /// Private memory: a region for tests and fuzzing that is never shared.
    pub(crate) fn anonymous(len: u64) -> crate::Result<Region> {
        let size = check_region_len(len)?;
        let p = alloc(size).map_err(crate::Error::io("allocating memory"))?;
        Ok(Region {
            ptr: p,
            len: size,
            mirror: 0,
            backing: Backing::Private(p.as_ptr().cast()),
        })
    }

    /// Bytes addressable through spans: the region plus its mirrored tail.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    /// Size of the region, as importers are told.
    pub(crate) fn file_len(&self) -> u64 {
        (self.len - self.mirror) as u64
    }

    pub(crate) fn mirror(&self) -> u64 {
        self.mirror as u64
    }

    /// The bytes of a span, lent as [`SharedBytes`]: never a reference.
    pub(crate) fn bytes(&self, span: Span) -> SharedBytes<'_> {
        self.check(span);
        SharedBytes {
            // SAFETY: the span lies inside the live mapping (checked above).
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(span.offset())) },
            len: span.len(),
            _life: PhantomData,
        }
    }

    /// The bytes of a span, to write in place.
    pub(crate) fn bytes_mut(&self, span: Span) -> SharedBytesMut<'_> {
        self.check(span);
        SharedBytesMut {
            // SAFETY: as in `bytes`; every Windows mapping here is writable.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(span.offset())) },
            len: span.len(),
            _life: PhantomData,
        }
    }

    fn check(&self, span: Span) {
        assert!(
            span.end() <= self.len,
            "span {span:?} outside a region of {}",
            self.len
        );
    }

    /// The emulated DMA: one copy from `src` into the region.
    pub(crate) fn copy_in(&self, span: Span, src: &[u8]) {
        self.check(span);
        assert_eq!(span.len(), src.len());
        // SAFETY: the span lies inside the writable mapping (checked above); `src` is our
        // own memory and cannot overlap a mapping made by MapViewOfFileEx or VirtualAlloc.
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
        self.check(span);
        assert_eq!(span.len(), dst.len());
        // SAFETY: the span lies inside the mapping (checked above); `dst` is exclusive and
        // cannot overlap the mapping.
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
        assert_eq!(self.ptr.as_ptr() as usize % 8, 0);
        // SAFETY: an in-bounds, 8-aligned word (the region starts page-aligned, checked
        // above) of a mapping that lives as long as `self`; only raw copies and atomics
        // touch it.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(span.offset()).cast::<u64>()) }
    }

    /// Reads a control word with acquire ordering.
    pub(crate) fn load_u64(&self, span: Span) -> u64 {
        self.check(span);
        self.atomic(span).load(Ordering::Acquire)
    }

    /// Publishes a control word after the deposits that precede it.
    pub(crate) fn store_u64(&self, span: Span, value: u64) {
        self.check(span);
        self.atomic(span).store(value, Ordering::Release)
    }

    /// Receives exactly `span.len()` bytes from a socket straight into the region.
    pub(crate) fn recv_into(&self, sock: BorrowedSocket<'_>, span: Span) -> io::Result<()> {
        self.check(span);
        let mut done = 0;
        while done < span.len() {
            let want = (span.len() - done).min(i32::MAX as usize) as i32;
            // SAFETY: the destination is inside the writable mapping (checked above) and
            // WinSock writes at most `want <= span.len() - done` bytes there.
            let n = unsafe {
                recv(
                    sock.as_raw_socket() as SOCKET,
                    self.ptr.as_ptr().add(span.offset() + done),
                    want,
                    // The whole payload in one call: each call that finds too little waits
                    // once, and under Wine every wait is a round trip to its server.
                    MSG_WAITALL_,
                )
            };
            match n {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n < 0 => {
                    let err = wsa_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }

    /// Sends `header` and then the span's bytes on a socket, straight from the region.
    pub(crate) fn send_from(
        &self,
        sock: BorrowedSocket<'_>,
        header: &[u8],
        span: Span,
    ) -> io::Result<()> {
        self.check(span);
        let total = header.len() + span.len();
        let mut done = 0;
        while done < total {
            let (hdr_rest, body_from) = if done < header.len() {
                (&header[done..], 0)
            } else {
                (&header[header.len()..], done - header.len())
            };
            let body_len = (span.len() - body_from).min(u32::MAX as usize / 2);
            let bufs = [
                WSABUF {
                    len: hdr_rest.len() as u32,
                    buf: hdr_rest.as_ptr() as *mut u8,
                },
                WSABUF {
                    len: body_len as u32,
                    // SAFETY: `body_from <= span.len()`, so the pointer stays in the mapping.
                    buf: unsafe { self.ptr.as_ptr().add(span.offset() + body_from) },
                },
            ];
            let mut sent = 0u32;
            // SAFETY: both buffers are readable memory of the stated lengths for the call;
            // no overlapped structure, so the call completes before it returns.
            let r = unsafe {
                WSASend(
                    sock.as_raw_socket() as SOCKET,
                    bufs.as_ptr(),
                    2,
                    &mut sent,
                    0,
                    std::ptr::null_mut(),
                    None,
                )
            };
            if r != 0 {
                let err = wsa_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            } else {
                done += sent as usize;
            }
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        match &self.backing {
            Backing::Section { section, views } => {
                for v in views {
                    // SAFETY: each view was mapped by `map_views` and no reference into it
                    // outlives `self`.
                    unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: *v }) };
                }
                // SAFETY: the section handle is owned by the region.
                unsafe { CloseHandle(*section) };
            }
            Backing::Private(p) => {
                // SAFETY: `p` is what VirtualAlloc returned; nothing borrows it past `self`.
                unsafe { VirtualFree(*p, 0, MEM_RELEASE) };
            }
        }
    }
}

/// Maps `pad + size` bytes of the section, and when `mirror > 0` its last `mirror` bytes
/// again right after them. Windows cannot reserve an address range and then map views into
/// it (before `MapViewOfFile3`, which Wine 8 lacks), so a free range is found, released and
/// mapped at once; another thread may take it in between, which is retried.
fn map_views(
    section: HANDLE,
    pad: usize,
    size: usize,
    mirror: usize,
) -> io::Result<Vec<*mut core::ffi::c_void>> {
    let first = pad + size;
    let access = FILE_MAP_READ | FILE_MAP_WRITE;
    if mirror == 0 {
        // SAFETY: maps the whole section wherever the system likes; checked below.
        let v = unsafe { MapViewOfFileEx(section, access, 0, 0, first, std::ptr::null()) };
        if v.Value.is_null() {
            return Err(io::Error::last_os_error());
        }
        return Ok(vec![v.Value]);
    }
    let tail = (first - mirror) as u64;
    let mut last = io::Error::other("no address range for a mirrored region");
    for _ in 0..64 {
        let base = alloc(first + mirror)?;
        // SAFETY: releasing the reservation just made, which nothing else uses.
        unsafe { VirtualFree(base.as_ptr().cast(), 0, MEM_RELEASE) };
        let at = base.as_ptr().cast::<core::ffi::c_void>();
        // SAFETY: maps at an address that was free a moment ago; if another thread took it
        // the call fails and nothing is overwritten (views never replace memory).
        let a = unsafe { MapViewOfFileEx(section, access, 0, 0, first, at) };
        if a.Value.is_null() {
            last = io::Error::last_os_error();
            continue;
        }
        // SAFETY: as above, right after the first view (`first` is granularity-aligned by
        // the pad), from a granularity-aligned section offset.
        let b = unsafe {
            MapViewOfFileEx(
                section,
                access,
                (tail >> 32) as u32,
                tail as u32,
                mirror,
                at.cast::<u8>().add(first).cast(),
            )
        };
        if b.Value.is_null() {
            last = io::Error::last_os_error();
            // SAFETY: unmapping the view mapped just above.
            unsafe { UnmapViewOfFile(a) };
            continue;
        }
        return Ok(vec![a.Value, b.Value]);
    }
    Err(last)
}

/// `len` bytes of fresh committed private memory, zeroed by the system.
fn alloc(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh allocation chosen by the system overlaps nothing we own.
    let p = unsafe {
        VirtualAlloc(
            std::ptr::null(),
            len.max(1),
            MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE,
        )
    };
    NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)
}

/// Private memory of this process alone, given back to the system when dropped.
#[derive(Debug)]
pub(crate) struct PrivateMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the allocation is owned by the value and only reached through borrows of it.
unsafe impl Send for PrivateMap {}
// SAFETY: as above; shared access is read-only.
unsafe impl Sync for PrivateMap {}

impl PrivateMap {
    /// `len` zeroed bytes.
    pub(crate) fn new(len: usize) -> io::Result<PrivateMap> {
        let len = len.max(1);
        Ok(PrivateMap {
            ptr: alloc(len)?,
            len,
        })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: our own live committed allocation of `len` zeroed bytes; a `&mut` to it
        // can only come from `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PrivateMap {
    fn drop(&mut self) {
        // SAFETY: `ptr` is what VirtualAlloc returned; no borrow outlives `self`.
        unsafe { VirtualFree(self.ptr.as_ptr().cast(), 0, MEM_RELEASE) };
    }
}

/// The last WinSock error as an `io::Error` (its kind maps as std's own socket errors do).
fn wsa_error() -> io::Error {
    // SAFETY: reads this thread's last WinSock error; no preconditions.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

/// Sends all of `parts` on a stream socket, gathered (`WSASend` takes them in one call).
pub(crate) fn send_all(
    sock: &std::net::TcpStream,
    parts: &mut [io::IoSlice<'_>],
) -> io::Result<()> {
    use std::io::Write;
    let mut parts = parts;
    let mut s = sock;
    while !parts.is_empty() {
        match s.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts a socket down both ways: wakes whoever waits on it, and tells the peer.
pub(crate) fn shutdown_both(sock: BorrowedSocket<'_>) {
    // SAFETY: the socket is borrowed, so open for the call; shutdown does not close it.
    unsafe { shutdown(sock.as_raw_socket() as SOCKET, SD_BOTH) };
}

/// Waits until one of `socks` is readable (or hung up) or `timeout` passes, and says which.
pub(crate) fn poll_readable(
    socks: &[BorrowedSocket<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<bool>> {
    let mut fds: Vec<WSAPOLLFD> = socks
        .iter()
        .map(|s| WSAPOLLFD {
            fd: s.as_raw_socket() as SOCKET,
            events: POLLRDNORM,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().clamp(1, i32::MAX as u128) as i32,
    };
    // SAFETY: `fds` is a live array of `fds.len()` entries naming sockets borrowed for the
    // call; WSAPoll writes only their `revents`.
    let r = unsafe { WSAPoll(fds.as_mut_ptr(), fds.len() as u32, ms) };
    if r < 0 {
        return Err(wsa_error());
    }
    Ok(fds.iter().map(|f| f.revents != 0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirror aliases the ring's start: a write across the wrap reads back whole from
    /// either view, in a region whose header pushes the ring off the granularity.
    #[test]
    fn the_mirrored_tail_aliases_the_ring() {
        let ring = granularity() as u64;
        let r = Region::create(4096 + ring, ring).unwrap();
        assert_eq!(r.len(), 4096 + 2 * ring);
        let at = 4096 + ring - 3;
        r.copy_in(Span::new(r.len(), at, 6).unwrap(), b"abcdef");
        let mut got = [0u8; 3];
        r.copy_out(Span::new(r.len(), 4096, 3).unwrap(), &mut got);
        assert_eq!(&got, b"def");
        r.store_u64(Span::word(r.len(), 4096 + 8).unwrap(), 77);
        assert_eq!(
            r.load_u64(Span::word(r.len(), 4096 + ring + 8).unwrap()),
            77
        );
    }

    #[test]
    fn a_mirror_off_the_granularity_is_refused() {
        assert!(Region::create(8192, 4096).is_err());
    }

    #[test]
    fn a_notifier_counts_signals_and_polls_readable() {
        let n = crate::notify::Notifier::new().unwrap();
        assert_eq!(n.take(), 0);
        assert!(!poll_readable(&[n.fd()], Some(Duration::from_millis(1))).unwrap()[0]);
        n.signal();
        n.signal();
        assert!(poll_readable(&[n.fd()], Some(Duration::from_secs(5))).unwrap()[0]);
        assert_eq!(n.take(), 2);
    }

    /// An export's notifier wakes a waiter without its socket, and shows what is pending on
    /// the socket from the moment someone asks for it.
    #[test]
    fn an_on_demand_notifier_mirrors_once_armed() {
        let n = std::sync::Arc::new(crate::notify::Notifier::on_demand().unwrap());
        let m = n.clone();
        let t = std::thread::spawn(move || m.wait_pending(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        n.signal();
        assert!(t.join().unwrap());
        assert!(!poll_readable(&[n.fd()], Some(Duration::from_millis(1))).unwrap()[0]);
        n.arm();
        assert!(poll_readable(&[n.fd()], Some(Duration::from_secs(5))).unwrap()[0]);
        assert_eq!(n.take(), 1);
        assert!(!n.wait_pending(Duration::from_millis(1)));
        assert!(!poll_readable(&[n.fd()], Some(Duration::from_millis(1))).unwrap()[0]);
        n.signal();
        assert!(poll_readable(&[n.fd()], Some(Duration::from_secs(5))).unwrap()[0]);
    }
}
