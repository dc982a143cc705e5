//! The interposed calls that name files by path: opening, the stat family, making and
//! removing names, attributes, the current directory. Each routes its path
//! ([`Shim::wants`]); a path outside the DFS goes to the C library unchanged, and one that
//! a walk leads out of the DFS (a `..` above the prefix, a symbolic link to `/etc`) goes to
//! it rewritten.

use std::ffi::{c_int, c_uint, CString};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dfs_client::Client;
use dfs_proto::attr::{Attr, FileKind, SetAttr};
use dfs_proto::msg::{Creds, RenameMode};
use dfs_proto::name::{LinkTarget, XattrName};
use dfs_proto::Errno;

use super::abi::{self, Stat, Statx};
use super::calls::{fail, from_timevals, owner, times, times_valid, unit, xattr_reply};
use super::ffi::{self, mode_t, off_t, size_t, ssize_t, Buf, BufMut, CStrPtr, CharPtr, In, Out};
use super::{creds, enter, enter_fd, vars, Open, Shim};
use crate::errno::EXDEV;
use crate::fs::{self, Outcome};
use crate::path::Cwd;
use crate::resolve::{Found, Last, Walk};

/// What a call on the DFS gives: its result, or a local path for the C library.
pub(crate) enum Done<R> {
    Value(R),
    Local(Vec<u8>),
}

fn cstring(p: Vec<u8>) -> CString {
    CString::new(p).unwrap_or_default()
}

/// Runs `ours` for a path of the DFS, `real` for any other (with the path rewritten if a
/// walk left the DFS), setting `errno` and returning `fail_v` on an error.
pub(crate) fn via<R>(
    dirfd: c_int,
    path: CStrPtr<'_>,
    fail_v: R,
    real: impl FnOnce(CStrPtr<'_>) -> R,
    ours: impl FnOnce(&'static Shim, &[u8]) -> Result<Done<R>, Errno>,
) -> R {
    enum Next<R> {
        Real,
        RealAt(CString),
        Ret(R),
    }
    let next = match path.bytes() {
        None => Next::Real,
        Some(p) => match enter() {
            None => Next::Real,
            Some(e) if !e.shim.wants(dirfd, p) => Next::Real,
            // As the kernel measures a path: with its NUL, at most PATH_MAX.
            Some(_) if p.len() >= libc::PATH_MAX as usize => {
                Next::Ret(fail(Errno(libc::ENAMETOOLONG), fail_v))
            }
            Some(e) => match ours(e.shim, p) {
                Ok(Done::Value(v)) => Next::Ret(v),
                Ok(Done::Local(np)) => Next::RealAt(cstring(np)),
                Err(err) => Next::Ret(fail(err, fail_v)),
            },
        },
    };
    match next {
        Next::Real => real(path),
        Next::RealAt(c) => real(CStrPtr::of(&c)),
        Next::Ret(v) => v,
    }
}

impl Shim {
    /// The open directory a relative `path` starts from (`None`: the current directory, or
    /// an absolute path).
    fn start_of(&self, dirfd: c_int, path: &[u8]) -> Result<Option<Arc<Open>>, Errno> {
        if path.first() == Some(&b'/') {
            Ok(None)
        } else {
            self.at(dirfd)
        }
    }

    /// Walks `path` from `dirfd`.
    pub(crate) fn find(
        &self,
        c: &Creds,
        dirfd: c_int,
        path: &[u8],
        follow: bool,
    ) -> Result<Done<Found>, Errno> {
        let dir = self.start_of(dirfd, path)?;
        let last = Last { follow, dir: false };
        match self.dfs.resolve(c, self.at_of(&dir), path, last)? {
            Walk::Local(p) => Ok(Done::Local(p)),
            Walk::Dfs(f) => Ok(Done::Value(f)),
        }
    }

    /// Walks `path` and runs `f` on what it found, with its mount's client.
    fn on<R>(
        &self,
        dirfd: c_int,
        path: &[u8],
        follow: bool,
        f: impl FnOnce(&Found, &Client, &Creds) -> Result<R, Errno>,
    ) -> Result<Done<R>, Errno> {
        let c = creds();
        match self.find(&c, dirfd, path, follow)? {
            Done::Local(p) => Ok(Done::Local(p)),
            Done::Value(found) => {
                let client = self.dfs.client(found.mount, &c)?;
                f(&found, &client, &c).map(Done::Value)
            }
        }
    }

    /// The attributes of what `path` names.
    fn stat_path(
        &self,
        dirfd: c_int,
        path: &[u8],
        follow: bool,
    ) -> Result<Done<(Attr, usize)>, Errno> {
        let c = creds();
        match self.find(&c, dirfd, path, follow)? {
            Done::Local(p) => Ok(Done::Local(p)),
            Done::Value(f) => Ok(Done::Value((self.dfs.attr_of(&c, &f)?, f.mount))),
        }
    }
}

/// The node a walk found, which must exist.
fn node(f: &Found) -> Result<&dfs_proto::attr::Entry, Errno> {
    f.node.as_ref().map_err(|e| *e)
}

/// The parent and name of a path that must not exist yet (to make it).
fn new_name(f: &Found) -> Result<(&dfs_proto::attr::Entry, &dfs_proto::name::Name), Errno> {
    match (&f.node, &f.parent, &f.name) {
        (Ok(_), _, _) => Err(Errno::EEXIST),
        (Err(e), Some(p), Some(n)) if *e == Errno::ENOENT => Ok((p, n)),
        (Err(e), _, _) => Err(*e),
    }
}

/// The parent and name of a path that must exist (to remove or rename it).
fn old_name(
    f: &Found,
) -> Result<
    (
        &dfs_proto::attr::Entry,
        &dfs_proto::name::Name,
        &dfs_proto::attr::Entry,
    ),
    Errno,
> {
    let n = node(f)?;
    match (&f.parent, &f.name) {
        (Some(p), Some(name)) => Ok((p, name, n)),
        // The root, `.` or `..`.
        _ => Err(Errno(libc::EBUSY)),
    }
}

fn ends_with_dot(p: &[u8]) -> bool {
    let p = p.strip_suffix(b"/").unwrap_or(p);
    p == b"." || p.ends_with(b"/.")
}

// ---------------------------------------------------------------------------------------
// open

fn open_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    flags: c_int,
    mode: mode_t,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        Ok(match shim.open_at(dirfd, p, flags, mode)? {
            Outcome::Local(np) => Done::Local(np),
            Outcome::Dfs(fd) => Done::Value(fd),
        })
    })
}

fn wants_mode(flags: c_int) -> bool {
    flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE
}

