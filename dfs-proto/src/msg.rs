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

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// What a client's first bytes say, so a server can tell a DFS client from a stray connection.
pub const MAGIC: [u8; 4] = *b"VDFS";
/// Most supplementary groups a request carries (Linux's `NGROUPS_MAX` is 65536; a request
/// with more than this is refused rather than sent).
pub const MAX_GROUPS: usize = 64;
/// Most entries in one readdir page.
pub const MAX_DIR_ENTRIES: u32 = 1024;

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
            | Op::Stats => false,
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
            | Op::Open { .. }
            | Op::SetXattr { .. } => true,
            Op::Write { append, .. } => !append,
            Op::SetAttr { set, .. } => {
                !matches!(set.atime, Some(crate::attr::SetTime::Now))
                    && !matches!(set.mtime, Some(crate::attr::SetTime::Now))
            }
            Op::Create { .. }
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
    /// Chosen by the client; the reply repeats it.
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
