//! The kernel's node ids and the server's file handles. Each file gets its own node id (the
//! root is 1), so a recycled inode number on the server (a new file with a new handle) never
//! meets a node the kernel still holds for the old one. Entries are counted as the kernel
//! counts its lookups and dropped when it forgets them.
//!
//! One file may come with several handles: the server's handle of a file records the
//! directory it was reached in (its subtree check), so a file linked from two directories, or
//! renamed into another one, is looked up with a new handle. A new handle whose server inode
//! number is a node's joins that node once the server confirms that the node's own handle
//! still names that inode (two live files never share an inode number; a recycled number's
//! old handle is stale): one file, one node, one inode number for `stat`, one page cache.
//! The node then uses the handle it was last reached by.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use dfs_proto::attr::Timestamp;
use dfs_proto::handle::FileHandle;

/// The root directory's node id (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// The handle requests use: the one the node was last reached by.
    handle: FileHandle,
    /// Every handle that leads here (`handle` among them).
    aliases: Vec<FileHandle>,
    /// The server's inode number, once known.
    ino: Option<u64>,
    lookups: u64,
    /// The file's (mtime, size) when this client last opened or closed it: if it is the same
    /// at the next open, the kernel's cached pages are still good.
    seen: Option<(Timestamp, u64)>,
    /// The names (parent node, name) the kernel may hold a dentry of for it, newest last.
    names: Vec<Dentry>,
    /// For a directory: every name in it, while this client knows them all (it made the
    /// directory itself, and no one else has changed it since). A lookup of any other name
    /// is answered "no such file" without asking the server.
    listing: Option<HashSet<Box<[u8]>>>,
}

/// Most names a directory's complete listing holds; a directory that grows past it is no
/// longer known complete (it is then only a round trip per missing name).
const MAX_KNOWN_NAMES: usize = 65_536;

/// A name in a directory: (the directory's node id, the name).
pub type Dentry = (u64, Box<[u8]>);

/// Most names remembered per node (hard links); past it the oldest is dropped, and with it
/// the promise to drop that dentry when told "everything changed".
const MAX_NAMES: usize = 8;

#[derive(Debug, Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    ids: HashMap<FileHandle, u64>,
    /// The node last made for each server inode number.
    by_ino: HashMap<u64, u64>,
    /// The node each name was last looked up as.
    by_name: HashMap<Dentry, u64>,
    next: u64,
}

