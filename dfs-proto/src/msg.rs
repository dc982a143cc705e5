//! The messages: a handshake ([`ClientHello`], [`ServerChallenge`], [`ClientProof`],
//! [`ServerVerdict`]), then [`Request`]s, each answered by a [`Reply`] with the same id.
//! Requests on one connection are answered in order; a client that wants parallelism opens
//! more connections.

use serde::{Deserialize, Serialize};

use crate::attr::FileKind;
use crate::attr::{Attr, Entry, SetAttr, StatFs};
use crate::errno::Errno;
use crate::handle::{FileHandle, OpenId};
use crate::name::{LinkTarget, Name, XattrName};

/// The protocol version this crate speaks. 2: `Written` carries the file's attributes, and a
/// request with id [`NO_REPLY`] gets no reply.
pub const PROTOCOL_VERSION: u32 = 2;
/// A request with this id gets no reply, and whatever it fails with is dropped: for what
/// nothing waits on (closing an open), so that it costs no round trip.
pub const NO_REPLY: u64 = 0;
/// What a client's first bytes say, so a server can tell a DFS client from a stray connection.
pub const MAGIC: [u8; 4] = *b"VDFS";
/// Most supplementary groups a request carries (Linux's `NGROUPS_MAX` is 65536; a request
/// with more than this is refused rather than sent).
pub const MAX_GROUPS: usize = 64;
/// Most entries in one readdir page.
pub const MAX_DIR_ENTRIES: u32 = 1024;
/// Most entries in one [`Op::ListDir`] page (a page also stops short of the meta limit).
pub const MAX_LIST_ENTRIES: u32 = 8192;

/// The client's first message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientHello {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// Oldest protocol version the client speaks.
    pub min_version: u32,
    /// Newest protocol version the client speaks.
    pub max_version: u32,
    /// Fresh random bytes, so that the server's proof is bound to this session.
    pub client_nonce: [u8; 32],
    /// Random per client instance and shared by its connections: opens made on one
    /// connection can be used on the others.
    pub session: [u8; 16],
}

/// How the server wants the client to authenticate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AuthMode {
    /// Anyone who can connect may (the server warned its operator at start-up).
    None,
    /// Prove knowledge of the shared secret (see [`crate::auth`]).
    Secret,
}

/// The server's answer to the hello.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ServerChallenge {
    /// Go on, with this version.
    Challenge {
        /// The version both speak (the highest in common).
        version: u32,
        /// Fresh random bytes the client's proof must cover.
        server_nonce: [u8; 32],
        /// What the proof must show.
        auth: AuthMode,
    },
    /// No version in common, or not a DFS client.
    Refused {
        /// Why.
        errno: Errno,
        /// Said to the user.
        reason: String,
    },
}

/// The client's proof that it knows the secret (all zero when the server asked for none).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientProof {
    /// [`crate::auth::client_proof`].
    pub proof: [u8; 32],
}

/// The outcome of the handshake.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ServerVerdict {
    /// Authenticated: requests may follow.
    Welcome {
        /// The export's root directory.
        root: FileHandle,
        /// The server's own proof that it knows the secret (all zero without one), so that a
        /// client does not talk to an impostor.
        server_proof: [u8; 32],
        /// Whether the export refuses every change.
        read_only: bool,
    },
    /// Authentication failed.
    Refused {
        /// Why (`EACCES`).
        errno: Errno,
        /// Said to the user.
        reason: String,
    },
}

/// Who asks: the caller's credentials, which the server uses (or squashes) per request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, at most [`MAX_GROUPS`].
    pub groups: Vec<u32>,
}

/// How a file is opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct OpenFlags {
    /// Open for reading.
    pub read: bool,
    /// Open for writing.
    pub write: bool,
    /// Every write goes to the end (`O_APPEND`).
    pub append: bool,
    /// Truncate to zero on open (`O_TRUNC`).
    pub truncate: bool,
    /// With create: fail if the name exists (`O_EXCL`).
    pub exclusive: bool,
    /// Writes reach stable storage before they return (`O_SYNC`).
    pub sync: bool,
}

