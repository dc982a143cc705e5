//! Path routing: which names belong to the DFS.
//!
//! A [`Router`] knows the prefixes (a directory such as `/dfs` on Linux; a drive letter or
//! UNC prefix on Windows, once normalised to this form by that face) and the working
//! directory the program is in. [`Router::route`] turns any path a program passes into either
//! "not ours" (the program's own file system serves it, unchanged) or a mount and the
//! components below its root, still raw: `..` and symbolic links below the prefix are the
//! walker's business ([`crate::resolve`]), since only the server knows which names are links.
//! Above the prefix, `.`, `..` and repeated slashes are folded lexically, as a shell does.
//!
//! Paths are bytes: names on the DFS are byte strings, as on Linux.

/// Which mount of the router a path belongs to.
pub type MountId = usize;

/// A path's destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not below any prefix: the program's own file system serves it.
    Local,
    /// Below `mount`'s prefix; `rest` holds the components under its root, raw (`..`, `.`
    /// and links are still in them), without empty ones.
    Dfs {
        /// The mount.
        mount: MountId,
        /// The components below the mount's root.
        rest: Vec<Vec<u8>>,
    },
}

/// Where the program works: its current directory, as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cwd {
    /// A local directory (absolute path).
    Local(Vec<u8>),
    /// A directory of the DFS: the mount and the components of its canonical path below the
    /// mount's root (no `.`, `..` or links left: it was resolved when the program entered it).
    Dfs {
        /// The mount.
        mount: MountId,
        /// Its components below the mount's root.
        rest: Vec<Vec<u8>>,
    },
}

/// The prefixes of the DFS mounts, and the current directory.
#[derive(Clone, Debug)]
pub struct Router {
    /// Each mount's prefix, split into components (`/dfs/x` is `["dfs", "x"]`).
    prefixes: Vec<Vec<Vec<u8>>>,
    /// Each prefix as normalised bytes (`/dfs/x`), for the fast test.
    raw: Vec<Vec<u8>>,
    cwd: Cwd,
}

/// Why a prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPrefix(pub String);

impl std::fmt::Display for BadPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadPrefix {}

/// The non-empty components of `path` other than `.`.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Folds `.`, `..` and repeated slashes of an absolute path lexically (`..` at the root
/// stays at the root); a relative path is taken as relative to `/`.
pub fn normalize(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in components(path) {
        if c == b".." {
            out.pop();
        } else {
            out.push(c.to_vec());
        }
    }
    out
}

/// `/` followed by the components joined with `/` (just `/` for none).
pub fn join(components: &[Vec<u8>]) -> Vec<u8> {
    if components.is_empty() {
        return b"/".to_vec();
    }
    let mut p = Vec::with_capacity(components.iter().map(|c| c.len() + 1).sum());
    for c in components {
        p.push(b'/');
        p.extend_from_slice(c);
    }
    p
}

/// Whether an absolute path needs folding to be compared with a prefix: it has an empty,
/// `.` or `..` component.
fn needs_folding(path: &[u8]) -> bool {
    path.windows(2).any(|w| w == b"//")
        || path
            .split(|&b| b == b'/')
            .skip(1)
            .any(|c| c == b"." || c == b"..")
}

