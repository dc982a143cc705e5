//! Streams (`FILE *`) of DFS files.
//!
//! glibc's `fopen` opens with an internal `open` that no library can interpose, and a
//! stream's reads and writes use internal `read` and `write`: a stream over a placeholder
//! would fail (`EBADF`). So `fopen`, `fdopen` and `freopen` of DFS files make
//! `fopencookie` streams whose reads, writes, seeks and close are this library's, and
//! `fileno` tells their descriptors. When the standard descriptors 0, 1 and 2 stand for DFS
//! files (`sort > /dfs/out`, or a `dup2` onto them), the `stdin`, `stdout` and `stderr`
//! variables are pointed at such streams, and back at the C library's own when the
//! descriptor is local again.

use std::collections::HashMap;
use std::ffi::{c_int, CString};
use std::sync::Mutex;

use dfs_proto::Errno;

use super::calls::fail;
use super::ffi::{self, BufMut, CStrPtr, FilePtr, Std, StreamHandle, StreamOps};
use super::paths::{via, Done};
use super::{enter, enter_fd, Shim, SHIM};
use crate::fs::Outcome;
use crate::table::Kind;

/// A standard stream pointed at one of ours.
#[derive(Debug, Clone, Copy)]
struct Swapped {
    /// The C library's own stream, to point the variable back at.
    orig: FilePtr,
    /// Ours.
    ours: FilePtr,
    handle: StreamHandle,
}

/// The process's streams of DFS files.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    /// Stream address → its descriptor and cookie handle.
    files: Mutex<HashMap<usize, (c_int, StreamHandle)>>,
    std: Mutex<[Option<Swapped>; 3]>,
}

// The stream functions run from inside the C library's stdio, sometimes while this thread
// is inside the shim already (a flush at exit, or when a standard stream is swapped): they
// work on the descriptor directly, without entering.

fn s_read(fd: c_int, buf: BufMut<'_>, n: usize) -> isize {
    let Some(shim) = SHIM.get() else { return -1 };
    let Some(o) = shim.fds.get(fd) else {
        return fail(Errno::EBADF, -1);
    };
    super::inside(|| {
        match shim.read_to(&o, n, None, Some(&[(buf, n)]), |at, d| {
            buf.put_shared(n, at, &d);
        }) {
            Ok(k) => k as isize,
            Err(e) => fail(e, -1),
        }
    })
}

fn s_write(fd: c_int, data: &[u8]) -> isize {
    let Some(shim) = SHIM.get() else { return -1 };
    let Some(o) = shim.fds.get(fd) else {
        return fail(Errno::EBADF, -1);
    };
    super::inside(|| match shim.write_from(&o, data, None) {
        Ok(k) => k as isize,
        Err(e) => fail(e, -1),
    })
}

fn s_seek(fd: c_int, off: i64, whence: c_int) -> i64 {
    let Some(shim) = SHIM.get() else { return -1 };
    if shim.fds.get(fd).is_none() {
        return fail(Errno::EBADF, -1);
    }
    super::inside(|| {
        // Through the interposer's logic, minus the entering.
        super::calls::seek_direct(shim, fd, off, whence)
    })
}

fn s_close(fd: c_int) -> c_int {
    let Some(shim) = SHIM.get() else { return -1 };
    shim.streams.forget_fd(fd);
    match shim.fds.get(fd) {
        Some(o) => super::inside(|| shim.close_fd(fd, o)),
        None => ffi::close(fd),
    }
}

const OPS: StreamOps = StreamOps {
    read: s_read,
    write: s_write,
    seek: s_seek,
    close: s_close,
};

impl Streams {
    fn forget_fd(&self, fd: c_int) {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (f, _)| *f != fd);
    }

    fn fd_of(&self, f: FilePtr) -> Option<c_int> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&f.addr())
            .map(|(fd, _)| *fd)
    }
}

