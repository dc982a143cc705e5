//! Directory streams of DFS directories: `opendir` and friends, `getdents64`, `scandir`.
//!
//! A `DIR *` of ours is the address of a [`Stream`] this module keeps; `readdir` and the
//! others look it up, and hand anything else to the C library. A stream reads through its
//! descriptor, whose position (the description's offset, shared after `dup` and `fork`) is
//! the cookie after the last entry read.

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use dfs_proto::msg::{DirEntry, DirPage};
use dfs_proto::Errno;

use super::abi::{self, Dirent64};
use super::calls::{fail, ssize};
use super::ffi::{self, BufMut, CStrPtr, DirPtr, DirentPtr, Out, ScanCompar, ScanFilter};
use super::paths::{via, Done};
use super::{creds, enter, enter_fd, Open, Shim};
use crate::dirs::PAGE;
use crate::fs::Outcome;
use crate::table::Kind;

/// One of our `DIR *`.
#[derive(Debug)]
struct Stream {
    fd: c_int,
    /// What the last `readdir` returned (the caller reads it until the next call).
    ent: Dirent64,
}

/// The streams of this process, by address.
#[derive(Debug, Default)]
pub(crate) struct Dirs {
    map: Mutex<HashMap<usize, Box<Stream>>>,
}

impl Shim {
    /// The next entry of the open directory `o`, from where its description's offset says.
    fn next_entry(&self, o: &Open) -> Result<Option<DirEntry>, Errno> {
        if o.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let pos = self.table.offset(o.id)?;
        let mut listing = o.listing.lock().unwrap_or_else(|p| p.into_inner());
        let at = pos.load(Ordering::Relaxed);
        if listing.position() != at {
            listing.seek(at);
        }
        let c = creds();
        let client = self.dfs.client(o.mount, &c)?;
        let e = listing.next(|cookie| fetch(&client, &c, o, cookie))?;
        pos.store(listing.position(), Ordering::Relaxed);
        Ok(e)
    }
}

fn fetch(
    client: &dfs_client::Client,
    c: &dfs_proto::msg::Creds,
    o: &Open,
    cookie: u64,
) -> Result<DirPage, Errno> {
    client
        .list_dir(c, &o.handle, cookie, PAGE, false)
        .map(|(page, _)| page)
}

fn dirent(e: &DirEntry) -> Dirent64 {
    let mut d = Dirent64 {
        d_ino: e.ino,
        d_off: e.cookie as i64,
        d_reclen: std::mem::size_of::<Dirent64>() as u16,
        d_type: abi::dtype(e.kind),
        ..Dirent64::default()
    };
    let n = e.name.len().min(255);
    d.d_name[..n].copy_from_slice(&e.name[..n]);
    d
}

fn new_stream(shim: &Shim, fd: c_int) -> DirPtr {
    let s = Box::new(Stream {
        fd,
        ent: Dirent64::default(),
    });
    let addr = &*s as *const Stream as usize;
    shim.dirs
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(addr, s);
    DirPtr::ours(addr)
}

