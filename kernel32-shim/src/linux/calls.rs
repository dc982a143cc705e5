//! The interposed calls on descriptors: data, offsets, attributes of open files, `dup`,
//! `fcntl`, `close`, `mmap`. Every one first asks whether the descriptor stands for a DFS
//! file (one atomic load); if not, or if this thread is inside the shim already, the C
//! library's function is called with the arguments unchanged.

use std::ffi::{c_int, c_uint, c_ulong};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dfs_proto::attr::{SetAttr, SetTime, Timestamp};
use dfs_proto::Errno;
use vmmc_sockets::SharedBytes;

use super::abi::{self, Stat};
use super::ffi::{self, off_t, size_t, ssize_t, Buf, BufMut, In, IoVecs, MapPtr, Out};
use super::{creds, enter, enter_fd, stdio, Open, Shim, KEPT_FLAGS};
use crate::errno::{EBADF, ENODEV, ENOTTY};
use crate::table::Kind;

// ---------------------------------------------------------------------------------------
// Returning to C

/// Sets `errno` and returns the failure value.
pub(crate) fn fail<R>(e: Errno, v: R) -> R {
    ffi::set_errno(e.0);
    v
}

pub(crate) fn int(r: Result<c_int, Errno>) -> c_int {
    r.unwrap_or_else(|e| fail(e, -1))
}

pub(crate) fn unit(r: Result<(), Errno>) -> c_int {
    int(r.map(|()| 0))
}

pub(crate) fn ssize(r: Result<usize, Errno>) -> ssize_t {
    match r {
        Ok(n) => n as ssize_t,
        Err(e) => fail(e, -1),
    }
}

// ---------------------------------------------------------------------------------------
// The operations, on a DFS file

impl Shim {
    /// Checks that `o` may be read (or written): returns its current flags.
    fn io_check(&self, o: &Open, write: bool) -> Result<c_int, Errno> {
        match o.kind {
            Kind::File => {}
            Kind::Dir if !write => return Err(Errno::EISDIR),
            Kind::Dir | Kind::Path => return Err(EBADF),
        }
        let flags = self.table.flags(o.id)? as c_int;
        let acc = flags & libc::O_ACCMODE;
        if (write && acc == libc::O_RDONLY) || (!write && acc == libc::O_WRONLY) {
            return Err(EBADF);
        }
        Ok(flags)
    }

