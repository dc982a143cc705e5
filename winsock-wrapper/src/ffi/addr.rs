//! WinSock socket addresses to and from `std::net::SocketAddr`, as bytes, at the edge.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `AF_INET`.
pub(crate) const AF_INET: u16 = 2;
/// `AF_INET6` (WinSock's number).
pub(crate) const AF_INET6: u16 = 23;

const V4_LEN: usize = 16;
const V6_LEN: usize = 28;

/// An IPv4 or IPv6 address from the bytes of a `SOCKADDR`; `None` for other families or a
/// short length.
pub(crate) fn parse(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_le_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        AF_INET if b.len() >= V4_LEN => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        AF_INET6 if b.len() >= V6_LEN => {
            let flow = u32::from_be_bytes(b[4..8].try_into().ok()?);
            let ip: [u8; 16] = b[8..24].try_into().ok()?;
            let scope = u32::from_le_bytes(b[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The bytes of the `SOCKADDR` for `a`.
pub(crate) fn emit(a: SocketAddr) -> Vec<u8> {
    match a {
        SocketAddr::V4(a) => {
            let mut b = vec![0u8; V4_LEN];
            b[..2].copy_from_slice(&AF_INET.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        SocketAddr::V6(a) => {
            let mut b = vec![0u8; V6_LEN];
            b[..2].copy_from_slice(&AF_INET6.to_le_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_le_bytes());
            b
        }
    }
}

/// The loopback address of a family, with `port`: what a routed socket reports where it has
/// no address of its own.
pub(crate) fn loopback(family: u16, port: u16) -> SocketAddr {
    if family == AF_INET6 {
        SocketAddr::from((Ipv6Addr::LOCALHOST, port))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for a in ["127.0.0.1:5201", "[::1]:80", "[fe80::1%3]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(parse(&emit(a)), Some(a));
        }
        assert_eq!(parse(&emit("1.2.3.4:5".parse().unwrap())[..8]), None);
        assert_eq!(parse(&[1, 0, 0, 0]), None);
    }
}
