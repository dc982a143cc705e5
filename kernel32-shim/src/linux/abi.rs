//! The C library's structures the face fills in, with glibc's x86_64 layouts, as plain
//! Rust structures (so that building them needs no `unsafe`; only writing one through a
//! caller's pointer does, in [`super::ffi`]). A test checks each size against the `libc`
//! crate's.

use dfs_proto::attr::{Attr, FileKind, StatFs, Timestamp};

/// `struct stat` (and `stat64`, the same on x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub pad0: i32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
    pub unused: [i64; 3],
}

/// `struct statx_timestamp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StatxTime {
    pub tv_sec: i64,
    pub tv_nsec: u32,
    pub pad: i32,
}

/// `struct statx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Statx {
    pub stx_mask: u32,
    pub stx_blksize: u32,
    pub stx_attributes: u64,
    pub stx_nlink: u32,
    pub stx_uid: u32,
    pub stx_gid: u32,
    pub stx_mode: u16,
    pub pad1: u16,
    pub stx_ino: u64,
    pub stx_size: u64,
    pub stx_blocks: u64,
    pub stx_attributes_mask: u64,
    pub stx_atime: StatxTime,
    pub stx_btime: StatxTime,
    pub stx_ctime: StatxTime,
    pub stx_mtime: StatxTime,
    pub stx_rdev_major: u32,
    pub stx_rdev_minor: u32,
    pub stx_dev_major: u32,
    pub stx_dev_minor: u32,
    pub stx_mnt_id: u64,
    pub stx_dio_mem_align: u32,
    pub stx_dio_offset_align: u32,
    pub spare: [u64; 12],
}

/// `struct dirent64` (and `dirent`, the same on x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Dirent64 {
    pub d_ino: u64,
    pub d_off: i64,
    pub d_reclen: u16,
    pub d_type: u8,
    pub d_name: [u8; 256],
    pub pad: [u8; 5],
}

impl Default for Dirent64 {
    fn default() -> Dirent64 {
        Dirent64 {
            d_ino: 0,
            d_off: 0,
            d_reclen: 0,
            d_type: 0,
            d_name: [0; 256],
            pad: [0; 5],
        }
    }
}

/// `struct statfs` (and `statfs64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Statfs {
    pub f_type: i64,
    pub f_bsize: i64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: i64,
    pub f_frsize: i64,
    pub f_flags: i64,
    pub f_spare: [i64; 4],
}

/// `struct statvfs` (and `statvfs64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Statvfs {
    pub f_bsize: u64,
    pub f_frsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_favail: u64,
    pub f_fsid: u64,
    pub f_flag: u64,
    pub f_namemax: u64,
    pub spare: [i32; 6],
}

/// `struct flock` (and `flock64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Flock {
    pub l_type: i16,
    pub l_whence: i16,
    pub pad: i32,
    pub l_start: i64,
    pub l_len: i64,
    pub l_pid: i32,
    pub pad2: i32,
}

/// `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

/// `struct timeval`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

/// `struct utimbuf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Utimbuf {
    pub actime: i64,
    pub modtime: i64,
}

/// The device number every file of mount `m` reports: not any real device's (major 0 is
/// the kernel's for anonymous file systems, minor far above what it hands out), stable, and
/// one per mount, so `find -xdev` and hard-link detection by (device, inode) work.
pub fn dev_of(m: usize) -> u64 {
    0xdf500 + m as u64
}

fn nsec(t: Timestamp) -> i64 {
    i64::from(t.nanos.min(999_999_999))
}

impl Stat {
    /// The `stat` of a DFS file of mount `m`.
    pub fn of(a: &Attr, m: usize) -> Stat {
        Stat {
            st_dev: dev_of(m),
            st_ino: a.ino,
            st_nlink: a.nlink,
            st_mode: a.mode,
            st_uid: a.uid,
            st_gid: a.gid,
            st_rdev: a.rdev,
            st_size: a.size as i64,
            st_blksize: i64::from(a.blksize.max(512)),
            st_blocks: a.blocks as i64,
            st_atime: a.atime.secs,
            st_atime_nsec: nsec(a.atime),
            st_mtime: a.mtime.secs,
            st_mtime_nsec: nsec(a.mtime),
            st_ctime: a.ctime.secs,
            st_ctime_nsec: nsec(a.ctime),
            ..Stat::default()
        }
    }
}

fn sx(t: Timestamp) -> StatxTime {
    StatxTime {
        tv_sec: t.secs,
        tv_nsec: t.nanos.min(999_999_999),
        pad: 0,
    }
}