/// How a rename treats an existing target.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RenameMode {
    /// Replace it (POSIX `rename`).
    Replace,
    /// Fail with `EEXIST` (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two names atomically (`RENAME_EXCHANGE`).
    Exchange,
}

/// One operation. Names are components of the directory given by handle; nothing is a path.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Find `name` in `dir`.
    Lookup {
        /// The directory.
        dir: FileHandle,
        /// The component.
        name: Name,
    },
    /// Attributes of a file.
    GetAttr {
        /// The file.
        handle: FileHandle,
        /// An open of it, which still works once the file is unlinked.
        open: Option<OpenId>,
    },
    /// Change attributes.
    SetAttr {
        /// The file.
        handle: FileHandle,
        /// An open of it, for a truncate the open allows.
        open: Option<OpenId>,
        /// What to change.
        set: SetAttr,
    },
    /// A page of a directory, with each entry's attributes.
    ReadDir {
        /// The directory.
        dir: FileHandle,
        /// Where to go on: 0 at the start, else the cookie of the last entry seen.
        cookie: u64,
        /// Most entries to return (at most [`MAX_DIR_ENTRIES`]).
        max_entries: u32,
    },
    /// Open an existing file.
    Open {
        /// The file.
        handle: FileHandle,
        /// How.
        flags: OpenFlags,
    },
    /// Create and open a regular file.
    Create {
        /// The directory.
        dir: FileHandle,
        /// The new name.
        name: Name,
        /// Permission bits (the client has applied its umask).
        mode: u32,
        /// How to open it.
        flags: OpenFlags,
    },
    /// Read up to `len` bytes at `offset`; the bytes follow the reply as its data part.
    Read {
        /// The file.
        handle: FileHandle,
        /// The open to read through (the handle serves if it is unknown).
        open: Option<OpenId>,
        /// Where.
        offset: u64,
        /// How much, at most [`crate::frame::MAX_DATA`].
        len: u32,
    },
    /// Write the request's data part at `offset`.
    Write {
        /// The file.
        handle: FileHandle,
        /// The open to write through (the handle serves if it is unknown).
        open: Option<OpenId>,
        /// Where (ignored by an append open).
        offset: u64,
        /// Whether the file was opened for appending (used when the open is unknown).
        append: bool,
    },
    /// Make a directory.
    Mkdir {
        /// The parent.
        dir: FileHandle,
        /// The new name.
        name: Name,
        /// Permission bits.
        mode: u32,
    },
    /// Make a regular file, a FIFO, a socket node, or (for a caller who is root after the
    /// server's squashing) a device node.
    Mknod {
        /// The parent.
        dir: FileHandle,
        /// The new name.
        name: Name,
        /// Type and permission bits.
        mode: u32,
        /// Device number (0 but for device nodes).
        rdev: u64,
    },
    /// Remove a non-directory.
    Unlink {
        /// The parent.
        dir: FileHandle,
        /// The name.
        name: Name,
    },
    /// Remove an empty directory.
    Rmdir {
        /// The parent.
        dir: FileHandle,
        /// The name.
        name: Name,
    },
    /// Rename (or exchange) an entry.
    Rename {
        /// The source directory.
        from_dir: FileHandle,
        /// The source name.
        from: Name,
        /// The target directory.
        to_dir: FileHandle,
        /// The target name.
        to: Name,
        /// What to do with an existing target.
        mode: RenameMode,
    },
    /// A new hard link to `handle`.
    Link {
        /// The file.
        handle: FileHandle,
        /// The directory of the new name.
        dir: FileHandle,
        /// The new name.
        name: Name,
    },
    /// A symbolic link.
    Symlink {
        /// The directory.
        dir: FileHandle,
        /// The link's name.
        name: Name,
        /// What it points to (never followed by the server).
        target: LinkTarget,
    },
    /// A symbolic link's content.
    ReadLink {
        /// The link.
        handle: FileHandle,
    },
    /// File system statistics.
    StatFs {
        /// Any file of the export.
        handle: FileHandle,
    },
    /// Flush to stable storage.
    Fsync {
        /// The file.
        handle: FileHandle,
        /// An open of it.
        open: Option<OpenId>,
        /// Data only (`fdatasync`).
        datasync: bool,
    },
    /// A `close` of one of the open's descriptors: reports deferred write errors.
    Flush {
        /// The file.
        handle: FileHandle,
        /// The open.
        open: OpenId,
    },
    /// The last close: forget the open.
    Release {
        /// The open.
        open: OpenId,
    },
    /// Allocate (or, with flags, punch or zero) a range.
    Fallocate {
        /// The file.
        handle: FileHandle,
        /// An open of it for writing.
        open: Option<OpenId>,
        /// `fallocate` mode bits (`FALLOC_FL_*`).
        mode: u32,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// An xattr's value, or its size when `size` is 0.
    GetXattr {
        /// The file.
        handle: FileHandle,
        /// The attribute.
        name: XattrName,
        /// The caller's buffer size (0: just the size).
        size: u32,
    },
    /// Set an xattr.
    SetXattr {
        /// The file.
        handle: FileHandle,
        /// The attribute.
        name: XattrName,
        /// Its value, at most [`crate::name::MAX_XATTR_VALUE`] bytes.
        value: Vec<u8>,
        /// `XATTR_CREATE` or `XATTR_REPLACE` (or 0).
        flags: u32,
    },
    /// The NUL-separated list of xattr names, or its size when `size` is 0.
    ListXattr {
        /// The file.
        handle: FileHandle,
        /// The caller's buffer size.
        size: u32,
    },
    /// Remove an xattr.
    RemoveXattr {
        /// The file.
        handle: FileHandle,
        /// The attribute.
        name: XattrName,
    },
    /// The server's transfer counters, so that a benchmark can report copies per byte on
    /// both sides.
    Stats,
    /// A page of a directory, answered with [`Body::Listing`]: names, kinds, inode numbers
    /// and cookies, with each entry's handle and attributes only if `attrs` (a plain listing
    /// costs the server no `stat` and no handle per entry).
    ListDir {
        /// The directory.
        dir: FileHandle,
        /// Where to go on: 0 at the start, else the cookie of the last entry seen.
        cookie: u64,
        /// Most entries to return (at most [`MAX_LIST_ENTRIES`]).
        max_entries: u32,
        /// Whether each entry comes with its handle and attributes.
        attrs: bool,
    },
    /// Makes this connection the client's notice channel, answered with
    /// [`Body::Subscribed`]: from then on the server sends [`Notice`]s on it, whenever files
    /// its clients may cache change, and reads nothing more from it.
    Subscribe,
}

