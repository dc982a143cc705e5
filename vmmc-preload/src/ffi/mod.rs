//! The C ABI: the functions this library puts in front of the C library's.
//!
//! Each one asks [`crate::fdmap`] whether its descriptor is a VMMC socket (one atomic load)
//! and either calls the safe code in [`crate::sock`] and [`crate::wait`] or the C library's
//! own function ([`real`]). Raw pointers become slices and addresses here and nowhere
//! else; every `unsafe` block of the crate is in this module and its children.
//!
//! Variadic C functions (`fcntl`, `ioctl`) are defined with their one optional argument as a
//! fixed `unsigned long`: on the x86-64 and AArch64 Linux calling conventions a variadic
//! integer or pointer argument travels exactly where a fixed one does, and the C library's
//! own definitions are called through variadic pointers.

pub(crate) mod addr;
pub(crate) mod real;

use std::ffi::{c_int, c_ulong, c_void};
use std::io::{self, IoSlice, IoSliceMut};
use std::time::Duration;

use libc::{epoll_event, msghdr, nfds_t, pollfd, sigset_t, sockaddr, socklen_t, ssize_t};

use crate::fdmap::sock_of;
use crate::sock::OptVal;
use crate::{errno, fork, sock, wait};

fn set_errno(code: i32) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = code };
}

fn int(r: io::Result<c_int>) -> c_int {
    r.unwrap_or_else(|e| {
        set_errno(errno::of(&e));
        -1
    })
}

fn size(r: io::Result<usize>) -> ssize_t {
    match r {
        Ok(n) => n.min(ssize_t::MAX as usize) as ssize_t,
        Err(e) => {
            set_errno(errno::of(&e));
            -1
        }
    }
}

/// # Safety
/// `p` is null only with `n == 0`, else valid for `n` bytes.
unsafe fn bytes<'a>(p: *const c_void, n: usize) -> &'a [u8] {
    if n == 0 || p.is_null() {
        return &[];
    }
    // SAFETY: the caller's buffer, valid for `n` bytes for the call.
    unsafe { std::slice::from_raw_parts(p.cast(), n) }
}

/// # Safety
/// As [`bytes`], writable.
unsafe fn bytes_mut<'a>(p: *mut c_void, n: usize) -> &'a mut [u8] {
    if n == 0 || p.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's buffer, valid and writable for `n` bytes for the call.
    unsafe { std::slice::from_raw_parts_mut(p.cast(), n) }
}

/// # Safety
/// `iov` is valid for `n` iovecs, each valid for its length.
unsafe fn io_slices<'a>(iov: *const libc::iovec, n: c_int) -> io::Result<Vec<IoSlice<'a>>> {
    let n = usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if n == 0 || iov.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the caller's array of `n` iovecs.
    let v = unsafe { std::slice::from_raw_parts(iov, n) };
    // SAFETY: each iovec describes a buffer of the caller's.
    Ok(v.iter()
        .map(|i| IoSlice::new(unsafe { bytes(i.iov_base, i.iov_len) }))
        .collect())
}

/// # Safety
/// As [`io_slices`], writable.
unsafe fn io_slices_mut<'a>(iov: *const libc::iovec, n: c_int) -> io::Result<Vec<IoSliceMut<'a>>> {
    let n = usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if n == 0 || iov.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the caller's array of `n` iovecs.
    let v = unsafe { std::slice::from_raw_parts(iov, n) };
    // SAFETY: each iovec describes a writable buffer of the caller's.
    Ok(v.iter()
        .map(|i| IoSliceMut::new(unsafe { bytes_mut(i.iov_base, i.iov_len) }))
        .collect())
}

fn ms_timeout(ms: c_int) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// # Safety
/// `ts` is null or valid.
unsafe fn ts_timeout(ts: *const libc::timespec) -> Option<Duration> {
    if ts.is_null() {
        return None;
    }
    // SAFETY: the caller's timespec.
    let t = unsafe { *ts };
    Some(Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0).min(999_999_999),
    ))
}

// ---- connections ----