    /// Reads up to `len` bytes at `at`, or at the description's offset (which then moves),
    /// handing each piece to `sink` with its place in the caller's buffer; or, when the
    /// caller's buffers are `direct` and the server lent the file (see [`super::lent`]),
    /// straight into them from the server's page cache.
    pub(crate) fn read_to(
        &self,
        o: &Open,
        len: usize,
        at: Option<u64>,
        direct: Option<&[(BufMut<'_>, usize)]>,
        sink: impl FnMut(usize, SharedBytes<'_>),
    ) -> Result<usize, Errno> {
        self.io_check(o, false)?;
        if len == 0 {
            return Ok(0);
        }
        let c = creds();
        let read = |off: u64, sink| {
            let lent = self
                .lent
                .as_ref()
                .zip(direct)
                .and_then(|(l, dest)| l.read(self, o, &c, dest, off));
            match lent {
                Some(r) => r,
                None => self
                    .dfs
                    .read(o.mount, &c, &o.handle, o.open, off, len, sink),
            }
        };
        match at {
            Some(off) => read(off, sink),
            None => {
                let _held = self
                    .table
                    .offset_lock(o.id)?
                    .lock(ffi::gettid(), ffi::alive);
                let pos = self.table.offset(o.id)?;
                let off = pos.load(Ordering::Relaxed);
                let n = read(off, sink)?;
                pos.store(off + n as u64, Ordering::Relaxed);
                Ok(n)
            }
        }
    }

    /// Writes `data` at `at`, or at the description's offset (at the end for `O_APPEND`).
    pub(crate) fn write_from(
        &self,
        o: &Open,
        data: &[u8],
        at: Option<u64>,
    ) -> Result<usize, Errno> {
        let flags = self.io_check(o, true)?;
        if data.is_empty() {
            return Ok(0);
        }
        let append = flags & libc::O_APPEND != 0;
        // An open whose append mode `F_SETFL` changed no longer writes as asked: the server
        // then writes through the handle, with the mode given per write.
        let open = if append == o.open_append {
            o.open
        } else {
            None
        };
        let c = creds();
        match at {
            Some(off) => Ok(self
                .dfs
                .write(o.mount, &c, &o.handle, open, off, append, data)?
                .0),
            None => {
                let _held = self
                    .table
                    .offset_lock(o.id)?
                    .lock(ffi::gettid(), ffi::alive);
                let pos = self.table.offset(o.id)?;
                let off = pos.load(Ordering::Relaxed);
                let (n, attr) = self
                    .dfs
                    .write(o.mount, &c, &o.handle, open, off, append, data)?;
                let end = match (append, attr) {
                    (true, Some(a)) => a.size,
                    _ => off + n as u64,
                };
                pos.store(end, Ordering::Relaxed);
                Ok(n)
            }
        }
    }

    /// The file's attributes (through the open, which works after an unlink).
    pub(crate) fn attr(&self, o: &Open) -> Result<dfs_proto::attr::Attr, Errno> {
        let c = creds();
        self.dfs.client(o.mount, &c)?.getattr(&c, &o.handle, o.open)
    }

    fn seek(&self, o: &Open, off: i64, whence: c_int) -> Result<i64, Errno> {
        let pos = self.table.offset(o.id)?;
        match o.kind {
            Kind::Path => Err(EBADF),
            Kind::Dir => match whence {
                libc::SEEK_SET if off >= 0 => {
                    pos.store(off as u64, Ordering::Relaxed);
                    Ok(off)
                }
                libc::SEEK_CUR if off == 0 => Ok(pos.load(Ordering::Relaxed) as i64),
                _ => Err(Errno::EINVAL),
            },
            Kind::File => {
                let _held = self
                    .table
                    .offset_lock(o.id)?
                    .lock(ffi::gettid(), ffi::alive);
                let cur = pos.load(Ordering::Relaxed) as i64;
                let new = match whence {
                    libc::SEEK_SET => off,
                    libc::SEEK_CUR => cur.checked_add(off).ok_or(crate::errno::EOVERFLOW)?,
                    libc::SEEK_END | libc::SEEK_DATA | libc::SEEK_HOLE => {
                        let size = self.attr(o)?.size as i64;
                        match whence {
                            libc::SEEK_END => {
                                size.checked_add(off).ok_or(crate::errno::EOVERFLOW)?
                            }
                            // No holes are reported: data everywhere up to the end.
                            _ if off < 0 => return Err(Errno::EINVAL),
                            _ if off >= size => return Err(crate::errno::ENXIO),
                            libc::SEEK_DATA => off,
                            _ => size,
                        }
                    }
                    _ => return Err(Errno::EINVAL),
                };
                if new < 0 {
                    return Err(Errno::EINVAL);
                }
                pos.store(new as u64, Ordering::Relaxed);
                Ok(new)
            }
        }
    }

    fn setattr(&self, o: &Open, set: SetAttr) -> Result<(), Errno> {
        if o.kind == Kind::Path {
            return Err(EBADF);
        }
        self.dfs.forget_dirs();
        let c = creds();
        self.dfs
            .client(o.mount, &c)?
            .setattr(&c, &o.handle, o.open, set)
            .map(drop)
    }

    /// Closes a DFS descriptor: the placeholder, this process's holding, and (for the last
    /// holder anywhere) the server's open.
    pub(crate) fn close_fd(&self, fd: c_int, o: Arc<Open>) -> c_int {
        stdio::before_change(fd);
        self.fds.remove(fd);
        stdio::fd_changed(self, fd);
        self.locks.closed(o.ino);
        let r = ffi::close(fd);
        let e = ffi::errno();
        self.unhold(&o);
        ffi::set_errno(e);
        r
    }

    /// Records that `newfd` now stands for `o` too (after a `dup` the kernel made).
    fn duped(&self, newfd: c_int, o: &Arc<Open>) {
        self.fds.set(newfd, o.clone());
        let g = self.lock();
        self.table.hold(&g, self.me(), o.id, 1);
    }

    /// After `dup2`/`dup3` onto `newfd`: what `newfd` was (if ours) is closed, and it now
    /// stands for `o` (if ours).
    fn duped_onto(&self, newfd: c_int, old: Option<Arc<Open>>, o: Option<Arc<Open>>) {
        if let Some(old) = old {
            self.fds.remove(newfd);
            self.locks.closed(old.ino);
            self.unhold(&old);
        }
        if let Some(o) = o {
            self.duped(newfd, &o);
        }
        stdio::fd_changed(self, newfd);
    }
}

fn put_into(buf: BufMut<'_>, len: usize) -> impl FnMut(usize, SharedBytes<'_>) + '_ {
    move |at, data| {
        buf.put_shared(len, at, &data);
    }
}

/// Scatters pieces of a read over an iovec list.
fn scatter<'a>(iov: &'a [(BufMut<'a>, usize)]) -> impl FnMut(usize, SharedBytes<'_>) + 'a {
    move |mut at, data| {
        let mut done = 0usize;
        let mut base = 0usize;
        for (b, len) in iov {
            if done >= data.len() {
                break;
            }
            let end = base + len;
            if at < end {
                let off = at - base;
                let take = (len - off).min(data.len() - done);
                if let Some(piece) = data.get(done..done + take) {
                    b.put_shared(*len, off, &piece);
                }
                done += take;
                at += take;
            }
            base = end;
        }
    }
}

/// `lseek` on a DFS descriptor without entering the shim (for the stdio streams, which
/// may run while this thread is inside it).
pub(crate) fn seek_direct(shim: &Shim, fd: c_int, off: i64, whence: c_int) -> i64 {
    match shim.fds.get(fd) {
        Some(o) => shim.seek(&o, off, whence).unwrap_or_else(|e| fail(e, -1)),
        None => fail(EBADF, -1),
    }
}

fn offset_arg(off: off_t) -> Result<u64, Errno> {
    u64::try_from(off).map_err(|_| Errno::EINVAL)
}

// ---------------------------------------------------------------------------------------
// Data

/// `read(2)`.
#[no_mangle]
pub extern "C" fn read(fd: c_int, buf: BufMut<'_>, n: size_t) -> ssize_t {
    match enter_fd(fd) {
        None => ffi::read(fd, buf, n),
        Some((e, o)) => ssize(
            e.shim
                .read_to(&o, n, None, Some(&[(buf, n)]), put_into(buf, n)),
        ),
    }
}

/// `__read_chk` (fortified `read`).
#[no_mangle]
pub extern "C" fn __read_chk(fd: c_int, buf: BufMut<'_>, n: size_t, _buflen: size_t) -> ssize_t {
    read(fd, buf, n)
}

/// `pread64(2)`.
#[no_mangle]
pub extern "C" fn pread64(fd: c_int, buf: BufMut<'_>, n: size_t, off: off_t) -> ssize_t {
    match enter_fd(fd) {
        None => ffi::pread64(fd, buf, n, off),
        Some((e, o)) => ssize(offset_arg(off).and_then(|at| {
            e.shim
                .read_to(&o, n, Some(at), Some(&[(buf, n)]), put_into(buf, n))
        })),
    }
}

/// `pread(2)` (the same as `pread64` on x86_64).
#[no_mangle]
pub extern "C" fn pread(fd: c_int, buf: BufMut<'_>, n: size_t, off: off_t) -> ssize_t {
    pread64(fd, buf, n, off)
}

/// `__pread64_chk`.
#[no_mangle]
pub extern "C" fn __pread64_chk(
    fd: c_int,
    buf: BufMut<'_>,
    n: size_t,
    off: off_t,
    _buflen: size_t,
) -> ssize_t {
    pread64(fd, buf, n, off)
}

/// `__pread_chk`.
#[no_mangle]
pub extern "C" fn __pread_chk(
    fd: c_int,
    buf: BufMut<'_>,
    n: size_t,
    off: off_t,
    _buflen: size_t,
) -> ssize_t {
    pread64(fd, buf, n, off)
}

/// `write(2)`.
#[no_mangle]
pub extern "C" fn write(fd: c_int, buf: Buf<'_>, n: size_t) -> ssize_t {
    match enter_fd(fd) {
        None => ffi::write(fd, buf, n),
        Some((e, o)) => ssize(e.shim.write_from(&o, buf.slice(n), None)),
    }
}

/// `pwrite64(2)`.
#[no_mangle]
pub extern "C" fn pwrite64(fd: c_int, buf: Buf<'_>, n: size_t, off: off_t) -> ssize_t {
    match enter_fd(fd) {
        None => ffi::pwrite64(fd, buf, n, off),
        Some((e, o)) => {
            ssize(offset_arg(off).and_then(|at| e.shim.write_from(&o, buf.slice(n), Some(at))))
        }
    }
}

/// `pwrite(2)`.
#[no_mangle]
pub extern "C" fn pwrite(fd: c_int, buf: Buf<'_>, n: size_t, off: off_t) -> ssize_t {
    pwrite64(fd, buf, n, off)
}

fn readv_at(fd: c_int, iov: IoVecs<'_>, n: c_int, at: Option<u64>) -> Option<ssize_t> {
    let (e, o) = enter_fd(fd)?;
    let r = (|| {
        let v = iov.entries(n).ok_or(Errno::EINVAL)?;
        let total: usize = v.iter().map(|(_, l)| *l).sum();
        e.shim.read_to(&o, total, at, Some(&v), scatter(&v))
    })();
    Some(ssize(r))
}

/// Most bytes a `writev` gathers into one request (above, each piece is its own).
const GATHER_MAX: usize = 64 << 10;

fn writev_at(fd: c_int, iov: IoVecs<'_>, n: c_int, at: Option<u64>) -> Option<ssize_t> {
    let (e, o) = enter_fd(fd)?;
    let r = (|| {
        let v = iov.entries_in(n).ok_or(Errno::EINVAL)?;
        let total: usize = v.iter().map(|s| s.len()).sum();
        if v.iter().filter(|s| !s.is_empty()).count() <= 1 || total > GATHER_MAX {
            // One piece, or more than is worth an extra copy: piece by piece, each copied
            // once, into the ring.
            let mut done = 0usize;
            for s in v.iter().filter(|s| !s.is_empty()) {
                let n = e.shim.write_from(&o, s, at.map(|a| a + done as u64))?;
                done += n;
                if n < s.len() {
                    break;
                }
            }
            return Ok(done);
        }
        // Small pieces (stdio's header and body): gathered, to cost one round trip; the
        // extra copy of a few KiB is cheaper than a round trip per piece.
        let joined: Vec<u8> = v.concat();
        e.shim.write_from(&o, &joined, at)
    })();
    Some(ssize(r))
}

/// `readv(2)`.
#[no_mangle]
pub extern "C" fn readv(fd: c_int, iov: IoVecs<'_>, n: c_int) -> ssize_t {
    readv_at(fd, iov, n, None).unwrap_or_else(|| ffi::readv(fd, iov, n))
}

/// `writev(2)`.
#[no_mangle]
pub extern "C" fn writev(fd: c_int, iov: IoVecs<'_>, n: c_int) -> ssize_t {
    writev_at(fd, iov, n, None).unwrap_or_else(|| ffi::writev(fd, iov, n))
}

/// `preadv64(2)`.
#[no_mangle]
pub extern "C" fn preadv64(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t {
    match offset_arg(off) {
        Ok(at) => readv_at(fd, iov, n, Some(at)),
        Err(e) => enter_fd(fd).map(|_| fail(e, -1)),
    }
    .unwrap_or_else(|| ffi::preadv64(fd, iov, n, off))
}

/// `preadv(2)`.
#[no_mangle]
pub extern "C" fn preadv(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t {
    preadv64(fd, iov, n, off)
}

/// `pwritev64(2)`.
#[no_mangle]
pub extern "C" fn pwritev64(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t {
    match offset_arg(off) {
        Ok(at) => writev_at(fd, iov, n, Some(at)),
        Err(e) => enter_fd(fd).map(|_| fail(e, -1)),
    }
    .unwrap_or_else(|| ffi::pwritev64(fd, iov, n, off))
}

/// `pwritev(2)`.
#[no_mangle]
pub extern "C" fn pwritev(fd: c_int, iov: IoVecs<'_>, n: c_int, off: off_t) -> ssize_t {
    pwritev64(fd, iov, n, off)
}

/// `preadv2(2)`: an offset of -1 means the current one; the flags (hints) are ignored.
#[no_mangle]
pub extern "C" fn preadv64v2(
    fd: c_int,
    iov: IoVecs<'_>,
    n: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    let at = if off == -1 {
        None
    } else {
        offset_arg(off).ok()
    };
    readv_at(fd, iov, n, at).unwrap_or_else(|| ffi::preadv64v2(fd, iov, n, off, flags))
}

/// `preadv2(2)`.
#[no_mangle]
pub extern "C" fn preadv2(
    fd: c_int,
    iov: IoVecs<'_>,
    n: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    preadv64v2(fd, iov, n, off, flags)
}

/// `pwritev2(2)`.
#[no_mangle]
pub extern "C" fn pwritev64v2(
    fd: c_int,
    iov: IoVecs<'_>,
    n: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    let at = if off == -1 {
        None
    } else {
        offset_arg(off).ok()
    };
    writev_at(fd, iov, n, at).unwrap_or_else(|| ffi::pwritev64v2(fd, iov, n, off, flags))
}

/// `pwritev2(2)`.
#[no_mangle]
pub extern "C" fn pwritev2(
    fd: c_int,
    iov: IoVecs<'_>,
    n: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    pwritev64v2(fd, iov, n, off, flags)
}

// ---------------------------------------------------------------------------------------
// Offsets and attributes

/// `lseek64(2)`.
#[no_mangle]
pub extern "C" fn lseek64(fd: c_int, off: off_t, whence: c_int) -> off_t {
    match enter_fd(fd) {
        None => ffi::lseek64(fd, off, whence),
        Some((e, o)) => e.shim.seek(&o, off, whence).unwrap_or_else(|e| fail(e, -1)),
    }
}

/// `lseek(2)`.
#[no_mangle]
pub extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    lseek64(fd, off, whence)
}

pub(crate) fn fstat_impl(fd: c_int, st: Out<'_, Stat>) -> Option<c_int> {
    let (e, o) = enter_fd(fd)?;
    Some(unit(e.shim.attr(&o).and_then(|a| {
        if st.set(Stat::of(&a, o.mount)) {
            Ok(())
        } else {
            Err(Errno(libc::EFAULT))
        }
    })))
}

/// `fstat64(2)`.
#[no_mangle]
pub extern "C" fn fstat64(fd: c_int, st: Out<'_, Stat>) -> c_int {
    fstat_impl(fd, st).unwrap_or_else(|| ffi::fstat64(fd, st))
}

/// `fstat(2)`.
#[no_mangle]
pub extern "C" fn fstat(fd: c_int, st: Out<'_, Stat>) -> c_int {
    fstat64(fd, st)
}

/// `__fxstat64` (the stat ABI of programs built before glibc 2.33).
#[no_mangle]
pub extern "C" fn __fxstat64(ver: c_int, fd: c_int, st: Out<'_, Stat>) -> c_int {
    fstat_impl(fd, st).unwrap_or_else(|| ffi::__fxstat64(ver, fd, st))
}

/// `__fxstat`.
#[no_mangle]
pub extern "C" fn __fxstat(ver: c_int, fd: c_int, st: Out<'_, Stat>) -> c_int {
    __fxstat64(ver, fd, st)
}

/// `fstatfs64(2)`.
#[no_mangle]
pub extern "C" fn fstatfs64(fd: c_int, st: Out<'_, abi::Statfs>) -> c_int {
    match enter_fd(fd) {
        None => ffi::fstatfs64(fd, st),
        Some((e, o)) => unit((|| {
            let c = creds();
            let s = e.shim.dfs.client(o.mount, &c)?.statfs(&c, &o.handle)?;
            st.set(abi::Statfs::of(&s, o.mount));
            Ok(())
        })()),
    }
}

/// `fstatfs(2)`.
#[no_mangle]
pub extern "C" fn fstatfs(fd: c_int, st: Out<'_, abi::Statfs>) -> c_int {
    fstatfs64(fd, st)
}

/// `fstatvfs64(3)`.
#[no_mangle]
pub extern "C" fn fstatvfs64(fd: c_int, st: Out<'_, abi::Statvfs>) -> c_int {
    match enter_fd(fd) {
        None => ffi::fstatvfs64(fd, st),
        Some((e, o)) => unit((|| {
            let c = creds();
            let s = e.shim.dfs.client(o.mount, &c)?.statfs(&c, &o.handle)?;
            st.set(abi::Statvfs::of(&s, o.mount));
            Ok(())
        })()),
    }
}

/// `fstatvfs(3)`.
#[no_mangle]
pub extern "C" fn fstatvfs(fd: c_int, st: Out<'_, abi::Statvfs>) -> c_int {
    fstatvfs64(fd, st)
}

/// `ftruncate64(2)`.
#[no_mangle]
pub extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    match enter_fd(fd) {
        None => ffi::ftruncate64(fd, len),
        Some((e, o)) => unit((|| {
            let size = u64::try_from(len).map_err(|_| Errno::EINVAL)?;
            match e.shim.io_check(&o, true) {
                Ok(_) => {}
                Err(x) if x == EBADF && o.kind == Kind::File => return Err(Errno::EINVAL),
                Err(x) => return Err(x),
            }
            e.shim.setattr(
                &o,
                SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                },
            )
        })()),
    }
}

/// `ftruncate(2)`.
#[no_mangle]
pub extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    ftruncate64(fd, len)
}

fn sync_fd(fd: c_int, datasync: bool) -> Option<c_int> {
    let (e, o) = enter_fd(fd)?;
    Some(unit((|| {
        if o.kind == Kind::Path {
            return Err(EBADF);
        }
        let c = creds();
        e.shim
            .dfs
            .client(o.mount, &c)?
            .fsync(&c, &o.handle, o.open, datasync)
    })()))
}

/// `fsync(2)`.
#[no_mangle]
pub extern "C" fn fsync(fd: c_int) -> c_int {
    sync_fd(fd, false).unwrap_or_else(|| ffi::fsync(fd))
}

/// `fdatasync(2)`.
#[no_mangle]
pub extern "C" fn fdatasync(fd: c_int) -> c_int {
    sync_fd(fd, true).unwrap_or_else(|| ffi::fdatasync(fd))
}

/// `syncfs(2)`: the server's writes are its kernel's; an `fsync` of the file's handle is
/// the closest thing.
#[no_mangle]
pub extern "C" fn syncfs(fd: c_int) -> c_int {
    sync_fd(fd, false).unwrap_or_else(|| ffi::syncfs(fd))
}

fn fallocate_impl(fd: c_int, mode: c_int, off: off_t, len: off_t) -> Option<Result<(), Errno>> {
    let (e, o) = enter_fd(fd)?;
    Some((|| {
        e.shim.io_check(&o, true)?;
        let (off, len) = (
            u64::try_from(off).map_err(|_| Errno::EINVAL)?,
            u64::try_from(len).map_err(|_| Errno::EINVAL)?,
        );
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let c = creds();
        e.shim
            .dfs
            .client(o.mount, &c)?
            .fallocate(&c, &o.handle, o.open, mode as u32, off, len)
    })())
}

/// `fallocate64(2)`.
#[no_mangle]
pub extern "C" fn fallocate64(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    fallocate_impl(fd, mode, off, len)
        .map(unit)
        .unwrap_or_else(|| ffi::fallocate64(fd, mode, off, len))
}

/// `fallocate(2)`.
#[no_mangle]
pub extern "C" fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    fallocate64(fd, mode, off, len)
}

