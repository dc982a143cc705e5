//! The connect request a client attaches to its import of the listener.
//!
//! ```text
//! 0      4        6        8            12           20         22         24        56
//! | "VSK1" | version | flags | ring export | ring size | tcp port | name len | ring key | name ...
//! ```
//!
//! It tells the listener where the client's receive ring is and hands it the key that ring
//! requires: the request travels on the listener's own import connection, so the listener is
//! the only other process that learns the key. It comes from an untrusted peer:
//! [`ConnectRequest::parse`] checks every field, and the listener later checks that the ring
//! really belongs to the process that sent the request.

use vmmc_nic::{ExportId, ImportKey, ShmName, KEY_LEN};

use crate::layout::RingSize;

const MAGIC: &[u8; 4] = b"VSK1";
/// Version 2 added the ring key; a version-1 client's ring would be importable by anyone.
const VERSION: u16 = 2;
const FIXED: usize = 24 + KEY_LEN;

/// Where the client's endpoint is, for the listener to import from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClientEndpoint {
    /// `shm:NAME` on this host.
    Shm(ShmName),
    /// A tcp port on the address the request came from.
    TcpPort(u16),
}

/// A validated connect request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnectRequest {
    pub(crate) endpoint: ClientEndpoint,
    pub(crate) ring_export: ExportId,
    pub(crate) ring: RingSize,
    /// What the client's ring export requires of its importer.
    pub(crate) key: ImportKey,
}

impl ConnectRequest {
    pub(crate) fn emit(&self) -> Vec<u8> {
        let (port, name) = match &self.endpoint {
            ClientEndpoint::Shm(n) => (0u16, n.as_str().as_bytes()),
            ClientEndpoint::TcpPort(p) => (*p, &b""[..]),
        };
        let mut out = Vec::with_capacity(FIXED + name.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.ring_export.get().to_le_bytes());
        out.extend_from_slice(&self.ring.get().to_le_bytes());
        out.extend_from_slice(&port.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(name);
        out
    }

    pub(crate) fn parse(b: &[u8]) -> Result<ConnectRequest, String> {
        if b.len() < FIXED {
            return Err(format!("connect request of {} bytes is too short", b.len()));
        }
        if &b[0..4] != MAGIC {
            return Err("not a vmmc-sockets connect request".into());
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let version = u16_at(4);
        if version != VERSION {
            return Err(format!(
                "connect request version {version} is not supported"
            ));
        }
        if u16_at(6) != 0 {
            return Err("unknown connect request flags".into());
        }
        let id = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        let ring_export = ExportId::new(id).ok_or("ring export id zero")?;
        let mut size = [0u8; 8];
        size.copy_from_slice(&b[12..20]);
        let size = u64::from_le_bytes(size);
        let ring = RingSize::new(size).ok_or_else(|| format!("invalid ring size {size}"))?;
        let port = u16_at(20);
        let name_len = usize::from(u16_at(22));
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&b[24..FIXED]);
        let key = ImportKey::from_bytes(key);
        if b.len() != FIXED + name_len {
            return Err("connect request length does not match its name".into());
        }
        let endpoint = match (port, name_len) {
            (0, 0) => return Err("connect request names no endpoint".into()),
            (p, 0) => ClientEndpoint::TcpPort(p),
            (0, _) => {
                let name =
                    std::str::from_utf8(&b[FIXED..]).map_err(|_| "endpoint name is not UTF-8")?;
                ClientEndpoint::Shm(ShmName::new(name).map_err(|e| e.to_string())?)
            }
            _ => return Err("connect request names both a port and a name".into()),
        };
        Ok(ConnectRequest {
            endpoint,
            ring_export,
            ring,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm() -> ConnectRequest {
        ConnectRequest {
            endpoint: ClientEndpoint::Shm(ShmName::new("c-1-2").unwrap()),
            ring_export: ExportId::new(3).unwrap(),
            ring: RingSize::new(1 << 20).unwrap(),
            key: ImportKey::from_bytes([7; KEY_LEN]),
        }
    }

    #[test]
    fn requests_round_trip() {
        let tcp = ConnectRequest {
            endpoint: ClientEndpoint::TcpPort(4000),
            ..shm()
        };
        for r in [shm(), tcp] {
            assert_eq!(ConnectRequest::parse(&r.emit()), Ok(r));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let good = shm().emit();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            ConnectRequest::parse(&b)
        };
        assert!(ConnectRequest::parse(&good[..10]).is_err());
        assert!(ConnectRequest::parse(&good[..good.len() - 1]).is_err());
        assert!(with(0, b'X').is_err());
        assert!(with(4, 9).is_err());
        assert!(with(6, 1).is_err());
        assert!(with(8, 0).is_err() || good[9..12] != [0, 0, 0]);
        assert!(with(12, 1).is_err(), "ring size not a power of two");
        assert!(with(20, 1).is_err(), "both a port and a name");
        assert!(with(FIXED, b'/').is_err(), "bad name");
        let mut long = good.clone();
        long.push(b'x');
        assert!(ConnectRequest::parse(&long).is_err());
    }
}