/// `connect(2)`: routed addresses go to VMMC.
///
/// # Safety
/// As `connect(2)`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's address of `len` bytes.
    let a = unsafe { addr::read(addr, len) };
    if let Some(s) = sock_of(fd) {
        return int(match a {
            Some(a) => sock::connect_again(s, a).map(|()| 0),
            None => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        });
    }
    if let Some(a) = a {
        if let Some(r) = sock::connect(fd, a) {
            return int(r.map(|()| 0));
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { (real::real().connect)(fd, addr, len) }
}

/// `bind(2)`: routed addresses listen on VMMC.
///
/// # Safety
/// As `bind(2)`.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if sock_of(fd).is_some() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's address of `len` bytes.
    if let Some(a) = unsafe { addr::read(addr, len) } {
        if let Some(r) = sock::bind(fd, a) {
            return int(r.map(|()| 0));
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { (real::real().bind)(fd, addr, len) }
}

/// `listen(2)`.
///
/// # Safety
/// As `listen(2)`.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    match sock_of(fd) {
        Some(s) => int(sock::listen(fd, s, backlog).map(|()| 0)),
        // SAFETY: no pointers.
        None => unsafe { (real::real().listen)(fd, backlog) },
    }
}

/// `accept4(2)`.
///
/// # Safety
/// As `accept4(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(s) = sock_of(fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().accept4)(fd, addr, len, flags) };
    };
    int(sock::accept(s, flags).map(|(nfd, peer)| {
        // SAFETY: the caller's buffer and length.
        unsafe { addr::write(peer, addr, len) };
        nfd
    }))
}

/// `accept(2)`.
///
/// # Safety
/// As `accept(2)`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if sock_of(fd).is_none() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().accept)(fd, addr, len) };
    }
    // SAFETY: as accept4 with no flags.
    unsafe { accept4(fd, addr, len, 0) }
}

/// `shutdown(2)`.
///
/// # Safety
/// As `shutdown(2)`.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    match sock_of(fd) {
        Some(s) => int(sock::shutdown(s, how).map(|()| 0)),
        // SAFETY: no pointers.
        None => unsafe { (real::real().shutdown)(fd, how) },
    }
}

/// `close(2)`: a VMMC socket closes with its last descriptor.
///
/// # Safety
/// As `close(2)`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(s) = sock_of(fd) {
        return int(sock::close(fd, s).map(|()| 0));
    }
    if crate::fdmap::is_epoll(fd) {
        wait::forget_epoll(fd);
    }
    // SAFETY: no pointers.
    unsafe { (real::real().close)(fd) }
}

/// Forgets the VMMC sockets and epoll instances among `first..=last` before the kernel
/// closes them all at once: a number left marked would send a later, unrelated descriptor
/// with that number to a VMMC socket.
fn forget_range(first: u32, last: u32) {
    let last = last.min(crate::fdmap::MAX_FDS as u32 - 1);
    for fd in first..=last {
        let fd = fd as c_int;
        if let Some(s) = sock_of(fd) {
            sock::release(fd, s);
        } else if crate::fdmap::is_epoll(fd) {
            wait::forget_epoll(fd);
        }
    }
}

/// `close_range(2)` (glibc 2.34).
///
/// # Safety
/// As `close_range(2)`.
#[no_mangle]
pub unsafe extern "C" fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: c_int,
) -> c_int {
    let Some(f) = real::real().close_range else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // With CLOSE_RANGE_CLOEXEC nothing closes now; exec, which closes them, ends this
    // library's memory anyway.
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && first <= last {
        forget_range(first, last);
    }
    // SAFETY: no pointers.
    unsafe { f(first, last, flags) }
}

/// `closefrom(3)` (glibc 2.34).
///
/// # Safety
/// As `closefrom(3)`.
#[no_mangle]
pub unsafe extern "C" fn closefrom(low: c_int) {
    if let Ok(first) = u32::try_from(low) {
        forget_range(first, u32::MAX);
    }
    match real::real().closefrom {
        // SAFETY: no pointers.
        Some(f) => unsafe { f(low) },
        None => {
            // SAFETY: no pointers; the kernel's own call, as glibc's closefrom makes it.
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    low.max(0) as libc::c_uint,
                    u32::MAX,
                    0,
                )
            };
        }
    }
}