/// `posix_fallocate64(3)`: returns the error number itself.
#[no_mangle]
pub extern "C" fn posix_fallocate64(fd: c_int, off: off_t, len: off_t) -> c_int {
    match fallocate_impl(fd, 0, off, len) {
        None => ffi::posix_fallocate64(fd, off, len),
        Some(Ok(())) => 0,
        Some(Err(e)) => e.0,
    }
}

/// `posix_fallocate(3)`.
#[no_mangle]
pub extern "C" fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int {
    posix_fallocate64(fd, off, len)
}

/// `posix_fadvise64(2)`: advice is taken and ignored for DFS files.
#[no_mangle]
pub extern "C" fn posix_fadvise64(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
    match enter_fd(fd) {
        None => ffi::posix_fadvise64(fd, off, len, advice),
        Some(_) => 0,
    }
}

/// `posix_fadvise(2)`.
#[no_mangle]
pub extern "C" fn posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int {
    posix_fadvise64(fd, off, len, advice)
}

/// `readahead(2)`: nothing to do for a DFS file.
#[no_mangle]
pub extern "C" fn readahead(fd: c_int, off: off_t, len: size_t) -> ssize_t {
    match enter_fd(fd) {
        None => ffi::readahead(fd, off, len),
        Some(_) => 0,
    }
}

