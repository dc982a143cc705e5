//! WinSock's view of the socket table: `SOCKET` handles and `WSAE*` error codes.
//!
//! WinSock's `SOCKET` is an opaque handle, not a small integer, so programs cannot index the
//! table with it; the table converts both ways. A handle carries the slot's generation, so a
//! handle kept past `closesocket` (or made up) is refused instead of reaching whichever socket
//! reuses the slot.

use std::io;

use crate::codes;

/// A WinSock `SOCKET` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketHandle(pub u64);

/// WinSock's "not a socket".
pub const WSAENOTSOCK: i32 = 10038;
/// WinSock's "operation would block".
pub const WSAEWOULDBLOCK: i32 = 10035;

/// Handles are multiples of 4 like kernel handles, and never 0 or `INVALID_SOCKET`.
pub(crate) fn encode(index: usize, generation: u32) -> SocketHandle {
    SocketHandle((((u64::from(generation) << 24) | (index as u64 + 1)) << 2) ^ 0x5A5A_0000_0000)
}

/// The slot index and generation a handle names, if it is well-formed at all.
pub(crate) fn decode(h: SocketHandle) -> Option<(usize, u32)> {
    let v = h.0 ^ 0x5A5A_0000_0000;
    if v & 3 != 0 {
        return None;
    }
    let v = v >> 2;
    let index = (v & 0xFF_FFFF).checked_sub(1)? as usize;
    let generation = u32::try_from(v >> 24).ok()?;
    Some((index, generation))
}

/// The `WSAGetLastError` code for an error from this crate.
pub fn wsa_error(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(codes::ENOTSOCK) | Some(codes::EBADF) => return WSAENOTSOCK,
        Some(codes::EISCONN) => return 10056,
        Some(codes::ENOTCONN) => return 10057,
        Some(codes::EOPNOTSUPP) => return 10045,
        Some(codes::EINVAL) => return 10022,
        // Already WinSock's (Windows, a real socket's error).
        #[cfg(windows)]
        Some(c @ 10000..=11999) => return c,
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::WouldBlock => WSAEWOULDBLOCK,
        io::ErrorKind::ConnectionReset => 10054,
        io::ErrorKind::ConnectionAborted => 10053,
        io::ErrorKind::ConnectionRefused => 10061,
        io::ErrorKind::TimedOut => 10060,
        io::ErrorKind::AddrInUse => 10048,
        io::ErrorKind::BrokenPipe => 10058, // WSAESHUTDOWN
        io::ErrorKind::InvalidInput => 10022,
        io::ErrorKind::PermissionDenied => 10013,
        _ => 10107, // WSASYSCALLFAILURE: nothing more specific applies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_reject_forgeries() {
        for (i, g) in [(0, 0), (5, 1), (0xFF_FFFE, u32::MAX)] {
            let h = encode(i, g);
            assert_ne!(h.0, 0);
            assert_ne!(h.0, u64::MAX);
            assert_eq!(h.0 % 4, 0);
            assert_eq!(decode(h), Some((i, g)));
        }
        assert_eq!(decode(SocketHandle(encode(1, 1).0 + 1)), None);
        assert_eq!(decode(SocketHandle(0x5A5A_0000_0000)), None);
        assert_ne!(encode(3, 0), encode(3, 1));
    }

    #[test]
    fn errors_map_to_winsock_codes() {
        assert_eq!(
            wsa_error(&io::Error::from_raw_os_error(codes::ENOTSOCK)),
            WSAENOTSOCK
        );
        assert_eq!(wsa_error(&io::ErrorKind::WouldBlock.into()), WSAEWOULDBLOCK);
        assert_eq!(wsa_error(&io::ErrorKind::ConnectionReset.into()), 10054);
        assert_eq!(wsa_error(&io::ErrorKind::TimedOut.into()), 10060);
    }
}