// ---- data ----

/// `send(2)`.
///
/// # Safety
/// As `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's buffer.
        Some(s) => size(sock::send(
            s,
            &[IoSlice::new(unsafe { bytes(buf, n) })],
            flags,
        )),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().send)(fd, buf, n, flags) },
    }
}

/// `sendto(2)`: on a connected VMMC stream the address is ignored, as TCP ignores it.
///
/// # Safety
/// As `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: usize,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's buffer.
        Some(s) => size(sock::send(
            s,
            &[IoSlice::new(unsafe { bytes(buf, n) })],
            flags,
        )),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().sendto)(fd, buf, n, flags, addr, len) },
    }
}

/// `write(2)`.
///
/// # Safety
/// As `write(2)`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: usize) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's buffer.
        Some(s) => size(sock::send(s, &[IoSlice::new(unsafe { bytes(buf, n) })], 0)),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().write)(fd, buf, n) },
    }
}

/// `writev(2)`.
///
/// # Safety
/// As `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's iovecs.
        Some(s) => size(unsafe { io_slices(iov, n) }.and_then(|v| sock::send(s, &v, 0))),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().writev)(fd, iov, n) },
    }
}

/// `sendmsg(2)`: ancillary data is refused (`EOPNOTSUPP`); nothing can travel with it.
///
/// # Safety
/// As `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(s) = sock_of(fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().sendmsg)(fd, msg, flags) };
    };
    if msg.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: the caller's msghdr.
    let m = unsafe { &*msg };
    if m.msg_controllen != 0 {
        set_errno(libc::EOPNOTSUPP);
        return -1;
    }
    // SAFETY: the msghdr's iovecs.
    let v = unsafe { io_slices(m.msg_iov, m.msg_iovlen as c_int) };
    size(v.and_then(|v| sock::send(s, &v, flags)))
}

/// `recv(2)`.
///
/// # Safety
/// As `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's buffer.
        Some(s) => size(sock::recv(
            s,
            &mut [IoSliceMut::new(unsafe { bytes_mut(buf, n) })],
            flags,
        )),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().recv)(fd, buf, n, flags) },
    }
}

/// `recvfrom(2)`: the address is the peer's, as `getpeername` gives it.
///
/// # Safety
/// As `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let Some(s) = sock_of(fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().recvfrom)(fd, buf, n, flags, addr, len) };
    };
    // SAFETY: the caller's buffer.
    let r = sock::recv(
        s,
        &mut [IoSliceMut::new(unsafe { bytes_mut(buf, n) })],
        flags,
    );
    if r.is_ok() {
        if let Ok(peer) = sock::peer_name(s) {
            // SAFETY: the caller's buffer and length.
            unsafe { addr::write(peer, addr, len) };
        }
    }
    size(r)
}

/// `read(2)`.
///
/// # Safety
/// As `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> ssize_t {
    match sock_of(fd) {
        // SAFETY: the caller's buffer.
        Some(s) => size(sock::recv(
            s,
            &mut [IoSliceMut::new(unsafe { bytes_mut(buf, n) })],
            0,
        )),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().read)(fd, buf, n) },
    }
}

/// `readv(2)`.
///
/// # Safety
/// As `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> ssize_t {
    match sock_of(fd) {
        Some(s) => size(
            // SAFETY: the caller's iovecs.
            unsafe { io_slices_mut(iov, n) }.and_then(|mut v| sock::recv(s, &mut v, 0)),
        ),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().readv)(fd, iov, n) },
    }
}