/// Runs `f` on our stream `d`, if it is ours.
fn with_stream<R>(d: DirPtr, f: impl FnOnce(&'static Shim, &mut Stream) -> R) -> Option<R> {
    let e = enter()?;
    let mut map = e.shim.dirs.map.lock().unwrap_or_else(|p| p.into_inner());
    let s = map.get_mut(&d.addr())?;
    Some(f(e.shim, s))
}

/// `opendir(3)`.
#[no_mangle]
pub extern "C" fn opendir(path: CStrPtr<'_>) -> DirPtr {
    via(
        libc::AT_FDCWD,
        path,
        DirPtr::null(),
        ffi::opendir,
        |shim, p| {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
            Ok(match shim.open_at(libc::AT_FDCWD, p, flags, 0)? {
                Outcome::Local(np) => Done::Local(np),
                Outcome::Dfs(fd) => Done::Value(new_stream(shim, fd)),
            })
        },
    )
}

/// `fdopendir(3)`.
#[no_mangle]
pub extern "C" fn fdopendir(fd: c_int) -> DirPtr {
    match enter_fd(fd) {
        None => ffi::fdopendir(fd),
        Some((e, o)) => match o.kind {
            Kind::Dir => new_stream(e.shim, fd),
            Kind::File => fail(Errno::ENOTDIR, DirPtr::null()),
            Kind::Path => fail(Errno::EBADF, DirPtr::null()),
        },
    }
}

/// `readdir64(3)`.
#[no_mangle]
pub extern "C" fn readdir64(d: DirPtr) -> DirentPtr {
    with_stream(d, |shim, s| {
        let Some(o) = shim.fds.get(s.fd) else {
            return fail(Errno::EBADF, DirentPtr::null());
        };
        match shim.next_entry(&o) {
            Ok(Some(e)) => {
                s.ent = dirent(&e);
                DirentPtr::of(&mut s.ent)
            }
            // The end: NULL with errno untouched.
            Ok(None) => DirentPtr::null(),
            Err(e) => fail(e, DirentPtr::null()),
        }
    })
    .unwrap_or_else(|| ffi::readdir64(d))
}

/// `readdir(3)` (the same structure as `readdir64` on x86_64).
#[no_mangle]
pub extern "C" fn readdir(d: DirPtr) -> DirentPtr {
    readdir64(d)
}

/// `readdir64_r(3)`.
#[no_mangle]
pub extern "C" fn readdir64_r(
    d: DirPtr,
    entry: Out<'_, Dirent64>,
    result: Out<'_, *mut Dirent64>,
) -> c_int {
    with_stream(d, |shim, s| {
        let Some(o) = shim.fds.get(s.fd) else {
            return libc::EBADF;
        };
        match shim.next_entry(&o) {
            Ok(Some(e)) => {
                entry.set(dirent(&e));
                result.set(entry.addr() as *mut Dirent64);
                0
            }
            Ok(None) => {
                result.set(std::ptr::null_mut());
                0
            }
            Err(e) => e.0,
        }
    })
    .unwrap_or_else(|| ffi::readdir64_r(d, entry, result))
}

/// `readdir_r(3)`.
#[no_mangle]
pub extern "C" fn readdir_r(
    d: DirPtr,
    entry: Out<'_, Dirent64>,
    result: Out<'_, *mut Dirent64>,
) -> c_int {
    readdir64_r(d, entry, result)
}

/// `closedir(3)`: closes the descriptor too.
#[no_mangle]
pub extern "C" fn closedir(d: DirPtr) -> c_int {
    let taken = enter().and_then(|e| {
        e.shim
            .dirs
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&d.addr())
    });
    match taken {
        Some(s) => super::calls::close(s.fd),
        None => ffi::closedir(d),
    }
}

/// `rewinddir(3)`.
#[no_mangle]
pub extern "C" fn rewinddir(d: DirPtr) {
    let done = with_stream(d, |shim, s| {
        if let Some(o) = shim.fds.get(s.fd) {
            if let Ok(pos) = shim.table.offset(o.id) {
                pos.store(0, Ordering::Relaxed);
            }
        }
    });
    if done.is_none() {
        ffi::rewinddir(d)
    }
}

/// `telldir(3)`: the cookie after the last entry read.
#[no_mangle]
pub extern "C" fn telldir(d: DirPtr) -> libc::c_long {
    with_stream(d, |shim, s| {
        shim.fds
            .get(s.fd)
            .and_then(|o| shim.table.offset(o.id).ok())
            .map_or(-1, |p| p.load(Ordering::Relaxed) as libc::c_long)
    })
    .unwrap_or_else(|| ffi::telldir(d))
}

/// `seekdir(3)`.
#[no_mangle]
pub extern "C" fn seekdir(d: DirPtr, pos: libc::c_long) {
    let done = with_stream(d, |shim, s| {
        if let Some(o) = shim.fds.get(s.fd) {
            if let Ok(p) = shim.table.offset(o.id) {
                p.store(pos as u64, Ordering::Relaxed);
            }
        }
    });
    if done.is_none() {
        ffi::seekdir(d, pos)
    }
}

/// `dirfd(3)`.
#[no_mangle]
pub extern "C" fn dirfd(d: DirPtr) -> c_int {
    with_stream(d, |_, s| s.fd).unwrap_or_else(|| ffi::dirfd(d))
}