/// `open64(2)`. The mode is the variadic argument: see [`ffi`] on variadic functions.
#[no_mangle]
pub extern "C" fn open64(path: CStrPtr<'_>, flags: c_int, mode: mode_t) -> c_int {
    let mode = if wants_mode(flags) { mode } else { 0 };
    open_impl(libc::AT_FDCWD, path, flags, mode, |p| {
        ffi::open64(p, flags, mode)
    })
}

/// `open(2)`.
#[no_mangle]
pub extern "C" fn open(path: CStrPtr<'_>, flags: c_int, mode: mode_t) -> c_int {
    open64(path, flags, mode)
}

/// `__open_2` (fortified `open` without a mode).
#[no_mangle]
pub extern "C" fn __open_2(path: CStrPtr<'_>, flags: c_int) -> c_int {
    open_impl(libc::AT_FDCWD, path, flags, 0, |p| {
        ffi::__open64_2(p, flags)
    })
}

/// `__open64_2`.
#[no_mangle]
pub extern "C" fn __open64_2(path: CStrPtr<'_>, flags: c_int) -> c_int {
    __open_2(path, flags)
}

/// `openat64(2)`.
#[no_mangle]
pub extern "C" fn openat64(dirfd: c_int, path: CStrPtr<'_>, flags: c_int, mode: mode_t) -> c_int {
    let mode = if wants_mode(flags) { mode } else { 0 };
    open_impl(dirfd, path, flags, mode, |p| {
        ffi::openat64(dirfd, p, flags, mode)
    })
}

/// `openat(2)`.
#[no_mangle]
pub extern "C" fn openat(dirfd: c_int, path: CStrPtr<'_>, flags: c_int, mode: mode_t) -> c_int {
    openat64(dirfd, path, flags, mode)
}

/// `__openat_2`.
#[no_mangle]
pub extern "C" fn __openat_2(dirfd: c_int, path: CStrPtr<'_>, flags: c_int) -> c_int {
    open_impl(dirfd, path, flags, 0, |p| {
        ffi::__openat64_2(dirfd, p, flags)
    })
}

/// `__openat64_2`.
#[no_mangle]
pub extern "C" fn __openat64_2(dirfd: c_int, path: CStrPtr<'_>, flags: c_int) -> c_int {
    __openat_2(dirfd, path, flags)
}

/// `creat64(2)`.
#[no_mangle]
pub extern "C" fn creat64(path: CStrPtr<'_>, mode: mode_t) -> c_int {
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
    open_impl(libc::AT_FDCWD, path, flags, mode, |p| ffi::creat64(p, mode))
}

/// `creat(2)`.
#[no_mangle]
pub extern "C" fn creat(path: CStrPtr<'_>, mode: mode_t) -> c_int {
    creat64(path, mode)
}

// ---------------------------------------------------------------------------------------
// The stat family

fn stat_into(
    dirfd: c_int,
    path: CStrPtr<'_>,
    follow: bool,
    st: Out<'_, Stat>,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        Ok(match shim.stat_path(dirfd, p, follow)? {
            Done::Local(np) => Done::Local(np),
            Done::Value((a, m)) => {
                st.set(Stat::of(&a, m));
                Done::Value(0)
            }
        })
    })
}

/// `stat64(2)`.
#[no_mangle]
pub extern "C" fn stat64(path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    stat_into(libc::AT_FDCWD, path, true, st, |p| ffi::stat64(p, st))
}

/// `stat(2)`.
#[no_mangle]
pub extern "C" fn stat(path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    stat64(path, st)
}

/// `lstat64(2)`.
#[no_mangle]
pub extern "C" fn lstat64(path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    stat_into(libc::AT_FDCWD, path, false, st, |p| ffi::lstat64(p, st))
}

/// `lstat(2)`.
#[no_mangle]
pub extern "C" fn lstat(path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    lstat64(path, st)
}

/// `__xstat64` (before glibc 2.33).
#[no_mangle]
pub extern "C" fn __xstat64(ver: c_int, path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    stat_into(libc::AT_FDCWD, path, true, st, |p| {
        ffi::__xstat64(ver, p, st)
    })
}

/// `__xstat`.
#[no_mangle]
pub extern "C" fn __xstat(ver: c_int, path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    __xstat64(ver, path, st)
}

/// `__lxstat64`.
#[no_mangle]
pub extern "C" fn __lxstat64(ver: c_int, path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    stat_into(libc::AT_FDCWD, path, false, st, |p| {
        ffi::__lxstat64(ver, p, st)
    })
}

/// `__lxstat`.
#[no_mangle]
pub extern "C" fn __lxstat(ver: c_int, path: CStrPtr<'_>, st: Out<'_, Stat>) -> c_int {
    __lxstat64(ver, path, st)
}

/// `fstatat64(2)`.
#[no_mangle]
pub extern "C" fn fstatat64(
    dirfd: c_int,
    path: CStrPtr<'_>,
    st: Out<'_, Stat>,
    flags: c_int,
) -> c_int {
    if flags & libc::AT_EMPTY_PATH != 0 && path.bytes() == Some(b"") {
        return super::calls::fstat_impl(dirfd, st)
            .unwrap_or_else(|| ffi::fstatat64(dirfd, path, st, flags));
    }
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    stat_into(dirfd, path, follow, st, |p| {
        ffi::fstatat64(dirfd, p, st, flags)
    })
}

/// `fstatat(2)`.
#[no_mangle]
pub extern "C" fn fstatat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    st: Out<'_, Stat>,
    flags: c_int,
) -> c_int {
    fstatat64(dirfd, path, st, flags)
}

/// `newfstatat` (the system call's name, which some programs call).
#[no_mangle]
pub extern "C" fn newfstatat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    st: Out<'_, Stat>,
    flags: c_int,
) -> c_int {
    fstatat64(dirfd, path, st, flags)
}

/// `__fxstatat64`.
#[no_mangle]
pub extern "C" fn __fxstatat64(
    ver: c_int,
    dirfd: c_int,
    path: CStrPtr<'_>,
    st: Out<'_, Stat>,
    flags: c_int,
) -> c_int {
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    stat_into(dirfd, path, follow, st, |p| {
        ffi::__fxstatat64(ver, dirfd, p, st, flags)
    })
}

/// `__fxstatat`.
#[no_mangle]
pub extern "C" fn __fxstatat(
    ver: c_int,
    dirfd: c_int,
    path: CStrPtr<'_>,
    st: Out<'_, Stat>,
    flags: c_int,
) -> c_int {
    __fxstatat64(ver, dirfd, path, st, flags)
}

