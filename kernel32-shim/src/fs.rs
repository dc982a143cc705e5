//! The calls into [`dfs_client::Client`]: routing and walking a path, opening, reading and
//! writing, as every face needs them, with no operating system in sight.
//!
//! One [`Client`] per mount and *effective user*: on shm the server takes a connection's
//! user from the kernel (`SO_PEERCRED` at connect time), so a program that changes its
//! effective user (`seteuid`, as pjdfstest does) must speak through connections made as that
//! user, or the server would keep acting as the first one. All clients of a run share one
//! session id, so opens made in one process serve in its children too while the session
//! lives (the server binds a session to its user, so each user's opens stay its own).
//!
//! Reads hand the bytes to the face where they arrived, in the connection's ring
//! ([`Client::read_with`]): the face copies them once, into the program's buffer. Writes
//! are copied once, from the program's buffer into the server's ring.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dfs_client::{Client, ConnectError, ConnectOptions};
use dfs_proto::attr::{Attr, Entry, FileKind};
use dfs_proto::auth::Secret;
use dfs_proto::frame::MAX_DATA;
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Creds, OpenFlags};
use dfs_proto::name::Name;
use dfs_proto::Errno;
use vmmc_sockets::SharedBytes;

use crate::dircache::DirCache;

/// Reads of at least this many bytes go as two requests in flight (see `Dfs::read_pair`).
const PAIR_MIN: usize = 256 << 10;
use crate::path::{self, Cwd, MountId, Route, Router};
use crate::resolve::{self, Found, Last, Namespace, Start, Walk};
use crate::table::Kind;

/// One mount: a prefix and the server behind it.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Where it appears (an absolute directory such as `/dfs`).
    pub prefix: Vec<u8>,
    /// The server (`shm:NAME`, `tcp:HOST:PORT`).
    pub addr: String,
    /// The shared secret, if the server wants one.
    pub secret: Option<Secret>,
    /// How long a call keeps trying to reach a server that went away before it fails with
    /// `ENOTCONN` (`None`: the client's default, 30 s).
    pub timeout: Option<std::time::Duration>,
}

struct Mount {
    addr: String,
    opts: ConnectOptions,
    clients: Mutex<HashMap<u32, Arc<Client>>>,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mount")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The DFS as a face sees it: the router and the mounts' clients.
#[derive(Debug)]
pub struct Dfs {
    router: RwLock<Router>,
    mounts: Vec<Mount>,
    /// The first failure to connect, in words for the user (the face says it once).
    connect_error: Mutex<Option<String>>,
    /// Directories walks went through (see [`crate::dircache`]).
    dirs: DirCache,
    /// The run's shared generation of names, if the face has one (a process alone keeps
    /// its own).
    names: std::sync::OnceLock<&'static AtomicU64>,
    own_names: AtomicU64,
}

/// Where a relative path starts.
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    /// The current directory.
    Cwd,
    /// An open directory of the DFS (`openat`'s `dirfd`).
    Dir {
        /// Its mount.
        mount: MountId,
        /// Its handle.
        handle: &'a FileHandle,
        /// Its components below the mount's root.
        rest: &'a [Vec<u8>],
    },
}

/// How to open (the face translates its flags into this).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenHow {
    /// For reading.
    pub read: bool,
    /// For writing.
    pub write: bool,
    /// Writes go to the end.
    pub append: bool,
    /// Truncate an existing file.
    pub truncate: bool,
    /// Create it if it is missing.
    pub create: bool,
    /// With `create`: fail if it exists.
    pub exclusive: bool,
    /// It must be a directory.
    pub directory: bool,
    /// Do not follow a symbolic link in the last component.
    pub nofollow: bool,
    /// A name only, no I/O (`O_PATH`).
    pub path_only: bool,
    /// Writes are synchronous.
    pub sync: bool,
    /// Permission bits of a new file, the umask already applied.
    pub mode: u32,
}

/// An open file of the DFS.
#[derive(Clone, Debug)]
pub struct Opened {
    /// Its mount.
    pub mount: MountId,
    /// What it is.
    pub kind: Kind,
    /// Handle and attributes.
    pub entry: Entry,
    /// The server's open (regular files and directories opened for reading).
    pub open: Option<OpenId>,
    /// Its absolute path (prefix and canonical components).
    pub path: Vec<u8>,
    /// Whether it was created by this open.
    pub created: bool,
}

