//! Whose identity a request runs as, and acting as it.
//!
//! A request carries the ids its caller claims, but a claim counts only from a peer entitled
//! to make it ([`Trust`], decided once per connection): on shm the kernel says who the peer
//! is, and only a peer running as root (a mount daemon serving many users) may speak for
//! others; any other local process acts as itself. On tcp a claim counts only from a peer
//! that proved the shared secret (or on a network the operator declared trusted); anyone
//! else is nobody. Squashing then applies as configured.
//!
//! With the server running as root, each request runs with that identity's fsuid, fsgid and
//! supplementary groups, set on the serving thread only, so the kernel's own permission
//! checks decide. Changing the fsuid away from 0 also drops the file-system capabilities
//! (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`, …) for the thread, which is exactly what makes the
//! checks the caller's.

use dfs_proto::msg::Creds;
use nix::unistd::{setfsgid, setfsuid, Gid, Uid};

use crate::sys;

/// The unprivileged identity squashed callers get (`nobody` / `nogroup` on Debian).
pub const NOBODY: u32 = 65534;

/// Whose identity a request runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Squash {
    /// Map uid 0 (and gid 0) to nobody; everyone else as they are. The default, as in NFS.
    #[default]
    Root,
    /// Everyone as they are, root included.
    None,
    /// Everyone is nobody.
    All,
}

impl std::str::FromStr for Squash {
    type Err = String;
    fn from_str(s: &str) -> Result<Squash, String> {
        match s {
            "root" => Ok(Squash::Root),
            "none" => Ok(Squash::None),
            "all" => Ok(Squash::All),
            _ => Err(format!("--squash takes root, none or all, not {s:?}")),
        }
    }
}

/// An identity after squashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// File-system user id.
    pub uid: u32,
    /// File-system group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// What a connection's peer may say about who its callers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Its callers' claimed ids count (then squashing applies): a local peer running as root,
    /// a tcp peer that proved the secret, or any tcp peer on a network declared trusted.
    Claims,
    /// It acts as this identity whatever it claims: a local non-root process, as the kernel
    /// reported it (uid, gid, supplementary groups).
    Fixed(Identity),
    /// It acts as nobody: a tcp peer that proved nothing.
    Nobody,
}

impl Trust {
    /// The trust a peer gets: `peer` as the kernel reported it, `authenticated` whether it
    /// proved the shared secret, `trusted_network` whether the operator vouches for every
    /// host that can reach a tcp listener.
    pub fn of(
        peer: &vmmc_sockets::PeerIdentity,
        authenticated: bool,
        trusted_network: bool,
    ) -> Trust {
        match peer {
            vmmc_sockets::PeerIdentity::Local { uid: 0, .. } => Trust::Claims,
            vmmc_sockets::PeerIdentity::Local {
                uid, gid, groups, ..
            } => Trust::Fixed(Identity {
                uid: *uid,
                gid: *gid,
                groups: groups.iter().copied().take(MAX_GROUPS).collect(),
            }),
            vmmc_sockets::PeerIdentity::Remote(_) if authenticated || trusted_network => {
                Trust::Claims
            }
            vmmc_sockets::PeerIdentity::Remote(_) => Trust::Nobody,
        }
    }
}

/// Groups kept for an identity the kernel reported, as many as a request may carry.
const MAX_GROUPS: usize = dfs_proto::msg::MAX_GROUPS;

fn nobody() -> Identity {
    Identity {
        uid: NOBODY,
        gid: NOBODY,
        groups: Vec::new(),
    }
}

impl Squash {
    /// The identity a request claiming `creds` runs as on a connection trusted as `trust`.
    pub fn identity(self, trust: &Trust, creds: &Creds) -> Identity {
        match trust {
            Trust::Claims => self.apply(creds),
            Trust::Fixed(id) => match self {
                Squash::All => nobody(),
                // Not root (a root peer is trusted with claims), so nothing to squash.
                Squash::Root | Squash::None => id.clone(),
            },
            Trust::Nobody => nobody(),
        }
    }

