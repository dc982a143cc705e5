//! Moving bytes: send, recv, read, write and their vectored and fortified forms.

use std::ffi::{c_int, c_void};
use std::io::{IoSlice, IoSliceMut};

use libc::{msghdr, sockaddr, socklen_t, ssize_t};

use super::{addr, bytes, bytes_mut, io_slices, io_slices_mut, real, set_errno, size};
use crate::fdmap::sock_of;
use crate::sock;

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
