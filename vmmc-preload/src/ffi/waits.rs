//! Waiting: poll, ppoll, select, pselect and epoll over mixed sets.

use std::ffi::c_int;
use std::io;
use std::time::Duration;

use libc::{epoll_event, nfds_t, pollfd, sigset_t};

use super::{int, ms_timeout, real, ts_timeout};
use crate::fdmap::sock_of;
use crate::wait;

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
