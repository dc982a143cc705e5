//! Who may import an export, and for what.
//!
//! An exporter grants rights per peer; the check runs once, when a peer imports, against an
//! identity the kernel vouches for (`SO_PEERCRED` on one host, the TCP peer address across
//! hosts), never against anything the peer says about itself. An export may also require an
//! [`ImportKey`]: a random capability its owner hands only to the peer it means (in a
//! greeting, say). An IP address is not a peer's identity on a shared host, and a uid is not
//! one process; the key is what makes "only the peer this connection is with" hold on both
//! backends.

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
    /// A process on this host (shm backend), as it was when it connected.
    Local {
        /// Its process id (0 when it lives in a pid namespace this process cannot see).
        pid: i32,
        /// Its effective user id.
        uid: u32,
        /// Its effective group id.
        gid: u32,
        /// Its supplementary groups (`SO_PEERGROUPS`), so that a server acting for it grants
        /// exactly what the kernel would.
        groups: Vec<u32>,
    },
    /// A process behind a TCP connection (tcp backend).
    Remote(SocketAddr),
}

impl PeerIdentity {
    /// The unit that per-peer limits count in: a local user (root is not limited, it could
    /// take the whole machine anyway) or a remote address. Local users share nothing with
    /// each other's budgets; everyone behind one address shares one.
    pub(crate) fn principal(&self) -> Option<Principal> {
        match self {
            PeerIdentity::Local { uid: 0, .. } => None,
            PeerIdentity::Local { uid, .. } => Some(Principal::Uid(*uid)),
            PeerIdentity::Remote(sa) => Some(Principal::Ip(v4_mapped(sa.ip()).unwrap_or(sa.ip()))),
        }
    }
}

/// What a per-peer limit counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Principal {
    Uid(u32),
    Ip(IpAddr),
}

/// A capability for importing one export: 32 random bytes the exporter requires and the
/// importer presents with its request. Whoever holds it may import (if the rules also admit
/// it), so it travels only where the peer alone can read it. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportKey([u8; KEY_LEN]);

/// Bytes in an [`ImportKey`].
pub const KEY_LEN: usize = 32;

impl ImportKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn random() -> crate::Result<ImportKey> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k)
            .map_err(|e| crate::Error::io("reading the system's random numbers")(e.into()))?;
        Ok(ImportKey(k))
    }

    /// A key received from a peer (in a greeting, say).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> ImportKey {
        ImportKey(bytes)
    }

    /// The bytes, to hand to the peer that may import.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Compares in constant time, so that timing tells nothing about how much of a guess
    /// was right.
    fn matches(&self, other: &ImportKey) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for ImportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImportKey(…)")
    }
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
    /// Exactly one local process: this pid, running as this uid (shm backend only). A pid of
    /// 0 (a process in a pid namespace we cannot see) never matches.
    Process {
        /// Its process id.
        pid: i32,
        /// Its effective user id.
        uid: u32,
    },
    /// Remote peers connecting from this address (tcp backend only).
    Host(IpAddr),
}

impl PeerMatch {
    /// Local processes of the user running this process: the usual grant between the halves
    /// of one application.
    /// On Windows, which has no local (shm) peers yet, it matches no one.
    pub fn current_user() -> PeerMatch {
        #[cfg(unix)]
        let uid = nix::unistd::geteuid().as_raw();
        #[cfg(windows)]
        let uid = u32::MAX;
        PeerMatch::Uid(uid)
    }