/// `fchmod(2)`.
#[no_mangle]
pub extern "C" fn fchmod(fd: c_int, mode: ffi::mode_t) -> c_int {
    match enter_fd(fd) {
        None => ffi::fchmod(fd, mode),
        Some((e, o)) => unit(e.shim.setattr(
            &o,
            SetAttr {
                mode: Some(mode & 0o7777),
                ..SetAttr::default()
            },
        )),
    }
}

pub(crate) fn owner(uid: u32, gid: u32) -> SetAttr {
    SetAttr {
        uid: (uid != u32::MAX).then_some(uid),
        gid: (gid != u32::MAX).then_some(gid),
        ..SetAttr::default()
    }
}

/// `fchown(2)`.
#[no_mangle]
pub extern "C" fn fchown(fd: c_int, uid: u32, gid: u32) -> c_int {
    match enter_fd(fd) {
        None => ffi::fchown(fd, uid, gid),
        Some((e, o)) => unit(e.shim.setattr(&o, owner(uid, gid))),
    }
}

/// Times as `utimensat` takes them (`None`: both now).
pub(crate) fn times(ts: Option<Vec<abi::Timespec>>) -> SetAttr {
    let one = |t: &abi::Timespec| match t.tv_nsec {
        libc::UTIME_OMIT => None,
        libc::UTIME_NOW => Some(SetTime::Now),
        n => Some(SetTime::At(Timestamp {
            secs: t.tv_sec,
            nanos: n.clamp(0, 999_999_999) as u32,
        })),
    };
    match ts {
        None => SetAttr {
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..SetAttr::default()
        },
        Some(v) => SetAttr {
            atime: v.first().and_then(one),
            mtime: v.get(1).and_then(one),
            ..SetAttr::default()
        },
    }
}

