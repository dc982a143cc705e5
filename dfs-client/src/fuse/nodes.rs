//! The kernel's node ids and the server's file handles. Each handle gets its own node id
//! (the root is 1), so a recycled inode number on the server (a new file with a new handle)
//! never meets a node the kernel still holds for the old one. Entries are counted as the
//! kernel counts its lookups and dropped when it forgets them.

use std::collections::HashMap;
use std::sync::Mutex;

use dfs_proto::attr::Timestamp;
use dfs_proto::handle::FileHandle;

/// The root directory's node id (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    handle: FileHandle,
    lookups: u64,
    /// The file's (mtime, size) when this client last opened or closed it: if it is the same
    /// at the next open, the kernel's cached pages are still good.
    seen: Option<(Timestamp, u64)>,
}

#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    ids: HashMap<FileHandle, u64>,
    next: u64,
}

/// The node table.
#[derive(Debug)]
pub struct Nodes {
    t: Mutex<Table>,
}

impl Nodes {
    /// A table holding the root.
    pub fn new(root: FileHandle) -> Nodes {
        let mut t = Table {
            next: ROOT + 1,
            ..Table::default()
        };
        t.ids.insert(root.clone(), ROOT);
        // The kernel never forgets the root.
        t.nodes.insert(
            ROOT,
            Node {
                handle: root,
                lookups: 1,
                seen: None,
            },
        );
        Nodes { t: Mutex::new(t) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.t.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle of a node the kernel holds.
    pub fn handle(&self, id: u64) -> Option<FileHandle> {
        self.lock().nodes.get(&id).map(|n| n.handle.clone())
    }

    /// Records one more kernel lookup of `handle` and returns its node id.
    pub fn looked_up(&self, handle: &FileHandle) -> u64 {
        let mut t = self.lock();
        if let Some(&id) = t.ids.get(handle) {
            if let Some(n) = t.nodes.get_mut(&id) {
                n.lookups += 1;
            }
            return id;
        }
        let id = t.next;
        t.next += 1;
        t.ids.insert(handle.clone(), id);
        t.nodes.insert(
            id,
            Node {
                handle: handle.clone(),
                lookups: 1,
                seen: None,
            },
        );
        id
    }

    /// The node id of `handle` if the kernel holds it, without counting a lookup.
    pub fn peek(&self, handle: &FileHandle) -> Option<u64> {
        self.lock().ids.get(handle).copied()
    }

    /// The kernel dropped `n` lookups of a node.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        let mut t = self.lock();
        let gone = match t.nodes.get_mut(&id) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            }
            None => false,
        };
        if gone {
            if let Some(node) = t.nodes.remove(&id) {
                t.ids.remove(&node.handle);
            }
        }
    }

    /// Records the (mtime, size) the kernel's cache of this file reflects; returns whether it
    /// equals the previous record (so the cache may be kept).
    pub fn seen(&self, id: u64, now: (Timestamp, u64)) -> bool {
        let mut t = self.lock();
        match t.nodes.get_mut(&id) {
            Some(n) => {
                let same = n.seen == Some(now);
                n.seen = Some(now);
                same
            }
            None => false,
        }
    }

    /// Nodes held, for tests.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }

    /// Whether only the root is held.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> FileHandle {
        FileHandle::new(vec![b; 20]).unwrap()
    }

    #[test]
    fn lookups_and_forgets_balance() {
        let n = Nodes::new(h(1));
        assert_eq!(n.looked_up(&h(1)), ROOT);
        let a = n.looked_up(&h(2));
        assert_eq!(n.looked_up(&h(2)), a);
        let b = n.looked_up(&h(3));
        assert_ne!(a, b);
        n.forget(a, 1);
        assert_eq!(n.handle(a), Some(h(2)));
        n.forget(a, 1);
        assert_eq!(n.handle(a), None);
        // A handle seen again after it was forgotten gets a fresh id.
        assert_ne!(n.looked_up(&h(2)), a);
        n.forget(ROOT, 100);
        assert_eq!(n.handle(ROOT), Some(h(1)));
        let t = (Timestamp { secs: 1, nanos: 0 }, 5);
        assert!(!n.seen(b, t));
        assert!(n.seen(b, t));
        assert!(!n.seen(b, (t.0, 6)));
    }
}
