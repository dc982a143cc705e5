//! Win32 file semantics over [`dfs_client::Client`], with no operating system in them.
//!
//! The Windows face (`windows`) hooks kernel32's file functions and hands the calls whose
//! paths are the DFS's to this module, which answers as a local NTFS drive would: the
//! dispositions of `CreateFileW`, share modes between the process's own handles, delete on
//! close, the error codes `GetLastError` returns. It knows nothing of `HANDLE`s: the face maps
//! its placeholder handles to the [`WinFile`]s made here. Being free of Windows, all of it
//! runs and is tested on Linux against a real server; only the thin hook layer needs Wine.
//!
//! Share modes are enforced among the handles of one process (a `WinFile` is the open file
//! object all duplicates of a handle share). The server has no notion of them, so two
//! processes on the DFS do not see each other's share modes: the README says so.

pub mod consts;
pub mod env;
pub mod handles;
pub mod path;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dfs_client::{Client, ConnectOptions};
use dfs_proto::attr::{Attr, Entry, FileKind, SetAttr, SetTime, Timestamp};
use dfs_proto::auth::Secret;
use dfs_proto::frame::MAX_DATA;
use dfs_proto::handle::{FileHandle, OpenId};
use dfs_proto::msg::{Creds, OpenFlags, RenameMode};
use dfs_proto::name::Name;
use dfs_proto::Errno;

use consts::*;
pub use path::Prefix;

/// A Win32 error code (what `GetLastError` returns).
pub type WinError = u32;
/// The result of a Win32 call: its value, or the code for `SetLastError`.
pub type WinResult<T> = Result<T, WinError>;

/// Most symbolic links one path may pass through (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;
/// Entries asked for per listing page.
const PAGE: u32 = 1024;
/// Seconds from 1601-01-01 (Win32's epoch) to 1970-01-01.
const EPOCH_DIFF: i64 = 11_644_473_600;

/// Where the DFS is and who the program is on it.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server's address (`tcp:HOST:PORT`, or `shm:NAME` where the stack has shm).
    pub addr: String,
    /// The paths that are the DFS's.
    pub prefix: Prefix,
    /// The server's shared secret, read from the file the user named.
    pub secret: Option<Secret>,
    /// The user and group the program acts as (believed by a server only from a client that
    /// proved the secret; others are squashed).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// How long a call waits for the server, also across its restart; then it fails.
    pub timeout: std::time::Duration,
}

/// What a file looks like to Win32 (`BY_HANDLE_FILE_INFORMATION`, `WIN32_FIND_DATAW` and the
/// `FILE_*_INFO` classes are all made from it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// `FILE_ATTRIBUTE_*`.
    pub attributes: u32,
    /// Creation time, in 100 ns since 1601 (the server's ctime: POSIX keeps no birth time).
    pub creation: u64,
    /// Last access, as above.
    pub access: u64,
    /// Last write, as above.
    pub write: u64,
    /// Last change of the inode, as above.
    pub change: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bytes allocated.
    pub allocation: u64,
    /// Hard links.
    pub links: u32,
    /// The file's index (the server's inode number).
    pub index: u64,
    /// Whether it is a directory.
    pub directory: bool,
    /// Whether it is to be deleted when its last handle closes.
    pub delete_pending: bool,
}

/// One name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindEntry {
    /// The name.
    pub name: String,
    /// Its attributes.
    pub info: FileInfo,
}

/// A `FindFirstFileW` search: the matching names, listed when it starts.
#[derive(Debug)]
pub struct Find {
    entries: Vec<FindEntry>,
    next: usize,
}

impl Find {
    /// The next entry, or `ERROR_NO_MORE_FILES`.
    pub fn next_entry(&mut self) -> WinResult<FindEntry> {
        let e = self.entries.get(self.next).cloned();
        self.next += 1;
        e.ok_or(ERROR_NO_MORE_FILES)
    }
}

/// The parameters of `CreateFileW` that decide what it does.
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateParams {
    /// `dwDesiredAccess`.
    pub access: u32,
    /// `dwShareMode`.
    pub share: u32,
    /// `dwCreationDisposition`.
    pub disposition: u32,
    /// `dwFlagsAndAttributes`.
    pub flags: u32,
}

/// What `CreateFileW` made.
#[derive(Debug)]
pub struct Created {
    /// The open file.
    pub file: Arc<WinFile>,
    /// What `GetLastError` says after a success: `ERROR_ALREADY_EXISTS` where
    /// `CREATE_ALWAYS` or `OPEN_ALWAYS` found the file, else `ERROR_SUCCESS`.
    pub last_error: WinError,
}

/// The accesses that take part in share-mode checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Access {
    read: bool,
    write: bool,
    append: bool,
    delete: bool,
}

