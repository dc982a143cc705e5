//! Options, names and descriptor control: getsockopt, setsockopt, getsockname,
//! getpeername, ioctl, fcntl, dup, and fork.

use std::ffi::{c_int, c_ulong, c_void};
use std::io;
use std::time::Duration;

use libc::{sockaddr, socklen_t};

use super::{addr, bytes_mut, int, real, set_errno};
use crate::fdmap::sock_of;
use crate::sock::OptVal;
use crate::{errno, fork, sock, wait};

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
