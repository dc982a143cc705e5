//! Resolving a path below a prefix, one component at a time, as a kernel's path walk does.
//!
//! The server names files by handle and one component at a time and never follows a
//! symbolic link (DESIGN.md, dfs-server): the walk is the client's. It looks each name up
//! in the directory reached so far, follows links (a relative target in place, an absolute
//! one from the top, through the [`Router`] again, so a link may lead out of the DFS or into
//! another mount), and takes `..` back to the directory it came from: a link's `..` is the
//! link's parent's parent, not a lexical step. A `..` above the mount's root leaves the DFS.

use std::collections::VecDeque;

use dfs_proto::attr::{Entry, FileKind};
use dfs_proto::name::Name;
use dfs_proto::Errno;

use crate::path::{self, MountId, Route, Router};

/// Most symbolic links one walk follows (Linux's limit): a loop ends in `ELOOP`.
pub const MAX_LINKS: u32 = 40;

/// What a walk asks of the file system.
pub trait Namespace {
    /// The root directory of `mount`. Its attributes may be old (see [`Found::fresh`]).
    fn root(&self, mount: MountId) -> Result<Entry, Errno>;
    /// `name` in the directory `dir`.
    fn lookup(&self, mount: MountId, dir: &Entry, name: &Name) -> Result<Entry, Errno>;
    /// `name` in `dir`, on the way to another name: its attributes may be a moment old (a
    /// namespace may keep directories it met, see [`crate::dircache`]).
    fn lookup_on_the_way(&self, mount: MountId, dir: &Entry, name: &Name) -> Result<Entry, Errno> {
        self.lookup(mount, dir, name)
    }
    /// A symbolic link's target.
    fn readlink(&self, mount: MountId, link: &Entry) -> Result<Vec<u8>, Errno>;
}

/// Where a walk starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// At the root of a mount (an absolute path, or one relative to a current directory
    /// inside the DFS, both as [`Router::route`] gives them).
    Root(MountId),
    /// At a directory of the DFS known by handle (an open directory, `openat`'s `dirfd`),
    /// whose canonical components below the mount's root are `rest`.
    Dir {
        /// Its mount.
        mount: MountId,
        /// The directory.
        dir: Entry,
        /// Its components below the mount's root.
        rest: Vec<Vec<u8>>,
    },
}

/// How to treat the last component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Last {
    /// Follow it if it is a symbolic link (`stat`, `open`), or not (`lstat`, `unlink`).
    pub follow: bool,
    /// The path ended in `/`: the last component must be a directory (and is followed).
    pub dir: bool,
}

/// The end of a walk inside the DFS.
#[derive(Clone, Debug)]
pub struct Found {
    /// Its mount.
    pub mount: MountId,
    /// The directory the last name is in; `None` when the path ended at a directory without
    /// naming it (the root, `.`, `..`).
    pub parent: Option<Entry>,
    /// The last name (`None` as for `parent`).
    pub name: Option<Name>,
    /// What the last name is: `Err(ENOENT)` when it does not exist (in an existing
    /// directory, so that it can be made).
    pub node: Result<Entry, Errno>,
    /// Whether `node`'s attributes came from this walk's lookups (else they may be old).
    pub fresh: bool,
    /// The canonical components of the result below the mount's root.
    pub rest: Vec<Vec<u8>>,
}

/// Where a path leads.
// A walk's result lives for one call, on the stack: boxing `Found` would cost an
// allocation on every path call to save a move of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Walk {
    /// Out of the DFS (by `..` or a link): this absolute local path, for the program's own
    /// file system.
    Local(Vec<u8>),
    /// Into the DFS.
    Dfs(Found),
}