impl Access {
    fn from_mask(mask: u32) -> Access {
        let all = mask & (GENERIC_ALL | MAXIMUM_ALLOWED) != 0;
        Access {
            read: all || mask & (GENERIC_READ | GENERIC_EXECUTE | FILE_READ_DATA) != 0,
            write: all || mask & (GENERIC_WRITE | FILE_WRITE_DATA) != 0,
            append: all || mask & (GENERIC_WRITE | FILE_APPEND_DATA) != 0,
            delete: all || mask & DELETE != 0,
        }
    }

    /// Whether an open with this access and `share` may coexist with `other`'s.
    fn compatible(self, share: u32, other: Access, other_share: u32) -> bool {
        let wants = |a: Access, s: u32| {
            (!a.read || s & FILE_SHARE_READ != 0)
                && (!(a.write || a.append) || s & FILE_SHARE_WRITE != 0)
                && (!a.delete || s & FILE_SHARE_DELETE != 0)
        };
        wants(self, other_share) && wants(other, share)
    }
}

/// A live open of a file, for share-mode checks: (file id, access, share mode).
type Live = (u64, Access, u32);

/// An open file object: what every duplicate of one handle shares (position, delete-on-close).
#[derive(Debug)]
pub struct WinFile {
    fs: Arc<Shared>,
    id: u64,
    handle: FileHandle,
    ino: u64,
    open: Option<OpenId>,
    directory: bool,
    access: Access,
    write_through: bool,
    delete_on_close: AtomicBool,
    /// The file's directory and name, for delete on close and renames by handle.
    place: Mutex<(FileHandle, Name, Vec<String>)>,
    pos: Mutex<u64>,
    /// A listing by handle (`FileIdBothDirectoryInfo`), as far as it was read.
    listing: Mutex<Option<Find>>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    creds: Creds,
    prefix: Prefix,
    root: Entry,
    /// Per inode, the live opens of this process.
    opens: Mutex<HashMap<u64, Vec<Live>>>,
    next_id: AtomicU64,
}

