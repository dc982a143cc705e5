//! Acting as the caller. With `--squash none` and the server running as root, each request
//! runs with the caller's fsuid, fsgid and supplementary groups, set on the serving thread
//! only, so the kernel's own permission checks decide. Changing the fsuid away from 0 also
//! drops the file-system capabilities (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`, …) for the thread,
//! which is exactly what makes the checks the caller's.

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

impl Squash {
    /// The identity a request with `creds` runs as.
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
            Squash::All => Identity {
                uid: NOBODY,
                gid: NOBODY,
                groups: Vec::new(),
            },
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
}