/// `STATX_BASIC_STATS`: type, mode, nlink, uid, gid, atime, mtime, ctime, ino, size, blocks.
pub const STATX_BASIC_STATS: u32 = 0x7ff;

impl Statx {
    /// The `statx` of a DFS file of mount `m` (the basic fields; no birth time).
    pub fn of(a: &Attr, m: usize) -> Statx {
        let dev = dev_of(m);
        Statx {
            stx_mask: STATX_BASIC_STATS,
            stx_blksize: a.blksize.max(512),
            stx_nlink: a.nlink.min(u64::from(u32::MAX)) as u32,
            stx_uid: a.uid,
            stx_gid: a.gid,
            stx_mode: a.mode as u16,
            stx_ino: a.ino,
            stx_size: a.size,
            stx_blocks: a.blocks,
            stx_atime: sx(a.atime),
            stx_ctime: sx(a.ctime),
            stx_mtime: sx(a.mtime),
            stx_rdev_major: ((a.rdev >> 8) & 0xfff) as u32 | ((a.rdev >> 32) & !0xfff) as u32,
            stx_rdev_minor: (a.rdev & 0xff) as u32 | ((a.rdev >> 12) & !0xff) as u32,
            stx_dev_major: ((dev >> 8) & 0xfff) as u32,
            stx_dev_minor: (dev & 0xff) as u32 | ((dev >> 12) & !0xff) as u32,
            ..Statx::default()
        }
    }
}

/// The `d_type` of a kind.
pub fn dtype(k: FileKind) -> u8 {
    match k {
        FileKind::Fifo => 1,
        FileKind::CharDevice => 2,
        FileKind::Directory => 4,
        FileKind::BlockDevice => 6,
        FileKind::Regular => 8,
        FileKind::Symlink => 10,
        FileKind::Socket => 12,
        FileKind::Unknown => 0,
    }
}

/// What `statfs` reports for the DFS: FUSE's magic number, since a DFS mount through FUSE
/// reports it too and programs that look (`stat -f`, `df`) treat both alike.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

impl Statfs {
    /// From the server's figures.
    pub fn of(s: &StatFs, m: usize) -> Statfs {
        Statfs {
            f_type: FUSE_SUPER_MAGIC,
            f_bsize: i64::from(s.bsize),
            f_blocks: s.blocks,
            f_bfree: s.bfree,
            f_bavail: s.bavail,
            f_files: s.files,
            f_ffree: s.ffree,
            f_fsid: [dev_of(m) as i32, 0],
            f_namelen: i64::from(s.namelen),
            f_frsize: i64::from(s.frsize),
            ..Statfs::default()
        }
    }
}

impl Statvfs {
    /// From the server's figures.
    pub fn of(s: &StatFs, m: usize) -> Statvfs {
        Statvfs {
            f_bsize: u64::from(s.bsize),
            f_frsize: u64::from(s.frsize),
            f_blocks: s.blocks,
            f_bfree: s.bfree,
            f_bavail: s.bavail,
            f_files: s.files,
            f_ffree: s.ffree,
            f_favail: s.ffree,
            f_fsid: dev_of(m),
            f_namemax: u64::from(s.namelen),
            ..Statvfs::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn layouts_match_the_c_library() {
        assert_eq!(size_of::<Stat>(), size_of::<libc::stat>());
        assert_eq!(size_of::<Stat>(), size_of::<libc::stat64>());
        assert_eq!(size_of::<Statx>(), size_of::<libc::statx>());
        assert_eq!(size_of::<Dirent64>(), size_of::<libc::dirent64>());
        assert_eq!(size_of::<Dirent64>(), size_of::<libc::dirent>());
        assert_eq!(size_of::<Statfs>(), size_of::<libc::statfs>());
        assert_eq!(size_of::<Statvfs>(), size_of::<libc::statvfs>());
        assert_eq!(size_of::<Flock>(), size_of::<libc::flock>());
        assert_eq!(size_of::<Timespec>(), size_of::<libc::timespec>());
        assert_eq!(std::mem::offset_of!(Stat, st_size), 48);
        assert_eq!(std::mem::offset_of!(Statx, stx_ino), 32);
        assert_eq!(std::mem::offset_of!(Statx, stx_rdev_major), 128);
        assert_eq!(std::mem::offset_of!(Dirent64, d_name), 19);
        assert_eq!(std::mem::offset_of!(Flock, l_start), 8);
    }
}