impl Op {
    /// Whether the operation changes the export, so a read-only export refuses it. (An open
    /// for writing counts; a read through a handle does not.)
    pub fn mutates(&self) -> bool {
        match self {
            Op::Lookup { .. }
            | Op::GetAttr { .. }
            | Op::ReadDir { .. }
            | Op::Read { .. }
            | Op::ReadLink { .. }
            | Op::StatFs { .. }
            | Op::Fsync { .. }
            | Op::Flush { .. }
            | Op::Release { .. }
            | Op::GetXattr { .. }
            | Op::ListXattr { .. }
            | Op::Stats
            | Op::ListDir { .. }
            | Op::Subscribe => false,
            Op::Open { flags, .. } => flags.write || flags.truncate || flags.append,
            Op::SetAttr { .. }
            | Op::Create { .. }
            | Op::Write { .. }
            | Op::Mkdir { .. }
            | Op::Mknod { .. }
            | Op::Unlink { .. }
            | Op::Rmdir { .. }
            | Op::Rename { .. }
            | Op::Link { .. }
            | Op::Symlink { .. }
            | Op::Fallocate { .. }
            | Op::SetXattr { .. }
            | Op::RemoveXattr { .. } => true,
        }
    }

    /// Whether repeating the operation after a lost reply gives the same result, so a client
    /// may retry it on a new connection after a server restart.
    pub fn is_idempotent(&self) -> bool {
        match self {
            Op::Lookup { .. }
            | Op::GetAttr { .. }
            | Op::ReadDir { .. }
            | Op::Read { .. }
            | Op::ReadLink { .. }
            | Op::StatFs { .. }
            | Op::Fsync { .. }
            | Op::Flush { .. }
            | Op::Release { .. }
            | Op::GetXattr { .. }
            | Op::ListXattr { .. }
            | Op::Stats
            | Op::ListDir { .. }
            | Op::Open { .. }
            | Op::SetXattr { .. } => true,
            Op::Write { append, .. } => !append,
            Op::SetAttr { set, .. } => {
                !matches!(set.atime, Some(crate::attr::SetTime::Now))
                    && !matches!(set.mtime, Some(crate::attr::SetTime::Now))
            }
            Op::Subscribe
            | Op::Create { .. }
            | Op::Mkdir { .. }
            | Op::Mknod { .. }
            | Op::Unlink { .. }
            | Op::Rmdir { .. }
            | Op::Rename { .. }
            | Op::Link { .. }
            | Op::Symlink { .. }
            | Op::Fallocate { .. }
            | Op::RemoveXattr { .. } => false,
        }
    }
}

