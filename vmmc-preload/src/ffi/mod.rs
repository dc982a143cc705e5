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
mod conn;
mod data;
mod opts;
pub(crate) mod real;
mod waits;

use std::ffi::{c_int, c_void};
use std::io::{self, IoSlice, IoSliceMut};
use std::time::Duration;

use libc::ssize_t;

use crate::errno;

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