/// The DFS as Win32 sees it.
#[derive(Clone, Debug)]
pub struct Win32Fs {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Win32 code for a failure the server reported.
pub fn win_error(e: Errno) -> WinError {
    crate::errno::win32(e)
}

/// `t` in 100 ns since 1601 (0 for times before 1601).
pub fn filetime(t: Timestamp) -> u64 {
    let secs = t.secs.saturating_add(EPOCH_DIFF);
    if secs < 0 {
        return 0;
    }
    (secs as u64)
        .saturating_mul(10_000_000)
        .saturating_add(u64::from(t.nanos / 100))
}

/// The timestamp of a Win32 `FILETIME` value.
pub fn from_filetime(ft: u64) -> Timestamp {
    Timestamp {
        secs: (ft / 10_000_000) as i64 - EPOCH_DIFF,
        nanos: ((ft % 10_000_000) * 100) as u32,
    }
}

/// The attributes Wine gives the same file on a Unix drive: directories are
/// `DIRECTORY`, files `ARCHIVE`, `READONLY` where no one may write, `HIDDEN` for dot files.
fn attributes(attr: &Attr, name: &str) -> u32 {
    let mut a = match attr.kind() {
        FileKind::Directory => FILE_ATTRIBUTE_DIRECTORY,
        _ => FILE_ATTRIBUTE_ARCHIVE,
    };
    if attr.kind() != FileKind::Directory && attr.mode & 0o222 == 0 {
        a |= FILE_ATTRIBUTE_READONLY;
    }
    if name.starts_with('.') && name != "." && name != ".." {
        a |= FILE_ATTRIBUTE_HIDDEN;
    }
    a
}

fn info_of(attr: &Attr, name: &str, delete_pending: bool) -> FileInfo {
    FileInfo {
        attributes: attributes(attr, name),
        creation: filetime(attr.ctime),
        access: filetime(attr.atime),
        write: filetime(attr.mtime),
        change: filetime(attr.ctime),
        size: if attr.kind() == FileKind::Directory {
            0
        } else {
            attr.size
        },
        allocation: attr.blocks.saturating_mul(512),
        links: attr.nlink.min(u64::from(u32::MAX)) as u32,
        index: attr.ino,
        directory: attr.kind() == FileKind::Directory,
        delete_pending,
    }
}

fn name(s: &str) -> WinResult<Name> {
    Name::new(s.as_bytes()).map_err(|_| path::ERROR_INVALID_NAME)
}

/// Where a path leads: its directory, its last name, and what that name is (if anything).
struct Place {
    parent: Entry,
    /// `None` for the prefix's root.
    last: Option<(String, Name)>,
    node: Result<Entry, Errno>,
    /// The components of the path, links resolved.
    comps: Vec<String>,
}

impl Win32Fs {
    /// Connects to the server (once, to fail early with a clear message).
    pub fn connect(cfg: &Config) -> Result<Win32Fs, String> {
        let mut opts = ConnectOptions::new().map_err(|e| e.to_string())?;
        opts.secret = cfg.secret.clone();
        opts.timeout = cfg.timeout;
        let mut client = Client::connect(&cfg.addr, opts)
            .map_err(|e| format!("cannot connect to {}: {e}", cfg.addr))?;
        client.set_reconnect_for(cfg.timeout);
        let creds = Creds {
            uid: cfg.uid,
            gid: cfg.gid,
            groups: Vec::new(),
        };
        let root_handle = client.root().clone();
        let attr = client
            .getattr(&creds, &root_handle, None)
            .map_err(|e| format!("the export's root at {}: {e}", cfg.addr))?;
        Ok(Win32Fs {
            shared: Arc::new(Shared {
                client,
                creds,
                prefix: cfg.prefix.clone(),
                root: Entry {
                    handle: root_handle,
                    attr,
                },
                opens: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The components below the prefix if `path` is the DFS's (`None`: the system's path).
    pub fn route(&self, path: &[u16]) -> Option<WinResult<Vec<String>>> {
        self.shared.prefix.components(path)
    }

    /// The prefix these paths are under.
    pub fn prefix(&self) -> &Prefix {
        &self.shared.prefix
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn creds(&self) -> &Creds {
        &self.shared.creds
    }

    /// Walks `comps` from the root, following symbolic links (the last one too if
    /// `follow_last`). A missing or non-directory component on the way is
    /// `ERROR_PATH_NOT_FOUND`, as on a local drive.
    fn place(&self, comps: &[String], follow_last: bool) -> WinResult<Place> {
        let c = self.client();
        let mut todo: Vec<String> = comps.iter().rev().cloned().collect();
        let mut stack: Vec<(String, Entry)> = Vec::new();
        let mut links = 0;
        loop {
            let parent = stack
                .last()
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| self.shared.root.clone());
            let Some(next) = todo.pop() else {
                // The path ends at a directory reached on the way (or the root).
                let comps: Vec<String> = stack.iter().map(|(n, _)| n.clone()).collect();
                return Ok(match stack.pop() {
                    None => Place {
                        parent: self.shared.root.clone(),
                        last: None,
                        node: Ok(self.shared.root.clone()),
                        comps,
                    },
                    Some((n, e)) => Place {
                        parent: stack
                            .last()
                            .map(|(_, e)| e.clone())
                            .unwrap_or_else(|| self.shared.root.clone()),
                        last: Some((n.clone(), name(&n)?)),
                        node: Ok(e),
                        comps,
                    },
                });
            };
            if next == ".." {
                stack.pop();
                continue;
            }
            let nm = name(&next)?;
            let is_last = todo.is_empty();
            match c.lookup(self.creds(), &parent.handle, &nm) {
                Ok(e) if e.attr.kind() == FileKind::Symlink && (!is_last || follow_last) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(win_error(Errno(40)));
                    }
                    let target = c.readlink(self.creds(), &e.handle).map_err(win_error)?;
                    let t = String::from_utf8_lossy(target.as_bytes()).into_owned();
                    if t.starts_with('/') {
                        // A link out of the export names a file of the server's host.
                        return Err(ERROR_PATH_NOT_FOUND);
                    }
                    for part in t.split('/').rev() {
                        if !part.is_empty() && part != "." {
                            todo.push(part.to_string());
                        }
                    }
                }
                Ok(e) if is_last => {
                    let mut comps: Vec<String> = stack.iter().map(|(n, _)| n.clone()).collect();
                    comps.push(next.clone());
                    return Ok(Place {
                        parent,
                        last: Some((next, nm)),
                        node: Ok(e),
                        comps,
                    });
                }
                Ok(e) if e.attr.kind() == FileKind::Directory => stack.push((next, e)),
                Ok(_) => return Err(ERROR_PATH_NOT_FOUND),
                Err(err) if is_last => {
                    let mut comps: Vec<String> = stack.iter().map(|(n, _)| n.clone()).collect();
                    comps.push(next.clone());
                    return Ok(Place {
                        parent,
                        last: Some((next, nm)),
                        node: Err(err),
                        comps,
                    });
                }
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Err(ERROR_PATH_NOT_FOUND),
                Err(e) => return Err(win_error(e)),
            }
        }
    }

    /// The share-mode check and registration of a new open of `ino`.
    fn admit(&self, ino: u64, access: Access, share: u32) -> WinResult<u64> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if access == Access::default() {
            // Attributes only: share modes neither apply to it nor count against others.
            return Ok(id);
        }
        let mut opens = lock(&self.shared.opens);
        let list = opens.entry(ino).or_default();
        if list
            .iter()
            .any(|&(_, a, s)| !access.compatible(share, a, s))
        {
            return Err(ERROR_SHARING_VIOLATION);
        }
        list.push((id, access, share));
        Ok(id)
    }

    /// Whether `ino` may be deleted or renamed now: only if every open of it shares delete.
    fn deletable(&self, ino: u64) -> WinResult<()> {
        let opens = lock(&self.shared.opens);
        match opens.get(&ino) {
            Some(l) if l.iter().any(|&(_, _, s)| s & FILE_SHARE_DELETE == 0) => {
                Err(ERROR_SHARING_VIOLATION)
            }
            _ => Ok(()),
        }
    }

    /// `CreateFileW` of a DFS path.
    pub fn create_file(&self, comps: &[String], p: CreateParams) -> WinResult<Created> {
        if p.flags & FILE_FLAG_OVERLAPPED != 0 {
            // Overlapped I/O would need completion ports on the placeholder: not served.
            return Err(ERROR_NOT_SUPPORTED);
        }
        if !(CREATE_NEW..=TRUNCATE_EXISTING).contains(&p.disposition) {
            return Err(ERROR_INVALID_PARAMETER);
        }
        let mut access = Access::from_mask(p.access);
        if p.flags & FILE_FLAG_DELETE_ON_CLOSE != 0 {
            access.delete = true;
        }
        let follow = p.flags & FILE_FLAG_OPEN_REPARSE_POINT == 0;
        let place = self.place(comps, follow)?;
        let existed = place.node.is_ok();
        let (entry, open) = match place.node {
            Ok(e) => {
                if p.disposition == CREATE_NEW {
                    return Err(ERROR_FILE_EXISTS);
                }
                let dir = e.attr.kind() == FileKind::Directory;
                if dir {
                    if p.flags & FILE_FLAG_BACKUP_SEMANTICS == 0
                        || matches!(p.disposition, CREATE_ALWAYS | TRUNCATE_EXISTING)
                    {
                        return Err(ERROR_ACCESS_DENIED);
                    }
                    (e, None)
                } else {
                    // TRUNCATE_EXISTING empties the file whatever the access asked for (as
                    // NtCreateFile's FILE_OVERWRITE does; Wine too), and the handle still
                    // has only that access.
                    let truncate = matches!(p.disposition, CREATE_ALWAYS | TRUNCATE_EXISTING);
                    // The read-only attribute refuses writers, an administrator's too.
                    if (access.write || access.append || truncate || access.delete)
                        && e.attr.mode & 0o222 == 0
                    {
                        return Err(ERROR_ACCESS_DENIED);
                    }
                    let want_data = access.read || access.write || access.append || truncate;
                    let open = if want_data {
                        let flags = OpenFlags {
                            read: access.read,
                            write: access.write || access.append || truncate,
                            // FILE_APPEND_DATA without FILE_WRITE_DATA: every write goes to
                            // the end, whatever offset it names.
                            append: access.append && !access.write,
                            truncate,
                            sync: p.flags & FILE_FLAG_WRITE_THROUGH != 0,
                            ..OpenFlags::default()
                        };
                        let flags = OpenFlags {
                            read: flags.read || !flags.write,
                            ..flags
                        };
                        Some(
                            self.client()
                                .open(self.creds(), &e.handle, flags)
                                .map_err(win_error)?,
                        )
                    } else {
                        None
                    };
                    (e, open)
                }
            }
            Err(Errno::ENOENT) => {
                if matches!(p.disposition, OPEN_EXISTING | TRUNCATE_EXISTING) {
                    return Err(ERROR_FILE_NOT_FOUND);
                }
                let Some((_, nm)) = &place.last else {
                    return Err(ERROR_ACCESS_DENIED);
                };
                let mode = if p.flags & FILE_ATTRIBUTE_READONLY != 0 {
                    0o444
                } else {
                    0o644
                };
                let flags = OpenFlags {
                    read: access.read || !(access.write || access.append),
                    write: access.write || access.append,
                    append: access.append && !access.write,
                    exclusive: true,
                    sync: p.flags & FILE_FLAG_WRITE_THROUGH != 0,
                    ..OpenFlags::default()
                };
                match self
                    .client()
                    .create(self.creds(), &place.parent.handle, nm, mode, flags)
                {
                    Ok((e, open, _)) => (e, Some(open)),
                    // Made by someone else meanwhile: answer as if it had been there.
                    Err(Errno::EEXIST) if p.disposition != CREATE_NEW => {
                        return self.create_file(comps, p);
                    }
                    Err(Errno::EEXIST) => return Err(ERROR_FILE_EXISTS),
                    Err(e) => return Err(win_error(e)),
                }
            }
            Err(e) => return Err(win_error(e)),
        };
        let id = match self.admit(entry.attr.ino, access, p.share) {
            Ok(id) => id,
            Err(e) => {
                if let Some(o) = open {
                    let _ = self.client().release(self.creds(), o);
                }
                return Err(e);
            }
        };
        let (place_dir, place_name) = match place.last {
            Some((_, nm)) => (place.parent.handle.clone(), nm),
            None => (self.shared.root.handle.clone(), name("_")?),
        };
        let file = Arc::new(WinFile {
            fs: self.shared.clone(),
            id,
            handle: entry.handle.clone(),
            ino: entry.attr.ino,
            open,
            directory: entry.attr.kind() == FileKind::Directory,
            access,
            write_through: p.flags & FILE_FLAG_WRITE_THROUGH != 0,
            delete_on_close: AtomicBool::new(p.flags & FILE_FLAG_DELETE_ON_CLOSE != 0),
            place: Mutex::new((place_dir, place_name, place.comps)),
            pos: Mutex::new(0),
            listing: Mutex::new(None),
        });
        let last_error = if existed && matches!(p.disposition, CREATE_ALWAYS | OPEN_ALWAYS) {
            ERROR_ALREADY_EXISTS
        } else {
            ERROR_SUCCESS
        };
        Ok(Created { file, last_error })
    }

    /// `ReadFile`: into `buf` at `at` (the overlapped offset) or at the file pointer, which
    /// moves past what was read either way. 0 bytes at the end of the file is a success.
    pub fn read(&self, f: &WinFile, buf: &mut [u8], at: Option<u64>) -> WinResult<usize> {
        if f.directory {
            return Err(ERROR_INVALID_FUNCTION);
        }
        if !f.access.read {
            return Err(ERROR_ACCESS_DENIED);
        }
        let mut pos = lock(&f.pos);
        let start = at.unwrap_or(*pos);
        let mut done = 0usize;
        while done < buf.len() {
            let want = (buf.len() - done).min(MAX_DATA) as u32;
            let off = start + done as u64;
            let into = &mut buf[done..];
            let r = self.client().read_with(
                self.creds(),
                &f.handle,
                f.open,
                off,
                want,
                // The one copy: from the connection's ring into the caller's buffer.
                |data, eof| (data.copy_to(into), eof),
            );
            match r {
                Ok((n, eof)) => {
                    done += n;
                    if eof || n < want as usize {
                        break;
                    }
                }
                Err(_) if done > 0 => break,
                Err(e) => return Err(win_error(e)),
            }
        }
        *pos = start + done as u64;
        Ok(done)
    }

    /// `WriteFile`: `data` at `at` or at the file pointer (at the end for an append-only
    /// handle); the pointer moves past it.
    pub fn write(&self, f: &WinFile, data: &[u8], at: Option<u64>) -> WinResult<usize> {
        if f.directory {
            return Err(ERROR_INVALID_FUNCTION);
        }
        if !(f.access.write || f.access.append) {
            return Err(ERROR_ACCESS_DENIED);
        }
        let append = f.access.append && !f.access.write && at.is_none();
        let mut pos = lock(&f.pos);
        let start = at.unwrap_or(*pos);
        let mut done = 0usize;
        let mut end = start;
        while done < data.len() || data.is_empty() {
            let n = (data.len() - done).min(MAX_DATA);
            let r = self.client().write(
                self.creds(),
                &f.handle,
                f.open,
                start + done as u64,
                append,
                &data[done..done + n],
            );
            let (wrote, attr) = match r {
                Ok(v) => v,
                // What was written before the failure counts, as with the system call.
                Err(_) if done > 0 => break,
                Err(e) => return Err(win_error(e)),
            };
            done += wrote as usize;
            end = if append {
                attr.size
            } else {
                start + done as u64
            };
            if data.is_empty() || wrote == 0 {
                break;
            }
        }
        if f.write_through {
            self.client()
                .fsync(self.creds(), &f.handle, f.open, true)
                .map_err(win_error)?;
        }
        *pos = end;
        Ok(done)
    }

    /// `SetFilePointerEx`: the new position.
    pub fn seek(&self, f: &WinFile, distance: i64, method: u32) -> WinResult<u64> {
        let mut pos = lock(&f.pos);
        let base = match method {
            FILE_BEGIN => 0i128,
            FILE_CURRENT => i128::from(*pos),
            FILE_END => i128::from(self.attr(f)?.size),
            _ => return Err(ERROR_INVALID_PARAMETER),
        };
        let new = base + i128::from(distance);
        if new < 0 {
            return Err(ERROR_NEGATIVE_SEEK);
        }
        let new = u64::try_from(new).map_err(|_| ERROR_INVALID_PARAMETER)?;
        *pos = new;
        Ok(new)
    }

    fn attr(&self, f: &WinFile) -> WinResult<Attr> {
        self.client()
            .getattr(self.creds(), &f.handle, f.open)
            .map_err(win_error)
    }

    /// `GetFileInformationByHandle` and friends.
    pub fn info(&self, f: &WinFile) -> WinResult<FileInfo> {
        let a = self.attr(f)?;
        let name = lock(&f.place).2.last().cloned().unwrap_or_default();
        Ok(info_of(
            &a,
            &name,
            f.delete_on_close.load(Ordering::Relaxed),
        ))
    }

    /// The file's path below the prefix (for `GetFinalPathNameByHandleW`).
    pub fn path_of(&self, f: &WinFile) -> Vec<String> {
        lock(&f.place).2.clone()
    }

    /// `SetEndOfFile`: the size becomes the file pointer.
    pub fn set_end_of_file(&self, f: &WinFile) -> WinResult<()> {
        let pos = *lock(&f.pos);
        self.set_size(f, pos)
    }

    /// `FileEndOfFileInfo`: the size becomes `size`.
    pub fn set_size(&self, f: &WinFile, size: u64) -> WinResult<()> {
        if f.directory {
            return Err(ERROR_INVALID_PARAMETER);
        }
        if !f.access.write {
            return Err(ERROR_ACCESS_DENIED);
        }
        let set = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.client()
            .setattr(self.creds(), &f.handle, f.open, set)
            .map(drop)
            .map_err(win_error)
    }

    /// `SetFileTime` and `FileBasicInfo`: the times given (0 leaves one alone).
    pub fn set_times(&self, f: &WinFile, access: u64, write: u64) -> WinResult<()> {
        let at = |t: u64| (t != 0 && t != u64::MAX).then(|| SetTime::At(from_filetime(t)));
        let set = SetAttr {
            atime: at(access),
            mtime: at(write),
            ..SetAttr::default()
        };
        if set.atime.is_none() && set.mtime.is_none() {
            return Ok(());
        }
        self.client()
            .setattr(self.creds(), &f.handle, f.open, set)
            .map(drop)
            .map_err(win_error)
    }

    /// `FlushFileBuffers`.
    pub fn flush(&self, f: &WinFile) -> WinResult<()> {
        if f.directory {
            return Ok(());
        }
        self.client()
            .fsync(self.creds(), &f.handle, f.open, false)
            .map_err(win_error)
    }

    /// `FileDispositionInfo`: delete (or not) when the last handle closes; `posix` (the
    /// `FILE_DISPOSITION_POSIX_SEMANTICS` flag) removes the name at once.
    pub fn set_delete(&self, f: &WinFile, delete: bool, posix: bool) -> WinResult<()> {
        if delete {
            if !f.access.delete {
                return Err(ERROR_ACCESS_DENIED);
            }
            let a = self.attr(f)?;
            if !f.directory && a.mode & 0o222 == 0 {
                return Err(ERROR_ACCESS_DENIED);
            }
            if f.directory && !self.dir_is_empty(&f.handle)? {
                return Err(ERROR_DIR_NOT_EMPTY);
            }
        }
        if delete && posix {
            f.remove_name().map_err(win_error)?;
            return Ok(());
        }
        f.delete_on_close.store(delete, Ordering::Relaxed);
        Ok(())
    }

    fn dir_is_empty(&self, dir: &FileHandle) -> WinResult<bool> {
        let page = self
            .client()
            .readdir(self.creds(), dir, 0, 3)
            .map_err(win_error)?;
        Ok(page
            .entries
            .iter()
            .all(|e| e.name == b"." || e.name == b".."))
    }

    /// `FileRenameInfo`: renames the handle's file to `to` (components below the prefix).
    pub fn rename_handle(&self, f: &WinFile, to: &[String], replace: bool) -> WinResult<()> {
        if !f.access.delete {
            return Err(ERROR_ACCESS_DENIED);
        }
        let (dir, nm) = {
            let p = lock(&f.place);
            (p.0.clone(), p.1.clone())
        };
        let target = self.place(to, false)?;
        let (_, to_name) = target.last.clone().ok_or(ERROR_ACCESS_DENIED)?;
        self.rename_checked(&dir, &nm, f.ino, &target, &to_name, replace)?;
        *lock(&f.place) = (target.parent.handle.clone(), to_name, target.comps);
        Ok(())
    }

    fn rename_checked(
        &self,
        from_dir: &FileHandle,
        from: &Name,
        from_ino: u64,
        target: &Place,
        to: &Name,
        replace: bool,
    ) -> WinResult<()> {
        if let Ok(existing) = &target.node {
            if existing.attr.ino == from_ino {
                return Ok(());
            }
            if !replace {
                return Err(ERROR_ALREADY_EXISTS);
            }
            if existing.attr.kind() == FileKind::Directory {
                return Err(ERROR_ACCESS_DENIED);
            }
            self.deletable(existing.attr.ino)?;
        }
        let mode = if replace {
            RenameMode::Replace
        } else {
            RenameMode::NoReplace
        };
        self.client()
            .rename(
                self.creds(),
                from_dir,
                from,
                &target.parent.handle,
                to,
                mode,
            )
            .map_err(|e| match e {
                Errno::EEXIST => ERROR_ALREADY_EXISTS,
                e => win_error(e),
            })
    }

    /// `GetFileAttributesExW`.
    pub fn attributes(&self, comps: &[String]) -> WinResult<FileInfo> {
        let place = self.place(comps, true)?;
        let e = place.node.map_err(|e| match e {
            Errno::ENOENT => ERROR_FILE_NOT_FOUND,
            e => win_error(e),
        })?;
        let name = place.last.map(|(n, _)| n).unwrap_or_default();
        Ok(info_of(&e.attr, &name, false))
    }

    /// `SetFileAttributesW`: only `READONLY` means something here (the write bits).
    pub fn set_attributes(&self, comps: &[String], attrs: u32) -> WinResult<()> {
        let place = self.place(comps, true)?;
        let e = place.node.map_err(|e| match e {
            Errno::ENOENT => ERROR_FILE_NOT_FOUND,
            e => win_error(e),
        })?;
        if e.attr.kind() == FileKind::Directory {
            return Ok(());
        }
        let perm = e.attr.mode & 0o7777;
        let mode = if attrs & FILE_ATTRIBUTE_READONLY != 0 {
            perm & !0o222
        } else if perm & 0o222 == 0 {
            perm | 0o200
        } else {
            perm
        };
        if mode == perm {
            return Ok(());
        }
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        self.client()
            .setattr(self.creds(), &e.handle, None, set)
            .map(drop)
            .map_err(win_error)
    }

    /// `CreateDirectoryW`.
    pub fn create_directory(&self, comps: &[String]) -> WinResult<()> {
        let place = self.place(comps, false)?;
        let Some((_, nm)) = &place.last else {
            return Err(ERROR_ACCESS_DENIED);
        };
        if place.node.is_ok() {
            return Err(ERROR_ALREADY_EXISTS);
        }
        self.client()
            .mkdir(self.creds(), &place.parent.handle, nm, 0o755)
            .map(drop)
            .map_err(|e| match e {
                Errno::EEXIST => ERROR_ALREADY_EXISTS,
                e => win_error(e),
            })
    }

    /// `RemoveDirectoryW`.
    pub fn remove_directory(&self, comps: &[String]) -> WinResult<()> {
        let place = self.place(comps, false)?;
        let Some((_, nm)) = &place.last else {
            return Err(ERROR_ACCESS_DENIED);
        };
        let e = place.node.map_err(|e| match e {
            Errno::ENOENT => ERROR_FILE_NOT_FOUND,
            e => win_error(e),
        })?;
        if e.attr.kind() != FileKind::Directory {
            return Err(ERROR_DIRECTORY);
        }
        self.deletable(e.attr.ino)?;
        self.client()
            .rmdir(self.creds(), &place.parent.handle, nm)
            .map_err(|e| match e {
                crate::errno::ENOTEMPTY | Errno::EEXIST => ERROR_DIR_NOT_EMPTY,
                e => win_error(e),
            })
    }

    /// `DeleteFileW`. A file open without `FILE_SHARE_DELETE` is a sharing violation; one
    /// open with it loses its name at once (the POSIX semantics Windows 10 uses).
    pub fn delete_file(&self, comps: &[String]) -> WinResult<()> {
        let place = self.place(comps, false)?;
        let Some((_, nm)) = &place.last else {
            return Err(ERROR_ACCESS_DENIED);
        };
        let e = place.node.map_err(|e| match e {
            Errno::ENOENT => ERROR_FILE_NOT_FOUND,
            e => win_error(e),
        })?;
        if e.attr.kind() == FileKind::Directory {
            return Err(ERROR_ACCESS_DENIED);
        }
        if e.attr.kind() == FileKind::Regular && e.attr.mode & 0o222 == 0 {
            return Err(ERROR_ACCESS_DENIED);
        }
        self.deletable(e.attr.ino)?;
        self.client()
            .unlink(self.creds(), &place.parent.handle, nm)
            .map_err(win_error)
    }

    /// `MoveFileExW` between two DFS paths.
    pub fn move_file(&self, from: &[String], to: &[String], flags: u32) -> WinResult<()> {
        let src = self.place(from, false)?;
        let Some((_, from_name)) = &src.last else {
            return Err(ERROR_ACCESS_DENIED);
        };
        let e = src.node.as_ref().map_err(|e| match *e {
            Errno::ENOENT => ERROR_FILE_NOT_FOUND,
            e => win_error(e),
        })?;
        self.deletable(e.attr.ino)?;
        let target = self.place(to, false)?;
        let Some((_, to_name)) = &target.last else {
            return Err(ERROR_ACCESS_DENIED);
        };
        self.rename_checked(
            &src.parent.handle,
            from_name,
            e.attr.ino,
            &target,
            to_name,
            flags & MOVEFILE_REPLACE_EXISTING != 0,
        )
    }

    /// `FindFirstFileW` of a DFS pattern (its last component may hold `*` and `?`).
    pub fn find_first(&self, dir: &[String], pattern: &str) -> WinResult<Find> {
        let place = self.place(dir, true)?;
        let d = place.node.map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR => ERROR_PATH_NOT_FOUND,
            e => win_error(e),
        })?;
        if d.attr.kind() != FileKind::Directory {
            return Err(ERROR_PATH_NOT_FOUND);
        }
        let all = self.list(&d, !dir.is_empty())?;
        let entries: Vec<FindEntry> = all
            .into_iter()
            .filter(|e| path::matches(pattern, &e.name))
            .collect();
        if entries.is_empty() {
            return Err(ERROR_FILE_NOT_FOUND);
        }
        Ok(Find { entries, next: 0 })
    }

