//! Addresses of endpoints and exports.
//!
//! Everything a caller names arrives here as a string or an integer and leaves as a checked
//! newtype, so the rest of the crate never sees an unvalidated name.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest accepted `shm:` name. Abstract Unix socket names are capped at 107 bytes and the crate
/// prefixes its own namespace, so this leaves room with a margin.
pub const MAX_SHM_NAME_LEN: usize = 80;

/// The name of a one-host (`shm:`) endpoint: 1 to [`MAX_SHM_NAME_LEN`] bytes of
/// `[A-Za-z0-9._-]`.
///
/// The name becomes an abstract Unix socket, so nothing is created on disk or in `/dev/shm`
/// and the name disappears with the process that bound it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShmName(String);

impl ShmName {
    /// Checks `name` against the allowed alphabet and length.
    pub fn new(name: &str) -> Result<ShmName> {
        let bad = |why| Error::BadAddress {
            addr: format!("shm:{name}"),
            why,
        };
        if name.is_empty() {
            return Err(bad("the shm name is empty"));
        }
        if name.len() > MAX_SHM_NAME_LEN {
            return Err(bad("the shm name is longer than 80 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(bad(
                "the shm name may hold only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(ShmName(name.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The abstract socket name the control socket binds; namespaced so that unrelated
    /// programs' abstract sockets cannot collide with ours.
    pub(crate) fn socket_name(&self) -> Vec<u8> {
        format!("vmmc-nic/{}", self.0).into_bytes()
    }
}

/// The address of a cross-host (`tcp:`) endpoint, kept as written and resolved when used, so
/// that a name like `localhost` follows the resolver at the time of the call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpAddr {
    host: String,
    port: u16,
}

impl TcpAddr {
    /// A host (name, IPv4 or IPv6 literal without brackets) and a port; port 0 asks for an
    /// ephemeral port when binding.
    pub fn new(host: &str, port: u16) -> Result<TcpAddr> {
        if host.is_empty() {
            return Err(Error::BadAddress {
                addr: format!("tcp::{port}"),
                why: "the host is empty",
            });
        }
        Ok(TcpAddr {
            host: host.to_owned(),
            port,
        })
    }

    /// The host part.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port part.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// All socket addresses the host resolves to.
    pub(crate) fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| Error::Io {
                context: "resolving the tcp host",
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::BadAddress {
                addr: self.to_string(),
                why: "the host resolves to no address",
            });
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for TcpAddr {
    fn from(sa: SocketAddr) -> TcpAddr {
        TcpAddr {
            host: sa.ip().to_string(),
            port: sa.port(),
        }
    }
}

impl fmt::Display for TcpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp:[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp:{}:{}", self.host, self.port)
        }
    }
}

/// Where an endpoint lives; the scheme picks the backend.
///
/// ```
/// use vmmc_nic::NodeAddr;
/// let a: NodeAddr = "shm:fileserver".parse().unwrap();
/// let b: NodeAddr = "tcp:127.0.0.1:7000".parse().unwrap();
/// assert_eq!(a.to_string(), "shm:fileserver");
/// assert_eq!(b.to_string(), "tcp:127.0.0.1:7000");
/// assert!("udp:x".parse::<NodeAddr>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeAddr {
    /// Processes on one host, sharing memory.
    Shm(ShmName),
    /// Processes on different hosts, over a TCP connection per import.
    Tcp(TcpAddr),
}

impl FromStr for NodeAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<NodeAddr> {
        let bad = |why| Error::BadAddress {
            addr: s.to_owned(),
            why,
        };
        if let Some(name) = s.strip_prefix("shm:") {
            return Ok(NodeAddr::Shm(ShmName::new(name)?));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("expected tcp:HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            return Ok(NodeAddr::Tcp(TcpAddr::new(host, port)?));
        }
        Err(bad("expected shm:NAME or tcp:HOST:PORT"))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAddr::Shm(name) => write!(f, "shm:{}", name.as_str()),
            NodeAddr::Tcp(addr) => addr.fmt(f),
        }
    }
}

/// Names one export of an endpoint. Never zero, so a zeroed or forged header cannot name a
/// real export by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportId(NonZeroU32);

impl ExportId {
    /// `None` for zero.
    pub fn new(raw: u32) -> Option<ExportId> {
        NonZeroU32::new(raw).map(ExportId)
    }

    /// The raw value, for printing or sending to a peer.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl FromStr for ExportId {
    type Err = Error;

    fn from_str(s: &str) -> Result<ExportId> {
        s.trim_start_matches('#')
            .parse::<u32>()
            .ok()
            .and_then(ExportId::new)
            .ok_or(Error::BadExportId(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_names_are_checked() {
        assert!(ShmName::new("a.b_c-9").is_ok());
        assert!(ShmName::new("").is_err());
        assert!(ShmName::new("a/b").is_err());
        assert!(ShmName::new("a b").is_err());
        assert!(ShmName::new(&"x".repeat(MAX_SHM_NAME_LEN)).is_ok());
        assert!(ShmName::new(&"x".repeat(MAX_SHM_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn node_addrs_parse_and_print() {
        for s in [
            "shm:x",
            "tcp:localhost:0",
            "tcp:10.1.2.3:65535",
            "tcp:[::1]:80",
        ] {
            let a: NodeAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let v6: NodeAddr = "tcp:[::1]:80".parse().unwrap();
        assert!(matches!(v6, NodeAddr::Tcp(ref t) if t.host() == "::1" && t.port() == 80));
        for s in [
            "",
            "shm:",
            "tcp:",
            "tcp:host",
            "tcp:host:65536",
            "tcp::80",
            "tcp:h:-1",
            "x:y",
        ] {
            assert!(s.parse::<NodeAddr>().is_err(), "{s} should not parse");
        }
    }

    #[test]
    fn export_ids_are_never_zero() {
        assert!(ExportId::new(0).is_none());
        assert_eq!(ExportId::new(7).unwrap().get(), 7);
        assert_eq!("#7".parse::<ExportId>().unwrap().get(), 7);
        assert!("0".parse::<ExportId>().is_err());
        assert!("-1".parse::<ExportId>().is_err());
    }

    #[test]
    fn tcp_addrs_resolve() {
        let a = TcpAddr::new("127.0.0.1", 9).unwrap();
        assert_eq!(a.resolve().unwrap()[0].port(), 9);
    }
}
