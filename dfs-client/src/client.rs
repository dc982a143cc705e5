//! The client every front end uses: a pool of connections to one server, every protocol
//! operation as a typed call, reads in place, and transparent reconnection after a server
//! restart (the handles stay valid).

use std::io;
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use dfs_proto::attr::{Attr, Entry, SetAttr, StatFs};
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Body, Creds, DirPage, Op, OpenFlags, RenameMode};
use dfs_proto::name::{LinkTarget, Name, XattrName};
use dfs_proto::Errno;
use vmmc_sockets::SharedBytes;

use crate::conn::{CallError, ConnectError, ConnectOptions, Connection};

/// Most idle connections kept for reuse; a burst beyond it connects and closes.
const MAX_IDLE: usize = 16;

/// A client of one server.
#[derive(Debug)]
pub struct Client {
    addr: String,
    opts: ConnectOptions,
    root: FileHandle,
    read_only: bool,
    idle: Mutex<Vec<Connection>>,
    reconnect_for: Duration,
    /// Set when a call gave up on reaching the server: later calls try once and fail at
    /// once instead of each waiting out the timeout again (cleared by the next success).
    down: Mutex<bool>,
}

/// A value from a typed call whose reply had an unexpected shape: the server broke the
/// protocol.
fn unexpected(b: Body) -> Errno {
    let _ = b;
    Errno::EIO
}

impl Client {
    /// Connects (and authenticates) once, to fail early with a clear error.
    pub fn connect(addr: &str, opts: ConnectOptions) -> Result<Client, ConnectError> {
        let c = Connection::connect(addr, &opts)?;
        Ok(Client {
            addr: addr.to_string(),
            root: c.root().clone(),
            read_only: c.read_only(),
            reconnect_for: opts.timeout,
            opts,
            idle: Mutex::new(vec![c]),
            down: Mutex::new(false),
        })
    }

    /// The export's root directory.
    pub fn root(&self) -> &FileHandle {
        &self.root
    }

    /// Whether the server refuses every change.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// This client's session id: opens made on any of its connections belong to it.
    pub fn session(&self) -> [u8; 16] {
        self.opts.session
    }

    /// How long a call keeps trying to reach a server that is gone before it fails with
    /// `ENOTCONN` (the connect timeout by default).
    pub fn set_reconnect_for(&mut self, d: Duration) {
        self.reconnect_for = d;
    }

