//! Directories met on the way to a name, remembered for a moment.
//!
//! Every path call walks its path component by component, one server round trip each
//! (the server never resolves a path, see [`crate::resolve`]): a `stat` of
//! `/dfs/a/b/c/file` would cost four. The directories on the way change rarely, so a walk
//! takes them from here for up to [`TTL`], as a kernel's dentry cache (and the FUSE mount,
//! without the server's notices) keeps names for a second. Only directories *on the way*
//! are taken from here: the last component is always looked up, so its attributes are
//! fresh. Entries are per caller (uid, groups), since looking a name up needs search
//! permission on its directory; and they are forgotten when any process of the run
//! renames or removes a directory or changes anything's attributes (a counter they share,
//! the *generation*, moves), so the run's own changes show at once. Other clients' changes
//! show within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dfs_proto::attr::{Entry, FileKind};
use dfs_proto::msg::Creds;
use dfs_proto::name::Name;

use crate::path::MountId;

/// How long a directory is remembered.
pub const TTL: Duration = Duration::from_secs(1);
/// At most this many entries: past it, all are forgotten (a walk refills what it needs).
const MAX: usize = 4096;

type Key = (MountId, Vec<u8>, Vec<u8>, u32, u32, Vec<u32>);

/// The cache.
#[derive(Debug, Default)]
pub struct DirCache {
    map: Mutex<HashMap<Key, (Entry, Instant, u64)>>,
}

fn key(mount: MountId, dir: &Entry, name: &Name, c: &Creds) -> Key {
    (
        mount,
        dir.handle.as_bytes().to_vec(),
        name.as_bytes().to_vec(),
        c.uid,
        c.gid,
        c.groups.clone(),
    )
}

impl DirCache {
    /// The directory `name` in `dir`, if met less than [`TTL`] ago by the same caller, in
    /// generation `gen`.
    pub fn get(
        &self,
        mount: MountId,
        dir: &Entry,
        name: &Name,
        c: &Creds,
        gen: u64,
    ) -> Option<Entry> {
        let m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (e, at, g) = m.get(&key(mount, dir, name, c))?;
        (*g == gen && at.elapsed() < TTL).then(|| e.clone())
    }

    /// Remembers `found` if it is a directory, as of generation `gen`.
    pub fn put(
        &self,
        mount: MountId,
        dir: &Entry,
        name: &Name,
        c: &Creds,
        found: &Entry,
        gen: u64,
    ) {
        if found.attr.kind() != FileKind::Directory {
            return;
        }
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX {
            m.clear();
        }
        m.insert(
            key(mount, dir, name, c),
            (found.clone(), Instant::now(), gen),
        );
    }

    /// Forgets everything (this process changed the namespace or attributes).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::attr::Attr;
    use dfs_proto::handle::FileHandle;

    fn entry(n: u8, mode: u32) -> Entry {
        Entry {
            handle: FileHandle::new(vec![n; 20]).unwrap(),
            attr: Attr {
                mode,
                ..Attr::default()
            },
        }
    }

    #[test]
    fn keeps_directories_per_caller_and_forgets_on_clear() {
        let c = DirCache::default();
        let root = entry(1, 0o040755);
        let name = Name::new(b"d").unwrap();
        let me = Creds {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let other = Creds {
            uid: 1001,
            gid: 1001,
            groups: vec![],
        };
        c.put(0, &root, &name, &me, &entry(2, 0o040755), 7);
        c.put(
            0,
            &root,
            &Name::new(b"f").unwrap(),
            &me,
            &entry(3, 0o100644),
            7,
        );
        assert!(c.get(0, &root, &name, &me, 7).is_some());
        assert!(c.get(0, &root, &name, &me, 8).is_none());
        assert!(c.get(0, &root, &name, &other, 7).is_none());
        assert!(c.get(1, &root, &name, &me, 7).is_none());
        assert!(c.get(0, &root, &Name::new(b"f").unwrap(), &me, 7).is_none());
        c.clear();
        assert!(c.get(0, &root, &name, &me, 7).is_none());
    }
}