/// `statx(2)`.
#[no_mangle]
pub extern "C" fn statx(
    dirfd: c_int,
    path: CStrPtr<'_>,
    flags: c_int,
    mask: c_uint,
    st: Out<'_, Statx>,
) -> c_int {
    if flags & libc::AT_EMPTY_PATH != 0 && path.bytes() == Some(b"") {
        if let Some((e, o)) = enter_fd(dirfd) {
            return unit(e.shim.attr(&o).map(|a| {
                st.set(Statx::of(&a, o.mount));
            }));
        }
        return ffi::statx(dirfd, path, flags, mask, st);
    }
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    via(
        dirfd,
        path,
        -1,
        |p| ffi::statx(dirfd, p, flags, mask, st),
        |shim, p| {
            Ok(match shim.stat_path(dirfd, p, follow)? {
                Done::Local(np) => Done::Local(np),
                Done::Value((a, m)) => {
                    st.set(Statx::of(&a, m));
                    Done::Value(0)
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------------------
// access

fn access_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    mode: c_int,
    flags: c_int,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    let effective = flags & libc::AT_EACCESS != 0;
    via(dirfd, path, -1, real, |shim, p| {
        let mut c = creds();
        if !effective {
            let (uid, gid) = ffi::real_ids();
            c.uid = uid;
            c.gid = gid;
        }
        Ok(match shim.find(&creds(), dirfd, p, follow)? {
            Done::Local(np) => Done::Local(np),
            Done::Value(f) => {
                let a = shim.dfs.attr_of(&creds(), &f)?;
                if mode & libc::W_OK != 0 && shim.dfs.read_only(f.mount, &c) {
                    return Err(Errno::EROFS);
                }
                fs::access(&a, &c, mode as u32)?;
                Done::Value(0)
            }
        })
    })
}

/// `access(2)`.
#[no_mangle]
pub extern "C" fn access(path: CStrPtr<'_>, mode: c_int) -> c_int {
    access_impl(libc::AT_FDCWD, path, mode, 0, |p| ffi::access(p, mode))
}

/// `faccessat(2)`.
#[no_mangle]
pub extern "C" fn faccessat(dirfd: c_int, path: CStrPtr<'_>, mode: c_int, flags: c_int) -> c_int {
    access_impl(dirfd, path, mode, flags, |p| {
        ffi::faccessat(dirfd, p, mode, flags)
    })
}

/// `faccessat2` (glibc's `faccessat` is this system call).
#[no_mangle]
pub extern "C" fn faccessat2(dirfd: c_int, path: CStrPtr<'_>, mode: c_int, flags: c_int) -> c_int {
    faccessat(dirfd, path, mode, flags)
}

/// `euidaccess(3)`.
#[no_mangle]
pub extern "C" fn euidaccess(path: CStrPtr<'_>, mode: c_int) -> c_int {
    access_impl(libc::AT_FDCWD, path, mode, libc::AT_EACCESS, |p| {
        ffi::euidaccess(p, mode)
    })
}

/// `eaccess(3)`.
#[no_mangle]
pub extern "C" fn eaccess(path: CStrPtr<'_>, mode: c_int) -> c_int {
    euidaccess(path, mode)
}

// ---------------------------------------------------------------------------------------
// Making and removing names

fn mkdir_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    mode: mode_t,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        let mode = mode & 0o7777 & !shim.umask.load(Ordering::Relaxed);
        shim.on(dirfd, p, false, |f, cl, c| {
            let (dir, name) = new_name(f)?;
            cl.mkdir(c, &dir.handle, name, mode).map(|_| 0)
        })
    })
}

/// `mkdir(2)`.
#[no_mangle]
pub extern "C" fn mkdir(path: CStrPtr<'_>, mode: mode_t) -> c_int {
    mkdir_impl(libc::AT_FDCWD, path, mode, |p| ffi::mkdir(p, mode))
}

/// `mkdirat(2)`.
#[no_mangle]
pub extern "C" fn mkdirat(dirfd: c_int, path: CStrPtr<'_>, mode: mode_t) -> c_int {
    mkdir_impl(dirfd, path, mode, |p| ffi::mkdirat(dirfd, p, mode))
}

fn remove(shim: &Shim, dirfd: c_int, p: &[u8], dir: bool) -> Result<Done<c_int>, Errno> {
    if dir && ends_with_dot(p) {
        return Err(Errno::EINVAL);
    }
    let last = p.strip_suffix(b"/").unwrap_or(p);
    if dir && (last == b".." || last.ends_with(b"/..")) {
        // As Linux answers: a directory's parent is never empty (it holds the directory).
        return Err(Errno(libc::ENOTEMPTY));
    }
    if !dir {
        // The usual case in one request, not a lookup and then the unlink.
        let from = shim.start_of(dirfd, p)?;
        if let Some(()) = shim.dfs.unlink_direct(&creds(), shim.at_of(&from), p)? {
            return Ok(Done::Value(0));
        }
    }
    shim.on(dirfd, p, false, |f, cl, c| {
        let (parent, name, n) = old_name(f)?;
        if dir {
            if n.attr.kind() != FileKind::Directory {
                return Err(Errno::ENOTDIR);
            }
            shim.dfs.forget_dirs();
            cl.rmdir(c, &parent.handle, name).map(|()| 0)
        } else {
            if n.attr.kind() == FileKind::Directory {
                return Err(Errno::EISDIR);
            }
            if p.ends_with(b"/") {
                return Err(Errno::ENOTDIR);
            }
            cl.unlink(c, &parent.handle, name).map(|()| 0)
        }
    })
}

/// `rmdir(2)`.
#[no_mangle]
pub extern "C" fn rmdir(path: CStrPtr<'_>) -> c_int {
    via(libc::AT_FDCWD, path, -1, ffi::rmdir, |shim, p| {
        remove(shim, libc::AT_FDCWD, p, true)
    })
}

/// `unlink(2)`.
#[no_mangle]
pub extern "C" fn unlink(path: CStrPtr<'_>) -> c_int {
    via(libc::AT_FDCWD, path, -1, ffi::unlink, |shim, p| {
        remove(shim, libc::AT_FDCWD, p, false)
    })
}

/// `unlinkat(2)`.
#[no_mangle]
pub extern "C" fn unlinkat(dirfd: c_int, path: CStrPtr<'_>, flags: c_int) -> c_int {
    via(
        dirfd,
        path,
        -1,
        |p| ffi::unlinkat(dirfd, p, flags),
        |shim, p| remove(shim, dirfd, p, flags & libc::AT_REMOVEDIR != 0),
    )
}

/// `remove(3)`: glibc's calls `unlink` and `rmdir` internally, past this library.
#[export_name = "remove"]
pub extern "C" fn remove_path(path: CStrPtr<'_>) -> c_int {
    let r = unlink(path);
    if r == 0 || ffi::errno() != libc::EISDIR {
        return r;
    }
    rmdir(path)
}

/// Two paths: both in the DFS (one mount), both local, or neither (`EXDEV`).
// Lives for one call, on the stack (as `Walk`).
#[allow(clippy::large_enum_variant)]
enum Pair {
    Dfs(Found, Found),
    Local(CString, CString),
}

fn pair(
    shim: &Shim,
    c: &Creds,
    d1: c_int,
    p1: &[u8],
    follow1: bool,
    d2: c_int,
    p2: &[u8],
) -> Result<Pair, Errno> {
    let a = if shim.wants(d1, p1) {
        shim.find(c, d1, p1, follow1)?
    } else {
        Done::Local(p1.to_vec())
    };
    let b = if shim.wants(d2, p2) {
        shim.find(c, d2, p2, false)?
    } else {
        Done::Local(p2.to_vec())
    };
    match (a, b) {
        (Done::Value(a), Done::Value(b)) if a.mount == b.mount => Ok(Pair::Dfs(a, b)),
        (Done::Local(a), Done::Local(b)) => Ok(Pair::Local(cstring(a), cstring(b))),
        _ => Err(EXDEV),
    }
}

/// Runs a two-path call: `ours` on DFS paths, `real` on local ones (rewritten if a walk
/// left the DFS; a local relative path keeps its `dirfd`).
fn two_paths(
    d1: c_int,
    p1: CStrPtr<'_>,
    follow1: bool,
    d2: c_int,
    p2: CStrPtr<'_>,
    real: impl FnOnce(CStrPtr<'_>, CStrPtr<'_>) -> c_int,
    ours: impl FnOnce(&Shim, &Found, &Found, &Client, &Creds) -> Result<(), Errno>,
) -> c_int {
    let (Some(a), Some(b)) = (p1.bytes(), p2.bytes()) else {
        // One string is unreadable: the kernel would say EFAULT before looking at the
        // other, which may be the DFS's (and so a name the kernel does not know).
        let other = p1.bytes().or(p2.bytes());
        if let (Some(o), Some(e)) = (other, enter()) {
            if e.shim.wants(d1, o) || e.shim.wants(d2, o) {
                return fail(Errno(libc::EFAULT), -1);
            }
        }
        return real(p1, p2);
    };
    if a.len() >= libc::PATH_MAX as usize || b.len() >= libc::PATH_MAX as usize {
        let Some(e) = enter() else {
            return real(p1, p2);
        };
        if e.shim.wants(d1, a) || e.shim.wants(d2, b) {
            return fail(Errno(libc::ENAMETOOLONG), -1);
        }
        drop(e);
        return real(p1, p2);
    }
    let Some(e) = enter() else {
        return real(p1, p2);
    };
    if !e.shim.wants(d1, a) && !e.shim.wants(d2, b) {
        drop(e);
        return real(p1, p2);
    }
    let c = creds();
    match pair(e.shim, &c, d1, a, follow1, d2, b) {
        Err(err) => fail(err, -1),
        Ok(Pair::Local(x, y)) => {
            drop(e);
            real(CStrPtr::of(&x), CStrPtr::of(&y))
        }
        Ok(Pair::Dfs(x, y)) => unit(
            e.shim
                .dfs
                .client(x.mount, &c)
                .and_then(|cl| ours(e.shim, &x, &y, &cl, &c)),
        ),
    }
}

fn rename_impl(
    d1: c_int,
    p1: CStrPtr<'_>,
    d2: c_int,
    p2: CStrPtr<'_>,
    flags: c_uint,
    real: impl FnOnce(CStrPtr<'_>, CStrPtr<'_>) -> c_int,
) -> c_int {
    two_paths(d1, p1, false, d2, p2, real, |shim, a, b, cl, c| {
        let mode = match flags {
            0 => RenameMode::Replace,
            libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            libc::RENAME_EXCHANGE => RenameMode::Exchange,
            _ => return Err(Errno::EINVAL),
        };
        let (fp, fname, fnode) = old_name(a)?;
        let (tp, tname) = match (&b.parent, &b.name) {
            (Some(p), Some(n)) => (p, n),
            _ => return Err(Errno(libc::EBUSY)),
        };
        if let (Some(p1), Some(p2)) = (p1.bytes(), p2.bytes()) {
            if ends_with_dot(p1) || ends_with_dot(p2) {
                return Err(Errno::EINVAL);
            }
            // A trailing slash asks for a directory.
            if (p1.ends_with(b"/") || p2.ends_with(b"/"))
                && fnode.attr.kind() != FileKind::Directory
            {
                return Err(Errno::ENOTDIR);
            }
        }
        shim.dfs.forget_dirs();
        cl.rename(c, &fp.handle, fname, &tp.handle, tname, mode)
    })
}

/// `rename(2)`.
#[no_mangle]
pub extern "C" fn rename(from: CStrPtr<'_>, to: CStrPtr<'_>) -> c_int {
    rename_impl(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0, ffi::rename)
}

/// `renameat(2)`.
#[no_mangle]
pub extern "C" fn renameat(d1: c_int, from: CStrPtr<'_>, d2: c_int, to: CStrPtr<'_>) -> c_int {
    rename_impl(d1, from, d2, to, 0, |a, b| ffi::renameat(d1, a, d2, b))
}

/// `renameat2(2)`.
#[no_mangle]
pub extern "C" fn renameat2(
    d1: c_int,
    from: CStrPtr<'_>,
    d2: c_int,
    to: CStrPtr<'_>,
    flags: c_uint,
) -> c_int {
    rename_impl(d1, from, d2, to, flags, |a, b| {
        ffi::renameat2(d1, a, d2, b, flags)
    })
}

fn link_impl(
    d1: c_int,
    p1: CStrPtr<'_>,
    d2: c_int,
    p2: CStrPtr<'_>,
    flags: c_int,
    real: impl FnOnce(CStrPtr<'_>, CStrPtr<'_>) -> c_int,
) -> c_int {
    let follow = flags & libc::AT_SYMLINK_FOLLOW != 0;
    two_paths(d1, p1, follow, d2, p2, real, |_, a, b, cl, c| {
        let from = node(a)?;
        let (dir, name) = new_name(b)?;
        if from.attr.kind() == FileKind::Directory {
            return Err(Errno::EPERM);
        }
        cl.link(c, &from.handle, &dir.handle, name).map(drop)
    })
}

/// `link(2)`.
#[no_mangle]
pub extern "C" fn link(from: CStrPtr<'_>, to: CStrPtr<'_>) -> c_int {
    link_impl(libc::AT_FDCWD, from, libc::AT_FDCWD, to, 0, ffi::link)
}

/// `linkat(2)`.
#[no_mangle]
pub extern "C" fn linkat(
    d1: c_int,
    from: CStrPtr<'_>,
    d2: c_int,
    to: CStrPtr<'_>,
    flags: c_int,
) -> c_int {
    if flags & libc::AT_EMPTY_PATH != 0 && from.bytes() == Some(b"") {
        // Linking an open file by descriptor.
        if let Some((e, o)) = enter_fd(d1) {
            let r = via(
                d2,
                to,
                -1,
                |_| fail(EXDEV, -1),
                |shim, p| {
                    let _ = &e;
                    shim.on(d2, p, false, |f, cl, c| {
                        let (dir, name) = new_name(f)?;
                        cl.link(c, &o.handle, &dir.handle, name).map(|_| 0)
                    })
                },
            );
            return r;
        }
        return ffi::linkat(d1, from, d2, to, flags);
    }
    link_impl(d1, from, d2, to, flags, |a, b| {
        ffi::linkat(d1, a, d2, b, flags)
    })
}

fn symlink_impl(
    target: CStrPtr<'_>,
    dirfd: c_int,
    path: CStrPtr<'_>,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        let t = target.bytes().ok_or(Errno(libc::EFAULT))?;
        let t = LinkTarget::new(t).map_err(|e| match e {
            dfs_proto::name::NameError::Empty => Errno::ENOENT,
            e => e.errno(),
        })?;
        shim.on(dirfd, p, false, |f, cl, c| {
            let (dir, name) = new_name(f)?;
            cl.symlink(c, &dir.handle, name, &t).map(|_| 0)
        })
    })
}

