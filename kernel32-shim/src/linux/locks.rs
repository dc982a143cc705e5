//! Locks on DFS files: `fcntl` record locks (process-owned and OFD), `flock` and `lockf`.
//!
//! The server has no lock operation, so a lock on a DFS file is the same lock taken on a
//! local *lock file* that stands for it (one per server inode, in the run's lock
//! directory). The kernel then does everything a lock needs (conflicts, waiting, deadlock
//! detection, `F_GETLK`'s holder, release at exit) among the processes of every run on
//! this host that share the directory. Locks do not reach other clients of the server:
//! the README says so.
//!
//! Whose lock it is follows the kernel's rules because the lock file's descriptors are
//! kept as the program's would be: a process-owned lock (`F_SETLK`) is taken on one
//! descriptor per process and file, closed (so every such lock of the process on the file
//! goes, as POSIX says) when the program closes any descriptor of the file; an OFD lock or
//! `flock` is taken on one descriptor per description, so it goes with the description.

use std::collections::HashMap;
use std::ffi::{c_int, c_ulong, CString};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use dfs_proto::Errno;

use super::abi::Flock;
use super::ffi::{self, CStrPtr};
use super::{Open, Shim};
use crate::table::{Kind, SlotId};

/// The lock-file descriptors of this process.
#[derive(Debug, Default)]
pub(crate) struct Locks {
    /// Server inode → the descriptor process-owned locks are taken on.
    posix: Mutex<HashMap<u64, c_int>>,
    /// Description → (server inode, the descriptor its OFD locks and `flock` are taken on).
    per_desc: Mutex<HashMap<SlotId, (u64, c_int)>>,
}

impl Locks {
    /// The program closed a descriptor of inode `ino`: the process's own record locks on
    /// it are gone (POSIX), so the descriptor they are held on is closed.
    pub fn closed(&self, ino: u64) {
        let fd = self
            .posix
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino);
        if let Some(fd) = fd {
            ffi::close(fd);
        }
    }

    /// The last holder of a description of inode `ino` let it go: its OFD locks and
    /// `flock` go too.
    pub fn forget(&self, ino: u64) {
        let gone: Vec<c_int> = {
            let mut m = self.per_desc.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<SlotId> = m
                .iter()
                .filter(|(_, (i, _))| *i == ino)
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| m.remove(id))
                .map(|(_, fd)| fd)
                .collect()
        };
        for fd in gone {
            ffi::close(fd);
        }
    }
}

/// The directory of lock files: the run's (`dfs run` makes one), or one per user and
/// session in the temporary directory.
fn lock_dir(shim: &Shim) -> Result<Vec<u8>, Errno> {
    if let Some(d) = &shim.env.locks {
        return Ok(d.as_bytes().to_vec());
    }
    let s = shim.table.session();
    let (uid, _) = ffi::real_ids();
    let mut dir = std::env::temp_dir()
        .to_string_lossy()
        .into_owned()
        .into_bytes();
    dir.extend_from_slice(format!("/dfs-shim-locks-{uid}-").as_bytes());
    for b in &s[..8] {
        dir.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    let c = CString::new(dir.clone()).map_err(|_| Errno::EINVAL)?;
    if ffi::mkdir(CStrPtr::of(&c), 0o700) != 0 && ffi::errno() != libc::EEXIST {
        return Err(Errno(ffi::errno()));
    }
    Ok(dir)
}

/// Opens the lock file that stands for `o`'s file.
fn open_lock_file(shim: &Shim, o: &Open) -> Result<c_int, Errno> {
    let mut path = lock_dir(shim)?;
    path.extend_from_slice(format!("/{}-{}", o.mount, o.ino).as_bytes());
    let c = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let fd = ffi::open64(
        CStrPtr::of(&c),
        libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        0o600,
    );
    if fd < 0 {
        return Err(Errno(ffi::errno()));
    }
    Ok(fd)
}

/// The descriptor the process's own record locks on `o`'s file are taken on.
fn posix_fd(shim: &Shim, o: &Open) -> Result<c_int, Errno> {
    let mut m = shim.locks.posix.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fd) = m.get(&o.ino) {
        return Ok(*fd);
    }
    let fd = open_lock_file(shim, o)?;
    m.insert(o.ino, fd);
    Ok(fd)
}

/// The descriptor `o`'s description takes OFD locks and `flock` on.
fn desc_fd(shim: &Shim, o: &Open) -> Result<c_int, Errno> {
    let mut m = shim
        .locks
        .per_desc
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((_, fd)) = m.get(&o.id) {
        return Ok(*fd);
    }
    let fd = open_lock_file(shim, o)?;
    m.insert(o.id, (o.ino, fd));
    Ok(fd)
}

