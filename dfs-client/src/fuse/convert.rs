//! Between the protocol's types and fuser's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dfs_proto::attr::{Attr, FileKind, SetTime, Timestamp};
use dfs_proto::msg::{Creds, OpenFlags, MAX_GROUPS};
use dfs_proto::Errno;
use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

/// fuser's errno for ours.
pub fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

fn time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nanos))
    }
}

/// A protocol time for a `SystemTime`.
pub fn stamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            Timestamp { secs, nanos }
        }
    }
}

/// A time to set, from the kernel's.
pub fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(stamp(t)),
    }
}

/// fuser's file type for a protocol kind.
pub fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Regular | FileKind::Unknown => FileType::RegularFile,
    }
}

/// The kernel's attributes of node `id`.
pub fn file_attr(id: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: file_type(a.kind()),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink.min(u64::from(u32::MAX)) as u32,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Attributes for `.` and `..` in a directory listing with attributes: the kernel links
/// neither to a node, so only the inode number is ever shown.
pub fn dir_placeholder(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The protocol's open flags for `open(2)` flags.
pub fn open_flags(flags: i32) -> OpenFlags {
    let acc = flags & libc::O_ACCMODE;
    OpenFlags {
        read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
        write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
        append: flags & libc::O_APPEND != 0,
        truncate: flags & libc::O_TRUNC != 0,
        exclusive: flags & libc::O_EXCL != 0,
        sync: flags & (libc::O_SYNC | libc::O_DSYNC) != 0,
    }
}

/// How long a caller's groups, once read, are used for its next requests.
const GROUPS_FRESH: Duration = Duration::from_millis(250);
/// Most callers whose groups are kept; past it the table starts over.
const MAX_CALLERS: usize = 4096;

/// A caller's groups as last read, and when.
struct Groups {
    uid: u32,
    gid: u32,
    at: Instant,
    groups: Vec<u32>,
}

fn read_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .take(MAX_GROUPS)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The caller's credentials: the kernel gives uid, gid and pid; the supplementary groups are
/// read from `/proc/PID/status` (a caller that is gone has none). Reading them costs more
/// than a round trip to the server (the kernel writes out the whole status), and a `create`
/// is five requests, so a caller's groups are used for [`GROUPS_FRESH`] while its uid and
/// gid stay the same. A process that changes its groups alone (only root may) is seen with
/// its old ones for that long by the server; the kernel's own check of every request
/// (`default_permissions`) uses its groups of the moment.
pub fn creds(uid: u32, gid: u32, pid: u32) -> Creds {
    static KNOWN: Mutex<Option<HashMap<u32, Groups>>> = Mutex::new(None);
    let now = Instant::now();
    {
        let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = known.as_ref().and_then(|m| m.get(&pid)) {
            if g.uid == uid && g.gid == gid && now.duration_since(g.at) < GROUPS_FRESH {
                return Creds {
                    uid,
                    gid,
                    groups: g.groups.clone(),
                };
            }
        }
    }
    let groups = read_groups(pid);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let m = known.get_or_insert_with(HashMap::new);
    if m.len() >= MAX_CALLERS {
        m.clear();
    }
    m.insert(
        pid,
        Groups {
            uid,
            gid,
            at: now,
            groups: groups.clone(),
        },
    );
    Creds { uid, gid, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_survive_the_round_trip() {
        for t in [
            Timestamp { secs: 0, nanos: 0 },
            Timestamp {
                secs: 1_700_000_000,
                nanos: 123,
            },
            Timestamp {
                secs: -5,
                nanos: 250_000_000,
            },
        ] {
            assert_eq!(stamp(time(t)), t);
        }
    }

    #[test]
    fn flags() {
        let f = open_flags(libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT);
        assert!(f.write && !f.read && f.append && !f.truncate);
        let f = open_flags(libc::O_RDONLY);
        assert!(f.read && !f.write);
        let me = creds(0, 0, std::process::id());
        assert!(me.groups.len() <= MAX_GROUPS);
    }
}
