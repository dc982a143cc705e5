//! The FUSE ceiling: a file system that keeps everything in memory and does the least a FUSE
//! file system can, mounted with the same options as the DFS. Whatever the DFS loses against
//! it is the DFS's own cost; whatever both lose against the local file system is FUSE's.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may cache attributes and names of [`MemFs::default`].
const TTL: Duration = Duration::from_secs(1);

struct Node {
    attr: FileAttr,
    data: Vec<u8>,
    children: HashMap<OsString, u64>,
}

struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
}

/// The in-memory file system.
pub struct MemFs {
    state: RwLock<State>,
    /// How long the kernel may cache what it answers (attributes and names).
    ttl: Duration,
}

impl std::fmt::Debug for MemFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemFs")
    }
}

fn attr(ino: u64, kind: FileType, perm: u16) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink: 1,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Default for MemFs {
    /// An empty file system whose attributes and names the kernel caches for 1 s.
    fn default() -> MemFs {
        MemFs::with_ttl(TTL)
    }
}

impl MemFs {
    /// An empty file system whose attributes and names the kernel may cache for `ttl` (zero:
    /// every `stat` asks it again, the FUSE floor of an uncached `stat`).
    pub fn with_ttl(ttl: Duration) -> MemFs {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node {
                attr: attr(1, FileType::Directory, 0o777),
                data: Vec::new(),
                children: HashMap::new(),
            },
        );
        MemFs {
            state: RwLock::new(State { nodes, next: 2 }),
            ttl,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, fuser::Errno> {
        let mut s = self.write();
        let ino = s.next;
        let dir = s.nodes.get_mut(&parent.0).ok_or(fuser::Errno::ENOENT)?;
        if dir.children.contains_key(name) {
            return Err(fuser::Errno::EEXIST);
        }
        dir.children.insert(name.to_owned(), ino);
        s.next += 1;
        let a = attr(ino, kind, (mode & 0o7777) as u16);
        s.nodes.insert(
            ino,
            Node {
                attr: a,
                data: Vec::new(),
                children: HashMap::new(),
            },
        );
        Ok(a)
    }
}

impl Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(crate::fuse::MAX_IO);
        let _ = config.set_max_readahead(crate::fuse::MAX_IO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = self.read();
        match s
            .nodes
            .get(&parent.0)
            .and_then(|d| d.children.get(name))
            .and_then(|i| s.nodes.get(i))
        {
            Some(n) => reply.entry(&self.ttl, &n.attr, Generation(0)),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.read().nodes.get(&ino.0) {
            Some(n) => reply.attr(&self.ttl, &n.attr),
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.write();
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(fuser::Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.attr.perm = (m & 0o7777) as u16;
        }
        if let Some(sz) = size {
            n.data.resize(sz as usize, 0);
            n.attr.size = sz;
        }
        reply.attr(&self.ttl, &n.attr);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(parent, name, FileType::Directory, mode) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, FileType::RegularFile, mode) {
            Ok(a) => reply.created(
                &self.ttl,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.write();
        match s
            .nodes
            .get_mut(&parent.0)
            .and_then(|d| d.children.remove(name))
        {
            Some(ino) => {
                s.nodes.remove(&ino);
                reply.ok()
            }
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink(req, parent, name, reply)
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.read();
        match s.nodes.get(&ino.0) {
            Some(n) => {
                let start = (offset as usize).min(n.data.len());
                let end = (start + size as usize).min(n.data.len());
                reply.data(&n.data[start..end]);
            }
            None => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.write();
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(fuser::Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        n.attr.size = n.data.len() as u64;
        reply.written(data.len() as u32);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(fuser::Errno::ENODATA);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.read();
        let Some(d) = s.nodes.get(&ino.0) else {
            return reply.error(fuser::Errno::ENOENT);
        };
        let mut names: Vec<(&OsString, &u64)> = d.children.iter().collect();
        names.sort();
        for (i, (name, child)) in names.into_iter().enumerate().skip(offset as usize) {
            let kind = s
                .nodes
                .get(child)
                .map_or(FileType::RegularFile, |n| n.attr.kind);
            if reply.add(INodeNo(*child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
