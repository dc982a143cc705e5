//! The Linux face: an `LD_PRELOAD` library that interposes the C library's file calls.
//!
//! - **Descriptors are real.** A DFS file opened by the program is a *placeholder* in the
//!   kernel's descriptor table: an `O_PATH` descriptor of a fresh memfd named `dfs-shim`.
//!   Its number never collides with the program's others, `FD_CLOEXEC`, `dup2` and
//!   inheritance are the kernel's own, and any call that reaches the kernel instead of this
//!   library (a raw system call, a static binary, a C library internal) fails with `EBADF`
//!   or `ENOENT`: nothing is read from or written to the wrong file. Its inode number is
//!   recorded in the description, so a process that inherits it (after `exec`) finds out
//!   which description it stands for by looking at `/proc/self/fd`.
//! - **Descriptions are shared** by every process of the run: the table ([`crate::table`])
//!   lives in a memfd that `dfs run` makes and every process maps. Its descriptor number is
//!   in `DFS_SHIM_TABLE` (with the keeper's pid, to reopen it through `/proc` if a program
//!   closed it); the interposed `close`, `close_range` and `closefrom` leave it open.
//! - **Reentrancy.** Rust's standard library and the client call `open`, `read` and the
//!   like themselves, which resolve to this library's definitions: a thread-local flag says
//!   "inside the shim", and then every interposer calls the real function directly.
//! - **fork**: a read-write lock (`gate`) keeps other threads out of the shim while a
//!   thread forks, the parent holds the child's descriptions under a token until it knows
//!   the child's pid, and the child forgets the parent's connections (their rings are
//!   shared memory the parent goes on using) and connects anew when it needs to.

mod abi;
mod calls;
mod dir;
pub(crate) mod ffi;
mod lent;
mod locks;
mod paths;
mod proc;
mod stdio;
mod temp;

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_int, CString};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};

use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::Creds;
use dfs_proto::Errno;

use crate::dirs::DirStream;
use crate::fs::{At, Dfs, MountConfig, OpenHow, Opened, Outcome};
use crate::path::{Cwd, MountId};
use crate::table::{Desc, Kind, NewDesc, SlotId, Table};

/// Descriptions the run's table holds.
pub const SLOTS: u32 = 4096;
/// Holdings (process, description) it records.
pub const HOLDS: u32 = 16384;
/// Descriptor numbers the face tracks: a placeholder numbered above is refused (`EMFILE`).
const MAX_FDS: usize = 1 << 16;

/// The environment variables `dfs run` sets (see [`Env`]).
pub mod vars {
    /// The server's address.
    pub const ADDR: &str = "DFS_SHIM_ADDR";
    /// The prefix under which the DFS appears.
    pub const PREFIX: &str = "DFS_SHIM_PREFIX";
    /// The file holding the shared secret (its path; the secret itself never goes in the
    /// environment).
    pub const SECRET_FILE: &str = "DFS_SHIM_SECRET_FILE";
    /// How long a call waits for a server that went away (seconds).
    pub const TIMEOUT: &str = "DFS_SHIM_TIMEOUT";
    /// The shared table: `FD` or `FD:PID:KEEPERFD`.
    pub const TABLE: &str = "DFS_SHIM_TABLE";
    /// The client session (32 hex digits), for a table made here.
    pub const SESSION: &str = "DFS_SHIM_SESSION";
    /// The current directory, when it is in the DFS (for a program after `exec`).
    pub const CWD: &str = "DFS_SHIM_CWD";
    /// The token a spawned child's descriptions are held under until it runs.
    pub const INHERIT: &str = "DFS_SHIM_INHERIT";
    /// This library's path, to put back into `LD_PRELOAD` of a program that dropped it.
    pub const LIB: &str = "DFS_SHIM_LIB";
    /// A directory for the lock files that stand for locks on DFS files.
    pub const LOCKS: &str = "DFS_SHIM_LOCKS";
    /// Set (to anything) to read every file through the rings, borrowing nothing.
    pub const NO_LEND: &str = "DFS_SHIM_NO_LEND";
}

