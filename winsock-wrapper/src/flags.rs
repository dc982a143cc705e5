//! WinSock's numbers (flags, option names, requests) and what they become in the socket
//! table: the translation, with no system in it, so it is tested on any host.

use std::io;

use vmmc_sockets::table;

/// `MSG_OOB`.
pub const MSG_OOB: i32 = 0x1;
/// `MSG_PEEK`.
pub const MSG_PEEK: i32 = 0x2;
/// `MSG_DONTROUTE`: meaningless on a VMMC stream, ignored.
pub const MSG_DONTROUTE: i32 = 0x4;
/// `MSG_WAITALL`.
pub const MSG_WAITALL: i32 = 0x8;
/// `MSG_PUSH_IMMEDIATE`: every send is visible at once anyway, ignored.
pub const MSG_PUSH_IMMEDIATE: i32 = 0x20;

/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 0xffff;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: i32 = 6;
/// `TCP_NODELAY`.
pub const TCP_NODELAY: i32 = 1;
/// `SO_ACCEPTCONN`.
pub const SO_ACCEPTCONN: i32 = 0x2;
/// `SO_SNDBUF`.
pub const SO_SNDBUF: i32 = 0x1001;
/// `SO_RCVBUF`.
pub const SO_RCVBUF: i32 = 0x1002;
/// `SO_SNDTIMEO`.
pub const SO_SNDTIMEO: i32 = 0x1005;
/// `SO_RCVTIMEO`.
pub const SO_RCVTIMEO: i32 = 0x1006;
/// `SO_ERROR`.
pub const SO_ERROR: i32 = 0x1007;
/// `SO_TYPE`.
pub const SO_TYPE: i32 = 0x1008;

/// `FIONBIO`.
pub const FIONBIO: u32 = 0x8004_667e;
/// `FIONREAD`.
pub const FIONREAD: u32 = 0x4004_667f;
/// `SIOCATMARK`.
pub const SIOCATMARK: u32 = 0x4004_7307;

/// `WSAEOPNOTSUPP`: what a routed socket answers to what it cannot do.
pub const WSAEOPNOTSUPP: i32 = 10045;
/// `WSAEINVAL`.
pub const WSAEINVAL: i32 = 10022;
/// `WSAEFAULT`: a buffer too small or not there.
pub const WSAEFAULT: i32 = 10014;
/// `WSAENOTCONN`.
pub const WSAENOTCONN: i32 = 10057;
/// `WSAEISCONN`.
pub const WSAEISCONN: i32 = 10056;
/// `WSAECONNREFUSED`.
pub const WSAECONNREFUSED: i32 = 10061;

/// The table's flags for WinSock's `send`/`recv` flags; flags with no meaning on a VMMC
/// stream are dropped, unknown ones refused.
pub fn msg_flags(flags: i32) -> io::Result<i32> {
    let known = MSG_OOB | MSG_PEEK | MSG_DONTROUTE | MSG_WAITALL | MSG_PUSH_IMMEDIATE;
    if flags & !known != 0 {
        return Err(io::Error::from_raw_os_error(WSAEOPNOTSUPP));
    }
    let mut out = 0;
    if flags & MSG_OOB != 0 {
        out |= table::MSG_OOB;
    }
    if flags & MSG_PEEK != 0 {
        out |= table::MSG_PEEK;
    }
    if flags & MSG_WAITALL != 0 {
        out |= table::MSG_WAITALL;
    }
    Ok(out)
}

/// WinSock's `DWORD` milliseconds of `SO_RCVTIMEO`/`SO_SNDTIMEO` (0: for ever).
pub fn timeout_from_ms(ms: u32) -> Option<std::time::Duration> {
    (ms != 0).then(|| std::time::Duration::from_millis(u64::from(ms)))
}

/// The other way.
pub fn timeout_to_ms(t: Option<std::time::Duration>) -> u32 {
    t.map_or(0, |t| t.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
}

/// The WinSock error code for an error of the table (or of the wrapper itself).
pub fn wsa_code(e: &io::Error) -> i32 {
    vmmc_sockets::winsock::wsa_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_translate_or_are_refused() {
        assert_eq!(msg_flags(0).unwrap(), 0);
        assert_eq!(
            msg_flags(MSG_PEEK | MSG_WAITALL).unwrap(),
            table::MSG_PEEK | table::MSG_WAITALL
        );
        assert_eq!(msg_flags(MSG_OOB | MSG_DONTROUTE).unwrap(), table::MSG_OOB);
        assert!(msg_flags(0x1000).is_err());
    }

    #[test]
    fn timeouts_round_trip() {
        assert_eq!(timeout_from_ms(0), None);
        assert_eq!(timeout_to_ms(timeout_from_ms(1500)), 1500);
        assert_eq!(timeout_to_ms(None), 0);
    }
}