/// `recvmsg(2)`: no ancillary data ever arrives; the name is the peer's.
///
/// # Safety
/// As `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some(s) = sock_of(fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().recvmsg)(fd, msg, flags) };
    };
    if msg.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // SAFETY: the caller's msghdr.
    let m = unsafe { &mut *msg };
    // SAFETY: the msghdr's iovecs.
    let r = unsafe { io_slices_mut(m.msg_iov, m.msg_iovlen as c_int) }
        .and_then(|mut v| sock::recv(s, &mut v, flags));
    if r.is_ok() {
        m.msg_controllen = 0;
        m.msg_flags = 0;
        if !m.msg_name.is_null() {
            match sock::peer_name(s) {
                // SAFETY: the msghdr's name buffer of msg_namelen bytes.
                Ok(peer) => unsafe { addr::write(peer, m.msg_name.cast(), &raw mut m.msg_namelen) },
                Err(_) => m.msg_namelen = 0,
            }
        }
    }
    size(r)
}

/// Fortified `read` (`_FORTIFY_SOURCE`).
///
/// # Safety
/// As `read(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    buflen: usize,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as read.
    unsafe { read(fd, buf, n) }
}

/// Fortified `recv`.
///
/// # Safety
/// As `recv(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    buflen: usize,
    flags: c_int,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as recv.
    unsafe { recv(fd, buf, n, flags) }
}

/// Fortified `recvfrom`.
///
/// # Safety
/// As `recvfrom(2)`, with `buflen` the buffer's size.
#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    buflen: usize,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if n > buflen {
        std::process::abort();
    }
    // SAFETY: as recvfrom.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

// ---- options, names, control ----

/// `getsockopt(2)`.
///
/// # Safety
/// As `getsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if let Some(s) = sock_of(fd) {
        if let Some(r) = sock::getsockopt(s, level, name) {
            return int(r.and_then(|v| {
                if val.is_null() || len.is_null() {
                    return Err(io::Error::from_raw_os_error(libc::EFAULT));
                }
                // SAFETY: the caller's length word.
                let room = unsafe { *len } as usize;
                match v {
                    OptVal::Int(i) => {
                        let b = i.to_ne_bytes();
                        let n = room.min(b.len());
                        // SAFETY: `n` bytes fit in the caller's buffer of `room`.
                        unsafe { bytes_mut(val, n).copy_from_slice(&b[..n]) };
                        // SAFETY: the caller's length word.
                        unsafe { *len = n as socklen_t };
                    }
                    OptVal::Time(d) => {
                        let d = d.unwrap_or_default();
                        let tv = libc::timeval {
                            tv_sec: d.as_secs() as libc::time_t,
                            tv_usec: d.subsec_micros() as libc::suseconds_t,
                        };
                        if room < std::mem::size_of::<libc::timeval>() {
                            return Err(io::Error::from_raw_os_error(libc::EINVAL));
                        }
                        // SAFETY: the caller's buffer holds a timeval (checked above).
                        unsafe { val.cast::<libc::timeval>().write_unaligned(tv) };
                        // SAFETY: the caller's length word.
                        unsafe { *len = std::mem::size_of::<libc::timeval>() as socklen_t };
                    }
                }
                Ok(0)
            }));
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { (real::real().getsockopt)(fd, level, name, val, len) }
}

/// `setsockopt(2)`.
///
/// # Safety
/// As `setsockopt(2)`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    if let Some(s) = sock_of(fd) {
        let is_time =
            level == libc::SOL_SOCKET && (name == libc::SO_RCVTIMEO || name == libc::SO_SNDTIMEO);
        let v = if val.is_null() {
            None
        } else if is_time && len as usize >= std::mem::size_of::<libc::timeval>() {
            // SAFETY: the caller's timeval.
            let tv = unsafe { val.cast::<libc::timeval>().read_unaligned() };
            let d = Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0));
            Some(OptVal::Time((!d.is_zero()).then_some(d)))
        } else if !is_time && len as usize >= std::mem::size_of::<c_int>() {
            // SAFETY: the caller's int.
            Some(OptVal::Int(unsafe { val.cast::<c_int>().read_unaligned() }))
        } else {
            None
        };
        if let Some(v) = v {
            if let Some(r) = sock::setsockopt(s, level, name, v) {
                return int(r.map(|()| 0));
            }
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { (real::real().setsockopt)(fd, level, name, val, len) }
}