    /// Every entry of `d`, with `.` and `..` first where a local drive lists them (every
    /// directory but a drive's root).
    fn list(&self, d: &Entry, dots: bool) -> WinResult<Vec<FindEntry>> {
        let mut out = Vec::new();
        if dots {
            for n in [".", ".."] {
                out.push(FindEntry {
                    name: n.to_string(),
                    info: info_of(&d.attr, n, false),
                });
            }
        }
        let mut cookie = 0;
        loop {
            let (page, _) = self
                .client()
                .list_dir(self.creds(), &d.handle, cookie, PAGE, true)
                .map_err(win_error)?;
            for e in &page.entries {
                cookie = e.cookie;
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(&e.name).into_owned();
                // `.` and `..` aside, every entry of a listing with attributes has them.
                let Some(en) = &e.entry else {
                    continue;
                };
                let attr = en.attr;
                out.push(FindEntry {
                    info: info_of(&attr, &name, false),
                    name,
                });
            }
            if page.eof || page.entries.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// The next entries of a directory handle's listing (`FileIdBothDirectoryInfo`,
    /// `FileFullDirectoryInfo`): `restart` starts it over. Hands out entries while `fits`
    /// says the caller's buffer has room for them; `ERROR_NO_MORE_FILES` at the end.
    pub fn list_handle(
        &self,
        f: &WinFile,
        restart: bool,
        mut fits: impl FnMut(&FindEntry) -> bool,
    ) -> WinResult<usize> {
        if !f.directory {
            return Err(ERROR_INVALID_PARAMETER);
        }
        let mut l = lock(&f.listing);
        if restart || l.is_none() {
            let attr = self.attr(f)?;
            let d = Entry {
                handle: f.handle.clone(),
                attr,
            };
            *l = Some(Find {
                entries: self.list(&d, true)?,
                next: 0,
            });
        }
        let Some(find) = l.as_mut() else {
            return Err(ERROR_NO_MORE_FILES);
        };
        let mut n = 0;
        while let Some(e) = find.entries.get(find.next) {
            if !fits(e) {
                break;
            }
            find.next += 1;
            n += 1;
        }
        if n == 0 && find.next >= find.entries.len() {
            return Err(ERROR_NO_MORE_FILES);
        }
        if n == 0 {
            return Err(ERROR_INSUFFICIENT_BUFFER);
        }
        Ok(n)
    }

    /// `GetDiskFreeSpaceExW`: bytes available to the caller, in all, and free.
    pub fn space(&self) -> WinResult<(u64, u64, u64)> {
        let st = self
            .client()
            .statfs(self.creds(), &self.shared.root.handle)
            .map_err(win_error)?;
        let unit = u64::from(if st.frsize > 0 { st.frsize } else { st.bsize });
        Ok((
            st.bavail.saturating_mul(unit),
            st.blocks.saturating_mul(unit),
            st.bfree.saturating_mul(unit),
        ))
    }

    /// The components of `rel` (a name relative to the directory `dir` is open on, as
    /// `NtCreateFile` takes one with a root directory), `.` and `..` applied.
    pub fn below(&self, dir: &WinFile, rel: &[u16]) -> WinResult<Vec<String>> {
        let mut comps = lock(&dir.place).2.clone();
        for part in rel.split(|&c| path::is_sep(c)) {
            match String::from_utf16(part)
                .map_err(|_| path::ERROR_INVALID_NAME)?
                .as_str()
            {
                "" | "." => {}
                ".." => {
                    comps.pop();
                }
                p => comps.push(p.to_string()),
            }
        }
        Ok(comps)
    }

    /// `GetFullPathNameW` of a DFS path.
    pub fn full_path(&self, comps: &[String]) -> Vec<u16> {
        self.shared.prefix.full_path(comps)
    }
}

impl WinFile {
    /// Whether this is a directory handle.
    pub fn is_directory(&self) -> bool {
        self.directory
    }

    /// The file pointer.
    pub fn position(&self) -> u64 {
        *lock(&self.pos)
    }

    fn remove_name(&self) -> Result<(), Errno> {
        let (dir, nm) = {
            let p = lock(&self.place);
            (p.0.clone(), p.1.clone())
        };
        let c = &self.fs.client;
        if self.directory {
            c.rmdir(&self.fs.creds, &dir, &nm)
        } else {
            c.unlink(&self.fs.creds, &dir, &nm)
        }
    }
}

impl Drop for WinFile {
    /// The last handle of the file object is gone: the server's open ends, the share modes
    /// are forgotten, and a file marked for deletion loses its name.
    fn drop(&mut self) {
        if let Some(o) = self.open {
            let _ = self.fs.client.release(&self.fs.creds, o);
        }
        {
            let mut opens = lock(&self.fs.opens);
            if let Some(l) = opens.get_mut(&self.ino) {
                l.retain(|&(id, _, _)| id != self.id);
                if l.is_empty() {
                    opens.remove(&self.ino);
                }
            }
        }
        if self.delete_on_close.load(Ordering::Relaxed) {
            let _ = self.remove_name();
        }
    }
}
