//! `errno` values for the socket table's errors, as a kernel socket would give them.

use std::io;

/// The `errno` a program expects for `e`.
pub fn of(e: &io::Error) -> i32 {
    if let Some(code) = e.raw_os_error() {
        return code;
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock => libc::EAGAIN,
        // A receive or send timeout (SO_RCVTIMEO/SO_SNDTIMEO) reads as EAGAIN on Linux.
        K::TimedOut => libc::EAGAIN,
        K::ConnectionReset | K::UnexpectedEof => libc::ECONNRESET,
        K::ConnectionAborted => libc::ECONNABORTED,
        K::ConnectionRefused | K::NotFound => libc::ECONNREFUSED,
        K::BrokenPipe => libc::EPIPE,
        K::NotConnected => libc::ENOTCONN,
        K::AddrInUse => libc::EADDRINUSE,
        K::AddrNotAvailable => libc::EADDRNOTAVAIL,
        K::InvalidInput => libc::EINVAL,
        K::PermissionDenied => libc::EACCES,
        K::Interrupted => libc::EINTR,
        K::OutOfMemory => libc::ENOMEM,
        K::Unsupported => libc::EOPNOTSUPP,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_what_kernel_sockets_say() {
        assert_eq!(
            of(&io::Error::from_raw_os_error(libc::ENOTCONN)),
            libc::ENOTCONN
        );
        assert_eq!(of(&io::ErrorKind::WouldBlock.into()), libc::EAGAIN);
        assert_eq!(of(&io::ErrorKind::ConnectionReset.into()), libc::ECONNRESET);
        assert_eq!(of(&io::ErrorKind::BrokenPipe.into()), libc::EPIPE);
        assert_eq!(of(&io::Error::other("x")), libc::EIO);
    }
}