/// Whether a timespec pair is valid for `utimensat` (`EINVAL` otherwise).
pub(crate) fn times_valid(ts: &Option<Vec<abi::Timespec>>) -> bool {
    ts.as_ref().is_none_or(|v| {
        v.iter().all(|t| {
            matches!(t.tv_nsec, libc::UTIME_NOW | libc::UTIME_OMIT)
                || (0..1_000_000_000).contains(&t.tv_nsec)
        })
    })
}

/// `timeval` pairs as timespecs.
pub(crate) fn from_timevals(tv: Option<Vec<abi::Timeval>>) -> Option<Vec<abi::Timespec>> {
    tv.map(|v| {
        v.iter()
            .map(|t| abi::Timespec {
                tv_sec: t.tv_sec,
                tv_nsec: t.tv_usec.clamp(0, 999_999) * 1000,
            })
            .collect()
    })
}

/// `futimens(3)`.
#[no_mangle]
pub extern "C" fn futimens(fd: c_int, t: In<'_, abi::Timespec>) -> c_int {
    match enter_fd(fd) {
        None => ffi::futimens(fd, t),
        Some((e, o)) => {
            let ts = t.array(2);
            if !times_valid(&ts) {
                return fail(Errno::EINVAL, -1);
            }
            unit(e.shim.setattr(&o, times(ts)))
        }
    }
}

/// `futimes(3)`.
#[no_mangle]
pub extern "C" fn futimes(fd: c_int, t: In<'_, abi::Timeval>) -> c_int {
    match enter_fd(fd) {
        None => ffi::futimes(fd, t),
        Some((e, o)) => unit(e.shim.setattr(&o, times(from_timevals(t.array(2))))),
    }
}

// ---------------------------------------------------------------------------------------
// Extended attributes of open files

fn xattr_name(name: ffi::CStrPtr<'_>) -> Result<dfs_proto::name::XattrName, Errno> {
    dfs_proto::name::XattrName::new(name.bytes().ok_or(Errno(libc::EFAULT))?).map_err(|e| e.errno())
}

/// Copies an xattr reply into the caller's buffer: the size for a size-0 request, else
/// the bytes (`ERANGE` if they do not fit).
pub(crate) fn xattr_reply(
    r: dfs_proto::msg::Body,
    v: BufMut<'_>,
    n: size_t,
) -> Result<usize, Errno> {
    match r {
        dfs_proto::msg::Body::XattrSize(s) => Ok(s as usize),
        dfs_proto::msg::Body::XattrData(d) => {
            if n == 0 {
                return Ok(d.len());
            }
            if d.len() > n {
                return Err(Errno::ERANGE);
            }
            v.put(n, 0, &d);
            Ok(d.len())
        }
        _ => Err(Errno::EIO),
    }
}

/// Runs an xattr request on an open DFS file.
fn fxattr<R>(
    fd: c_int,
    f: impl FnOnce(&Shim, &Open, &dfs_client::Client, &dfs_proto::msg::Creds) -> Result<R, Errno>,
) -> Option<Result<R, Errno>> {
    let (e, o) = enter_fd(fd)?;
    Some((|| {
        let c = creds();
        let client = e.shim.dfs.client(o.mount, &c)?;
        f(e.shim, &o, &client, &c)
    })())
}