/// `symlink(2)`.
#[no_mangle]
pub extern "C" fn symlink(target: CStrPtr<'_>, path: CStrPtr<'_>) -> c_int {
    symlink_impl(target, libc::AT_FDCWD, path, |p| ffi::symlink(target, p))
}

/// `symlinkat(2)`.
#[no_mangle]
pub extern "C" fn symlinkat(target: CStrPtr<'_>, dirfd: c_int, path: CStrPtr<'_>) -> c_int {
    symlink_impl(target, dirfd, path, |p| ffi::symlinkat(target, dirfd, p))
}

/// What `/proc/self/fd/N` names for a DFS descriptor `N` (its path), if `p` is such a link.
fn proc_fd_link(shim: &Shim, p: &[u8]) -> Option<Vec<u8>> {
    let rest = p
        .strip_prefix(b"/proc/self/fd/")
        .or_else(|| p.strip_prefix(b"/dev/fd/"))
        .or_else(|| {
            let me = format!("/proc/{}/fd/", std::process::id());
            p.strip_prefix(me.as_bytes())
        })?;
    let fd: c_int = std::str::from_utf8(rest).ok()?.parse().ok()?;
    shim.fds.get(fd).map(|o| o.path.clone())
}

fn readlink_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    buf: BufMut<'_>,
    n: size_t,
    real: impl FnOnce(CStrPtr<'_>) -> ssize_t,
) -> ssize_t {
    if let (Some(p), Some(e)) = (path.bytes(), enter()) {
        if let Some(target) = proc_fd_link(e.shim, p) {
            let k = buf.put(n, 0, &target);
            return k as ssize_t;
        }
    }
    via(dirfd, path, -1, real, |shim, p| {
        shim.on(dirfd, p, false, |f, cl, c| {
            let e = node(f)?;
            if e.attr.kind() != FileKind::Symlink {
                return Err(Errno::EINVAL);
            }
            let t = cl.readlink(c, &e.handle)?;
            Ok(buf.put(n, 0, t.as_bytes()) as ssize_t)
        })
    })
}