/// A request: an id the reply repeats, the caller, the operation. A [`Op::Write`] carries
/// its bytes as the frame's data part.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; the reply repeats it. [`NO_REPLY`] asks for none.
    pub id: u64,
    /// Who asks.
    pub creds: Creds,
    /// What.
    pub op: Op,
}

/// One directory entry.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name's bytes (`.` and `..` included, unlike [`Name`]).
    pub name: Vec<u8>,
    /// Its kind.
    pub kind: FileKind,
    /// Its inode number.
    pub ino: u64,
    /// Where the next page starts if this is the last entry read.
    pub cookie: u64,
    /// Handle and attributes (absent for `.` and `..`, which the client knows already).
    pub entry: Option<Entry>,
}

/// A page of a directory.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DirPage {
    /// The entries, in the directory's order.
    pub entries: Vec<DirEntry>,
    /// Whether the directory ends here.
    pub eof: bool,
}

/// What a successful operation returns.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Body {
    /// Nothing to say (unlink, rmdir, rename, fsync, flush, release, …).
    Done,
    /// A file found or made (lookup, mkdir, mknod, link, symlink).
    Entry(Entry),
    /// Attributes (getattr, setattr).
    Attr(Attr),
    /// A directory page.
    Dir(DirPage),
    /// An open (open, create): the file too for create.
    Opened {
        /// Name it in read, write, flush and release.
        open: OpenId,
        /// The created file (create only).
        entry: Option<Entry>,
        /// Whether a create made the file (rather than opening one that existed): a new file
        /// has no extended attributes a client must ask for.
        created: bool,
    },
    /// Bytes read: the frame's data part, `eof` if the file ended before the requested length.
    Read {
        /// The read reached the end of the file.
        eof: bool,
    },
    /// Bytes written.
    Written {
        /// How many.
        len: u32,
        /// The file's attributes after the write: what a client that caches the file's
        /// pages compares at its next open, without asking again at close.
        attr: Attr,
    },
    /// A symlink's target.
    Target(LinkTarget),
    /// File system statistics.
    StatFs(StatFs),
    /// An xattr value's (or the name list's) size, for a `size` 0 request.
    XattrSize(u32),
    /// An xattr value, or the NUL-separated name list.
    XattrData(Vec<u8>),
    /// The server process's transfer counters.
    Stats(TransferStats),
    /// A directory page ([`Op::ListDir`]) and the directory's own attributes, taken before
    /// the page was read (so a client can tell whether the directory changed since).
    Listing {
        /// The entries.
        page: DirPage,
        /// The directory's attributes.
        dir: Attr,
    },
    /// The connection now carries [`Notice`]s.
    Subscribed {
        /// Whether changes made on the server by anything but the DFS (a local program
        /// writing in the export) are noticed too. Only then may a client keep what it caches
        /// for long: otherwise it could not learn that a local change made its copy stale.
        local_changes: bool,
    },
}