thread_local! {
    /// Set while this thread runs the shim's own code: calls it makes go to the C library.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// An open DFS file as this process knows it: the description's fixed parts, read once.
#[derive(Debug)]
pub(crate) struct Open {
    pub id: SlotId,
    pub mount: MountId,
    pub kind: Kind,
    pub handle: FileHandle,
    pub open: Option<OpenId>,
    pub open_append: bool,
    pub ino: u64,
    /// Its absolute path.
    pub path: Vec<u8>,
    /// Its components below the mount's root.
    pub rest: Vec<Vec<u8>>,
    pub placeholder: u64,
    /// Where a listing of it stands, in this process (`getdents64`).
    pub listing: Mutex<DirStream>,
}

/// The process's descriptors that stand for DFS files.
#[derive(Debug)]
pub(crate) struct Fds {
    /// Non-zero where a descriptor is ours: the one test every call on a descriptor makes.
    present: Box<[AtomicU32]>,
    info: RwLock<HashMap<c_int, Arc<Open>>>,
}

impl Fds {
    fn new() -> Fds {
        Fds {
            present: (0..MAX_FDS).map(|_| AtomicU32::new(0)).collect(),
            info: RwLock::new(HashMap::new()),
        }
    }

    fn is_ours(&self, fd: c_int) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.present.get(i))
            .is_some_and(|p| p.load(Ordering::Acquire) != 0)
    }

    pub fn get(&self, fd: c_int) -> Option<Arc<Open>> {
        if !self.is_ours(fd) {
            return None;
        }
        self.info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fd)
            .cloned()
    }

    pub fn set(&self, fd: c_int, o: Arc<Open>) -> bool {
        let Some(p) = usize::try_from(fd).ok().and_then(|i| self.present.get(i)) else {
            return false;
        };
        self.info
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fd, o);
        p.store(1, Ordering::Release);
        true
    }

    pub fn remove(&self, fd: c_int) -> Option<Arc<Open>> {
        let p = usize::try_from(fd).ok().and_then(|i| self.present.get(i))?;
        if p.load(Ordering::Acquire) == 0 {
            return None;
        }
        p.store(0, Ordering::Release);
        self.info
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fd)
    }

    pub fn all(&self) -> Vec<(c_int, Arc<Open>)> {
        self.info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(fd, o)| (*fd, o.clone()))
            .collect()
    }
}

/// The run's settings, from the environment `dfs run` sets.
#[derive(Debug)]
pub(crate) struct Env {
    /// This library's path, for the `LD_PRELOAD` of programs the run starts.
    pub lib: Option<String>,
    /// The run's lock directory.
    pub locks: Option<String>,
    /// The table's descriptor (-1: none), which the interposed `close` and `dup2` keep
    /// out of the program's way; it moves when the program wants its number.
    pub table_fd: AtomicI32,
}

/// The shim of this process.
#[derive(Debug)]
pub(crate) struct Shim {
    pub env: Env,
    pub dfs: Dfs,
    pub table: Table<'static>,
    pub fds: Fds,
    /// The process this state belongs to (a child after a fork it did not see differs).
    pub pid: AtomicU32,
    pub umask: AtomicU32,
    /// Shim calls hold it shared; `fork` holds it exclusively.
    pub gate: RwLock<()>,
    pub dirs: dir::Dirs,
    pub streams: stdio::Streams,
    pub locks: locks::Locks,
    /// Descriptors the server lent for reading, if it may lend (see [`lent`]).
    pub lent: Option<lent::Lent>,
}

pub(crate) static SHIM: OnceLock<Shim> = OnceLock::new();

/// Inside the shim, for one call: other calls this thread makes go to the C library, and a
/// fork waits until it is over.
pub(crate) struct Entered {
    pub shim: &'static Shim,
    _gate: RwLockReadGuard<'static, ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        INSIDE.with(|i| i.set(false));
    }
}

/// Enters the shim, unless this thread is already inside it or the shim is off.
pub(crate) fn enter() -> Option<Entered> {
    if INSIDE.with(|i| i.get()) {
        return None;
    }
    let shim = SHIM.get()?;
    INSIDE.with(|i| i.set(true));
    let gate = shim.gate.read().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if shim.pid.load(Ordering::Relaxed) != pid {
        // A child made by a fork this library did not see (a raw system call): the
        // connections are the parent's.
        shim.dfs.forget_clients_after_fork();
        shim.pid.store(pid, Ordering::Relaxed);
    }
    Some(Entered { shim, _gate: gate })
}