/// Opens a stream of ours on `fd`.
fn stream(shim: &Shim, fd: c_int, mode: &[u8]) -> Result<FilePtr, Errno> {
    let m = CString::new(mode).map_err(|_| Errno::EINVAL)?;
    let (f, h) = ffi::stream_on(fd, &m, OPS).ok_or(crate::errno::ENOMEM)?;
    shim.streams
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(f.addr(), (fd, h));
    Ok(f)
}

/// `fopen`'s mode as `open` flags.
fn mode_flags(mode: &[u8]) -> Result<c_int, Errno> {
    let mut it = mode.iter();
    let mut flags = match it.next() {
        Some(b'r') => libc::O_RDONLY,
        Some(b'w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some(b'a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => return Err(Errno::EINVAL),
    };
    for c in it {
        match c {
            b'+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            b'x' => flags |= libc::O_EXCL,
            b'e' => flags |= libc::O_CLOEXEC,
            b',' => break,
            _ => {}
        }
    }
    Ok(flags)
}

fn fopen_impl(
    path: CStrPtr<'_>,
    mode: CStrPtr<'_>,
    real: impl FnOnce(CStrPtr<'_>) -> FilePtr,
) -> FilePtr {
    via(libc::AT_FDCWD, path, FilePtr::null(), real, |shim, p| {
        let m = mode.bytes().ok_or(Errno::EINVAL)?;
        let flags = mode_flags(m)?;
        match shim.open_at(libc::AT_FDCWD, p, flags, 0o666)? {
            Outcome::Local(np) => Ok(Done::Local(np)),
            Outcome::Dfs(fd) => match stream(shim, fd, m) {
                Ok(f) => Ok(Done::Value(f)),
                Err(e) => {
                    if let Some(o) = shim.fds.get(fd) {
                        shim.close_fd(fd, o);
                    }
                    Err(e)
                }
            },
        }
    })
}

/// `fopen64(3)`.
#[no_mangle]
pub extern "C" fn fopen64(path: CStrPtr<'_>, mode: CStrPtr<'_>) -> FilePtr {
    fopen_impl(path, mode, |p| ffi::fopen64(p, mode))
}

/// `fopen(3)`.
#[no_mangle]
pub extern "C" fn fopen(path: CStrPtr<'_>, mode: CStrPtr<'_>) -> FilePtr {
    fopen64(path, mode)
}

/// `fdopen(3)`.
#[no_mangle]
pub extern "C" fn fdopen(fd: c_int, mode: CStrPtr<'_>) -> FilePtr {
    match enter_fd(fd) {
        None => ffi::fdopen(fd, mode),
        Some((e, o)) => {
            let r = (|| {
                if o.kind == Kind::Path {
                    return Err(Errno::EBADF);
                }
                stream(e.shim, fd, mode.bytes().ok_or(Errno::EINVAL)?)
            })();
            r.unwrap_or_else(|err| fail(err, FilePtr::null()))
        }
    }
}

/// `freopen64(3)`. On a DFS path: the new file is opened and put in the old stream's
/// descriptor's place when that is a standard one (so `freopen(p, "w", stdout)` sends
/// `printf` there); otherwise the old stream is closed and a new one returned.
#[no_mangle]
pub extern "C" fn freopen64(path: CStrPtr<'_>, mode: CStrPtr<'_>, f: FilePtr) -> FilePtr {
    via(
        libc::AT_FDCWD,
        path,
        FilePtr::null(),
        |p| ffi::freopen64(p, mode, f),
        |shim, p| {
            let m = mode.bytes().ok_or(Errno::EINVAL)?;
            let flags = mode_flags(m)?;
            let std = [Std::In, Std::Out, Std::Err]
                .into_iter()
                .position(|s| ffi::std_stream(s) == f);
            ffi::fflush(Some(f));
            let fd = match shim.open_at(libc::AT_FDCWD, p, flags, 0o666)? {
                Outcome::Local(np) => return Ok(Done::Local(np)),
                Outcome::Dfs(fd) => fd,
            };
            match std {
                Some(i) => {
                    // Into the standard descriptor's place; the swap follows from dup2.
                    let to = i as c_int;
                    super::inside_not(|| super::calls::dup2(fd, to));
                    if let Some(o) = shim.fds.get(fd) {
                        shim.close_fd(fd, o);
                    }
                    Ok(Done::Value(ffi::std_stream(
                        [Std::In, Std::Out, Std::Err][i],
                    )))
                }
                None => {
                    super::inside_not(|| ffi_fclose(f));
                    stream(shim, fd, m).map(Done::Value)
                }
            }
        },
    )
}

fn ffi_fclose(f: FilePtr) {
    ffi::fclose(f);
}

/// `freopen(3)`.
#[no_mangle]
pub extern "C" fn freopen(path: CStrPtr<'_>, mode: CStrPtr<'_>, f: FilePtr) -> FilePtr {
    freopen64(path, mode, f)
}

/// `fileno(3)`: a cookie stream has no descriptor as far as glibc knows.
#[no_mangle]
pub extern "C" fn fileno(f: FilePtr) -> c_int {
    if let Some(e) = enter() {
        if let Some(fd) = e.shim.streams.fd_of(f) {
            return fd;
        }
    }
    ffi::fileno(f)
}

/// `fileno_unlocked(3)`.
#[no_mangle]
pub extern "C" fn fileno_unlocked(f: FilePtr) -> c_int {
    if let Some(e) = enter() {
        if let Some(fd) = e.shim.streams.fd_of(f) {
            return fd;
        }
    }
    ffi::fileno_unlocked(f)
}

const STDS: [(Std, &[u8], bool); 3] = [
    (Std::In, b"r", false),
    (Std::Out, b"w", false),
    (Std::Err, b"w", true),
];

/// Before descriptor `fd` changes: what its standard stream holds goes where the
/// descriptor points now.
pub(crate) fn before_change(fd: c_int) {
    if let Some(&(which, _, _)) = usize::try_from(fd).ok().and_then(|i| STDS.get(i)) {
        ffi::fflush(Some(ffi::std_stream(which)));
    }
}

/// After descriptor `fd` changed (a `dup2` onto it, a `close`): if it is 0, 1 or 2, its
/// standard stream follows (ours for a DFS file, the C library's otherwise).
pub(crate) fn fd_changed(shim: &Shim, fd: c_int) {
    let Some(&(which, mode, unbuffered)) = usize::try_from(fd).ok().and_then(|i| STDS.get(i))
    else {
        return;
    };
    let i = fd as usize;
    let ours_now = shim.fds.get(fd).is_some_and(|o| o.kind == Kind::File);
    let mut std = shim.streams.std.lock().unwrap_or_else(|p| p.into_inner());
    match (std[i], ours_now) {
        (None, true) => {
            let orig = ffi::std_stream(which);
            if let Ok(f) = stream(shim, fd, mode) {
                if unbuffered {
                    ffi::set_buffering(f, true);
                }
                let handle = shim
                    .streams
                    .files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&f.addr())
                    .map(|(_, h)| *h);
                if let Some(handle) = handle {
                    ffi::set_std_stream(which, f);
                    std[i] = Some(Swapped {
                        orig,
                        ours: f,
                        handle,
                    });
                }
            }
        }
        (Some(s), false) => {
            // Ours is flushed to the DFS file (still open if this is a dup2 over it, gone if
            // it was closed: then what is left has nowhere to go, as with a closed
            // descriptor), and closes nothing from now on.
            ffi::fflush(Some(s.ours));
            s.handle.detach();
            shim.streams.forget_fd(fd);
            if ffi::std_stream(which) == s.ours {
                ffi::set_std_stream(which, s.orig);
            }
            std[i] = None;
        }
        _ => {}
    }
}

/// At start-up: standard descriptors inherited as DFS files get our streams.
pub(crate) fn adopt_std_streams(shim: &Shim) {
    for fd in 0..3 {
        fd_changed(shim, fd);
    }
}

/// Whether `f` is one of our streams (for the exit flush).
pub(crate) fn any_ours(shim: &Shim) -> bool {
    !shim
        .streams
        .files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
}