/// Most items in one [`Notice`], so that the largest one (every item a name) stays far
/// below [`crate::frame::MAX_META`]; more changes are sent as several notices.
pub const MAX_NOTICE_ITEMS: usize = 512;

/// What changed on the server, for a client to drop from its caches (the kernel's, through
/// FUSE's invalidations). Files are named by server inode number, which every client of the
/// file knows whatever handle it reached the file by. A client that made a change through
/// its own requests is not told of it. Sent on a subscribed connection as the meta part of a
/// frame.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Notice {
    /// Files and directories whose attributes, data or listing changed.
    pub inodes: Vec<u64>,
    /// Names that appeared, vanished or now name another file, by the directory's inode
    /// number.
    pub entries: Vec<(u64, Name)>,
    /// Too much changed to say (or notices were lost): drop everything.
    pub everything: bool,
}

impl Notice {
    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.inodes.is_empty() && self.entries.is_empty()
    }

    /// Items in it.
    pub fn len(&self) -> usize {
        self.inodes.len() + self.entries.len()
    }

    /// Whether a peer may send it: [`MAX_NOTICE_ITEMS`] at most.
    pub fn is_valid(&self) -> bool {
        self.len() <= MAX_NOTICE_ITEMS
    }

    /// Cuts it into notices of [`MAX_NOTICE_ITEMS`] items at most.
    pub fn split(mut self) -> Vec<Notice> {
        if self.is_valid() {
            return vec![self];
        }
        let mut out = Vec::new();
        while !self.inodes.is_empty() {
            let rest = self
                .inodes
                .split_off(self.inodes.len().min(MAX_NOTICE_ITEMS));
            out.push(Notice {
                inodes: std::mem::replace(&mut self.inodes, rest),
                ..Notice::default()
            });
        }
        while !self.entries.is_empty() {
            let rest = self
                .entries
                .split_off(self.entries.len().min(MAX_NOTICE_ITEMS));
            out.push(Notice {
                entries: std::mem::replace(&mut self.entries, rest),
                ..Notice::default()
            });
        }
        if let Some(first) = out.first_mut() {
            first.everything = self.everything;
        }
        out
    }
}

/// A process's transfer counters (those of its emulated NIC), since it started.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TransferStats {
    /// Payload bytes deposited into a peer's memory.
    pub deposited: u64,
    /// Payload bytes fetched from a peer's memory.
    pub fetched: u64,
    /// Bytes copied by the CPU inside the NIC layer (the copying socket calls).
    pub copied: u64,
}

/// The answer to a request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// The outcome: an errno travels as itself.
    pub result: Result<Body, Errno>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_notice_splits_into_valid_ones_that_say_the_same() {
        let name = |i: u64| Name::new(format!("n{i}").as_bytes()).unwrap();
        let big = Notice {
            inodes: (0..1300).collect(),
            entries: (0..700).map(|i| (i, name(i))).collect(),
            everything: true,
        };
        assert!(!big.is_valid());
        let parts = big.clone().split();
        assert!(parts.iter().all(Notice::is_valid));
        let mut again = Notice::default();
        for p in parts {
            again.everything |= p.everything;
            again.inodes.extend(p.inodes);
            again.entries.extend(p.entries);
        }
        assert_eq!(again, big);
        // The largest notice, every item a longest name, fits a frame's meta part.
        let longest = Name::new(&[b'x'; crate::name::MAX_NAME]).unwrap();
        let full = Notice {
            entries: vec![(u64::MAX, longest); MAX_NOTICE_ITEMS],
            ..Notice::default()
        };
        let bytes = crate::codec::encode_to_vec(&full).unwrap();
        assert!(bytes.len() < crate::frame::MAX_META, "{}", bytes.len());
    }
}