/// Where an open led.
#[derive(Clone, Debug)]
pub enum Outcome<T> {
    /// Out of the DFS: the face opens this local path itself.
    Local(Vec<u8>),
    /// A file of the DFS.
    Dfs(T),
}

fn connect_errno(e: &ConnectError) -> Errno {
    match e {
        ConnectError::Io(io) => match io.kind() {
            std::io::ErrorKind::TimedOut => crate::errno::ETIMEDOUT,
            std::io::ErrorKind::PermissionDenied => Errno::EACCES,
            _ => Errno::ENOTCONN,
        },
        ConnectError::Refused { errno, .. } => *errno,
        ConnectError::NeedSecret | ConnectError::NotAuthentic => Errno::EACCES,
        ConnectError::Protocol(_) => Errno::EPROTO,
    }
}

/// A directory whose attributes are not known (a mount's root before anyone asked).
fn dir_entry(handle: FileHandle) -> Entry {
    Entry {
        handle,
        attr: Attr {
            mode: 0o040755,
            nlink: 2,
            ..Attr::default()
        },
    }
}

impl Dfs {
    /// The DFS of `mounts`, connecting (lazily) with `session`, starting in the local
    /// directory `cwd`.
    pub fn new(mounts: Vec<MountConfig>, session: [u8; 16], cwd: Vec<u8>) -> Result<Dfs, String> {
        let prefixes: Vec<&[u8]> = mounts.iter().map(|m| m.prefix.as_slice()).collect();
        let router = Router::new(&prefixes, cwd).map_err(|e| e.to_string())?;
        let mut ms = Vec::new();
        for m in mounts {
            let mut opts = ConnectOptions::new().map_err(|e| e.to_string())?;
            opts.session = session;
            opts.secret = m.secret;
            if let Some(t) = m.timeout {
                opts.timeout = t;
            }
            ms.push(Mount {
                addr: m.addr,
                opts,
                clients: Mutex::new(HashMap::new()),
            });
        }
        Ok(Dfs {
            router: RwLock::new(router),
            mounts: ms,
            connect_error: Mutex::new(None),
            dirs: DirCache::default(),
            names: std::sync::OnceLock::new(),
            own_names: AtomicU64::new(0),
        })
    }

