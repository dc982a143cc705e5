//! Who may import an export, and for what.
//!
//! An exporter grants rights per peer; the check runs once, when a peer imports, against an
//! identity the kernel vouches for (`SO_PEERCRED` on one host, the TCP peer address across
//! hosts), never against anything the peer says about itself.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::BitOr;

/// A set of access rights on an export: deposit (remote write), fetch (remote read), or both.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access(u8);

impl Access {
    /// Remote writes into the region ("deliberate update").
    pub const DEPOSIT: Access = Access(1);
    /// Remote reads from the region.
    pub const FETCH: Access = Access(2);
    /// Both deposit and fetch.
    pub const ALL: Access = Access(3);

    /// Whether every right in `other` is also in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits as sent on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// A non-empty set of known rights, or `None`.
    pub fn from_bits(bits: u64) -> Option<Access> {
        if bits != 0 && bits & !u64::from(Access::ALL.0) == 0 {
            Some(Access(bits as u8))
        } else {
            None
        }
    }
}

impl BitOr for Access {
    type Output = Access;

    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.contains(Access::DEPOSIT), self.contains(Access::FETCH)) {
            (true, true) => f.write_str("deposit+fetch"),
            (true, false) => f.write_str("deposit"),
            (false, true) => f.write_str("fetch"),
            (false, false) => f.write_str("no"),
        }
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Access({self})")
    }
}

/// Who an importing peer is, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// A process on this host (shm backend).
    Local {
        /// Its process id.
        pid: i32,
        /// Its effective user id.
        uid: u32,
        /// Its effective group id.
        gid: u32,
    },
    /// A process behind a TCP connection (tcp backend).
    Remote(SocketAddr),
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Local { pid, uid, .. } => write!(f, "pid {pid} (uid {uid})"),
            PeerIdentity::Remote(sa) => write!(f, "{sa}"),
        }
    }
}

/// A rule matching importing peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMatch {
    /// Any peer that can reach the endpoint.
    Any,
    /// Local processes running as this user id (shm backend only).
    Uid(u32),
    /// Remote peers connecting from this address (tcp backend only).
    Host(IpAddr),
}

impl PeerMatch {
    /// Local processes of the user running this process: the usual grant between the halves
    /// of one application.
    pub fn current_user() -> PeerMatch {
        PeerMatch::Uid(nix::unistd::geteuid().as_raw())
    }

    fn matches(&self, peer: &PeerIdentity) -> bool {
        match (self, peer) {
            (PeerMatch::Any, _) => true,
            (PeerMatch::Uid(want), PeerIdentity::Local { uid, .. }) => want == uid,
            (PeerMatch::Host(want), PeerIdentity::Remote(sa)) => {
                *want == sa.ip() || Some(*want) == v4_mapped(sa.ip())
            }
            _ => false,
        }
    }
}

fn v4_mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// The rights an export grants. Nothing is granted until a rule says so.
///
/// ```
/// use vmmc_nic::{Access, PeerMatch, Permissions};
/// let p = Permissions::none()
///     .allow(Access::DEPOSIT, PeerMatch::current_user())
///     .allow(Access::FETCH, PeerMatch::Any);
/// # let _ = p;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Permissions {
    deposit: Vec<PeerMatch>,
    fetch: Vec<PeerMatch>,
}

impl Permissions {
    /// Grants nothing: the region is usable only by its exporter.
    pub fn none() -> Permissions {
        Permissions::default()
    }

    /// Grants everything to every peer that can reach the endpoint.
    pub fn open() -> Permissions {
        Permissions::none().allow(Access::ALL, PeerMatch::Any)
    }

    /// Adds a rule granting `access` to peers matching `who`.
    pub fn allow(mut self, access: Access, who: PeerMatch) -> Permissions {
        if access.contains(Access::DEPOSIT) {
            self.deposit.push(who.clone());
        }
        if access.contains(Access::FETCH) {
            self.fetch.push(who);
        }
        self
    }

    /// Whether `peer` holds every right in `want`.
    pub fn permits(&self, peer: &PeerIdentity, want: Access) -> bool {
        let ok = |rules: &[PeerMatch]| rules.iter().any(|r| r.matches(peer));
        (!want.contains(Access::DEPOSIT) || ok(&self.deposit))
            && (!want.contains(Access::FETCH) || ok(&self.fetch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_bits() {
        assert_eq!(Access::from_bits(1), Some(Access::DEPOSIT));
        assert_eq!(Access::from_bits(3), Some(Access::ALL));
        assert_eq!(Access::from_bits(0), None);
        assert_eq!(Access::from_bits(4), None);
        assert_eq!(Access::from_bits(1 << 40), None);
        assert!(Access::ALL.contains(Access::FETCH));
        assert!(!Access::DEPOSIT.contains(Access::FETCH));
        assert_eq!(Access::DEPOSIT | Access::FETCH, Access::ALL);
    }

    #[test]
    fn permissions_match_kernel_identities() {
        let local = |uid| PeerIdentity::Local {
            pid: 1,
            uid,
            gid: 1,
        };
        let remote = |s: &str| PeerIdentity::Remote(s.parse().unwrap());
        let p = Permissions::none()
            .allow(Access::DEPOSIT, PeerMatch::Uid(1000))
            .allow(Access::FETCH, PeerMatch::Host("10.0.0.1".parse().unwrap()));
        assert!(p.permits(&local(1000), Access::DEPOSIT));
        assert!(!p.permits(&local(1000), Access::FETCH));
        assert!(!p.permits(&local(1000), Access::ALL));
        assert!(!p.permits(&local(0), Access::DEPOSIT));
        assert!(p.permits(&remote("10.0.0.1:5"), Access::FETCH));
        assert!(p.permits(&remote("[::ffff:10.0.0.1]:5"), Access::FETCH));
        assert!(!p.permits(&remote("10.0.0.2:5"), Access::FETCH));
        assert!(!p.permits(&remote("10.0.0.1:5"), Access::DEPOSIT));
        assert!(!Permissions::none().permits(&local(0), Access::FETCH));
        assert!(Permissions::open().permits(&remote("1.2.3.4:1"), Access::ALL));
    }
}