/// `getsockname(2)`.
///
/// # Safety
/// As `getsockname(2)`.
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match sock_of(fd) {
        Some(s) => int(sock::local_name(s).map(|a| {
            // SAFETY: the caller's buffer and length.
            unsafe { addr::write(a, addr, len) };
            0
        })),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().getsockname)(fd, addr, len) },
    }
}

/// `getpeername(2)`.
///
/// # Safety
/// As `getpeername(2)`.
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match sock_of(fd) {
        Some(s) => int(sock::peer_name(s).map(|a| {
            // SAFETY: the caller's buffer and length.
            unsafe { addr::write(a, addr, len) };
            0
        })),
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().getpeername)(fd, addr, len) },
    }
}

/// `ioctl(2)`: `FIONBIO` and `FIONREAD` on VMMC sockets; every other request reaches the
/// placeholder.
///
/// # Safety
/// As `ioctl(2)`; `arg` is the request's one argument.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    if let Some(s) = sock_of(fd) {
        let p = arg as *mut c_int;
        if (req == libc::FIONBIO || req == libc::FIONREAD) && p.is_null() {
            set_errno(libc::EFAULT);
            return -1;
        }
        if req == libc::FIONBIO {
            // SAFETY: FIONBIO's argument is an int*, checked non-null.
            let on = unsafe { p.read_unaligned() } != 0;
            return int(sock::set_nonblocking(fd, s, on).map(|()| 0));
        }
        if req == libc::FIONREAD {
            return int(sock::bytes_readable(s).map(|n| {
                // SAFETY: FIONREAD's argument is an int*, checked non-null.
                unsafe { p.write_unaligned(n) };
                0
            }));
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { (real::real().ioctl)(fd, req, arg) }
}

fn fcntl_common(
    fd: c_int,
    cmd: c_int,
    arg: c_ulong,
    f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int,
) -> c_int {
    if let Some(s) = sock_of(fd) {
        match cmd {
            libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
                let min = c_int::try_from(arg).unwrap_or(c_int::MAX);
                return int(sock::dup_min(fd, s, min, cmd == libc::F_DUPFD_CLOEXEC));
            }
            libc::F_SETFL => {
                return int(sock::set_flags(fd, s, arg as c_int));
            }
            _ => {}
        }
    }
    // SAFETY: the caller's arguments, passed on (one word, as the command takes).
    unsafe { f(fd, cmd, arg) }
}

/// `fcntl(2)`: `F_SETFL` tells a VMMC socket about `O_NONBLOCK`, `F_DUPFD` makes another
/// descriptor for it; everything else is the placeholder's (it keeps the flags).
///
/// # Safety
/// As `fcntl(2)`; `arg` is the command's one argument.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl_common(fd, cmd, arg, real::real().fcntl)
}

/// `fcntl64`, glibc's name for `fcntl` in programs built with 64-bit offsets.
///
/// # Safety
/// As `fcntl(2)`.
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = real::real();
    fcntl_common(fd, cmd, arg, r.fcntl64.unwrap_or(r.fcntl))
}

/// `dup(2)`.
///
/// # Safety
/// As `dup(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    match sock_of(fd) {
        Some(s) => int(sock::dup_min(fd, s, 0, false)),
        // SAFETY: no pointers.
        None => unsafe { (real::real().dup)(fd) },
    }
}

fn dup_to(old: c_int, new: c_int, flags: Option<c_int>) -> c_int {
    if old == new {
        // dup2 of a descriptor onto itself changes nothing (dup3 refuses it).
        // SAFETY: no pointers.
        return unsafe {
            match flags {
                None => (real::real().dup2)(old, new),
                Some(f) => (real::real().dup3)(old, new, f),
            }
        };
    }
    let src = sock_of(old);
    // SAFETY: no pointers.
    let r = unsafe {
        match flags {
            None => (real::real().dup2)(old, new),
            Some(f) => (real::real().dup3)(old, new, f),
        }
    };
    if r < 0 {
        return r;
    }
    // The kernel closed whatever `new` was; it now is `old`'s file.
    if let Some(t) = sock_of(new) {
        sock::release(new, t);
    }
    if crate::fdmap::is_epoll(new) {
        wait::forget_epoll(new);
    }
    if let Some(s) = src {
        return int(sock::alias(new, s).map(|()| new));
    }
    r
}