/// Walks `comps` (raw components, as the router gives them) from `start`.
pub fn walk<N: Namespace>(
    ns: &N,
    router: &Router,
    start: Start,
    comps: Vec<Vec<u8>>,
    last: Last,
) -> Result<Walk, Errno> {
    let mut queue: VecDeque<Vec<u8>> = comps.into();
    let (mut mount, mut cur, mut rest, mut fresh) = match start {
        Start::Root(m) => (m, ns.root(m)?, Vec::new(), false),
        Start::Dir { mount, dir, rest } => (mount, dir, rest, false),
    };
    // The directories the walk went through, each the parent of the next (and of `cur`);
    // empty above the start.
    let mut parents: Vec<Entry> = Vec::new();
    let mut links = 0u32;
    let at_dir = |mount, cur: Entry, rest: Vec<Vec<u8>>, fresh| {
        Ok(Walk::Dfs(Found {
            mount,
            parent: None,
            name: None,
            node: Ok(cur),
            fresh,
            rest,
        }))
    };
    loop {
        let Some(c) = queue.pop_front() else {
            return at_dir(mount, cur, rest, fresh);
        };
        if c.is_empty() || c == b"." {
            continue;
        }
        if c == b".." {
            if let Some(p) = parents.pop() {
                rest.pop();
                cur = p;
                continue;
            }
            if rest.is_empty() {
                // Above the mount's root: back to the program's own file system.
                let mut above = path::normalize(router.prefix(mount));
                above.pop();
                let mut out = path::join(&above);
                for q in queue {
                    if out.last() != Some(&b'/') {
                        out.push(b'/');
                    }
                    out.extend_from_slice(&q);
                }
                if last.dir && out.last() != Some(&b'/') {
                    out.push(b'/');
                }
                return Ok(Walk::Local(out));
            }
            // Above where a walk from a directory started: again from the root, by name.
            rest.pop();
            for c in rest.drain(..).rev() {
                queue.push_front(c);
            }
            cur = ns.root(mount)?;
            fresh = false;
            continue;
        }
        let name = Name::new(&c).map_err(|e| e.errno())?;
        let is_last = queue.is_empty();
        let found = if is_last {
            ns.lookup(mount, &cur, &name)
        } else {
            ns.lookup_on_the_way(mount, &cur, &name)
        };
        let e = match found {
            Ok(e) => e,
            Err(e) if e == Errno::ENOENT && is_last => {
                let mut r = rest;
                r.push(c);
                return Ok(Walk::Dfs(Found {
                    mount,
                    parent: Some(cur),
                    name: Some(name),
                    node: Err(Errno::ENOENT),
                    fresh: true,
                    rest: r,
                }));
            }
            Err(e) => return Err(e),
        };
        let kind = e.attr.kind();
        if kind == FileKind::Symlink && (!is_last || last.follow || last.dir) {
            links += 1;
            if links > MAX_LINKS {
                return Err(Errno::ELOOP);
            }
            let target = ns.readlink(mount, &e)?;
            if target.first() == Some(&b'/') {
                let mut abs = target;
                for q in queue.drain(..) {
                    abs.push(b'/');
                    abs.extend_from_slice(&q);
                }
                if last.dir {
                    abs.push(b'/');
                }
                match router.route(&abs) {
                    Route::Local => return Ok(Walk::Local(abs)),
                    Route::Dfs { mount: m, rest: r } => {
                        mount = m;
                        cur = ns.root(m)?;
                        fresh = false;
                        rest = Vec::new();
                        parents.clear();
                        queue = r.into();
                    }
                }
            } else {
                for t in target.split(|&b| b == b'/').filter(|t| !t.is_empty()).rev() {
                    queue.push_front(t.to_vec());
                }
            }
            continue;
        }
        if is_last {
            if last.dir && kind != FileKind::Directory {
                return Err(Errno::ENOTDIR);
            }
            let mut r = rest;
            r.push(c);
            return Ok(Walk::Dfs(Found {
                mount,
                parent: Some(cur),
                name: Some(name),
                node: Ok(e),
                fresh: true,
                rest: r,
            }));
        }
        if kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        parents.push(std::mem::replace(&mut cur, e));
        rest.push(c);
        fresh = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs_proto::attr::Attr;
    use dfs_proto::handle::FileHandle;
    use std::collections::HashMap;

    /// A node: its kind, its children (name, inode number) and its link target.
    type Node = (FileKind, Vec<(Vec<u8>, u64)>, Vec<u8>);

    /// A file tree in memory: inode number → node.
    struct Tree {
        nodes: HashMap<u64, Node>,
        lookups: std::cell::Cell<u32>,
    }

    fn entry(ino: u64, kind: FileKind) -> Entry {
        let mode = match kind {
            FileKind::Directory => 0o040755,
            FileKind::Symlink => 0o120777,
            _ => 0o100644,
        };
        Entry {
            handle: FileHandle::new(ino.to_le_bytes().to_vec()).unwrap(),
            attr: Attr {
                ino,
                mode,
                ..Attr::default()
            },
        }
    }

    impl Tree {
        fn new() -> Tree {
            let mut t = Tree {
                nodes: HashMap::new(),
                lookups: std::cell::Cell::new(0),
            };
            t.nodes.insert(1, (FileKind::Directory, vec![], vec![]));
            t
        }
        fn add(&mut self, parent: u64, name: &str, ino: u64, kind: FileKind, target: &str) {
            self.nodes
                .get_mut(&parent)
                .unwrap()
                .1
                .push((name.as_bytes().to_vec(), ino));
            self.nodes
                .insert(ino, (kind, vec![], target.as_bytes().to_vec()));
        }
    }

    impl Namespace for Tree {
        fn root(&self, _m: MountId) -> Result<Entry, Errno> {
            Ok(entry(1, FileKind::Directory))
        }
        fn lookup(&self, _m: MountId, dir: &Entry, name: &Name) -> Result<Entry, Errno> {
            self.lookups.set(self.lookups.get() + 1);
            let (_, kids, _) = &self.nodes[&dir.attr.ino];
            let (_, ino) = kids
                .iter()
                .find(|(n, _)| n == name.as_bytes())
                .ok_or(Errno::ENOENT)?;
            Ok(entry(*ino, self.nodes[ino].0))
        }
        fn readlink(&self, _m: MountId, link: &Entry) -> Result<Vec<u8>, Errno> {
            Ok(self.nodes[&link.attr.ino].2.clone())
        }
    }

    /// / ─ a/ ─ b/ ─ f
    ///        └ up → ..        (relative link to a's parent… of the link: /a)
    ///   ├ lb → a/b            (relative)
    ///   ├ abs → /dfs/a/b/f    (absolute, back into the mount)
    ///   ├ out → /etc          (absolute, out of it)
    ///   ├ loop → loop
    ///   └ file
    fn tree() -> Tree {
        let mut t = Tree::new();
        t.add(1, "a", 2, FileKind::Directory, "");
        t.add(2, "b", 3, FileKind::Directory, "");
        t.add(3, "f", 4, FileKind::Regular, "");
        t.add(2, "up", 5, FileKind::Symlink, "..");
        t.add(1, "lb", 6, FileKind::Symlink, "a/b");
        t.add(1, "abs", 7, FileKind::Symlink, "/dfs/a/b/f");
        t.add(1, "out", 8, FileKind::Symlink, "/etc");
        t.add(1, "loop", 9, FileKind::Symlink, "loop");
        t.add(1, "file", 10, FileKind::Regular, "");
        t
    }

    fn router() -> Router {
        Router::new(&[b"/dfs"], b"/".to_vec()).unwrap()
    }

    fn go(t: &Tree, path: &str, last: Last) -> Result<Walk, Errno> {
        let r = router();
        match r.route(path.as_bytes()) {
            Route::Dfs { mount, rest } => walk(t, &r, Start::Root(mount), rest, last),
            Route::Local => panic!("{path} is not routed"),
        }
    }

    fn ino(w: Result<Walk, Errno>) -> u64 {
        match w {
            Ok(Walk::Dfs(f)) => f.node.unwrap().attr.ino,
            other => panic!("{other:?}"),
        }
    }

    const FOLLOW: Last = Last {
        follow: true,
        dir: false,
    };
    const NOFOLLOW: Last = Last {
        follow: false,
        dir: false,
    };

    #[test]
    fn plain_paths_and_dots() {
        let t = tree();
        assert_eq!(ino(go(&t, "/dfs/a/b/f", FOLLOW)), 4);
        assert_eq!(ino(go(&t, "/dfs", FOLLOW)), 1);
        assert_eq!(ino(go(&t, "/dfs/a/./b/../b/f", FOLLOW)), 4);
        assert_eq!(ino(go(&t, "/dfs/a/..", FOLLOW)), 1);
        match go(&t, "/dfs/a/b/f", FOLLOW).unwrap() {
            Walk::Dfs(f) => {
                assert_eq!(f.parent.unwrap().attr.ino, 3);
                assert_eq!(f.name.unwrap().as_bytes(), b"f");
                assert_eq!(f.rest, vec![b"a".to_vec(), b"b".to_vec(), b"f".to_vec()]);
            }
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn a_missing_last_name_can_be_made_a_missing_directory_cannot() {
        let t = tree();
        match go(&t, "/dfs/a/new", FOLLOW).unwrap() {
            Walk::Dfs(f) => {
                assert_eq!(f.node.unwrap_err(), Errno::ENOENT);
                assert_eq!(f.parent.unwrap().attr.ino, 2);
            }
            w => panic!("{w:?}"),
        }
        assert_eq!(go(&t, "/dfs/nope/x", FOLLOW).unwrap_err(), Errno::ENOENT);
        assert_eq!(go(&t, "/dfs/file/x", FOLLOW).unwrap_err(), Errno::ENOTDIR);
        let dir = Last {
            follow: true,
            dir: true,
        };
        assert_eq!(go(&t, "/dfs/file/", dir).unwrap_err(), Errno::ENOTDIR);
    }

    #[test]
    fn links_are_followed_where_the_kernel_would() {
        let t = tree();
        assert_eq!(ino(go(&t, "/dfs/lb/f", NOFOLLOW)), 4);
        assert_eq!(ino(go(&t, "/dfs/lb", NOFOLLOW)), 6);
        assert_eq!(ino(go(&t, "/dfs/lb", FOLLOW)), 3);
        assert_eq!(ino(go(&t, "/dfs/abs", FOLLOW)), 4);
        // `up` → `..` from /a is the root; through the link `lb` (/a/b) then `..` is /a.
        assert_eq!(ino(go(&t, "/dfs/a/up", FOLLOW)), 1);
        assert_eq!(ino(go(&t, "/dfs/lb/..", FOLLOW)), 2);
        assert_eq!(go(&t, "/dfs/loop", FOLLOW).unwrap_err(), Errno::ELOOP);
        assert_eq!(ino(go(&t, "/dfs/loop", NOFOLLOW)), 9);
    }

    #[test]
    fn leaving_the_mount() {
        let t = tree();
        match go(&t, "/dfs/out/passwd", FOLLOW).unwrap() {
            Walk::Local(p) => assert_eq!(p, b"/etc/passwd"),
            w => panic!("{w:?}"),
        }
        match go(&t, "/dfs/a/../../etc/x", FOLLOW).unwrap() {
            Walk::Local(p) => assert_eq!(p, b"/etc/x"),
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn from_a_directory_and_above_it() {
        let t = tree();
        let r = router();
        let b = entry(3, FileKind::Directory);
        let start = Start::Dir {
            mount: 0,
            dir: b,
            rest: vec![b"a".to_vec(), b"b".to_vec()],
        };
        let w = walk(&t, &r, start.clone(), vec![b"f".to_vec()], FOLLOW);
        assert_eq!(ino(w), 4);
        // `..` above the start walks again from the root: /a/file does not exist, /file does.
        let w = walk(
            &t,
            &r,
            start,
            vec![b"..".to_vec(), b"..".to_vec(), b"file".to_vec()],
            FOLLOW,
        );
        assert_eq!(ino(w), 10);
    }
}