    fn matches(&self, peer: &PeerIdentity) -> bool {
        match (self, peer) {
            (PeerMatch::Any, _) => true,
            (PeerMatch::Uid(want), PeerIdentity::Local { uid, .. }) => want == uid,
            (PeerMatch::Process { pid, uid }, PeerIdentity::Local { pid: p, uid: u, .. }) => {
                *pid != 0 && pid == p && uid == u
            }
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
/// use vmmc_nic::{Access, ImportKey, PeerMatch, Permissions};
/// let p = Permissions::none()
///     .allow(Access::DEPOSIT, PeerMatch::current_user())
///     .allow(Access::FETCH, PeerMatch::Any);
/// // Only for whoever also presents this key:
/// let q = Permissions::none()
///     .allow(Access::DEPOSIT, PeerMatch::Any)
///     .with_key(ImportKey::random().unwrap());
/// # let _ = (p, q);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Permissions {
    deposit: Vec<PeerMatch>,
    fetch: Vec<PeerMatch>,
    key: Option<ImportKey>,
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

    /// Requires every importer to present `key` as well as match a rule.
    pub fn with_key(mut self, key: ImportKey) -> Permissions {
        self.key = Some(key);
        self
    }

    /// Whether an export with these permissions requires a key.
    pub fn needs_key(&self) -> bool {
        self.key.is_some()
    }

    /// Whether `peer`, presenting `key`, holds every right in `want`.
    pub fn permits(&self, peer: &PeerIdentity, want: Access, key: Option<&ImportKey>) -> bool {
        let ok = |rules: &[PeerMatch]| rules.iter().any(|r| r.matches(peer));
        let keyed = match (&self.key, key) {
            (None, _) => true,
            (Some(need), Some(got)) => need.matches(got),
            (Some(_), None) => false,
        };
        keyed
            && (!want.contains(Access::DEPOSIT) || ok(&self.deposit))
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
            groups: vec![],
        };
        let remote = |s: &str| PeerIdentity::Remote(s.parse().unwrap());
        let p = Permissions::none()
            .allow(Access::DEPOSIT, PeerMatch::Uid(1000))
            .allow(Access::FETCH, PeerMatch::Host("10.0.0.1".parse().unwrap()));
        assert!(p.permits(&local(1000), Access::DEPOSIT, None));
        assert!(!p.permits(&local(1000), Access::FETCH, None));
        assert!(!p.permits(&local(1000), Access::ALL, None));
        assert!(!p.permits(&local(0), Access::DEPOSIT, None));
        assert!(p.permits(&remote("10.0.0.1:5"), Access::FETCH, None));
        assert!(p.permits(&remote("[::ffff:10.0.0.1]:5"), Access::FETCH, None));
        assert!(!p.permits(&remote("10.0.0.2:5"), Access::FETCH, None));
        assert!(!p.permits(&remote("10.0.0.1:5"), Access::DEPOSIT, None));
        assert!(!Permissions::none().permits(&local(0), Access::FETCH, None));
        assert!(Permissions::open().permits(&remote("1.2.3.4:1"), Access::ALL, None));
    }

    #[test]
    fn keys_and_processes() {
        let me = PeerIdentity::Local {
            pid: 7,
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let twin = PeerIdentity::Local {
            pid: 8,
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let key = ImportKey::random().unwrap();
        let other = ImportKey::random().unwrap();
        assert_ne!(key, other);
        let p = Permissions::none()
            .allow(Access::DEPOSIT, PeerMatch::Process { pid: 7, uid: 1000 })
            .with_key(key.clone());
        assert!(p.needs_key());
        assert!(p.permits(&me, Access::DEPOSIT, Some(&key)));
        assert!(!p.permits(&me, Access::DEPOSIT, None));
        assert!(!p.permits(&me, Access::DEPOSIT, Some(&other)));
        assert!(!p.permits(&twin, Access::DEPOSIT, Some(&key)));
        let hidden =
            Permissions::none().allow(Access::DEPOSIT, PeerMatch::Process { pid: 0, uid: 1000 });
        let nobody_seen = PeerIdentity::Local {
            pid: 0,
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        assert!(!hidden.permits(&nobody_seen, Access::DEPOSIT, None));
        assert_eq!(format!("{key:?}"), "ImportKey(…)");
        assert_eq!(me.principal(), Some(Principal::Uid(1000)));
        let root = PeerIdentity::Local {
            pid: 1,
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        assert_eq!(root.principal(), None);
        let mapped = PeerIdentity::Remote("[::ffff:10.0.0.1]:5".parse().unwrap());
        assert_eq!(
            mapped.principal(),
            Some(Principal::Ip("10.0.0.1".parse().unwrap()))
        );
    }
}