    /// A copy of the router (prefixes and current directory).
    pub fn router(&self) -> Router {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where `path` goes from the current directory.
    pub fn route(&self, path: &[u8]) -> Route {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .route(path)
    }

    /// Whether the current directory is in the DFS (relative paths then go there).
    pub fn cwd_in_dfs(&self) -> bool {
        matches!(
            self.router.read().unwrap_or_else(|p| p.into_inner()).cwd(),
            Cwd::Dfs { .. }
        )
    }

    /// Makes `cwd` the current directory.
    pub fn set_cwd(&self, cwd: Cwd) {
        self.router
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_cwd(cwd);
    }

    /// The client for `mount` as the user in `creds`, connected on first use.
    pub fn client(&self, mount: MountId, creds: &Creds) -> Result<Arc<Client>, Errno> {
        let m = self.mounts.get(mount).ok_or(Errno::EINVAL)?;
        if let Some(c) = m
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&creds.uid)
        {
            return Ok(c.clone());
        }
        // Connecting takes a round trip or two: not under the lock.
        let c = match Client::connect(&m.addr, m.opts.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let mut said = self.connect_error.lock().unwrap_or_else(|p| p.into_inner());
                if said.is_none() {
                    *said = Some(format!("cannot connect to {}: {e}", m.addr));
                }
                return Err(connect_errno(&e));
            }
        };
        Ok(m.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(creds.uid)
            .or_insert(c)
            .clone())
    }

    /// Forgets the directories walks went through: this process renamed or removed one,
    /// or changed attributes (a directory's search permission among them).
    pub fn forget_dirs(&self) {
        self.dirs.clear();
        self.names_word().fetch_add(1, Ordering::Release);
    }

    /// Shares the generation of names with the other processes of the run (a word of the
    /// run's shared memory).
    pub fn share_names_generation(&self, word: &'static AtomicU64) {
        let _ = self.names.set(word);
    }

    fn names_word(&self) -> &AtomicU64 {
        self.names.get().copied().unwrap_or(&self.own_names)
    }

    fn names_generation(&self) -> u64 {
        self.names_word().load(Ordering::Acquire)
    }

    /// The first connection failure not yet reported, for the face to tell the user once.
    pub fn take_connect_error(&self) -> Option<String> {
        self.connect_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// After `fork`, in the child: the clients' connections are the parent's (their rings
    /// are shared memory the parent goes on using), so the child forgets them, without
    /// closing or dropping anything, and connects anew when it needs to.
    pub fn forget_clients_after_fork(&self) {
        for m in &self.mounts {
            let old = std::mem::take(&mut *m.clients.lock().unwrap_or_else(|p| p.into_inner()));
            std::mem::forget(old);
        }
    }

    /// Whether `mount`'s server refuses changes.
    pub fn read_only(&self, mount: MountId, creds: &Creds) -> bool {
        self.client(mount, creds).is_ok_and(|c| c.read_only())
    }

    /// Routes and walks `path` from `at`.
    pub fn resolve(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &[u8],
        last: Last,
    ) -> Result<Walk, Errno> {
        match self.resolve_once(creds, at, path, last) {
            // A directory remembered on the way was removed meanwhile (by another process):
            // once more, from the server.
            Err(e) if e == Errno::ESTALE => {
                self.forget_dirs();
                self.resolve_once(creds, at, path, last)
            }
            r => r,
        }
    }

    fn resolve_once(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &[u8],
        last: Last,
    ) -> Result<Walk, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let last = Last {
            follow: last.follow,
            dir: last.dir || path.ends_with(b"/"),
        };
        let router = self.router();
        let ns = As { dfs: self, creds };
        match at {
            At::Dir {
                mount,
                handle,
                rest,
            } if path.first() != Some(&b'/') => {
                let comps = path
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                let start = Start::Dir {
                    mount,
                    dir: dir_entry(handle.clone()),
                    rest: rest.to_vec(),
                };
                resolve::walk(&ns, &router, start, comps, last)
            }
            _ => match router.route(path) {
                Route::Local => Ok(Walk::Local(path.to_vec())),
                Route::Dfs { mount, rest } => {
                    resolve::walk(&ns, &router, Start::Root(mount), rest, last)
                }
            },
        }
    }

    /// The absolute path of a walk's result.
    pub fn path_of(&self, f: &Found) -> Vec<u8> {
        self.router
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .path_of(f.mount, &f.rest)
    }

    /// A found node's attributes, asked afresh when the walk's are old.
    pub fn attr_of(&self, creds: &Creds, f: &Found) -> Result<Attr, Errno> {
        let e = f.node.as_ref().map_err(|e| *e)?;
        if f.fresh {
            return Ok(e.attr);
        }
        self.client(f.mount, creds)?.getattr(creds, &e.handle, None)
    }

    /// The usual case of an open that creates: the file is new. It is made in its
    /// directory at once (`O_EXCL` on the server), without first looking up the name only
    /// to find it missing: one round trip, not two. `None` when that does not apply or the
    /// name exists (then [`Dfs::open`] walks to it as usual: an existing file, a symbolic
    /// link to follow).
    fn create_new(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &[u8],
        how: &OpenHow,
    ) -> Result<Option<Outcome<Opened>>, Errno> {
        if !how.create || how.directory || how.path_only {
            return Ok(None);
        }
        let Some((d, name, last)) = self.parent_of(creds, at, path) else {
            return Ok(None);
        };
        let Ok(dir) = &d.node else { return Ok(None) };
        let client = self.client(d.mount, creds)?;
        let flags = OpenFlags {
            read: how.read,
            write: how.write,
            append: how.append,
            truncate: false,
            exclusive: true,
            sync: how.sync,
        };
        match client.create(creds, &dir.handle, &name, how.mode, flags) {
            Ok((entry, open, _)) => {
                let mut rest = d.rest.clone();
                rest.push(last.to_vec());
                let full = self
                    .router
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .path_of(d.mount, &rest);
                Ok(Some(Outcome::Dfs(Opened {
                    mount: d.mount,
                    kind: Kind::File,
                    entry,
                    open: Some(open),
                    path: full,
                    created: true,
                })))
            }
            Err(e) if e == Errno::EEXIST && !how.exclusive => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The directory `path`'s last name is in, walked, and that name, not looked up; `None`
    /// when the path needs the usual walk: it ends in `/`, `.` or `..`, or leaves the DFS, or
    /// its directory is not there (the walk then says why).
    fn parent_of<'p>(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &'p [u8],
    ) -> Option<(Found, Name, &'p [u8])> {
        if path.ends_with(b"/") {
            return None;
        }
        let (dir_path, last): (&[u8], &[u8]) = match path.iter().rposition(|&b| b == b'/') {
            Some(0) => (b"/", &path[1..]),
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (b".", path),
        };
        if last.is_empty() || last == b"." || last == b".." {
            return None;
        }
        let name = Name::new(last).ok()?;
        let dir_last = Last {
            follow: true,
            dir: true,
        };
        match self.resolve(creds, at, dir_path, dir_last) {
            Ok(Walk::Dfs(d)) if d.node.is_ok() => Some((d, name, last)),
            _ => None,
        }
    }

    /// Unlinks what `path` names in one request: its directory is walked, the name is not
    /// looked up first (the server refuses a directory with `EISDIR`, as `unlink(2)` does,
    /// and removes a symbolic link itself). `None` when the path needs the usual walk (see
    /// [`Dfs::parent_of`]).
    pub fn unlink_direct(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &[u8],
    ) -> Result<Option<()>, Errno> {
        let Some((d, name, _)) = self.parent_of(creds, at, path) else {
            return Ok(None);
        };
        let Ok(dir) = &d.node else { return Ok(None) };
        self.client(d.mount, creds)?
            .unlink(creds, &dir.handle, &name)
            .map(Some)
    }

    /// Opens `path` from `at`.
    pub fn open(
        &self,
        creds: &Creds,
        at: At<'_>,
        path: &[u8],
        how: &OpenHow,
    ) -> Result<Outcome<Opened>, Errno> {
        if let Some(made) = self.create_new(creds, at, path, how)? {
            return Ok(made);
        }
        let last = Last {
            follow: !(how.nofollow || how.create && how.exclusive),
            dir: false,
        };
        let f = match self.resolve(creds, at, path, last)? {
            Walk::Local(p) => return Ok(Outcome::Local(p)),
            Walk::Dfs(f) => f,
        };
        let client = self.client(f.mount, creds)?;
        let full = self.path_of(&f);
        let flags = OpenFlags {
            read: how.read,
            write: how.write,
            append: how.append,
            truncate: how.truncate && how.write,
            exclusive: how.exclusive,
            sync: how.sync,
        };
        let entry = match &f.node {
            Err(e) if *e == Errno::ENOENT && how.create => {
                if path.ends_with(b"/") || how.directory {
                    return Err(Errno::EISDIR);
                }
                let (Some(dir), Some(name)) = (&f.parent, &f.name) else {
                    return Err(Errno::ENOENT);
                };
                let (entry, open, _) = client.create(creds, &dir.handle, name, how.mode, flags)?;
                return Ok(Outcome::Dfs(Opened {
                    mount: f.mount,
                    kind: Kind::File,
                    entry,
                    open: Some(open),
                    path: full,
                    created: true,
                }));
            }
            Err(e) => return Err(*e),
            Ok(e) => e.clone(),
        };
        if how.create && how.exclusive {
            return Err(Errno::EEXIST);
        }
        let attr = if f.fresh {
            entry.attr
        } else {
            client.getattr(creds, &entry.handle, None)?
        };
        let entry = Entry {
            handle: entry.handle,
            attr,
        };
        let kind = attr.kind();
        let done = |kind, open| {
            Ok(Outcome::Dfs(Opened {
                mount: f.mount,
                kind,
                entry: entry.clone(),
                open,
                path: full.clone(),
                created: false,
            }))
        };
        if how.path_only {
            if how.directory && kind != FileKind::Directory {
                return Err(Errno::ENOTDIR);
            }
            return done(Kind::Path, None);
        }
        match kind {
            FileKind::Symlink => Err(Errno::ELOOP),
            FileKind::Directory => {
                if how.write || how.truncate {
                    return Err(Errno::EISDIR);
                }
                // Opened on the server to check, as the caller, that it may be read.
                let open = client.open(
                    creds,
                    &entry.handle,
                    OpenFlags {
                        read: true,
                        ..OpenFlags::default()
                    },
                )?;
                done(Kind::Dir, Some(open))
            }
            _ if how.directory => Err(Errno::ENOTDIR),
            FileKind::Regular => {
                let open = client.open(creds, &entry.handle, flags)?;
                done(Kind::File, Some(open))
            }
            // FIFOs, sockets and devices are never opened by the server.
            _ => Err(crate::errno::ENXIO),
        }
    }

    /// Reads up to `len` bytes at `offset` of an open file, handing each piece to `sink`
    /// with its position in the caller's buffer, in place in the ring; returns the bytes
    /// read (fewer at the end of the file).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        mount: MountId,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: usize,
        mut sink: impl FnMut(usize, SharedBytes<'_>),
    ) -> Result<usize, Errno> {
        let client = self.client(mount, creds)?;
        let mut done = 0usize;
        // A large read goes as two halves in flight at once (see `read_pair`); the rest, and
        // whatever follows a failure there, one request at a time.
        if len - done >= PAIR_MIN {
            match self.read_pair(&client, creds, handle, open, offset, len, &mut sink) {
                Ok((n, true)) => return Ok(n),
                Ok((n, false)) => done = n,
                Err(_) => {}
            }
        }
        while done < len {
            let want = (len - done).min(MAX_DATA) as u32;
            let at = offset
                .checked_add(done as u64)
                .ok_or(crate::errno::EOVERFLOW)?;
            let r = client.read_with(creds, handle, open, at, want, |data, eof| {
                let n = data.len();
                sink(done, data);
                (n, eof)
            });
            match r {
                Ok((n, eof)) => {
                    done += n;
                    if eof || n < want as usize {
                        break;
                    }
                }
                // What was read before the failure counts, as with the system call.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// The first up to 2 MiB of a read as two requests on two connections, both sent before
    /// either reply is taken: the server `pread`s the second half into its ring while this
    /// side copies the first out of its own, so the two copies of every byte (the server's
    /// and ours) overlap instead of taking turns. Returns the bytes read and whether the
    /// read is over (short, or at the end of the file).
    #[allow(clippy::too_many_arguments)]
    fn read_pair(
        &self,
        client: &Client,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: usize,
        sink: &mut impl FnMut(usize, SharedBytes<'_>),
    ) -> Result<(usize, bool), Errno> {
        let total = len.min(2 * MAX_DATA);
        // The first half ends on a page, so the server's reads stay aligned.
        let first = (total / 2) & !4095;
        let second = total - first;
        let at2 = offset
            .checked_add(first as u64)
            .ok_or(crate::errno::EOVERFLOW)?;
        let mut got = [0usize; 2];
        let mut over = false;
        client.read_pair_with(
            creds,
            handle,
            open,
            [(offset, first as u32), (at2, second as u32)],
            |i, data, eof| {
                if i == 1 && over {
                    // The file ended in the first half: what the second saw is not ours.
                    return;
                }
                let want = if i == 0 { first } else { second };
                let n = data.len();
                sink(if i == 0 { 0 } else { first }, data);
                got[i] = n;
                if eof || n < want {
                    over = true;
                }
            },
        )?;
        let n = got[0] + if got[0] == first { got[1] } else { 0 };
        Ok((n, over || n == len))
    }

    /// Writes `data` at `offset` (at the end if `append`); returns the bytes written and the
    /// file's attributes after them.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        mount: MountId,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        append: bool,
        data: &[u8],
    ) -> Result<(usize, Option<Attr>), Errno> {
        let client = self.client(mount, creds)?;
        let mut done = 0usize;
        let mut attr = None;
        loop {
            let chunk = &data[done..(done + MAX_DATA).min(data.len())];
            let at = offset.checked_add(done as u64).ok_or(crate::errno::EFBIG)?;
            match client.write(creds, handle, open, at, append, chunk) {
                // A server that says it wrote more than it was sent is not believed.
                Ok((n, _)) if n as usize > chunk.len() => {
                    if done > 0 {
                        break;
                    }
                    return Err(Errno::EIO);
                }
                Ok((n, a)) => {
                    done += n as usize;
                    attr = Some(a);
                    if (n as usize) < chunk.len() || done >= data.len() {
                        break;
                    }
                }
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok((done, attr))
    }
}

/// The DFS walked as one user.
struct As<'a> {
    dfs: &'a Dfs,
    creds: &'a Creds,
}

impl Namespace for As<'_> {
    fn root(&self, mount: MountId) -> Result<Entry, Errno> {
        let c = self.dfs.client(mount, self.creds)?;
        Ok(dir_entry(c.root().clone()))
    }

    fn lookup(&self, mount: MountId, dir: &Entry, name: &Name) -> Result<Entry, Errno> {
        self.dfs
            .client(mount, self.creds)?
            .lookup(self.creds, &dir.handle, name)
    }

    fn lookup_on_the_way(&self, mount: MountId, dir: &Entry, name: &Name) -> Result<Entry, Errno> {
        let gen = self.dfs.names_generation();
        if let Some(e) = self.dfs.dirs.get(mount, dir, name, self.creds, gen) {
            return Ok(e);
        }
        let e = self.lookup(mount, dir, name)?;
        self.dfs.dirs.put(mount, dir, name, self.creds, &e, gen);
        Ok(e)
    }

    fn readlink(&self, mount: MountId, link: &Entry) -> Result<Vec<u8>, Errno> {
        Ok(self
            .dfs
            .client(mount, self.creds)?
            .readlink(self.creds, &link.handle)?
            .as_bytes()
            .to_vec())
    }
}

/// Whether `creds` may access a file with `attr` as `access(2)` asks (`r`, `w`, `x` bits of
/// `want`; 0 asks only whether it exists): the owner's, group's or others' bits, and root
/// may do anything but execute a file that no one may execute.
pub fn access(attr: &Attr, creds: &Creds, want: u32) -> Result<(), Errno> {
    let want = want & 7;
    if want == 0 {
        return Ok(());
    }
    let mode = attr.mode;
    if creds.uid == 0 {
        let exec_ok = attr.kind() == FileKind::Directory || mode & 0o111 != 0;
        return if want & 1 == 0 || exec_ok {
            Ok(())
        } else {
            Err(Errno::EACCES)
        };
    }
    let bits = if creds.uid == attr.uid {
        (mode >> 6) & 7
    } else if creds.gid == attr.gid || creds.groups.contains(&attr.gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// The canonical components of a DFS path below its mount's root (what an open directory
/// keeps, to resolve `..` from it), or `None` if `path` is not in the DFS.
pub fn rest_of(router: &Router, path: &[u8]) -> Option<(MountId, Vec<Vec<u8>>)> {
    match router.route(path) {
        Route::Dfs { mount, rest } => Some((mount, rest)),
        Route::Local => None,
    }
}

/// The components of a normalised absolute path (for a current directory set by name).
pub fn split(path: &[u8]) -> Vec<Vec<u8>> {
    path::normalize(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(mode: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            mode,
            uid,
            gid,
            ..Attr::default()
        }
    }

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn access_checks_the_right_bits() {
        let f = attr(0o100640, 10, 20);
        assert!(access(&f, &creds(10, 1, &[]), 6).is_ok());
        assert!(access(&f, &creds(10, 1, &[]), 1).is_err());
        assert!(access(&f, &creds(11, 20, &[]), 4).is_ok());
        assert!(access(&f, &creds(11, 21, &[20]), 4).is_ok());
        assert!(access(&f, &creds(11, 21, &[20]), 2).is_err());
        assert!(access(&f, &creds(12, 30, &[]), 4).is_err());
        assert!(access(&f, &creds(12, 30, &[]), 0).is_ok());
        assert!(access(&f, &creds(0, 0, &[]), 6).is_ok());
        assert!(access(&f, &creds(0, 0, &[]), 1).is_err());
        assert!(access(&attr(0o040700, 1, 1), &creds(0, 0, &[]), 1).is_ok());
    }
}
