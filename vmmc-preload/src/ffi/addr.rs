//! C socket addresses to and from `std::net::SocketAddr`, at the edge, so the rest of the
//! crate only sees checked Rust values.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// An IPv4 or IPv6 address from a C address of `len` bytes; `None` for other families or a
/// short length.
pub(crate) fn to_std(ss: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match ss.ss_family as i32 {
        libc::AF_INET if len >= std::mem::size_of::<sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(ss as *const sockaddr_storage).cast::<sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const sockaddr_storage).cast::<sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The C form of an address.
pub(crate) fn from_std(addr: SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut ss: sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let s = unsafe { &mut *(&raw mut ss).cast::<sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let s = unsafe { &mut *(&raw mut ss).cast::<sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_scope_id = a.scope_id();
            std::mem::size_of::<sockaddr_in6>()
        }
    };
    (ss, len as socklen_t)
}

/// Reads a caller's address.
///
/// # Safety
/// `p` is null or valid for `len` bytes.
pub(crate) unsafe fn read(p: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if p.is_null() {
        return None;
    }
    // SAFETY: zero is a valid sockaddr_storage.
    let mut ss: sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<sockaddr_storage>());
    // SAFETY: the caller vouches for `len` bytes at `p`; `ss` has room for `n`.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&raw mut ss).cast::<u8>(), n) };
    to_std(&ss, n as socklen_t)
}

/// Writes an address to a caller's buffer as the kernel does: truncated to the room given,
/// with the full length reported.
///
/// # Safety
/// `p` and `lenp` are null or valid; `*lenp` bytes at `p` are writable.
pub(crate) unsafe fn write(addr: SocketAddr, p: *mut sockaddr, lenp: *mut socklen_t) {
    if p.is_null() || lenp.is_null() {
        return;
    }
    let (ss, len) = from_std(addr);
    // SAFETY: the caller vouches for `lenp`.
    let room = unsafe { *lenp } as usize;
    let n = room.min(len as usize);
    // SAFETY: `n` bytes fit at `p` (the caller's room) and in `ss`.
    unsafe { std::ptr::copy_nonoverlapping((&raw const ss).cast::<u8>(), p.cast::<u8>(), n) };
    // SAFETY: as above.
    unsafe { *lenp = len };
}
