//! File attributes and the changes a client may ask for, in the protocol's own types (not
//! `libc::stat`, whose layout differs between platforms).

use serde::{Deserialize, Serialize};

use crate::handle::FileHandle;

/// A point in time: seconds and nanoseconds since the Unix epoch. Ordered by time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 1,000,000,000.
    pub nanos: u32,
}

/// What kind of file an entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix-domain socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// The kernel did not say (`DT_UNKNOWN`).
    Unknown,
}

impl FileKind {
    /// The kind encoded in the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            0o120000 => FileKind::Symlink,
            0o010000 => FileKind::Fifo,
            0o140000 => FileKind::Socket,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            _ => FileKind::Unknown,
        }
    }
}

/// A file's attributes, as `stat` gives them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Attr {
    /// Inode number on the server.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification of the content.
    pub mtime: Timestamp,
    /// Last change of the inode.
    pub ctime: Timestamp,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Hard links.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device files.
    pub rdev: u64,
    /// Preferred I/O size.
    pub blksize: u32,
}

impl Attr {
    /// The file's kind, from its mode.
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
}

/// A file as a lookup (or create, mkdir, …) finds it: its handle and its attributes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The handle to name it by from now on.
    pub handle: FileHandle,
    /// Its attributes at the time of the reply.
    pub attr: Attr,
}

/// A time to set.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SetTime {
    /// The server's current time (`UTIME_NOW`), allowed to the owner and to writers.
    Now,
    /// A given time, allowed to the owner only.
    At(Timestamp),
}

/// The attributes a `setattr` changes; `None` leaves one alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct SetAttr {
    /// New permission bits (the low 12 bits of a mode).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

impl SetAttr {
    /// Whether the request changes nothing (a `setattr` that only asks for fresh attributes).
    pub fn is_empty(&self) -> bool {
        *self == SetAttr::default()
    }
}

/// File system statistics, as `statvfs` gives them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct StatFs {
    /// Total blocks, in `frsize` units.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}