/// `readlink(2)`.
#[no_mangle]
pub extern "C" fn readlink(path: CStrPtr<'_>, buf: BufMut<'_>, n: size_t) -> ssize_t {
    readlink_impl(libc::AT_FDCWD, path, buf, n, |p| ffi::readlink(p, buf, n))
}

/// `readlinkat(2)`.
#[no_mangle]
pub extern "C" fn readlinkat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    buf: BufMut<'_>,
    n: size_t,
) -> ssize_t {
    readlink_impl(dirfd, path, buf, n, |p| ffi::readlinkat(dirfd, p, buf, n))
}

/// `__readlink_chk`.
#[no_mangle]
pub extern "C" fn __readlink_chk(
    path: CStrPtr<'_>,
    buf: BufMut<'_>,
    n: size_t,
    _len: size_t,
) -> ssize_t {
    readlink(path, buf, n)
}

fn mknod_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    mode: mode_t,
    dev: u64,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        let umask = shim.umask.load(Ordering::Relaxed);
        let kind = if mode & libc::S_IFMT == 0 {
            libc::S_IFREG
        } else {
            mode & libc::S_IFMT
        };
        let mode = kind | (mode & 0o7777 & !umask);
        shim.on(dirfd, p, false, |f, cl, c| {
            let (dir, name) = new_name(f)?;
            cl.mknod(c, &dir.handle, name, mode, dev).map(|_| 0)
        })
    })
}

/// `mknod(2)`.
#[no_mangle]
pub extern "C" fn mknod(path: CStrPtr<'_>, mode: mode_t, dev: u64) -> c_int {
    mknod_impl(libc::AT_FDCWD, path, mode, dev, |p| {
        ffi::mknod(p, mode, dev)
    })
}

/// `mknodat(2)`.
#[no_mangle]
pub extern "C" fn mknodat(dirfd: c_int, path: CStrPtr<'_>, mode: mode_t, dev: u64) -> c_int {
    mknod_impl(dirfd, path, mode, dev, |p| {
        ffi::mknodat(dirfd, p, mode, dev)
    })
}

/// `mkfifo(3)`.
#[no_mangle]
pub extern "C" fn mkfifo(path: CStrPtr<'_>, mode: mode_t) -> c_int {
    mknod_impl(
        libc::AT_FDCWD,
        path,
        libc::S_IFIFO | (mode & 0o7777),
        0,
        |p| ffi::mkfifo(p, mode),
    )
}

/// `mkfifoat(3)`.
#[no_mangle]
pub extern "C" fn mkfifoat(dirfd: c_int, path: CStrPtr<'_>, mode: mode_t) -> c_int {
    mknod_impl(dirfd, path, libc::S_IFIFO | (mode & 0o7777), 0, |p| {
        ffi::mkfifoat(dirfd, p, mode)
    })
}

// ---------------------------------------------------------------------------------------
// Attributes by path

fn setattr_path(
    dirfd: c_int,
    path: CStrPtr<'_>,
    follow: bool,
    set: SetAttr,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        shim.on(dirfd, p, follow, |f, cl, c| {
            let e = node(f)?;
            if set.size.is_some() && e.attr.kind() == FileKind::Directory {
                return Err(Errno::EISDIR);
            }
            shim.dfs.forget_dirs();
            cl.setattr(c, &e.handle, None, set).map(|_| 0)
        })
    })
}

