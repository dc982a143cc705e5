//! Connections and descriptors: connect, bind, listen, accept, shutdown, close.

use std::ffi::c_int;
use std::io;

use libc::{sockaddr, socklen_t};

use super::{addr, int, real, set_errno};
use crate::fdmap::sock_of;
use crate::{sock, wait};

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