/// Enters the shim for a call on `fd`, if `fd` stands for a DFS file (and still is the
/// placeholder it was: a descriptor closed behind the shim's back and reused is dropped).
pub(crate) fn enter_fd(fd: c_int) -> Option<(Entered, Arc<Open>)> {
    let shim = SHIM.get()?;
    if !shim.fds.is_ours(fd) {
        return None;
    }
    let e = enter()?;
    let o = e.shim.fds.get(fd)?;
    match ffi::fstat_id(fd) {
        Some((_, ino, _)) if ino == o.placeholder => Some((e, o)),
        _ => {
            e.shim.fds.remove(fd);
            e.shim.unhold(&o);
            None
        }
    }
}

/// Runs `f` inside the shim (for the shim's own work: init, exit).
pub(crate) fn inside<R>(f: impl FnOnce() -> R) -> R {
    let was = INSIDE.with(|i| i.replace(true));
    let r = f();
    INSIDE.with(|i| i.set(was));
    r
}

/// Runs `f` outside the shim (the program's own callbacks, which may call the C library and
/// so this library).
pub(crate) fn inside_not<R>(f: impl FnOnce() -> R) -> R {
    let was = INSIDE.with(|i| i.replace(false));
    let r = f();
    INSIDE.with(|i| i.set(was));
    r
}

/// The caller's identity, as requests carry it.
pub(crate) fn creds() -> Creds {
    let (uid, gid, groups) = ffi::ids();
    Creds { uid, gid, groups }
}

/// Says something to the user on stderr, once per process and message kind, prefixed
/// with what is speaking.
pub(crate) fn say(what: &str) {
    let line = format!("dfs shim: {what}\n");
    inside(|| ffi::write(2, ffi::Buf::of(line.as_bytes()), line.len()));
}