/// `chmod(2)`.
#[no_mangle]
pub extern "C" fn chmod(path: CStrPtr<'_>, mode: mode_t) -> c_int {
    let set = SetAttr {
        mode: Some(mode & 0o7777),
        ..SetAttr::default()
    };
    setattr_path(libc::AT_FDCWD, path, true, set, |p| ffi::chmod(p, mode))
}

/// `fchmodat(2)`: a symbolic link's own mode cannot be changed on Linux (`EOPNOTSUPP`).
#[no_mangle]
pub extern "C" fn fchmodat(dirfd: c_int, path: CStrPtr<'_>, mode: mode_t, flags: c_int) -> c_int {
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    via(
        dirfd,
        path,
        -1,
        |p| ffi::fchmodat(dirfd, p, mode, flags),
        |shim, p| {
            shim.on(dirfd, p, follow, |f, cl, c| {
                let e = node(f)?;
                if e.attr.kind() == FileKind::Symlink {
                    return Err(crate::errno::EOPNOTSUPP);
                }
                let set = SetAttr {
                    mode: Some(mode & 0o7777),
                    ..SetAttr::default()
                };
                shim.dfs.forget_dirs();
                cl.setattr(c, &e.handle, None, set).map(|_| 0)
            })
        },
    )
}

/// `chown(2)`.
#[no_mangle]
pub extern "C" fn chown(path: CStrPtr<'_>, uid: u32, gid: u32) -> c_int {
    setattr_path(libc::AT_FDCWD, path, true, owner(uid, gid), |p| {
        ffi::chown(p, uid, gid)
    })
}

/// `lchown(2)`.
#[no_mangle]
pub extern "C" fn lchown(path: CStrPtr<'_>, uid: u32, gid: u32) -> c_int {
    setattr_path(libc::AT_FDCWD, path, false, owner(uid, gid), |p| {
        ffi::lchown(p, uid, gid)
    })
}

/// `fchownat(2)`.
#[no_mangle]
pub extern "C" fn fchownat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    uid: u32,
    gid: u32,
    flags: c_int,
) -> c_int {
    if flags & libc::AT_EMPTY_PATH != 0 && path.bytes() == Some(b"") {
        return super::calls::fchown(dirfd, uid, gid);
    }
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    setattr_path(dirfd, path, follow, owner(uid, gid), |p| {
        ffi::fchownat(dirfd, p, uid, gid, flags)
    })
}

/// `truncate64(2)`.
#[no_mangle]
pub extern "C" fn truncate64(path: CStrPtr<'_>, len: off_t) -> c_int {
    let Ok(size) = u64::try_from(len) else {
        return via(
            libc::AT_FDCWD,
            path,
            -1,
            |p| ffi::truncate64(p, len),
            |_, _| Err(Errno::EINVAL),
        );
    };
    let set = SetAttr {
        size: Some(size),
        ..SetAttr::default()
    };
    setattr_path(libc::AT_FDCWD, path, true, set, |p| ffi::truncate64(p, len))
}

/// `truncate(2)`.
#[no_mangle]
pub extern "C" fn truncate(path: CStrPtr<'_>, len: off_t) -> c_int {
    truncate64(path, len)
}

/// `utimensat(2)`.
#[no_mangle]
pub extern "C" fn utimensat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    t: In<'_, abi::Timespec>,
    flags: c_int,
) -> c_int {
    if path.bytes().is_none() {
        // `utimensat(fd, NULL, …)` is `futimens(fd, …)` (glibc refuses it; the system call
        // takes it).
        return super::calls::futimens(dirfd, t);
    }
    let ts = t.array(2);
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    via(
        dirfd,
        path,
        -1,
        |p| ffi::utimensat(dirfd, p, t, flags),
        |shim, p| {
            if !times_valid(&ts) {
                return Err(Errno::EINVAL);
            }
            let set = times(ts);
            shim.on(dirfd, p, follow, |f, cl, c| {
                shim.dfs.forget_dirs();
                cl.setattr(c, &node(f)?.handle, None, set).map(|_| 0)
            })
        },
    )
}

/// `utimes(2)`.
#[no_mangle]
pub extern "C" fn utimes(path: CStrPtr<'_>, t: In<'_, abi::Timeval>) -> c_int {
    let set = times(from_timevals(t.array(2)));
    setattr_path(libc::AT_FDCWD, path, true, set, |p| ffi::utimes(p, t))
}

/// `lutimes(3)`.
#[no_mangle]
pub extern "C" fn lutimes(path: CStrPtr<'_>, t: In<'_, abi::Timeval>) -> c_int {
    let set = times(from_timevals(t.array(2)));
    setattr_path(libc::AT_FDCWD, path, false, set, |p| ffi::lutimes(p, t))
}

/// `futimesat(2)`.
#[no_mangle]
pub extern "C" fn futimesat(dirfd: c_int, path: CStrPtr<'_>, t: In<'_, abi::Timeval>) -> c_int {
    let set = times(from_timevals(t.array(2)));
    setattr_path(dirfd, path, true, set, |p| ffi::futimesat(dirfd, p, t))
}

/// `utime(2)`.
#[no_mangle]
pub extern "C" fn utime(path: CStrPtr<'_>, t: In<'_, abi::Utimbuf>) -> c_int {
    let ts = t.get().map(|u| {
        vec![
            abi::Timespec {
                tv_sec: u.actime,
                tv_nsec: 0,
            },
            abi::Timespec {
                tv_sec: u.modtime,
                tv_nsec: 0,
            },
        ]
    });
    setattr_path(libc::AT_FDCWD, path, true, times(ts), |p| ffi::utime(p, t))
}

// ---------------------------------------------------------------------------------------
// Extended attributes by path

fn xname(name: CStrPtr<'_>) -> Result<XattrName, Errno> {
    XattrName::new(name.bytes().ok_or(Errno(libc::EFAULT))?).map_err(|e| e.errno())
}