/// `fgetxattr(2)`.
#[no_mangle]
pub extern "C" fn fgetxattr(
    fd: c_int,
    name: ffi::CStrPtr<'_>,
    v: BufMut<'_>,
    n: size_t,
) -> ssize_t {
    fxattr(fd, |_, o, cl, c| {
        let size = u32::try_from(n).unwrap_or(u32::MAX).min(65536);
        xattr_reply(cl.getxattr(c, &o.handle, &xattr_name(name)?, size)?, v, n)
    })
    .map(ssize)
    .unwrap_or_else(|| ffi::fgetxattr(fd, name, v, n))
}

/// `fsetxattr(2)`.
#[no_mangle]
pub extern "C" fn fsetxattr(
    fd: c_int,
    name: ffi::CStrPtr<'_>,
    v: Buf<'_>,
    n: size_t,
    flags: c_int,
) -> c_int {
    fxattr(fd, |_, o, cl, c| {
        cl.setxattr(c, &o.handle, &xattr_name(name)?, v.slice(n), flags as u32)
    })
    .map(unit)
    .unwrap_or_else(|| ffi::fsetxattr(fd, name, v, n, flags))
}

/// `flistxattr(2)`.
#[no_mangle]
pub extern "C" fn flistxattr(fd: c_int, v: BufMut<'_>, n: size_t) -> ssize_t {
    fxattr(fd, |_, o, cl, c| {
        let size = u32::try_from(n).unwrap_or(u32::MAX).min(65536);
        xattr_reply(cl.listxattr(c, &o.handle, size)?, v, n)
    })
    .map(ssize)
    .unwrap_or_else(|| ffi::flistxattr(fd, v, n))
}

/// `fremovexattr(2)`.
#[no_mangle]
pub extern "C" fn fremovexattr(fd: c_int, name: ffi::CStrPtr<'_>) -> c_int {
    fxattr(fd, |_, o, cl, c| {
        cl.removexattr(c, &o.handle, &xattr_name(name)?)
    })
    .map(unit)
    .unwrap_or_else(|| ffi::fremovexattr(fd, name))
}

// ---------------------------------------------------------------------------------------
// Descriptors

/// `close(2)`.
#[no_mangle]
pub extern "C" fn close(fd: c_int) -> c_int {
    if let Some(e) = enter() {
        if e.shim.is_table_fd(fd) {
            // The run's table: kept for the children (a program closing it gets what it
            // wanted, a descriptor it no longer uses).
            return 0;
        }
        if let Some(o) = e.shim.fds.get(fd) {
            return e.shim.close_fd(fd, o);
        }
    }
    ffi::close(fd)
}

/// `__close` (glibc's internal name, exported too).
#[no_mangle]
pub extern "C" fn __close(fd: c_int) -> c_int {
    close(fd)
}

/// `dup(2)`.
#[no_mangle]
pub extern "C" fn dup(fd: c_int) -> c_int {
    let Some((e, o)) = enter_fd(fd) else {
        return ffi::dup(fd);
    };
    let n = ffi::dup(fd);
    if n >= 0 {
        e.shim.duped(n, &o);
    }
    n
}

fn dup_onto(fd: c_int, to: c_int, real: impl FnOnce() -> c_int) -> c_int {
    let Some(e) = enter() else { return real() };
    if e.shim.is_table_fd(to) && fd != to {
        // The program wants the table's number: the table moves out of its way.
        super::proc::move_table(e.shim);
    }
    if !e.shim.fds.is_ours(fd) && !e.shim.fds.is_ours(to) {
        drop(e);
        return real();
    }
    let old = e.shim.fds.get(to);
    let o = e.shim.fds.get(fd);
    if fd != to {
        stdio::before_change(to);
    }
    let r = real();
    if r < 0 || fd == to {
        return r;
    }
    let err = ffi::errno();
    e.shim.duped_onto(to, old, o);
    ffi::set_errno(err);
    r
}

/// `dup2(2)`.
#[no_mangle]
pub extern "C" fn dup2(fd: c_int, to: c_int) -> c_int {
    dup_onto(fd, to, || ffi::dup2(fd, to))
}

/// `dup3(2)`.
#[no_mangle]
pub extern "C" fn dup3(fd: c_int, to: c_int, flags: c_int) -> c_int {
    dup_onto(fd, to, || ffi::dup3(fd, to, flags))
}

/// `fcntl64(2)`. The third argument is declared fixed: see [`ffi`] on variadic functions.
#[no_mangle]
pub extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let Some((e, o)) = enter_fd(fd) else {
        return ffi::fcntl64(fd, cmd, arg);
    };
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let n = ffi::fcntl64(fd, cmd, arg);
            if n >= 0 {
                e.shim.duped(n, &o);
            }
            n
        }
        libc::F_GETFL => {
            let flags = e.shim.table.flags(o.id).map(|f| f as c_int);
            // As the kernel reports for 64-bit opens.
            int(flags.map(|f| f | libc::O_LARGEFILE))
        }
        libc::F_SETFL => {
            let changeable = libc::O_APPEND
                | libc::O_NONBLOCK
                | libc::O_ASYNC
                | libc::O_DIRECT
                | libc::O_NOATIME;
            let r = e.shim.table.flags(o.id).and_then(|f| {
                let f = f as c_int;
                let new = (f & !changeable) | (arg as c_int & changeable & KEPT_FLAGS);
                e.shim.table.set_flags(o.id, new as u32)
            });
            unit(r)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => int(super::locks::fcntl_lock(e.shim, &o, cmd, arg)),
        // FD_CLOEXEC and the rest are the placeholder's: the kernel's (an O_PATH descriptor
        // refuses what needs an open file, loudly).
        _ => ffi::fcntl64(fd, cmd, arg),
    }
}

/// `fcntl(2)`.
#[no_mangle]
pub extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl64(fd, cmd, arg)
}

/// `ioctl(2)`: no ioctl is served on a DFS file (`ENOTTY`, as the FUSE mount answers).
#[no_mangle]
pub extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    match enter_fd(fd) {
        None => ffi::ioctl(fd, req, arg),
        Some(_) => fail(ENOTTY, -1),
    }
}