fn hex16(s: &str) -> Option<[u8; 16]> {
    let s = s.trim();
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The table: the inherited one, the keeper's through `/proc`, or (no `dfs run`) a new one
/// whose descriptor this process's children inherit.
fn map_table(
    table_var: Option<&str>,
    session: [u8; 16],
) -> Result<(Table<'static>, Option<c_int>), String> {
    let words = Table::words(SLOTS, HOLDS);
    let fits = |fd: c_int| {
        let Some((_, _, size)) = ffi::fstat_id(fd) else {
            return false;
        };
        let seals = ffi::fcntl64(fd, libc::F_GET_SEALS, 0);
        size as usize >= words * 8 && seals >= 0 && seals & libc::F_SEAL_SHRINK != 0
    };
    let mut parts = table_var.unwrap_or("").split(':');
    let fd = parts.next().and_then(|s| s.parse::<c_int>().ok());
    let keeper = parts.next().and_then(|s| s.parse::<u32>().ok());
    let keeper_fd = parts.next().and_then(|s| s.parse::<c_int>().ok());
    let mut chosen = fd.filter(|&fd| fits(fd));
    if chosen.is_none() {
        if let (Some(pid), Some(kfd)) = (keeper, keeper_fd) {
            let p = CString::new(format!("/proc/{pid}/fd/{kfd}")).unwrap_or_default();
            let got = ffi::open64(ffi::CStrPtr::of(&p), libc::O_RDWR | libc::O_CLOEXEC, 0);
            if got >= 0 && fits(got) {
                chosen = Some(got);
            }
        }
    }
    let made_here = chosen.is_none();
    let fd = match chosen {
        Some(fd) => fd,
        None => {
            let fd = ffi::memfd(ffi::cstr("dfs-shim-table\0"), libc::MFD_ALLOW_SEALING);
            if fd < 0 {
                return Err(format!(
                    "cannot make the table of open files: {}",
                    std::io::Error::from_raw_os_error(ffi::errno())
                ));
            }
            // Out of the way of the numbers programs pick themselves (`exec 3>`, `dup2`).
            let high = ffi::fcntl64(fd, libc::F_DUPFD, 512);
            let fd = if high >= 0 {
                ffi::close(fd);
                high
            } else {
                fd
            };
            if ffi::ftruncate64(fd, (words * 8) as i64) != 0
                || ffi::fcntl64(
                    fd,
                    libc::F_ADD_SEALS,
                    (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) as u64,
                ) != 0
            {
                return Err("cannot size the table of open files".into());
            }
            fd
        }
    };
    let words_mem = ffi::map_table(fd, words).ok_or("cannot map the table of open files")?;
    let table = Table::attach(words_mem, SLOTS, HOLDS, session)
        .map_err(|_| "the table of open files has another layout (a different build?)")?;
    Ok((table, made_here.then_some(fd)))
}

impl Shim {
    /// The shim as the environment describes it; `None` when no DFS is configured.
    fn from_env() -> Result<Option<Shim>, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(addr), Some(prefix)) = (var(vars::ADDR), var(vars::PREFIX)) else {
            return Ok(None);
        };
        let secret_file = var(vars::SECRET_FILE);
        let secret = match &secret_file {
            None => None,
            Some(p) => {
                let bytes = std::fs::read(p).map_err(|e| {
                    format!(
                        "cannot read the secret {p}: {}",
                        dfs_proto::errno::plain(&e)
                    )
                })?;
                Some(
                    dfs_proto::auth::Secret::from_file_bytes(&bytes)
                        .map_err(|e| format!("{p}: {e}"))?,
                )
            }
        };
        let session = match var(vars::SESSION).and_then(|s| hex16(&s)) {
            Some(s) => s,
            None => {
                let mut s = [0u8; 16];
                getrandom::fill(&mut s).map_err(|e| e.to_string())?;
                s
            }
        };
        let table_var = var(vars::TABLE);
        let (table, made) = map_table(table_var.as_deref(), session)?;
        if let Some(fd) = made {
            std::env::set_var(vars::TABLE, fd.to_string());
        }
        let cwd = std::env::current_dir()
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            .unwrap_or_else(|_| b"/".to_vec());
        let dfs = Dfs::new(
            vec![MountConfig {
                prefix: prefix.into_bytes(),
                addr,
                secret,
                timeout: var(vars::TIMEOUT)
                    .and_then(|t| t.parse::<f64>().ok())
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(std::time::Duration::from_secs_f64),
            }],
            table.session(),
            cwd,
        )?;
        dfs.share_names_generation(table.names_changed());
        if let Some(c) = var(vars::CWD) {
            if let Some((mount, rest)) = crate::fs::rest_of(&dfs.router(), c.as_bytes()) {
                dfs.set_cwd(Cwd::Dfs { mount, rest });
            }
        }
        let table_fd = made.or_else(|| {
            table_var
                .as_deref()
                .and_then(|v| v.split(':').next())
                .and_then(|s| s.parse().ok())
        });
        Ok(Some(Shim {
            env: Env {
                lib: var(vars::LIB),
                locks: var(vars::LOCKS),
                table_fd: AtomicI32::new(table_fd.unwrap_or(-1)),
            },
            dfs,
            table,
            fds: Fds::new(),
            pid: AtomicU32::new(std::process::id()),
            umask: AtomicU32::new(read_umask()),
            gate: RwLock::new(()),
            dirs: dir::Dirs::default(),
            streams: stdio::Streams::default(),
            locks: locks::Locks::default(),
            lent: var(vars::NO_LEND).is_none().then(lent::Lent::default),
        }))
    }

    /// The table lock, as this thread.
    pub fn lock(&self) -> crate::lock::Held<'static> {
        self.table.lock(ffi::gettid(), ffi::alive)
    }

    /// This process as an owner in the table.
    pub fn me(&self) -> u64 {
        u64::from(self.pid.load(Ordering::Relaxed))
    }

    /// Releases the server opens of descriptions that were freed.
    pub fn release(&self, freed: Vec<Desc>) {
        for d in freed {
            let Some(open) = d.open else { continue };
            let Some((mount, _)) = crate::fs::rest_of(&self.dfs.router(), &d.path) else {
                continue;
            };
            let c = creds();
            if let Ok(client) = self.dfs.client(mount, &c) {
                let _ = client.release(&c, open);
            }
            if let Some(l) = &self.lent {
                l.forget(open);
            }
            self.locks.forget(d.ino);
        }
    }

    /// Whether `fd` is the run's table.
    pub fn is_table_fd(&self, fd: c_int) -> bool {
        fd >= 0 && self.env.table_fd.load(Ordering::Relaxed) == fd
    }

    /// Gives up this process's holding of one descriptor of `o`.
    pub fn unhold(&self, o: &Open) {
        let freed = {
            let g = self.lock();
            self.table.hold(&g, self.me(), o.id, -1)
        };
        self.release(freed.into_iter().collect());
    }

    /// What this process knows of description `d`.
    fn open_of(&self, d: Desc) -> Option<Arc<Open>> {
        let (mount, rest) = crate::fs::rest_of(&self.dfs.router(), &d.path)?;
        Some(Arc::new(Open {
            id: d.id,
            mount,
            kind: d.kind,
            handle: d.handle,
            open: d.open,
            open_append: d.open_append,
            ino: d.ino,
            path: d.path,
            rest,
            placeholder: d.placeholder,
            listing: Mutex::new(DirStream::at(0)),
        }))
    }

    /// Finds which inherited descriptors are placeholders of the run's descriptions, and
    /// records them as this process's holdings (after `exec`, the new image says what it
    /// holds; a child spawned with a token takes over the token's holdings).
    fn adopt_inherited(&self) {
        let mut found = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            for e in dir.flatten() {
                let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<c_int>().ok()) else {
                    continue;
                };
                let Ok(target) = std::fs::read_link(e.path()) else {
                    continue;
                };
                if !target
                    .to_string_lossy()
                    .starts_with("/memfd:dfs-shim (deleted)")
                {
                    continue;
                }
                let Some((_, ino, _)) = ffi::fstat_id(fd) else {
                    continue;
                };
                if let Some(d) = self.find_placeholder(ino) {
                    found.push((fd, d));
                }
            }
        }
        let mut holdings: HashMap<SlotId, u32> = HashMap::new();
        for (fd, d) in found {
            *holdings.entry(d.id).or_default() += 1;
            if let Some(o) = self.open_of(d) {
                self.fds.set(fd, o);
            }
        }
        let token = std::env::var(vars::INHERIT)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        std::env::remove_var(vars::INHERIT);
        let holdings: Vec<(SlotId, u32)> = holdings.into_iter().collect();
        let freed = {
            let g = self.lock();
            let mut freed = self.table.set_holdings(&g, self.me(), &holdings);
            if let Some(t) = token.filter(|t| Table::is_temp(*t)) {
                freed.extend(self.table.drop_owner(&g, t));
            }
            freed
        };
        self.release(freed);
    }

    /// The live description whose placeholder has inode number `ino`.
    fn find_placeholder(&self, ino: u64) -> Option<Desc> {
        (0..self.table.slots()).find_map(|i| {
            let d = self.table.desc(self.table.live(i)?).ok()?;
            (d.placeholder == ino).then_some(d)
        })
    }

    /// Makes a placeholder for a description and records it: returns the descriptor.
    pub fn install(&self, o: &Opened, flags: c_int, cloexec: bool) -> Result<c_int, Errno> {
        proc::collect(self);
        let m = ffi::memfd(ffi::cstr("dfs-shim\0"), libc::MFD_CLOEXEC);
        if m < 0 {
            return Err(Errno(ffi::errno()));
        }
        let proc_path = CString::new(format!("/proc/self/fd/{m}")).unwrap_or_default();
        let oflags = libc::O_PATH | if cloexec { libc::O_CLOEXEC } else { 0 };
        let fd = ffi::open64(ffi::CStrPtr::of(&proc_path), oflags, 0);
        let e = ffi::errno();
        ffi::close(m);
        if fd < 0 {
            return Err(Errno(e));
        }
        let fail = |e: Errno| {
            ffi::close(fd);
            Err(e)
        };
        if fd as usize >= MAX_FDS {
            return fail(crate::errno::EMFILE);
        }
        let Some((_, ino, _)) = ffi::fstat_id(fd) else {
            return fail(Errno::EIO);
        };
        let new = NewDesc {
            kind: o.kind,
            flags: (flags & KEPT_FLAGS) as u32,
            handle: &o.entry.handle,
            open: o.open,
            open_append: flags & libc::O_APPEND != 0,
            ino: o.entry.attr.ino,
            path: &o.path,
            placeholder: ino,
        };
        let id = {
            let g = self.lock();
            self.table.alloc(&g, self.me(), &new)
        };
        let id = match id {
            Ok(id) => id,
            Err(e) => {
                // The server open is released: nothing will refer to it.
                if let Some(open) = o.open {
                    let c = creds();
                    if let Ok(client) = self.dfs.client(o.mount, &c) {
                        let _ = client.release(&c, open);
                    }
                }
                return fail(e);
            }
        };
        let rest = crate::fs::rest_of(&self.dfs.router(), &o.path)
            .map(|(_, r)| r)
            .unwrap_or_default();
        self.fds.set(
            fd,
            Arc::new(Open {
                id,
                mount: o.mount,
                kind: o.kind,
                handle: o.entry.handle.clone(),
                open: o.open,
                open_append: new.open_append,
                ino: new.ino,
                path: o.path.clone(),
                rest,
                placeholder: ino,
                listing: Mutex::new(DirStream::at(0)),
            }),
        );
        Ok(fd)
    }

    /// Where a relative path from `dirfd` starts: the current directory, or an open DFS
    /// directory (`Err(None)` when `dirfd` is a local descriptor: the C library serves it).
    pub fn at(&self, dirfd: c_int) -> Result<Option<Arc<Open>>, Errno> {
        if dirfd == libc::AT_FDCWD {
            return Ok(None);
        }
        match self.fds.get(dirfd) {
            Some(o) if o.kind == Kind::Dir || o.kind == Kind::Path => Ok(Some(o)),
            Some(_) => Err(Errno::ENOTDIR),
            None => Ok(None),
        }
    }

    /// Opens `path` (from `dirfd`) with C flags; a path out of the DFS comes back for the
    /// C library to open.
    pub fn open_at(
        &self,
        dirfd: c_int,
        path: &[u8],
        flags: c_int,
        mode: u32,
    ) -> Result<Outcome<c_int>, Errno> {
        let dir = self.at(dirfd)?;
        let at = match &dir {
            Some(d) => At::Dir {
                mount: d.mount,
                handle: &d.handle,
                rest: &d.rest,
            },
            None => At::Cwd,
        };
        let acc = flags & libc::O_ACCMODE;
        let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE;
        if tmpfile {
            // An unnamed file in a directory: the server has no such operation.
            return Err(crate::errno::EOPNOTSUPP);
        }
        let how = OpenHow {
            read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            append: flags & libc::O_APPEND != 0,
            truncate: flags & libc::O_TRUNC != 0,
            create: flags & libc::O_CREAT != 0,
            exclusive: flags & libc::O_EXCL != 0,
            directory: flags & libc::O_DIRECTORY != 0,
            nofollow: flags & libc::O_NOFOLLOW != 0,
            path_only: flags & libc::O_PATH != 0,
            sync: flags & (libc::O_SYNC | libc::O_DSYNC) != 0,
            mode: mode & 0o7777 & !self.umask.load(Ordering::Relaxed),
        };
        let c = creds();
        match self.dfs.open(&c, at, path, &how)? {
            Outcome::Local(p) => Ok(Outcome::Local(p)),
            Outcome::Dfs(o) => {
                let fd = self.install(&o, flags, flags & libc::O_CLOEXEC != 0)?;
                Ok(Outcome::Dfs(fd))
            }
        }
    }

    /// The directory walk's starting point for `dirfd` (see [`Shim::at`]).
    pub fn at_of<'a>(&self, dir: &'a Option<Arc<Open>>) -> At<'a> {
        match dir {
            Some(d) => At::Dir {
                mount: d.mount,
                handle: &d.handle,
                rest: &d.rest,
            },
            None => At::Cwd,
        }
    }

    /// Whether a path call must be looked at: its path routes to the DFS, or starts from a
    /// DFS directory.
    pub fn wants(&self, dirfd: c_int, path: &[u8]) -> bool {
        if dirfd != libc::AT_FDCWD && path.first() != Some(&b'/') && self.fds.is_ours(dirfd) {
            return true;
        }
        !matches!(self.dfs.route(path), crate::path::Route::Local)
    }
}

/// The flags a description keeps (`F_GETFL` reports them).
pub(crate) const KEPT_FLAGS: c_int = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_PATH
    | libc::O_DIRECTORY
    | libc::O_ASYNC;

/// The process's umask, from `/proc/self/status` (reading it with `umask()` would set it).
fn read_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Sets up the shim when the library is loaded: before the program's `main`.
extern "C" fn init() {
    inside(|| match Shim::from_env() {
        Ok(Some(shim)) => {
            if SHIM.set(shim).is_ok() {
                if let Some(s) = SHIM.get() {
                    s.adopt_inherited();
                    stdio::adopt_std_streams(s);
                    ffi::at_exit(proc::at_exit);
                }
            }
        }
        Ok(None) => {}
        Err(e) => say(&format!("{e}; DFS paths will not be served")),
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