impl Router {
    /// A router for these prefixes (absolute directory paths, such as `/dfs`), starting in
    /// the local directory `cwd`.
    pub fn new(prefixes: &[&[u8]], cwd: Vec<u8>) -> Result<Router, BadPrefix> {
        let mut split = Vec::new();
        let mut raw = Vec::new();
        for p in prefixes {
            if p.first() != Some(&b'/') {
                return Err(BadPrefix(format!(
                    "{}: a prefix is an absolute path, such as /dfs",
                    String::from_utf8_lossy(p)
                )));
            }
            let comps = normalize(p);
            if comps.is_empty() {
                return Err(BadPrefix(
                    "/ cannot be a prefix: the program's own files live there".into(),
                ));
            }
            if comps.iter().any(|c| c.contains(&0)) {
                return Err(BadPrefix("a prefix cannot contain NUL".into()));
            }
            // One prefix inside another would make a path ambiguous.
            if split.iter().any(|q: &Vec<Vec<u8>>| {
                let n = q.len().min(comps.len());
                q[..n] == comps[..n]
            }) {
                return Err(BadPrefix(format!(
                    "{}: prefixes may not nest",
                    String::from_utf8_lossy(p)
                )));
            }
            raw.push(join(&comps));
            split.push(comps);
        }
        Ok(Router {
            prefixes: split,
            raw,
            cwd: Cwd::Local(cwd),
        })
    }

    /// The number of mounts.
    pub fn mounts(&self) -> usize {
        self.prefixes.len()
    }

    /// A mount's prefix (normalised, like `/dfs`).
    pub fn prefix(&self, m: MountId) -> &[u8] {
        self.raw.get(m).map_or(&b"/"[..], |p| p.as_slice())
    }

    /// The current directory.
    pub fn cwd(&self) -> &Cwd {
        &self.cwd
    }

    /// Makes `cwd` the current directory.
    pub fn set_cwd(&mut self, cwd: Cwd) {
        self.cwd = cwd;
    }

    /// The current directory as the program sees it (`getcwd`).
    pub fn cwd_path(&self) -> Vec<u8> {
        match &self.cwd {
            Cwd::Local(p) => p.clone(),
            Cwd::Dfs { mount, rest } => self.path_of(*mount, rest),
        }
    }

    /// The absolute path of the components `rest` below `mount`'s root.
    pub fn path_of(&self, mount: MountId, rest: &[Vec<u8>]) -> Vec<u8> {
        let mut p = self.prefix(mount).to_vec();
        for c in rest {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        p
    }

    /// Where `path` goes. Absolute paths are compared with the prefixes after folding what
    /// lies above them; relative ones are taken from the current directory.
    pub fn route(&self, path: &[u8]) -> Route {
        if path.first() == Some(&b'/') {
            return self.route_absolute(path);
        }
        match &self.cwd {
            Cwd::Dfs { mount, rest } => {
                let mut all = rest.clone();
                all.extend(
                    path.split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec),
                );
                Route::Dfs {
                    mount: *mount,
                    rest: all,
                }
            }
            Cwd::Local(cwd) => {
                // Only a local directory above a prefix can reach it by a relative path.
                if !self.raw.iter().any(|p| is_above(cwd, p)) {
                    return Route::Local;
                }
                let mut abs = cwd.clone();
                abs.push(b'/');
                abs.extend_from_slice(path);
                self.route_absolute(&abs)
            }
        }
    }

    fn route_absolute(&self, path: &[u8]) -> Route {
        // The common case first: a clean path that does not start with a prefix.
        if !needs_folding(path) {
            for (m, p) in self.raw.iter().enumerate() {
                if path.starts_with(p) && matches!(path.get(p.len()), None | Some(b'/')) {
                    let rest = path[p.len()..]
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                    return Route::Dfs { mount: m, rest };
                }
            }
            return Route::Local;
        }
        // Fold lexically until a prefix is reached; below it, the components stay raw.
        let mut stack: Vec<&[u8]> = Vec::new();
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        for (i, c) in parts.iter().enumerate() {
            match *c {
                b"." => {}
                b".." => {
                    stack.pop();
                }
                c => stack.push(c),
            }
            for (m, p) in self.prefixes.iter().enumerate() {
                if stack.len() == p.len() && stack.iter().zip(p).all(|(a, b)| *a == b.as_slice()) {
                    let rest = parts[i + 1..].iter().map(|c| c.to_vec()).collect();
                    return Route::Dfs { mount: m, rest };
                }
            }
        }
        Route::Local
    }
}