    /// The identity claimed `creds` become after squashing.
    pub fn apply(self, creds: &Creds) -> Identity {
        let map = |id: u32| if id == 0 { NOBODY } else { id };
        match self {
            Squash::None => Identity {
                uid: creds.uid,
                gid: creds.gid,
                groups: creds.groups.clone(),
            },
            Squash::Root => Identity {
                uid: map(creds.uid),
                gid: if creds.uid == 0 {
                    NOBODY
                } else {
                    map(creds.gid)
                },
                groups: if creds.uid == 0 {
                    Vec::new()
                } else {
                    creds.groups.iter().map(|&g| map(g)).collect()
                },
            },
            Squash::All => nobody(),
        }
    }
}

/// While alive, the thread acts as an identity; dropping it returns to root.
#[derive(Debug)]
pub struct Acting {
    switched: bool,
}

/// Switches the calling thread to `id` if the server can (it runs as root) and needs to (the
/// identity is not root itself).
pub fn act_as(id: &Identity, can_switch: bool) -> std::io::Result<Acting> {
    if !can_switch || (id.uid == 0 && id.gid == 0) {
        return Ok(Acting { switched: false });
    }
    sys::set_thread_groups(&id.groups)?;
    setfsgid(Gid::from_raw(id.gid));
    setfsuid(Uid::from_raw(id.uid));
    // setfsuid reports nothing; reading it back (a no-op change) tells whether it took.
    let now = setfsuid(Uid::from_raw(u32::MAX)).as_raw();
    if now != id.uid {
        let _ = sys::set_thread_groups(&[]);
        setfsgid(Gid::from_raw(0));
        return Err(std::io::Error::other(format!(
            "could not switch to uid {} (still {now})",
            id.uid
        )));
    }
    Ok(Acting { switched: true })
}

impl Drop for Acting {
    fn drop(&mut self) {
        if self.switched {
            setfsuid(Uid::from_raw(0));
            setfsgid(Gid::from_raw(0));
            let _ = sys::set_thread_groups(&[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squashing() {
        let root = Creds {
            uid: 0,
            gid: 0,
            groups: vec![0, 5],
        };
        let user = Creds {
            uid: 1000,
            gid: 0,
            groups: vec![0, 27],
        };
        assert_eq!(Squash::Root.apply(&root).uid, NOBODY);
        assert_eq!(Squash::Root.apply(&root).groups, Vec::<u32>::new());
        assert_eq!(
            Squash::Root.apply(&user),
            Identity {
                uid: 1000,
                gid: NOBODY,
                groups: vec![NOBODY, 27]
            }
        );
        assert_eq!(Squash::None.apply(&root).uid, 0);
        assert_eq!(Squash::All.apply(&user).uid, NOBODY);
        assert!("bogus".parse::<Squash>().is_err());
    }

    #[test]
    fn claims_count_only_from_entitled_peers() {
        use vmmc_sockets::PeerIdentity;
        let local = |uid| PeerIdentity::Local {
            pid: 9,
            uid,
            gid: uid,
            groups: vec![100, 27],
        };
        let remote = PeerIdentity::Remote("192.0.2.1:9".parse().unwrap());
        let claim = Creds {
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        let other = Creds {
            uid: 2000,
            gid: 2000,
            groups: vec![],
        };
        // A local root peer speaks for its callers; squashing applies.
        assert_eq!(Trust::of(&local(0), false, false), Trust::Claims);
        assert_eq!(Squash::None.identity(&Trust::Claims, &claim).uid, 0);
        assert_eq!(Squash::Root.identity(&Trust::Claims, &claim).uid, NOBODY);
        assert_eq!(Squash::Root.identity(&Trust::Claims, &other).uid, 2000);
        // Anyone else local is itself, whatever it claims, secret or not.
        for auth in [false, true] {
            let t = Trust::of(&local(1000), auth, true);
            for squash in [Squash::None, Squash::Root] {
                for c in [&claim, &other] {
                    assert_eq!(
                        squash.identity(&t, c),
                        Identity {
                            uid: 1000,
                            gid: 1000,
                            groups: vec![100, 27]
                        }
                    );
                }
            }
            assert_eq!(Squash::All.identity(&t, &other).uid, NOBODY);
        }
        // On tcp a claim needs the secret, or a network declared trusted.
        assert_eq!(Trust::of(&remote, true, false), Trust::Claims);
        assert_eq!(Trust::of(&remote, false, true), Trust::Claims);
        assert_eq!(Trust::of(&remote, false, false), Trust::Nobody);
        assert_eq!(Squash::None.identity(&Trust::Nobody, &claim), nobody());
    }
}
