//! The file operations, confined beneath the export.
//!
//! Every file is reached from a handle (an `O_PATH` descriptor) and one validated name
//! component at a time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)`: no path string is ever resolved, no symlink followed, no mount crossed.
//! Operations the `*at` calls cannot do on an `O_PATH` descriptor (chmod, truncate, xattrs,
//! reopening for I/O) go through `/proc/self/fd/N`, which names the very inode the descriptor
//! holds and resolves nothing else.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use dfs_proto::attr::{Attr, Entry, FileKind, SetAttr, SetTime, StatFs, Timestamp};
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{
    Body, Creds, DirEntry, DirPage, Op, OpenFlags, RenameMode, MAX_DIR_ENTRIES, MAX_GROUPS,
    MAX_LIST_ENTRIES,
};
use dfs_proto::name::{LinkTarget, Name, XattrName, MAX_XATTR_VALUE};
use dfs_proto::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{
    fchmodat, fstat, fstatat, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};
use vmmc_sockets::{SharedBytes, SharedBytesMut};

use crate::creds::{act_as, Acting, Identity, Squash, Trust};
use crate::dirents;
use crate::handles::Handles;
use crate::opens::{Opens, Session};
use crate::sys;

/// Flags of the descriptors that stand for files: they open nothing for I/O and follow no
/// symlink.
pub const PATH_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Most bytes of entries one readdir page carries, well inside the meta limit.
const DIR_PAGE_BYTES: usize = 192 * 1024;

fn ex(e: nix::Error) -> Errno {
    Errno(e as i32)
}

/// Opens `name` in `dir` without leaving `dir`: no `..`, no symlink, no mount crossing.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    name: &[u8],
    flags: OFlag,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(mode & 0o7777))
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(dir, OsStr::from_bytes(name), how).map_err(ex)
}

/// The path through which the kernel reaches exactly the inode `fd` holds.
/// How `fd` is open: its access mode, with `O_PATH` for a descriptor that only names a file.
pub(crate) fn access_mode(fd: BorrowedFd<'_>) -> nix::Result<OFlag> {
    let fl = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    Ok(OFlag::from_bits_truncate(fl) & (OFlag::O_ACCMODE | OFlag::O_PATH))
}

fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Digits only: never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

fn stamp(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

/// The protocol's attributes of a `stat`.
pub fn attr_of(st: &FileStat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: stamp(st.st_atime, st.st_atime_nsec),
        mtime: stamp(st.st_mtime, st.st_mtime_nsec),
        ctime: stamp(st.st_ctime, st.st_ctime_nsec),
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        blksize: st.st_blksize.clamp(0, u32::MAX as i64) as u32,
    }
}

fn oflags(f: &OpenFlags) -> OFlag {
    let mut o = match (f.read, f.write) {
        (true, true) => OFlag::O_RDWR,
        (false, true) => OFlag::O_WRONLY,
        _ => OFlag::O_RDONLY,
    };
    if f.append {
        o |= OFlag::O_APPEND;
    }
    if f.truncate {
        o |= OFlag::O_TRUNC;
    }
    if f.sync {
        o |= OFlag::O_SYNC;
    }
    o | OFlag::O_NOCTTY | OFlag::O_CLOEXEC
}

/// Reopens the file `fd` stands for, for I/O, as the caller: the kernel checks the caller's
/// permission on the inode. Only regular files and directories are opened; a FIFO would block
/// the serving thread, a device is not the server's to hand out, a symlink is never followed.
fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> Result<OwnedFd, Errno> {
    let st = fstat(fd).map_err(ex)?;
    match FileKind::from_mode(st.st_mode) {
        FileKind::Regular => {}
        FileKind::Directory => {
            if flags.intersects(OFlag::O_WRONLY | OFlag::O_RDWR | OFlag::O_TRUNC | OFlag::O_APPEND)
            {
                return Err(Errno::EISDIR);
            }
        }
        FileKind::Symlink => return Err(Errno::ELOOP),
        _ => return Err(Errno(libc::ENXIO)),
    }
    nix::fcntl::open(proc_path(fd).as_c_str(), flags, Mode::empty()).map_err(ex)
}