fn getx(
    path: CStrPtr<'_>,
    follow: bool,
    name: CStrPtr<'_>,
    v: BufMut<'_>,
    n: size_t,
    real: impl FnOnce(CStrPtr<'_>) -> ssize_t,
) -> ssize_t {
    via(libc::AT_FDCWD, path, -1, real, |shim, p| {
        shim.on(libc::AT_FDCWD, p, follow, |f, cl, c| {
            let size = u32::try_from(n).unwrap_or(u32::MAX).min(65536);
            let r = cl.getxattr(c, &node(f)?.handle, &xname(name)?, size)?;
            xattr_reply(r, v, n).map(|k| k as ssize_t)
        })
    })
}

/// `getxattr(2)`.
#[no_mangle]
pub extern "C" fn getxattr(
    path: CStrPtr<'_>,
    name: CStrPtr<'_>,
    v: BufMut<'_>,
    n: size_t,
) -> ssize_t {
    getx(path, true, name, v, n, |p| ffi::getxattr(p, name, v, n))
}

/// `lgetxattr(2)`.
#[no_mangle]
pub extern "C" fn lgetxattr(
    path: CStrPtr<'_>,
    name: CStrPtr<'_>,
    v: BufMut<'_>,
    n: size_t,
) -> ssize_t {
    getx(path, false, name, v, n, |p| ffi::lgetxattr(p, name, v, n))
}

fn setx(
    path: CStrPtr<'_>,
    follow: bool,
    name: CStrPtr<'_>,
    v: Buf<'_>,
    n: size_t,
    flags: c_int,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(libc::AT_FDCWD, path, -1, real, |shim, p| {
        shim.on(libc::AT_FDCWD, p, follow, |f, cl, c| {
            cl.setxattr(c, &node(f)?.handle, &xname(name)?, v.slice(n), flags as u32)
                .map(|()| 0)
        })
    })
}

/// `setxattr(2)`.
#[no_mangle]
pub extern "C" fn setxattr(
    path: CStrPtr<'_>,
    name: CStrPtr<'_>,
    v: Buf<'_>,
    n: size_t,
    flags: c_int,
) -> c_int {
    setx(path, true, name, v, n, flags, |p| {
        ffi::setxattr(p, name, v, n, flags)
    })
}

/// `lsetxattr(2)`.
#[no_mangle]
pub extern "C" fn lsetxattr(
    path: CStrPtr<'_>,
    name: CStrPtr<'_>,
    v: Buf<'_>,
    n: size_t,
    flags: c_int,
) -> c_int {
    setx(path, false, name, v, n, flags, |p| {
        ffi::lsetxattr(p, name, v, n, flags)
    })
}

fn listx(
    path: CStrPtr<'_>,
    follow: bool,
    v: BufMut<'_>,
    n: size_t,
    real: impl FnOnce(CStrPtr<'_>) -> ssize_t,
) -> ssize_t {
    via(libc::AT_FDCWD, path, -1, real, |shim, p| {
        shim.on(libc::AT_FDCWD, p, follow, |f, cl, c| {
            let size = u32::try_from(n).unwrap_or(u32::MAX).min(65536);
            let r = cl.listxattr(c, &node(f)?.handle, size)?;
            xattr_reply(r, v, n).map(|k| k as ssize_t)
        })
    })
}

/// `listxattr(2)`.
#[no_mangle]
pub extern "C" fn listxattr(path: CStrPtr<'_>, v: BufMut<'_>, n: size_t) -> ssize_t {
    listx(path, true, v, n, |p| ffi::listxattr(p, v, n))
}

/// `llistxattr(2)`.
#[no_mangle]
pub extern "C" fn llistxattr(path: CStrPtr<'_>, v: BufMut<'_>, n: size_t) -> ssize_t {
    listx(path, false, v, n, |p| ffi::llistxattr(p, v, n))
}

fn removex(
    path: CStrPtr<'_>,
    follow: bool,
    name: CStrPtr<'_>,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(libc::AT_FDCWD, path, -1, real, |shim, p| {
        shim.on(libc::AT_FDCWD, p, follow, |f, cl, c| {
            cl.removexattr(c, &node(f)?.handle, &xname(name)?)
                .map(|()| 0)
        })
    })
}

/// `removexattr(2)`.
#[no_mangle]
pub extern "C" fn removexattr(path: CStrPtr<'_>, name: CStrPtr<'_>) -> c_int {
    removex(path, true, name, |p| ffi::removexattr(p, name))
}

/// `lremovexattr(2)`.
#[no_mangle]
pub extern "C" fn lremovexattr(path: CStrPtr<'_>, name: CStrPtr<'_>) -> c_int {
    removex(path, false, name, |p| ffi::lremovexattr(p, name))
}

// ---------------------------------------------------------------------------------------
// File system statistics

fn statfs_of(shim: &Shim, p: &[u8]) -> Result<Done<(dfs_proto::attr::StatFs, usize)>, Errno> {
    shim.on(libc::AT_FDCWD, p, true, |f, cl, c| {
        Ok((cl.statfs(c, &node(f)?.handle)?, f.mount))
    })
}

/// `statfs64(2)`.
#[no_mangle]
pub extern "C" fn statfs64(path: CStrPtr<'_>, st: Out<'_, abi::Statfs>) -> c_int {
    via(
        libc::AT_FDCWD,
        path,
        -1,
        |p| ffi::statfs64(p, st),
        |shim, p| {
            Ok(match statfs_of(shim, p)? {
                Done::Local(np) => Done::Local(np),
                Done::Value((s, m)) => {
                    st.set(abi::Statfs::of(&s, m));
                    Done::Value(0)
                }
            })
        },
    )
}

/// `statfs(2)`.
#[no_mangle]
pub extern "C" fn statfs(path: CStrPtr<'_>, st: Out<'_, abi::Statfs>) -> c_int {
    statfs64(path, st)
}

/// `statvfs64(3)`.
#[no_mangle]
pub extern "C" fn statvfs64(path: CStrPtr<'_>, st: Out<'_, abi::Statvfs>) -> c_int {
    via(
        libc::AT_FDCWD,
        path,
        -1,
        |p| ffi::statvfs64(p, st),
        |shim, p| {
            Ok(match statfs_of(shim, p)? {
                Done::Local(np) => Done::Local(np),
                Done::Value((s, m)) => {
                    st.set(abi::Statvfs::of(&s, m));
                    Done::Value(0)
                }
            })
        },
    )
}

/// `statvfs(3)`.
#[no_mangle]
pub extern "C" fn statvfs(path: CStrPtr<'_>, st: Out<'_, abi::Statvfs>) -> c_int {
    statvfs64(path, st)
}

// ---------------------------------------------------------------------------------------
// The current directory

/// Enters a DFS directory: the shim's current directory (the kernel's stays where it was;
/// relative paths are routed by the shim), and `DFS_SHIM_CWD` for programs run from here.
fn enter_dir(shim: &Shim, mount: usize, rest: Vec<Vec<u8>>) {
    let path = shim.dfs.router().path_of(mount, &rest);
    shim.dfs.set_cwd(Cwd::Dfs { mount, rest });
    std::env::set_var(
        vars::CWD,
        std::ffi::OsStr::new(&String::from_utf8_lossy(&path).into_owned()),
    );
}

/// After the kernel's current directory changed: the shim's follows it.
fn left_dfs(shim: &Shim) {
    let cwd = std::env::current_dir()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .unwrap_or_else(|_| b"/".to_vec());
    shim.dfs.set_cwd(Cwd::Local(cwd));
    std::env::remove_var(vars::CWD);
}

