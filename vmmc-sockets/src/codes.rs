//! The error codes the socket table reports, as the system's own sockets would: errno values
//! on Unix, `WSAE*` values on Windows (where `io::Error`'s raw codes are WinSock's for
//! sockets), so `raw_os_error` and `kind` mean the same as for a kernel socket.

#[cfg(unix)]
pub(crate) use libc::{EBADF, EINVAL, EISCONN, ENOTCONN, ENOTSOCK, EOPNOTSUPP};

/// `WSAEBADF`.
#[cfg(windows)]
pub(crate) const EBADF: i32 = 10009;
/// `WSAEINVAL`.
#[cfg(windows)]
pub(crate) const EINVAL: i32 = 10022;
/// `WSAEISCONN`.
#[cfg(windows)]
pub(crate) const EISCONN: i32 = 10056;
/// `WSAENOTCONN`.
#[cfg(windows)]
pub(crate) const ENOTCONN: i32 = 10057;
/// `WSAENOTSOCK`.
#[cfg(windows)]
pub(crate) const ENOTSOCK: i32 = 10038;
/// `WSAEOPNOTSUPP`.
#[cfg(windows)]
pub(crate) const EOPNOTSUPP: i32 = 10045;
