//! Errors travel as errno values: the client's kernel (through FUSE) or the interposed
//! program expects exactly these.

use serde::{Deserialize, Serialize};

/// An errno value, as the server's kernel returned it (or as the server chose it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(libc_consts::EPERM);
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(libc_consts::ENOENT);
    /// I/O error (and the stand-in for any error code not in range).
    pub const EIO: Errno = Errno(libc_consts::EIO);
    /// Bad file descriptor (an unknown open).
    pub const EBADF: Errno = Errno(libc_consts::EBADF);
    /// Permission denied.
    pub const EACCES: Errno = Errno(libc_consts::EACCES);
    /// File exists.
    pub const EEXIST: Errno = Errno(libc_consts::EEXIST);
    /// Not a directory.
    pub const ENOTDIR: Errno = Errno(libc_consts::ENOTDIR);
    /// Is a directory.
    pub const EISDIR: Errno = Errno(libc_consts::EISDIR);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc_consts::EINVAL);
    /// Read-only file system.
    pub const EROFS: Errno = Errno(libc_consts::EROFS);
    /// Result too large (a buffer too small for an xattr value).
    pub const ERANGE: Errno = Errno(libc_consts::ERANGE);
    /// File name too long.
    pub const ENAMETOOLONG: Errno = Errno(libc_consts::ENAMETOOLONG);
    /// Not supported.
    pub const ENOTSUP: Errno = Errno(libc_consts::EOPNOTSUPP);
    /// Too many symbolic links (a symlink where none may be followed).
    pub const ELOOP: Errno = Errno(libc_consts::ELOOP);
    /// Not connected (the server is gone).
    pub const ENOTCONN: Errno = Errno(libc_consts::ENOTCONN);
    /// Stale file handle: unknown, forged or of a deleted file.
    pub const ESTALE: Errno = Errno(libc_consts::ESTALE);
    /// Protocol error: the peer sent something malformed.
    pub const EPROTO: Errno = Errno(libc_consts::EPROTO);
    /// No data available (an xattr that is not there).
    pub const ENODATA: Errno = Errno(libc_consts::ENODATA);

    /// Errno as a value for `std::io::Error::from_raw_os_error`.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl std::fmt::Debug for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Errno({}: {})", self.0, self)
    }
}

impl std::fmt::Display for Errno {
    /// The plain sentence for people ("no such file or directory"); `Debug` has the number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&plain(&std::io::Error::from_raw_os_error(self.0)))
    }
}

/// An I/O error as people read it: the system's description, starting in lower case to go
/// after a colon, without Rust's "(os error 2)" or nix's "ENOENT: " in front.
///
/// ```
/// let e = std::io::Error::from_raw_os_error(2);
/// assert_eq!(dfs_proto::errno::plain(&e), "no such file or directory");
/// ```
pub fn plain(e: &std::io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(n) => {
            let full = std::io::Error::from_raw_os_error(n).to_string();
            match full.rfind(" (os error ") {
                Some(at) => full[..at].to_string(),
                None => full,
            }
        }
        None => e.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        // Lower-case a sentence's first letter, but not an acronym's ("EOF", "TCP").
        Some(c) if chars.clone().next().is_some_and(|d| d.is_lowercase()) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text,
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc_consts::EIO))
    }
}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// Linux's values: the protocol speaks Linux errno numbers on every platform, and a client on
/// another OS translates.
mod libc_consts {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const EACCES: i32 = 13;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EROFS: i32 = 30;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ELOOP: i32 = 40;
    pub const ENODATA: i32 = 61;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENOTCONN: i32 = 107;
    pub const ESTALE: i32 = 116;
}
