//! Error numbers. The protocol carries Linux's errno values ([`dfs_proto::Errno`]); the
//! Linux face hands them to the program as they are, and a Windows face translates them
//! with [`win32`] into the codes `GetLastError` returns for the same failure on a local
//! NTFS drive.

use dfs_proto::Errno;

/// No such process (a holder of a shared lock that is gone).
pub const ESRCH: Errno = Errno(3);
/// No such file or directory.
pub const ENOENT: Errno = Errno::ENOENT;
/// No such device or address (a FIFO or socket, which the server never opens).
pub const ENXIO: Errno = Errno(6);
/// Bad file descriptor.
pub const EBADF: Errno = Errno::EBADF;
/// Try again.
pub const EAGAIN: Errno = Errno(11);
/// Out of memory.
pub const ENOMEM: Errno = Errno(12);
/// Device or resource busy.
pub const EBUSY: Errno = Errno(16);
/// Cross-device link (a rename or link between the DFS and another file system).
pub const EXDEV: Errno = Errno(18);
/// No such device (`mmap` of what the shim cannot map).
pub const ENODEV: Errno = Errno(19);
/// Too many open files (the shim's table of open files is full).
pub const EMFILE: Errno = Errno(24);
/// Not a terminal (no ioctl is served).
pub const ENOTTY: Errno = Errno(25);
/// File too large.
pub const EFBIG: Errno = Errno(27);
/// Illegal seek.
pub const ESPIPE: Errno = Errno(29);
/// Function not implemented.
pub const ENOSYS: Errno = Errno(38);
/// Directory not empty.
pub const ENOTEMPTY: Errno = Errno(39);
/// Value too large for the type (an offset past `off_t`).
pub const EOVERFLOW: Errno = Errno(75);
/// Operation not supported.
pub const EOPNOTSUPP: Errno = Errno::ENOTSUP;
/// Connection timed out (the server did not answer in time).
pub const ETIMEDOUT: Errno = Errno(110);

/// The Win32 error code (`GetLastError`) a local NTFS drive gives for the failure `e`
/// reports, for the Windows face. Codes without a close match become
/// `ERROR_GEN_FAILURE` (31), never success.
pub fn win32(e: Errno) -> u32 {
    match e.0 {
        1 | 13 => 5,     // EPERM, EACCES: ERROR_ACCESS_DENIED
        2 => 2,          // ENOENT: ERROR_FILE_NOT_FOUND
        9 => 6,          // EBADF: ERROR_INVALID_HANDLE
        12 => 8,         // ENOMEM: ERROR_NOT_ENOUGH_MEMORY
        16 => 170,       // EBUSY: ERROR_BUSY
        17 => 80,        // EEXIST: ERROR_FILE_EXISTS
        18 => 17,        // EXDEV: ERROR_NOT_SAME_DEVICE
        20 => 267,       // ENOTDIR: ERROR_DIRECTORY
        21 => 5,         // EISDIR: ERROR_ACCESS_DENIED, as CreateFile on a directory
        22 => 87,        // EINVAL: ERROR_INVALID_PARAMETER
        24 | 23 => 4,    // EMFILE, ENFILE: ERROR_TOO_MANY_OPEN_FILES
        27 => 223,       // EFBIG: ERROR_FILE_TOO_LARGE
        28 | 122 => 112, // ENOSPC, EDQUOT: ERROR_DISK_FULL
        29 => 131,       // ESPIPE: ERROR_NEGATIVE_SEEK
        30 => 19,        // EROFS: ERROR_WRITE_PROTECT
        36 => 206,       // ENAMETOOLONG: ERROR_FILENAME_EXCED_RANGE
        39 => 145,       // ENOTEMPTY: ERROR_DIR_NOT_EMPTY
        40 => 1921,      // ELOOP: ERROR_CANT_RESOLVE_FILENAME
        61 => 1117,      // ENODATA: ERROR_IO_DEVICE (no such extended attribute)
        95 | 38 => 50,   // EOPNOTSUPP, ENOSYS: ERROR_NOT_SUPPORTED
        107 | 110 => 59, // ENOTCONN, ETIMEDOUT: ERROR_UNEXP_NET_ERR
        116 => 1006,     // ESTALE: ERROR_FILE_INVALID
        _ => 31,         // ERROR_GEN_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_errno_maps_to_a_failure() {
        for n in 1..200 {
            assert_ne!(win32(Errno(n)), 0, "errno {n}");
        }
        assert_eq!(win32(ENOENT), 2);
        assert_eq!(win32(Errno::EEXIST), 80);
        assert_eq!(win32(ENOTEMPTY), 145);
    }
}
