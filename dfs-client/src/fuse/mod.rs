//! The FUSE front end: the kernel's file-system requests as [`Client`] calls.
//!
//! Reads go from the connection's ring slice straight into the FUSE reply (fuser writes it to
//! `/dev/fuse` from the slice), so this side makes no copy of its own. Writes arrive in a
//! buffer fuser owns and are copied once, into the server's ring. Attributes and entries are
//! cached by the kernel for the mount's timeouts; file pages stay cached across opens only
//! while the file's mtime and size are what this client last saw (close-to-open consistency).

mod coherence;
mod convert;
mod dirs;
mod nodes;
mod passthrough;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dfs_proto::attr::{Attr, Entry, SetAttr};
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Body, Creds, RenameMode};
use dfs_proto::name::{LinkTarget, Name, XattrName};
use dfs_proto::Errno;
use fuser::{
    FileHandle as Fh, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenFlags as FuseOpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::Client;
use coherence::Ticket;
pub use nodes::{Nodes, ROOT};

/// How the kernel caches what the mount tells it.
#[derive(Clone, Copy, Debug)]
pub struct CacheTimes {
    /// How long attributes stay valid (`attr_timeout`) while no notices keep them right.
    pub attr: Duration,
    /// How long a name's lookup stays valid (`entry_timeout`) while no notices keep it right.
    pub entry: Duration,
    /// How long both stay valid while the server's notices keep them right
    /// (`cache_timeout`; zero subscribes to no notices, see [`coherence`]).
    pub coherent: Duration,
}

impl Default for CacheTimes {
    fn default() -> CacheTimes {
        CacheTimes {
            attr: Duration::from_secs(1),
            entry: Duration::from_secs(1),
            coherent: Duration::from_secs(60),
        }
    }
}

/// An open file of the mount.
#[derive(Debug, Clone)]
struct Open {
    open: OpenId,
    append: bool,
    /// The node it opens: an unlinked file is reached through its opens only.
    ino: u64,
    /// Whether anything was written through it.
    wrote: bool,
    /// Whether the kernel caches it, reads the server's file itself, or neither.
    io: passthrough::Io,
}

/// The mounted file system.
#[derive(Debug)]
pub struct DfsFuse {
    client: Arc<Client>,
    nodes: Arc<Nodes>,
    /// Whether the kernel may cache long (see [`coherence`]).
    coherence: Arc<coherence::Coherence>,
    opens: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    keep_cache: bool,
    /// Open directories, and what the kernel may keep of their listings.
    dirs: dirs::Dirs,
    /// Reads the kernel serves from the server's page cache, when the server is on this host
    /// (and the kernel agreed to passthrough at init).
    passthrough: Option<passthrough::Passthrough>,
}

const GEN: Generation = Generation(0);
/// Largest request the kernel sends us (its own cap is 1 MiB too).
pub const MAX_IO: u32 = 1 << 20;

fn name(n: &OsStr) -> Result<Name, Errno> {
    Name::new(n.as_bytes()).map_err(|e| e.errno())
}

/// Whether a change that failed with `e` may have happened all the same (its reply was lost).
fn in_doubt(e: Errno) -> bool {
    !matches!(
        e.0,
        libc::ENOENT
            | libc::EEXIST
            | libc::EACCES
            | libc::EPERM
            | libc::ENOTEMPTY
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::EINVAL
            | libc::ENAMETOOLONG
            | libc::EROFS
            | libc::ENOSPC
            | libc::EDQUOT
            | libc::EMLINK
            | libc::EXDEV
    )
}

fn who(req: &Request) -> Creds {
    convert::creds(req.uid(), req.gid(), req.pid())
}

impl DfsFuse {
    /// The file system of `client`'s export.
    pub fn new(client: Arc<Client>, times: CacheTimes, keep_cache: bool) -> DfsFuse {
        let nodes = Arc::new(Nodes::new(client.root().clone()));
        DfsFuse {
            client,
            nodes,
            coherence: Arc::new(coherence::Coherence::new(times)),
            opens: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            keep_cache,
            dirs: dirs::Dirs::default(),
            passthrough: None,
        }
    }

    /// Lets read-only opens pass through to the server's files when it is on this host
    /// (see [`passthrough`]); without it, every read comes through the rings.
    pub fn with_passthrough(mut self, on: bool) -> DfsFuse {
        // Only root may register a backing file.
        self.passthrough = if on && nix::unistd::geteuid().is_root() {
            passthrough::Passthrough::new(self.client.addr(), self.client.session())
        } else {
            None
        };
        self
    }

    /// The thread that subscribes to the server's notices and applies them to the kernel's
    /// caches, to be started with the mounted session's notifier.
    pub fn notice_worker(&self) -> coherence::Worker {
        coherence::Worker {
            coherence: self.coherence.clone(),
            nodes: self.nodes.clone(),
            client: self.client.clone(),
        }
    }

    fn handle(&self, ino: INodeNo) -> Result<FileHandle, Errno> {
        self.nodes.handle(ino.0).ok_or(Errno::ESTALE)
    }

    fn open_of(&self, fh: Fh) -> Option<Open> {
        self.opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
    }

    /// The open the kernel named, or else any open of the same node: the kernel asks for the
    /// attributes of an open file without saying which open, and once the file is unlinked
    /// its handle no longer resolves on the server.
    fn any_open(&self, ino: INodeNo, fh: Option<Fh>) -> Option<OpenId> {
        let opens = self.opens.lock().unwrap_or_else(|p| p.into_inner());
        fh.and_then(|f| opens.get(&f.0))
            .or_else(|| opens.values().find(|o| o.ino == ino.0))
            .map(|o| o.open)
    }

    fn add_open(&self, o: Open) -> Fh {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, o);
        Fh(fh)
    }

    /// The node of an entry the server returned (see [`Nodes::looked_up`]).
    fn node_of(&self, req: &Request, e: &Entry) -> u64 {
        self.nodes.looked_up(&e.handle, e.attr.ino, |other| {
            self.client
                .getattr(&who(req), other, None)
                .is_ok_and(|a| a.ino == e.attr.ino)
        })
    }

    /// Answers with the entry `name` in `parent` the server gave, for as long as the request
    /// that got it (which left at `t`) may be cached.
    fn reply_entry(
        &self,
        req: &Request,
        t: Ticket,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        r: Result<Entry, Errno>,
    ) {
        self.reply_entry_with(req, t, parent, name, reply, r, |_| {});
    }

    /// [`DfsFuse::reply_entry`], running `before` with the entry's node id before the kernel
    /// hears of it.
    #[allow(clippy::too_many_arguments)]
    fn reply_entry_with(
        &self,
        req: &Request,
        t: Ticket,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        r: Result<Entry, Errno>,
        before: impl FnOnce(u64),
    ) {
        match r {
            Ok(e) => {
                let id = self.node_of(req, &e);
                before(id);
                self.nodes.named(id, parent.0, name.as_bytes());
                self.coherence.remember(t, id, &e.attr);
                self.coherence.reply(t, |times| {
                    reply.entry_with_ttls(
                        &times.entry,
                        &times.attr,
                        &convert::file_attr(id, &e.attr),
                        GEN,
                    )
                });
            }
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn reply_attr(&self, t: Ticket, ino: INodeNo, reply: ReplyAttr, r: Result<Attr, Errno>) {
        match r {
            Ok(a) => {
                self.coherence.remember(t, ino.0, &a);
                self.coherence.reply(t, |times| {
                    reply.attr(&times.attr, &convert::file_attr(ino.0, &a))
                })
            }
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    /// This client changed the name `name` in `parent` (or tried to): the directory's and
    /// the named file's attributes kept here are no longer current.
    fn changed_entry(&self, parent: INodeNo, name: &OsStr) {
        let child = self.nodes.peek_name(parent.0, name.as_bytes());
        self.coherence
            .changed(&[parent.0, child.unwrap_or(parent.0)]);
    }

    /// After this client's change of the name `name` in `parent` (`added` or removed): keeps
    /// the directory's complete listing, if known, as it now is; a change whose outcome is in
    /// doubt (the connection failed) leaves the listing unknown.
    fn relisted<T>(&self, parent: INodeNo, name: &OsStr, added: bool, r: &Result<T, Errno>) {
        match r {
            Ok(_) if added => self.nodes.listed(parent.0, name.as_bytes()),
            Ok(_) => self.nodes.unlisted(parent.0, name.as_bytes()),
            Err(e) if in_doubt(*e) => self.nodes.unknown_listing(parent.0),
            Err(_) => {}
        }
    }

    fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn reply_xattr(reply: ReplyXattr, r: Result<Body, Errno>) {
        match r {
            Ok(Body::XattrSize(n)) => reply.size(n),
            Ok(Body::XattrData(d)) => reply.data(&d),
            Ok(_) => reply.error(fuser::Errno::EIO),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    /// Opens on the server; the kernel may keep its cached pages only if the file is as this
    /// client last saw it. A read-only open may pass through instead (see [`passthrough`]).
    fn do_open(
        &self,
        req: &Request,
        ino: INodeNo,
        flags: i32,
        reply: &ReplyOpen,
    ) -> Result<(Fh, FopenFlags, passthrough::Io), Errno> {
        let creds = who(req);
        let h = self.handle(ino)?;
        let pf = convert::open_flags(flags);
        let open = self.client.open(&creds, &h, pf);
        if pf.truncate {
            self.coherence.changed(&[ino.0]);
        }
        let open = open?;
        let io = match &self.passthrough {
            Some(p) => p.open(ino.0, open, pf.write || pf.truncate, reply),
            None => passthrough::Io::Cached,
        };
        let fh = self.add_open(Open {
            open,
            append: pf.append,
            ino: ino.0,
            wrote: false,
            io: io.clone(),
        });
        if let passthrough::Io::Through(..) = io {
            return Ok((fh, FopenFlags::empty(), io));
        }
        // While notices drop a file's pages as soon as anyone changes it, what the kernel
        // holds is current: nothing to ask.
        let keep = self.keep_cache
            && (self.coherence.is_live()
                || match self.client.getattr(&creds, &h, Some(open)) {
                    Ok(a) => self.nodes.seen(ino.0, (a.mtime, a.size)),
                    Err(_) => false,
                });
        Ok((
            fh,
            if keep {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            },
            passthrough::Io::Cached,
        ))
    }

    /// Answers a `READDIR` (`want` names) or `READDIRPLUS` from the open directory `fh` (see
    /// [`dirs`]).
    fn list(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        want: dirs::Want,
        each: impl FnMut(&dfs_proto::msg::DirEntry, Duration) -> bool,
    ) -> Result<usize, Errno> {
        let creds = who(req);
        let h = self.handle(ino)?;
        self.dirs.serve(
            ino.0,
            fh.0,
            offset,
            want,
            |cookie, attrs| {
                let max = if attrs {
                    dirs::PLUS_PAGE
                } else {
                    dirs::NAMES_PAGE
                };
                self.client.list_dir(&creds, &h, cookie, max, attrs)
            },
            each,
        )
    }
}

impl Filesystem for DfsFuse {
    /// No ioctl is served (the server has none to offer). Programs probe ioctls all the time
    /// (a stress test asked 1,792 times), so this is said once, at debug level, not warned
    /// per call as fuser's default does.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: fuser::FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| tracing::debug!("ioctls are not supported (first asked: {cmd:#x})"));
        reply.error(fuser::Errno::ENOTTY);
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        // The kernel offers its current readahead as the most; the mount raises the device's
        // readahead afterwards (`readahead=` mount option).
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
        );
        // The server's own kernel clears set-user-id bits and capabilities when a write or
        // truncate runs there as the caller: the client's kernel need not ask for
        // `security.capability` before every write (a round trip each).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Passthrough needs the kernel's support and, for files on a disk file system, a
        // stacking depth of one; a kernel without it gets every read through the rings.
        if self.passthrough.is_some()
            && (config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_err()
                || config.set_max_stack_depth(1).is_err())
        {
            tracing::info!("the kernel offers no FUSE passthrough: reads come through the rings");
            self.passthrough = None;
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        self.dirs.looked_up_in(parent.0);
        // A directory whose every name this client knows (it made it, nobody else changed
        // it since: notices would say) answers for a missing name itself. A create looks its
        // name up first: this saves one round trip of its three.
        // (A name the protocol refuses, one too long, fails as the server would fail it.)
        if self.coherence.is_live()
            && name(n).is_ok()
            && self.nodes.surely_absent(parent.0, n.as_bytes())
        {
            return reply.error(fuser::Errno::ENOENT);
        }
        let t = self.coherence.ticket();
        let r = (|| {
            self.client
                .lookup(&who(req), &self.handle(parent)?, &name(n)?)
        })();
        self.reply_entry(req, t, parent, n, reply, r);
    }

    fn destroy(&mut self) {
        self.coherence.stop();
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<Fh>, reply: ReplyAttr) {
        let t = self.coherence.ticket();
        // Kept here while notices keep it right: no round trip. (Not while an open passing
        // through may be writing the file where the server does not see it.)
        let written_through = self
            .passthrough
            .as_ref()
            .is_some_and(|p| p.written_through(ino.0));
        if let Some(a) = self.coherence.cached(ino.0).filter(|_| !written_through) {
            return self.reply_attr(t, ino, reply, Ok(a));
        }
        let open = self.any_open(ino, fh);
        let r = (|| self.client.getattr(&who(req), &self.handle(ino)?, open))();
        self.reply_attr(t, ino, reply, r);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let open = self.any_open(ino, fh);
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(convert::set_time),
            mtime: mtime.map(convert::set_time),
        };
        let t = self.coherence.ticket();
        let r = (|| {
            self.client
                .setattr(&who(req), &self.handle(ino)?, open, set)
        })();
        self.reply_attr(t, ino, reply, r);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match (|| self.client.readlink(&who(req), &self.handle(ino)?))() {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        let mut t = self.coherence.ticket();
        let r = (|| {
            self.client.mknod(
                &who(req),
                &self.handle(parent)?,
                &name(n)?,
                mode,
                u64::from(rdev),
            )
        })();
        self.coherence.changed_by(&mut t, &[parent.0]);
        self.relisted(parent, n, true, &r);
        self.reply_entry(req, t, parent, n, reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut t = self.coherence.ticket();
        let r = (|| {
            self.client.mkdir(
                &who(req),
                &self.handle(parent)?,
                &name(n)?,
                mode & 0o7777 & !umask,
            )
        })();
        self.coherence.changed_by(&mut t, &[parent.0]);
        self.relisted(parent, n, true, &r);
        // Made here, so empty and known complete, unless a notice came meanwhile. Recorded
        // before the kernel hears of it and can make anything in it.
        let known = self.coherence.is_live() && self.coherence.quiet_since(t);
        self.reply_entry_with(req, t, parent, n, reply, r, |id| {
            if known {
                self.nodes.made_dir(id);
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            self.client
                .unlink(&who(req), &self.handle(parent)?, &name(n)?)
        })();
        self.changed_entry(parent, n);
        self.relisted(parent, n, false, &r);
        if r.is_ok() {
            self.nodes.unnamed(parent.0, n.as_bytes());
        }
        Self::reply_empty(reply, r);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            self.client
                .rmdir(&who(req), &self.handle(parent)?, &name(n)?)
        })();
        self.changed_entry(parent, n);
        self.relisted(parent, n, false, &r);
        if r.is_ok() {
            self.nodes.unnamed(parent.0, n.as_bytes());
        }
        Self::reply_empty(reply, r);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, n: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut t = self.coherence.ticket();
        let r = (|| {
            let target = LinkTarget::new(target.as_os_str().as_bytes()).map_err(|e| e.errno())?;
            self.client
                .symlink(&who(req), &self.handle(parent)?, &name(n)?, &target)
        })();
        self.coherence.changed_by(&mut t, &[parent.0]);
        self.relisted(parent, n, true, &r);
        self.reply_entry(req, t, parent, n, reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let bits = flags.bits();
            let mode = if bits == 0 {
                RenameMode::Replace
            } else if bits == libc::RENAME_NOREPLACE {
                RenameMode::NoReplace
            } else if bits == libc::RENAME_EXCHANGE {
                RenameMode::Exchange
            } else {
                return Err(Errno::EINVAL);
            };
            self.client.rename(
                &who(req),
                &self.handle(parent)?,
                &name(n)?,
                &self.handle(newparent)?,
                &name(newname)?,
                mode,
            )
        })();
        self.changed_entry(parent, n);
        self.changed_entry(newparent, newname);
        if flags.bits() != libc::RENAME_EXCHANGE {
            self.relisted(parent, n, false, &r);
        }
        self.relisted(newparent, newname, true, &r);
        if r.is_ok() {
            if flags.bits() == libc::RENAME_EXCHANGE {
                self.nodes.unnamed(parent.0, n.as_bytes());
                self.nodes.unnamed(newparent.0, newname.as_bytes());
            } else {
                self.nodes
                    .renamed(parent.0, n.as_bytes(), newparent.0, newname.as_bytes());
            }
        }
        Self::reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut t = self.coherence.ticket();
        let r = (|| {
            self.client.link(
                &who(req),
                &self.handle(ino)?,
                &self.handle(newparent)?,
                &name(newname)?,
            )
        })();
        self.coherence.changed_by(&mut t, &[newparent.0, ino.0]);
        self.relisted(newparent, newname, true, &r);
        self.reply_entry(req, t, newparent, newname, reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: FuseOpenFlags, reply: ReplyOpen) {
        match self.do_open(req, ino, flags.0, &reply) {
            Ok((fh, f, passthrough::Io::Through(b, _))) => reply.opened_passthrough(fh, f, &b),
            Ok((fh, f, _)) => reply.opened(fh, f),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: FuseOpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = self.open_of(fh).map(|o| o.open);
        // The server may set the access time.
        self.coherence.changed(&[ino.0]);
        let mut reply = Some(reply);
        let r = (|| {
            let h = self.handle(ino)?;
            // The reply goes to the kernel straight from the ring slice.
            self.client.read_with(
                &who(req),
                &h,
                open,
                offset,
                size.min(MAX_IO),
                |data, _eof| {
                    if let Some(r) = reply.take() {
                        crate::sys::reply_from_ring(r, data);
                    }
                },
            )
        })();
        if let (Err(e), Some(reply)) = (r, reply.take()) {
            reply.error(convert::errno(e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: FuseOpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let o = self
            .opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&fh.0)
            .map(|o| {
                o.wrote = true;
                o.clone()
            });
        let t = self.coherence.ticket();
        let r = (|| {
            let h = self.handle(ino)?;
            self.client.write(
                &who(req),
                &h,
                o.as_ref().map(|o| o.open),
                offset,
                o.as_ref().is_some_and(|o| o.append),
                data,
            )
        })();
        match r {
            Ok((n, attr)) => {
                // What a `stat` after the write asks is answered from here.
                self.coherence.remember(t, ino.0, &attr);
                // What this client's own writes made of the file, recorded from the reply: a
                // close then has nothing to ask. Writes in flight at once may record an older
                // state, which only costs the cache at the next open, never stale data.
                if self.keep_cache {
                    self.nodes.seen(ino.0, (attr.mtime, attr.size));
                }
                reply.written(n)
            }
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: Fh, _lock: LockOwner, reply: ReplyEmpty) {
        // Writes reach the server before they return and the server's files have no deferred
        // close errors: a close has nothing to wait for, so it costs no round trip.
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: FuseOpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let o = self
            .opens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        if let Some(o) = o {
            // The file's state after this client's writes came with their replies; the
            // release itself is one message with no reply.
            let _ = self.client.release(&who(req), o.open);
            if let Some(p) = &self.passthrough {
                p.released(o.ino, &o.io);
                // What it wrote behind the server's back is not in what this mount kept.
                if let passthrough::Io::Through(_, true) = o.io {
                    self.coherence.changed(&[o.ino]);
                }
            }
        }
        reply.ok();
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let open = self.open_of(fh).map(|o| o.open);
        Self::reply_empty(
            reply,
            (|| {
                self.client
                    .fsync(&who(req), &self.handle(ino)?, open, datasync)
            })(),
        );
    }

    /// A directory whose listing the kernel may cache asks the server, as the caller, for its
    /// stamp: a caller the server does not let list it fails here, and is never served from
    /// the kernel's cache (see [`dirs`]). Others cost the open nothing.
    fn opendir(&self, req: &Request, ino: INodeNo, _flags: FuseOpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let h = self.handle(ino)?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            let flags = if self.dirs.cached_open(ino.0) {
                let (_, dir) = self.client.list_dir(&who(req), &h, 0, 1, false)?;
                self.dirs.opened(ino.0, fh, dirs::Stamp::of(&dir))
            } else {
                self.dirs.opened_small(fh)
            };
            Ok::<_, Errno>((Fh(fh), flags))
        })();
        match r {
            Ok((fh, flags)) => reply.opened(fh, flags),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, fh: Fh, offset: u64, mut reply: ReplyDirectory) {
        let r = self.list(req, ino, fh, offset, dirs::Want::Names, |e, _| {
            let id = match &e.entry {
                Some(x) => self.nodes.peek(&x.handle),
                None => self.nodes.peek_ino(e.ino),
            };
            reply.add(
                INodeNo(id.unwrap_or(e.ino)),
                e.cookie,
                convert::file_type(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // What the kernel is told stays valid this long from when the server read it: the
        // short times, since a listing may be older than the last notice.
        let short = self.coherence.short();
        let ttl = short.entry.min(short.attr);
        let want = dirs::Want::Attrs(ttl);
        let r = self.list(req, ino, fh, offset, want, |e, age| match &e.entry {
            Some(x) => {
                // The kernel counts a lookup for every entry it takes; one it did not take
                // (the buffer was full) is uncounted again.
                let id = self.node_of(req, x);
                self.nodes.named(id, ino.0, &e.name);
                let attr = convert::file_attr(id, &x.attr);
                let full = reply.add(
                    INodeNo(id),
                    e.cookie,
                    OsStr::from_bytes(&e.name),
                    &ttl.saturating_sub(age),
                    &attr,
                    GEN,
                );
                if full {
                    self.nodes.forget(id, 1);
                }
                full
            }
            // A name that vanished while it was listed is left out.
            None if e.name != b"." && e.name != b".." => false,
            // `.` and `..`: the kernel links neither to a node, it only lists them.
            None => {
                let attr = convert::dir_placeholder(e.ino);
                reply.add(
                    INodeNo(e.ino),
                    e.cookie,
                    OsStr::from_bytes(&e.name),
                    &Duration::ZERO,
                    &attr,
                    GEN,
                )
            }
        });
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: FuseOpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: Fh, datasync: bool, reply: ReplyEmpty) {
        Self::reply_empty(
            reply,
            (|| {
                self.client
                    .fsync(&who(req), &self.handle(ino)?, None, datasync)
            })(),
        );
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match (|| self.client.statfs(&who(req), &self.handle(ino)?))() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Forgotten before too, so that no answer from what was kept races with the change.
        self.coherence.changed(&[ino.0]);
        let r = (|| {
            let x = XattrName::new(n.as_bytes()).map_err(|e| e.errno())?;
            self.client
                .setxattr(&who(req), &self.handle(ino)?, &x, value, flags as u32)
        })();
        self.coherence.changed(&[ino.0]);
        Self::reply_empty(reply, r);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        // Known absent, while notices keep it right: the kernel's `security.capability`
        // before a write, `ls -l`'s ACL and label lookups.
        if self.coherence.is_absent(ino.0, n.as_bytes()) {
            return reply.error(fuser::Errno::from_i32(libc::ENODATA));
        }
        let t = self.coherence.ticket();
        let r = (|| {
            let x = XattrName::new(n.as_bytes()).map_err(|e| e.errno())?;
            self.client
                .getxattr(&who(req), &self.handle(ino)?, &x, size)
        })();
        if matches!(r, Err(e) if e.0 == libc::ENODATA) {
            self.coherence.remember_absent(t, ino.0, n.as_bytes());
        }
        Self::reply_xattr(reply, r);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        Self::reply_xattr(
            reply,
            (|| self.client.listxattr(&who(req), &self.handle(ino)?, size))(),
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        self.coherence.changed(&[ino.0]);
        let r = (|| {
            let x = XattrName::new(n.as_bytes()).map_err(|e| e.errno())?;
            self.client.removexattr(&who(req), &self.handle(ino)?, &x)
        })();
        self.coherence.changed(&[ino.0]);
        Self::reply_empty(reply, r);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut t = self.coherence.ticket();
        let r = (|| {
            let pf = convert::open_flags(flags);
            let (e, open, made) = self.client.create(
                &who(req),
                &self.handle(parent)?,
                &name(n)?,
                mode & 0o7777 & !umask,
                pf,
            )?;
            Ok::<_, Errno>((e, open, pf, made))
        })();
        self.relisted(parent, n, true, &r);
        match r {
            Ok((e, open, pf, made)) => {
                let id = self.node_of(req, &e);
                self.coherence.changed_by(&mut t, &[parent.0]);
                self.coherence.remember(t, id, &e.attr);
                // A new file has no capabilities: the kernel asks before its first write.
                if made {
                    self.coherence
                        .remember_absent(t, id, b"security.capability");
                }
                self.nodes.named(id, parent.0, n.as_bytes());
                self.nodes.seen(id, (e.attr.mtime, e.attr.size));
                // A create of an existing file being passed through (`O_CREAT` without
                // `O_EXCL`) passes through too.
                let io = match &self.passthrough {
                    Some(p) => p.created(id),
                    None => passthrough::Io::Cached,
                };
                let fh = self.add_open(Open {
                    open,
                    append: pf.append,
                    ino: id,
                    wrote: false,
                    io: io.clone(),
                });
                self.coherence.reply(t, |times| {
                    let (ttl, attr) = (
                        &times.entry.min(times.attr),
                        &convert::file_attr(id, &e.attr),
                    );
                    match &io {
                        passthrough::Io::Through(b, _) => {
                            reply.created_passthrough(ttl, attr, GEN, fh, FopenFlags::empty(), b)
                        }
                        passthrough::Io::Cached => {
                            reply.created(ttl, attr, GEN, fh, FopenFlags::empty())
                        }
                    }
                });
            }
            Err(e) => reply.error(convert::errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let open = self.open_of(fh).map(|o| o.open);
        let r = (|| {
            self.client.fallocate(
                &who(req),
                &self.handle(ino)?,
                open,
                mode as u32,
                offset,
                length,
            )
        })();
        self.coherence.changed(&[ino.0]);
        Self::reply_empty(reply, r);
    }
}