/// The exported file system.
pub struct Fs {
    /// Handle maker for this export.
    pub handles: Handles,
    /// Open files.
    pub opens: Opens,
    /// Refuse every change with `EROFS`.
    pub read_only: bool,
    /// Whose identity requests run with.
    pub squash: Squash,
    /// Whether the server can switch identities (it runs as root).
    pub can_switch: bool,
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs")
            .field("read_only", &self.read_only)
            .field("squash", &self.squash)
            .finish_non_exhaustive()
    }
}

/// What a request runs with: the session it came on and the caller's identity.
#[derive(Debug)]
pub struct Caller<'a> {
    /// The client session.
    pub session: &'a Session,
    /// The identity after squashing.
    pub id: Identity,
}

impl Fs {
    /// The identity a request runs as: its claimed credentials if the connection's peer is
    /// entitled to claim (`trust`), its own otherwise, then squashed.
    pub fn caller<'a>(
        &self,
        session: &'a Session,
        trust: &Trust,
        creds: &Creds,
    ) -> Result<Caller<'a>, Errno> {
        if creds.groups.len() > MAX_GROUPS {
            return Err(Errno::EINVAL);
        }
        Ok(Caller {
            session,
            id: self.squash.identity(trust, creds),
        })
    }

    fn act(&self, c: &Caller<'_>) -> Result<Acting, Errno> {
        act_as(&c.id, self.can_switch).map_err(|e| {
            tracing::error!("cannot act as uid {}: {e}", c.id.uid);
            Errno::EPERM
        })
    }

    fn h(&self, h: &FileHandle) -> Result<Arc<OwnedFd>, Errno> {
        self.handles.resolve(h)
    }

    fn entry_of(&self, fd: &OwnedFd) -> Result<Entry, Errno> {
        let st = fstat(fd.as_fd()).map_err(ex)?;
        Ok(Entry {
            handle: self.handles.mint(fd)?,
            attr: attr_of(&st),
        })
    }

    fn entry_at(&self, dir: BorrowedFd<'_>, name: &Name) -> Result<Entry, Errno> {
        let fd = open_beneath(dir, name.as_bytes(), PATH_FLAGS, 0)?;
        self.entry_of(&fd)
    }

    /// The descriptor to do I/O through: the open if this session holds it, else the file
    /// reopened by handle (after a server restart, say) with `flags`.
    fn io_fd(
        &self,
        c: &Caller<'_>,
        handle: &FileHandle,
        open: Option<OpenId>,
        flags: OFlag,
    ) -> Result<Arc<OwnedFd>, Errno> {
        if let Some(fd) = open.and_then(|o| self.opens.get(c.session, o)) {
            return Ok(fd);
        }
        let fd = self.h(handle)?;
        let _as = self.act(c)?;
        Ok(Arc::new(reopen(fd.as_fd(), flags | OFlag::O_CLOEXEC)?))
    }

    /// Runs every operation but a read (see [`Fs::read`]). `data` is a write's data part,
    /// in place in the ring it arrived in (which the client may still write: `pwrite` takes
    /// the bytes as they are when it copies them).
    pub fn execute(&self, c: &Caller<'_>, op: &Op, data: SharedBytes<'_>) -> Result<Body, Errno> {
        if self.read_only && op.mutates() {
            return Err(Errno::EROFS);
        }
        if !matches!(op, Op::Write { .. }) && !data.is_empty() {
            return Err(Errno::EPROTO);
        }
        match op {
            Op::Lookup { dir, name } => {
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                self.entry_at(d.as_fd(), name).map(Body::Entry)
            }
            Op::GetAttr { handle, open } => {
                if let Some(f) = open.and_then(|o| self.opens.get(c.session, o)) {
                    return fstat(f.as_fd())
                        .map(|st| Body::Attr(attr_of(&st)))
                        .map_err(ex);
                }
                let fd = self.h(handle)?;
                fstat(fd.as_fd())
                    .map(|st| Body::Attr(attr_of(&st)))
                    .map_err(ex)
            }
            Op::SetAttr { handle, open, set } => self.setattr(c, handle, *open, set),
            Op::ReadDir {
                dir,
                cookie,
                max_entries,
            } => self
                .readdir(
                    c,
                    dir,
                    *cookie,
                    (*max_entries).clamp(1, MAX_DIR_ENTRIES),
                    true,
                )
                .map(|(page, _)| Body::Dir(page)),
            Op::ListDir {
                dir,
                cookie,
                max_entries,
                attrs,
            } => self
                .readdir(
                    c,
                    dir,
                    *cookie,
                    (*max_entries).clamp(1, MAX_LIST_ENTRIES),
                    *attrs,
                )
                .map(|(page, dir)| Body::Listing { page, dir }),
            Op::Open { handle, flags } => {
                let fd = self.h(handle)?;
                let _as = self.act(c)?;
                let file = reopen(fd.as_fd(), oflags(flags))?;
                let open = self
                    .opens
                    .insert(*c.session, file)
                    .ok_or(Errno(libc::EMFILE))?;
                Ok(Body::Opened {
                    open,
                    entry: None,
                    created: false,
                })
            }
            Op::Create {
                dir,
                name,
                mode,
                flags,
            } => {
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                let o = oflags(flags) | OFlag::O_CREAT | OFlag::O_NOFOLLOW;
                // Exclusively first, to know whether this create made the file; a name that
                // exists is then opened as `O_CREAT` alone would (made anew if it went
                // meanwhile, which is then reported as not made here: the safe side).
                let (file, created) =
                    match open_beneath(d.as_fd(), name.as_bytes(), o | OFlag::O_EXCL, *mode) {
                        Err(e) if e == Errno::EEXIST && !flags.exclusive => {
                            (open_beneath(d.as_fd(), name.as_bytes(), o, *mode)?, false)
                        }
                        r => (r?, true),
                    };
                let entry = self.entry_of(&file)?;
                let open = self
                    .opens
                    .insert(*c.session, file)
                    .ok_or(Errno(libc::EMFILE))?;
                Ok(Body::Opened {
                    open,
                    entry: Some(entry),
                    created,
                })
            }
            // Served by the session, which owns the connection they concern.
            Op::Read { .. } | Op::Subscribe => Err(Errno::EPROTO),
            Op::Stats => {
                let n = vmmc_sockets::Counters::now();
                Ok(Body::Stats(dfs_proto::msg::TransferStats {
                    deposited: n.bytes_deposited,
                    fetched: n.bytes_fetched,
                    copied: n.bytes_copied,
                }))
            }
            Op::Write {
                handle,
                open,
                offset,
                append,
            } => {
                let flags = if *append {
                    OFlag::O_WRONLY | OFlag::O_APPEND
                } else {
                    OFlag::O_WRONLY
                };
                let fd = self.io_fd(c, handle, *open, flags)?;
                let (done, _) = positional(data.len(), *offset, |done, at| {
                    let rest = data.get(done..).ok_or(nix::Error::EINVAL)?;
                    rest.pwrite_to(fd.as_fd(), at).map_err(io_to_nix)
                })?;
                let attr = attr_of(&fstat(fd.as_fd()).map_err(ex)?);
                Ok(Body::Written {
                    len: done as u32,
                    attr,
                })
            }
            Op::Mkdir { dir, name, mode } => {
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                mkdirat(
                    d.as_fd(),
                    OsStr::from_bytes(name.as_bytes()),
                    Mode::from_bits_truncate(mode & 0o7777),
                )
                .map_err(ex)?;
                self.entry_at(d.as_fd(), name).map(Body::Entry)
            }
            Op::Mknod {
                dir,
                name,
                mode,
                rdev,
            } => {
                let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
                match FileKind::from_mode(*mode) {
                    FileKind::Regular | FileKind::Fifo | FileKind::Socket if *rdev == 0 => {}
                    // Device nodes only for a caller who is root after squashing, as locally
                    // (the server itself never opens them).
                    FileKind::CharDevice | FileKind::BlockDevice if c.id.uid == 0 => {}
                    _ => return Err(Errno::EPERM),
                }
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                mknodat(
                    d.as_fd(),
                    OsStr::from_bytes(name.as_bytes()),
                    kind,
                    Mode::from_bits_truncate(mode & 0o7777),
                    *rdev as libc::dev_t,
                )
                .map_err(ex)?;
                self.entry_at(d.as_fd(), name).map(Body::Entry)
            }
            Op::Unlink { dir, name } | Op::Rmdir { dir, name } => {
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                let how = if matches!(op, Op::Rmdir { .. }) {
                    nix::unistd::UnlinkatFlags::RemoveDir
                } else {
                    nix::unistd::UnlinkatFlags::NoRemoveDir
                };
                nix::unistd::unlinkat(d.as_fd(), OsStr::from_bytes(name.as_bytes()), how)
                    .map_err(ex)?;
                Ok(Body::Done)
            }
            Op::Rename {
                from_dir,
                from,
                to_dir,
                to,
                mode,
            } => {
                let fd = self.h(from_dir)?;
                let td = self.h(to_dir)?;
                let _as = self.act(c)?;
                let flags = match mode {
                    RenameMode::Replace => nix::fcntl::RenameFlags::empty(),
                    RenameMode::NoReplace => nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                    RenameMode::Exchange => nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                };
                nix::fcntl::renameat2(
                    fd.as_fd(),
                    OsStr::from_bytes(from.as_bytes()),
                    td.as_fd(),
                    OsStr::from_bytes(to.as_bytes()),
                    flags,
                )
                .map_err(ex)?;
                Ok(Body::Done)
            }
            Op::Link { handle, dir, name } => {
                let f = self.h(handle)?;
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                if FileKind::from_mode(fstat(f.as_fd()).map_err(ex)?.st_mode) == FileKind::Directory
                {
                    return Err(Errno::EPERM);
                }
                nix::unistd::linkat(
                    AT_FDCWD,
                    proc_path(f.as_fd()).as_c_str(),
                    d.as_fd(),
                    OsStr::from_bytes(name.as_bytes()),
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .map_err(ex)?;
                self.entry_at(d.as_fd(), name).map(Body::Entry)
            }
            Op::Symlink { dir, name, target } => {
                let d = self.h(dir)?;
                let _as = self.act(c)?;
                nix::unistd::symlinkat(
                    OsStr::from_bytes(target.as_bytes()),
                    d.as_fd(),
                    OsStr::from_bytes(name.as_bytes()),
                )
                .map_err(ex)?;
                self.entry_at(d.as_fd(), name).map(Body::Entry)
            }
            Op::ReadLink { handle } => {
                let fd = self.h(handle)?;
                if FileKind::from_mode(fstat(fd.as_fd()).map_err(ex)?.st_mode) != FileKind::Symlink
                {
                    return Err(Errno::EINVAL);
                }
                let t = nix::fcntl::readlinkat(fd.as_fd(), "").map_err(ex)?;
                LinkTarget::new(t.as_bytes())
                    .map(Body::Target)
                    .map_err(|_| Errno::EIO)
            }
            Op::StatFs { handle } => {
                let fd = self.h(handle)?;
                let s = nix::sys::statvfs::fstatvfs(fd.as_fd()).map_err(ex)?;
                Ok(Body::StatFs(StatFs {
                    blocks: s.blocks(),
                    bfree: s.blocks_free(),
                    bavail: s.blocks_available(),
                    files: s.files(),
                    ffree: s.files_free(),
                    bsize: s.block_size() as u32,
                    namelen: s.name_max() as u32,
                    frsize: s.fragment_size() as u32,
                }))
            }
            Op::Fsync {
                handle,
                open,
                datasync,
            } => {
                let fd = self.io_fd(c, handle, *open, OFlag::O_RDONLY)?;
                if *datasync {
                    nix::unistd::fdatasync(fd.as_fd()).map_err(ex)?;
                } else {
                    nix::unistd::fsync(fd.as_fd()).map_err(ex)?;
                }
                Ok(Body::Done)
            }
            // Local files have no deferred close errors; a flush only has to be answered.
            Op::Flush { .. } => Ok(Body::Done),
            Op::Release { open } => {
                self.opens.remove(c.session, *open);
                Ok(Body::Done)
            }
            Op::Fallocate {
                handle,
                open,
                mode,
                offset,
                len,
            } => {
                let flags = nix::fcntl::FallocateFlags::from_bits(*mode as libc::c_int)
                    .ok_or(Errno::EINVAL)?;
                let off = i64::try_from(*offset).map_err(|_| Errno::EINVAL)?;
                let len = i64::try_from(*len).map_err(|_| Errno::EINVAL)?;
                let fd = self.io_fd(c, handle, *open, OFlag::O_WRONLY)?;
                nix::fcntl::fallocate(fd.as_fd(), flags, off, len).map_err(ex)?;
                Ok(Body::Done)
            }
            Op::GetXattr { handle, name, size } => {
                let fd = self.h(handle)?;
                self.xattr_readable(c, name)?;
                let _as = self.act(c)?;
                let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
                let path = proc_path(fd.as_fd());
                if *size == 0 {
                    let n = sys::getxattr(&path, &cname, &mut []).map_err(Errno::from)?;
                    return Ok(Body::XattrSize(n as u32));
                }
                let mut buf = vec![0u8; (*size as usize).min(MAX_XATTR_VALUE)];
                let n = sys::getxattr(&path, &cname, &mut buf).map_err(Errno::from)?;
                buf.truncate(n);
                Ok(Body::XattrData(buf))
            }
            Op::SetXattr {
                handle,
                name,
                value,
                flags,
            } => {
                // The kernel's order: the flags, the size, the file, then the permission.
                if *flags & !((libc::XATTR_CREATE | libc::XATTR_REPLACE) as u32) != 0 {
                    return Err(Errno::EINVAL);
                }
                if value.len() > MAX_XATTR_VALUE {
                    return Err(Errno(libc::E2BIG));
                }
                let fd = self.h(handle)?;
                self.xattr_writable(c, name)?;
                let _as = self.act(c)?;
                let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
                sys::setxattr(&proc_path(fd.as_fd()), &cname, value, *flags as i32)
                    .map_err(Errno::from)?;
                Ok(Body::Done)
            }
            Op::ListXattr { handle, size } => {
                let fd = self.h(handle)?;
                let _as = self.act(c)?;
                let path = proc_path(fd.as_fd());
                let need = sys::listxattr(&path, &mut []).map_err(Errno::from)?;
                let mut buf = vec![0u8; need.min(MAX_XATTR_VALUE)];
                let n = sys::listxattr(&path, &mut buf).map_err(Errno::from)?;
                buf.truncate(n);
                let mut list = Vec::with_capacity(buf.len());
                for n in buf.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    if XattrName::new(n).is_ok_and(|x| self.xattr_listed(c, &x)) {
                        list.extend_from_slice(n);
                        list.push(0);
                    }
                }
                if *size == 0 {
                    return Ok(Body::XattrSize(list.len() as u32));
                }
                if list.len() > *size as usize {
                    return Err(Errno::ERANGE);
                }
                Ok(Body::XattrData(list))
            }
            Op::RemoveXattr { handle, name } => {
                let fd = self.h(handle)?;
                self.xattr_writable(c, name)?;
                let _as = self.act(c)?;
                let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
                sys::removexattr(&proc_path(fd.as_fd()), &cname).map_err(Errno::from)?;
                Ok(Body::Done)
            }
        }
    }

    /// Whether the caller may read `name` as far as privilege goes.
    ///
    /// The kernel answers a caller without `CAP_SYS_ADMIN` in the `trusted.*` and `security.*`
    /// namespaces before it looks at the file's owner or mode, and the server must give those
    /// answers itself: the serving thread keeps `CAP_SYS_ADMIN` whatever fsuid it acts as
    /// (switching the fsuid drops only the file-system capabilities), so the kernel would let
    /// every caller in. Only a caller who is root after squashing has the privilege; everyone
    /// else gets what a local file system gives them (fs/xattr.c, `cap_inode_setxattr`):
    ///
    /// | namespace | read | write (set, remove) |
    /// |---|---|---|
    /// | `trusted.*` | `ENODATA`: absent, and not listed | `EPERM` |
    /// | `security.*` | as stored (`ENODATA` where absent), listed | `EPERM` |
    /// | `user.*`, `system.*`, others | the kernel decides, as the caller | the kernel decides |
    ///
    /// Everything the kernel decides by the file's owner and mode (`user.*` needs read or write
    /// permission, a sticky directory's `user.*` its owner, an ACL the owner) it decides itself,
    /// with the caller's fsuid, fsgid and groups on the thread.
    fn xattr_readable(&self, c: &Caller<'_>, name: &XattrName) -> Result<(), Errno> {
        if c.id.uid != 0 && name.as_bytes().starts_with(b"trusted.") {
            return Err(Errno::ENODATA);
        }
        Ok(())
    }

    /// Whether the caller may set or remove `name` as far as privilege goes (see
    /// [`Fs::xattr_readable`]); the kernel decides the rest.
    fn xattr_writable(&self, c: &Caller<'_>, name: &XattrName) -> Result<(), Errno> {
        let n = name.as_bytes();
        if c.id.uid != 0 && (n.starts_with(b"trusted.") || n.starts_with(b"security.")) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// Whether `listxattr` shows the caller `name`: all but `trusted.*` to a caller without
    /// the privilege, as the kernel lists them.
    fn xattr_listed(&self, c: &Caller<'_>, name: &XattrName) -> bool {
        self.xattr_readable(c, name).is_ok()
    }

    fn setattr(
        &self,
        c: &Caller<'_>,
        handle: &FileHandle,
        open: Option<OpenId>,
        set: &SetAttr,
    ) -> Result<Body, Errno> {
        // An open of the file serves for everything, also once the file is unlinked (its
        // handle is stale then).
        let held = open.and_then(|o| self.opens.get(c.session, o));
        let fd = match &held {
            Some(f) => f.clone(),
            None => self.h(handle)?,
        };
        let _as = self.act(c)?;
        let path = proc_path(fd.as_fd());
        if let Some(mode) = set.mode {
            fchmodat(
                AT_FDCWD,
                path.as_c_str(),
                Mode::from_bits_truncate(mode & 0o7777),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(ex)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            fchownat(
                fd.as_fd(),
                "",
                set.uid.map(Uid::from_raw),
                set.gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(ex)?;
        }
        if let Some(size) = set.size {
            let size = i64::try_from(size).map_err(|_| Errno(libc::EFBIG))?;
            // A truncate names an open when the kernel had one at hand (`ftruncate`), or
            // the mount picked any open of the file; only a writable one may serve. Others
            // truncate by path, as the caller: the permission check a `truncate` makes.
            let writable = held.as_ref().filter(|f| {
                access_mode(f.as_fd()).is_ok_and(|m| m & OFlag::O_ACCMODE != OFlag::O_RDONLY)
            });
            match writable {
                Some(f) => nix::unistd::ftruncate(f.as_fd(), size).map_err(ex)?,
                None => {
                    if FileKind::from_mode(fstat(fd.as_fd()).map_err(ex)?.st_mode)
                        == FileKind::Directory
                    {
                        return Err(Errno::EISDIR);
                    }
                    nix::unistd::truncate(path.as_c_str(), size).map_err(ex)?
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let t = |s: Option<SetTime>| match s {
                None => TimeSpec::UTIME_OMIT,
                Some(SetTime::Now) => TimeSpec::UTIME_NOW,
                Some(SetTime::At(ts)) => {
                    TimeSpec::new(ts.secs, i64::from(ts.nanos.min(999_999_999)))
                }
            };
            utimensat(
                AT_FDCWD,
                path.as_c_str(),
                &t(set.atime),
                &t(set.mtime),
                UtimensatFlags::FollowSymlink,
            )
            .map_err(ex)?;
        }
        fstat(fd.as_fd())
            .map(|st| Body::Attr(attr_of(&st)))
            .map_err(ex)
    }

    /// A page of `dir` from `cookie`: at most `max` entries, each with its handle and
    /// attributes if `attrs`, and the directory's own attributes as they were before the
    /// page was read.
    fn readdir(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        cookie: u64,
        max: u32,
        attrs: bool,
    ) -> Result<(DirPage, Attr), Errno> {
        let d = self.h(dir)?;
        let dir_st = fstat(d.as_fd()).map_err(ex)?;
        let root_ino = {
            let r = fstat(self.handles.root()).map_err(ex)?;
            ((dir_st.st_dev, dir_st.st_ino) == (r.st_dev, r.st_ino)).then_some(r.st_ino)
        };
        let dir_attr = attr_of(&dir_st);
        let _as = self.act(c)?;
        let fd = reopen(d.as_fd(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let cookie = i64::try_from(cookie).map_err(|_| Errno::EINVAL)?;
        nix::unistd::lseek(fd.as_fd(), cookie, nix::unistd::Whence::SeekSet).map_err(ex)?;
        let max = max as usize;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        // Enough for the page, not much more: what getdents reads past it is read again by
        // the next page (a record is at most 280 bytes, so one always fits).
        let mut buf = vec![0u8; (max * 64).clamp(1024, 64 * 1024)];
        loop {
            // Short names are the rule: ask for little more than the rest of the page.
            let want = ((max - entries.len()) * 48).clamp(1024, buf.len());
            let n = sys::getdents(fd.as_fd(), &mut buf[..want]).map_err(Errno::from)?;
            if n == 0 {
                return Ok((DirPage { entries, eof: true }, dir_attr));
            }
            for e in dirents::parse(&buf[..n]) {
                if entries.len() >= max || bytes >= DIR_PAGE_BYTES {
                    let page = DirPage {
                        entries,
                        eof: false,
                    };
                    return Ok((page, dir_attr));
                }
                let dot = e.name == b"." || e.name == b"..";
                let entry = if dot || !attrs {
                    None
                } else {
                    // An entry removed since getdents saw it is listed without attributes.
                    fstatat(
                        fd.as_fd(),
                        OsStr::from_bytes(e.name),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .ok()
                    .and_then(|st| {
                        let handle = self.handles.mint_at(fd.as_fd(), e.name).ok()?;
                        Some(Entry {
                            handle,
                            attr: attr_of(&st),
                        })
                    })
                };
                // The parent of the export is none of the client's business.
                let ino = match root_ino {
                    Some(root) if e.name == b".." => root,
                    _ => e.ino,
                };
                // An entry's encoding is at most its name and 32 bytes (lengths, kind, inode
                // number, cookie are varints), and a handle's bytes and 128 with attributes.
                bytes += e.name.len()
                    + 32
                    + entry
                        .as_ref()
                        .map_or(0, |x| x.handle.as_bytes().len() + 128);
                entries.push(DirEntry {
                    name: e.name.to_vec(),
                    kind: dirents::kind(e.dtype),
                    ino,
                    cookie: e.next,
                    entry,
                });
            }
        }
    }

    /// The descriptor a read of `handle` (through `open` if this session holds it) reads
    /// from: for the pointer path, which moves the bytes from it to the client itself
    /// ([`vmmc_sockets::SendSlot::fill_from_file`]).
    pub fn read_fd(
        &self,
        c: &Caller<'_>,
        handle: &FileHandle,
        open: Option<OpenId>,
    ) -> Result<Arc<OwnedFd>, Errno> {
        self.io_fd(c, handle, open, OFlag::O_RDONLY)
    }

    /// A read into `buf` (a reply's data part, for the copying path): the bytes read and
    /// whether the file ended first.
    pub fn read(
        &self,
        c: &Caller<'_>,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        buf: &mut SharedBytesMut<'_>,
    ) -> Result<(usize, bool), Errno> {
        let fd = self.io_fd(c, handle, open, OFlag::O_RDONLY)?;
        positional(buf.len(), offset, |done, at| {
            let mut rest = buf.get_mut(done..).ok_or(nix::Error::EINVAL)?;
            rest.pread_from(fd.as_fd(), at).map_err(io_to_nix)
        })
    }
}

/// Repeats a positional read or write (`io(done, at)`) until `len` bytes are done, the file
/// ends (0) or an error comes after some progress (then what was done counts, as the system
/// calls themselves report it). Returns the bytes done and whether the file ended.
fn positional(
    len: usize,
    offset: u64,
    mut io: impl FnMut(usize, i64) -> nix::Result<usize>,
) -> Result<(usize, bool), Errno> {
    let mut at = i64::try_from(offset).map_err(|_| Errno::EINVAL)?;
    let mut done = 0;
    while done < len {
        match io(done, at) {
            Ok(0) => return Ok((done, true)),
            Ok(n) => {
                done += n;
                at += n as i64;
            }
            Err(nix::Error::EINTR) => continue,
            Err(e) if done == 0 => return Err(ex(e)),
            Err(_) => break,
        }
    }
    Ok((done, false))
}

/// The errno of an I/O error from a system call, for [`positional`].
fn io_to_nix(e: io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Maps an I/O error to the protocol's errno.
pub fn errno_of(e: &io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}