/// A lock request made absolute: `SEEK_CUR` and `SEEK_END` resolved against the
/// description's offset and the file's size (the lock file is empty, so they would mean
/// something else there).
fn absolute(shim: &Shim, o: &Open, mut fl: Flock) -> Result<Flock, Errno> {
    let base = match i32::from(fl.l_whence) {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => shim.table.offset(o.id)?.load(Ordering::Relaxed) as i64,
        libc::SEEK_END => shim.attr(o)?.size as i64,
        _ => return Err(Errno::EINVAL),
    };
    fl.l_start = fl
        .l_start
        .checked_add(base)
        .ok_or(crate::errno::EOVERFLOW)?;
    fl.l_whence = libc::SEEK_SET as i16;
    Ok(fl)
}

/// Checks that the description's access mode allows the lock type (as the kernel does:
/// a read lock needs read access, a write lock write access).
fn mode_allows(shim: &Shim, o: &Open, l_type: i16) -> Result<(), Errno> {
    if o.kind == Kind::Path {
        return Err(Errno::EBADF);
    }
    let acc = shim.table.flags(o.id)? as c_int & libc::O_ACCMODE;
    let bad = match i32::from(l_type) {
        libc::F_RDLCK => acc == libc::O_WRONLY,
        libc::F_WRLCK => acc == libc::O_RDONLY,
        libc::F_UNLCK => false,
        _ => return Err(Errno::EINVAL),
    };
    if bad {
        Err(Errno::EBADF)
    } else {
        Ok(())
    }
}

/// `fcntl`'s lock commands on a DFS descriptor; `arg` is the caller's `struct flock *`.
pub(crate) fn fcntl_lock(shim: &Shim, o: &Open, cmd: c_int, arg: c_ulong) -> Result<c_int, Errno> {
    let out = ffi::flock_arg(arg);
    let fl = out.get().ok_or(Errno(libc::EFAULT))?;
    let getlk = matches!(cmd, libc::F_GETLK | libc::F_OFD_GETLK);
    if !getlk {
        mode_allows(shim, o, fl.l_type)?;
    }
    let mut fl = absolute(shim, o, fl)?;
    let ofd = matches!(
        cmd,
        libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW
    );
    let fd = if ofd {
        desc_fd(shim, o)?
    } else {
        posix_fd(shim, o)?
    };
    // A blocking wait (`F_SETLKW`) keeps the shim's gate shared: a fork in another thread
    // of the process waits for it, as it waits for any call in progress.
    let r = ffi::fcntl_lock(fd, cmd, &mut fl);
    if r < 0 {
        return Err(Errno(ffi::errno()));
    }
    if getlk && !out.set(fl) {
        return Err(Errno(libc::EFAULT));
    }
    Ok(r)
}

/// `flock` on a DFS descriptor.
pub(crate) fn flock(shim: &Shim, o: &Open, op: c_int) -> Result<c_int, Errno> {
    if o.kind == Kind::Path {
        return Err(Errno::EBADF);
    }
    let fd = desc_fd(shim, o)?;
    let r = ffi::flock(fd, op);
    if r < 0 {
        return Err(Errno(ffi::errno()));
    }
    Ok(r)
}

/// `lockf` on a DFS descriptor: a process-owned record lock from the current offset, as
/// glibc's `lockf` makes one.
pub(crate) fn lockf(shim: &Shim, o: &Open, cmd: c_int, len: i64) -> Result<c_int, Errno> {
    let mut fl = Flock {
        l_whence: libc::SEEK_CUR as i16,
        l_len: len,
        ..Flock::default()
    };
    let fcmd = match cmd {
        libc::F_TEST => {
            fl.l_type = libc::F_RDLCK as i16;
            let mut got = absolute(shim, o, fl)?;
            let fd = posix_fd(shim, o)?;
            if ffi::fcntl_lock(fd, libc::F_GETLK, &mut got) < 0 {
                return Err(Errno(ffi::errno()));
            }
            if got.l_type == libc::F_UNLCK as i16 || got.l_pid == std::process::id() as i32 {
                return Ok(0);
            }
            return Err(Errno(libc::EACCES));
        }
        libc::F_ULOCK => {
            fl.l_type = libc::F_UNLCK as i16;
            libc::F_SETLK
        }
        libc::F_LOCK => {
            fl.l_type = libc::F_WRLCK as i16;
            libc::F_SETLKW
        }
        libc::F_TLOCK => {
            fl.l_type = libc::F_WRLCK as i16;
            libc::F_SETLK
        }
        _ => return Err(Errno::EINVAL),
    };
    mode_allows(shim, o, fl.l_type)?;
    let mut fl = absolute(shim, o, fl)?;
    let fd = posix_fd(shim, o)?;
    let r = ffi::fcntl_lock(fd, fcmd, &mut fl);
    if r < 0 {
        return Err(Errno(ffi::errno()));
    }
    Ok(r)
}