/// `isatty(3)`.
#[no_mangle]
pub extern "C" fn isatty(fd: c_int) -> c_int {
    match enter_fd(fd) {
        None => ffi::isatty(fd),
        Some(_) => fail(ENOTTY, 0),
    }
}

/// `flock(2)`.
#[no_mangle]
pub extern "C" fn flock(fd: c_int, op: c_int) -> c_int {
    match enter_fd(fd) {
        None => ffi::flock(fd, op),
        Some((e, o)) => int(super::locks::flock(e.shim, &o, op)),
    }
}

/// `lockf64(3)`: glibc's calls `fcntl` internally, past this library, so it is done here.
#[no_mangle]
pub extern "C" fn lockf64(fd: c_int, cmd: c_int, len: off_t) -> c_int {
    let Some((e, o)) = enter_fd(fd) else {
        drop(enter());
        return lockf_local(fd, cmd, len);
    };
    int(super::locks::lockf(e.shim, &o, cmd, len))
}

/// `lockf(3)`.
#[no_mangle]
pub extern "C" fn lockf(fd: c_int, cmd: c_int, len: off_t) -> c_int {
    lockf64(fd, cmd, len)
}

/// `lockf` on a local descriptor, as glibc does it (through `fcntl`).
fn lockf_local(fd: c_int, cmd: c_int, len: off_t) -> c_int {
    let mut fl = abi::Flock {
        l_whence: libc::SEEK_CUR as i16,
        l_len: len,
        ..abi::Flock::default()
    };
    match cmd {
        libc::F_TEST => {
            fl.l_type = libc::F_RDLCK as i16;
            if ffi::fcntl_lock(fd, libc::F_GETLK, &mut fl) < 0 {
                return -1;
            }
            if fl.l_type == libc::F_UNLCK as i16 || fl.l_pid == std::process::id() as i32 {
                return 0;
            }
            fail(Errno(libc::EACCES), -1)
        }
        libc::F_ULOCK => {
            fl.l_type = libc::F_UNLCK as i16;
            ffi::fcntl_lock(fd, libc::F_SETLK, &mut fl)
        }
        libc::F_LOCK => {
            fl.l_type = libc::F_WRLCK as i16;
            ffi::fcntl_lock(fd, libc::F_SETLKW, &mut fl)
        }
        libc::F_TLOCK => {
            fl.l_type = libc::F_WRLCK as i16;
            ffi::fcntl_lock(fd, libc::F_SETLK, &mut fl)
        }
        _ => fail(Errno::EINVAL, -1),
    }
}

// ---------------------------------------------------------------------------------------
// Copies between descriptors

/// One end of a copy.
enum End {
    Dfs(Arc<Open>),
    Local(c_int),
}

fn end_of(shim: &Shim, fd: c_int) -> End {
    match shim.fds.get(fd) {
        Some(o) => End::Dfs(o),
        None => End::Local(fd),
    }
}

/// Copies up to `count` bytes from `inp` to `out` through a buffer of ours, at explicit
/// offsets where given (which then move; the descriptors' own offsets do not), else at
/// the descriptors' offsets: `sendfile` and `copy_file_range` with a DFS file on either
/// side.
fn copy(
    shim: &Shim,
    inp: End,
    mut in_off: Option<u64>,
    out: End,
    mut out_off: Option<u64>,
    count: usize,
) -> Result<(usize, Option<u64>, Option<u64>), Errno> {
    let mut buf = vec![0u8; count.min(1 << 20)];
    let mut done = 0usize;
    while done < count {
        let want = (count - done).min(buf.len());
        let got = match &inp {
            End::Dfs(o) => {
                let dst = BufMut::of(&mut buf[..want]);
                shim.read_to(o, want, in_off, None, |at, d| {
                    dst.put_shared(want, at, &d);
                })
            }
            End::Local(fd) => {
                let dst = BufMut::of(&mut buf[..want]);
                let n = match in_off {
                    Some(off) => ffi::pread64(*fd, dst, want, off as off_t),
                    None => ffi::read(*fd, dst, want),
                };
                if n < 0 {
                    Err(Errno(ffi::errno()))
                } else {
                    Ok(n as usize)
                }
            }
        };
        let got = match got {
            Ok(n) => n,
            Err(_) if done > 0 => break,
            Err(e) => return Err(e),
        };
        if got == 0 {
            break;
        }
        let mut put = 0usize;
        while put < got {
            let piece = &buf[put..got];
            let w = match &out {
                End::Dfs(o) => shim.write_from(o, piece, out_off.map(|o| o + put as u64)),
                End::Local(fd) => {
                    let n = match out_off {
                        Some(off) => ffi::pwrite64(
                            *fd,
                            Buf::of(piece),
                            piece.len(),
                            (off + put as u64) as off_t,
                        ),
                        None => ffi::write(*fd, Buf::of(piece), piece.len()),
                    };
                    if n < 0 {
                        Err(Errno(ffi::errno()))
                    } else {
                        Ok(n as usize)
                    }
                }
            };
            match w {
                Ok(0) => break,
                Ok(n) => put += n,
                Err(_) if done + put > 0 => break,
                Err(e) => return Err(e),
            }
        }
        done += put;
        in_off = in_off.map(|o| o + put as u64);
        out_off = out_off.map(|o| o + put as u64);
        if put < got {
            // The reader moved past what was written; a positional read is simply
            // repeated next time, an offset read cannot be taken back (as with the
            // kernel's own short sendfile).
            break;
        }
    }
    Ok((done, in_off, out_off))
}

/// `sendfile64(2)`.
#[no_mangle]
pub extern "C" fn sendfile64(out: c_int, inp: c_int, off: Out<'_, off_t>, n: size_t) -> ssize_t {
    let Some(e) = enter() else {
        return ffi::sendfile64(out, inp, off, n);
    };
    if !e.shim.fds.is_ours(out) && !e.shim.fds.is_ours(inp) {
        drop(e);
        return ffi::sendfile64(out, inp, off, n);
    }
    let r = (|| {
        let start = match off.get() {
            Some(o) => Some(u64::try_from(o).map_err(|_| Errno::EINVAL)?),
            None => None,
        };
        let (done, next, _) = copy(
            e.shim,
            end_of(e.shim, inp),
            start,
            end_of(e.shim, out),
            None,
            n,
        )?;
        if let Some(next) = next {
            off.set(next as off_t);
        }
        Ok(done)
    })();
    ssize(r)
}