/// `getdents64(2)`: `linux_dirent64` records, as many as fit.
#[no_mangle]
pub extern "C" fn getdents64(fd: c_int, buf: BufMut<'_>, n: usize) -> isize {
    let Some((e, o)) = enter_fd(fd) else {
        return ffi::getdents64(fd, buf, n);
    };
    let r = (|| {
        if o.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let pos = e.shim.table.offset(o.id)?;
        let mut listing = o.listing.lock().unwrap_or_else(|p| p.into_inner());
        let at = pos.load(Ordering::Relaxed);
        if listing.position() != at {
            listing.seek(at);
        }
        let c = creds();
        let client = e.shim.dfs.client(o.mount, &c)?;
        let mut written = 0usize;
        loop {
            let before = listing.position();
            let Some(ent) = listing.next(|cookie| fetch(&client, &c, &o, cookie))? else {
                break;
            };
            // The server's names are at most NAME_MAX bytes; a longer one is a lie that
            // would not fit the record's 16-bit length.
            if ent.name.len() > 255 {
                return Err(Errno::EIO);
            }
            let reclen = (19 + ent.name.len() + 1).div_ceil(8) * 8;
            if written + reclen > n {
                listing.unread(ent, before);
                if written == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            let mut rec = Vec::with_capacity(reclen);
            rec.extend_from_slice(&ent.ino.to_ne_bytes());
            rec.extend_from_slice(&(ent.cookie as i64).to_ne_bytes());
            rec.extend_from_slice(&(reclen as u16).to_ne_bytes());
            rec.push(abi::dtype(ent.kind));
            rec.extend_from_slice(&ent.name);
            rec.resize(reclen, 0);
            buf.put(n, written, &rec);
            written += reclen;
        }
        pos.store(listing.position(), Ordering::Relaxed);
        Ok(written)
    })();
    ssize(r)
}

/// Reads a whole DFS directory (for `scandir`).
fn read_all(shim: &Shim, o: &Arc<Open>) -> Result<Vec<Dirent64>, Errno> {
    let mut out = Vec::new();
    while let Some(e) = shim.next_entry(o)? {
        out.push(dirent(&e));
    }
    Ok(out)
}

fn scandir_impl(
    dirfd: c_int,
    path: CStrPtr<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
    real: impl FnOnce(CStrPtr<'_>) -> c_int,
) -> c_int {
    via(dirfd, path, -1, real, |shim, p| {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = match shim.open_at(dirfd, p, flags, 0)? {
            Outcome::Local(np) => return Ok(Done::Local(np)),
            Outcome::Dfs(fd) => fd,
        };
        let entries = shim.fds.get(fd).map(|o| read_all(shim, &o));
        if let Some(o) = shim.fds.get(fd) {
            shim.close_fd(fd, o);
        }
        let entries = entries.ok_or(Errno::EBADF)??;
        // The program's filter and comparison may call back into the C library (and so
        // into this one): outside the shim.
        Ok(Done::Value(
            super::inside_not(|| ffi::scandir_result(entries, filter, compar, list))
                .map_err(Errno)?,
        ))
    })
}

/// `scandir64(3)`: glibc's reads with internal calls, past this library.
#[no_mangle]
pub extern "C" fn scandir64(
    path: CStrPtr<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
) -> c_int {
    scandir_impl(libc::AT_FDCWD, path, list, filter, compar, |p| {
        ffi::scandir64(p, list, filter, compar)
    })
}

/// `scandir(3)`.
#[no_mangle]
pub extern "C" fn scandir(
    path: CStrPtr<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
) -> c_int {
    scandir64(path, list, filter, compar)
}

/// `scandirat64(3)`.
#[no_mangle]
pub extern "C" fn scandirat64(
    dirfd: c_int,
    path: CStrPtr<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
) -> c_int {
    scandir_impl(dirfd, path, list, filter, compar, |p| {
        ffi::scandirat64(dirfd, p, list, filter, compar)
    })
}

/// `scandirat(3)`.
#[no_mangle]
pub extern "C" fn scandirat(
    dirfd: c_int,
    path: CStrPtr<'_>,
    list: Out<'_, *mut *mut Dirent64>,
    filter: ScanFilter,
    compar: ScanCompar,
) -> c_int {
    scandirat64(dirfd, path, list, filter, compar)
}
