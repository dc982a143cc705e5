//! Unique names: `mkstemp` and its relatives, and `mkdtemp`.
//!
//! glibc makes these files and directories with its internal `open` and `mkdir`, which no
//! library can interpose, so a template under the DFS would name a local path that does
//! not exist (git's `Unable to create temporary file`). For such a template the names are
//! made here and created through this library's own `openat` and `mkdir`, with
//! `O_EXCL` as glibc does, trying again on `EEXIST`.

use std::ffi::c_int;

use super::ffi::{self, CharPtr, Template};
use super::{enter, paths};

/// Letters of the unique part, as glibc uses.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Attempts before giving up (`EEXIST`), as glibc's `TMP_MAX`-bounded loop.
const ATTEMPTS: u32 = 238_328;

/// Whether `t` names a DFS path (then the caller makes it here).
fn ours(t: Template<'_>) -> bool {
    let Some(b) = t.bytes() else { return false };
    enter().is_some_and(|e| e.shim.wants(libc::AT_FDCWD, &b))
}

/// Fills the six `X`s before `suffix` bytes with fresh letters and runs `make` until it
/// does not fail with `EEXIST`.
fn unique<R: Copy>(t: Template<'_>, suffix: c_int, failed: R, make: impl Fn() -> Option<R>) -> R {
    let Some(b) = t.bytes() else {
        ffi::set_errno(libc::EINVAL);
        return failed;
    };
    let Ok(suffix) = usize::try_from(suffix) else {
        ffi::set_errno(libc::EINVAL);
        return failed;
    };
    let Some(at) = b.len().checked_sub(suffix + 6) else {
        ffi::set_errno(libc::EINVAL);
        return failed;
    };
    if b.get(at..at + 6) != Some(b"XXXXXX".as_slice()) {
        ffi::set_errno(libc::EINVAL);
        return failed;
    }
    for _ in 0..ATTEMPTS {
        let mut r = [0u8; 6];
        if getrandom::fill(&mut r).is_err() {
            ffi::set_errno(libc::EAGAIN);
            return failed;
        }
        let name: Vec<u8> = r
            .iter()
            .map(|x| LETTERS[*x as usize % LETTERS.len()])
            .collect();
        if !t.overwrite(at, &name) {
            ffi::set_errno(libc::EINVAL);
            return failed;
        }
        if let Some(v) = make() {
            return v;
        }
        if ffi::errno() != libc::EEXIST {
            return failed;
        }
    }
    ffi::set_errno(libc::EEXIST);
    failed
}

/// `mkostemps64(3)`: the others are this one with fewer arguments.
#[no_mangle]
pub extern "C" fn mkostemps64(t: Template<'_>, suffix: c_int, flags: c_int) -> c_int {
    if !ours(t) {
        return ffi::mkostemps64(t, suffix, flags);
    }
    let flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
    unique(t, suffix, -1, || {
        let fd = paths::openat64(libc::AT_FDCWD, t.as_path(), flags, 0o600);
        (fd >= 0).then_some(fd)
    })
}

/// `mkostemps(3)`.
#[no_mangle]
pub extern "C" fn mkostemps(t: Template<'_>, suffix: c_int, flags: c_int) -> c_int {
    mkostemps64(t, suffix, flags)
}

/// `mkostemp64(3)`.
#[no_mangle]
pub extern "C" fn mkostemp64(t: Template<'_>, flags: c_int) -> c_int {
    mkostemps64(t, 0, flags)
}

/// `mkostemp(3)`.
#[no_mangle]
pub extern "C" fn mkostemp(t: Template<'_>, flags: c_int) -> c_int {
    mkostemps64(t, 0, flags)
}

/// `mkstemps64(3)`.
#[no_mangle]
pub extern "C" fn mkstemps64(t: Template<'_>, suffix: c_int) -> c_int {
    mkostemps64(t, suffix, 0)
}

/// `mkstemps(3)`.
#[no_mangle]
pub extern "C" fn mkstemps(t: Template<'_>, suffix: c_int) -> c_int {
    mkostemps64(t, suffix, 0)
}

/// `mkstemp64(3)`.
#[no_mangle]
pub extern "C" fn mkstemp64(t: Template<'_>) -> c_int {
    mkostemps64(t, 0, 0)
}

/// `mkstemp(3)`.
#[no_mangle]
pub extern "C" fn mkstemp(t: Template<'_>) -> c_int {
    mkostemps64(t, 0, 0)
}

/// `mkdtemp(3)`.
#[no_mangle]
pub extern "C" fn mkdtemp(t: Template<'_>) -> CharPtr {
    if !ours(t) {
        return ffi::mkdtemp(t);
    }
    unique(t, 0, CharPtr::null(), || {
        (paths::mkdir(t.as_path(), 0o700) == 0).then(|| t.as_result())
    })
}