/// `dup2(2)`.
///
/// # Safety
/// As `dup2(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    dup_to(old, new, None)
}

/// `dup3(2)`.
///
/// # Safety
/// As `dup3(2)`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    dup_to(old, new, Some(flags))
}

/// `fork(2)`: both processes keep their sockets; each VMMC socket goes to whichever uses it
/// first (see [`crate::fork`]).
///
/// # Safety
/// As `fork(2)`.
#[no_mangle]
pub unsafe extern "C" fn fork() -> libc::pid_t {
    match fork::fork() {
        Ok(p) => p,
        Err(e) => {
            set_errno(errno::of(&e));
            -1
        }
    }
}

// ---- waiting ----

/// # Safety
/// `fds` is valid for `n` entries.
unsafe fn pollfds<'a>(fds: *mut pollfd, n: nfds_t) -> &'a mut [pollfd] {
    if fds.is_null() || n == 0 {
        return &mut [];
    }
    // SAFETY: the caller's array.
    unsafe { std::slice::from_raw_parts_mut(fds, n as usize) }
}

fn any_vmmc(fds: &[pollfd]) -> bool {
    fds.iter().any(|p| sock_of(p.fd).is_some())
}

/// `poll(2)` over VMMC sockets and kernel descriptors together.
///
/// # Safety
/// As `poll(2)`.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: the caller's array.
    let v = unsafe { pollfds(fds, n) };
    if !any_vmmc(v) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().poll)(fds, n, timeout) };
    }
    int(wait::poll(v, ms_timeout(timeout), None).map(|r| r as c_int))
}

/// Fortified `poll`.
///
/// # Safety
/// As `poll(2)`, with `fdslen` the array's size in bytes.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: usize,
) -> c_int {
    if (n as usize).saturating_mul(std::mem::size_of::<pollfd>()) > fdslen {
        std::process::abort();
    }
    // SAFETY: as poll.
    unsafe { poll(fds, n, timeout) }
}

/// `ppoll(2)`.
///
/// # Safety
/// As `ppoll(2)`.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    ts: *const libc::timespec,
    mask: *const sigset_t,
) -> c_int {
    // SAFETY: the caller's array.
    let v = unsafe { pollfds(fds, n) };
    if !any_vmmc(v) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().ppoll)(fds, n, ts, mask) };
    }
    // SAFETY: the caller's timespec and mask, null or valid.
    let (t, m) = unsafe { (ts_timeout(ts), mask.as_ref()) };
    int(wait::poll(v, t, m).map(|r| r as c_int))
}

/// The descriptors of three `fd_set`s as a poll array (read, write, except), or `None`
/// when no VMMC socket is in them.
///
/// # Safety
/// Each set is null or valid; `nfds <= FD_SETSIZE`.
unsafe fn sets_to_poll(nfds: c_int, sets: [*mut libc::fd_set; 3]) -> Option<Vec<pollfd>> {
    let mut out = Vec::new();
    let mut vmmc = false;
    for fd in 0..nfds.clamp(0, libc::FD_SETSIZE as c_int) {
        let mut events = 0;
        for (set, ev) in sets
            .iter()
            .zip([libc::POLLIN, libc::POLLOUT, libc::POLLPRI])
        {
            // SAFETY: a valid set (checked non-null), fd < FD_SETSIZE.
            if !set.is_null() && unsafe { libc::FD_ISSET(fd, *set) } {
                events |= ev;
            }
        }
        if events != 0 {
            vmmc |= sock_of(fd).is_some();
            out.push(pollfd {
                fd,
                events,
                revents: 0,
            });
        }
    }
    vmmc.then_some(out)
}