/// `chdir(2)`.
#[no_mangle]
pub extern "C" fn chdir(path: CStrPtr<'_>) -> c_int {
    via(
        libc::AT_FDCWD,
        path,
        -1,
        |p| {
            let r = ffi::chdir(p);
            if r == 0 {
                if let Some(e) = enter() {
                    left_dfs(e.shim);
                }
            }
            r
        },
        |shim, p| {
            let c = creds();
            match shim.find(&c, libc::AT_FDCWD, p, true)? {
                Done::Local(np) => Ok(Done::Local(np)),
                Done::Value(f) => {
                    let a = shim.dfs.attr_of(&c, &f)?;
                    if a.kind() != FileKind::Directory {
                        return Err(Errno::ENOTDIR);
                    }
                    fs::access(&a, &c, 1)?;
                    enter_dir(shim, f.mount, f.rest.clone());
                    Ok(Done::Value(0))
                }
            }
        },
    )
}

/// `fchdir(2)`.
#[no_mangle]
pub extern "C" fn fchdir(fd: c_int) -> c_int {
    match enter_fd(fd) {
        Some((e, o)) => {
            if o.kind == crate::table::Kind::File {
                return fail(Errno::ENOTDIR, -1);
            }
            enter_dir(e.shim, o.mount, o.rest.clone());
            0
        }
        None => {
            let r = ffi::fchdir(fd);
            if r == 0 {
                if let Some(e) = enter() {
                    left_dfs(e.shim);
                }
            }
            r
        }
    }
}

/// `getcwd(3)`.
#[no_mangle]
pub extern "C" fn getcwd(buf: CharPtr, size: size_t) -> CharPtr {
    let Some(e) = enter() else {
        return ffi::getcwd(buf, size);
    };
    if !e.shim.dfs.cwd_in_dfs() {
        drop(e);
        return ffi::getcwd(buf, size);
    }
    if !buf.is_null() && size == 0 {
        return fail(Errno::EINVAL, CharPtr::null());
    }
    let p = e.shim.dfs.router().cwd_path();
    buf.fill(size, &p)
        .unwrap_or_else(|e| fail(Errno(e), CharPtr::null()))
}

/// `__getcwd_chk`.
#[no_mangle]
pub extern "C" fn __getcwd_chk(buf: CharPtr, size: size_t, _len: size_t) -> CharPtr {
    getcwd(buf, size)
}

/// `get_current_dir_name(3)`.
#[no_mangle]
pub extern "C" fn get_current_dir_name() -> CharPtr {
    let Some(e) = enter() else {
        return ffi::get_current_dir_name();
    };
    if !e.shim.dfs.cwd_in_dfs() {
        drop(e);
        return ffi::get_current_dir_name();
    }
    let p = e.shim.dfs.router().cwd_path();
    CharPtr::null()
        .fill(0, &p)
        .unwrap_or_else(|e| fail(Errno(e), CharPtr::null()))
}

/// `realpath(3)`: glibc's walks with internal calls, past this library, so DFS paths are
/// resolved here.
#[no_mangle]
pub extern "C" fn realpath(path: CStrPtr<'_>, out: CharPtr) -> CharPtr {
    via(
        libc::AT_FDCWD,
        path,
        CharPtr::null(),
        |p| ffi::realpath(p, out),
        |shim, p| {
            let c = creds();
            Ok(match shim.find(&c, libc::AT_FDCWD, p, true)? {
                Done::Local(np) => Done::Local(np),
                Done::Value(f) => {
                    node(&f)?;
                    let full = shim.dfs.path_of(&f);
                    Done::Value(out.fill_path_max(&full).map_err(Errno)?)
                }
            })
        },
    )
}

/// `__realpath_chk`.
#[no_mangle]
pub extern "C" fn __realpath_chk(path: CStrPtr<'_>, out: CharPtr, _len: size_t) -> CharPtr {
    realpath(path, out)
}

/// `canonicalize_file_name(3)`.
#[no_mangle]
pub extern "C" fn canonicalize_file_name(path: CStrPtr<'_>) -> CharPtr {
    via(
        libc::AT_FDCWD,
        path,
        CharPtr::null(),
        ffi::canonicalize_file_name,
        |shim, p| {
            let c = creds();
            Ok(match shim.find(&c, libc::AT_FDCWD, p, true)? {
                Done::Local(np) => Done::Local(np),
                Done::Value(f) => {
                    node(&f)?;
                    let full = shim.dfs.path_of(&f);
                    Done::Value(CharPtr::null().fill(0, &full).map_err(Errno)?)
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------------------
// Limits

/// What `pathconf` answers for a DFS file: the server's file system is Linux's, so its
/// limits are those of a local disk (glibc would ask `statfs` internally, past this
/// library, and fail on a name the kernel does not know).
fn limit(name: c_int) -> Result<libc::c_long, Errno> {
    Ok(match name {
        libc::_PC_NAME_MAX => 255,
        libc::_PC_PATH_MAX => libc::PATH_MAX as libc::c_long,
        libc::_PC_PIPE_BUF => libc::PIPE_BUF as libc::c_long,
        libc::_PC_CHOWN_RESTRICTED | libc::_PC_NO_TRUNC => 1,
        libc::_PC_FILESIZEBITS => 64,
        libc::_PC_MAX_CANON | libc::_PC_MAX_INPUT => 255,
        libc::_PC_VDISABLE => 0,
        // No limit (-1 with errno unchanged), as glibc says for these. The server does
        // not say how many links its file system allows (FUSE mounts do not either).
        libc::_PC_LINK_MAX
        | libc::_PC_SYMLINK_MAX
        | libc::_PC_ASYNC_IO
        | libc::_PC_PRIO_IO
        | libc::_PC_SYNC_IO
        | libc::_PC_REC_INCR_XFER_SIZE
        | libc::_PC_REC_MAX_XFER_SIZE
        | libc::_PC_REC_MIN_XFER_SIZE
        | libc::_PC_REC_XFER_ALIGN
        | libc::_PC_ALLOC_SIZE_MIN
        | libc::_PC_2_SYMLINKS => -1,
        _ => return Err(Errno::EINVAL),
    })
}

/// `pathconf(3)`.
#[no_mangle]
pub extern "C" fn pathconf(path: CStrPtr<'_>, name: c_int) -> libc::c_long {
    via(
        libc::AT_FDCWD,
        path,
        -1,
        |p| ffi::pathconf(p, name),
        |shim, p| {
            Ok(match shim.stat_path(libc::AT_FDCWD, p, true)? {
                Done::Local(np) => Done::Local(np),
                Done::Value(_) => Done::Value(limit(name)?),
            })
        },
    )
}

/// `fpathconf(3)`.
#[no_mangle]
pub extern "C" fn fpathconf(fd: c_int, name: c_int) -> libc::c_long {
    match enter_fd(fd) {
        None => ffi::fpathconf(fd, name),
        Some(_) => limit(name).unwrap_or_else(|e| fail(e, -1)),
    }
}
