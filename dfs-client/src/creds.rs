//! Who the caller is, as the protocol carries it.

use dfs_proto::msg::{Creds, MAX_GROUPS};

/// The caller's credentials, as the protocol carries them: the effective ids on Unix.
#[cfg(unix)]
pub fn current_creds() -> Creds {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    groups.truncate(MAX_GROUPS);
    Creds {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups,
    }
}

/// The caller's credentials, as the protocol carries them: on Windows, which has no Unix
/// ids, the conventional `nobody` (65534), with no groups. A server squashes a tcp peer that
/// has not proved the shared secret anyway; one that has may map this id as it likes.
#[cfg(windows)]
pub fn current_creds() -> Creds {
    let _ = MAX_GROUPS;
    Creds {
        uid: NOBODY,
        gid: NOBODY,
        groups: Vec::new(),
    }
}

/// The id Unix systems give to nobody in particular.
#[cfg(windows)]
const NOBODY: u32 = 65534;