/// `sendfile(2)`.
#[no_mangle]
pub extern "C" fn sendfile(out: c_int, inp: c_int, off: Out<'_, off_t>, n: size_t) -> ssize_t {
    sendfile64(out, inp, off, n)
}

/// `copy_file_range(2)`, by reading and writing when a DFS file is on either side (the
/// server has no copy of its own).
#[no_mangle]
pub extern "C" fn copy_file_range(
    fin: c_int,
    offin: Out<'_, off_t>,
    fout: c_int,
    offout: Out<'_, off_t>,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    let Some(e) = enter() else {
        return ffi::copy_file_range(fin, offin, fout, offout, n, flags);
    };
    if !e.shim.fds.is_ours(fin) && !e.shim.fds.is_ours(fout) {
        drop(e);
        return ffi::copy_file_range(fin, offin, fout, offout, n, flags);
    }
    let r = (|| {
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let get = |p: Out<'_, off_t>| match p.get() {
            Some(o) => u64::try_from(o).map(Some).map_err(|_| Errno::EINVAL),
            None => Ok(None),
        };
        let (a, b) = (get(offin)?, get(offout)?);
        for fd in [fin, fout] {
            if let Some(o) = e.shim.fds.get(fd) {
                if o.kind != Kind::File {
                    return Err(if o.kind == Kind::Dir {
                        Errno::EISDIR
                    } else {
                        EBADF
                    });
                }
            }
        }
        let (done, na, nb) = copy(e.shim, end_of(e.shim, fin), a, end_of(e.shim, fout), b, n)?;
        if let Some(na) = na {
            offin.set(na as off_t);
        }
        if let Some(nb) = nb {
            offout.set(nb as off_t);
        }
        Ok(done)
    })();
    ssize(r)
}

/// `syscall(2)`: programs that make system calls through it (Rust's `nix` calls
/// `copy_file_range` so) reach the placeholder and fail with `EBADF`; `copy_file_range` is
/// served as its interposer serves it. Its arguments are declared fixed (six registers on
/// x86_64, as the variadic ones arrive; see [`ffi`]).
#[no_mangle]
pub extern "C" fn syscall(
    n: libc::c_long,
    a: libc::c_long,
    b: libc::c_long,
    c: libc::c_long,
    d: libc::c_long,
    e: libc::c_long,
    f: libc::c_long,
) -> libc::c_long {
    if n == libc::SYS_copy_file_range {
        let (Ok(fin), Ok(fout), Ok(flags)) =
            (c_int::try_from(a), c_int::try_from(c), c_uint::try_from(f))
        else {
            return ffi::syscall(n, a, b, c, d, e, f);
        };
        return copy_file_range(
            fin,
            ffi::syscall_ptr(b),
            fout,
            ffi::syscall_ptr(d),
            e as size_t,
            flags,
        ) as libc::c_long;
    }
    ffi::syscall(n, a, b, c, d, e, f)
}

/// `splice(2)` on a DFS file: not served (`EINVAL`, as for a file that cannot splice).
#[no_mangle]
pub extern "C" fn splice(
    fin: c_int,
    offin: Out<'_, off_t>,
    fout: c_int,
    offout: Out<'_, off_t>,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    let ours = enter().is_some_and(|e| e.shim.fds.is_ours(fin) || e.shim.fds.is_ours(fout));
    if ours {
        return fail(Errno::EINVAL, -1);
    }
    splice_real(fin, offin, fout, offout, n, flags)
}

fn splice_real(
    fin: c_int,
    offin: Out<'_, off_t>,
    fout: c_int,
    offout: Out<'_, off_t>,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    ffi::splice(fin, offin, fout, offout, n, flags)
}

// ---------------------------------------------------------------------------------------
// Memory maps

/// `mmap64(2)`. A private map of a DFS file is served by reading the range into an
/// anonymous private mapping (a copy: later writes to the file do not show in it, and
/// writes to it never reach the file, as for any private map). A shared map cannot be
/// kept coherent with the server and fails with `ENODEV`, the errno of a file system
/// without mmap; so does a map of a directory. The placeholder itself is never mapped.
#[no_mangle]
pub extern "C" fn mmap64(
    addr: MapPtr,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> MapPtr {
    if flags & libc::MAP_ANONYMOUS != 0 {
        return ffi::mmap64(addr, len, prot, flags, fd, off);
    }
    let Some((e, o)) = enter_fd(fd) else {
        return ffi::mmap64(addr, len, prot, flags, fd, off);
    };
    let r = (|| {
        // MAP_SHARED_VALIDATE shares bits with MAP_PRIVATE: the type is the low nibble.
        if flags & 0x0f != libc::MAP_PRIVATE || o.kind != Kind::File {
            return Err(ENODEV);
        }
        let flags_now = e.shim.table.flags(o.id)? as c_int;
        if flags_now & libc::O_ACCMODE == libc::O_WRONLY {
            return Err(Errno::EACCES);
        }
        if len == 0 || off < 0 || off % 4096 != 0 {
            return Err(Errno::EINVAL);
        }
        let p = ffi::map_anonymous(addr, len, flags);
        if p.is_failed() {
            return Err(Errno(ffi::errno()));
        }
        let buf = ffi::mapping_buf(p);
        let c = creds();
        let read = e
            .shim
            .dfs
            .read(o.mount, &c, &o.handle, o.open, off as u64, len, |at, d| {
                buf.put_shared(len, at, &d);
            });
        if let Err(err) = read {
            ffi::unmap(p, len);
            return Err(err);
        }
        if !ffi::protect(p, len, prot) {
            let err = Errno(ffi::errno());
            ffi::unmap(p, len);
            return Err(err);
        }
        Ok(p)
    })();
    r.unwrap_or_else(|e| fail(e, MapPtr::failed()))
}

/// `mmap(2)`.
#[no_mangle]
pub extern "C" fn mmap(
    addr: MapPtr,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> MapPtr {
    mmap64(addr, len, prot, flags, fd, off)
}