/// Writes poll results back into the `fd_set`s; returns the number of bits set.
///
/// # Safety
/// As [`sets_to_poll`].
unsafe fn poll_to_sets(fds: &[pollfd], sets: [*mut libc::fd_set; 3]) -> io::Result<c_int> {
    for set in sets {
        if !set.is_null() {
            // SAFETY: a valid set.
            unsafe { libc::FD_ZERO(set) };
        }
    }
    let mut n = 0;
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let hits = [
            p.events & libc::POLLIN != 0
                && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            p.events & libc::POLLOUT != 0 && p.revents & (libc::POLLOUT | libc::POLLERR) != 0,
            p.events & libc::POLLPRI != 0 && p.revents & libc::POLLPRI != 0,
        ];
        for (set, hit) in sets.iter().zip(hits) {
            if hit && !set.is_null() {
                // SAFETY: a valid set, fd < FD_SETSIZE (it came from one).
                unsafe { libc::FD_SET(p.fd, *set) };
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `select(2)` over VMMC sockets and kernel descriptors together.
///
/// # Safety
/// As `select(2)`.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    let sets = [r, w, e];
    // SAFETY: the caller's sets.
    let Some(mut fds) = (unsafe { sets_to_poll(nfds, sets) }) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().select)(nfds, r, w, e, tv) };
    };
    let t = if tv.is_null() {
        None
    } else {
        // SAFETY: the caller's timeval.
        let t = unsafe { *tv };
        Some(
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0)),
        )
    };
    // SAFETY: the caller's sets.
    int(wait::poll(&mut fds, t, None).and_then(|_| unsafe { poll_to_sets(&fds, sets) }))
}

/// `pselect(2)`.
///
/// # Safety
/// As `pselect(2)`.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const libc::timespec,
    mask: *const sigset_t,
) -> c_int {
    let sets = [r, w, e];
    // SAFETY: the caller's sets.
    let Some(mut fds) = (unsafe { sets_to_poll(nfds, sets) }) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().pselect)(nfds, r, w, e, ts, mask) };
    };
    // SAFETY: the caller's timespec and mask, null or valid.
    let (t, m) = unsafe { (ts_timeout(ts), mask.as_ref()) };
    // SAFETY: the caller's sets.
    int(wait::poll(&mut fds, t, m).and_then(|_| unsafe { poll_to_sets(&fds, sets) }))
}

/// `epoll_ctl(2)`: VMMC sockets are kept beside the kernel's interest list.
///
/// # Safety
/// As `epoll_ctl(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
) -> c_int {
    match sock_of(fd) {
        Some(s) => {
            // SAFETY: the caller's event, null or valid.
            let ev = unsafe { ev.as_ref().copied() };
            int(wait::epoll_ctl(epfd, op, fd, s, ev).map(|()| 0))
        }
        // SAFETY: the caller's arguments, passed on.
        None => unsafe { (real::real().epoll_ctl)(epfd, op, fd, ev) },
    }
}

/// # Safety
/// `ev` is valid for `n` events.
unsafe fn events<'a>(ev: *mut epoll_event, n: c_int) -> &'a mut [epoll_event] {
    match usize::try_from(n) {
        // SAFETY: the caller's array.
        Ok(n) if n > 0 && !ev.is_null() => unsafe { std::slice::from_raw_parts_mut(ev, n) },
        _ => &mut [],
    }
}

/// `epoll_wait(2)` over VMMC sockets and kernel descriptors together.
///
/// # Safety
/// As `epoll_wait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    ev: *mut epoll_event,
    n: c_int,
    timeout: c_int,
) -> c_int {
    if !crate::fdmap::is_epoll(epfd) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().epoll_wait)(epfd, ev, n, timeout) };
    }
    // SAFETY: the caller's array.
    let out = unsafe { events(ev, n) };
    int(wait::epoll_wait(epfd, out, ms_timeout(timeout), None).map(|r| r as c_int))
}

/// `epoll_pwait(2)`.
///
/// # Safety
/// As `epoll_pwait(2)`.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    ev: *mut epoll_event,
    n: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    if !crate::fdmap::is_epoll(epfd) {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { (real::real().epoll_pwait)(epfd, ev, n, timeout, mask) };
    }
    // SAFETY: the caller's array and mask.
    let (out, m) = unsafe { (events(ev, n), mask.as_ref()) };
    int(wait::epoll_wait(epfd, out, ms_timeout(timeout), m).map(|r| r as c_int))
}