impl Table {
    /// One more lookup of node `id` through `handle`, which becomes the one it uses.
    fn count(&mut self, id: u64, handle: &FileHandle) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        n.lookups += 1;
        if n.handle != *handle {
            n.handle = handle.clone();
        }
        true
    }
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
                handle: root.clone(),
                aliases: vec![root],
                ino: None,
                lookups: 1,
                seen: None,
                names: Vec::new(),
                listing: None,
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

    /// Records one more kernel lookup of `handle`, whose file has server inode number `ino`,
    /// and returns its node id. A handle not seen before whose inode number is a node's
    /// joins that node if `same(node's handle)` says that handle still names `ino` (a call
    /// to the server, made without the table locked); otherwise it gets a node of its own.
    pub fn looked_up(
        &self,
        handle: &FileHandle,
        ino: u64,
        same: impl FnOnce(&FileHandle) -> bool,
    ) -> u64 {
        let candidate = {
            let mut t = self.lock();
            if let Some(&id) = t.ids.get(handle) {
                if t.count(id, handle) {
                    return id;
                }
            }
            t.by_ino
                .get(&ino)
                .and_then(|id| Some((*id, t.nodes.get(id)?.handle.clone())))
        };
        let confirmed = candidate.filter(|(_, other)| same(other));
        let mut t = self.lock();
        // Another thread may have taken it in meanwhile.
        if let Some(&id) = t.ids.get(handle) {
            if t.count(id, handle) {
                return id;
            }
        }
        if let Some((id, _)) = confirmed {
            if t.nodes.get(&id).is_some_and(|n| n.ino == Some(ino)) && t.count(id, handle) {
                t.ids.insert(handle.clone(), id);
                if let Some(n) = t.nodes.get_mut(&id) {
                    n.aliases.push(handle.clone());
                }
                return id;
            }
        }
        let id = t.next;
        t.next += 1;
        t.ids.insert(handle.clone(), id);
        t.by_ino.insert(ino, id);
        t.nodes.insert(
            id,
            Node {
                handle: handle.clone(),
                aliases: vec![handle.clone()],
                ino: Some(ino),
                lookups: 1,
                seen: None,
                names: Vec::new(),
                listing: None,
            },
        );
        id
    }

    /// Node `id` is a directory this client just made: empty, and known complete from now
    /// on until someone else changes it.
    pub fn made_dir(&self, id: u64) {
        if let Some(n) = self.lock().nodes.get_mut(&id) {
            n.listing = Some(HashSet::new());
        }
    }

    /// Whether `name` is surely not in the directory `parent` (its listing is known complete
    /// and lacks it).
    pub fn surely_absent(&self, parent: u64, name: &[u8]) -> bool {
        self.lock()
            .nodes
            .get(&parent)
            .and_then(|n| n.listing.as_ref())
            .is_some_and(|l| !l.contains(name))
    }

    /// This client made `name` in `parent` (a file, a directory, a link, a rename's target).
    pub fn listed(&self, parent: u64, name: &[u8]) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&parent) {
            if let Some(l) = &mut n.listing {
                if l.len() >= MAX_KNOWN_NAMES {
                    n.listing = None;
                } else {
                    l.insert(name.into());
                }
            }
        }
    }

    /// This client removed `name` from `parent`.
    pub fn unlisted(&self, parent: u64, name: &[u8]) {
        if let Some(l) = self
            .lock()
            .nodes
            .get_mut(&parent)
            .and_then(|n| n.listing.as_mut())
        {
            l.remove(name);
        }
    }

    /// The listing of `parent` is no longer known complete: someone else changed it, or a
    /// change of this client's ended in doubt.
    pub fn unknown_listing(&self, parent: u64) {
        if let Some(n) = self.lock().nodes.get_mut(&parent) {
            n.listing = None;
        }
    }

    /// No listing is known complete any more (notices were lost).
    pub fn unknown_listings(&self) {
        for n in self.lock().nodes.values_mut() {
            n.listing = None;
        }
    }

    /// Gives the root its server inode number (the server's welcome names the root by handle
    /// only), so that what is said of that number reaches the root.
    pub fn root_ino(&self, ino: u64) {
        let mut t = self.lock();
        if let Some(n) = t.nodes.get_mut(&ROOT) {
            n.ino = Some(ino);
        }
        t.by_ino.insert(ino, ROOT);
    }

    /// Records that the kernel knows node `id` as `name` in the directory `parent` (a reply
    /// gave it that dentry), so that the dentry can be dropped when the server says so.
    pub fn named(&self, id: u64, parent: u64, name: &[u8]) {
        let mut t = self.lock();
        let key: Dentry = (parent, name.into());
        let Some(n) = t.nodes.get_mut(&id) else {
            return;
        };
        if n.names.contains(&key) {
            return;
        }
        let dropped = (n.names.len() >= MAX_NAMES).then(|| n.names.remove(0));
        n.names.push(key.clone());
        if let Some(old) = dropped {
            if t.by_name.get(&old) == Some(&id) {
                t.by_name.remove(&old);
            }
        }
        t.by_name.insert(key, id);
    }

    /// The node the kernel was last told `name` in `parent` is, if it still holds it.
    pub fn peek_name(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.lock().by_name.get(&(parent, name.into())).copied()
    }

    /// The name `name` in `parent` is gone (unlinked or renamed away by this client).
    pub fn unnamed(&self, parent: u64, name: &[u8]) {
        let mut t = self.lock();
        let key: Dentry = (parent, name.into());
        if let Some(id) = t.by_name.remove(&key) {
            if let Some(n) = t.nodes.get_mut(&id) {
                n.names.retain(|d| *d != key);
            }
        }
    }

    /// This client renamed `from` in `from_dir` to `to` in `to_dir`.
    pub fn renamed(&self, from_dir: u64, from: &[u8], to_dir: u64, to: &[u8]) {
        let id = self.lock().by_name.get(&(from_dir, from.into())).copied();
        self.unnamed(from_dir, from);
        self.unnamed(to_dir, to);
        if let Some(id) = id {
            self.named(id, to_dir, to);
        }
    }

    /// Every node id, and every name the kernel may hold a dentry of (for dropping them all).
    pub fn all(&self) -> (Vec<u64>, Vec<Dentry>) {
        let t = self.lock();
        (
            t.nodes.keys().copied().collect(),
            t.by_name.keys().cloned().collect(),
        )
    }

    /// The node id of `handle` if the kernel holds it, without counting a lookup.
    pub fn peek(&self, handle: &FileHandle) -> Option<u64> {
        self.lock().ids.get(handle).copied()
    }

    /// The node id the kernel knows the file with server inode number `ino` by, if any,
    /// without counting a lookup (for listings without handles).
    pub fn peek_ino(&self, ino: u64) -> Option<u64> {
        self.lock().by_ino.get(&ino).copied()
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
                for h in &node.aliases {
                    t.ids.remove(h);
                }
                for d in &node.names {
                    if t.by_name.get(d) == Some(&id) {
                        t.by_name.remove(d);
                    }
                }
                if let Some(ino) = node.ino {
                    if t.by_ino.get(&ino) == Some(&id) {
                        t.by_ino.remove(&ino);
                    }
                }
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

    fn never(_: &FileHandle) -> bool {
        panic!("no other node has this inode number")
    }

    #[test]
    fn lookups_and_forgets_balance() {
        let n = Nodes::new(h(1));
        assert_eq!(n.looked_up(&h(1), 1, never), ROOT);
        let a = n.looked_up(&h(2), 2, never);
        assert_eq!(n.looked_up(&h(2), 2, never), a);
        let b = n.looked_up(&h(3), 3, never);
        assert_ne!(a, b);
        n.forget(a, 1);
        assert_eq!(n.handle(a), Some(h(2)));
        n.forget(a, 1);
        assert_eq!(n.handle(a), None);
        // A handle seen again after it was forgotten gets a fresh id.
        assert_ne!(n.looked_up(&h(2), 2, never), a);
        n.forget(ROOT, 100);
        assert_eq!(n.handle(ROOT), Some(h(1)));
        let t = (Timestamp { secs: 1, nanos: 0 }, 5);
        assert!(!n.seen(b, t));
        assert!(n.seen(b, t));
        assert!(!n.seen(b, (t.0, 6)));
    }

    #[test]
    fn handles_of_one_file_share_its_node() {
        let n = Nodes::new(h(1));
        let a = n.looked_up(&h(2), 7, never);
        // Another handle, same inode number, and the server says the first one still names
        // it: the same node, which now uses the newer handle.
        let mut asked = None;
        let b = n.looked_up(&h(3), 7, |other| {
            asked = Some(other.clone());
            true
        });
        assert_eq!(asked, Some(h(2)));
        assert_eq!(b, a);
        assert_eq!(n.handle(a), Some(h(3)));
        assert_eq!(n.peek(&h(2)), Some(a));
        // Reached by the first handle again, it uses that one.
        assert_eq!(n.looked_up(&h(2), 7, never), a);
        assert_eq!(n.handle(a), Some(h(2)));
        // A recycled inode number: the old handle is stale, so a node of its own.
        let c = n.looked_up(&h(4), 7, |_| false);
        assert_ne!(c, a);
        // Forgetting drops every alias; the number then belongs to the newest node.
        n.forget(a, 3);
        assert_eq!(n.peek(&h(2)), None);
        assert_eq!(n.peek(&h(3)), None);
        assert_eq!(n.looked_up(&h(5), 7, |o| o == &h(4)), c);
        n.forget(c, 2);
        assert!(n.is_empty());
    }

    #[test]
    fn a_directory_made_here_is_known_complete_until_someone_else_changes_it() {
        let n = Nodes::new(h(1));
        let d = n.looked_up(&h(2), 2, never);
        assert!(!n.surely_absent(d, b"x"));
        n.made_dir(d);
        assert!(n.surely_absent(d, b"x"));
        n.listed(d, b"x");
        assert!(!n.surely_absent(d, b"x") && n.surely_absent(d, b"y"));
        n.unlisted(d, b"x");
        assert!(n.surely_absent(d, b"x"));
        n.unknown_listing(d);
        assert!(!n.surely_absent(d, b"x"));
        n.made_dir(d);
        n.unknown_listings();
        assert!(!n.surely_absent(d, b"y"));
    }

    #[test]
    fn names_follow_renames_and_go_with_their_node() {
        let n = Nodes::new(h(1));
        let a = n.looked_up(&h(2), 2, never);
        n.named(a, ROOT, b"a");
        n.named(a, ROOT, b"a");
        n.named(a, ROOT, b"link");
        let (_, names) = n.all();
        assert_eq!(names.len(), 2);
        n.renamed(ROOT, b"a", ROOT, b"b");
        let (ids, mut names) = n.all();
        names.sort();
        assert_eq!(
            names,
            vec![(ROOT, b"b"[..].into()), (ROOT, b"link"[..].into())]
        );
        assert!(ids.contains(&a) && ids.contains(&ROOT));
        n.unnamed(ROOT, b"link");
        assert_eq!(n.all().1.len(), 1);
        for i in 0..20u8 {
            n.named(a, ROOT, &[b'x', i]);
        }
        assert_eq!(n.all().1.len(), MAX_NAMES);
        n.forget(a, 1);
        assert!(n.all().1.is_empty());
    }
}