/// Whether the directory `dir` is `prefix` or lies above it (`/` and `/a` are above `/a/b`).
fn is_above(dir: &[u8], prefix: &[u8]) -> bool {
    let dir = dir.strip_suffix(b"/").unwrap_or(dir);
    if dir.is_empty() {
        return true;
    }
    prefix.starts_with(dir) && matches!(prefix.get(dir.len()), None | Some(b'/'))
        || needs_folding(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Router {
        Router::new(&[b"/dfs", b"/mnt/x/"], b"/home/u".to_vec()).unwrap()
    }

    fn dfs(m: MountId, rest: &[&str]) -> Route {
        Route::Dfs {
            mount: m,
            rest: rest.iter().map(|s| s.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn absolute_paths_route_by_prefix() {
        let r = r();
        assert_eq!(r.route(b"/dfs"), dfs(0, &[]));
        assert_eq!(r.route(b"/dfs/"), dfs(0, &[]));
        assert_eq!(r.route(b"/dfs/a/b"), dfs(0, &["a", "b"]));
        assert_eq!(r.route(b"/dfsx/a"), Route::Local);
        assert_eq!(r.route(b"/etc/passwd"), Route::Local);
        assert_eq!(r.route(b"/mnt/x/y"), dfs(1, &["y"]));
        assert_eq!(r.route(b"/mnt/xy"), Route::Local);
        assert_eq!(r.route(b"/"), Route::Local);
    }

    #[test]
    fn above_the_prefix_paths_fold_below_they_stay_raw() {
        let r = r();
        assert_eq!(r.route(b"//dfs//a"), dfs(0, &["a"]));
        assert_eq!(r.route(b"/./dfs/./a"), dfs(0, &[".", "a"]));
        assert_eq!(r.route(b"/tmp/../dfs/a/../b"), dfs(0, &["a", "..", "b"]));
        assert_eq!(r.route(b"/../../dfs"), dfs(0, &[]));
        assert_eq!(r.route(b"/dfs/.."), dfs(0, &[".."]));
        assert_eq!(r.route(b"/mnt/./x/z"), dfs(1, &["z"]));
        assert_eq!(r.route(b"/tmp/./x"), Route::Local);
    }

    #[test]
    fn relative_paths_follow_the_current_directory() {
        let mut r = r();
        assert_eq!(r.route(b"a/b"), Route::Local);
        r.set_cwd(Cwd::Local(b"/".to_vec()));
        assert_eq!(r.route(b"dfs/a"), dfs(0, &["a"]));
        assert_eq!(r.route(b"etc/passwd"), Route::Local);
        r.set_cwd(Cwd::Local(b"/mnt".to_vec()));
        assert_eq!(r.route(b"x/q"), dfs(1, &["q"]));
        r.set_cwd(Cwd::Dfs {
            mount: 0,
            rest: vec![b"d".to_vec()],
        });
        assert_eq!(r.route(b"f"), dfs(0, &["d", "f"]));
        assert_eq!(r.route(b"../g"), dfs(0, &["d", "..", "g"]));
        assert_eq!(r.route(b"/etc"), Route::Local);
        assert_eq!(r.cwd_path(), b"/dfs/d");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(Router::new(&[b"dfs"], b"/".to_vec()).is_err());
        assert!(Router::new(&[b"/"], b"/".to_vec()).is_err());
        assert!(Router::new(&[b"/a/.."], b"/".to_vec()).is_err());
        assert!(Router::new(&[b"/a", b"/a/b"], b"/".to_vec()).is_err());
        assert_eq!(
            Router::new(&[b"/a//b/"], b"/".to_vec()).unwrap().prefix(0),
            b"/a/b"
        );
    }

    #[test]
    fn normalize_and_join() {
        assert_eq!(join(&normalize(b"/a/./b/../c//")), b"/a/c");
        assert_eq!(join(&normalize(b"/..")), b"/");
    }
}