    /// A pooled connection, or a new one (then `true`).
    fn take(&self) -> Result<(Connection, bool), ConnectError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok((c, false)),
            None => Connection::connect(&self.addr, &self.opts).map(|c| (c, true)),
        }
    }

    fn put(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE && !c.is_broken() {
            idle.push(c);
        }
    }

    /// Runs `f` on a connection. A connection that fails is dropped; the call is repeated on
    /// a new one (the server may have restarted) when it is safe: when the request never left,
    /// or the operation is idempotent. It gives up after `reconnect_for` with `ENOTCONN`.
    pub fn with_connection<R>(
        &self,
        idempotent: bool,
        mut f: impl FnMut(&mut Connection) -> Result<R, CallError>,
    ) -> Result<R, Errno> {
        let down = *self.down.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now()
            + if down {
                Duration::ZERO
            } else {
                self.reconnect_for
            };
        let mut pause = Duration::from_millis(5);
        // Pooled connections may all be dead after a restart: the call gives up only once a
        // fresh connection failed too.
        let mut tried_fresh = false;
        loop {
            let err = match self.take() {
                Ok((mut c, fresh)) => {
                    tried_fresh |= fresh;
                    let result = f(&mut c);
                    match result {
                        Ok(r) => {
                            self.put(c);
                            if down {
                                *self.down.lock().unwrap_or_else(|p| p.into_inner()) = false;
                            }
                            return Ok(r);
                        }
                        Err(e) => {
                            // A server that broke the protocol would break it again: EIO
                            // now, not a retry until the reconnect time runs out.
                            if matches!(e, CallError::Protocol(_)) || !(e.unsent() || idempotent) {
                                return Err(e.errno());
                            }
                            e.errno()
                        }
                    }
                }
                Err(ConnectError::Io(e)) if is_transient(&e) => {
                    tried_fresh = true;
                    Errno::ENOTCONN
                }
                // Refused, not authentic, protocol: retrying does not help.
                Err(_) => return Err(Errno::EACCES),
            };
            if tried_fresh && Instant::now() >= deadline {
                *self.down.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return Err(if err == Errno(libc_etimedout()) {
                    err
                } else {
                    Errno::ENOTCONN
                });
            }
            sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Opens this session's notice channel: a connection of its own, on which the server
    /// tells what others change (see [`crate::conn::Notices`]).
    pub fn subscribe(&self) -> Result<crate::conn::Notices, CallError> {
        Connection::connect(&self.addr, &self.opts)
            .map_err(|e| match e {
                ConnectError::Io(e) => CallError::Io(e),
                e => CallError::Protocol(e.to_string()),
            })?
            .subscribe()
    }

    /// Sends `op` with `data` (a write's bytes) and returns the server's answer.
    pub fn call(&self, creds: &Creds, op: Op, data: &[u8]) -> Result<Body, Errno> {
        let idempotent = op.is_idempotent();
        self.with_connection(idempotent, |c| c.call(creds, op.clone(), data))?
            .result
    }

    fn entry(&self, creds: &Creds, op: Op) -> Result<Entry, Errno> {
        match self.call(creds, op, &[])? {
            Body::Entry(e) => Ok(e),
            b => Err(unexpected(b)),
        }
    }

    fn done(&self, creds: &Creds, op: Op) -> Result<(), Errno> {
        match self.call(creds, op, &[])? {
            Body::Done => Ok(()),
            b => Err(unexpected(b)),
        }
    }

    fn attr(&self, creds: &Creds, op: Op) -> Result<Attr, Errno> {
        match self.call(creds, op, &[])? {
            Body::Attr(a) => Ok(a),
            b => Err(unexpected(b)),
        }
    }

    /// Finds `name` in `dir`.
    pub fn lookup(&self, creds: &Creds, dir: &FileHandle, name: &Name) -> Result<Entry, Errno> {
        self.entry(
            creds,
            Op::Lookup {
                dir: dir.clone(),
                name: name.clone(),
            },
        )
    }

    /// A file's attributes (through `open` if given, which works after an unlink).
    pub fn getattr(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
    ) -> Result<Attr, Errno> {
        self.attr(
            creds,
            Op::GetAttr {
                handle: handle.clone(),
                open,
            },
        )
    }

    /// Changes attributes and returns the new ones.
    pub fn setattr(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        set: SetAttr,
    ) -> Result<Attr, Errno> {
        self.attr(
            creds,
            Op::SetAttr {
                handle: handle.clone(),
                open,
                set,
            },
        )
    }

    /// A page of `dir` from `cookie` (0 at the start).
    pub fn readdir(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        cookie: u64,
        max_entries: u32,
    ) -> Result<DirPage, Errno> {
        match self.call(
            creds,
            Op::ReadDir {
                dir: dir.clone(),
                cookie,
                max_entries,
            },
            &[],
        )? {
            Body::Dir(p) => Ok(p),
            b => Err(unexpected(b)),
        }
    }

    /// A page of `dir` from `cookie` (0 at the start) of at most `max_entries` entries, with
    /// each entry's handle and attributes if `attrs`, and the directory's own attributes as
    /// they were before the page was read.
    pub fn list_dir(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        cookie: u64,
        max_entries: u32,
        attrs: bool,
    ) -> Result<(DirPage, Attr), Errno> {
        match self.call(
            creds,
            Op::ListDir {
                dir: dir.clone(),
                cookie,
                max_entries,
                attrs,
            },
            &[],
        )? {
            Body::Listing { page, dir } => Ok((page, dir)),
            b => Err(unexpected(b)),
        }
    }

    /// Opens an existing file.
    pub fn open(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        flags: OpenFlags,
    ) -> Result<OpenId, Errno> {
        match self.call(
            creds,
            Op::Open {
                handle: handle.clone(),
                flags,
            },
            &[],
        )? {
            Body::Opened { open, .. } => Ok(open),
            b => Err(unexpected(b)),
        }
    }

    /// Creates and opens a regular file; also tells whether the file was made by this call
    /// (without `exclusive`, an existing file is opened instead).
    pub fn create(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        name: &Name,
        mode: u32,
        flags: OpenFlags,
    ) -> Result<(Entry, OpenId, bool), Errno> {
        match self.call(
            creds,
            Op::Create {
                dir: dir.clone(),
                name: name.clone(),
                mode,
                flags,
            },
            &[],
        )? {
            Body::Opened {
                open,
                entry: Some(e),
                created,
            } => Ok((e, open, created)),
            b => Err(unexpected(b)),
        }
    }

    /// Reads up to `len` bytes at `offset` and hands them to `f` in place, in the connection's
    /// receive ring (no copy on this side unless `f` makes one; the server may still write
    /// them, hence [`SharedBytes`]); `eof` says whether the file ended first.
    pub fn read_with<R>(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: u32,
        mut f: impl FnMut(SharedBytes<'_>, bool) -> R,
    ) -> Result<R, Errno> {
        self.with_connection(true, |c| {
            c.read_in_place(
                creds,
                handle.clone(),
                open,
                offset,
                len,
                |reply, data| match reply.result {
                    Ok(Body::Read { eof }) => Ok(f(data, eof)),
                    Ok(b) => Err(unexpected(b)),
                    Err(e) => Err(e),
                },
            )
        })?
    }

    /// Two reads at once, on two connections: `parts[1]` is sent before `parts[0]`'s reply
    /// is taken, so the server reads it while `f` copies out the first. `f` gets each part's
    /// index, bytes (in place) and end-of-file flag, in order; a part after one that came
    /// back short or at the end of the file is still handed over (empty, or whatever the
    /// file grew by meanwhile) for the caller to ignore. No retry: on an error the caller
    /// reads the rest with [`Client::read_with`], which retries.
    pub fn read_pair_with(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        parts: [(u64, u32); 2],
        mut f: impl FnMut(usize, SharedBytes<'_>, bool),
    ) -> Result<(), Errno> {
        let fail = |e: CallError| e.errno();
        let (mut a, _) = self.take().map_err(|_| Errno::ENOTCONN)?;
        let (mut b, _) = match self.take() {
            Ok(c) => c,
            Err(_) => {
                self.put(a);
                return Err(Errno::ENOTCONN);
            }
        };
        let ra = a.start_read(creds, handle.clone(), open, parts[0].0, parts[0].1);
        let rb = b.start_read(creds, handle.clone(), open, parts[1].0, parts[1].1);
        let mut take = |c: &mut Connection, started, i: usize| -> Result<(), Errno> {
            c.finish_read(started, |reply, data| match reply.result {
                Ok(Body::Read { eof }) => {
                    f(i, data, eof);
                    Ok(())
                }
                Ok(body) => Err(unexpected(body)),
                Err(e) => Err(e),
            })
            .map_err(fail)?
        };
        let first = match ra {
            Ok(s) => take(&mut a, s, 0),
            Err(e) => Err(fail(e)),
        };
        // The second reply is taken even after the first failed: the connection must not be
        // left with a reply nobody read.
        let second = match rb {
            Ok(s) => take(&mut b, s, 1),
            Err(e) => Err(fail(e)),
        };
        self.put(a);
        self.put(b);
        first.and(second)
    }

    /// Reads into a new vector (a copy; [`Client::read_with`] avoids it).
    pub fn read(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.read_with(creds, handle, open, offset, len, |d, _| d.to_vec())
    }

    /// Writes `data` at `offset` (at the end for an append open); returns the bytes written
    /// and the file's attributes after them.
    pub fn write(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        offset: u64,
        append: bool,
        data: &[u8],
    ) -> Result<(u32, Attr), Errno> {
        match self.call(
            creds,
            Op::Write {
                handle: handle.clone(),
                open,
                offset,
                append,
            },
            data,
        )? {
            Body::Written { len, attr } => Ok((len, attr)),
            b => Err(unexpected(b)),
        }
    }

    /// Makes a directory.
    pub fn mkdir(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        name: &Name,
        mode: u32,
    ) -> Result<Entry, Errno> {
        self.entry(
            creds,
            Op::Mkdir {
                dir: dir.clone(),
                name: name.clone(),
                mode,
            },
        )
    }

    /// Makes a regular file, FIFO or socket node.
    pub fn mknod(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        name: &Name,
        mode: u32,
        rdev: u64,
    ) -> Result<Entry, Errno> {
        self.entry(
            creds,
            Op::Mknod {
                dir: dir.clone(),
                name: name.clone(),
                mode,
                rdev,
            },
        )
    }

    /// Removes a non-directory.
    pub fn unlink(&self, creds: &Creds, dir: &FileHandle, name: &Name) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Unlink {
                dir: dir.clone(),
                name: name.clone(),
            },
        )
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, creds: &Creds, dir: &FileHandle, name: &Name) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Rmdir {
                dir: dir.clone(),
                name: name.clone(),
            },
        )
    }

    /// Renames (or exchanges) an entry.
    pub fn rename(
        &self,
        creds: &Creds,
        from_dir: &FileHandle,
        from: &Name,
        to_dir: &FileHandle,
        to: &Name,
        mode: RenameMode,
    ) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Rename {
                from_dir: from_dir.clone(),
                from: from.clone(),
                to_dir: to_dir.clone(),
                to: to.clone(),
                mode,
            },
        )
    }

    /// A new hard link to `handle` as `name` in `dir`.
    pub fn link(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        dir: &FileHandle,
        name: &Name,
    ) -> Result<Entry, Errno> {
        self.entry(
            creds,
            Op::Link {
                handle: handle.clone(),
                dir: dir.clone(),
                name: name.clone(),
            },
        )
    }

    /// A symbolic link.
    pub fn symlink(
        &self,
        creds: &Creds,
        dir: &FileHandle,
        name: &Name,
        target: &LinkTarget,
    ) -> Result<Entry, Errno> {
        self.entry(
            creds,
            Op::Symlink {
                dir: dir.clone(),
                name: name.clone(),
                target: target.clone(),
            },
        )
    }

    /// A symbolic link's target.
    pub fn readlink(&self, creds: &Creds, handle: &FileHandle) -> Result<LinkTarget, Errno> {
        match self.call(
            creds,
            Op::ReadLink {
                handle: handle.clone(),
            },
            &[],
        )? {
            Body::Target(t) => Ok(t),
            b => Err(unexpected(b)),
        }
    }

    /// File system statistics.
    pub fn statfs(&self, creds: &Creds, handle: &FileHandle) -> Result<StatFs, Errno> {
        match self.call(
            creds,
            Op::StatFs {
                handle: handle.clone(),
            },
            &[],
        )? {
            Body::StatFs(s) => Ok(s),
            b => Err(unexpected(b)),
        }
    }

    /// Flushes a file to stable storage.
    pub fn fsync(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        datasync: bool,
    ) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Fsync {
                handle: handle.clone(),
                open,
                datasync,
            },
        )
    }

    /// Reports deferred errors of a close.
    pub fn flush(&self, creds: &Creds, handle: &FileHandle, open: OpenId) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Flush {
                handle: handle.clone(),
                open,
            },
        )
    }

    /// Forgets an open.
    pub fn release(&self, creds: &Creds, open: OpenId) -> Result<(), Errno> {
        // Nothing waits on a close: one message, no reply, no round trip. The connection
        // that carries it serves its next request only after it, so the open is gone for
        // anything that follows on it.
        self.with_connection(false, |c| c.send_only(creds, Op::Release { open }))
    }

    /// Allocates, punches or zeroes a range.
    pub fn fallocate(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        open: Option<OpenId>,
        mode: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), Errno> {
        self.done(
            creds,
            Op::Fallocate {
                handle: handle.clone(),
                open,
                mode,
                offset,
                len,
            },
        )
    }

    /// An xattr's value (or its size for `size` 0).
    pub fn getxattr(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        name: &XattrName,
        size: u32,
    ) -> Result<Body, Errno> {
        self.call(
            creds,
            Op::GetXattr {
                handle: handle.clone(),
                name: name.clone(),
                size,
            },
            &[],
        )
    }

    /// Sets an xattr.
    pub fn setxattr(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        name: &XattrName,
        value: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        self.done(
            creds,
            Op::SetXattr {
                handle: handle.clone(),
                name: name.clone(),
                value: value.to_vec(),
                flags,
            },
        )
    }

    /// The xattr names (or the list's size for `size` 0).
    pub fn listxattr(&self, creds: &Creds, handle: &FileHandle, size: u32) -> Result<Body, Errno> {
        self.call(
            creds,
            Op::ListXattr {
                handle: handle.clone(),
                size,
            },
            &[],
        )
    }

    /// Removes an xattr.
    pub fn removexattr(
        &self,
        creds: &Creds,
        handle: &FileHandle,
        name: &XattrName,
    ) -> Result<(), Errno> {
        self.done(
            creds,
            Op::RemoveXattr {
                handle: handle.clone(),
                name: name.clone(),
            },
        )
    }

    /// The server process's transfer counters (for copies-per-byte figures).
    pub fn server_stats(&self) -> Result<dfs_proto::msg::TransferStats, Errno> {
        match self.call(&crate::current_creds(), Op::Stats, &[])? {
            Body::Stats(s) => Ok(s),
            b => Err(unexpected(b)),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotFound
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    )
}

fn libc_etimedout() -> i32 {
    110
}
